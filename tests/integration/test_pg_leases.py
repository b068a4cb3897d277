"""Leases over the real PostgreSQL (adapters/pg/leases.py): two nodes racing for one key,
expiry and takeover with a higher generation, renew / release after a loss, and `hold()`
renewing in the background and noticing a loss."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from controller import faultpoints
from controller.adapters.pg.db import Database
from controller.adapters.pg.leases import Lease, LeaseBusy, Leases
from controller.errors import TemporaryError
from tests.fixtures.pg import pg_dsn  # noqa: F401
from tests.logcapture import capture_logs

MINUTE = timedelta(minutes=1)


@pytest.fixture
def dbs(pg_dsn: str) -> Iterator[tuple[Database, Database]]:  # noqa: F811
    """Two nodes' own connections to one fleet database."""
    a, b = Database(pg_dsn), Database(pg_dsn)
    yield a, b
    a.close()
    b.close()


def expire(db: Database, key: str) -> None:
    """Let the lease on `key` run out (as if its holder stalled past the duration)."""
    with db.tx() as conn:
        conn.execute("UPDATE leases SET expires_at = now() - interval '1 second' "
                     "WHERE key = %s", (key,))


def race(nodes: list[Leases], key: str) -> tuple[list[tuple[str, Lease]],
                                                  list[tuple[str, LeaseBusy]]]:
    """Every node acquires `key` at the same instant (one thread each)."""
    barrier = threading.Barrier(len(nodes))
    won: list[tuple[str, Lease]] = []
    busy: list[tuple[str, LeaseBusy]] = []

    def take(leases: Leases) -> None:
        barrier.wait()
        try:
            won.append((leases.node, leases.acquire(key)))
        except LeaseBusy as exc:
            busy.append((leases.node, exc))

    threads = [threading.Thread(target=take, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return won, busy


def test_two_nodes_race_and_exactly_one_wins(dbs: tuple[Database, Database]) -> None:
    nodes = [Leases(dbs[0], "node-a", MINUTE), Leases(dbs[1], "node-b", MINUTE)]
    for attempt in range(5):
        key = f"race{attempt}.test"
        won, busy = race(nodes, key)
        assert len(won) == 1 and len(busy) == 1, (won, busy)
        winner, lease = won[0]
        loser, exc = busy[0]
        assert {winner, loser} == {"node-a", "node-b"}
        assert lease.generation == 1
        assert exc.holder == winner and exc.key == key
        assert winner in str(exc) and key in str(exc) and "until" in str(exc)
        assert exc.retry_after is not None and 1 <= exc.retry_after <= 61
        rows = {r.key: r for r in nodes[0].holders()}
        assert rows[key].owner == winner and rows[key].live


def test_racing_for_an_expired_lease_bumps_the_generation_once(
        dbs: tuple[Database, Database]) -> None:
    nodes = [Leases(dbs[0], "node-a", MINUTE), Leases(dbs[1], "node-b", MINUTE),
             Leases(dbs[1], "node-c", MINUTE)]
    first = nodes[0].acquire("a.test")
    expire(dbs[0], "a.test")
    won, busy = race(nodes, "a.test")
    assert len(won) == 1 and len(busy) == 2, (won, busy)
    assert won[0][1].generation == first.generation + 1
    assert {exc.holder for _, exc in busy} == {won[0][0]}


def test_expired_lease_is_taken_over_with_a_higher_generation(
        dbs: tuple[Database, Database]) -> None:
    a, b = Leases(dbs[0], "node-a", MINUTE), Leases(dbs[1], "node-b", MINUTE)
    first = a.acquire("a.test")
    expire(dbs[0], "a.test")
    assert [r.live for r in b.holders()] == [False]
    second = b.acquire("a.test")
    assert second.generation == first.generation + 1
    assert a.renew(first) is None  # lost: the generation moved on
    assert a.release(first) is False  # and releasing it leaves b's lease alone
    row = b.holders()[0]
    assert (row.owner, row.generation, row.live) == ("node-b", second.generation, True)
    with pytest.raises(LeaseBusy) as caught:
        a.acquire("a.test")
    assert caught.value.holder == "node-b"


def test_same_owner_retakes_and_bumps_generation(dbs: tuple[Database, Database]) -> None:
    a = Leases(dbs[0], "node-a", MINUTE)
    first = a.acquire("a.test")
    again = a.acquire("a.test")  # a restarted node takes its own lease back
    assert again.generation == first.generation + 1
    assert a.renew(first) is None  # the older take is fenced out
    renewed = a.renew(again)
    assert renewed is not None and renewed.expires_at >= again.expires_at


def test_renew_extends_and_release_frees(dbs: tuple[Database, Database]) -> None:
    a, b = Leases(dbs[0], "node-a", MINUTE), Leases(dbs[1], "node-b", MINUTE)
    lease = a.acquire("a.test")
    renewed = a.renew(lease)
    assert renewed is not None and renewed.generation == lease.generation
    assert renewed.expires_at >= lease.expires_at
    assert renewed.expires_at.utcoffset() == timedelta(0)
    assert a.release(renewed) is True
    assert [r.live for r in a.holders()] == [False]
    taken = b.acquire("a.test")  # free at once, no waiting for the expiry
    assert taken.generation == lease.generation + 1


async def test_hold_tracks_renews_and_releases(dbs: tuple[Database, Database]) -> None:
    a, b = Leases(dbs[0], "node-a", timedelta(seconds=0.6)), Leases(dbs[1], "node-b", MINUTE)
    with faultpoints.recording() as reached:
        async with a.hold("a.test") as lease:
            assert reached == ["lease.after_acquire"]
            assert a.held("a.test") == lease
            with pytest.raises(LeaseBusy):  # one process holds a key once
                async with a.hold("a.test"):
                    pass
            await asyncio.sleep(1.0)  # > the duration: only the renewals keep it
            current = a.held("a.test")
            assert current is not None and current.generation == lease.generation
            assert current.expires_at > lease.expires_at
            with pytest.raises(LeaseBusy):
                await asyncio.to_thread(b.acquire, "a.test")
    assert a.held("a.test") is None
    assert [r.live for r in a.holders()] == [False]  # released on exit
    assert (await asyncio.to_thread(b.acquire, "a.test")).generation == lease.generation + 1


async def test_hold_notices_a_lost_lease(dbs: tuple[Database, Database]) -> None:
    a, b = Leases(dbs[0], "node-a", timedelta(seconds=0.6)), Leases(dbs[1], "node-b", MINUTE)
    with capture_logs() as logs:
        async with a.hold("a.test") as lease:
            await asyncio.to_thread(expire, dbs[1], "a.test")
            taken = await asyncio.to_thread(b.acquire, "a.test")
            for _ in range(40):
                if a.held("a.test") is None:
                    break
                await asyncio.sleep(0.05)
            assert a.held("a.test") is None
        lost = [r for r in logs.records if r.getMessage() == "lease lost"]
        assert lost and getattr(lost[0], "fields", {}) == {"key": "a.test",
                                                            "generation": lease.generation}
    row = b.holders()[0]  # a's exit did not release b's lease
    assert (row.owner, row.generation, row.live) == ("node-b", taken.generation, True)


def test_unreachable_database_is_a_temporary_error() -> None:
    db = Database("host=127.0.0.1 port=1 user=postgres dbname=none connect_timeout=2")
    with pytest.raises(TemporaryError) as caught:
        Leases(db, "node-a", MINUTE).acquire("a.test")
    assert "database" in str(caught.value) and "port=1" in str(caught.value)


async def test_a_hold_cancelled_while_acquiring_gives_the_lease_back(
        dbs: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch) -> None:
    a = Leases(dbs[0], "node-a", MINUTE)
    real = a.acquire
    started = threading.Event()

    def slow(key: str) -> Lease:
        started.set()
        time.sleep(0.3)
        return real(key)

    monkeypatch.setattr(a, "acquire", slow)

    async def order() -> None:
        async with a.hold("a.test"):
            raise AssertionError("never reached")

    task = asyncio.create_task(order())
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = a.holders()
    assert [(r.owner, r.live) for r in rows] == [("node-a", False)]  # taken, then given back
    assert a.held("a.test") is None
