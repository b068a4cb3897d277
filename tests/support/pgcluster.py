"""A throwaway PostgreSQL cluster on its own port, for the fleet tests that restart, stop or
break the database (the machine's server on 5432 is shared and must never be touched).

`PgCluster(initdb, pg_ctl)` runs Debian's `initdb` / `pg_ctl` (as the `postgres` user when
this process is root: PostgreSQL refuses to run as root) on a data directory under
/var/tmp/njcm-pg-<random>/ (not under pytest's 0700 tmp dirs, which the postgres user cannot
reach). The cluster trusts every local connection (user postgres), listens on
127.0.0.1:<free port> only, keeps its unix socket inside its data directory and runs with
fsync off. `start()` (initdb on first use), `stop(mode)`, `restart(mode)`, `dsn(dbname)`,
`create_database(name)` / `drop_database(name)`, `destroy()` (stop + remove the directory).
The port stays the same across stop/start, so a DSN taken before a restart still works after.

`reap_stale()` stops and removes clusters left behind by a test process that died (each
directory records its owner's pid). Used by tests/fixtures/pgcluster.py (the `pg_cluster`
fixtures) and the fleet restart/outage tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.hackmods import free_tcp_port
from tests.support.procs import tail

ROOT_DIR = Path("/var/tmp")
PREFIX = "njcm-pg-"
OWNER_FILE = "owner.pid"
PG_USER = "postgres"
START_TIMEOUT = 30


class PgClusterError(RuntimeError):
    """initdb or pg_ctl failed (the message carries the tail of its output / the server log)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for a signalled postmaster (not our child) to be gone


def _postmaster_of(data_dir: Path) -> int | None:
    """The pid of the postmaster running on `data_dir` (checked against its command line, so
    a recycled pid is never signalled), else None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(data_dir).encode() in cmdline else None


def _runuser() -> list[str] | None:
    found = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if Path(p).exists()), None)
    return [found, "-u", PG_USER, "--"] if found else None


class PgCluster:
    """One private PostgreSQL cluster; see the module docstring."""

    def __init__(self, initdb: str, pg_ctl: str, *, root: Path = ROOT_DIR,
                 port: int | None = None) -> None:
        self.initdb = initdb
        self.pg_ctl = pg_ctl
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                self._owner = pwd.getpwnam(PG_USER)
            except KeyError as exc:
                raise PgClusterError(f"running as root but there is no {PG_USER!r} user "
                                     "to run PostgreSQL as") from exc
        self.base = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
        (self.base / OWNER_FILE).write_text(f"{os.getpid()}\n")
        if self._as_root:
            os.chown(self.base, self._owner.pw_uid, self._owner.pw_gid)
        self.data_dir = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self._port = port or free_tcp_port()

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    # -- processes ----------------------------------------------------------------------

    def _argv(self, argv: list[str]) -> list[str]:
        if not self._as_root:
            return argv
        prefix = _runuser()
        if prefix is not None:
            return [*prefix, *argv]
        return ["su", PG_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]

    def _run(self, argv: list[str], what: str, timeout: float = 60.0) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            done = subprocess.run(self._argv(argv), cwd=self.base, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise PgClusterError(f"{what} in {self.data_dir} took over {timeout:.0f} s; "
                                 f"log: {tail(self.log_path)}") from exc
        if done.returncode != 0:
            raise PgClusterError(f"{what} in {self.data_dir} failed (exit {done.returncode}): "
                                 f"{(done.stdout + done.stderr)[-2000:]}; "
                                 f"log: {tail(self.log_path)}")
        return done.stdout

    def _init(self) -> None:
        self._run([self.initdb, "--no-sync", "-A", "trust", "-U", PG_USER, "-E", "UTF8",
                   "--locale=C", "-D", str(self.data_dir)], "initdb")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self._port),
            "unix_socket_directories": f"'{self.data_dir}'",
            "fsync": "off",  # survives a server crash (stop "immediate"), not an OS crash
            "full_page_writes": "off",
            "shared_buffers": "'32MB'",
            "max_connections": "100",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:  # keeps postgres' owner
            conf.write("\n# tests/support/pgcluster.py\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    @property
    def running(self) -> bool:
        return _postmaster_of(self.data_dir) is not None

    def start(self) -> None:
        """Start the server (initdb first if the cluster is new); waits until it accepts
        connections. A no-op while it runs."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        if self.running:
            return
        self._run([self.pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
                   "-t", str(START_TIMEOUT), "start"], "pg_ctl start", timeout=START_TIMEOUT + 5)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" (roll back and disconnect every session), "immediate"
        (abort, like a crash: recovery at the next start) or "smart" (wait for sessions to
        end). Returns once the server is gone; a no-op when it is not running."""
        if mode not in ("fast", "immediate", "smart"):
            raise ValueError(f"pg_ctl stop mode {mode!r}: fast, immediate or smart")
        if not self.running:
            return
        self._run([self.pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "-t",
                   str(START_TIMEOUT), "stop"], f"pg_ctl stop -m {mode}",
                  timeout=START_TIMEOUT + 5)

    def restart(self, mode: str = "fast") -> None:
        """stop(mode) then start(): every existing connection is dropped; same port."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop the server (immediate; SIGKILL if pg_ctl cannot) and remove its directory."""
        with contextlib.suppress(PgClusterError):
            self.stop("immediate")
        pid = _postmaster_of(self.data_dir)
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)
        shutil.rmtree(self.base, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        return (f"host={self.host} port={self._port} user={PG_USER} dbname={dbname} "
                "connect_timeout=5")

    def create_database(self, name: str | None = None) -> str:
        """Create a database (default name: njcm_c_<random>); returns its DSN."""
        name = name or f"njcm_c_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database (its sessions terminated first); a no-op when it does not exist."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def reap_stale(root: Path = ROOT_DIR) -> list[Path]:
    """Kill and remove the clusters under `root` whose owning test process is gone (a run
    that was killed before its fixtures could clean up); the directories removed."""
    removed: list[Path] = []
    for base in root.glob(f"{PREFIX}*"):
        try:
            owner = int((base / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        pid = _postmaster_of(base / "data")
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGQUIT)  # postmaster: immediate shutdown
            _wait_gone(pid)
        shutil.rmtree(base, ignore_errors=True)
        removed.append(base)
    return removed
