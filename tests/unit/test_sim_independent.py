"""The NJet simulator (hack/njet-sim) is an independent oracle: it imports nothing from controller/.

A parser bug shared by the controller and the simulator would be mirrored instead of caught, so
the simulator reads njet.conf with its own reader (njetsim/syntax.py). The AST check covers
every Python file under hack/njet-sim, the extensionless launcher included; the other tests pin
the reader's behaviour on the syntax the tests, benches and examples feed it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

SIM = Path(__file__).resolve().parents[2] / "hack" / "njet-sim"


def _python_files() -> list[Path]:
    out = []
    for path in sorted(p for p in SIM.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        if path.suffix == ".py" or path.read_bytes().startswith(b"#!/usr/bin/env python"):
            out.append(path)
    return out


def _controller_imports(path: Path, root: Path = SIM) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "__import__")
                   or (isinstance(node.func, ast.Attribute)
                       and node.func.attr == "import_module"))):
            names = [node.args[0].value]
        line = getattr(node, "lineno", 0)
        found += [f"{path.relative_to(root)}:{line}: {n}" for n in names
                  if n == "controller" or n.startswith("controller.")]
    return found


def test_no_file_under_hack_njet_sim_imports_controller() -> None:
    files = _python_files()
    assert SIM / "njet-sim" in files and SIM / "njetsim" / "syntax.py" in files
    offenders = [hit for path in files for hit in _controller_imports(path)]
    assert offenders == [], "the simulator must not import controller/: " + ", ".join(offenders)


def test_the_ast_check_sees_every_import_form(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import controller.njetconf\nfrom controller import errors\n"
                     "import importlib\nimportlib.import_module('controller.listens')\n"
                     "from . import controller\nimport controllers\n")
    hits = [h.rsplit(": ", 1)[1] for h in _controller_imports(probe, tmp_path)]
    assert hits == ["controller.njetconf", "controller", "controller.listens"]


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(SIM))
    from njetsim import syntax

    return syntax


def _tree(directives: Any) -> list[Any]:
    return [(d.name, d.args, None if d.block is None else _tree(d.block)) for d in directives]


def test_reader_words_quotes_escapes_comments_and_variables(sim: Any) -> None:
    text = ('map $ssl_preread_alpn_protocols $up {  # routing\n'
            '    "~(^|,)acme-tls/1(,|$)" 127.0.0.1:10443;\n    ~^x\\.y$ a;\n    default b;\n}\n'
            "location / { return 200 'it\\'s \"ok\"\\n'; proxy_pass http://${host}x; }\n"
            "a b#c \\q;\n")
    assert _tree(sim.parse_text(text)) == [
        ("map", ("$ssl_preread_alpn_protocols", "$up"), [
            ("~(^|,)acme-tls/1(,|$)", ("127.0.0.1:10443",), None),
            ("~^x\\.y$", ("a",), None),
            ("default", ("b",), None)]),
        ("location", ("/",), [("return", ("200", "it's \"ok\"\n"), None),
                              ("proxy_pass", ("http://${host}x",), None)]),
        ("a", ("b#c", "\\q"), None),
    ]


@pytest.mark.parametrize(("text", "reason", "line"), [
    ("http {\n  server {\n", 'unexpected end of file, expecting "}"', 2),
    ("a;\n}\n", 'unexpected "}"', 2),
    ("a b\n", 'unexpected end of file, expecting ";" or "}"', 1),
    ('a "x;\n', "never closed", 1),
    ('a "x"b;', 'unexpected "b"', 1),
    ("\n;", 'unexpected ";"', 2),
    ("http;", 'directive "http" has no opening "{"', 1),
    ("listen 80 { }", 'directive "listen" is not terminated by ";"', 1),
])
def test_reader_errors_name_the_file_and_line(sim: Any, text: str, reason: str,
                                              line: int) -> None:
    with pytest.raises(sim.ConfParseError) as err:
        sim.parse_text(text, file="/p/conf/njet.conf")
    assert reason in err.value.reason
    assert err.value.line == line
    assert str(err.value).endswith(f" in /p/conf/njet.conf:{line}")


def test_includes_expand_relative_to_the_main_conf_and_globs_sort(sim: Any,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "conf" / "sites").mkdir(parents=True)
    (tmp_path / "conf" / "njet.conf").write_text("http { include sites/*.conf; }\n"
                                                 "include extra.conf;\n")
    (tmp_path / "conf" / "sites" / "b.conf").write_text("server { server_name b; }")
    (tmp_path / "conf" / "sites" / "a.conf").write_text("server { server_name a; }\n"
                                                        "include extra.conf;")
    (tmp_path / "conf" / "extra.conf").write_text("pid x.pid;")
    got = _tree(sim.parse_file(tmp_path / "conf" / "njet.conf"))
    assert got == [("http", (), [("server", (), [("server_name", ("a",), None)]),
                                 ("pid", ("x.pid",), None),
                                 ("server", (), [("server_name", ("b",), None)])]),
                   ("pid", ("x.pid",), None)]
    (tmp_path / "conf" / "extra.conf").write_text("include extra.conf;")
    with pytest.raises(sim.ConfParseError, match="nested deeper"):
        sim.parse_file(tmp_path / "conf" / "njet.conf")
    (tmp_path / "conf" / "extra.conf").unlink()
    with pytest.raises(sim.ConfParseError, match=r'open\(\) ".*extra.conf" failed \(2: '):
        sim.parse_file(tmp_path / "conf" / "njet.conf")


@pytest.mark.parametrize(("raw", "text"), [
    ("8444", "0.0.0.0:8444"), ("*:443", "0.0.0.0:443"), ("127.0.0.1:8443", "127.0.0.1:8443"),
    ("localhost:8080", "127.0.0.1:8080"), ("[::1]:8445", "[::1]:8445"),
    ("[0:0::0]:443", "[::]:443"), ("127.0.0.1", "127.0.0.1:80"),
])
def test_listens_are_spelled_like_get_api_v1_ssl(sim: Any, raw: str, text: str) -> None:
    from njetsim import conf

    listen = conf.parse_listen_args([raw, "ssl"], "njet.conf:3")
    assert (listen.text, listen.ssl) == (text, True)
    assert listen.host == text.rpartition(":")[0].strip("[]")


@pytest.mark.parametrize("raw", ["8444x", "1.2.3.4:0", "::1", "[::1", "[1.2.3.4]:80",
                                 "a.test:443", "*:70000"])
def test_unusable_listens_name_the_place(sim: Any, raw: str) -> None:
    from njetsim import conf

    with pytest.raises(conf.SimConfError, match=r"^njet.conf:3: .*"):
        conf.parse_listen_args([raw], "njet.conf:3")
