"""Forced renewals are bounded (issue 13, item 9): a running controller (the real Service in
store-only mode, its real admin HTTP server, real store and status files, FakeIssuer as the CA)
takes at most `forceRenewPerHour` forced renewals per certificate, refuses a young certificate
with 409 unless `?force=true`, coalesces concurrent requests into one order, and writes every
call to `.lego/events.jsonl` with the peer. `certs renew` goes through the admin API while the
controller holds the store lock, and writes the status itself when none runs."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.config import load_config
from controller.service import Service
from tests.fakes import FakeIssuer
from tests.support.hackmods import free_tcp_port
from tests.support.procs import clean_env

NAMES = ("a.test", "b.test", "c.test")
CONF = "http {\n" + "".join(
    f"    server {{ listen 127.0.0.1:8443 ssl; server_name {d} www.{d};"
    " ssl_certificate_management acme; }\n" for d in NAMES) + "}\n"
CONFIG = "conf/cert-manager.toml"
PER_HOUR = 6  # the default forceRenewPerHour


@dataclass
class Running:
    prefix: Path
    service: Service
    issuer: FakeIssuer
    base: str
    session: aiohttp.ClientSession

    def orders(self, domain: str) -> int:
        return sum(1 for d, _ in self.issuer.orders if d == domain)

    def settled(self, domain: str) -> bool:
        """No forced renewal of `domain` is waiting and the loop has nothing left to start."""
        st = self.service.app.reconciler.statuses.get(domain)
        return (st is not None and not st.force_renew and self.issuer.in_flight == 0
                and not self.service.loop.pending)

    async def renew(self, domain: str, *, force: bool = False) -> tuple[int, dict[str, Any]]:
        url = f"{self.base}/api/v1/cert/{domain}/renew" + ("?force=true" if force else "")
        async with self.session.post(url) as r:
            return r.status, await r.json()

    def events(self) -> list[dict[str, Any]]:
        """The operator calls in the event log (not the controller's own outcomes)."""
        return operator_events(self.prefix)


def operator_events(prefix: Path) -> list[dict[str, Any]]:
    lines = (prefix / ".lego" / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] != "controller"]


async def eventually(pred: Callable[[], bool], *, seconds: float = 30.0) -> None:
    """Wait until `pred()` holds (polled every 10 ms); AssertionError after `seconds`."""
    for _ in range(int(seconds / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds:g}s")


def layout(tmp_path: Path) -> Path:
    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF)
    (prefix / CONFIG).write_text(
        # a CA of our own (the fake issuer): Let's Encrypt's default URL would bring its
        # duplicate-certificate budget (5 a week), which this test is not about
        '[njet]\napiAddress = ""\n[acme]\nkeyType = "ec256"\n'
        'acmeCaDir = "https://ca.test.invalid/dir"\n'
        f'[admin]\naddress = "127.0.0.1:{free_tcp_port()}"\n')
    return prefix


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    prefix = layout(tmp_path)
    config = load_config(prefix / CONFIG, prefix=prefix)
    service = Service(config)
    issuer = FakeIssuer(clock=lambda: datetime.now(UTC))
    service.app._issuer = issuer  # the CA: real certificates from a throwaway CA, in-process
    run = asyncio.ensure_future(service.run())
    session = aiohttp.ClientSession()
    rig = Running(prefix, service, issuer, f"http://{config.admin.address}", session)
    try:
        await eventually(lambda: all(rig.orders(d) == 1 and rig.settled(d) for d in NAMES)
                         and service.admin is not None and service.admin.port is not None)
        yield rig
    finally:
        await session.close()
        service.stop()
        await asyncio.wait_for(run, 30)


