"""The fleet database: a small pool of psycopg 3 connections, transactions, NOTIFY and LISTEN,
the schema check at first use, and the one place database errors become controller errors.

Used by every module of adapters/pg/ (built once by app.py from `[store]`). psycopg runs on
libpq, so a DSN means what it means to psql (sslmode, sslrootcert, passfile, service files).
Contract:
- `tx()` hands out a pooled connection inside one transaction (commit on a clean exit, rollback
  on an exception). Before the first one it migrates the schema (migrations.py, under an
  advisory lock) or, with `read_only` (`diff`, `certs`), only checks it. Thread-safe: the
  store calls it from worker threads; a connection is never shared by two threads.
- Errors: a database that cannot be reached, restarts, or drops the link raises
  TemporaryError("database <shown>: <why>") (`shown` is the DSN without its password); a wrong
  password, an unknown role or database, a refused pg_hba entry raise ConfigError with the same
  one line. A query error (a bug, a constraint) is StoreError. The password never appears.
- An unresponsive server fails instead of hanging: TCP keepalives and tcp_user_timeout are
  set unless the DSN sets them, and a watchdog thread cuts the socket of any transaction
  still running after TX_DEADLINE (a link that accepts but never forwards, as a proxy in
  front of a hung server does, defeats TCP's own timers). A pooled connection idle for a
  moment is checked before use (the server may have restarted meanwhile).
- Connection-level failures are StoreUnavailable (a TemporaryError): an action that meets one
  is skipped, not backed off; the next pass retries it.
- `listen()` keeps one LISTEN connection (asyncio) until cancelled, reconnecting with backoff;
  after every (re)connect it reports `*` on each channel, since notifications sent while it was
  away are lost (the listener then rescans).
- `up` and `last_error` describe the last attempt (for /healthz).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import conninfo

from controller.adapters.pg import migrations
from controller.errors import ConfigError, ControllerError, StoreError, StoreUnavailable
from controller.logs import log_event

Conn = psycopg.Connection[tuple[Any, ...]]

TX_DEADLINE = 30.0  # seconds a transaction may take before the watchdog cuts its socket
IDLE_CHECK = 0.5  # a pooled connection idle longer than this is checked before use

_LINK_DEFAULTS = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2",
                  "keepalives_count": "3", "tcp_user_timeout": "10000"}
# libpq's words for "the operator must fix the DSN" (the server sends no SQLSTATE before
# authentication in every version, so the message is what there is)
_CONFIG_SQLSTATES = {"28P01", "28000", "3D000", "42501"}
_CONFIG_WORDS = ("password authentication failed", "does not exist", "no pg_hba.conf entry",
                 "password supplied", "no password", "authentication failed",
                 "invalid connection option", "invalid dsn", "missing \"=\"",
                 "could not translate host name")


def shown_dsn(dsn: str) -> str:
    """The DSN as it may be printed: libpq's key=value form without the password."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<a DSN libpq cannot parse>"
    parts.pop("password", None)
    keep = {k: v for k, v in parts.items() if v not in (None, "")}
    return conninfo.make_conninfo("", **keep) if keep else "<empty DSN: libpq defaults>"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if len(lines) == 1 else "; ".join(lines[:2])


def translate(exc: BaseException, shown: str) -> ControllerError:
    """A psycopg error as the controller's: ConfigError (fix the DSN), TemporaryError (the
    database is away), StoreError (anything else)."""
    why = _first_line(exc)
    state = getattr(exc, "sqlstate", None)
    if state in _CONFIG_SQLSTATES or any(w in why.lower() for w in _CONFIG_WORDS):
        return ConfigError(f"database {shown}: {why}")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
        return StoreUnavailable(f"database {shown}: {why}")
    return StoreError(f"database {shown}: {why}")


