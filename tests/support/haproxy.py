"""A real HAProxy (Debian's) in TCP mode in front of several backends, for the fleet tests:
one address for many NJet nodes / challenge servers, as a load balancer gives a CA.

`Haproxy(workdir, {"http": (8080, [("127.0.0.1", 5001), ("127.0.0.1", 5002)])})` writes
workdir/haproxy.cfg: per name a `listen` section bound to 127.0.0.1:<port>, `balance
roundrobin`, one server per backend (named "<host>:<port>") health-checked by a TCP connect
every 500 ms (`fall 1 rise 1`: a stopped backend is skipped within about half a second),
`retries 2` + `option redispatch 1` (a refused connection is retried on another server),
timeouts connect 2 s / client and server 10 s. `start()` runs `haproxy -db` as a child (no
daemon; output in workdir/haproxy.log) and returns once its stats socket (a private
127.0.0.1 port) answers, which is after every frontend is bound; `stop()` ends it
(SIGTERM, then SIGKILL). The stats socket gives `stat(name)` (the `show stat` rows),
`connections(name)` (sessions each server got), `states(name)` ("UP" / "DOWN" / ...),
`wait_states(name, {...})` and `command(...)` (any runtime API command, e.g. "disable server
http/127.0.0.1:5001").

Used by the fleet tests (tests/integration/test_fleet_harness.py and the fleet e2e tests).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.hackmods import free_tcp_port
from tests.support.procs import stop_process, tail

Backends = Sequence[tuple[str, int]]


class HaproxyError(RuntimeError):
    """haproxy did not start, or its stats socket did not answer."""


def server_name(host: str, port: int) -> str:
    """The name a backend has in the config and in the stats: "<host>:<port>"."""
    return f"{host}:{port}"


class Haproxy:
    """One private haproxy process; addresses stay the same across stop()/start()."""

    def __init__(self, workdir: Path, frontends: Mapping[str, tuple[int, Backends]], *,
                 program: str = "/usr/sbin/haproxy", health_checks: bool = True) -> None:
        if not frontends:
            raise ValueError("Haproxy needs at least one frontend")
        self.workdir = workdir
        self.program = program
        # False: every server counts as up, a refused connection is redispatched to the next
        # (challenge listeners open only while an order is pending: a 500 ms check lags them)
        self.health_checks = health_checks
        self.frontends = {name: (port, list(backends))
                          for name, (port, backends) in frontends.items()}
        self.stats_port = free_tcp_port()
        self.conf = workdir / "haproxy.cfg"
        self.log = workdir / "haproxy.log"
        self.conf.write_text(self.render())
        self._proc: subprocess.Popen[bytes] | None = None

    def render(self) -> str:
        """The configuration file's text."""
        lines = [
            "global",
            f"    stats socket ipv4@127.0.0.1:{self.stats_port} level admin",
            "    maxconn 2000",
            "",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 10s",
            "    timeout server 10s",
            "    timeout check 1s",
            "    retries 2",
            "    option redispatch 1",
        ]
        for name, (port, backends) in self.frontends.items():
            lines += ["", f"listen {name}", f"    bind 127.0.0.1:{port}",
                      "    balance roundrobin"]
            check = " check inter 500ms fall 1 rise 1" if self.health_checks else ""
            lines += [f"    server {server_name(h, p)} {h}:{p}{check}" for h, p in backends]
        return "\n".join(lines) + "\n"

    def port(self, name: str) -> int:
        return self.frontends[name][0]

    def address(self, name: str) -> tuple[str, int]:
        return ("127.0.0.1", self.frontends[name][0])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        check = subprocess.run([self.program, "-c", "-q", "-f", str(self.conf)],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise HaproxyError(f"haproxy rejects {self.conf}: {check.stdout}{check.stderr}")
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen([self.program, "-db", "-f", str(self.conf)],
                                          stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HaproxyError(f"haproxy exited ({self._proc.returncode}): {tail(self.log)}")
            try:
                self.command("show info", timeout=0.5)
                return
            except OSError:
                time.sleep(0.02)  # polling the stats socket until haproxy listens
        self.stop()
        raise HaproxyError(f"haproxy did not come up in {timeout:.0f} s: {tail(self.log)}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc, timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- runtime API (stats socket) -----------------------------------------------------

    def command(self, line: str, timeout: float = 2.0) -> str:
        """One runtime API command (haproxy closes the socket after answering); its output."""
        with socket.create_connection(("127.0.0.1", self.stats_port), timeout=timeout) as s:
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stat(self, name: str) -> list[dict[str, str]]:
        """The `show stat` rows of one frontend's servers (svname = "<host>:<port>")."""
        text = self.command("show stat")
        rows = [line for line in text.splitlines() if line.strip()]
        if not rows or not rows[0].startswith("# "):
            raise HaproxyError(f"unexpected `show stat` answer: {text[:200]!r}")
        header = rows[0][2:].split(",")
        found = [dict(zip(header, line.split(","), strict=False)) for line in rows[1:]]
        return [r for r in found
                if r.get("pxname") == name and r.get("svname") not in ("FRONTEND", "BACKEND")]

    def connections(self, name: str) -> dict[str, int]:
        """Sessions each server of `name` was given since start ("<host>:<port>" -> count)."""
        return {r["svname"]: int(r["stot"] or 0) for r in self.stat(name)}

    def states(self, name: str) -> dict[str, str]:
        """Each server's state: "UP", "DOWN", "MAINT", ... (transitions read "UP 1/2")."""
        return {r["svname"]: r["status"] for r in self.stat(name)}

    def wait_states(self, name: str, expected: Mapping[str, str], timeout: float = 5.0) -> None:
        """Wait until the named servers are in the expected states (e.g. {"h:p": "DOWN"})."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.states(name)
            if all(now.get(server) == state for server, state in expected.items()):
                return
            if time.monotonic() > deadline:
                raise HaproxyError(f"{name}: servers are {now}, expected {dict(expected)}")
            time.sleep(0.05)  # polling the health checks' verdict
