"""Runs one `[hooks]` command for a certificate event: a real child process, no shell.

Called by dispatch.py's hook worker (HookRunner.run), never on the reconcile's path. The child
gets exactly events.hook_env (nothing inherited, no key material), stdin from /dev/null, the
NJet prefix as its working directory and a session (process group) of its own. Its stdout and
stderr share one pipe of which only the last OUTPUT_TAIL bytes are kept. Past `timeout` the
whole group is killed (SIGKILL); so is a group still running when the caller is cancelled
(shutdown). The run is logged through log_event (the program, not its arguments, which may
hold a token; the output tail, whose line the logging filter suppresses if it shows key text)
and counted through `on_result(hook, result)` (njcm_hook_runs_total).

The pipe is ours, not asyncio's: a grandchild that keeps it open cannot hold up the wait for
the hook's exit; what it writes after DRAIN_WAIT is not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from controller.adapters.hooks.events import CertEvent, hook_env
from controller.logs import log_event

OUTPUT_TAIL = 4096  # bytes of a hook's output kept and logged
KILL_WAIT = 5.0  # seconds for a SIGKILLed hook to be reaped
DRAIN_WAIT = 1.0  # seconds for the rest of the output once the hook exited


class HookResult(StrEnum):
    """`result` of njcm_hook_runs_total (plus "dropped", counted by dispatch.py)."""

    SUCCESS = "success"
    FAILURE = "failure"  # a non-zero exit, a signal, or the program could not be started
    TIMEOUT = "timeout"  # killed (with its process group) after [hooks] timeout


@dataclass(frozen=True)
class HookRun:
    result: HookResult
    exit_code: int | None  # negative: the signal that ended it; None: it never started
    output: str  # the last OUTPUT_TAIL bytes of stdout + stderr, decoded leniently
    error: str | None = None  # why it could not be started


class _Tail(asyncio.Protocol):
    """Reads the hook's pipe, keeping only the last `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_command(argv: tuple[str, ...], env: Mapping[str, str], *, cwd: Path,
                      timeout: float) -> HookRun:  # noqa: ASYNC109 - the hook's own budget
    """Run `argv` once as described in the module docstring; never raises for the child."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
            env=dict(env), cwd=cwd, start_new_session=True)
    except (OSError, ValueError) as exc:
        os.close(read_fd)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return HookRun(HookResult.FAILURE, None, "", error=f"cannot start: {why}")
    finally:
        os.close(write_fd)
    tail = _Tail(OUTPUT_TAIL)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: tail,
                                                    os.fdopen(read_fd, "rb", buffering=0))
    except BaseException:
        _kill_group(proc.pid)
        raise
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), KILL_WAIT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tail.closed.wait(), DRAIN_WAIT)
    finally:
        if proc.returncode is None:  # cancelled (shutdown) or not reaped: end the group
            _kill_group(proc.pid)
        transport.close()
    output = bytes(tail.data).decode("utf-8", "replace")
    code = proc.returncode
    if timed_out:
        return HookRun(HookResult.TIMEOUT, code, output)
    return HookRun(HookResult.SUCCESS if code == 0 else HookResult.FAILURE, code, output)


class HookRunner:
    """The `[hooks]` commands by hook name (onIssued, ...), run for events (dispatch.py)."""

    def __init__(self, commands: Mapping[str, tuple[str, ...]], *, cwd: Path, timeout: float,
                 on_result: Callable[[str, str], None] | None = None) -> None:
        self.commands = {hook: _resolve(argv, cwd) for hook, argv in commands.items() if argv}
        self.cwd = cwd
        self.timeout = timeout
        self.on_result = on_result

    def wants(self, event: CertEvent) -> bool:
        return event.kind.hook in self.commands

    def count(self, hook: str, result: str) -> None:
        if self.on_result is not None:
            self.on_result(hook, result)

    async def run(self, event: CertEvent) -> HookRun | None:
        """Run the event's hook, if one is configured; log and count the result."""
        hook = event.kind.hook
        argv = self.commands.get(hook)
        if argv is None:
            return None
        run = await run_command(argv, hook_env(event), cwd=self.cwd, timeout=self.timeout)
        ok = run.result is HookResult.SUCCESS
        fields: dict[str, object] = {
            "hook": hook, "domain": event.domain, "event": event.kind.value,
            "program": argv[0], "result": run.result.value, "exit_code": run.exit_code,
        }
        if run.error is not None:
            fields["error"] = run.error
        if run.result is HookResult.TIMEOUT:
            fields["timeout"] = self.timeout
        if run.output.strip():
            fields["output"] = run.output.strip()
        log_event("hook finished" if ok else "hook failed",
                  level=logging.INFO if ok else logging.WARNING, **fields)
        self.count(hook, run.result.value)
        return run


def _resolve(argv: tuple[str, ...], cwd: Path) -> tuple[str, ...]:
    """A relative program path ("bin/x") is relative to the prefix; a bare name ("x") is
    looked up in HOOK_PATH by exec."""
    program = argv[0]
    if "/" in program and not program.startswith("/"):
        program = str(cwd / program)
    return (program, *argv[1:])
