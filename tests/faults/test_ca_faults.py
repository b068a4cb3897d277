"""Fault injection, the CA misbehaves: nonce rejection, a restart that forgets everything, rate
limits with Retry-After — the controller (store-only mode) converges after each, honours the
CA's Retry-After and never hot-loops while it waits.

Every ACME request goes through hack/pebble/faultproxy.py, a TLS-terminating proxy in front of
the real Pebble that injects answers and counts requests per path. The controller runs
in-process (App, as `reconcile` builds it) so the time between attempts is an injected clock:
"after the backoff" means the pass's clock is moved past `backoff_until`, never a sleep. One
check runs the real CLI to show an immediate re-run during backoff sends nothing to the CA.

Trials per case scale with NJCM_FAULT_SCALE; all of them add up to one summary line (ca-faults).
The CA restart runs at two of its six stopping points in the default run (`[sample]`, the first
and the last) and at all of them under `-m slow` (`[full]`).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from controller.app import App
from controller.certinfo import fingerprint_pem
from controller.logs import reset_logging, setup_logging
from tests.e2e.harness import render_toml, store_only_toml
from tests.faults import summary
from tests.faults.depth import DEPTHS, pick, spread
from tests.faults.helpers import CONFIG, clocked_app, leaked_private_key, run_cli, store_problems

pytestmark = pytest.mark.pebble

FAMILY = "ca-faults"
DOMAIN = "a.test"
CONF = """http {
    server {
        listen 127.0.0.1:8443 ssl;
        server_name a.test www.a.test;
        ssl_certificate_management acme;
    }
}
"""


def _load_faultproxy() -> Any:
    import importlib.util

    name = "_njet_pebble_faultproxy"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "hack" / "pebble" / "faultproxy.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


FaultProxy = _load_faultproxy().FaultProxy


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    setup_logging(verbosity=1, stream=buf)
    yield buf
    reset_logging()
    assert not leaked_private_key(buf.getvalue())


@dataclass
class Rig:
    """Pebble, the proxy in front of it, one store-only prefix and an injected clock."""

    pebble: Any
    proxy: Any
    prefix: Path
    offset: timedelta = timedelta(0)
    apps: list[App] = field(default_factory=list)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def app(self) -> App:
        """A fresh App (what a new `reconcile` process builds), on this rig's clock."""
        return clocked_app(self.prefix, self.now, self.apps)

    def status(self) -> Any:
        return self.app().status_files.load(DOMAIN)

    def after_backoff(self) -> None:
        """Move the clock just past the current backoff (no sleeping)."""
        st = self.status()
        if st is not None and st.backoff_until is not None and st.backoff_until > self.now():
            self.offset += st.backoff_until - self.now() + timedelta(seconds=1)

    def ask_renewal(self, app: App) -> None:
        cur = app.reconciler.statuses.get(DOMAIN)
        if cur is not None:
            app.reconciler.update_status(replace(cur, force_renew=True))

    async def close(self) -> None:
        for app in self.apps:
            await app.close()
        self.apps.clear()


@pytest.fixture
async def rig_factory(
    pebble_factory: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**pebble_options: Any) -> Rig:
        # the tests count requests exactly: no nonce rejections unless a test asks for them
        pebble_options.setdefault("nonce_reject_percent", 0)
        pebble = pebble_factory(**pebble_options)
        state = pebble.state_dir
        proxy = FaultProxy(pebble.listen_port, cert=state / "server.pem",
                           key=state / "server.key", upstream_ca=pebble.ca_bundle).start()
        prefix = tmp_path / f"njet{len(made)}"
        (prefix / "conf").mkdir(parents=True)
        (prefix / "conf" / "njet.conf").write_text(CONF)
        (prefix / CONFIG).write_text(render_toml(
            store_only_toml(pebble, acmeCaDir=proxy.directory_url)))
        rig = Rig(pebble, proxy, prefix)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.close()
        rig.proxy.stop()


async def converge_until_done(rig: Rig, *, attempts: int = 6) -> tuple[bool, int]:
    """Reconcile, and after each failure move the clock past the backoff; (done, passes)."""
    for n in range(1, attempts + 1):
        app = rig.app()
        result = await app.reconciler.converge()
        if result.plan.in_sync:
            return True, n
        rig.after_backoff()
    return False, attempts


