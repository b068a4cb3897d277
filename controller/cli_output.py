"""How the CLI's commands print: `-o table|wide|json|yaml`, colour, and `reconcile`'s progress.

- `emit(doc, output, table)`: json (orjson, indented) and yaml (PyYAML's safe_dump) print the
  whole document, the same for every command; table and wide call the command's own `table`
  renderer (cli_certs.py, cli.py's `certs list`). Datetimes become ISO 8601 strings in both.
- `Colour`: plain ANSI codes, only when the stream is a terminal and the environment has no
  non-empty `NO_COLOR` (https://no-color.org) and `TERM` is not `dumb`; otherwise every
  style is the identity, so piped output never holds an escape code.
- `ReconcileProgress` (a ports.ActionProgress the Executor tells as each action ends): on a
  terminal a tqdm bar per pass on stderr, with one line per finished action above it (the log
  lines go above it too); not on a terminal one plain line per finished action on stderr,
  e.g. `issued a.test [Missing] (1/2)`. stdout keeps only the command's result.
Composition layer: called by cli.py and cli_certs.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, TextIO

import orjson

from controller.fold import Outcome
from controller.model import ActionKind

OUTPUTS = ("table", "wide", "json", "yaml")


def plain(doc: Any) -> Any:
    """`doc` as JSON types only (datetimes as ISO 8601 strings, dataclasses as dicts)."""
    return orjson.loads(orjson.dumps(doc, default=str))


def emit(doc: Any, output: str, table: Callable[[bool], None], *,
         stream: TextIO | None = None) -> None:
    """Print `doc` as `output`: json or yaml here, table/wide through `table(wide)`."""
    out = stream or sys.stdout
    if output == "json":
        out.write(orjson.dumps(plain(doc), option=orjson.OPT_INDENT_2).decode() + "\n")
    elif output == "yaml":
        import yaml

        out.write(yaml.safe_dump(plain(doc), sort_keys=False, allow_unicode=True,
                                 default_flow_style=False))
    else:
        table(output == "wide")


def colour_wanted(stream: TextIO) -> bool:
    """Colour only on a terminal, never with a non-empty NO_COLOR, never on TERM=dumb."""
    if os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Colour:
    """ANSI styles that are the identity when colour is off (see colour_wanted)."""

    _CODES: ClassVar[dict[str, str]] = {"bold": "1", "dim": "2", "red": "31", "green": "32",
                                        "yellow": "33", "cyan": "36"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO) -> Colour:
        return cls(colour_wanted(stream))

    def __call__(self, style: str, text: str) -> str:
        if not self.enabled or not text:
            return text
        return f"\x1b[{self._CODES[style]}m{text}\x1b[0m"

    def state(self, text: str, good: bool | None) -> str:
        """Green for good, red for bad, yellow for unknown (None)."""
        return self("green" if good else "yellow" if good is None else "red", text)


def table(rows: Sequence[Sequence[str]], *, colour: Colour, header: bool = True,
          styles: Sequence[Callable[[str], str] | None] | None = None,
          indent: str = "", stream: TextIO | None = None) -> None:
    """Print `rows` in aligned columns (the first row bold as a header). `styles[i]`, when
    given, colours column i of the data rows; padding is added outside the escape codes."""
    if not rows:
        return
    out = stream or sys.stdout
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = []
        for i, (cell, w) in enumerate(zip(row, widths, strict=True)):
            pad = " " * (w - len(cell)) if i < len(row) - 1 else ""
            if header and n == 0:
                shown = colour("bold", cell)
            else:
                style = styles[i] if styles and i < len(styles) else None
                shown = style(cell) if style is not None else cell
            cells.append(shown + pad)
        out.write((indent + "  ".join(cells)).rstrip() + "\n")


def short(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def fail(message: str) -> int:
    """Say `error: message` on stderr; the exit code 1."""
    print(f"error: {message}", file=sys.stderr)
    return 1


def days_text(delta: timedelta) -> str:
    """`30d`, `1826.5d`, `7.5h`: days, or hours under a day."""
    days = delta.total_seconds() / 86400
    if abs(days) >= 1:
        return f"{days:.1f}".removesuffix(".0") + "d"
    return f"{delta.total_seconds() / 3600:.1f}".removesuffix(".0") + "h"


def when_text(value: object) -> str:
    """An ISO 8601 time to the second, for tables (`-` for none)."""
    if not isinstance(value, str) or not value:
        return "-"
    try:
        return datetime.fromisoformat(value).isoformat(timespec="seconds")
    except ValueError:
        return value


# -- reconcile's progress -----------------------------------------------------------------------

_DONE = {ActionKind.ISSUE: "issued", ActionKind.RENEW: "renewed", ActionKind.APPLY: "applied",
         ActionKind.DELETE: "quarantined"}


def outcome_line(o: Outcome, colour: Colour) -> str:
    """One finished action: `issued a.test [Missing]`, `failed renew b.test [...]: why`."""
    a = o.action
    where = f"{a.domain} [{a.reason.value}]"
    if o.skipped:
        return f"{colour('yellow', 'skipped')} {a.kind} {where}: {o.error or 'store changed'}"
    if o.ok:
        return f"{colour('green', _DONE[a.kind])} {where}"
    return f"{colour('red', 'failed')} {a.kind} {where}: {o.error or 'unknown error'}"


def _size(stream: TextIO) -> tuple[int, int]:
    """The terminal's columns and rows; 80 x 24 for a size of 0 (a fresh pty says that, and
    tqdm then draws nothing) or when it cannot say."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 80, 24
    return size.columns or 80, size.lines or 24


class _BarStream:
    """Stands in for sys.stderr while a bar is drawn: every write goes above the bar."""

    def __init__(self, real: TextIO) -> None:
        self.real = real

    def write(self, text: str) -> int:
        from tqdm import tqdm

        tqdm.write(text, file=self.real, end="")
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return self.real.isatty()


class ReconcileProgress:
    """`reconcile`'s ports.ActionProgress (see the module docstring)."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 colour: Colour | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.colour = colour or Colour.for_stream(self.stream)
        self.passes = 0
        self.total = self.done = 0
        self._bar: Any = None
        self._saved_stderr: TextIO | None = None

    def started(self, total: int) -> None:
        self.passes += 1
        self.total, self.done = total, 0
        if not self.tty:
            return
        from tqdm import tqdm

        cols, rows = _size(self.stream)
        self._bar = tqdm(total=total, desc=f"pass {self.passes}", unit="action",
                         file=self.stream, leave=True, ncols=cols, nrows=rows)
        if sys.stderr is self.stream:  # log lines go above the bar, not through it
            self._saved_stderr = sys.stderr
            sys.stderr = _BarStream(self.stream)

    def finished(self, outcome: Outcome) -> None:
        self.done += 1
        line = outcome_line(outcome, self.colour)
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
            self._bar.update(1)
        else:
            self.stream.write(f"{line} ({self.done}/{self.total})\n")
            self.stream.flush()

    def ended(self) -> None:
        if self._saved_stderr is not None:
            sys.stderr, self._saved_stderr = self._saved_stderr, None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
