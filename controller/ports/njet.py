"""The ports of NJet: its API (NjetReader: GET /api/v1/ssl, NjetWriter: PUT type=add) and the
TLS handshake that proves what it serves (Prober, ProbeOutcome).

Implemented by adapters/njet/ (api.py; probe.py, through app.tls_probe); called by observe.py
(get_ssl, probes) and execute.py (add_cert, the verifying probes). Part of controller/ports/
(which re-exports every name; the rules of every port are in its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from controller.model import KeyKind
from controller.njetmatch import NjetServer


class NjetReader(Protocol):
    """NJet's GET /api/v1/ssl (adapters/njet/api.py NjetClient).

    `get_ssl` returns every server block NJet runs, in config order, with its certificate
    entries (never a private key); an NJet that runs no TLS server returns (). What it lists is
    NJet's record, not what is served (the Prober tells that). Raises TemporaryError when NJet
    cannot be reached or answers 5xx, another ControllerError when the answer is not what the
    contract says; the Gatherer turns either into `Observed.njet_error`. Safe to call while an
    `add_cert` is in flight.
    """

    async def get_ssl(self) -> tuple[NjetServer, ...]: ...


class NjetWriter(Protocol):
    """NJet's PUT /api/v1/ssl type=add (adapters/njet/api.py NjetClient).

    `add_cert` pushes a certificate (leaf + chain PEM) and its key inline to the block addressed
    by `listens[0]` + `server_names[0]` (GET's own strings), for `cert_type` "rsa" or "ecc".
    Returning normally means NJet accepted it, NOT that it is served: NJet's workers apply it a
    moment later, or not at all, so every push is verified with the Prober. Raises
    TemporaryError when NJet cannot be reached (the push may or may not have landed; pushing the
    same pair again is safe), the adapter's "repeated" error (code 11: the body repeats the
    block's first dynamic certificate; the Executor is told that class as `repeated_error`),
    and another ControllerError when NJet refuses (unknown block, key and cert_type differ).
    Pushes for different blocks may run concurrently; one block gets one push at a time.
    """

    async def add_cert(
        self,
        *,
        listens: Sequence[str],
        server_names: Sequence[str],
        cert_type: str,
        cert_pem: bytes,
        key_pem: bytes,
    ) -> None: ...


class ProbeOutcome(Protocol):
    """What one TLS handshake showed: `fingerprint` of the served leaf (sha256 of its DER,
    lowercase hex, as CertInfo.fingerprint), or None with `error` saying why."""

    @property
    def fingerprint(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


class Prober(Protocol):
    """One TLS handshake with NJet's `listen` (as GET /api/v1/ssl spells it; wildcards are
    reached over loopback) with SNI `sni`, offering only `key_kind`'s cipher suites, so a
    dual-cert block shows the certificate of that type.

    Never raises for network trouble (refused, reset, alert, timeout after `timeout` seconds):
    that is a ProbeOutcome with `fingerprint` None and an `error`. Any number may run at once.
    """

    async def __call__(
        self,
        *,
        listen: str,
        sni: str,
        key_kind: KeyKind,
        timeout: float,  # noqa: ASYNC109 - the handshake's own budget, part of the contract
    ) -> ProbeOutcome: ...
