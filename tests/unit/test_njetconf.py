"""njetconf + conffiles: the nginx-syntax tokenizer/parser, includes and their bounds, errors
with file:line, server blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.conffiles import parse_file
from controller.errors import ConfigError
from controller.listens import ListenSpec, normalize_listen
from controller.njetconf import (
    ConfSyntaxError,
    Directive,
    ServerBlock,
    http_servers,
    parse_text,
)


def one(text: str) -> Directive:
    (d,) = parse_text(text)
    return d


def syntax_error(text: str, *, file: str = "t.conf") -> ConfSyntaxError:
    with pytest.raises(ConfSyntaxError) as info:
        parse_text(text, file=file)
    return info.value


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- tokenizer ---------------------------------------------------------------------------


def test_double_quoted_string_unescapes_quote_and_backslash() -> None:
    d = one(r'return 200 "say \"hi\" \\ there";')
    assert d.args == ("200", 'say "hi" \\ there')


def test_single_quoted_string_keeps_semicolon_braces_and_hash() -> None:
    d = one("return 200 'a;b {c} # not a comment';")
    assert d.args == ("200", "a;b {c} # not a comment")
    assert d.block is None


def test_double_quoted_hash_is_not_a_comment() -> None:
    assert one('add_header X "v # w";').args == ("X", "v # w")


def test_tab_and_newline_escapes_are_unescaped_other_backslashes_kept() -> None:
    d = one(r'x "a\tb\nc" "~(^|,)\bacme-tls/1\b";')
    assert d.args == ("a\tb\nc", r"~(^|,)\bacme-tls/1\b")


def test_escaped_single_quote_inside_single_quotes() -> None:
    assert one(r"x 'it\'s';").args == ("it's",)


def test_empty_quoted_string_is_an_empty_argument() -> None:
    assert one('server_name "" a.test;').args == ("", "a.test")


def test_quoted_brace_is_an_argument_not_a_block() -> None:
    d = one('x "{" "}" ";";')
    assert d.args == ("{", "}", ";")
    assert d.block is None


def test_hash_starts_a_comment_only_at_word_start() -> None:
    ds = parse_text("# leading comment\nx a#b; # trailing comment\ny c;#after semicolon\n")
    assert [(d.name, d.args, d.line) for d in ds] == [("x", ("a#b",), 2), ("y", ("c",), 3)]


def test_variables_stay_text_including_braced_form() -> None:
    d = one("proxy_pass http://127.0.0.1:$port${suffix}x;")
    assert d.args == ("http://127.0.0.1:$port${suffix}x",)


def test_backslash_escaped_semicolon_does_not_end_the_directive() -> None:
    assert one(r"x a\;b c;").args == (r"a\;b", "c")


def test_closing_quote_may_be_followed_by_semicolon_brace_or_paren() -> None:
    ds = parse_text('x "a";y "b"{ z; }\nif ($h = "v") { return 1; }')
    assert ds[0].args == ("a",)
    assert ds[1].args == ("b",) and ds[1].block is not None
    assert ds[2].args == ("($h", "=", "v", ")")


def test_text_glued_to_a_closing_quote_is_an_error() -> None:
    err = syntax_error('x "a"b;')
    assert (err.file, err.line) == ("t.conf", 1)
    assert 'unexpected "b"' in str(err)


def test_nested_blocks_keep_structure_and_lines() -> None:
    ds = parse_text("http {\n  server {\n    listen 80;\n    location / { return 200; }\n  }\n}\n")
    http = ds[0]
    assert http.block is not None
    server = http.block[0]
    assert (server.name, server.line) == ("server", 2)
    assert server.block is not None
    listen, location = server.block
    assert (listen.name, listen.args, listen.line) == ("listen", ("80",), 3)
    assert location.args == ("/",)
    assert location.block == (Directive("return", ("200",), None, "<string>", 4),)


def test_multiline_quoted_string_keeps_line_numbers_right() -> None:
    ds = parse_text('x "line1\nline2\nline3";\ny z;')
    assert ds[0].args == ("line1\nline2\nline3",)
    assert ds[1].line == 4


def test_directive_spanning_lines_takes_its_first_line() -> None:
    ds = parse_text("\n\nserver_name a.test\n            www.a.test;\n")
    assert (ds[0].args, ds[0].line) == (("a.test", "www.a.test"), 3)


# --- syntax errors ---------------------------------------------------------------------------


def test_error_is_a_config_error_with_file_and_line() -> None:
    err = syntax_error("http {\n  server {\n    listen 80;\n  }\n", file="conf/njet.conf")
    assert isinstance(err, ConfigError)
    assert (err.file, err.line) == ("conf/njet.conf", 1)
    assert str(err).startswith("conf/njet.conf:1: ")
    assert 'block "http"' in str(err) and 'missing "}"' in str(err)


def test_unclosed_inner_block_points_at_innermost_opener() -> None:
    err = syntax_error("http {\n  server {\n    listen 80;\n}\n")
    assert err.line == 1  # the `}` on line 4 closed server, so http is the one left open
    err = syntax_error("http {\n  server {\n    location / {\n")
    assert err.line == 3


def test_extra_closing_brace_is_reported_where_it_is() -> None:
    err = syntax_error("http {\n}\n}\n")
    assert err.line == 3
    assert 'unexpected "}"' in str(err)


def test_unterminated_double_quote_points_at_opening_quote() -> None:
    err = syntax_error('x a;\nreturn 200 "oops;\n}\n')
    assert err.line == 2
    assert "unterminated double-quoted string" in str(err)


def test_unterminated_single_quote() -> None:
    err = syntax_error("x 'abc;")
    assert err.line == 1 and "single-quoted" in str(err)


def test_missing_semicolon_at_end_of_file() -> None:
    err = syntax_error("x a;\nlisten 80\n")
    assert err.line == 2
    assert 'directive "listen" is not terminated by ";"' in str(err)


def test_missing_semicolon_before_closing_brace() -> None:
    err = syntax_error("server {\n  listen 80;\n  server_name a.test\n}\n")
    assert err.line == 3
    assert 'directive "server_name" is not terminated by ";"' in str(err)


def test_missing_semicolon_before_next_directive_line() -> None:
    err = syntax_error("server {\n  server_name a.test\n  listen 443 ssl;\n}\n")
    assert err.line == 2
    assert '"listen" on line 3' in str(err)


def test_missing_semicolon_before_a_block() -> None:
    err = syntax_error("server {\n  server_name a.test\n  location / { return 200; }\n}\n")
    assert err.line == 2
    assert 'directive "server_name" is not terminated by ";"' in str(err)


def test_block_directive_without_block_is_an_error() -> None:
    err = syntax_error("events {}\nhttp;\n")
    assert err.line == 2 and 'directive "http" has no opening "{"' in str(err)


def test_server_inside_upstream_is_a_simple_directive() -> None:
    ds = parse_text("http { upstream u { server 127.0.0.1:80; } }")
    assert ds[0].block is not None


def test_lone_semicolon_and_lone_brace_are_errors() -> None:
    assert syntax_error("x a;\n;\n").line == 2
    assert syntax_error("{ }").line == 1


def test_include_with_two_arguments_is_an_error() -> None:
    err = syntax_error("include a.conf b.conf;")
    assert "invalid number of arguments" in str(err)


@pytest.mark.parametrize(
    "text",
    [
        'http {\n  proxy_set_header Authorization;\n  "Basic czNjcmV0OnB3"\n}\n',
        "events { }\nS3cret-Pa$$word/1\n}",
        "S3cret-Pa$$word/1 {\n",
        "'S3cret-Pa$$word/1'\n",
    ],
)
def test_syntax_errors_never_quote_a_stray_word_of_the_file(text: str) -> None:
    err = syntax_error(text)
    assert err.line >= 1 and str(err).startswith(f"t.conf:{err.line}: ")
    for secret in ("czNjcmV0OnB3", "S3cret", "Pa$$word", "Authorization"):
        assert secret not in str(err)


def test_a_stray_word_is_named_by_its_kind() -> None:
    assert "a directive starting with a word that is not a name" in str(
        syntax_error("x a;\nS3cret-1 }\n"))
    assert "a block starting with a quoted string" in str(syntax_error("'s3cret' {\n"))


def test_an_invalid_switch_value_is_not_quoted() -> None:
    with pytest.raises(ConfSyntaxError) as info:
        servers("http {\n server {\n  ssl_certificate_management S3cret;\n }\n}")
    assert "S3cret" not in str(info.value)
    assert 'invalid value in "ssl_certificate_management" directive' in str(info.value)


# --- includes --------------------------------------------------------------------------------


def test_include_glob_expands_in_sorted_order_relative_to_conf_dir(tmp_path: Path) -> None:
    main = write(tmp_path, "conf/njet.conf", "http {\n  include sites/*.conf;\n}\n")
    write(tmp_path, "conf/sites/b.conf", "server { server_name b.test; }\n")
    write(tmp_path, "conf/sites/a.conf", "server { server_name a.test; }\n")
    write(tmp_path, "conf/sites/c.txt", "server { server_name c.test; }\n")
    (http,) = parse_file(main)
    assert http.block is not None
    assert [(s.block[0].args if s.block else None) for s in http.block] == [
        ("a.test",),
        ("b.test",),
    ]
    assert [s.file for s in http.block] == [
        str(tmp_path / "conf/sites/a.conf"),
        str(tmp_path / "conf/sites/b.conf"),
    ]


def test_nested_include_resolves_against_main_conf_dir(tmp_path: Path) -> None:
    main = write(tmp_path, "conf/njet.conf", "include sub/first.conf;\n")
    write(tmp_path, "conf/sub/first.conf", "include sub/second.conf;\nfirst 1;\n")
    write(tmp_path, "conf/sub/second.conf", "second 2;\n")
    ds = parse_file(main)
    assert [(d.name, d.file, d.line) for d in ds] == [
        ("second", str(tmp_path / "conf/sub/second.conf"), 1),
        ("first", str(tmp_path / "conf/sub/first.conf"), 2),
    ]


def test_glob_matching_nothing_is_fine(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "include none/*.conf;\nx 1;\n")
    assert [d.name for d in parse_file(main)] == ["x"]


def test_missing_plain_include_names_the_include_line(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "x 1;\n\ninclude missing.conf;\n")
    with pytest.raises(ConfSyntaxError) as info:
        parse_file(main)
    assert (info.value.file, info.value.line) == (str(main), 3)
    assert str(tmp_path / "missing.conf") in str(info.value)
    assert "No such file" in str(info.value)


def test_syntax_error_inside_included_file_names_that_file(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "http {\n  include servers.conf;\n}\n")
    inc = write(tmp_path, "servers.conf", "server {\n  listen 80;\n  server_name a\n}\n")
    with pytest.raises(ConfSyntaxError) as info:
        parse_file(main)
    assert (info.value.file, info.value.line) == (str(inc), 3)
    assert str(info.value).startswith(f"{inc}:3: ")


def test_include_loop_is_detected(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "include a.conf;\n")
    a = write(tmp_path, "a.conf", "x 1;\ninclude b.conf;\n")
    write(tmp_path, "b.conf", "include a.conf;\n")
    with pytest.raises(ConfSyntaxError) as info:
        parse_file(main)
    assert info.value.file == str(tmp_path / "b.conf") and info.value.line == 1
    assert "include loop" in str(info.value) and str(a) in str(info.value)


def test_same_file_included_twice_is_not_a_loop(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "include x.conf;\ninclude x.conf;\n")
    write(tmp_path, "x.conf", "x 1;\n")
    assert [d.name for d in parse_file(main)] == ["x", "x"]


def test_unreadable_main_file_is_a_conf_error(tmp_path: Path) -> None:
    with pytest.raises(ConfSyntaxError) as info:
        parse_file(tmp_path / "absent.conf")
    assert info.value.file == str(tmp_path / "absent.conf") and info.value.line == 0


# --- listens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("8444", "0.0.0.0:8444"),
        ("*:8444", "0.0.0.0:8444"),
        ("127.0.0.1:8443", "127.0.0.1:8443"),
        ("[::1]:8445", "[::1]:8445"),
        ("[::]:443", "[::]:443"),
        ("[0:0:0:0:0:0:0:1]:443", "[::1]:443"),
        ("localhost:443", "127.0.0.1:443"),
        ("127.0.0.1", "127.0.0.1:80"),
        ("*", "0.0.0.0:80"),
    ],
)
def test_listen_is_spelled_as_njet_get_shows_it(raw: str, address: str) -> None:
    assert normalize_listen(raw) == address


@pytest.mark.parametrize(
    "raw", ["", "0", "65536", "example.com:443", "::1:443", "[::1", "[nope]:443", "unix:/a.s"]
)
def test_unusable_listen_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError):
        normalize_listen(raw)


# --- server blocks ---------------------------------------------------------------------------


def servers(text: str, *, conf_dir: Path | None = None) -> tuple[ServerBlock, ...]:
    return http_servers(parse_text(text, file="n.conf"), conf_dir=conf_dir)


def test_http_level_management_is_inherited_and_server_off_overrides() -> None:
    text = """http {
        ssl_certificate_management acme;
        server { listen 443 ssl; server_name a.test; }
        server { listen 444 ssl; server_name b.test; ssl_certificate_management off; }
        server { listen 80; server_name c.test; }
    }"""
    a, b, c = servers(text)
    assert (a.managed, b.managed, c.managed) == (True, False, True)
    assert (a.has_ssl_listen, c.has_ssl_listen) == (True, False)


def test_server_level_management_without_http_level() -> None:
    text = "http { server { listen 443 ssl; ssl_certificate_management acme; } server { } }"
    assert [s.managed for s in servers(text)] == [True, False]


def test_invalid_management_value_names_its_line() -> None:
    with pytest.raises(ConfSyntaxError) as info:
        servers("http {\n server {\n  ssl_certificate_management yes;\n }\n}")
    assert (info.value.file, info.value.line) == ("n.conf", 3)


def test_stream_servers_are_not_http_servers() -> None:
    text = "stream { server { listen 9443; } }\nhttp { server { listen 80; } }"
    (only,) = servers(text)
    assert only.listens[0].address == "0.0.0.0:80"


def test_server_without_listen_defaults_to_port_80_without_ssl() -> None:
    (s,) = servers("http { server { server_name a.test; ssl_certificate_management acme; } }")
    assert s.listens == (ListenSpec("*:80", "0.0.0.0:80", 80, False),)
    assert not s.has_ssl_listen


def test_several_server_name_directives_concatenate_in_order() -> None:
    (s,) = servers("http { server { server_name A.test b.test; server_name c.test; } }")
    assert s.names == ("A.test", "b.test", "c.test")
    assert (s.file, s.line) == ("n.conf", 1)


def test_listen_parameters_and_ssl_on() -> None:
    text = """http {
      server { listen 127.0.0.1:8443 ssl http2 default_server; listen [::1]:80; }
      server { ssl on; listen 8444; }
    }"""
    first, second = servers(text)
    assert [(x.address, x.port, x.ssl) for x in first.listens] == [
        ("127.0.0.1:8443", 8443, True),
        ("[::1]:80", 80, False),
    ]
    assert second.listens == (ListenSpec("8444", "0.0.0.0:8444", 8444, True),)


def test_unix_listen_is_skipped() -> None:
    (s,) = servers("http { server { listen unix:/run/a.sock ssl; listen 443 ssl; } }")
    assert [x.address for x in s.listens] == ["0.0.0.0:443"]


def test_bad_listen_names_its_line() -> None:
    with pytest.raises(ConfSyntaxError) as info:
        servers("http {\n server {\n  listen example.com:443 ssl;\n }\n}")
    assert info.value.line == 3 and "example.com" in str(info.value)


def test_certificate_paths_resolve_against_conf_dir_and_inherit_from_http() -> None:
    text = """http {
      ssl_certificate certs/default.crt;
      ssl_certificate_key certs/default.key;
      server { listen 443 ssl; }
      server { listen 444 ssl; ssl_certificate /abs/own.crt; ssl_certificate_key own.key; }
      server { listen 445 ssl; ssl_certificate data:$var; }
    }"""
    a, b, c = servers(text, conf_dir=Path("/usr/local/njet/conf"))
    assert (a.ssl_certificate, a.ssl_certificate_key) == (
        "/usr/local/njet/conf/certs/default.crt",
        "/usr/local/njet/conf/certs/default.key",
    )
    assert (b.ssl_certificate, b.ssl_certificate_key) == (
        "/abs/own.crt",
        "/usr/local/njet/conf/own.key",
    )
    assert c.ssl_certificate == "data:$var"


def test_certificate_paths_stay_as_written_without_conf_dir() -> None:
    (s,) = servers("http { server { listen 443 ssl; ssl_certificate server.crt; } }")
    assert (s.ssl_certificate, s.ssl_certificate_key) == ("server.crt", None)


def test_servers_from_included_file_carry_that_file(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "http {\n  include vhosts/*.conf;\n}\n")
    inc = write(tmp_path, "vhosts/a.conf", "\nserver {\n listen 443 ssl;\n}\n")
    (s,) = http_servers(parse_file(main))
    assert (s.file, s.line) == (str(inc), 2)
