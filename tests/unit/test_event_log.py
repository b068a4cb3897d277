"""The event log (adapters/store/events.py): one JSON line per event, mode 0600, appended, never
written through a planted symlink or FIFO, rotated to events.jsonl.1 past its size cap."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.adapters.store.events import EventLog
from controller.errors import StoreError
from controller.paths import StorePaths

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


@pytest.fixture
def paths(tmp_path: Path) -> StorePaths:
    return StorePaths(tmp_path / "njet")


def test_each_event_is_one_json_line_in_a_0600_file(paths: StorePaths) -> None:
    log = EventLog(paths, clock=lambda: NOW)
    log.append(kind="admin", peer="127.0.0.1:5555", action="renew", domain="a.test",
               result="409", detail="too young")
    log.append(kind="cli", peer="cli pid 1 uid 0", action="renew", domain="b.test",
               result="requested")
    lines = log.path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"ts": "2026-11-27T04:00:00.000+00:00", "kind": "admin", "peer": "127.0.0.1:5555",
         "action": "renew", "domain": "a.test", "result": "409", "detail": "too young"},
        {"ts": "2026-11-27T04:00:00.000+00:00", "kind": "cli", "peer": "cli pid 1 uid 0",
         "action": "renew", "domain": "b.test", "result": "requested"},
    ]
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert log.recent() == [json.loads(line) for line in lines]


def test_a_planted_symlink_or_fifo_is_refused_and_never_written_through(
    paths: StorePaths, tmp_path: Path
) -> None:
    log = EventLog(paths)
    paths.lego.mkdir(parents=True)
    target = tmp_path / "outside.txt"
    target.write_text("keep me\n")
    log.path.symlink_to(target)
    with pytest.raises(StoreError, match=r"events\.jsonl"):
        log.append(kind="admin", peer="p", action="renew", domain="a.test", result="202")
    assert target.read_text() == "keep me\n"
    log.path.unlink()
    os.mkfifo(log.path)  # nobody reads it: an open for writing would block without O_NONBLOCK
    with pytest.raises(StoreError, match="not a regular file"):
        log.append(kind="admin", peer="p", action="renew", domain="a.test", result="202")


def test_past_its_cap_the_log_is_rotated_to_dot_1(paths: StorePaths) -> None:
    log = EventLog(paths, max_bytes=600)
    for n in range(8):
        log.append(kind="admin", peer="127.0.0.1:1", action="delete", domain=f"d{n}.test",
                   result="200")
    current = [json.loads(line)["domain"] for line in log.path.read_text().splitlines()]
    rotated = [json.loads(line)["domain"] for line in log.rotated.read_text().splitlines()]
    assert rotated + current == [f"d{n}.test" for n in range(len(rotated) + len(current))]
    assert rotated and current and log.path.stat().st_size <= 600
