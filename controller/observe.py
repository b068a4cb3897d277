"""The one gatherer: store + NJet's GET /api/v1/ssl + TLS probes → Observed.

Called by reconcile.py at the start of every pass (probing only when asked: after start, on
NJet's start/reload events and at the periodic resync — never on every pass). Never raises for
an unreachable NJet: that becomes `Observed.njet_error`, and the plan waits. The store scan
runs off the event loop (threads.off_loop).

Everything is keyed by the store key (desired.specs' keys): the two certificates of a dual block
(`<name>` and `<name>@<slot>`) have the same NJet block and are probed each on its own, with the
key type of its own key (an RSA-only or an ECDSA-capable handshake: adapters/njet/probe.py); a
dual block's config certificate says nothing about its key types (both are configured).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controller.certinfo import key_type_of_cert
from controller.errors import ControllerError
from controller.logs import log_event
from controller.model import Desired, KeyType, NjetTarget, Observed, ServedCert
from controller.njetmatch import MatchStatus, NjetServer, match_blocks, match_server
from controller.plan import wanted_key_type
from controller.policy import PolicySettings
from controller.ports import CertStore, NjetReader, Prober
from controller.threads import off_loop


@dataclass
class Gatherer:
    """Builds one pass's Observed from the store, NJet's record and (when asked) probes.

    `njet` None is store-only mode: no NJet view, no probes. Bootstrap certificate key types
    are cached by file mtime, so an unchanged njet.conf block costs one stat per pass.
    """

    store: CertStore
    settings: PolicySettings
    njet: NjetReader | None = None
    prober: Prober | None = None
    probe_timeout: float = 5.0
    _bootstrap: dict[str, tuple[int, KeyType | None]] = field(default_factory=dict)

    async def observe(self, desired: Desired, *, probe: bool = False) -> Observed:
        stored, problems = await off_loop(self.store.load_all)  # a store scan: off the loop
        bootstrap = self._bootstrap_types(desired)
        if self.njet is None:
            return Observed(stored=stored, problems=problems, bootstrap_key_types=bootstrap)
        try:
            servers = await self.njet.get_ssl()
        except ControllerError as exc:
            return Observed(stored=stored, problems=problems, bootstrap_key_types=bootstrap,
                            njet_error=str(exc))
        targets, unmatched, njet_types = match_all(desired, servers)
        # blocks announced at runtime have no bootstrap file we can read: NJet's GET says
        # which key type the block's config certificate has
        bootstrap = {**njet_types, **bootstrap}
        served: dict[str, ServedCert] = {}
        if probe and self.prober is not None:
            served = await self._probe(desired, targets, bootstrap)
        return Observed(
            stored=stored,
            problems=problems,
            bootstrap_key_types=bootstrap,
            njet_targets=targets,
            njet_unmatched=unmatched,
            served=served,
        )

    def _bootstrap_types(self, desired: Desired) -> dict[str, KeyType]:
        out: dict[str, KeyType] = {}
        for domain, spec in desired.specs.items():
            if not spec.bootstrap_cert:
                continue
            kt = self._bootstrap_type(spec.bootstrap_cert)
            if kt is not None:
                out[domain] = kt
        return out

    def _bootstrap_type(self, path: str) -> KeyType | None:
        try:
            mtime = Path(path).stat().st_mtime_ns
        except OSError:
            return None
        cached = self._bootstrap.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            kt = key_type_of_cert(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            log_event("bootstrap certificate unreadable", level=logging.DEBUG, path=path,
                      error=str(exc))
            kt = None
        self._bootstrap[path] = (mtime, kt)
        return kt

    async def _probe(
        self,
        desired: Desired,
        targets: Mapping[str, tuple[NjetTarget, ...]],
        bootstrap: Mapping[str, KeyType],
    ) -> dict[str, ServedCert]:
        assert self.prober is not None
        prober = self.prober

        async def one(domain: str, blocks: tuple[NjetTarget, ...]) -> ServedCert:
            spec = desired.specs[domain]
            kind = wanted_key_type(spec, bootstrap, self.settings).njet_cert_type
            results = await asyncio.gather(
                *(prober(listen=t.listens[0], sni=spec.names[0], key_kind=kind,
                         timeout=self.probe_timeout) for t in blocks)
            )
            fps = {r.fingerprint for r in results}
            errors = "; ".join(r.error for r in results if r.error)
            listen = blocks[0].listens[0]
            if len(fps) == 1:
                return ServedCert(domain, listen, results[0].fingerprint, errors or None)
            return ServedCert(domain, listen, None, "the blocks serve different certificates")

        results = await asyncio.gather(*(one(d, t) for d, t in targets.items()))
        return {r.domain: r for r in results}


def match_all(
    desired: Desired, servers: Sequence[NjetServer]
) -> tuple[dict[str, tuple[NjetTarget, ...]], dict[str, str], dict[str, KeyType]]:
    """Each desired certificate's running block(s) (a merged spec may span several), why the
    others have none, and the key type of each matched block's config certificate."""
    targets: dict[str, tuple[NjetTarget, ...]] = {}
    unmatched: dict[str, str] = {}
    types: dict[str, KeyType] = {}
    for domain, spec in desired.specs.items():
        m = match_server(spec, servers)
        if m.status is MatchStatus.FOUND:
            targets[domain] = (NjetTarget(tuple(m.listens), tuple(m.server_names)),)
            if m.server is not None and m.server.certificates and not spec.dual:
                first = m.server.certificates[0].cert_type
                types[domain] = KeyType.EC256 if first == "ecc" else KeyType.RSA2048
            continue
        blocks = match_blocks(spec, servers) if m.status is MatchStatus.AMBIGUOUS else ()
        if blocks:
            targets[domain] = tuple(NjetTarget(tuple(b.listens), tuple(b.server_names))
                                    for b in blocks)
        else:
            unmatched[domain] = m.reason or m.status.value
    return targets, unmatched, types
