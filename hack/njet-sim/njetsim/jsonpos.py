"""A small JSON reader that keeps token positions the way NJet's jsmn-based parser reports them.

Called by sslapi.py to produce NJet's code-3 messages for PUT /api/v1/ssl ("pos: <n>, ..."):
a string token starts after its opening quote, an object/array at its bracket, and a syntax
error has pos -1 with jsmn's wording ("The string is not a full JSON packet, more bytes
expected" for a truncated text). Raw control characters inside strings are accepted, like jsmn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PART = "The string is not a full JSON packet, more bytes expected"
INVAL = "Invalid character inside JSON string"


class JsonPosError(Exception):
    def __init__(self, pos: int, message: str) -> None:
        super().__init__(f"pos: {pos}, {message}")
        self.pos = pos
        self.message = message


@dataclass(frozen=True)
class Node:
    kind: str  # "object" | "array" | "string" | "primitive"
    start: int
    value: Any  # dict[str, Node] | list[Node] | str | int | float | bool | None

    def plain(self) -> Any:
        if self.kind == "object":
            return {k: v.plain() for k, v in self.value.items()}
        if self.kind == "array":
            return [v.plain() for v in self.value]
        return self.value


_ESC = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_WS = " \t\r\n"


class _Reader:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in _WS:
            self.i += 1

    def need(self) -> str:
        if self.i >= len(self.s):
            raise JsonPosError(-1, PART)
        return self.s[self.i]

    def value(self) -> Node:
        self.ws()
        c = self.need()
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        if c == '"':
            return self.string()
        return self.primitive()

    def obj(self) -> Node:
        start = self.i
        out: dict[str, Node] = {}
        self.i += 1
        self.ws()
        if self.need() == "}":
            self.i += 1
            return Node("object", start, out)
        while True:
            self.ws()
            if self.need() != '"':
                raise JsonPosError(-1, INVAL)
            key = self.string().value
            self.ws()
            if self.need() != ":":
                raise JsonPosError(-1, INVAL)
            self.i += 1
            out[key] = self.value()
            self.ws()
            c = self.need()
            self.i += 1
            if c == "}":
                return Node("object", start, out)
            if c != ",":
                raise JsonPosError(-1, INVAL)

    def arr(self) -> Node:
        start = self.i
        out: list[Node] = []
        self.i += 1
        self.ws()
        if self.need() == "]":
            self.i += 1
            return Node("array", start, out)
        while True:
            out.append(self.value())
            self.ws()
            c = self.need()
            self.i += 1
            if c == "]":
                return Node("array", start, out)
            if c != ",":
                raise JsonPosError(-1, INVAL)

    def string(self) -> Node:
        self.i += 1
        start = self.i
        buf: list[str] = []
        while True:
            c = self.need()
            self.i += 1
            if c == '"':
                return Node("string", start, "".join(buf))
            if c != "\\":
                buf.append(c)
                continue
            e = self.need()
            self.i += 1
            if e in _ESC:
                buf.append(_ESC[e])
            elif e == "u":
                hexa = self.s[self.i:self.i + 4]
                if len(hexa) < 4:
                    raise JsonPosError(-1, PART)
                try:
                    buf.append(chr(int(hexa, 16)))
                except ValueError:
                    raise JsonPosError(-1, INVAL) from None
                self.i += 4
            else:
                raise JsonPosError(-1, INVAL)

    def primitive(self) -> Node:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in _WS + ",]}":
            self.i += 1
        word = self.s[start:self.i]
        if self.i >= len(self.s) and start > 0:
            raise JsonPosError(-1, PART)
        consts: dict[str, Any] = {"true": True, "false": False, "null": None}
        if word in consts:
            return Node("primitive", start, consts[word])
        try:
            return Node("primitive", start, int(word))
        except ValueError:
            pass
        try:
            return Node("primitive", start, float(word))
        except ValueError:
            raise JsonPosError(-1, INVAL) from None


def parse(text: str) -> Node:
    """The node tree of `text`; JsonPosError(-1, …) on a syntax error."""
    r = _Reader(text)
    node = r.value()
    r.ws()
    if r.i != len(text):
        raise JsonPosError(-1, INVAL)
    return node
