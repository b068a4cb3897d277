"""The rate-limit budget end to end against a real Pebble, store-only: a burst of new names stops
at `[acme.rateLimits] newOrdersPer3h`, `diff` shows the rest as `wait ... [RateLimitBudget]`,
and once the window slides (an injected clock) the rest are issued. A rateLimited answer holds
the other names of its registered domain. Orders are counted where Pebble gets them: every ACME
request goes through hack/pebble/faultproxy.py, whose log has every newOrder (`/order-plz`) and
Pebble's answer: 201 is an order created (a badNonce retry is not)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.app import App
from controller.config import load_config
from controller.reasons import Reason
from tests.e2e.harness import Prefix, store_only_toml
from tests.support.hackmods import load_hack_module

pytestmark = pytest.mark.pebble

NEW_ORDER = "^/order-plz$"


def orders_at_pebble(proxy: Any) -> int:
    """The orders Pebble created (201 answers to newOrder)."""
    return sum(1 for _method, path, status in proxy.log()
               if path.split("?")[0] == "/order-plz" and status == 201)


def conf(*names: str) -> str:
    blocks = "".join(f"    server {{\n        listen 8443 ssl;\n        server_name {n};\n"
                     "        ssl_certificate_management acme;\n    }\n" for n in names)
    return "http {\n" + blocks + "}\n"


@pytest.fixture
def proxy(pebble: Any) -> Iterator[Any]:
    state = pebble.state_dir
    fault_proxy = load_hack_module("pebble/faultproxy.py").FaultProxy
    p = fault_proxy(pebble.listen_port, cert=state / "server.pem", key=state / "server.key",
                    upstream_ca=pebble.ca_bundle).start()
    try:
        yield p
    finally:
        p.stop()


def setup(tmp_path: Path, pebble: Any, proxy: Any, names: list[str],
          **limits: int) -> Prefix:
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(conf(*names))
    sections = store_only_toml(pebble, acmeCaDir=proxy.directory_url)
    prefix.write_toml({**sections, "acme.rateLimits": limits})
    return prefix


def ledger(prefix: Prefix) -> list[dict[str, Any]]:
    (path,) = (prefix.root / ".lego" / "ledger").iterdir()
    events: list[dict[str, Any]] = json.loads(path.read_text())["events"]
    return events


def stored(prefix: Prefix) -> set[str]:
    return {p.stem for p in prefix.certs.glob("*.crt") if not p.name.endswith(".issuer.crt")}


def budget_waits(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines()
            if ln.startswith("! wait") and "[RateLimitBudget]" in ln]


async def test_a_burst_stops_at_the_budget_and_goes_on_when_the_window_slides(
        tmp_path: Path, pebble: Any, proxy: Any) -> None:
    names = [f"n{i}.burst.test" for i in range(1, 9)]
    prefix = setup(tmp_path, pebble, proxy, names, newOrdersPer3h=5)

    before = prefix.cli("diff")
    assert before.returncode == 2, before.stderr
    assert len([ln for ln in before.stdout.splitlines() if ln.startswith("+ issue")]) == 5
    assert len(budget_waits(before.stdout)) == 3

    app = App(load_config(prefix.toml, prefix=prefix.root))
    try:
        started = datetime.now(UTC)
        first = await app.reconciler.converge(probe=False)
        assert orders_at_pebble(proxy) == 5
        assert stored(prefix) == set(names[:5])
        orders = [e for e in ledger(prefix) if e["kind"] == "order"]
        assert len(orders) == 5 and all(e["issued"] for e in orders)
        assert {r.limit.value: r.remaining for r in first.plan.rate_budget} == {
            "newOrdersPer3h": 0}
        assert {w.domain for w in first.plan.waiting
                if w.reason is Reason.RATE_LIMIT_BUDGET} == set(names[5:])

        after = prefix.cli("diff")
        assert after.returncode == 2, after.stderr
        lines = budget_waits(after.stdout)
        assert [ln.split()[2] for ln in lines] == names[5:]
        for ln in lines:
            assert "newOrdersPer3h: 5 of 5 used by account e2e@example.test" in ln
            until = datetime.fromisoformat(ln.rsplit(" until ", 1)[1])
            assert started + timedelta(hours=3) <= until <= datetime.now(UTC) + timedelta(hours=3)
        assert orders_at_pebble(proxy) == 5  # diff orders nothing

        later = datetime.now(UTC) + timedelta(hours=3, minutes=1)
        app.reconciler.clock = app.reconciler.executor.clock = lambda: later
        rest = await app.reconciler.converge(probe=False)
        assert rest.plan.in_sync, rest.plan
        assert orders_at_pebble(proxy) == 8
        assert stored(prefix) == set(names)
        assert len([e for e in ledger(prefix) if e["kind"] == "order"]) == 8
    finally:
        await app.close()


async def test_a_rate_limited_answer_holds_its_registered_domain_until_the_retry_after(
        tmp_path: Path, pebble: Any, proxy: Any) -> None:
    prefix = setup(tmp_path, pebble, proxy, ["a.limited.test"], newOrdersPer3h=100)
    proxy.fail(count=1, status=429, retry_after=3600, path=NEW_ORDER)
    app = App(load_config(prefix.toml, prefix=prefix.root))
    try:
        first = await app.reconciler.pass_once()
        assert [o.ok for o in first.outcomes] == [False]
        (limited,) = [e for e in ledger(prefix) if e["kind"] == "rateLimited"]
        assert limited["domains"] == ["limited.test"]

        # another name of that registered domain waits; one of another domain is issued
        prefix.write_conf(conf("a.limited.test", "b.limited.test", "c.other.test"))
        diff = prefix.cli("diff")
        (held,) = budget_waits(diff.stdout)
        assert held.split()[2] == "b.limited.test"
        assert "the CA answered rateLimited for limited.test" in held
        assert "+ issue  c.other.test" in diff.stdout
        second = await app.reconciler.pass_once()
        assert [o.action.domain for o in second.outcomes] == ["c.other.test"]
        assert stored(prefix) == {"c.other.test"}

        # the Retry-After is over: both limited names are issued
        later = datetime.now(UTC) + timedelta(hours=1, minutes=1)
        app.reconciler.clock = app.reconciler.executor.clock = lambda: later
        done = await app.reconciler.converge(probe=False)
        assert done.plan.in_sync, done.plan
        assert stored(prefix) == {"a.limited.test", "b.limited.test", "c.other.test"}
    finally:
        await app.close()


async def test_failed_validations_are_counted_per_host_and_hold_it_for_an_hour(
        tmp_path: Path, pebble: Any, proxy: Any) -> None:
    from tests.fixtures.pebble import free_tcp_port

    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(conf("v.failing.test"))
    # our http-01 server listens where Pebble does not look: its validation is refused
    acme = store_only_toml(pebble, acmeCaDir=proxy.directory_url,
                           httpChallengeServerAddress=f"127.0.0.1:{free_tcp_port()}")
    prefix.write_toml({**acme, "acme.rateLimits": {"failedValidationsPerHostPerHour": 1}})
    app = App(load_config(prefix.toml, prefix=prefix.root))
    try:
        started = datetime.now(UTC)
        first = await app.reconciler.pass_once()
        assert [o.ok for o in first.outcomes] == [False]
        assert "validation of v.failing.test failed" in (first.outcomes[0].error or "")
        kinds = [(e["kind"], e["names"], e["issued"]) for e in ledger(prefix)]
        assert kinds == [("order", ["v.failing.test"], False),
                         ("failedValidation", ["v.failing.test"], False)]
        assert orders_at_pebble(proxy) == 1

        # past the per-certificate backoff, the host's failed validation still holds it
        soon = datetime.now(UTC) + timedelta(minutes=30)
        app.reconciler.clock = app.reconciler.executor.clock = lambda: soon
        held = await app.reconciler.pass_once()
        assert held.outcomes == [] and orders_at_pebble(proxy) == 1
        (w,) = held.plan.waiting
        assert w.reason is Reason.RATE_LIMIT_BUDGET
        assert w.message.startswith(
            "failedValidationsPerHostPerHour: 1 of 1 used for v.failing.test")
        assert w.until is not None and started + timedelta(hours=1) <= w.until
        assert w.until <= datetime.now(UTC) + timedelta(hours=1)
    finally:
        await app.close()
