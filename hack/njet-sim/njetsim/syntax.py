"""The simulator's own reader of nginx-style configuration text (njet.conf and its friends).

Called by conf.py (the main conf with its `include`s, the ctrl API conf) and bodies.py (dyn_loc
and dyn_srv bodies). Deliberately shares no code with the controller's parser
(controller/njetconf.py): the simulator is the oracle that parser is tested against, so a bug
there must show up as a difference, not be repeated here.

Two steps. `_scan` cuts the text into words and the marks ";", "{" and "}" with one regular
expression: a word ends at whitespace, ";" or "{" ("${" continues it); `#` at the start of a
word begins a comment to the end of the line; '…' and "…" quote (a closing quote must be
followed by whitespace, ";", "{" or ")"); in every word \\" \\' \\\\ \\t \\r \\n are unescaped
and any other backslash pair is kept as written (regexes keep `\\.`). `_Reader` then builds the
nested statements. Problems raise ConfParseError: `reason` in nginx's words, `file`, `line`.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

_TOKEN = re.compile(
    r"""
      (?P<space>[ \t\r\n]+)
    | (?P<comment>\#[^\n]*)
    | (?P<mark>[;{}])
    | (?P<quoted>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<word>(?:\\.|\$\{|[^ \t\r\n;{}"'\\])(?:\\.|\$\{|[^ \t\r\n;{\\])*)
    """,
    re.VERBOSE | re.DOTALL,
)
_BACKSLASH = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPED = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_AFTER_QUOTE = frozenset(" \t\r\n;{)")

_MAX_DEPTH = 50
_MAX_INCLUDE_DEPTH = 16
# Shapes nginx enforces for the directives the simulator interprets.
_BLOCK_ONLY = frozenset({"http", "stream", "events", "location", "map", "upstream", "types"})
_SIMPLE_ONLY = frozenset({
    "pid", "error_log", "helper", "include", "listen", "server_name", "ssl_certificate",
    "ssl_certificate_key", "ssl_certificate_management", "return", "proxy_pass",
    "proxy_set_header", "ssl_preread",
})


class ConfParseError(Exception):
    """The text is not valid configuration syntax; `line` 0 means the file as a whole."""

    def __init__(self, reason: str, *, file: str, line: int) -> None:
        super().__init__(f"{reason} in {file}:{line}" if line else reason)
        self.reason = reason
        self.file = file
        self.line = line


@dataclass(frozen=True)
class Directive:
    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] | None  # None: the statement ended with ";"
    file: str
    line: int


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _BACKSLASH.sub(lambda m: _UNESCAPED.get(m[1], m[0]), text)


def _scan(text: str, file: str) -> Iterator[tuple[str, str, int]]:
    """(kind, text, line) with kind "word", ";", "{" or "}"; comments and spaces dropped."""
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "\"'":
                raise ConfParseError(f"unexpected end of file: the {ch} opened here is never "
                                     "closed", file=file, line=line)
            raise ConfParseError(f'unexpected "{ch}" at the end of the file', file=file,
                                 line=line)
        kind, value = m.lastgroup, m.group()
        if kind == "mark":
            yield value, value, line
        elif kind == "word":
            yield "word", _unescape(value), line
        elif kind == "quoted":
            yield "word", _unescape(value[1:-1]), line
            after = text[m.end():m.end() + 1]
            if after and after not in _AFTER_QUOTE:
                raise ConfParseError(f'unexpected "{after}"', file=file,
                                     line=line + value.count("\n"))
        line += value.count("\n")
        pos = m.end()


class _Reader:
    def __init__(self, text: str, file: str) -> None:
        self.tokens = _scan(text, file)
        self.file = file
        self.last_line = 1  # of the latest token, for errors at the end of the text

    def fail(self, reason: str, line: int) -> ConfParseError:
        return ConfParseError(reason, file=self.file, line=line)

    def read(self, opener: tuple[str, int] | None = None,
             depth: int = 0) -> tuple[Directive, ...]:
        """Statements up to the "}" closing `opener` (or the end of the text when None)."""
        out: list[Directive] = []
        words: list[tuple[str, int]] = []
        for kind, value, line in self.tokens:
            self.last_line = line
            if kind == "word":
                words.append((value, line))
                continue
            if kind == "}":
                if words or opener is None:
                    raise self.fail('unexpected "}"', line)
                return tuple(out)
            if not words:
                raise self.fail(f'unexpected "{kind}"', line)
            block = None
            if kind == "{":
                if depth >= _MAX_DEPTH:
                    raise self.fail(f"blocks nested deeper than {_MAX_DEPTH}", line)
                block = self.read(words[0], depth + 1)
            out.append(self.statement(words, block, opener))
            words = []
        if words:
            raise self.fail('unexpected end of file, expecting ";" or "}"', self.last_line)
        if opener is not None:
            raise self.fail(f'unexpected end of file, expecting "}}" (for the "{opener[0]}" '
                            f"block opened on line {opener[1]})", self.last_line)
        return tuple(out)

    def statement(self, words: list[tuple[str, int]], block: tuple[Directive, ...] | None,
                  opener: tuple[str, int] | None) -> Directive:
        name, line = words[0]
        parent = opener[0] if opener else None
        needs_block = name in _BLOCK_ONLY or (name == "server" and parent in ("http", "stream"))
        if needs_block and block is None:
            raise self.fail(f'directive "{name}" has no opening "{{"', line)
        if name in _SIMPLE_ONLY and block is not None:
            raise self.fail(f'directive "{name}" is not terminated by ";"', line)
        return Directive(name, tuple(w for w, _ in words[1:]), block, self.file, line)


def parse_text(text: str, *, file: str = "<text>") -> tuple[Directive, ...]:
    """The statements of one text; `include` stays a statement (see parse_file)."""
    return _Reader(text.removeprefix("\ufeff"), file).read()


def parse_file(path: Path) -> tuple[Directive, ...]:
    """The main conf file, every `include` replaced by the statements of its files.

    Include paths (globs allowed, matches in sorted order) are relative to the main file's
    directory, also inside included files (nginx's conf_prefix).
    """
    main = Path(os.path.abspath(path))
    return _expand(parse_text(_read(main, None), file=str(main)), main.parent, 0)


def _read(path: Path, site: Directive | None) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        reason = f'open() "{path}" failed ({exc.errno}: {exc.strerror})'
        if site is None:
            raise ConfParseError(reason, file=str(path), line=0) from None
        raise ConfParseError(reason, file=site.file, line=site.line) from None


def _expand(stmts: Sequence[Directive], conf_dir: Path, depth: int) -> tuple[Directive, ...]:
    out: list[Directive] = []
    for s in stmts:
        if s.name == "include" and s.block is None and len(s.args) == 1:
            if depth >= _MAX_INCLUDE_DEPTH:
                raise ConfParseError(f"includes nested deeper than {_MAX_INCLUDE_DEPTH} "
                                     "(an include loop?)", file=s.file, line=s.line)
            for target in _include_targets(s.args[0], conf_dir):
                inner = parse_text(_read(target, s), file=str(target))
                out.extend(_expand(inner, conf_dir, depth + 1))
        elif s.block is not None:
            out.append(replace(s, block=_expand(s.block, conf_dir, depth)))
        else:
            out.append(s)
    return tuple(out)


def _include_targets(pattern: str, conf_dir: Path) -> list[Path]:
    if not any(c in pattern for c in "*?["):
        return [conf_dir / pattern]
    return [Path(p) for p in sorted(glob.glob(os.path.join(glob.escape(str(conf_dir)),
                                                           pattern)))]
