"""Launches the programs of `helper NAME modules/njt_helper_go_copilot_module.so <toml>;`.

Called by master.py at start, reload and quit. As recorded (copilot-launch.json): argv
`[progName, "-p", "<prefix>/", "-c", "<absolute toml path>"]`, an EMPTY environment, the
simulator's own cwd, stdout and stderr both into stdoutFile (truncated at every launch); reload
= SIGTERM then a new instance ~0.1 s later; quit = SIGTERM; a program that dies is not
restarted (only logged, like NJet's "[alert] ... exited on signal 9").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import BinaryIO

from njetsim.broker import die_with_parent
from njetsim.conf import CopilotConf

log = logging.getLogger("njetsim.copilot")


def _truncate(path: Path) -> BinaryIO:
    return open(path, "wb")


class Copilots:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    async def launch(self, confs: tuple[CopilotConf, ...]) -> None:
        for conf in confs:
            conf.stdout_file.parent.mkdir(parents=True, exist_ok=True)
            argv = [conf.prog, "-p", f"{self.prefix}/", "-c", str(conf.toml_path)]
            with _truncate(conf.stdout_file) as out:
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *argv, env={}, cwd=os.getcwd(), stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
                except OSError as exc:
                    log.error('[alert] copilot "%s": cannot execute %s: %s', conf.name,
                              conf.prog, exc)
                    continue
            self.procs[conf.name] = proc
            log.info('copilot "%s" started: pid %d', conf.name, proc.pid)
            task = asyncio.get_running_loop().create_task(self._watch(conf.name, proc))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)

    async def _watch(self, name: str, proc: asyncio.subprocess.Process) -> None:
        rc = await proc.wait()
        how = f"exited on signal {-rc}" if rc < 0 else f"exited with code {rc}"
        level = logging.WARNING if self.procs.get(name) is proc else logging.INFO
        log.log(level, "[alert] go-copilot %s %d %s", name, proc.pid, how)
        if self.procs.get(name) is proc:
            del self.procs[name]

    def terminate(self) -> None:
        for name, proc in list(self.procs.items()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            log.info('copilot "%s" (pid %d): SIGTERM', name, proc.pid)
        self.procs.clear()

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}
