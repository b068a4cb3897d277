"""Bench 7, ARI (RFC 9773): what polling the CA's renewal information costs at scale, and how soon
a window moved into the past (the CA revoking) gives a new certificate.

1. Poll cost, `--ari-certs` (10,000) certificates: the controller's own ARI step
   (controller/ari.py: due polls, token bucket, jittered next polls) against a fake clock and
   an in-memory CA answering every certificate with a window 60 days out and no Retry-After
   (so every 6 hours), over POLL_HOURS simulated hours; the clock jumps to each wake-up the step
   asks the loop for. Figures: requests per hour in the steady state (after the first round),
   the time between two polls of one certificate (and polls per certificate per 6-hour
   interval), the most requests in one pass and in any minute, passes per hour, the time until
   every certificate was asked once, and the step's own CPU time per pass. Goals: at most one
   poll per certificate per interval (no two within 6 h); never a burst (no pass with more
   than 2 % of the certificates, or BURST (20) for fewer than 1,000).
2. Window moved into the past → new certificate: a real Pebble behind hack/pebble/arishim.py,
   the controller in process (store-only, as `reconcile` builds it) on a clock that jumps to its
   next deadline. Right after a certificate's poll (the worst case) its window is moved into
   the past; measured: the simulated time until the controller's next poll renews it, and the
   wall time of that renewal (poll + issuance + store). `--trials` (5; quick 3) trials. Goal:
   within one poll interval (6 h, +10 % jitter) plus one issuance.
Called by bench/runner.py.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from bench.common import BenchError, Goal, managed_blocks, store_only_toml, summary, write_prefix
from controller.ari import BURST, AriStep
from controller.model import CertificateSpec, CertInfo, Desired, KeyType, Observed, StoredCert
from controller.policies.ari import DEFAULT_POLL, POLL_JITTER
from controller.ports import AriAnswer, CertStore
from controller.status import CertStatus

POLL_HOURS = 36
STEADY_FROM_HOURS = 12  # the first round is over by then (about 3 h for 10,000)
BURST_SHARE = 0.02
START = datetime(2026, 7, 1, tzinfo=UTC)


# -- 1. poll cost -------------------------------------------------------------------------------


class _Pems:
    """What the ARI step reads of a CertStore: a certificate's PEM (here its fingerprint)."""

    def __init__(self, stored: dict[str, StoredCert]) -> None:
        self._pems = {d: s.info.fingerprint.encode() for d, s in stored.items()}

    def cert_pem(self, domain: str) -> bytes | None:
        return self._pems.get(domain)


class _Ca:
    """An AriPoller for `_Pems`' certificates: a window 60 days out, no Retry-After."""

    def __init__(self, clock: list[datetime]) -> None:
        self.clock = clock
        self.requests: list[tuple[datetime, str]] = []

    async def supported(self) -> bool:
        return True

    async def renewal_info(self, cert_pem: bytes, *, ca: str | None = None) -> AriAnswer:
        now = self.clock[0]
        self.requests.append((now, cert_pem.decode()))
        return AriAnswer(fingerprint=cert_pem.decode(), cert_id=f"id.{cert_pem[:12].decode()}",
                         window_start=now + timedelta(days=60),
                         window_end=now + timedelta(days=61))

    async def factory(self) -> _Ca:
        return self

    async def close(self) -> None:
        return None


def synthetic(n: int) -> tuple[Desired, Observed]:
    specs: dict[str, CertificateSpec] = {}
    stored: dict[str, StoredCert] = {}
    for i in range(n):
        name = f"c{i}.ari.bench.test"
        specs[name] = CertificateSpec(domain=name, names=(name,))
        info = CertInfo(common_name=name, names=(name,), not_before=START - timedelta(days=10),
                        not_after=START + timedelta(days=80), key_type=KeyType.EC256,
                        serial=f"{i:x}", fingerprint=f"{i:064x}", issuer="CN=bench")
        stored[name] = StoredCert(name, info, key_matches=True)
    return Desired(specs), Observed(stored=stored)


