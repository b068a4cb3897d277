"""The command line (controller/cli.py): where -p/-c/-v may stand, the exit codes, the clock.

`-p/-c` parse the same before and after every subcommand; the bare `-p X -c Y` is `run` (how
NJet launches a copilot); a usage error exits 64 (EX_USAGE) with the usage on stderr, a config
error 1; `certs list` reckons days left by the reconciler's clock, not the system's.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from controller.cli import (
    DEFAULT_CONFIG,
    DEFAULT_PREFIX,
    EXIT_USAGE,
    build_parser,
    cmd_certs_list,
    main,
)
from controller.config import load_config
from tests.certbuilder import make_cert
from tests.support.procs import clean_env
from tests.support.tomlgen import render_toml

OPTS = ["-p", "/srv/njet", "-c", "conf/other.toml"]
COMMANDS = [["run"], ["reconcile"], ["diff"], ["diff", "-o", "json"], ["certs", "list"],
            ["certs", "list", "-o", "wide"], ["schema"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_options_parse_the_same_before_and_after_the_subcommand(command: list[str]) -> None:
    before = vars(build_parser().parse_args([*OPTS, *command]))
    after = vars(build_parser().parse_args([*command, *OPTS]))
    assert before == after
    assert (after["prefix"], after["config"]) == ("/srv/njet", "conf/other.toml")
    assert after["command"] == command[0]


def test_certs_takes_the_options_between_its_words_too() -> None:
    args = build_parser().parse_args(["certs", *OPTS, "list", "-v"])
    assert (args.prefix, args.config, args.certs_command, args.verbose) == (
        "/srv/njet", "conf/other.toml", "list", 1)


def test_the_bare_options_are_run_as_njet_launches_a_copilot() -> None:
    args = build_parser().parse_args(OPTS)
    assert args.command is None
    assert (args.prefix, args.config, args.verbose) == ("/srv/njet", "conf/other.toml", None)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_options_left_out_everywhere_take_the_defaults(command: list[str]) -> None:
    args = build_parser().parse_args(command)
    assert (args.prefix, args.config, args.verbose) == (DEFAULT_PREFIX, DEFAULT_CONFIG, None)


def test_an_option_after_the_subcommand_wins_over_the_same_one_before() -> None:
    args = build_parser().parse_args(["-p", "/first", "-c", "a.toml", "diff", "-p", "/second"])
    assert (args.prefix, args.config) == ("/second", "a.toml")


@pytest.mark.parametrize("argv", [["diff", "--typo"], ["--typo"], ["dif"], ["diff", "-o", "xml"],
                                  ["certs"], ["certs", "list", "-p"]],
                         ids=" ".join)
def test_a_usage_error_exits_64_with_the_usage_on_stderr(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE == 64
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: njet-cert-manager")
    assert "njet-cert-manager" in err.splitlines()[-1] and "error:" in err.splitlines()[-1]


def test_the_process_exits_64_on_a_typo_and_names_it() -> None:
    res = subprocess.run([sys.executable, "-m", "controller.cli", "diff", "-p", "/x", "--typo"],
                         capture_output=True, text=True, timeout=60, cwd="/", env=clean_env())
    assert res.returncode == 64
    assert res.stderr.startswith("usage: njet-cert-manager")
    assert "unrecognized arguments: --typo" in res.stderr
    assert res.stdout == ""


def test_options_after_the_subcommand_reach_the_config_loader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", "-p", str(tmp_path), "-c", "missing.toml"]) == 1  # a config error: 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'missing.toml'}" in err
    assert "usage:" not in err


async def test_certs_list_counts_days_left_by_the_reconcilers_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.app import App

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "njet.conf").write_text("http {\n}\n")
    (tmp_path / "conf" / "cert-manager.toml").write_text(render_toml({
        "acme": {"email": "cli@example.test", "acmeCaDir": "https://127.0.0.1:9/dir"},
        "njet": {"apiAddress": ""},
    }))
    app = App(load_config(tmp_path / "conf" / "cert-manager.toml", prefix=tmp_path))
    try:
        start = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
        app.store.put("a.test", make_cert(["a.test"], not_before=start,
                                          lifetime=timedelta(days=90)).issued())
        app.reconciler.clock = lambda: start + timedelta(days=30)
        assert cmd_certs_list(app, "json") == 0
    finally:
        await app.close()
    doc = orjson.loads(capsys.readouterr().out)
    assert [(c["domain"], c["days_left"]) for c in doc["certificates"]] == [("a.test", 60.0)]
