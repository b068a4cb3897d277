"""Checks a dyn_loc `location_body` / dyn_srv `server_body` the way NJet reports problems.

Called by dynapi.py and replay.py; the syntax is read by syntax.py. NJet writes the body into
a scratch file under logs/ and parses it with its config parser, so errors name that file and a
line: the body starts on line 2 of `4_0_add_location.txt` and on line 4 of
`4_0_add_server.txt` (recorded [47] [78]). A body without a final ";" is accepted (NJet
reported the unknown directive of `"bogus_directive on"`, not the missing semicolon).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from njetsim.syntax import ConfParseError, Directive, parse_text

KNOWN = frozenset({
    "access_log", "add_header", "alias", "allow", "autoindex", "charset", "client_body_timeout",
    "client_max_body_size", "default_type", "deny", "error_log", "error_page", "etag",
    "expires", "gzip", "if", "index", "internal", "keepalive_timeout", "limit_except",
    "limit_rate", "limit_req", "location", "log_not_found", "proxy_buffering",
    "proxy_connect_timeout", "proxy_http_version", "proxy_pass", "proxy_read_timeout",
    "proxy_redirect", "proxy_send_timeout", "proxy_set_header", "proxy_ssl_server_name",
    "proxy_ssl_verify", "return", "rewrite", "root", "send_timeout", "server_name", "set",
    "ssl_certificate", "ssl_certificate_key", "ssl_certificate_management", "ssl_ciphers",
    "ssl_prefer_server_ciphers", "ssl_protocols", "ssl_session_cache", "ssl_session_timeout",
    "ssl_stapling", "try_files", "types",
})
# Directives whose blocks hold values, not directives.
_OPAQUE = frozenset({"types", "if", "limit_except"})


def _walk(directives: Iterable[Directive]) -> Iterable[Directive]:
    for d in directives:
        yield d
        if d.block is not None and d.name not in _OPAQUE:
            yield from _walk(d.block)


def check_body(text: str, *, prefix: Path, scratch: str,
               first_line: int) -> tuple[tuple[Directive, ...], str | None]:
    """(directives, None) or ((), NJet-style error message)."""
    where = f"{prefix}/logs/4_0_{scratch}.txt"
    body = text.rstrip()
    if body and not body.endswith((";", "}")):
        body += ";"
    try:
        directives = parse_text(body, file=where)
    except ConfParseError as exc:
        return (), f"{exc.reason} in {where}:{exc.line + first_line - 1}"
    for d in _walk(directives):
        if d.name not in KNOWN:
            return (), f'unknown directive "{d.name}" in {where}:{d.line + first_line - 1}'
    return directives, None