async def _simulate(n: int, hours: int) -> dict[str, Any]:
    desired, observed = synthetic(n)
    clock = [START]
    ca = _Ca(clock)
    step = AriStep(ca.factory, cast(CertStore, _Pems(dict(observed.stored))),
                   clock=lambda: clock[0], rng=random.Random(1))
    statuses: dict[str, CertStatus] = {}
    per_pass: list[int] = []
    cpu: list[float] = []
    end = START + timedelta(hours=hours)
    first_round: datetime | None = None
    while clock[0] < end:
        before = len(ca.requests)
        started = time.process_time()
        statuses.update(await step.refresh(desired, observed, statuses))
        cpu.append(time.process_time() - started)
        per_pass.append(len(ca.requests) - before)
        if first_round is None and len(statuses) == n:
            first_round = clock[0]
        wake = step.next_wake() or clock[0] + timedelta(hours=1)
        clock[0] = max(wake, clock[0] + timedelta(seconds=1))
    steady_from = START + timedelta(hours=STEADY_FROM_HOURS)
    steady = [t for t, _ in ca.requests if t >= steady_from]
    steady_hours = (end - steady_from).total_seconds() / 3600
    per_hour = len(steady) / steady_hours
    minutes = Counter(int((t - START).total_seconds() // 60) for t, _ in ca.requests)
    last: dict[str, datetime] = {}
    gaps: list[float] = []
    for at, fp in ca.requests:
        if fp in last:
            gaps.append((at - last[fp]).total_seconds() / 3600)
        last[fp] = at
    if not gaps:
        raise BenchError("no certificate was polled twice: simulate longer")
    return {
        "certificates": n,
        "simulated_hours": hours,
        "requests": len(ca.requests),
        "passes": len(per_pass),
        "passes_per_hour": round(len(per_pass) / hours, 1),
        "first_round_hours": round(((first_round or end) - START).total_seconds() / 3600, 2),
        "steady_requests_per_hour": round(per_hour, 1),
        "hours_between_polls_of_a_cert": {"min": round(min(gaps), 3),
                                           "mean": round(statistics.fmean(gaps), 3),
                                           "max": round(max(gaps), 3)},
        "polls_per_cert_per_interval": round(
            DEFAULT_POLL.total_seconds() / 3600 / statistics.fmean(gaps), 3),
        "max_requests_per_pass": max(per_pass),
        "max_requests_per_minute": max(minutes.values()),
        "bucket_capacity": int(AriStep.capacity(n)),
        "step_cpu_seconds_per_pass": round(statistics.median(cpu), 5),
        "step_cpu_seconds_busiest_pass": round(max(cpu), 5),
    }


def poll_cost(n: int, hours: int = POLL_HOURS) -> dict[str, Any]:
    return asyncio.run(_simulate(n, hours))


# -- 2. a window moved into the past --------------------------------------------------------------


async def _revoked(pebble: Any, workdir: Path, trials: int) -> dict[str, Any]:
    from controller.adapters.acme.ari import cert_id_of_pem
    from controller.app import App
    from controller.certinfo import fingerprint_pem
    from controller.config import load_config
    from tests.support.hackmods import load_hack_module

    shim_cls: Any = load_hack_module("pebble/arishim.py").AriShim
    state = pebble.state_dir
    shim = shim_cls(pebble.listen_port, cert=state / "server.pem", key=state / "server.key",
                    upstream_ca=pebble.ca_bundle).start()
    name = "revoked.ari.bench.test"
    toml = store_only_toml(pebble)
    toml["acme"] = {**toml["acme"], "acmeCaDir": shim.directory_url}
    prefix = write_prefix(workdir / "revoked", conf=managed_blocks([name]), toml=toml)
    crt = prefix / ".lego" / "certificates" / f"{name}.crt"
    offset = [timedelta(0)]
    app = App(load_config(prefix / "conf" / "cert-manager.toml", prefix=prefix))
    app.reconciler.clock = lambda: datetime.now(UTC) + offset[0]
    delays: list[float] = []
    renewals: list[float] = []
    try:
        result = await app.reconciler.converge()  # issued, then its window fetched
        for _ in range(trials):
            old = crt.read_bytes()
            st = app.reconciler.statuses.get(name)
            if st is None or st.ari is None or st.ari.polled_at is None:
                raise BenchError(f"no ARI poll was recorded for {name}: {st}")
            moved_at = st.ari.polled_at + timedelta(minutes=1)  # right after a poll: worst case
            now = app.reconciler.clock()
            shim.set_window(now - timedelta(days=2), now - timedelta(days=1),
                            cert_id=cert_id_of_pem(old))
            for _hop in range(50):
                deadline = app.reconciler.next_deadline(result, timedelta(hours=24))
                offset[0] += deadline - app.reconciler.clock()
                at = app.reconciler.clock()
                t = time.perf_counter()
                result = await app.reconciler.converge()
                if crt.read_bytes() != old:
                    renewals.append(time.perf_counter() - t)
                    delays.append((at - moved_at).total_seconds())
                    break
            else:
                raise BenchError("the moved window did not renew within 50 deadlines")
            if fingerprint_pem(crt.read_bytes()) == fingerprint_pem(old):
                raise BenchError("renewed to the same certificate")
        replaces = [r for r in shim.replaces() if r]
    finally:
        await app.close()
        shim.stop()
    if len(replaces) != trials:
        raise BenchError(f"{trials} renewals but {len(replaces)} newOrders named `replaces`")
    return {"trials": trials, "delay_seconds": summary(delays),
            "renewal_seconds": summary(renewals),
            "poll_interval_seconds": DEFAULT_POLL.total_seconds() * (1 + POLL_JITTER)}


# -- the bench ----------------------------------------------------------------------------------


def run_ari(pebble: Any, workdir: Path, *, certs: int, trials: int) -> dict[str, Any]:
    cost = poll_cost(certs)
    revoked = asyncio.run(_revoked(pebble, workdir, trials))
    worst = revoked["delay_seconds"]["max"] + revoked["renewal_seconds"]["max"]
    goals = [
        Goal("shortest time between two polls of a certificate", ">=",
             DEFAULT_POLL.total_seconds() / 3600, cost["hours_between_polls_of_a_cert"]["min"],
             "h"),
        Goal("most requests in one pass", "<=", max(BURST, BURST_SHARE * certs),
             cost["max_requests_per_pass"]),
        Goal("window moved into the past → renewed (worst, simulated h)", "<=",
             revoked["poll_interval_seconds"] / 3600 + revoked["renewal_seconds"]["max"] / 3600,
             worst / 3600, "h"),
    ]
    notes = [f"poll cost simulated over {POLL_HOURS} h with the controller's ARI step and a fake "
             "clock, steady state from hour 12; the CA answers no Retry-After (every 6 h)",
             "window moved right after a poll (the worst case); store-only: 'renewed' is the new "
             "pair stored (serving it adds the apply + verify of the served bench)"]
    return {"figures": {"poll_cost": cost, "revoked": revoked},
            "goals": [g.as_dict() for g in goals], "notes": notes}
