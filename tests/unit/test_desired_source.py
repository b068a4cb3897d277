"""The desired state is parsed again only when one of its files changed (or when asked)."""

from __future__ import annotations

import os
from pathlib import Path

from controller.desired_source import DesiredSource
from controller.model import CertificateSpec, Source

CONF = """http {
    include conf.d/*.conf;
    server { listen 443 ssl; server_name a.test; ssl_certificate_management acme; }
}
"""
BLOCK = "server { listen 443 ssl; server_name %s; ssl_certificate_management acme; }\n"


class Runtime:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.specs: tuple[CertificateSpec, ...] = ()

    def load(self) -> tuple[CertificateSpec, ...]:
        return self.specs


def setup(tmp_path: Path) -> tuple[DesiredSource, Path, Runtime]:
    conf = tmp_path / "conf" / "njet.conf"
    (conf.parent / "conf.d").mkdir(parents=True)
    conf.write_text(CONF)
    (conf.parent / "conf.d" / "b.conf").write_text(BLOCK % "b.test")
    runtime = Runtime(tmp_path / "runtime.json")
    return DesiredSource(conf, None, runtime), conf, runtime


def test_an_unchanged_conf_is_not_parsed_again(tmp_path: Path) -> None:
    src, _, _ = setup(tmp_path)
    first = src.load()
    assert set(first.specs) == {"a.test", "b.test"}
    assert src.load() is first and src.parses == 1


def test_an_edited_include_is_noticed(tmp_path: Path) -> None:
    src, conf, _ = setup(tmp_path)
    src.load()
    inc = conf.parent / "conf.d" / "b.conf"
    inc.write_text(BLOCK % "c.test")
    os.utime(inc, ns=(1, 1))  # even with an old mtime: the size/inode/mtime identity changes
    assert set(src.load().specs) == {"a.test", "c.test"}


def test_a_new_file_matching_an_include_glob_is_noticed(tmp_path: Path) -> None:
    src, conf, _ = setup(tmp_path)
    src.load()
    (conf.parent / "conf.d" / "d.conf").write_text(BLOCK % "d.test")
    assert "d.test" in src.load().specs


def test_a_runtime_change_is_noticed(tmp_path: Path) -> None:
    src, _, runtime = setup(tmp_path)
    src.load()
    runtime.specs = (CertificateSpec(domain="dyn.test", names=("dyn.test",),
                                     source=Source.EVENT),)
    runtime.path.write_text("[1]")
    assert "dyn.test" in src.load().specs


def test_fresh_always_parses(tmp_path: Path) -> None:
    src, _, _ = setup(tmp_path)
    src.load()
    src.load(fresh=True)
    assert src.parses == 2


def test_lookups_between_passes_reuse_the_parsed_conf(tmp_path: Path) -> None:
    """Events and admin requests ask for desired state often; they must not re-parse."""
    from datetime import timedelta

    from controller.policy import PolicySettings
    from controller.reconcile import Reconciler

    src, _, _ = setup(tmp_path)
    rec = Reconciler(settings=PolicySettings(store_only=True, delete_grace=timedelta(0)),
                     load_desired=src.load, gatherer=None, executor=None,  # type: ignore[arg-type]
                     status_store=None)  # type: ignore[arg-type]
    for _ in range(5):
        rec.desired(keep_last_good=True)
    assert src.parses == 1