def stored_fp(rig: Rig) -> str | None:
    crt = rig.prefix / ".lego" / "certificates" / f"{DOMAIN}.crt"
    return fingerprint_pem(crt.read_bytes()) if crt.exists() else None


# --- nonce rejection ------------------------------------------------------------------------------


async def test_half_of_all_nonces_rejected_still_converges(
    rig_factory: Callable[..., Rig], logs: io.StringIO
) -> None:
    rig = rig_factory(nonce_reject_percent=50)
    trials = summary.scaled(6)
    converged = passes_total = 0
    fps: set[str] = set()
    for i in range(trials):
        if i:
            rig.ask_renewal(rig.app())
        done, passes = await converge_until_done(rig)
        passes_total += passes
        sound = not store_problems(rig.prefix)
        fp = stored_fp(rig)
        if done and sound and fp is not None and fp not in fps:
            converged += 1
        if fp:
            fps.add(fp)
    rejected = sum(1 for m, _p, s in rig.proxy.log() if m == "POST" and s == 400)
    summary.record(FAMILY, trials=trials, converged=converged)
    print(f"\nnonce 50%: {trials} issuances, {passes_total} passes, {rejected} badNonce answers")
    assert rejected > 0, "Pebble rejected no nonce: the fault was not active"
    assert converged == trials


# --- the CA restarts mid-order and forgets accounts and orders ------------------------------------

# Pebble's paths: newOrder, authorization, challenge, finalize, order polling, certificate
STOP_AT = ("^/order-plz$", "^/authZ/", "^/chalZ/", "^/finalize-order/", "^/my-order/",
           "^/certZ/")


@pytest.mark.parametrize("depth", DEPTHS)
async def test_a_ca_restarted_mid_order_is_survived_by_registering_again(
    rig_factory: Callable[..., Rig], logs: io.StringIO, depth: str
) -> None:
    rig = rig_factory()
    stops = pick(depth, sample=spread(STOP_AT, 2), full=list(STOP_AT))
    trials = max(len(stops), summary.scaled(len(stops)))
    converged = 0
    failures: list[str] = []
    assert (await converge_until_done(rig, attempts=1))[0]
    account = next((rig.prefix / ".lego" / "accounts").rglob("account.json")).read_text()
    for i in range(trials):
        where = stops[i % len(stops)]
        before = stored_fp(rig)
        app = rig.app()
        rig.ask_renewal(app)
        rig.proxy.on_request(where, rig.pebble.stop_pebble)
        first = await app.reconciler.converge()
        st = app.reconciler.statuses[DOMAIN]
        problems = []
        if first.plan.in_sync:
            problems.append("converged although the CA went away")
        if st.backoff_until is None or st.attempts < 1:
            problems.append(f"no backoff recorded: {st}")
        elif rig.proxy.url not in (st.last_failure or ""):
            problems.append(f"the error does not name the CA: {st.last_failure!r}")
        if stored_fp(rig) != before:
            problems.append("the stored pair changed although no order finished")
        problems += store_problems(rig.prefix)
        rig.proxy.clear()
        rig.pebble.restart()  # same ports, no accounts, no orders
        rig.after_backoff()
        done, _ = await converge_until_done(rig, attempts=3)
        if not done:
            problems.append("did not converge after the CA came back")
        if stored_fp(rig) in (None, before):
            problems.append("no new certificate after the CA came back")
        problems += store_problems(rig.prefix)
        now_account = next(
            (rig.prefix / ".lego" / "accounts").rglob("account.json")).read_text()
        if now_account == account:
            problems.append("the account was not registered again")
        account = now_account
        if problems:
            failures.append(f"[stopped at {where}] " + "; ".join(problems))
        else:
            converged += 1
    summary.record(FAMILY, trials=trials, converged=converged)
    assert "registering again" in logs.getvalue()
    assert not failures, "\n".join(failures)


# --- rate limits: 429 with Retry-After ------------------------------------------------------------


def http_date(seconds: float) -> str:
    return formatdate(time.time() + seconds, usegmt=True)


# (path answered 429, Retry-After in seconds, sent as an HTTP-date instead of seconds?)
RATE_LIMITED = (
    ("^/order-plz$", 900, False),
    ("^/finalize-order/", 3600, False),
    ("^/dir$", 1200, True),
    ("^/chalZ/", 7200, False),
    ("^/certZ/", 1800, False),
    ("^/authZ/", 600, True),
)


