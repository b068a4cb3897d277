"""dns-01 through a user's program: `[dns] provider = "exec"`, for any DNS service without a
built-in provider (Huawei Cloud DNS, an in-house API, ...).

Implements the DnsProvider port (controller/ports/) structurally; built by
adapters/dns/providers.py from `[dns] command` and `[dns] timeout`. The call shape follows
lego's exec provider:

    <command...> present <fqdn>. <value>      # add the TXT value at <fqdn> (keep other values)
    <command...> cleanup <fqdn>. <value>      # remove exactly that value

`fqdn` is absolute, with its trailing dot ("_acme-challenge.shop.test."); `value` is the TXT
value (the base64url digest). The program runs with stdin closed and with exactly this
environment, nothing inherited (NJet starts copilots with an empty environment anyway):
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin (a bare command name is looked
up there) and NJCM_DNS_ZONE=<zone apex, no trailing dot>. Exit 0 is success; anything else, a
timeout or a signal is a TemporaryError naming the exit and the end of stderr, and the last
4 KiB of stdout and stderr are logged. On timeout (or when the caller is cancelled) the whole
process group is killed with SIGKILL: the program runs in a session of its own.
Calls for the same name run one at a time; different names run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence

from controller.adapters.dns.pername import PerNameProvider
from controller.errors import ConfigError, TemporaryError
from controller.logs import log_event

EXEC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ZONE_VARIABLE = "NJCM_DNS_ZONE"
TAIL_BYTES = 4096  # how much of stdout and of stderr is kept (and logged on failure)
MESSAGE_TAIL_CHARS = 1000  # how much of stderr goes into the error message
_DRAIN_SECONDS = 2.0  # after exit, how long a pipe still held by a grandchild is read


class _Tail:
    """The last TAIL_BYTES of a stream, however much the program writes."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.data += chunk
            del self.data[:-TAIL_BYTES]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace").strip()


class ExecProvider(PerNameProvider):
    """Runs `command + [action, fqdn + ".", value]` for each present/cleanup."""

    def __init__(self, command: Sequence[str], *, timeout: float) -> None:
        if isinstance(command, str) or not command or not all(
                isinstance(part, str) and part for part in command):
            raise ConfigError("[dns] command must be a non-empty list of non-empty strings "
                              '(e.g. ["/usr/local/bin/dns-hook"])')
        if not timeout > 0:
            raise ConfigError(f"[dns] timeout must be more than 0 seconds, not {timeout}")
        self.command = tuple(command)
        self.timeout = float(timeout)
        super().__init__()

    async def close(self) -> None:
        """Nothing stays running between calls."""

    async def _call(self, action: str, zone: str, fqdn: str, value: str) -> None:
        name = fqdn.rstrip(".").lower()
        lock = self._lock(name)
        async with lock:
            await self._run(action, zone.rstrip("."), name, value)

    async def _run(self, action: str, zone: str, fqdn: str, value: str) -> None:
        what = f"dns exec provider {self.command[0]}: {action} {fqdn}."
        argv = [*self.command, action, f"{fqdn}.", value]
        env = {"PATH": EXEC_PATH, ZONE_VARIABLE: zone}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise ConfigError(f"{what}: cannot run {self.command[0]!r}: "
                              f"{exc.strerror or exc} (PATH={EXEC_PATH})") from None
        except OSError as exc:
            raise TemporaryError(f"{what}: cannot start it: {exc.strerror or exc}") from None
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _Tail(), _Tail()
        readers = [asyncio.create_task(out.drain(proc.stdout)),
                   asyncio.create_task(err.drain(proc.stderr))]
        try:
            try:
                await asyncio.wait_for(proc.wait(), self.timeout)
            except TimeoutError:
                _kill_group(proc.pid)
                await proc.wait()
                await _finish(readers)
                self._log_failure(what, "timed out", out, err)
                raise TemporaryError(f"{what}: no exit within {self.timeout:g} s; its process "
                                     f"group was killed{_stderr_part(err)}") from None
            await _finish(readers)
        except BaseException:
            if proc.returncode is None:  # cancelled: leave nothing running behind us
                _kill_group(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            for reader in readers:
                reader.cancel()
            raise
        code = proc.returncode
        if code == 0:
            log_event("dns record changed through the exec provider", level=logging.DEBUG,
                      action=action, fqdn=fqdn, command=self.command[0])
            return
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        self._log_failure(what, how, out, err)
        raise TemporaryError(f"{what}: {how}{_stderr_part(err)}")

    def _log_failure(self, what: str, how: str, out: _Tail, err: _Tail) -> None:
        log_event("dns exec provider failed", level=logging.WARNING, call=what, outcome=how,
                  stdout=out.text(), stderr=err.text())


def _stderr_part(err: _Tail) -> str:
    text = err.text()
    if not text:
        return ""
    if len(text) > MESSAGE_TAIL_CHARS:
        text = "..." + text[-MESSAGE_TAIL_CHARS:]
    return f"; stderr: {text}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _finish(readers: list[asyncio.Task[None]]) -> None:
    """Read what is left in the pipes; a pipe that a leftover grandchild keeps open is given up
    on after a moment (the program itself has exited)."""
    _done, pending = await asyncio.wait(readers, timeout=_DRAIN_SECONDS)
    for reader in pending:
        reader.cancel()
    for reader in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await reader
