"""The fleet test harness itself, against the real programs: a private PostgreSQL cluster
(restart, stop), HAProxy round robin with health checks over tiny echo servers, and the
TcpProxy's partition / heal / cut. The fleet tests rely on these behaving as documented.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import psycopg
import pytest

from tests.fixtures.haproxy import HaproxyFactory, haproxy_factory  # noqa: F401
from tests.fixtures.pgcluster import pg_cluster, pg_cluster_dsn  # noqa: F401
from tests.support.hackmods import free_tcp_port
from tests.support.haproxy import server_name
from tests.support.pgcluster import PgCluster
from tests.support.tcpproxy import TcpProxy

# -- PgCluster -------------------------------------------------------------------------


def test_cluster_serves_on_its_own_port(pg_cluster: PgCluster) -> None:  # noqa: F811
    assert pg_cluster.port != 5432
    with psycopg.connect(pg_cluster.dsn()) as conn:
        row = conn.execute("SELECT current_setting('port'), current_setting('fsync'), "
                           "host(inet_server_addr()), current_user").fetchone()
    assert row == (str(pg_cluster.port), "off", "127.0.0.1", "postgres")
    assert (pg_cluster.data_dir / f".s.PGSQL.{pg_cluster.port}").is_socket()
    assert str(pg_cluster.base).startswith("/var/tmp/njcm-pg-")


def test_restart_drops_connections_and_accepts_new_ones(
        pg_cluster_dsn: str, pg_cluster: PgCluster) -> None:  # noqa: F811
    with psycopg.connect(pg_cluster_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (7)")
        before = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        pg_cluster.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(pg_cluster_dsn) as conn:
        assert conn.execute("SELECT v FROM t").fetchone() == (7,)
        after = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert before is not None and after is not None and after[0] > before[0]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_stop_refuses_connections_until_start(
        pg_cluster_dsn: str, pg_cluster: PgCluster, mode: str) -> None:  # noqa: F811
    with psycopg.connect(pg_cluster_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (1)")
    pg_cluster.stop(mode)
    assert not pg_cluster.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_cluster_dsn)
    pg_cluster.start()  # after "immediate": crash recovery
    with psycopg.connect(pg_cluster_dsn) as conn:
        assert conn.execute("SELECT v FROM t").fetchone() == (1,)


# -- Haproxy ---------------------------------------------------------------------------


async def _named_server(name: str) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name.encode() + b"\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def _ask(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()


async def test_haproxy_round_robin_skips_a_stopped_backend(
        haproxy_factory: HaproxyFactory) -> None:  # noqa: F811
    servers = {name: await _named_server(name) for name in ("a", "b", "c")}
    ports = {name: int(s.sockets[0].getsockname()[1]) for name, s in servers.items()}
    names = {server_name("127.0.0.1", p): n for n, p in ports.items()}
    front = free_tcp_port()
    lb = await asyncio.to_thread(
        haproxy_factory, {"echo": (front, [("127.0.0.1", p) for p in ports.values()])})
    await asyncio.to_thread(lb.wait_states, "echo", dict.fromkeys(names, "UP"))

    got = Counter([await _ask(front) for _ in range(6)])
    assert got == {"a": 2, "b": 2, "c": 2}
    sessions = await asyncio.to_thread(lb.connections, "echo")
    assert {names[s]: n for s, n in sessions.items()} == {"a": 2, "b": 2, "c": 2}

    servers["b"].close()
    await servers["b"].wait_closed()
    # before the health check notices, a refused connection is redispatched
    assert {await _ask(front) for _ in range(3)} <= {"a", "c"}
    b = server_name("127.0.0.1", ports["b"])
    await asyncio.to_thread(lb.wait_states, "echo", {b: "DOWN"}, 3.0)
    got = Counter([await _ask(front) for _ in range(6)])
    assert got == {"a": 3, "c": 3}
    for server in servers.values():
        server.close()


# -- TcpProxy --------------------------------------------------------------------------


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def test_tcpproxy_blackhole_heal_cut() -> None:
    server = await _echo_server()
    proxy = TcpProxy("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

        proxy.blackhole()
        writer.write(b"held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(100), 0.5)
        assert not writer.is_closing() and proxy.connections == 1
        late_reader, late_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        late_writer.write(b"late")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(late_reader.read(100), 0.3)

        proxy.heal()
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
        assert await asyncio.wait_for(late_reader.readexactly(4), 5) == b"late"
        new_reader, new_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        new_writer.write(b"new!")
        assert await asyncio.wait_for(new_reader.readexactly(4), 5) == b"new!"
        assert proxy.connections == 3 and proxy.accepted == 3

        proxy.cut()
        for r in (reader, late_reader, new_reader):
            with contextlib.suppress(ConnectionResetError):  # an abort: EOF or a reset
                assert await asyncio.wait_for(r.read(100), 5) == b""
        assert proxy.connections == 0
        for w in (writer, late_writer, new_writer):
            w.close()
    finally:
        proxy.close()
        server.close()


def test_tcpproxy_partitions_postgresql(pg_cluster: PgCluster) -> None:  # noqa: F811
    """Sync use, in front of the real server: what a fleet node sees in a partition."""
    with TcpProxy("127.0.0.1", pg_cluster.port) as proxy:
        dsn = psycopg.conninfo.make_conninfo(pg_cluster.dsn(), port=proxy.port,
                                             connect_timeout=2)
        conn = psycopg.connect(dsn, autocommit=True)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn)
        assert time.monotonic() - started >= 1.5  # a timeout, not a refusal
        proxy.heal()
        assert conn.execute("SELECT 2").fetchone() == (2,)
        with psycopg.connect(dsn) as other:
            assert other.execute("SELECT 3").fetchone() == (3,)
        proxy.cut()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 4")
        conn.close()