async def test_a_long_retry_after_is_honoured_in_status_without_a_hot_loop(
    rig_factory: Callable[..., Rig], logs: io.StringIO
) -> None:
    rig = rig_factory()
    trials = max(len(RATE_LIMITED), summary.scaled(len(RATE_LIMITED)))
    converged = 0
    failures: list[str] = []
    assert (await converge_until_done(rig, attempts=1))[0]
    for i in range(trials):
        path, wait, as_date = RATE_LIMITED[i % len(RATE_LIMITED)]
        app = rig.app()
        rig.ask_renewal(app)
        before_fp = stored_fp(rig)
        rig.proxy.fail(None, status=429, path=path,
                       retry_after=http_date(wait) if as_date else wait)
        hits_before = rig.proxy.count(path)
        started = rig.now()
        first = await app.reconciler.converge()
        st = app.reconciler.statuses[DOMAIN]
        problems = []
        if first.plan.in_sync:
            problems.append("converged through a rate limit")
        least = started + timedelta(seconds=wait - (2 if as_date else 0))
        if st.backoff_until is None or st.backoff_until < least:
            problems.append(f"backoff_until {st.backoff_until} ignores Retry-After {wait}s "
                            f"(pass started {started})")
        if rig.proxy.count(path) - hits_before != 1:
            problems.append(f"a {wait}s Retry-After was retried in place")
        # immediate re-runs while in backoff: not one request reaches the CA
        seen = rig.proxy.count()
        for _ in range(3):
            again = await rig.app().reconciler.converge()
            if again.plan.actions:
                problems.append("a re-run during the backoff planned an action")
        if rig.proxy.count() != seen:
            problems.append(f"re-runs during the backoff sent {rig.proxy.count() - seen} "
                            "requests to the CA")
        if stored_fp(rig) != before_fp:
            problems.append("the stored pair changed during the rate limit")
        rig.proxy.clear()
        rig.after_backoff()
        done, _ = await converge_until_done(rig, attempts=1)
        if not done or stored_fp(rig) == before_fp:
            problems.append("did not renew once the Retry-After had passed")
        problems += store_problems(rig.prefix)
        if problems:
            failures.append(f"[429 on {path}, Retry-After {wait}] " + "; ".join(problems))
        else:
            converged += 1
    summary.record(FAMILY, trials=trials, converged=converged)
    assert not failures, "\n".join(failures)


