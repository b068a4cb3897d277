"""desired: njet.conf server blocks -> CertificateSpecs + NameWarnings, and runtime merging."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller.desired import (
    desired_from_servers,
    load_desired,
    load_desired_and_files,
    merge_desired,
    name_problem,
    usable_names,
)
from controller.model import CertificateSpec, Desired, KeyType, NameWarning, Source
from controller.njetconf import ConfSyntaxError, http_servers, parse_text
from tests.support.procs import clean_env

CONTRACT_CONF = Path(__file__).parent / "data" / "conf" / "contract" / "njet.conf"


def desired(text: str, *, key_type: KeyType | None = None) -> Desired:
    return desired_from_servers(http_servers(parse_text(text, file="n.conf")), key_type=key_type)


def managed(*servers: str) -> str:
    return "http {\n" + "\n".join(servers) + "\n}\n"


def server(names: str, listen: str = "443 ssl", extra: str = "") -> str:
    return (
        f"server {{ listen {listen}; server_name {names}; "
        f"ssl_certificate_management acme; {extra} }}"
    )


# --- the contract's njet.conf ----------------------------------------------------------------


def test_contract_conf_gives_exactly_the_three_managed_tls_blocks() -> None:
    d = load_desired(CONTRACT_CONF)
    assert {k: (s.names, s.listens) for k, s in d.specs.items()} == {
        "a.test": (("a.test", "www.a.test"), ("127.0.0.1:8443",)),
        "b.test": (("b.test",), ("0.0.0.0:8444",)),
        "v6.test": (("v6.test",), ("[::1]:8445",)),
    }
    assert d.warnings == ()


def test_contract_specs_carry_origin_bootstrap_cert_and_source() -> None:
    a = load_desired(CONTRACT_CONF).specs["a.test"]
    assert a.origin == f"{CONTRACT_CONF}:26"
    assert a.bootstrap_cert == "/usr/local/njet/certs/contract/boot-a.crt"
    assert (a.source, a.key_type) == (Source.CONF, None)


def test_contract_unmanaged_and_plain_http_blocks_give_nothing() -> None:
    d = load_desired(CONTRACT_CONF)
    assert "c.test" not in d.specs
    assert all("127.0.0.1:8080" not in s.listens for s in d.specs.values())


# --- blocks -> specs -------------------------------------------------------------------------


def test_relative_bootstrap_cert_resolves_against_conf_dir(tmp_path: Path) -> None:
    conf = tmp_path / "conf" / "njet.conf"
    conf.parent.mkdir()
    conf.write_text(managed(server("a.test", extra="ssl_certificate server.crt;")))
    spec = load_desired(conf).specs["a.test"]
    assert spec.bootstrap_cert == str(tmp_path / "conf" / "server.crt")


def test_broken_conf_raises_with_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "njet.conf"
    conf.write_text("http {\n  server {\n    listen 443 ssl\n  }\n}\n")
    with pytest.raises(ConfSyntaxError, match=rf"^{conf}:3: "):
        load_desired(conf)


def test_http_level_acme_covers_only_blocks_with_ssl_listen() -> None:
    text = """http {
      ssl_certificate_management acme;
      server { listen 443 ssl; server_name a.test; }
      server { listen 80; server_name plain.test; }
      server { listen 444 ssl; server_name off.test; ssl_certificate_management off; }
    }"""
    d = desired(text)
    assert list(d.specs) == ["a.test"]
    assert d.warnings == ()


def test_names_are_lowercased_deduplicated_and_trailing_dot_stripped() -> None:
    spec = desired(managed(server("WWW.A.Test. a.test www.a.test A.TEST"))).specs["www.a.test"]
    assert spec.names == ("www.a.test", "a.test")
    assert spec.domain == "www.a.test"


def test_only_ssl_listens_become_spec_listens() -> None:
    block = server("a.test", listen="127.0.0.1:8443 ssl", extra="listen 80; listen [::]:443 ssl;")
    assert desired(managed(block)).specs["a.test"].listens == ("127.0.0.1:8443", "[::]:443")


def test_key_type_is_passed_to_every_spec() -> None:
    d = desired(managed(server("a.test"), server("b.test", listen="444 ssl")),
                key_type=KeyType.EC256)
    assert {s.key_type for s in d.specs.values()} == {KeyType.EC256}


@pytest.mark.parametrize(
    ("name", "reason_word"),
    [("*.x.test", "wildcard"), ("x.*", "wildcard"), ("~^re$", "regular expression"),
     ("_", "placeholder"), ('""', "empty")],
)
def test_unusable_names_become_warnings_with_origin(name: str, reason_word: str) -> None:
    d = desired(managed(server(f"a.test {name}")))
    assert d.specs["a.test"].names == ("a.test",)
    (w,) = d.warnings
    assert w.name == ("" if name == '""' else name)
    assert reason_word in w.reason
    assert w.origin == "n.conf:2"


def test_block_with_no_usable_name_yields_only_warnings() -> None:
    d = desired(managed(server('_ "" *.x.test')))
    assert d.specs == {}
    assert [w.name for w in d.warnings] == ["_", "", "*.x.test"]


def test_first_usable_name_is_the_domain_even_after_bad_ones() -> None:
    spec = desired(managed(server("*.x.test b.test c.test"))).specs["b.test"]
    assert spec.names == ("b.test", "c.test")


def test_managed_block_without_server_name_warns() -> None:
    d = desired("http { server { listen 443 ssl; ssl_certificate_management acme; } }")
    assert d.specs == {}
    assert d.warnings == (NameWarning("", "managed server block has no server_name", "n.conf:1"),)


def test_leading_dot_name_keeps_the_exact_name_and_warns_about_the_wildcard() -> None:
    d = desired(managed(server(".x.test")))
    assert d.specs["x.test"].names == ("x.test",)
    (w,) = d.warnings
    assert w.name == ".x.test" and "*.x.test" in w.reason


def test_blocks_with_same_first_name_share_one_spec_in_stable_order() -> None:
    first = server("a.test www.a.test", listen="127.0.0.1:8443 ssl",
                   extra="ssl_certificate /c/first.crt;")
    second = server("A.test api.a.test www.a.test", listen="[::1]:8443 ssl",
                    extra="ssl_certificate /c/second.crt;")
    d = desired(managed(first, second))
    (spec,) = d.specs.values()
    assert spec.names == ("a.test", "www.a.test", "api.a.test")
    assert spec.listens == ("127.0.0.1:8443", "[::1]:8443")
    assert spec.origin == "n.conf:2"
    assert spec.bootstrap_cert == "/c/first.crt"
    again = desired(managed(first, second))
    assert again == d


def test_name_shared_but_not_first_keeps_separate_specs() -> None:
    d = desired(managed(server("a.test www.a.test"), server("www.a.test", listen="444 ssl")))
    assert {k: s.names for k, s in d.specs.items()} == {
        "a.test": ("a.test", "www.a.test"),
        "www.a.test": ("www.a.test",),
    }


# --- name_problem ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a.test", "WWW.Example.COM.", "xn--bcher-kva.example", "a-b.c1.test", "intranet"]
)
def test_issuable_names_have_no_problem(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "reason_word"),
    [
        ("", "empty"),
        ("_", "placeholder"),
        ("*.x.test", "wildcard"),
        ("www.x.*", "wildcard"),
        ("~^(?<sub>.+)\\.x\\.test$", "regular expression"),
        ("$hostname", "variable"),
        ("192.0.2.1", "IP address"),
        ("::1", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("a_b.test", "not allowed"),
        ("x.test:8443", "not allowed"),
        ("bücher.example", "punycode"),
        ("a..test", "empty label"),
        ("-a.test", '"-"'),
        ("x" * 64 + ".test", "too long"),
        (".".join(["abcdefghi"] * 26), "too long"),
        ("a.123", "numeric"),
        ("localhost", "reserved"),
    ],
)
def test_unissuable_names_say_why(name: str, reason_word: str) -> None:
    reason = name_problem(name)
    assert reason is not None and reason_word in reason


def test_usable_names_returns_warnings_in_input_order() -> None:
    names, warnings = usable_names(["b.test", "_", "B.TEST", "*.b.test", "c.test"], "o:1")
    assert names == ("b.test", "c.test")
    assert [(w.name, w.origin) for w in warnings] == [("_", "o:1"), ("*.b.test", "o:1")]


# --- merge_desired ---------------------------------------------------------------------------


def event_spec(*names: str, listens: tuple[str, ...] = ("127.0.0.1:8443",)) -> CertificateSpec:
    return CertificateSpec(
        domain=names[0], names=names, listens=listens, source=Source.EVENT, origin="event"
    )


def test_merge_unites_names_and_listens_of_same_domain_base_first() -> None:
    base = desired(managed(server("a.test www.a.test", listen="127.0.0.1:8443 ssl")))
    merged = merge_desired(base, [event_spec("a.test", "dyn.a.test", "www.a.test",
                                             listens=("0.0.0.0:9443", "127.0.0.1:8443"))])
    spec = merged.specs["a.test"]
    assert spec.names == ("a.test", "www.a.test", "dyn.a.test")
    assert spec.listens == ("127.0.0.1:8443", "0.0.0.0:9443")
    assert (spec.source, spec.origin) == (Source.CONF, "n.conf:2")


def test_merge_adds_new_domains_and_leaves_base_untouched() -> None:
    base = desired(managed(server("a.test")))
    before = dict(base.specs)
    merged = merge_desired(base, [event_spec("dyn.test")])
    assert list(merged.specs) == ["a.test", "dyn.test"]
    assert merged.specs["dyn.test"].source == Source.EVENT
    assert dict(base.specs) == before


def test_merge_cleans_runtime_names_and_warns_about_unusable_ones() -> None:
    merged = merge_desired(Desired(specs={}), [event_spec("*.dyn.test", "Dyn.Test."),
                                               event_spec("_")])
    assert list(merged.specs) == ["dyn.test"]
    assert merged.specs["dyn.test"].names == ("dyn.test",)
    assert [(w.name, w.origin) for w in merged.warnings] == [("*.dyn.test", "event"),
                                                             ("_", "event")]


def test_merge_keeps_base_warnings() -> None:
    base = desired(managed(server("_")))
    merged = merge_desired(base, [event_spec("x.test")])
    assert merged.warnings == base.warnings and len(base.warnings) == 1


# --- conf-level warnings and bounds ------------------------------------------------------------

EMPTY_GLOB_CONF = "http {\n    include conf.d/*.conf;\n}\n"


def test_an_include_glob_matching_nothing_is_a_desired_warning(tmp_path: Path) -> None:
    conf = tmp_path / "conf" / "njet.conf"
    conf.parent.mkdir()
    conf.write_text(EMPTY_GLOB_CONF)
    d, files = load_desired_and_files(conf)
    assert d.specs == {}
    (w,) = d.warnings
    assert (w.name, w.origin) == ("include conf.d/*.conf", f"{conf}:2")
    assert "matches no files" in w.reason
    assert str(tmp_path / "conf" / "conf.d") in files  # its appearance is noticed by the cache
    (conf.parent / "conf.d").mkdir()
    (conf.parent / "conf.d" / "a.conf").write_text(server("a.test") + "\n")
    d, _ = load_desired_and_files(conf)
    assert list(d.specs) == ["a.test"] and d.warnings == ()


def test_max_conf_bytes_bounds_what_load_desired_reads(tmp_path: Path) -> None:
    conf = tmp_path / "njet.conf"
    conf.write_text(managed(server("a.test")) + "#" * 2000 + "\n")
    assert list(load_desired(conf).specs) == ["a.test"]
    with pytest.raises(ConfSyntaxError, match=r"maxConfBytes \(1024 bytes\)"):
        load_desired(conf, max_conf_bytes=1024)


def test_diff_prints_the_empty_include_glob_as_a_warning_line(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    conf = tmp_path / "conf" / "njet.conf"
    conf.write_text(EMPTY_GLOB_CONF)
    (tmp_path / "conf" / "cm.toml").write_text('[njet]\napiAddress = ""\n')
    script = Path(sys.executable).with_name("njet-cert-manager")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli"]
    for output in ("text", "json"):
        done = subprocess.run(
            [*command, "-p", str(tmp_path), "-c", "conf/cm.toml", "diff", "-o", output],
            capture_output=True, text=True, timeout=60, cwd="/", env=clean_env(),
        )
        assert done.returncode == 0, done.stdout + done.stderr
        if output == "text":
            lines = done.stdout.splitlines()
            assert lines[0] == "in sync: nothing to do"
            assert f"warning: {conf}:2: include conf.d/*.conf: matches no files" in done.stdout
        else:
            (w,) = json.loads(done.stdout)["warnings"]
            assert (w["name"], w["origin"]) == ("include conf.d/*.conf", f"{conf}:2")
