"""Executor over the fakes: issue → store → apply → verify, the verify and code-11 traps, key
mismatches, delete, the precondition re-check, and errors that become outcomes (never raise)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import pytest

from controller.apply import APPLY_ATTEMPTS, VERIFY_ATTEMPTS
from controller.errors import ConfigError, PermanentError, StoreError, TemporaryError
from controller.execute import Executor
from controller.fold import Outcome
from controller.model import CertificateSpec, KeyType, NjetTarget
from controller.plan import Action, ActionKind
from controller.reasons import Reason
from tests.certbuilder import make_cert
from tests.fakes import (
    FakeClock,
    FakeIssuer,
    FakeNjet,
    FakeNjetRefused,
    FakeProber,
    FakeRepeated,
    MemoryStore,
    block_for,
    spec,
)

A = spec("a.test", "www.a.test")
REASONS = {
    ActionKind.ISSUE: Reason.MISSING,
    ActionKind.RENEW: Reason.RENEWAL_DUE,
    ActionKind.APPLY: Reason.NOT_SERVED,
    ActionKind.DELETE: Reason.NOT_DESIRED,
}


@dataclass
class Rig:
    clock: FakeClock
    store: MemoryStore
    issuer: FakeIssuer
    njet: FakeNjet
    prober: FakeProber
    executor: Executor
    sleeps: list[float]
    acme: list[str]

    async def run(self, *actions: Action) -> list[Outcome]:
        return await self.executor.execute(actions)

    def stored_fp(self, domain: str = "a.test") -> str | None:
        got = self.store.get(domain)
        return got.info.fingerprint if got is not None else None


def make_rig(*specs: CertificateSpec, store_only: bool = False, concurrency: int = 8,
             revoke_on_delete: bool = False) -> Rig:
    clock = FakeClock()
    store = MemoryStore()
    issuer = FakeIssuer(clock)
    njet = FakeNjet([block_for(s) for s in specs or (A,)])
    prober = FakeProber(njet)
    sleeps: list[float] = []
    acme: list[str] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    executor = Executor(
        store=store,
        issuer_factory=issuer.factory,
        njet=None if store_only else njet,
        prober=None if store_only else prober,
        probe_timeout=1.0,
        concurrency=concurrency,
        repeated_error=FakeRepeated,
        on_acme=lambda outcome, _seconds: acme.append(outcome),
        revoke_on_delete=revoke_on_delete,
        clock=clock,
        sleep=no_sleep,
    )
    return Rig(clock, store, issuer, njet, prober, executor, sleeps, acme)


def action(kind: ActionKind, s: CertificateSpec = A, *, expected: str | None = None,
           targets: bool = True) -> Action:
    return Action(
        kind,
        s.domain,
        REASONS[kind],
        f"test {kind}",
        spec=None if kind is ActionKind.DELETE else s,
        key_type=None if kind is ActionKind.DELETE else KeyType.EC256,
        expected_fingerprint=expected,
        spec_hash="test-hash",
        targets=(NjetTarget(s.listens, s.names),) if targets else (),
    )


def seed(rig: Rig, domain: str = "a.test", *names: str) -> str:
    """Store a pair for `domain` (as an earlier run would have) and return its fingerprint."""
    made = make_cert([domain, *names], key_type=KeyType.EC256)
    return rig.store.put(domain, made.issued()).info.fingerprint


# -- the happy paths ---------------------------------------------------------------------------


async def test_issue_orders_stores_applies_and_verifies() -> None:
    rig = make_rig()
    (out,) = await rig.run(action(ActionKind.ISSUE))
    fp = rig.stored_fp()
    assert out.ok and not out.skipped and out.error is None
    assert fp is not None and out.stored_fingerprint == fp and out.served_fingerprint == fp
    assert rig.issuer.orders == [("a.test", KeyType.EC256)]
    (put,) = rig.njet.puts
    assert (put.listens, put.server_names, put.cert_type, put.fingerprint) == (
        A.listens, A.names, "ecc", fp)
    assert rig.prober.calls == [("127.0.0.1:8443", "a.test", "ecc")]
    assert rig.njet.blocks[0].served["ecc"] == fp
    assert rig.acme == ["ok"]


async def test_store_only_issue_is_done_once_stored() -> None:
    rig = make_rig(store_only=True)
    (out,) = await rig.run(action(ActionKind.ISSUE))
    assert out.ok and out.stored_fingerprint == rig.stored_fp()
    assert out.served_fingerprint is None
    assert rig.njet.puts == [] and rig.prober.calls == []


async def test_renew_replaces_the_pair_it_was_planned_for() -> None:
    rig = make_rig()
    old = seed(rig, "a.test", "www.a.test")
    (out,) = await rig.run(action(ActionKind.RENEW, expected=old))
    assert out.ok and out.stored_fingerprint not in (None, old)
    assert rig.stored_fp() == out.stored_fingerprint == out.served_fingerprint


async def test_apply_pushes_the_stored_pair_and_proves_it_is_served() -> None:
    rig = make_rig()
    fp = seed(rig, "a.test", "www.a.test")
    (out,) = await rig.run(action(ActionKind.APPLY, expected=fp))
    assert out.ok and out.served_fingerprint == fp
    assert rig.issuer.orders == [] and [p.fingerprint for p in rig.njet.puts] == [fp]


async def test_a_merged_certificate_is_applied_to_every_block() -> None:
    s = spec("a.test", listens=("127.0.0.1:8443", "127.0.0.1:8444"))
    rig = make_rig(spec("a.test", listens=("127.0.0.1:8443",)),
                   spec("a.test", listens=("127.0.0.1:8444",)))
    one = NjetTarget(("127.0.0.1:8443",), ("a.test",))
    two = NjetTarget(("127.0.0.1:8444",), ("a.test",))
    (out,) = await rig.run(replace(action(ActionKind.ISSUE, s), targets=(one, two)))
    assert out.ok
    assert [p.listens for p in rig.njet.puts] == [one.listens, two.listens]
    assert {b.served["ecc"] for b in rig.njet.blocks} == {rig.stored_fp()}


# -- NJet's traps ------------------------------------------------------------------------------


async def test_accepted_but_not_served_is_a_temporary_error_after_every_attempt() -> None:
    rig = make_rig()
    first = seed(rig)
    assert (await rig.run(action(ActionKind.APPLY, expected=first)))[0].ok
    new = seed(rig)  # a renewed pair; the block already has a first dynamic cert
    rig.njet.not_served = 99
    (out,) = await rig.run(action(ActionKind.APPLY, expected=new))
    assert not out.ok and not out.needs_new_key and not out.skipped
    assert out.error is not None
    assert "failed: NJet accepted it but serves " + first[:16] in out.error
    assert len(rig.njet.puts) == 1 + APPLY_ATTEMPTS
    assert len(rig.prober.calls) == 1 + APPLY_ATTEMPTS * VERIFY_ATTEMPTS
    assert rig.stored_fp() == new  # an apply never touches the store


async def test_a_first_issue_that_cannot_be_applied_is_quarantined() -> None:
    rig = make_rig()
    rig.njet.fail_puts = [FakeNjetRefused("listen[127.0.0.1:8443] njt_ssl_certificate error")]
    (out,) = await rig.run(action(ActionKind.ISSUE))
    assert not out.ok and out.error is not None and out.error.startswith("issued but not applied")
    assert out.stored_fingerprint is not None and not out.needs_new_key
    assert rig.store.get("a.test") is None and "a.test" in rig.store.quarantined


async def test_the_code_11_trap_needs_a_new_key() -> None:
    """The first push is accepted but not served; its retry answers "repeated"."""
    rig = make_rig()
    rig.njet.not_served = 1
    (out,) = await rig.run(action(ActionKind.RENEW, expected=seed(rig)))
    assert not out.ok and out.needs_new_key
    assert out.error is not None and "answered repeated" in out.error
    assert "fresh key" in out.error
    assert len(rig.njet.puts) == 1  # the repeated push landed nothing
    assert out.stored_fingerprint == rig.stored_fp()  # a renewal keeps the new pair stored


async def test_repeated_while_the_pair_is_served_is_applied() -> None:
    """A crash after the apply and before the status write: NJet says 11, and serves it."""
    rig = make_rig()
    fp = seed(rig)
    rig.njet.blocks[0].served["ecc"] = fp
    rig.njet.answer_repeated = True
    (out,) = await rig.run(action(ActionKind.APPLY, expected=fp))
    assert out.ok and out.served_fingerprint == fp


async def test_a_key_that_does_not_match_is_never_pushed() -> None:
    rig = make_rig()
    made = make_cert(["a.test", "www.a.test"])
    bad = replace(made.issued(), key_pem=make_cert(["a.test"]).key_pem)
    fp = rig.store.put_unchecked("a.test", bad).info.fingerprint
    (out,) = await rig.run(action(ActionKind.APPLY, expected=fp))
    assert not out.ok and out.error is not None
    assert "refusing to push a certificate whose key does not match" in out.error
    assert rig.njet.puts == [] and rig.prober.calls == []


# -- delete ------------------------------------------------------------------------------------


async def test_delete_removes_the_pair_and_revokes_it_while_it_is_valid() -> None:
    rig = make_rig(revoke_on_delete=True)
    fp = seed(rig)
    cert = rig.store.cert_pem("a.test")
    (out,) = await rig.run(action(ActionKind.DELETE, expected=fp))
    assert out.ok and rig.store.get("a.test") is None
    assert rig.issuer.revoked == [cert]


async def test_delete_does_not_revoke_an_expired_cert_by_the_executor_clock() -> None:
    rig = make_rig(revoke_on_delete=True)
    fp = seed(rig)
    stored = rig.store.get("a.test")
    assert stored is not None
    rig.clock.now = stored.info.not_after  # the injected clock decides, not the system's
    (out,) = await rig.run(action(ActionKind.DELETE, expected=fp))
    assert out.ok and list(rig.store.quarantined) == ["a.test"]  # a delete quarantines
    assert rig.issuer.revoked == [] and rig.issuer.factory_calls == 0


async def test_delete_of_a_pair_already_gone_is_done() -> None:
    rig = make_rig()
    (out,) = await rig.run(action(ActionKind.DELETE, expected="0" * 64))
    assert out.ok and rig.store.deleted == [] and rig.store.quarantined == {}


# -- the precondition re-check -----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ActionKind))
async def test_store_changed_since_the_plan_was_made_skips_and_orders_nothing(
    kind: ActionKind,
) -> None:
    rig = make_rig(revoke_on_delete=True)
    planned = None if kind is ActionKind.ISSUE else seed(rig)
    act = action(kind, expected=planned)
    now = seed(rig)  # another writer (lego by hand, an admin DELETE + reissue) got there first
    (out,) = await rig.run(act)
    assert out.skipped and not out.ok
    assert out.error == "store changed since the plan was made"
    assert rig.issuer.orders == [] and rig.issuer.factory_calls == 0
    assert rig.njet.puts == [] and rig.store.deleted == [] and rig.store.quarantined == {}
    assert rig.stored_fp() == now


async def test_apply_of_a_pair_that_vanished_is_skipped() -> None:
    rig = make_rig()
    fp = seed(rig)
    rig.store.delete("a.test")
    (out,) = await rig.run(action(ActionKind.APPLY, expected=fp))
    assert out.skipped and rig.njet.puts == []


# -- errors become outcomes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (TemporaryError("CA unreachable", retry_after=30), "CA unreachable"),
        (PermanentError("rejectedIdentifier: a.test"), "rejectedIdentifier"),
        (ConfigError("bad CA URL https://ca.invalid"), "bad CA URL"),
        (RuntimeError("bug in a library"), "unexpected RuntimeError: bug in a library"),
    ],
)
async def test_an_order_that_fails_becomes_an_outcome(error: Exception, shown: str) -> None:
    rig = make_rig()
    rig.issuer.fail = [error]
    (out,) = await rig.run(action(ActionKind.ISSUE))
    assert not out.ok and not out.skipped and out.error is not None and shown in out.error
    assert out.retry_after == (30 if isinstance(error, TemporaryError) else None)
    assert rig.store.puts == [] and rig.njet.puts == []


async def test_the_acme_observer_sees_failed_orders() -> None:
    rig = make_rig()
    rig.issuer.fail = [TemporaryError("down"), PermanentError("no")]
    await rig.run(action(ActionKind.ISSUE))
    await rig.run(action(ActionKind.ISSUE))
    assert rig.acme == ["temporary", "permanent"]


async def test_a_store_that_cannot_write_becomes_an_outcome() -> None:
    rig = make_rig()
    rig.store.fail_put = StoreError("cannot write .lego/certificates/a.test.crt: disk full")
    (out,) = await rig.run(action(ActionKind.ISSUE))
    assert not out.ok and out.error is not None and "disk full" in out.error
    assert rig.njet.puts == []


async def test_an_unreachable_njet_is_retried_then_becomes_an_outcome() -> None:
    rig = make_rig()
    fp = seed(rig)
    rig.njet.unreachable = True
    (out,) = await rig.run(action(ActionKind.APPLY, expected=fp))
    assert not out.ok and not out.needs_new_key and out.error is not None
    assert "apply to 127.0.0.1:8443 a.test failed" in out.error and "unreachable" in out.error
    assert len(rig.sleeps) == APPLY_ATTEMPTS  # a pause before every retry, none verified


async def test_an_njet_refusal_becomes_an_outcome() -> None:
    rig = make_rig()
    fp = seed(rig)
    rig.njet.fail_puts = [FakeNjetRefused("can`t find server by listen[127.0.0.1:8443]")]
    (out,) = await rig.run(action(ActionKind.APPLY, expected=fp))
    assert not out.ok and out.error is not None and "can`t find server" in out.error


async def test_a_failed_action_does_not_stop_the_others_and_concurrency_is_bounded() -> None:
    specs = [spec(f"n{i}.test") for i in range(4)]
    rig = make_rig(*specs, concurrency=2)
    rig.issuer.hold = asyncio.Event()
    rig.issuer.fail = [PermanentError("rejectedIdentifier: n0.test")]
    task = asyncio.create_task(rig.run(*(action(ActionKind.ISSUE, s) for s in specs)))
    await rig.issuer.watch.until(lambda: rig.issuer.in_flight >= 2)
    rig.issuer.hold.set()
    outcomes = await task
    assert [o.action.domain for o in outcomes] == [s.domain for s in specs]
    assert [o.ok for o in outcomes] == [False, True, True, True]
    assert rig.issuer.max_in_flight == 2