async def test_a_real_rerun_during_a_rate_limit_backoff_sends_nothing_to_the_ca(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory()
    rig.proxy.fail(None, status=429, retry_after=600, path="^/order-plz$")
    first = run_cli(rig.prefix)
    assert first.returncode == 1
    assert "rateLimited" in first.stderr, first.stderr[-2000:]
    status = rig.status()
    assert status is not None and status.backoff_until is not None
    assert status.backoff_until >= datetime.now(UTC) + timedelta(seconds=590)
    seen = rig.proxy.counts()
    again = [run_cli(rig.prefix) for _ in range(2)]
    assert all(r.returncode == 1 for r in again)
    assert "Backoff" in again[-1].stderr
    assert rig.proxy.counts() == seen, "a re-run during the backoff talked to the CA"
    assert not any(leaked_private_key(r.output) for r in [first, *again])
    summary.record(FAMILY, trials=1, converged=1)


@pytest.mark.parametrize("status", [429, 503])
async def test_a_short_retry_after_is_waited_out_within_the_same_call(
    rig_factory: Callable[..., Rig], logs: io.StringIO, status: int
) -> None:
    rig = rig_factory()
    rig.proxy.fail(1, status=status, retry_after=1, path="^/order-plz$")
    started = time.monotonic()
    done, passes = await converge_until_done(rig, attempts=1)
    took = time.monotonic() - started
    ok = done and passes == 1 and rig.proxy.count("^/order-plz$") == 2 and took >= 1.0
    summary.record(FAMILY, trials=1, converged=int(ok))
    assert done and passes == 1, "a 1 s Retry-After must be retried in the same call"
    assert rig.proxy.count("^/order-plz$") == 2
    assert took >= 1.0, f"Retry-After: 1 was not waited for ({took:.2f}s)"
    assert not store_problems(rig.prefix)


# --- Retry-After beyond the in-call budget, and rate limits without a problem document -----


async def test_a_5xx_with_a_long_retry_after_ends_the_call_and_backs_off(
    rig_factory: Callable[..., Rig], logs: io.StringIO
) -> None:
    rig = rig_factory()
    rig.proxy.fail(None, status=503, retry_after=4, path="^/order-plz$")
    started = time.monotonic()
    done, _ = await converge_until_done(rig, attempts=1)
    assert not done
    assert rig.proxy.count("^/order-plz$") == 1, "a 4 s Retry-After was waited out in place"
    assert time.monotonic() - started < 3.5


async def test_a_bodyless_429_on_new_nonce_keeps_its_retry_after(
    rig_factory: Callable[..., Rig], logs: io.StringIO
) -> None:
    rig = rig_factory()
    rig.proxy.fail(None, status=429, retry_after=1200, path="^/nonce-plz$")
    started = rig.now()
    done, _ = await converge_until_done(rig, attempts=1)
    st = rig.status()
    assert not done and st is not None and st.backoff_until is not None
    assert st.backoff_until >= started + timedelta(seconds=1200), st


# --- a Retry-After beyond any backoff (issue 13, item 3) ------------------------------------------

HUGE_RETRY_AFTER = "99999999999999999999"  # seconds; timedelta(seconds=1e20) overflows
THREE = ("a.test", "b.test", "c.test")
THREE_CONF = "http {\n" + "".join(
    f"    server {{ listen 127.0.0.1:8443 ssl; server_name {d} www.{d};"
    " ssl_certificate_management acme; }\n" for d in THREE) + "}\n"


async def test_a_huge_retry_after_backs_off_24_hours_and_the_other_statuses_survive(
    rig_factory: Callable[..., Rig], logs: io.StringIO
) -> None:
    """The first newOrder of a pass ordering three certificates gets a real 429 with
    `Retry-After: 99999999999999999999`: the pass completes, that certificate's status says
    now + 24 h, the other two are issued and their statuses written; a hand edit pushing the
    backoff a year ahead is read back as 24 h."""
    from tests.faults.helpers import edit_status

    rig = rig_factory()
    (rig.prefix / "conf" / "njet.conf").write_text(THREE_CONF)
    rig.proxy.fail(1, status=429, retry_after=HUGE_RETRY_AFTER, path="^/order-plz$")
    started = rig.now()
    result = await rig.app().reconciler.converge()  # before the fix: OverflowError, no status
    finished = rig.now()
    statuses = rig.app().status_files.load_all()  # what is on disk
    limited = sorted(d for d, s in statuses.items() if s.backoff_until is not None)
    problems = []
    if result.plan.in_sync:
        problems.append("converged through a rate limit")
    if len(limited) != 1 or set(statuses) != set(THREE):
        problems.append(f"statuses on disk: {sorted(statuses)}, backing off: {limited}")
    else:
        until = statuses[limited[0]].backoff_until
        assert until is not None
        if not started + timedelta(hours=24) <= until <= finished + timedelta(hours=24):
            problems.append(f"backoff_until {until} is not the pass's now + 24 h")
        for domain in set(THREE) - set(limited):
            st = statuses[domain]
            if st.last_success_at is None or st.attempts:
                problems.append(f"{domain}'s status lost its success: {st}")
            if not (rig.prefix / ".lego" / "certificates" / f"{domain}.crt").exists():
                problems.append(f"{domain} was not issued")
        edit_status(rig.prefix, limited[0],
                    backoff_until=(rig.now() + timedelta(days=365)).isoformat())
        loaded = rig.app().status_files.load(limited[0])
        bound = rig.now() + timedelta(hours=24)
        if loaded is None or loaded.backoff_until is None or not (
                bound - timedelta(minutes=1) <= loaded.backoff_until <= bound):
            problems.append(f"a one-year backoff was not clamped at load: {loaded}")
    if "Retry-After beyond the longest honoured backoff; clamped" not in logs.getvalue():
        problems.append("the clamp was not logged")
    if rig.proxy.count("^/order-plz$") != len(THREE):
        problems.append(f"{rig.proxy.count('^/order-plz$')} newOrders for three certificates")
    problems += store_problems(rig.prefix)
    summary.record(FAMILY, trials=1, converged=int(not problems))
    assert not problems, "\n".join(problems)