class _Watchdog:
    """One daemon thread that cuts the socket of a transaction past its deadline, so a
    blocked libpq read returns an error instead of waiting for ever."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[float, Conn]] = {}
        self._thread: threading.Thread | None = None

    def watch(self, conn: Conn, seconds: float) -> None:
        with self._lock:
            self._running[id(conn)] = (time.monotonic() + seconds, conn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="njcm-db-watchdog",
                                                daemon=True)
                self._thread.start()

    def done(self, conn: Conn) -> None:
        with self._lock:
            self._running.pop(id(conn), None)

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self._lock:
                late = [c for deadline, c in self._running.values() if deadline <= now]
                for c in late:
                    self._running.pop(id(c), None)
            for c in late:
                _sever(c)


def _sever(conn: Conn) -> None:
    """Shut the connection's socket down (a duplicate of its descriptor: libpq's stays valid
    and sees the error on its next read)."""
    with contextlib.suppress(OSError, ValueError, psycopg.Error):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
    log_event("fleet database transaction cut after its deadline", level=logging.WARNING,
              seconds=TX_DEADLINE)


_WATCHDOG = _Watchdog()


class Database:
    """See the module docstring."""

    def __init__(self, dsn: str, *, read_only: bool = False, pool_size: int = 4,
                 connect_timeout: float = 5.0) -> None:
        self.shown = shown_dsn(dsn)
        try:
            given = conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"[store] dsn: libpq cannot parse it: {_first_line(exc)}") from None
        extra = {k: v for k, v in _LINK_DEFAULTS.items() if k not in given}
        if "connect_timeout" not in given:
            extra["connect_timeout"] = str(max(1, round(connect_timeout)))
        self._dsn = conninfo.make_conninfo(dsn, **extra)
        self.read_only = read_only
        self._pool_size = pool_size
        self._idle: list[tuple[Conn, float]] = []  # (connection, monotonic time returned)
        self._lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self._schema_ok = False
        self.up = False
        self.last_error: str | None = None
        self.migrated: list[str] = []
        self._closed = False

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> Conn:
        try:
            conn: Conn = psycopg.connect(self._dsn, autocommit=False)
        except Exception as exc:
            raise self._failed(exc) from None
        return conn

    def _failed(self, exc: BaseException) -> ControllerError:
        err = translate(exc, self.shown)
        self.up = False
        self.last_error = str(err)
        return err

    def _take(self) -> Conn:
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if conn.closed or conn.broken:
                continue
            if time.monotonic() - since < IDLE_CHECK or self._alive(conn):
                return conn
        return self._connect()

    @staticmethod
    def _alive(conn: Conn) -> bool:
        """A quick round trip on an idle pooled connection (False: drop it)."""
        _WATCHDOG.watch(conn, 5.0)
        try:
            conn.execute("SELECT 1")
            conn.rollback()
            return True
        except psycopg.Error:
            with contextlib.suppress(Exception):
                conn.close()
            return False
        finally:
            _WATCHDOG.done(conn)

    def _give_back(self, conn: Conn) -> None:
        if conn.closed or conn.broken:
            return
        with self._lock:
            if not self._closed and len(self._idle) < self._pool_size:
                self._idle.append((conn, time.monotonic()))
                return
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[Conn]:
        """One transaction on a pooled connection (see the module docstring)."""
        self.ensure_schema()
        with self._raw_tx() as conn:
            yield conn

    @contextlib.contextmanager
    def _raw_tx(self) -> Iterator[Conn]:
        conn = self._take()
        _WATCHDOG.watch(conn, TX_DEADLINE)
        try:
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            _WATCHDOG.done(conn)
            if conn.broken or conn.closed:
                with contextlib.suppress(Exception):
                    conn.close()
            else:
                self._give_back(conn)
            raise self._failed(exc) from None
        except BaseException:
            _WATCHDOG.done(conn)
            self._give_back(conn)
            raise
        _WATCHDOG.done(conn)
        self.up = True
        self.last_error = None
        self._give_back(conn)

    def ensure_schema(self) -> None:
        """Migrate (or, read-only, check) once per process; ConfigError when the database is
        newer than this code (or, read-only, behind it)."""
        if self._schema_ok:
            return
        with self._schema_lock:
            if self._schema_ok:
                return
            with self._raw_tx() as conn:
                if self.read_only:
                    migrations.check(migrations.current_version(conn), self.shown,
                                     read_only=True)
                else:
                    self.migrated = migrations.migrate(conn, self.shown)
            for line in self.migrated:
                log_event("fleet database migrated", detail=line, database=self.shown)
            self._schema_ok = True

    @staticmethod
    def notify(conn: Conn, channel: str, payload: str) -> None:
        """NOTIFY `channel` when the caller's transaction commits."""
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = [c for c, _ in self._idle], []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    # -- LISTEN ------------------------------------------------------------------------------

    async def listen(self, channels: Sequence[str], on_notify: Callable[[str, str], None],
                     on_state: Callable[[bool], None] | None = None) -> None:
        """LISTEN on `channels` until cancelled (see the module docstring)."""
        delay = 1.0
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                for channel in channels:
                    await conn.execute(f'LISTEN "{channel}"')
                delay = 1.0
                if on_state is not None:
                    on_state(True)
                for channel in channels:
                    on_notify(channel, "*")
                while True:  # every 15 s of silence: a round trip proves the link is alive
                    async for note in conn.notifies(timeout=15.0):
                        on_notify(note.channel, note.payload)
                    try:
                        await asyncio.wait_for(conn.execute("SELECT 1"), 10.0)
                    except TimeoutError:
                        raise psycopg.OperationalError(
                            "the LISTEN connection stopped answering") from None
            except (psycopg.Error, OSError) as exc:
                err = translate(exc, self.shown)
                if on_state is not None:
                    on_state(False)
                log_event("fleet database LISTEN lost; reconnecting", level=logging.WARNING,
                          error=str(err), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