async def cli(prefix: Path, *args: str) -> tuple[int, str]:
    """`njet-cert-manager -p PREFIX -c TOML certs renew ...` as a real process (the event loop
    keeps serving the in-process admin API meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.cli", "-p", str(prefix), "-c", CONFIG, "certs",
        "renew", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=clean_env(), cwd="/")
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_thirty_renew_calls_give_at_most_six_orders_and_young_certs_need_force(
    running: Running,
) -> None:
    rig = running
    # 30 in a row without force: the certificate was issued moments ago
    plain = [await rig.renew("a.test") for _ in range(30)]
    assert {s for s, _ in plain} == {409}
    assert all("forceRenewMinAge" in body["error"] for _, body in plain)
    assert rig.orders("a.test") == 1

    # 30 in a row with force, each waiting for the renewal it started
    answers = []
    for _ in range(30):
        status, body = await rig.renew("a.test", force=True)
        answers.append((status, body))
        if status == 202:
            await eventually(lambda: rig.settled("a.test"))
    assert [s for s, _ in answers] == [202] * PER_HOUR + [409] * (30 - PER_HOUR)
    assert all(b["status"] == "renewal requested" for _, b in answers[:PER_HOUR])
    assert all("forceRenewPerHour" in b["error"] for _, b in answers[PER_HOUR:])
    assert rig.orders("a.test") == 1 + PER_HOUR
    on_disk = rig.service.app.status_files.load("a.test")
    assert on_disk is not None and len(on_disk.forced_renewals) == PER_HOUR  # persisted

    events = rig.events()
    assert len(events) == 60
    assert all(e["kind"] == "admin" and e["action"] == "renew" and e["domain"] == "a.test"
               and e["peer"].startswith("127.0.0.1:") for e in events)
    assert Counter(e["result"] for e in events) == {"409": 60 - PER_HOUR, "202": PER_HOUR}
    assert "forceRenewMinAge" in events[0]["detail"]


async def test_concurrent_renew_calls_for_one_certificate_coalesce_into_one_order(
    running: Running,
) -> None:
    rig = running
    rig.issuer.hold = asyncio.Event()  # the order stays in flight until every answer is in
    answers = await asyncio.gather(*(rig.renew("b.test", force=True) for _ in range(10)))
    assert [s for s, _ in answers] == [202] * 10
    said = Counter(body["status"] for _, body in answers)
    assert said == {"renewal requested": 1, "already pending": 9}
    rig.issuer.hold.set()
    await eventually(lambda: rig.settled("b.test"))
    assert rig.orders("b.test") == 2  # the first issuance and one forced renewal
    events = [e for e in rig.events() if e["domain"] == "b.test"]
    assert len(events) == 10 and {e["result"] for e in events} == {"202"}
    assert Counter(e["detail"] for e in events) == said
    assert all(e["peer"].startswith("127.0.0.1:") for e in events)


async def test_certs_renew_asks_the_running_controller_through_its_admin_api(
    running: Running,
) -> None:
    rig = running
    code, out = await cli(rig.prefix, "c.test")
    assert code == 1 and "forceRenewMinAge" in out, out
    code, out = await cli(rig.prefix, "c.test", "--force")
    assert code == 0 and "renewal requested" in out, out
    await eventually(lambda: rig.settled("c.test") and rig.orders("c.test") == 2)
    events = rig.events()
    assert [(e["kind"], e["domain"], e["result"]) for e in events] == [
        ("admin", "c.test", "409"), ("admin", "c.test", "202")]
    assert all(e["peer"].startswith("127.0.0.1:") for e in events)


async def test_certs_renew_writes_the_status_itself_when_no_controller_runs(
    tmp_path: Path,
) -> None:
    prefix = layout(tmp_path)
    service = Service(load_config(prefix / CONFIG, prefix=prefix))
    issuer = FakeIssuer(clock=lambda: datetime.now(UTC))
    service.app._issuer = issuer
    await service.app.reconciler.converge()  # issue the three; no controller keeps running
    await service.app.close()
    assert len(issuer.orders) == 3

    code, out = await cli(prefix, "a.test")
    assert code == 1 and "forceRenewMinAge" in out, out
    code, out = await cli(prefix, "a.test", "--force")
    assert code == 0 and "requested" in out, out
    code, out = await cli(prefix, "a.test", "--force")
    assert code == 0 and "already pending" in out, out
    code, out = await cli(prefix, "nope.test", "--force")
    assert code == 1 and "not a desired certificate" in out, out

    status = json.loads((prefix / ".lego" / "status" / "a.test.json").read_text())
    assert status["force_renew"] is True and len(status["forced_renewals"]) == 1
    events = operator_events(prefix)
    assert [(e["kind"], e["result"]) for e in events] == [
        ("cli", "refused"), ("cli", "requested"), ("cli", "pending"), ("cli", "unknown")]
    assert all(e["peer"].startswith("cli pid ") for e in events)
