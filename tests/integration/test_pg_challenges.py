"""Fleet challenges over the real PostgreSQL and real sockets: node A's FleetChallengeSolver
presents, node B's ChallengeRelay makes B's own http-01 / tls-alpn-01 server answer it (woken by
LISTEN, or by its poll), A's present waits for B's ack, A's cleanup (or the row's expiry) stops
B answering; a live node that never acks, a database that is away at present, a relay whose
connections are killed, a type B has no solver for."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from controller.adapters.challenges.solvers import LocalHttp01Solver, LocalTlsAlpn01Solver
from controller.adapters.pg.challenges import ChallengeRelay, FleetChallengeSolver
from controller.adapters.pg.db import Database
from controller.errors import TemporaryError
from tests.support.hackmods import free_tcp_port

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
TOKEN2, KEY_AUTH2 = "T" * 43, "T" * 43 + ".thumbprint"
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
B_APP = "njcm-test-node-b"


# -- sockets -----------------------------------------------------------------------------------


async def http_get(port: int, token: str) -> tuple[int, bytes] | None:
    """GET the challenge from 127.0.0.1:port; None when nothing answers (refused, reset,
    timeout: after our listener closed, the port may even be another program's)."""
    async def get() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: a.test\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    try:
        return await asyncio.wait_for(get(), 3)
    except (OSError, TimeoutError, ValueError, IndexError):
        return None


async def handshake(port: int, sni: str) -> tuple[bytes, str | None] | None:
    """TLS with ALPN acme-tls/1 and SNI; (peer cert DER, ALPN); None when nothing answers."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the validation certificate is self-signed by design
    ctx.set_alpn_protocols(["acme-tls/1"])
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname=sni, ssl_handshake_timeout=3), 4)
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        return None
    ssl_object = writer.get_extra_info("ssl_object")
    out = ssl_object.getpeercert(binary_form=True), ssl_object.selected_alpn_protocol()
    writer.close()
    return out


async def answers_http(port: int, token: str = TOKEN, key_auth: str = KEY_AUTH) -> bool:
    return await http_get(port, token) == (200, key_auth.encode())


async def answers_tls(port: int, sni: str = "a.test", key_auth: str = KEY_AUTH) -> bool:
    answer = await handshake(port, sni)
    if answer is None:
        return False
    ext = x509.load_der_x509_certificate(answer[0]).extensions
    with contextlib.suppress(x509.ExtensionNotFound):
        value = ext.get_extension_for_oid(ACME_IDENTIFIER).value
        return isinstance(value, x509.UnrecognizedExtension) and value.value == (
            b"\x04\x20" + hashlib.sha256(key_auth.encode()).digest())
    return False


def assert_rfc8737_certificate(der: bytes, name: str, key_authorization: str) -> None:
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(key_authorization.encode()).digest()


async def eventually(check: Callable[[], Any], within: float, step: float = 0.05) -> float:
    """Await `check()` (a coroutine function) until truthy; seconds it took. Fails at `within`."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"not within {within} s")
        await asyncio.sleep(step)


# -- database ----------------------------------------------------------------------------------


def rows(dsn: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def acks(dsn: str, token: str) -> set[str]:
    return {r[0] for r in rows(dsn, "SELECT node FROM challenge_acks WHERE token = %s", token)}


# -- two nodes ---------------------------------------------------------------------------------


@dataclass
class Fleet:
    dsn: str
    a: FleetChallengeSolver
    local_b: LocalHttp01Solver | LocalTlsAlpn01Solver
    relay: ChallengeRelay
    port_a: int
    port_b: int
    live: list[str] = field(default_factory=lambda: ["a", "b"])
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def fleet(dsn: str, kind: str = "http-01", *, listen: bool = False, poll: float = 5.0,
                ack_timeout: float = 5.0, lifetime: timedelta = timedelta(minutes=10),
                b_solves: bool = True) -> AsyncIterator[Fleet]:
    """Node A (a FleetChallengeSolver) and node B (a ChallengeRelay, running; with `listen`
    woken by a real LISTEN on njcm_challenge) in one process, each with its own solver."""
    port_a, port_b = free_tcp_port(), free_tcp_port()
    while port_b == port_a:
        port_b = free_tcp_port()
    make: Callable[[str], LocalHttp01Solver | LocalTlsAlpn01Solver] = (
        LocalHttp01Solver if kind == "http-01" else LocalTlsAlpn01Solver)
    local_a, local_b = make(f"127.0.0.1:{port_a}"), make(f"127.0.0.1:{port_b}")
    db_a = Database(dsn)
    db_b = Database(psycopg.conninfo.make_conninfo(dsn, application_name=B_APP))
    live: list[str] = ["a", "b"]

    def live_nodes() -> Sequence[str]:
        return live

    solver_a = FleetChallengeSolver(local_a, db_a, "a", live_nodes, ack_timeout=ack_timeout,
                                    lifetime=lifetime)
    relay = ChallengeRelay(db_b, "b", lambda t: local_b if b_solves and t == kind else None,
                           poll=poll)
    out = Fleet(dsn, solver_a, local_b, relay, port_a, port_b, live)
    await asyncio.to_thread(db_b.ensure_schema)
    if listen:
        connected = asyncio.Event()
        out.tasks.append(asyncio.create_task(db_b.listen(
            ["njcm_challenge"], lambda channel, payload: relay.wake(),
            lambda up: connected.set() if up else connected.clear())))
        await asyncio.wait_for(connected.wait(), 10)
    out.tasks.append(asyncio.create_task(relay.run()))
    try:
        yield out
    finally:
        for task in out.tasks:
            task.cancel()
        await asyncio.gather(*out.tasks, return_exceptions=True)
        await relay.close()
        await solver_a.close()
        await local_b.close()
        db_a.close()
        db_b.close()


def warned(caplog: pytest.LogCaptureFixture, msg: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == msg]


# -- tests -------------------------------------------------------------------------------------


async def test_http01_of_node_a_is_answered_by_node_b_woken_by_listen(pg_dsn: str) -> None:
    async with fleet(pg_dsn, listen=True, poll=5.0, ack_timeout=5.0) as f:
        assert f.local_b.ports == []  # no listener while nothing is pending

        started = time.monotonic()
        await f.a.present("a.test", TOKEN, KEY_AUTH)
        waited = time.monotonic() - started
        # read synchronously (the loop is blocked): B's ack was there when present returned
        assert acks(pg_dsn, TOKEN) == {"b"}
        assert waited < 2.0  # woken by NOTIFY, well before B's 5 s poll or the 5 s timeout

        assert await http_get(f.port_b, TOKEN) == (200, KEY_AUTH.encode())
        assert await http_get(f.port_a, TOKEN) == (200, KEY_AUTH.encode())
        assert f.relay.presented() == {TOKEN}
        assert rows(pg_dsn, "SELECT type, domain, key_authorization, owner,"
                    " expires_at > now() + interval '9 minutes' FROM challenges") == [
            ("http-01", "a.test", KEY_AUTH, "a", True)]

        await f.a.cleanup("a.test", TOKEN, KEY_AUTH)
        assert not await answers_http(f.port_a)
        took = await eventually(lambda: _silent_http(f.port_b), within=3.0)
        assert took < 2.0  # the cleanup's NOTIFY, not the 5 s poll
        assert f.relay.presented() == set()
        assert f.local_b.ports == []  # B's listener is closed again
        assert rows(pg_dsn, "SELECT count(*) FROM challenges") == [(0,)]
        assert rows(pg_dsn, "SELECT count(*) FROM challenge_acks") == [(0,)]


async def _silent_http(port: int) -> bool:
    return not await answers_http(port)


async def test_tls_alpn01_of_node_a_is_answered_by_node_b_found_by_its_poll(
    pg_dsn: str,
) -> None:
    poll = 0.3
    async with fleet(pg_dsn, "tls-alpn-01", poll=poll, ack_timeout=5.0) as f:
        started = time.monotonic()
        await f.a.present("a.test", TOKEN, KEY_AUTH)
        assert acks(pg_dsn, TOKEN) == {"b"}
        assert time.monotonic() - started < 5.0

        for port in (f.port_b, f.port_a):
            answer = await handshake(port, "a.test")
            assert answer is not None
            der, protocol = answer
            assert protocol == "acme-tls/1"
            assert_rfc8737_certificate(der, "a.test", KEY_AUTH)

        await f.a.cleanup("a.test", TOKEN, KEY_AUTH)

        async def silent() -> bool:
            return not await answers_tls(f.port_b)

        took = await eventually(silent, within=3 * poll + 1.0)
        assert took <= 2 * poll + 0.5
        assert f.relay.presented() == set()
        assert f.local_b.ports == []


async def test_a_live_node_that_never_acks_delays_present_by_the_timeout_and_is_named(
    pg_dsn: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controller")
    async with fleet(pg_dsn, poll=0.2, ack_timeout=0.6) as f:
        f.live.append("ghost")
        started = time.monotonic()
        await f.a.present("a.test", TOKEN, KEY_AUTH)
        waited = time.monotonic() - started
        assert 0.6 <= waited < 2.0
        [record] = warned(caplog, "challenge not confirmed by every node")
        assert record.levelno == logging.WARNING
        assert record.fields["missing"] == ["ghost"]  # type: ignore[attr-defined]
        # B did ack, and both answer: the CA may still pick one of them
        assert acks(pg_dsn, TOKEN) == {"b"}
        assert await http_get(f.port_b, TOKEN) == (200, KEY_AUTH.encode())
        await f.a.cleanup("a.test", TOKEN, KEY_AUTH)


async def test_present_with_the_database_away_raises_temporary_and_leaves_nothing_presented(
) -> None:
    port, db_port = free_tcp_port(), free_tcp_port()  # nothing listens on db_port
    local = LocalHttp01Solver(f"127.0.0.1:{port}")
    db = Database(f"host=127.0.0.1 port={db_port} user=postgres password=sekrit dbname=njcm",
                  connect_timeout=1)
    solver = FleetChallengeSolver(local, db, "a", lambda: ["a", "b"], ack_timeout=1.0)
    with pytest.raises(TemporaryError, match=f"database .*port={db_port}") as caught:
        await solver.present("a.test", TOKEN, KEY_AUTH)
    assert "sekrit" not in str(caught.value)
    assert local.ports == []
    assert not await answers_http(port)
    await solver.cleanup("a.test", TOKEN, KEY_AUTH)  # never raises, even with the DB away
    await solver.close()


async def test_the_relay_survives_its_connections_being_terminated(
    pg_dsn: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controller")
    async with fleet(pg_dsn, listen=True, poll=0.3, ack_timeout=5.0) as f:
        await f.a.present("a.test", TOKEN, KEY_AUTH)
        assert acks(pg_dsn, TOKEN) == {"b"}

        killed = rows(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE application_name = %s", B_APP)
        assert killed and all(ok for (ok,) in killed)

        async def noticed() -> bool:
            return bool(warned(caplog, "fleet challenge relay cannot read the database;"
                                       " retrying"))

        await eventually(noticed, within=3.0)
        # what B presented stays presented through the outage
        assert await http_get(f.port_b, TOKEN) == (200, KEY_AUTH.encode())

        started = time.monotonic()
        await f.a.present("b.test", TOKEN2, KEY_AUTH2)
        assert acks(pg_dsn, TOKEN2) == {"b"}
        assert time.monotonic() - started < 5.0
        assert warned(caplog, "fleet challenge relay reaches the database again")
        assert await http_get(f.port_b, TOKEN2) == (200, KEY_AUTH2.encode())
        assert f.relay.presented() == {TOKEN, TOKEN2}

        # close() cleans up everything presented (the node shuts down)
        for task in f.tasks:
            task.cancel()
        await asyncio.gather(*f.tasks, return_exceptions=True)
        f.tasks.clear()
        await f.relay.close()
        assert f.relay.presented() == set()
        assert f.local_b.ports == []
        assert not await answers_http(f.port_b)
        await f.a.cleanup("a.test", TOKEN, KEY_AUTH)
        await f.a.cleanup("b.test", TOKEN2, KEY_AUTH2)


async def test_an_expired_row_is_cleaned_up_by_the_relay_and_removed_as_a_leftover(
    pg_dsn: str,
) -> None:
    async with fleet(pg_dsn, poll=0.2, lifetime=timedelta(seconds=1)) as f:
        await f.a.present("a.test", TOKEN, KEY_AUTH)
        assert await http_get(f.port_b, TOKEN) == (200, KEY_AUTH.encode())
        # A "dies" without cleaning up: B stops answering once the row expires
        await eventually(lambda: _silent_http(f.port_b), within=3.0)
        assert f.relay.presented() == set()
        assert f.local_b.ports == []
        # A's next start removes what its previous run left
        assert await f.a.remove_leftovers() == ["fleet http-01 challenge for a.test"]
        assert rows(pg_dsn, "SELECT count(*) FROM challenges") == [(0,)]
        assert rows(pg_dsn, "SELECT count(*) FROM challenge_acks") == [(0,)]
        assert await f.a.remove_leftovers() == []
        await f.a.local.cleanup("a.test", TOKEN, KEY_AUTH)


async def test_a_type_without_a_local_solver_is_logged_once_and_not_acked(
    pg_dsn: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controller")
    async with fleet(pg_dsn, "tls-alpn-01", poll=0.1, ack_timeout=0.8, b_solves=False) as f:
        await f.a.present("a.test", TOKEN, KEY_AUTH)
        [missing] = warned(caplog, "challenge not confirmed by every node")
        assert missing.fields["missing"] == ["b"]  # type: ignore[attr-defined]
        assert acks(pg_dsn, TOKEN) == set()
        assert f.relay.presented() == set()
        assert f.local_b.ports == []  # B never listened
        assert not await answers_tls(f.port_b)
        skipped = warned(caplog, "fleet challenges of this type are not answered here: no"
                                 " local solver is configured")
        assert len(skipped) == 1  # several polls ran during the 0.8 s wait
        assert skipped[0].fields["type"] == "tls-alpn-01"  # type: ignore[attr-defined]
        await f.a.cleanup("a.test", TOKEN, KEY_AUTH)
