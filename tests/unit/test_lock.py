"""StoreLock: one writer per store across processes; a successor waits for its predecessor."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.adapters.store.lock import StoreLock
from controller.paths import StorePaths
from tests.support.procs import clean_env, controller_program

# Holds the lock until stdin closes or SIGTERM; announces "locked <pid>" (or "timeout").
_HOLDER = r"""
import signal, sys
from pathlib import Path
from controller.adapters.store.lock import StoreLock
from controller.paths import StorePaths

lock = StoreLock(StorePaths(Path(sys.argv[1])))
signal.signal(signal.SIGTERM, lambda *_: (lock.release(), sys.exit(0)))
timeout = float(sys.argv[2]) if len(sys.argv) > 2 else None
print("waiting", flush=True)
if not lock.acquire(timeout):
    print("timeout", flush=True)
    sys.exit(2)
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def paths(tmp_path: Path) -> StorePaths:
    return StorePaths(tmp_path / "njet")


@pytest.fixture
def spawn(paths: StorePaths) -> Iterator[Spawn]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(paths.prefix), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting\n"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def test_a_second_process_cannot_take_a_held_lock(spawn: Spawn, paths: StorePaths) -> None:
    holder = spawn()
    assert _line(holder) == "locked"
    lock = StoreLock(paths)
    started = time.monotonic()
    assert lock.acquire(timeout=0.2) is False
    assert time.monotonic() - started >= 0.2
    assert not lock.held
    assert lock.holder_pid() == holder.pid


def test_a_successor_waits_until_the_old_process_ends_after_sigterm(
    spawn: Spawn, paths: StorePaths
) -> None:
    old = spawn()
    assert _line(old) == "locked"
    new = spawn("10")  # started while the old one still holds the lock, as NJet does
    old.send_signal(signal.SIGTERM)
    assert _line(new) == "locked"
    assert old.wait(timeout=10) == 0
    assert StoreLock(paths).holder_pid() == new.pid


def test_a_killed_holder_leaves_no_stale_lock(spawn: Spawn, paths: StorePaths) -> None:
    holder = spawn()
    assert _line(holder) == "locked"
    holder.kill()
    holder.wait(timeout=10)
    lock = StoreLock(paths)
    assert lock.acquire(timeout=5)
    assert lock.holder_pid() == os.getpid()
    lock.release()


def test_a_waiting_process_times_out_while_the_lock_is_held(
    spawn: Spawn, paths: StorePaths
) -> None:
    with StoreLock(paths) as lock:
        assert lock.held
        waiter = spawn("0.3")
        assert _line(waiter) == "timeout"
        assert waiter.wait(timeout=10) == 2


def test_release_lets_another_holder_in_and_is_idempotent(paths: StorePaths) -> None:
    first, second = StoreLock(paths), StoreLock(paths)
    assert first.acquire(timeout=0)
    assert first.acquire(timeout=0)  # already held by this object
    assert not second.acquire(timeout=0)
    first.release()
    first.release()
    assert second.acquire(timeout=0)
    second.release()


async def test_acquire_async_waits_without_blocking_the_loop(paths: StorePaths) -> None:
    holder, waiter = StoreLock(paths), StoreLock(paths)
    assert holder.acquire(timeout=0)
    assert await waiter.acquire_async(timeout=0.05) is False
    task = asyncio.create_task(waiter.acquire_async(timeout=5))
    await asyncio.sleep(0)  # the loop keeps running while the waiter polls
    assert not task.done()
    holder.release()
    assert await task is True
    waiter.release()


def test_the_lock_file_lives_in_the_lego_folder(paths: StorePaths) -> None:
    with StoreLock(paths):
        assert paths.lock.is_file()
        assert paths.lock.read_text().strip() == str(os.getpid())


# --- a command that meets a held lock names the holder (issue 13 item 20) -------------------


def _command(paths: StorePaths, command: str, timeout: str) -> subprocess.Popen[str]:
    """`njet-cert-manager <command>` on an empty store-only prefix, stderr piped."""
    conf = paths.prefix / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "njet.conf").write_text("http { }\n")  # nothing desired: converged once it runs
    (conf / "cm.toml").write_text('[njet]\napiAddress = ""\n[admin]\naddress = "127.0.0.1:0"\n')
    return subprocess.Popen(
        [controller_program(), "-p", str(paths.prefix), "-c", "conf/cm.toml", command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        env=clean_env(NJCM_LOCK_TIMEOUT=timeout),
    )  # fmt: skip


def _stderr_line(proc: subprocess.Popen[str], wanted: str, limit: float = 15.0) -> str | None:
    """The first stderr line containing `wanted`, read as it is written (None: not by `limit`)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stderr], [], [], left)[0]:
            break
        line = proc.stderr.readline()
        if not line:
            break
        if wanted in line:
            return line
    return None


def test_reconcile_says_at_once_which_pid_holds_the_lock_then_proceeds(
    paths: StorePaths,
) -> None:
    holder = StoreLock(paths)
    assert holder.acquire(timeout=0)
    proc = _command(paths, "reconcile", "60")
    try:
        line = _stderr_line(proc, f"waiting for pid {os.getpid()}")
        assert line is not None, "no word about the lock holder"
        assert proc.poll() is None, "said only at the end, not while waiting"
    finally:
        holder.release()
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_reconcile_fails_naming_the_pid_still_holding_the_lock(
    spawn: Spawn, paths: StorePaths
) -> None:
    holder = spawn()
    assert _line(holder) == "locked"
    proc = _command(paths, "reconcile", "0.5")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    final = err.strip().splitlines()[-1]
    assert final.startswith("error: ") and f"pid {holder.pid} still holds the store lock" in final
    assert str(paths.lock) in final
    assert f"waiting for pid {holder.pid}" in err


def test_run_names_the_pid_it_waits_for(spawn: Spawn, paths: StorePaths) -> None:
    holder = spawn()
    assert _line(holder) == "locked"
    proc = _command(paths, "run", "60")
    try:
        assert _stderr_line(proc, f"waiting for pid {holder.pid}") is not None
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_a_bad_lock_timeout_is_refused_naming_the_variable(paths: StorePaths) -> None:
    proc = _command(paths, "reconcile", "soon")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "NJCM_LOCK_TIMEOUT must be a number of seconds" in err
