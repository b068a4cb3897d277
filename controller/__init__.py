"""njet-cert-manager: keeps NJet's TLS certificates issued, renewed, applied and cleaned up
via ACME.

Layers, bottom-up. A module imports only from its own layer and the layers its layer may use;
tests/unit/test_layers.py holds the one map from module to layer and fails on a module missing
from it, on an import against these rules, and when this list or README.md's disagrees with it.

  core         errors, model, reasons, status, renewal_requests, paths, listens, certinfo,
               njetmatch, events, servernames, ports/, policy, policies/, plan, fold, render.
               Pure: no I/O, process, clock or randomness library, no call that touches a file
               or reads a clock. Uses nothing else.
  support      logs, metrics, promtext, gcpause, faultpoints, clock, threads: process-wide
               helpers (stderr, the metric set and its registry, gc, SIGKILL at named points,
               the system clock, blocking work on daemon threads); never a file or the
               network, and asyncio only in threads. Uses core.
  loading      config, config_sections, dnsconfig, storeconfig, njetconf, conffiles, desired,
               desired_source: where files are read (the TOML, its sections' models, its
               [dns] and [store] sections, njet.conf and its includes, desired state); no
               network or async library, no write. Uses core and support.
  adapters     controller/adapters/: store/ (lego store, journal, index, fsutil, lock, status
               files, runtime store), acme/, challenges/ (http-01, tls-alpn-01, http-01 through
               NJet), njet/ (API client, wire models, TLS probe), mqtt/, admin/ (HTTP server),
               hooks/ ([hooks] commands and the [notify] webhook, in background tasks), dns/
               (dns-01: solver, lookups, propagation, providers), adapters/pg/ (fleet mode's
               PostgreSQL: the fenced store and its mirror, leases, statuses, nodes, shared
               challenges, ledger, accounts, event log).
               All the network and file writes. Uses core, support and loading; a subpackage
               uses another only through a listed seam (acme -> store/fsutil and challenges,
               challenges -> njet, dns -> store/fsutil, pg -> store/lego, store/fsutil and
               store/gcconfirm).
  steps        observe (the one gatherer), execute (runs actions), apply (pushes a pair to
               NJet and proves it served), ca_fallback (one order across the CAs), reconcile
               (the loop), ari (polls the CA's renewal windows before a pass plans).
               Use core and support only: the
               store, the CA, NJet and njet.conf are reached through the Protocols of
               ports/; asyncio, but no network library, and no write.
  composition  app (builds the adapters and the loop), service (the long-running process),
               admin_backend (what the admin API answers), pass_metrics (the metrics a pass
               feeds), cli (the entry point), cli_gc (the
               gc and quarantine commands), cli_certs (certs list/delete, status), cli_show
               (certs show), cli_output (output formats, colour, reconcile's progress),
               cli_admin (asking a running controller's admin API), cli_store (store
               migrate), fleet (fleet mode's adapters wired for the loop). Uses all.
"""

__version__ = "0.1.0"
