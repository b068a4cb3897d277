"""Composition root: builds the adapters and steps from a Config. No logic of its own.

Called by cli.py. Everything NJet-facing is skipped in store-only mode (`[njet] apiAddress = ""`).
The ACME issuer and the challenge solvers are built lazily, so `diff` never registers an account
or orders anything, and a pass with nothing to order never imports the ACME or HTTP stacks. The
solvers are a SolverSet (one per challenge type, each built when a certificate first needs it):
http-01 on our own server or through NJet (`proxyHttpChallengeServerIp`), tls-alpn-01 on our
own server, dns-01 through the `[dns]` provider (adapters/dns/, only with a [dns] section); a
certificate's `[certificates."name"] challengeType` picks one, else [acme]'s (a certificate
holding a wildcard always uses dns-01: desired_source.py). With [dns], start-up (`prepare`)
removes the dns-01 records a previous run wrote and did not remove (.lego/dns-cleanups.json).
With `[acme] ari` (the default) executing passes ask the CA's renewal information first (the
ARI step, controller/ari.py, over the ARI client built on first use beside the issuer).
Each CA's rate-limit ledger (`.lego/ledger/`, adapters/store/ledger.py) is read by every
pass and written by the executor, for the budget of `budget_scope` ([acme]'s CA:
[acme.rateLimits] over the CA's defaults) and `fallback_scopes` (the defaults only); names
are grouped by the packaged public suffix list (store/psl.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from controller.adapters.store.gcconfirm import GcConfirmFile
from controller.adapters.store.ledger import FileLedger
from controller.adapters.store.lego import LegoStore
from controller.adapters.store.psl import registered_domain
from controller.adapters.store.quarantine import Quarantine
from controller.adapters.store.runtime import RuntimeStore
from controller.adapters.store.statusfile import StatusFiles
from controller.ari import AriStep
from controller.clock import utc_now
from controller.config import Config
from controller.desired_source import CertSettings, DesiredSource
from controller.errors import ControllerError
from controller.execute import Executor
from controller.logs import log_event
from controller.model import DEFAULT_KEY_TYPE, ChallengeType, Desired, KeyKind, first_key_type
from controller.observe import Gatherer
from controller.paths import StorePaths
from controller.policies.ratelimits import BudgetScope, limits_for
from controller.policy import PolicySettings
from controller.ports import (
    AriPoller,
    CertStore,
    ChallengeSolver,
    GcConfirmations,
    Issuer,
    LeftoverCleaner,
    ProbeOutcome,
    Prober,
    RateLedger,
    StatusPersistence,
    Stoppable,
)
from controller.reconcile import Reconciler

if TYPE_CHECKING:
    from controller.adapters.challenges.solvers import SolverSet
    from controller.adapters.njet.api import NjetClient
    from controller.fleet import Fleet


async def tls_probe(
    *,
    listen: str,
    sni: str,
    key_kind: KeyKind,
    timeout: float,  # noqa: ASYNC109 - part of the ports.Prober interface
) -> ProbeOutcome:
    """The ports.Prober: a real TLS handshake (adapters/njet/probe.py, imported on first use)."""
    from controller.adapters.njet.probe import probe

    return await probe(listen, sni, key_kind=key_kind, timeout=timeout)


def policy_settings(config: Config) -> PolicySettings:
    return PolicySettings(
        renew_before=timedelta(days=config.acme.renewBeforeDays),
        default_key_type=first_key_type(config.acme.keyType) or DEFAULT_KEY_TYPE,
        delete_grace=config.controller.deleteGracePeriod,
        max_delete_share=config.controller.maxDeleteShare,
        store_only=config.store_only,
        default_profile=config.acme.profile.strip(),
        reuse_key=config.acme.reuseKey,
        ari=config.acme.ari,
        cas=(config.acme.acmeCaDir.strip(), *(ca.acmeCaDir for ca in config.acme.fallback)),
        fallback_after=config.acme.fallbackAfter,
    )


def build_solvers(config: Config, njet: NjetClient | None,
                  fleet: Fleet | None = None) -> SolverSet:
    """Every challenge type's solver factory (each solver built on first use). In fleet mode
    http-01 and tls-alpn-01 are shared (adapters/pg/challenges.py): the token goes to the
    database, and every node's relay answers it on that node's own solver."""
    from controller.adapters.challenges.solvers import (
        LocalHttp01Solver,
        LocalTlsAlpn01Solver,
        SolverSet,
    )

    acme = config.acme

    def shared(solver: ChallengeSolver) -> ChallengeSolver:
        if fleet is None:
            return solver
        from controller.adapters.pg.challenges import FleetChallengeSolver

        return FleetChallengeSolver(solver, fleet.db, fleet.node, fleet.live_nodes,
                                    node_timeout=config.store.nodeTimeout)

    def http01() -> ChallengeSolver:
        local = LocalHttp01Solver(acme.httpChallengeServerAddress)
        if acme.proxyHttpChallengeServerIp and njet is not None:
            from controller.adapters.challenges.njet_http01 import NjetProxyHttp01Solver

            return shared(NjetProxyHttp01Solver(
                local,
                njet=njet,
                listen_ip=acme.proxyHttpChallengeServerIp,
                port=acme.httpValidationPort,
                upstream_address=acme.httpChallengeServerAddress,
            ))
        return shared(local)

    def tls_alpn01() -> ChallengeSolver:
        return shared(LocalTlsAlpn01Solver(acme.tlsChallengeServerAddress))

    factories = {ChallengeType.HTTP: http01, ChallengeType.TLS: tls_alpn01}
    dns = config.dns
    if dns is not None:
        def dns01() -> ChallengeSolver:
            from controller.adapters.dns.providers import build_solver

            return build_solver(dns, config.prefix, StorePaths(config.prefix).dns_cleanups)

        factories[ChallengeType.DNS] = dns01
    return SolverSet(factories)


def budget_scope(config: Config) -> BudgetScope:
    """The rate-limit budget of [acme]'s CA: `[acme.rateLimits]` over the CA's defaults
    (Let's Encrypt's published limits for its directories, none for another CA)."""
    acme = config.acme
    return BudgetScope(ca=acme.acmeCaDir.strip(), account=acme.email.strip(),
                       limits=limits_for(acme.acmeCaDir, acme.rateLimits.model_dump()))


def fallback_scopes(config: Config) -> tuple[BudgetScope, ...]:
    """The rate-limit budget of each `[[acme.fallback]]` CA: Let's Encrypt's published limits
    for its directories, none for another CA (`[acme.rateLimits]` is [acme]'s CA's only); its
    account is its `email` (unset: [acme]'s). A CA whose ledger file (by host:port) is an
    earlier CA's has no budget of its own."""
    acme, paths = config.acme, StorePaths(config.prefix)
    seen = {paths.ledger_file(acme.acmeCaDir.strip())}
    out = []
    for fb in acme.fallback:
        name = paths.ledger_file(fb.acmeCaDir)
        if name in seen:
            continue
        seen.add(name)
        email = acme.email if fb.email is None else fb.email
        out.append(BudgetScope(ca=fb.acmeCaDir, account=email.strip(),
                               limits=limits_for(fb.acmeCaDir, {})))
    return tuple(out)


def cert_settings(config: Config) -> dict[str, CertSettings]:
    """The TOML's [certificates."name"] tables as the desired layer takes them."""
    return {name: CertSettings(key_type=t.keyType, challenge_type=t.challengeType,
                               profile=t.profile, profile_required=t.profileRequired,
                               reuse_key=t.reuseKey)
            for name, t in config.certificates.items()}


async def _remove_leftovers(cleaner: LeftoverCleaner, removed: str, key: str, *,
                            failed: str) -> None:
    """Let `cleaner` remove what a previous run left, logging each one (as `key`) or the error."""
    try:
        for what in await cleaner.remove_leftovers():
            fields: dict[str, Any] = {key: what}
            log_event(removed, **fields)
    except ControllerError as exc:
        log_event(failed, level=logging.WARNING, error=str(exc))


@dataclass
class App:
    config: Config
    read_only: bool = False  # `diff`: nothing under .lego is created, repaired or rewritten
    paths: StorePaths = field(init=False)
    store: LegoStore = field(init=False)  # the files under .lego/ (fleet mode: the mirror)
    status_files: StatusFiles = field(init=False)  # .lego/status/
    # what the loop uses: the certificate store, statuses, deletion-guard confirmation and
    # [acme]'s CA's ledger: the files above, or (fleet mode) the fleet database's
    cert_store: CertStore = field(init=False)
    status_store: StatusPersistence = field(init=False)
    runtime: RuntimeStore = field(init=False)
    gc_confirmations: GcConfirmations = field(init=False)
    quarantine: Quarantine = field(init=False)
    ledger: RateLedger = field(init=False)
    fleet: Fleet | None = field(init=False, default=None)  # fleet mode ([store] postgres)
    desired_source: DesiredSource = field(init=False)
    njet: NjetClient | None = field(init=False, default=None)
    reconciler: Reconciler = field(init=False)
    _issuer: Issuer | None = field(init=False, default=None)
    _issuer_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _solvers: SolverSet | None = field(init=False, default=None)
    _ari: AriPoller | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        cfg = self.config
        self.paths = StorePaths(cfg.prefix)
        mirror = LegoStore(self.paths, read_only=self.read_only)
        self.store = self.cert_store = mirror
        # the reconciler's clock, read when used (tests swap it after construction)
        self.status_files = StatusFiles(self.paths, read_only=self.read_only,
                                        clock=lambda: self.reconciler.clock())
        self.status_store = self.status_files
        self.runtime = RuntimeStore(self.paths, read_only=self.read_only,
                                    wildcards=cfg.dns_configured)
        self.gc_confirmations = GcConfirmFile(self.paths, read_only=self.read_only)
        if cfg.store.fleet:
            from controller.adapters.pg.gcconfirm import PgGcConfirmations
            from controller.fleet import Fleet

            self.fleet = Fleet(cfg, mirror, read_only=self.read_only)
            self.cert_store = self.fleet.store
            self.status_store = self.fleet.status
            self.gc_confirmations = PgGcConfirmations(self.fleet.db)
        self.quarantine = Quarantine(self.paths, retention=cfg.controller.quarantineRetention,
                                     read_only=self.read_only)
        self.desired_source = DesiredSource(
            cfg.conf_path, cfg.acme.keyType, self.runtime, max_conf_bytes=cfg.njet.maxConfBytes,
            settings=cert_settings(cfg), default_challenge=cfg.acme.challengeType,
            default_profile=cfg.acme.profile.strip(), settings_origin=cfg.source,
            wildcards=cfg.dns_configured,
        )
        repeated: type[BaseException] | None = None
        if not cfg.store_only:
            from controller.adapters.njet.api import NjetClient, NjetRepeated

            self.njet = NjetClient(cfg.njet.apiAddress,
                                   timeout=cfg.controller.probeTimeout.total_seconds())
            repeated = NjetRepeated
        settings = policy_settings(cfg)
        timeout = cfg.controller.probeTimeout.total_seconds()
        prober: Prober | None = None if cfg.store_only else tls_probe
        clock = utc_now  # the one clock, handed to the reconciler and every step that needs "now"
        gatherer = Gatherer(self.cert_store, settings, njet=self.njet, prober=prober,
                            probe_timeout=timeout)
        scope = budget_scope(cfg)
        self.ledger = self._ledger(scope.ca)
        fallbacks = tuple((fb, self._ledger(fb.ca)) for fb in fallback_scopes(cfg))
        executor = Executor(
            store=self.cert_store,
            issuer_factory=self.issuer,
            njet=self.njet,
            prober=prober,
            probe_timeout=timeout,
            concurrency=cfg.controller.concurrency,
            repeated_error=repeated,
            revoke_on_delete=cfg.controller.revokeOnDelete,
            ledger=None if self.read_only else self.ledger,
            budget_scope=scope,
            fallback_budgets=() if self.read_only else fallbacks,
            registered_domain=registered_domain,
            gate=self.fleet.gate if self.fleet is not None else None,
            clock=clock,
        )
        self.reconciler = Reconciler(
            settings=settings,
            load_desired=self.load_desired,
            gatherer=gatherer,
            executor=executor,
            status_store=self.status_store,
            clock=clock,
            gc_confirmations=self.gc_confirmations,
            quarantine=None if self.read_only else self.quarantine,
            ledger=self.ledger,
            budget_scope=scope,
            fallback_budgets=fallbacks,
            registered_domain=registered_domain,
            fleet_sync=self.fleet.sync if self.fleet is not None else None,
        )
        if cfg.acme.ari and not self.read_only:  # `diff` and `certs` only show what is recorded
            self.reconciler.ari = AriStep(self.ari_poller, self.cert_store,
                                          clock=lambda: self.reconciler.clock(),
                                          concurrency=cfg.controller.concurrency)

    def _ledger(self, ca: str) -> RateLedger:
        """The rate-limit ledger of the CA at `ca`: a file under .lego/ledger/, or the fleet's."""
        if self.fleet is not None:
            from controller.adapters.pg.ledger import PgLedger

            return PgLedger(self.fleet.db, ca)
        return FileLedger(self.paths, ca, read_only=self.read_only)

    async def prepare(self) -> None:
        """Start-up chores before the first pass (the store lock must be held): finish or undo
        an interrupted store swap, remove the dns-01 records a previous run left (with [dns]),
        and remove challenge locations a previous run left in NJet (NJet keeps dynamic
        locations across restarts)."""
        for line in self.cert_store.recover():
            log_event("store recovery", detail=line)
        await self._remove_dns_leftovers()
        if not self.config.acme.proxyHttpChallengeServerIp or self.njet is None:
            return
        solver = self.solvers.get(ChallengeType.HTTP)  # the NJet-proxied http-01 solver
        if isinstance(solver, LeftoverCleaner):
            await _remove_leftovers(solver, "removed a left-over challenge location", "location",
                                    failed="could not check for left-over challenge locations")

    async def _remove_dns_leftovers(self) -> None:
        """With [dns]: build the dns-01 solver now (its provider's secrets are read and its
        libraries loaded at start, not inside the first order; a ConfigError is logged here
        and again by the order that needs it), then remove the records a previous run left."""
        if self.config.dns is None:
            return
        try:
            solver = self.solvers.get(ChallengeType.DNS)
        except ControllerError as exc:
            log_event("the dns-01 provider cannot be used", level=logging.WARNING,
                      error=str(exc))
            return
        if self.paths.dns_cleanups.exists() and isinstance(solver, LeftoverCleaner):
            await _remove_leftovers(
                solver, "removed a left-over dns-01 record", "record",
                failed="could not remove left-over dns-01 records; retried at the next start")

    def load_desired(self, *, fresh: bool = False) -> Desired:
        return self.desired_source.load(fresh=fresh)

    @property
    def solvers(self) -> SolverSet:
        if self._solvers is None:
            self._solvers = build_solvers(self.config, self.njet, self.fleet)
        return self._solvers

    def start_relay(self) -> None:
        """Fleet mode: the relay that answers the other nodes' http-01 and tls-alpn-01
        challenges on this node's own solvers (service.py runs it)."""
        if self.fleet is None or self.read_only:
            return
        from controller.adapters.pg.challenges import ChallengeRelay

        kinds = {"http-01": ChallengeType.HTTP, "tls-alpn-01": ChallengeType.TLS}

        def local_for(challenge_type: str) -> ChallengeSolver | None:
            kind = kinds.get(challenge_type)
            if kind is None or kind not in self.solvers.types:
                return None
            solver = self.solvers.get(kind)
            local: ChallengeSolver | None = getattr(solver, "local", None)
            return local

        self.fleet.relay = ChallengeRelay(self.fleet.db, self.fleet.node, local_for)

    async def issuer(self) -> Issuer:
        """[acme]'s CA and the [[acme.fallback]] ones (adapters/acme/multi.py), built on
        first use; each CA's own issuer is built when an order first goes to it."""
        if self._issuer is not None:
            return self._issuer
        async with self._issuer_lock:  # concurrent first orders build one issuer, one account
            if self._issuer is None:
                from controller.adapters.acme.multi import CaFallbackIssuer

                if self.fleet is not None:  # the fleet's ACME accounts first: one per CA
                    await self.fleet.pull_accounts()
                self._issuer = CaFallbackIssuer.from_config(self.config, self.paths,
                                                            self.solvers)
        return self._issuer

    async def ari_poller(self) -> AriPoller:
        """The ARI client (built on first use, like the issuer): over every CA of the
        CaFallbackIssuer, each certificate asked at the CA that issued it; a test's issuer
        that is no AcmeIssuer has no renewal information."""
        if self._ari is None:
            from controller.adapters.acme.ari import AriClient, NoAri
            from controller.adapters.acme.client import AcmeIssuer
            from controller.adapters.acme.multi import CaFallbackAri, CaFallbackIssuer

            issuer = await self.issuer()
            if isinstance(issuer, CaFallbackIssuer):
                self._ari = CaFallbackAri(issuer)
            else:
                self._ari = AriClient(issuer) if isinstance(issuer, AcmeIssuer) else NoAri()
        return self._ari

    def stop(self) -> None:
        """The process is stopping (service.py, on SIGTERM): no new request to the CA."""
        if isinstance(self._issuer, Stoppable):  # AcmeIssuer; a test's fake may not be
            self._issuer.stop()

    async def close(self) -> None:
        if self._ari is not None:
            await self._ari.close()
        if self._issuer is not None:
            await self._issuer.close()
        if self._solvers is not None:
            await self._solvers.close()
        if self.njet is not None:
            await self.njet.close()
        if self.fleet is not None:
            await asyncio.to_thread(self.fleet.close)
