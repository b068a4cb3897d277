"""The deletion guard (issue 13, item 1): a pass that would delete more than maxDeleteShare of
the stored certificates we manage, or all of them, deletes none until an operator confirms once.

The policy over plan() (pure: thresholds, the wait's message, unmanaged pairs not counted, the
warning during the grace period, what a confirmation covers), then the reconciler over a real
store on disk: the confirmation file releases exactly once and is consumed, deletions go to
quarantine/, and the quarantine expires at the start of a pass.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.store.gcconfirm import GcConfirmFile, confirm_held
from controller.adapters.store.lego import LegoStore
from controller.adapters.store.quarantine import Quarantine
from controller.adapters.store.statusfile import StatusFiles
from controller.execute import Executor
from controller.model import ActionKind, CertInfo, Desired, KeyType, Observed, StoredCert
from controller.observe import Gatherer
from controller.paths import StorePaths
from controller.plan import Plan, plan
from controller.policies.orphan import deletion_guard
from controller.policies.subject import Act, PassDeletions
from controller.policy import GcRelease, PolicySettings
from controller.reasons import Reason
from controller.reconcile import Reconciler
from controller.status import CertStatus
from tests.fakes import FakeClock, FakeDesired, FakeIssuer, spec

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SETTINGS = PolicySettings(store_only=True, delete_grace=timedelta(hours=24))
GONE = NOW - timedelta(hours=25)  # orphaned_at of a name whose grace period is over


def stored(domain: str) -> StoredCert:
    info = CertInfo(common_name=domain, names=(domain,), not_before=NOW - timedelta(days=1),
                    not_after=NOW + timedelta(days=89), key_type=KeyType.RSA2048, serial="01",
                    fingerprint="f" * 64, issuer="CN=test CA")
    return StoredCert(domain=domain, info=info, key_matches=True)


def store_of(total: int, gone: int, *, unmanaged: int = 0,
             settings: PolicySettings = SETTINGS, release: GcRelease | None = None) -> Plan:
    """`total` managed certificates of which the first `gone` left desired state past their
    grace period, plus `unmanaged` pairs nobody manages (no status)."""
    names = [f"c{i}.test" for i in range(total)]
    lego = [f"lego{i}.test" for i in range(unmanaged)]
    observed = Observed(stored={d: stored(d) for d in names + lego})
    statuses = {d: CertStatus(domain=d, orphaned_at=GONE if i < gone else None)
                for i, d in enumerate(names)}
    wanted = Desired(specs={d: spec(d) for d in names[gone:]})
    return plan(wanted, observed, statuses, NOW, settings, release=release)


def deletes(p: Plan) -> list[str]:
    return [a.domain for a in p.actions if a.kind is ActionKind.DELETE]


def guarded(p: Plan) -> list[str]:
    return [w.domain for w in p.waiting if w.reason is Reason.DELETION_GUARD]


# -- the policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "gone", "share", "held"),
    [
        (4, 3, 0.5, True),  # more than half
        (4, 2, 0.5, False),  # exactly half is not more
        (2, 1, 0.5, False),
        (10, 1, 0.5, False),  # well below
        (1, 1, 0.5, True),  # all of them, even one of one
        (3, 3, 1.0, True),  # all of them, whatever the share
        (3, 2, 1.0, False),
        (20, 2, 0.05, True),  # 2 > 1.0
        (20, 1, 0.05, False),  # 1 is not more than 1.0
    ],
)
def test_the_guard_fires_above_the_share_and_at_all_never_below(
    total: int, gone: int, share: float, held: bool
) -> None:
    p = store_of(total, gone, settings=replace(SETTINGS, max_delete_share=share))
    names = [f"c{i}.test" for i in range(gone)]
    if held:
        assert deletes(p) == [] and guarded(p) == names and not p.in_sync
        assert p.gc_hold is not None and (list(p.gc_hold.pending), p.gc_hold.stored) == (
            names, total)
    else:
        assert deletes(p) == names and guarded(p) == [] and p.gc_hold is None


def test_the_wait_says_how_many_of_how_many_and_how_to_release() -> None:
    p = store_of(3, 3)
    messages = {w.message for w in p.waiting}
    (message,) = messages
    assert "would delete 3 of 3 stored certificates (all of them)" in message
    assert "njet-cert-manager gc confirm" in message and "POST /api/v1/gc/confirm" in message
    (share,) = {w.message for w in store_of(4, 3).waiting}
    assert "3 of 4" in share and "more than maxDeleteShare 0.5" in share


def test_pairs_nobody_manages_do_not_count_as_stored() -> None:
    # two managed, both gone, next to five lego-made pairs: that is all we manage
    p = store_of(2, 2, unmanaged=5)
    assert guarded(p) == ["c0.test", "c1.test"] and p.gc_hold is not None
    assert p.gc_hold.stored == 2


def test_the_guard_is_a_hold_of_deletions_only_and_needs_the_pass_count() -> None:
    p = store_of(1, 1)
    assert p.gc_hold is not None
    delete = Act(ActionKind.DELETE, Reason.NOT_DESIRED, "")
    renew = Act(ActionKind.RENEW, Reason.EXPIRED, "")
    from tests.unit.test_policy_chain import ORPHAN

    everything = PassDeletions(pending=frozenset({"a.test"}), stored=1)
    assert deletion_guard(ORPHAN, delete) is None  # no pass count: nothing to judge
    assert deletion_guard(replace(ORPHAN, deletions=everything), renew) is None
    held = deletion_guard(replace(ORPHAN, deletions=everything), delete)
    assert held is not None and held.reason is Reason.DELETION_GUARD and held.until is None


def test_during_the_grace_period_diff_warns_that_the_guard_will_hold() -> None:
    names = [f"c{i}.test" for i in range(3)]
    statuses = {d: CertStatus(domain=d, orphaned_at=NOW - timedelta(hours=1)) for d in names}
    p = plan(Desired(specs={}), Observed(stored={d: stored(d) for d in names}), statuses, NOW,
             SETTINGS)
    assert [s.reason for s in p.scheduled] == [Reason.ORPHAN_GRACE] * 3
    assert any("3 of 3 stored certificates" in n and "gc confirm" in n for n in p.notes)
    quiet = store_of(4, 1)  # one of four: nothing to warn about
    assert not any("deletion guard" in n for n in quiet.notes)


def test_a_confirmation_naming_every_pending_deletion_releases_them() -> None:
    names = frozenset(f"c{i}.test" for i in range(3))
    p = store_of(3, 3, release=GcRelease(names=names, confirmed_at=NOW))
    assert deletes(p) == sorted(names) and p.gc_hold is None
    assert p.gc_released == tuple(sorted(names))
    # a confirmation of more names than are pending still covers these
    wider = GcRelease(names=names | {"other.test"}, confirmed_at=NOW)
    assert deletes(store_of(3, 3, release=wider)) == sorted(names)


def test_a_confirmation_does_not_cover_a_bigger_mass_deletion() -> None:
    earlier = GcRelease(names=frozenset({"c0.test", "c1.test"}), confirmed_at=NOW)
    p = store_of(4, 3, release=earlier)
    assert deletes(p) == [] and guarded(p) == ["c0.test", "c1.test", "c2.test"]
    assert p.gc_released == ()
    assert all("does not cover all of these deletions: confirm again" in w.message
               for w in p.waiting)


# -- the reconciler, over a real store ------------------------------------------------------


class Site:
    """A store-only reconciler over a real LegoStore, status files, quarantine and gc
    confirmation file in tmp_path; the CA is FakeIssuer, the clock a FakeClock."""

    def __init__(self, root: Path, *, retention: timedelta = timedelta(days=30),
                 share: float = 0.5) -> None:
        self.paths = StorePaths(root)
        self.clock = FakeClock(NOW)
        self.store = LegoStore(self.paths, now=self.clock)
        self.issuer = FakeIssuer(self.clock)
        self.desired = FakeDesired([spec(f"c{i}.test") for i in range(3)])
        self.confirmations = GcConfirmFile(self.paths)
        self.quarantine = Quarantine(self.paths, retention=retention)
        settings = replace(SETTINGS, delete_grace=timedelta(0), max_delete_share=share)
        self.rec = Reconciler(
            settings=settings,
            load_desired=self.desired,
            gatherer=Gatherer(self.store, settings),
            executor=Executor(store=self.store, issuer_factory=self.issuer.factory,
                              clock=self.clock),
            status_store=StatusFiles(self.paths),
            clock=self.clock,
            gc_confirmations=self.confirmations,
            quarantine=self.quarantine,
        )

    def crts(self) -> list[str]:
        return sorted(p.name for p in self.paths.certificates.glob("*.crt")
                      if not p.name.endswith(".issuer.crt"))

    def quarantined(self) -> list[str]:
        return sorted(q.domain for q in self.quarantine.entries())


async def test_a_confirmation_releases_exactly_once_and_deletions_go_to_quarantine(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path)
    await site.rec.converge()
    assert site.crts() == ["c0.test.crt", "c1.test.crt", "c2.test.crt"]
    before = (site.paths.certificates / "c1.test.crt").read_bytes()

    site.desired.specs = []  # conf.d vanished
    held = await site.rec.converge()
    assert held.plan.gc_hold is not None and len(held.plan.gc_hold.pending) == 3
    again = await site.rec.converge()  # grace long over: still nothing deleted
    assert site.crts() == ["c0.test.crt", "c1.test.crt", "c2.test.crt"]
    assert guarded(again.plan) == ["c0.test", "c1.test", "c2.test"]

    released = confirm_held(again.plan, site.confirmations, now=site.clock(), by="test")
    assert released == ("c0.test", "c1.test", "c2.test") and site.paths.gc_confirm.exists()
    done = await site.rec.pass_once()
    assert sorted(o.action.domain for o in done.outcomes if o.ok) == list(released)
    assert site.crts() == [] and site.quarantined() == list(released)
    assert not site.paths.gc_confirm.exists(), "the pass that deleted consumed it"
    entry = next(q for q in site.quarantine.entries() if q.domain == "c1.test")
    assert (site.paths.quarantine / entry.entry / "c1.test.crt").read_bytes() == before

    # a new mass deletion later needs a new confirmation
    site.desired.specs = [spec(f"n{i}.test") for i in range(2)]
    await site.rec.converge()
    site.desired.specs = []
    later = await site.rec.converge()
    assert site.crts() == ["n0.test.crt", "n1.test.crt"] and guarded(later.plan) == [
        "n0.test", "n1.test"]


async def test_a_confirmation_is_consumed_even_when_nothing_was_left_to_delete(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path)
    await site.rec.converge()
    site.desired.specs = []
    held = await site.rec.converge()
    confirm_held(held.plan, site.confirmations, now=site.clock(), by="test")
    site.desired.specs = [spec(f"c{i}.test") for i in range(3)]  # the volume is back
    await site.rec.pass_once()
    assert not site.paths.gc_confirm.exists()
    site.desired.specs = []  # and gone again: the old confirmation no longer counts
    again = await site.rec.converge()
    assert len(site.crts()) == 3 and len(guarded(again.plan)) == 3


async def test_a_confirmation_read_by_diff_is_not_consumed(tmp_path: Path) -> None:
    site = Site(tmp_path)
    await site.rec.converge()
    site.desired.specs = []
    held = await site.rec.converge()
    confirm_held(held.plan, site.confirmations, now=site.clock(), by="test")
    preview = await site.rec.compute()  # what `diff` and GET /api/v1/plan do
    assert deletes(preview.plan) == ["c0.test", "c1.test", "c2.test"]
    assert site.paths.gc_confirm.exists() and len(site.crts()) == 3


async def test_the_quarantine_expires_at_the_start_of_a_pass(tmp_path: Path) -> None:
    site = Site(tmp_path, retention=timedelta(days=30))
    await site.rec.converge()
    site.desired.specs = [spec("c0.test"), spec("c1.test")]  # one of three: not guarded
    await site.rec.converge()
    assert site.quarantined() == ["c2.test"]
    site.clock.advance(timedelta(days=29))
    await site.rec.pass_once()
    assert site.quarantined() == ["c2.test"]
    site.clock.advance(timedelta(days=1, seconds=1))
    await site.rec.pass_once()
    assert site.quarantined() == [] and not any(site.paths.quarantine.iterdir())


# -- the admin API and /healthz, over real HTTP --------------------------------------------


async def test_healthz_reports_the_hold_and_post_gc_confirm_releases_it_once(
    tmp_path: Path,
) -> None:
    import aiohttp

    from controller.adapters.admin.server import start_admin
    from controller.admin_backend import ControllerBackend
    from controller.metrics import ControllerMetrics
    from controller.reconcile import Loop

    site = Site(tmp_path)
    loop = Loop(site.rec, timedelta(hours=1))
    backend = ControllerBackend(reconciler=site.rec, loop=loop, metrics=ControllerMetrics(),
                                mqtt_state={"connected": False})
    loop.last = await site.rec.converge()
    assert backend.health()["gc_hold"] is None and backend.health()["ok"] is True
    site.desired.specs = []
    loop.last = await site.rec.converge()
    health = backend.health()
    assert health["gc_hold"] == {"pending": 3, "stored": 3}
    assert health["ok"] is False and health["status"] == "degraded"

    srv = await start_admin(backend, "127.0.0.1:0", "tok")
    await srv.wait_bound()
    base, auth = f"http://127.0.0.1:{srv.port}", {"Authorization": "Bearer tok"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:  # without the token: counts only
                assert r.status == 503 and (await r.json())["gc_hold"] == {"pending": 3,
                                                                           "stored": 3}
            async with http.post(f"{base}/api/v1/gc/confirm") as r:
                assert r.status == 401 and not site.paths.gc_confirm.exists()
            async with http.post(f"{base}/api/v1/gc/confirm", headers=auth) as r:
                doc = await r.json()
                assert r.status == 200 and doc["released"] == ["c0.test", "c1.test", "c2.test"]
                assert (doc["count"], doc["stored"]) == (3, 3)
            assert loop.pending, "the loop was woken"
            loop.last = await site.rec.pass_once()
            assert site.crts() == [] and site.quarantined() == ["c0.test", "c1.test", "c2.test"]
            assert backend.health()["gc_hold"] is None
            async with http.post(f"{base}/api/v1/gc/confirm", headers=auth) as r:
                assert r.status == 409 and "holds no deletion" in (await r.json())["error"]
    finally:
        await srv.stop()


async def test_the_admin_delete_quarantines_instead_of_unlinking(tmp_path: Path) -> None:
    from controller.admin_backend import ControllerBackend
    from controller.metrics import ControllerMetrics
    from controller.reconcile import Loop

    site = Site(tmp_path)
    await site.rec.converge()
    key = (site.paths.certificates / "c1.test.key").read_bytes()
    backend = ControllerBackend(reconciler=site.rec, loop=Loop(site.rec, timedelta(hours=1)),
                                metrics=ControllerMetrics(), mqtt_state={})
    result = await backend.delete_cert("c1.test")
    assert result.deleted and result.still_desired
    assert result.quarantined_to == "quarantine/c1.test.20261127T120000Z/"
    assert "c1.test.crt" not in site.crts()
    assert (site.paths.quarantine / "c1.test.20261127T120000Z" / "c1.test.key").read_bytes() == key
    assert not (await backend.delete_cert("c1.test")).deleted


async def test_gc_confirm_goes_through_the_running_controllers_admin_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.adapters.admin.server import start_admin
    from controller.adapters.store.lock import StoreLock
    from controller.admin_backend import ControllerBackend
    from controller.app import App
    from controller.cli_gc import cmd_gc_confirm
    from controller.config import parse_config
    from controller.metrics import ControllerMetrics
    from controller.reconcile import Loop

    site = Site(tmp_path)  # the running controller: it holds the store lock
    loop = Loop(site.rec, timedelta(hours=1))
    backend = ControllerBackend(reconciler=site.rec, loop=loop, metrics=ControllerMetrics(),
                                mqtt_state={})
    await site.rec.converge()
    site.desired.specs = []
    loop.last = await site.rec.converge()
    srv = await start_admin(backend, "127.0.0.1:0", "tok")
    await srv.wait_bound()
    lock = StoreLock(site.paths)
    assert lock.try_acquire()
    cli = App(parse_config({"njet": {"apiAddress": ""},
                            "admin": {"address": f"127.0.0.1:{srv.port}", "token": "tok"}},
                           prefix=tmp_path))
    try:
        assert await cmd_gc_confirm(cli) == 0
        assert "released 3 deletions once" in capsys.readouterr().out
        assert loop.pending and site.confirmations.load() is not None
        await site.rec.pass_once()
        assert site.crts() == []
        assert await cmd_gc_confirm(cli) == 1  # nothing held any more
        assert "holds no deletion" in capsys.readouterr().err
    finally:
        lock.release()
        await cli.close()
        await srv.stop()


# -- the config keys -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, True, "0.5", float("nan")])
def test_max_delete_share_is_above_0_and_at_most_1(bad: object) -> None:
    from controller.config import parse_config
    from controller.errors import ConfigError

    with pytest.raises(ConfigError, match=r"controller\.maxDeleteShare"):
        parse_config({"controller": {"maxDeleteShare": bad}}, prefix=Path("/p"))


def test_the_config_keys_reach_the_policy_and_the_quarantine(tmp_path: Path) -> None:
    from controller.app import App, policy_settings
    from controller.config import parse_config
    from controller.errors import ConfigError

    defaults = parse_config({}, prefix=tmp_path)
    assert defaults.controller.maxDeleteShare == 0.5
    assert defaults.controller.quarantineRetention == timedelta(days=30)
    cfg = parse_config({"njet": {"apiAddress": ""}, "controller": {
        "maxDeleteShare": 1, "quarantineRetention": "0s"}}, prefix=tmp_path)
    assert policy_settings(cfg).max_delete_share == 1.0
    assert App(cfg).quarantine.retention == timedelta(0)
    with pytest.raises(ConfigError, match=r"controller\.quarantineRetention"):
        parse_config({"controller": {"quarantineRetention": "-1s"}}, prefix=tmp_path)


async def test_expiry_and_consumption_happen_in_executing_passes_only() -> None:
    from tests.fakes import MemoryGcConfirmations, RecordingExpiry
    from tests.unit.test_reconcile_loop import world

    w = world()
    w.rec.quarantine = expiry = RecordingExpiry()
    w.rec.gc_confirmations = confirmations = MemoryGcConfirmations()
    confirmations.save(GcRelease(names=frozenset({"x.test"}), confirmed_at=w.clock()))
    await w.rec.compute()  # diff, GET /api/v1/plan
    assert expiry.calls == [] and confirmations.release is not None
    await w.rec.pass_once()
    assert expiry.calls == [w.clock()] and confirmations.release is None
