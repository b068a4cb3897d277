"""Every Protocol between the steps and the adapters, each with its contract. No implementations.

The ports are split by area, one module each, and this package re-exports every name (so
`from controller.ports import CertStore` is how the steps, app.py and the adapters import
them): store.py (the certificate store and the other files the loop keeps), issuing.py (the CA:
issuer, CA choices, renewal information), challenges.py (challenge solvers, DNS providers),
njet.py (NJet's API and the TLS probe), loop.py (desired state, pass observers, action
progress), admin.py (the admin API's backend and the values it answers with), fleet.py (fleet mode's
order gate). `Clock` is here.

Who implements what: CertStore (adapters/store/lego.py), Issuer (adapters/acme/client.py;
its CaChoices: adapters/acme/multi.py),
AriPoller (adapters/acme/ari.py),
NjetReader + NjetWriter (adapters/njet/api.py), Prober (app.tls_probe over
adapters/njet/probe.py), StatusPersistence (adapters/store/statusfile.py), RuntimeSpecs
(adapters/store/runtime.py), GcConfirmations (adapters/store/gcconfirm.py), QuarantineExpiry
(adapters/store/quarantine.py), RateLedger (adapters/store/ledger.py; adapters/pg/ledger.py
in fleet mode), OrderGate (fleet.py), ChallengeSolver + LeftoverCleaner (adapters/challenges/,
adapters/dns/solver.py), DnsProvider (adapters/dns/:
rfc2136.py, lexicon_provider.py, exec_provider.py), DesiredLoader (app.py over
desired_source.py), AdminBackend + PassObserver (admin_backend.py; the event log's PassEvents
in adapters/store/events.py is a PassObserver too), ActionProgress (cli_output.py;
tests/unit/test_cli_certs.py records one). tests/fakes.py holds an in-memory fake of each that
tests/unit/test_fakes.py checks against these Protocols (statically with mypy, and by
behaviour).

Rules for every port:
- All datetimes crossing these interfaces are timezone-aware UTC; "now" comes from one `Clock`.
- "Not found" is None (or False, or an empty result), never an exception.
- Real failures raise the errors of controller.errors: TemporaryError (worth retrying later,
  with an optional `retry_after`), PermanentError (the same request fails the same way),
  ConfigError (the operator must fix something), StoreError (the disk). Messages name the
  domain, file or address at fault and never carry private key material.
- Everything runs on one asyncio event loop. Synchronous CertStore writes are called through
  `asyncio.to_thread`, so they run in worker threads, concurrently for different domains; a
  plan holds at most one action per domain, so never two at once for the same domain.

Part of the pure core: imports only core modules, no adapter and no I/O library.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from controller.ports.admin import (
    PUBLIC_HEALTH_FIELDS,
    AdminBackend,
    CertView,
    DeleteResult,
    GcConfirmResult,
    NodeServing,
    RenewResult,
)
from controller.ports.challenges import ChallengeSolver, DnsProvider, LeftoverCleaner
from controller.ports.fleet import OrderGate
from controller.ports.issuing import (
    AriAnswer,
    AriPoller,
    AriPollerFactory,
    CaChoices,
    Issuer,
    IssuerFactory,
    Stoppable,
)
from controller.ports.loop import ActionProgress, DesiredLoader, PassObserver
from controller.ports.njet import NjetReader, NjetWriter, ProbeOutcome, Prober
from controller.ports.store import (
    CertStore,
    GcConfirmations,
    QuarantineExpiry,
    RateLedger,
    RegisteredDomain,
    RuntimeSpecs,
    StatusPersistence,
)

__all__ = [
    "PUBLIC_HEALTH_FIELDS",
    "ActionProgress",
    "AdminBackend",
    "AriAnswer",
    "AriPoller",
    "AriPollerFactory",
    "CaChoices",
    "CertStore",
    "CertView",
    "ChallengeSolver",
    "Clock",
    "DeleteResult",
    "DesiredLoader",
    "DnsProvider",
    "GcConfirmResult",
    "GcConfirmations",
    "Issuer",
    "IssuerFactory",
    "LeftoverCleaner",
    "NjetReader",
    "NjetWriter",
    "NodeServing",
    "OrderGate",
    "PassObserver",
    "ProbeOutcome",
    "Prober",
    "QuarantineExpiry",
    "RateLedger",
    "RegisteredDomain",
    "RenewResult",
    "RuntimeSpecs",
    "StatusPersistence",
    "Stoppable",
]

Clock = Callable[[], datetime]
"""Returns "now", timezone-aware UTC (the system one is controller.clock.utc_now). app.py hands
one clock to the reconciler and to every step that needs "now"; tests pass a FakeClock."""
