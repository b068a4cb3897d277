"""Step 2 fault cases against Pebble + the NJet simulator, in-process with an injected clock.

Each case ends converged or with a clear error and backoff; never a cert on disk without its
key, never a private key in a log line.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.app import App
from controller.config import load_config
from controller.fold import Outcome
from controller.logs import reset_logging, setup_logging
from tests.e2e.harness import Prefix
from tests.e2e.njet_harness import boot_files, controller_toml, served, served_fingerprint, sim_conf
from tests.e2e.test_njet_apply import no_pair_without_key, stored_fp

pytestmark = pytest.mark.pebble


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    setup_logging(verbosity=1, stream=buf)
    yield buf
    reset_logging()


def make_app(pebble: Any, sim: Any) -> tuple[App, Prefix]:
    # NJet (and the simulator) re-applies every retained record shortly after a start: a
    # fault injected before that replay would be undone by it
    sim.wait_replayed()
    prefix = Prefix(sim.prefix)
    prefix.write_toml(controller_toml(pebble, sim))
    return App(load_config(prefix.toml, prefix=prefix.root)), prefix


async def after_backoff(app: App) -> Any:
    later = datetime.now(UTC) + timedelta(hours=1)
    app.reconciler.clock = lambda: later
    return await app.reconciler.converge()


async def test_code_4_on_put_quarantines_the_first_cert_and_converges_after_backoff(
    pebble: Any, njetsim_factory: Any, logs: io.StringIO
) -> None:
    sim = njetsim_factory(sim_conf(), files=boot_files())
    app, prefix = make_app(pebble, sim)
    sim.set_fault(put_ssl_reply={"code": 4, "msg": " dyn ssl update fail", "count": 1})
    try:
        first = await app.reconciler.converge()
        failures: list[Outcome | None] = [o for o in first.outcomes if not o.ok]
        (failed,) = failures or [None]
        assert failed is not None or any(w.reason.value == "Backoff" for w in first.plan.waiting)
        status = app.reconciler.statuses["a.test"]
        assert status.attempts == 1 and status.backoff_until is not None
        assert "dyn ssl update fail" in (status.last_failure or "")
        assert not (prefix.certs / "a.test.crt").exists(), "unapplied first cert leaves the store"
        assert any((prefix.root / ".lego" / "quarantine").iterdir())
        assert "boot-a" in served(sim)["subject"]
        no_pair_without_key(prefix)

        done = await after_backoff(app)
        assert done.plan.in_sync
        assert served_fingerprint(sim) == stored_fp(prefix)
    finally:
        await app.close()
    assert "PRIVATE KEY" not in logs.getvalue()


async def test_success_but_not_served_is_caught_by_the_handshake_and_escapes_the_code_11_trap(
    pebble: Any, njetsim_factory: Any, logs: io.StringIO
) -> None:
    sim = njetsim_factory(sim_conf(), files=boot_files())
    app, prefix = make_app(pebble, sim)
    sim.set_fault(not_served=1)
    try:
        await app.reconciler.converge()
        text = logs.getvalue()
        assert "repeated" in text, "a retry of the same body must hit NJet's code 11"
        status = app.reconciler.statuses["a.test"]
        assert status.backoff_until is not None and status.applied_fingerprint is None
        assert "boot-a" in served(sim)["subject"]
        no_pair_without_key(prefix)

        done = await after_backoff(app)
        assert done.plan.in_sync, done.plan
        fp = stored_fp(prefix)
        assert served_fingerprint(sim) == fp
        assert app.reconciler.statuses["a.test"].applied_fingerprint == fp
    finally:
        await app.close()
    assert "PRIVATE KEY" not in logs.getvalue()


async def test_a_renewed_cert_that_is_not_served_gets_a_fresh_key_not_a_hot_loop(
    pebble: Any, njetsim_factory: Any, logs: io.StringIO
) -> None:
    sim = njetsim_factory(sim_conf(), files=boot_files())
    app, prefix = make_app(pebble, sim)
    try:
        assert (await app.reconciler.converge()).plan.in_sync
        first_fp = stored_fp(prefix)
        sim.set_fault(not_served=-1)  # every add "succeeds" and is not served
        cur = app.reconciler.statuses["a.test"]
        app.reconciler.update_status(replace(cur, force_renew=True))
        result = await app.reconciler.converge()
        assert not result.plan.in_sync
        passes = app.reconciler.passes_run
        # more passes right away do nothing: the backoff holds
        again = await app.reconciler.converge()
        assert not again.plan.actions and app.reconciler.passes_run == passes + 1
        assert served_fingerprint(sim) == first_fp, "the old cert stays served"
        no_pair_without_key(prefix)

        sim.reset_faults()
        done = await after_backoff(app)
        assert done.plan.in_sync
        assert served_fingerprint(sim) == stored_fp(prefix) != first_fp
    finally:
        await app.close()
