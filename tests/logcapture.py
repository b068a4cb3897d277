"""Capture logs through the controller's own handler (controller/logs.py), not the root logger.

`with capture_logs() as logs:` installs setup_logging with a StringIO stream; `logs.text` is what
an operator would read, `logs.records` the records that reached the handler. On exit the handler
is removed, and a suppressed line (key material reached a log call) fails the test unless
`allow_suppressed=True`: the filter hides the leak from `logs.text`, the capture still reports it.
Used by tests that check log lines (test_statusfile, test_njet_api_contract, test_logs).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from controller.logs import reset_logging, setup_logging

SUPPRESSED = "log line suppressed: it contained private key material"


@dataclass
class CapturedLogs:
    stream: io.StringIO = field(default_factory=io.StringIO)
    records: list[logging.LogRecord] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return self.text.splitlines()


@contextmanager
def capture_logs(
    *, verbosity: int = 0, fmt: str = "text", allow_suppressed: bool = False
) -> Iterator[CapturedLogs]:
    captured = CapturedLogs()
    handler = setup_logging(verbosity=verbosity, fmt=fmt, stream=captured.stream)

    def keep(record: logging.LogRecord) -> bool:
        captured.records.append(record)
        return True

    handler.addFilter(keep)  # after the handler's own filters: only records it writes
    try:
        yield captured
    finally:
        reset_logging()
    if not allow_suppressed:
        assert SUPPRESSED not in captured.text, f"key material reached a log call:\n{captured.text}"
