"""Our own nginx-syntax parser for njet.conf, and the http server blocks read from it.

Pure: parses text. Reading njet.conf and expanding its `include`s is conffiles.py's, which
calls parse_text for each file; desired.py calls http_servers on the result.

Syntax follows nginx's ngx_conf_read_token: words end at whitespace, ";" or "{"; `#` starts a
comment only at the start of a word; '…' and "…" quote (escapes \\" \\' \\\\ \\t \\r \\n are
unescaped, any other backslash pair is kept as written, so regexes like `\\b` survive);
`$var` / `${var}` stay text; a closing quote must be followed by whitespace, ";", "{" or ")".
`include` directives are kept as written (checked for shape only). Every problem raises
ConfSyntaxError naming `file:line`; its text never quotes a line of the file (a line may carry a
password): it names the token kind, and a directive only by a name shaped like one (see _shown).
Like nginx, the directives we interpret are checked for shape (block vs ";", argument count);
a continuation line of one of them that starts with a well-known directive name (e.g.
`server_name a.test` then `listen 443 ssl;`) is reported as a missing ";".

Listens are spelled the way NJet's GET /api/v1/ssl shows them: `8444` and `*:8444` become
`0.0.0.0:8444`, IPv6 keeps brackets in compressed form (`[::1]:8445`, `[::]:443`), `localhost`
becomes `127.0.0.1` (the only host name accepted; others raise ConfigError because resolving
them here would make the result depend on DNS). `unix:` listens are skipped by http_servers
(they can neither be probed nor reached by a CA) and rejected by normalize_listen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from controller.errors import ConfigError
from controller.listens import (  # noqa: F401  (normalize_listen re-exported for tests)
    DEFAULT_LISTEN,
    ListenSpec,
    normalize_listen,
    parse_listen,
)


class ConfSyntaxError(ConfigError):
    """njet.conf cannot be used; `file`/`line` say where (line 0: the file as a whole)."""

    def __init__(self, reason: str, *, file: str, line: int) -> None:
        super().__init__(f"{file}:{line}: {reason}" if line > 0 else f"{file}: {reason}")
        self.reason = reason
        self.file = file
        self.line = line


@dataclass(frozen=True)
class Directive:
    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] | None  # None for a simple directive ending in ";"
    file: str
    line: int


# --- tokenizer -----------------------------------------------------------------------------

_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_WORD_END = frozenset(" \t\r\n;{")
_AFTER_QUOTE = frozenset(" \t\r\n;{)")
_PLAIN_RUN = re.compile(r"[^ \t\r\n;{\\$]+")
# whitespace, a comment, punctuation, or a plain word that ends at whitespace, ";", "{" or the
# end (possessive: a word running into "\\" or "$" is left to the careful path in _bare)
_FAST_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+)"
    r"|(?P<comment>#[^\n]*)"
    r"|(?P<punct>[;{}])"
    r"|(?P<word>[^ \t\r\n;{}\\$\"'#][^ \t\r\n;{\\$]*+)(?![\\$])"
)


class _Token(NamedTuple):
    kind: str  # "word", ";", "{", "}"
    text: str
    line: int
    quoted: bool = False
    starts_line: bool = False  # first token on its line (for the missing-";" check)


def _unescape(nxt: str) -> str:
    return _ESCAPES.get(nxt, "\\" + nxt)


def _tokenize(text: str, file: str) -> Iterator[_Token]:
    """Tokens one at a time (a 10,000-block conf has ~300k: never held as a list)."""
    i, n, line, last_line = 0, len(text), 1, 0
    fast = _FAST_TOKEN.match
    while i < n:
        m = fast(text, i)
        if m is not None:  # the common tokens, one regex step each
            kind = m.lastgroup
            if kind == "space":
                line += text.count("\n", i, m.end())
            elif kind != "comment":
                value = m.group()
                yield _Token("word" if kind == "word" else value, value, line, False,
                             line != last_line)
                last_line = line
            i = m.end()
            continue
        ch = text[i]
        start = line
        if ch in "\"'":
            value, i, line = _quoted(text, i, line, file)
            yield _Token("word", value, start, True, start != last_line)
            if i < n and text[i] not in _AFTER_QUOTE:
                raise ConfSyntaxError(
                    f'unexpected "{text[i]}" right after a closing quote '
                    '(a space, ";" or "{" must follow it)',
                    file=file,
                    line=line,
                )
        else:  # a word with escapes or $variables
            value, i, line = _bare(text, i, line)
            yield _Token("word", value, start, False, start != last_line)
        last_line = line


def _quoted(text: str, i: int, line: int, file: str) -> tuple[str, int, int]:
    quote, start, j, buf = text[i], line, i + 1, []
    while j < len(text):
        c = text[j]
        if c == "\\" and j + 1 < len(text):
            buf.append(_unescape(text[j + 1]))
            line += text[j + 1] == "\n"
            j += 2
            continue
        if c == quote:
            return "".join(buf), j + 1, line
        line += c == "\n"
        buf.append(c)
        j += 1
    kind = "double" if quote == '"' else "single"
    raise ConfSyntaxError(
        f"unterminated {kind}-quoted string (the opening {quote} is on this line)",
        file=file,
        line=start,
    )


def _bare(text: str, i: int, line: int) -> tuple[str, int, int]:
    buf: list[str] = []
    after_dollar = False
    while i < len(text):
        plain = _PLAIN_RUN.match(text, i)
        if plain:  # fast path: a run of ordinary characters
            buf.append(plain.group())
            i = plain.end()
            after_dollar = False
            continue
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            buf.append(_unescape(text[i + 1]))
            line += text[i + 1] == "\n"
            i += 2
        elif c in _WORD_END and not (c == "{" and after_dollar):  # "${" continues a variable
            break
        else:
            buf.append(c)
            i += 1
        after_dollar = c == "$"
    return "".join(buf), i, line


# --- parser --------------------------------------------------------------------------------

MAX_DEPTH = 64  # blocks per file, and includes nested
DEFAULT_MAX_CONF_BYTES = 256 * 1024 * 1024  # [njet] maxConfBytes: see conffiles.py
_BLOCK_ONLY = frozenset({"http", "events", "stream", "mail", "location", "upstream", "map",
                         "types", "geo", "split_clients", "limit_except", "if"})
_SERVER_PARENTS = frozenset({"http", "stream", "mail"})
# Directives we interpret: (min args, max args or None).
_SIMPLE_ARITY: dict[str, tuple[int, int | None]] = {
    "listen": (1, None),
    "server_name": (1, None),
    "ssl_certificate": (1, 1),
    "ssl_certificate_key": (1, 1),
    "ssl_certificate_management": (1, 1),
    "ssl": (1, 1),
    "include": (1, 1),
}
# A line starting with one of these inside an interpreted directive means a forgotten ";".
_LIKELY_DIRECTIVES = frozenset({
    "listen", "server_name", "ssl_certificate", "ssl_certificate_key", "include",
    "ssl_certificate_management", "location", "server", "root", "index", "return", "rewrite",
    "proxy_pass", "proxy_set_header", "add_header", "access_log", "error_log", "error_page",
    "try_files", "alias", "allow", "deny", "ssl_protocols", "ssl_ciphers", "ssl_session_cache",
    "ssl_session_timeout", "ssl_prefer_server_ciphers", "keepalive_timeout", "charset",
    "client_max_body_size", "gzip",
})


_NAME_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _shown(tok: _Token, what: str = "directive") -> str:
    """How an error names a word: quoted when it is shaped like a directive name, else by its
    kind only (a stray word may be a value, e.g. half of a password split by a bad edit)."""
    if not tok.quoted and _NAME_SHAPE.fullmatch(tok.text):
        return f'{what} "{tok.text}"'
    first = "a quoted string" if tok.quoted else "a word that is not a name (not shown)"
    return f"a {what} starting with {first}"


class _Parser:
    def __init__(self, tokens: Iterator[_Token], file: str) -> None:
        self.tokens = tokens
        self.file = file

    def error(self, reason: str, line: int) -> ConfSyntaxError:
        return ConfSyntaxError(reason, file=self.file, line=line)

    def block(self, opener: _Token | None, depth: int) -> tuple[Directive, ...]:
        out: list[Directive] = []
        words: list[_Token] = []
        for tok in self.tokens:  # one shared iterator: a nested block() continues from here
            if tok.kind == "word":
                words.append(tok)
                continue
            if tok.kind == "}":
                if words:
                    raise self.error(f'{_shown(words[0])} is not terminated by ";" '
                                     f'(found "}}" on line {tok.line})', words[0].line)
                if opener is None:
                    raise self.error('unexpected "}": no block is open here', tok.line)
                return tuple(out)
            if not words:
                raise self.error(f'unexpected "{tok.kind}": no directive name before it',
                                 tok.line)
            children: tuple[Directive, ...] | None = None
            if tok.kind == "{":
                if depth >= MAX_DEPTH:
                    raise self.error(f"blocks nested deeper than {MAX_DEPTH} levels", tok.line)
                children = self.block(words[0], depth + 1)
            out.append(self.directive(words, children, opener))
            words = []
        if words:
            raise self.error(f'{_shown(words[0])} is not terminated by ";" '
                             "(end of file reached)", words[0].line)
        if opener is not None:
            raise self.error(f'{_shown(opener, "block")} opened on this line is never closed: '
                             'missing "}" (end of file reached)', opener.line)
        return tuple(out)

    def directive(self, words: list[_Token], children: tuple[Directive, ...] | None,
                  opener: _Token | None) -> Directive:
        head = words[0]
        name = head.text
        parent = opener.text if opener is not None else None
        if name in _BLOCK_ONLY or (name == "server" and parent in _SERVER_PARENTS):
            if children is None:
                raise self.error(f'directive "{name}" has no opening "{{"', head.line)
        elif name in _SIMPLE_ARITY:
            for w in words[1:]:
                if w.starts_line and not w.quoted and w.text in _LIKELY_DIRECTIVES:
                    raise self.error(f'directive "{name}" is not terminated by ";" '
                                     f'("{w.text}" on line {w.line} was read as its argument)',
                                     head.line)
            if children is not None:
                raise self.error(f'directive "{name}" is not terminated by ";"', head.line)
            low, high = _SIMPLE_ARITY[name]
            count = len(words) - 1
            if count < low or (high is not None and count > high):
                raise self.error(f'invalid number of arguments in "{name}" directive '
                                 f"({count})", head.line)
        return Directive(name, tuple(w.text for w in words[1:]), children, self.file, head.line)


def parse_text(text: str, *, file: str = "<string>") -> tuple[Directive, ...]:
    """Parse one conf text; `include` directives are kept as they are (not expanded)."""
    return _Parser(_tokenize(text.removeprefix("\ufeff"), file), file).block(None, 0)


# --- http server blocks --------------------------------------------------------------------


@dataclass(frozen=True)
class ServerBlock:
    """One `server {}` of an `http {}`. Certificate paths are resolved against the conf dir
    when http_servers got one (nginx resolves them against its conf_prefix), else as written."""

    names: tuple[str, ...]  # server_name args in order, as written
    listens: tuple[ListenSpec, ...]
    managed: bool  # `ssl_certificate_management acme` in effect
    ssl_certificate: str | None
    ssl_certificate_key: str | None
    file: str
    line: int

    @property
    def has_ssl_listen(self) -> bool:
        return any(listen.ssl for listen in self.listens)

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class _Tls:
    managed: bool = False
    ssl_on: bool = False
    certificate: str | None = None
    key: str | None = None


def _switch(d: Directive, on: str) -> bool:
    value = d.args[0].lower()
    if value not in (on, "off"):  # the value is not quoted: name the key, not the value
        raise ConfSyntaxError(f'invalid value in "{d.name}" directive '
                              f'(expected "{on}" or "off")', file=d.file, line=d.line)
    return value == on


def _tls(block: Sequence[Directive], inherited: _Tls) -> _Tls:
    """Settings of one level; a level that sets ssl_certificate replaces the inherited one."""
    managed, ssl_on = inherited.managed, inherited.ssl_on
    cert: str | None = None
    key: str | None = None
    for d in block:
        if d.name == "ssl_certificate_management":
            managed = _switch(d, "acme")
        elif d.name == "ssl":
            ssl_on = _switch(d, "on")
        elif d.name == "ssl_certificate" and cert is None:
            cert = d.args[0]
        elif d.name == "ssl_certificate_key" and key is None:
            key = d.args[0]
    return _Tls(managed, ssl_on, cert or inherited.certificate, key or inherited.key)


def _resolve(path: str | None, conf_dir: Path | None) -> str | None:
    if path is None or conf_dir is None or path.startswith("data:") or "$" in path:
        return path
    return os.path.normpath(os.path.join(os.path.abspath(conf_dir), path))


def _server(d: Directive, inherited: _Tls, conf_dir: Path | None) -> ServerBlock:
    assert d.block is not None
    tls = _tls(d.block, inherited)
    names: list[str] = []
    listens: list[ListenSpec] = []
    for child in d.block:
        if child.name == "server_name":
            names.extend(child.args)
        elif child.name == "listen" and not child.args[0].startswith("unix:"):
            try:
                listens.append(parse_listen(child.args, ssl_on=tls.ssl_on))
            except ConfigError as exc:
                raise ConfSyntaxError(str(exc), file=child.file, line=child.line) from None
    has_listen = any(c.name == "listen" for c in d.block)
    return ServerBlock(
        names=tuple(names),
        listens=tuple(listens) if has_listen else (replace(DEFAULT_LISTEN, ssl=tls.ssl_on),),
        managed=tls.managed,
        ssl_certificate=_resolve(tls.certificate, conf_dir),
        ssl_certificate_key=_resolve(tls.key, conf_dir),
        file=d.file,
        line=d.line,
    )


def http_servers(directives: Sequence[Directive], *,
                 conf_dir: Path | None = None) -> tuple[ServerBlock, ...]:
    """Every `server {}` directly inside every top-level `http {}` (never `stream {}`), in order.

    `ssl_certificate_management`, `ssl` and `ssl_certificate(_key)` set at `http {}` level are
    inherited by every server unless the server sets its own. Raises ConfSyntaxError for an
    unusable listen or switch value.
    """
    out: list[ServerBlock] = []
    for http in directives:
        if http.name != "http" or http.block is None:
            continue
        inherited = _tls(http.block, _Tls())
        out.extend(_server(d, inherited, conf_dir)
                   for d in http.block if d.name == "server" and d.block is not None)
    return tuple(out)
