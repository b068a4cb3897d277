"""Applying a pair to NJet and proving it is served: a PUT per block, then TLS handshakes until
the pair's fingerprint shows.

Used by execute.py: the Executor applies every new or stored pair through an Applier (built
from its own fields for each apply). NJet's code 0 — or 11, "repeated" — proves nothing, so
every push is verified by a real handshake (ports.Prober) offering only the key type pushed,
up to VERIFY_ATTEMPTS times (NJet's workers apply a moment after the agent answers); a push
NJet cannot be reached for is retried up to APPLY_ATTEMPTS times. Code 11 while something else
is served is NJet's trap for the first certificate ever pushed to a block: ApplyTrapError, out
of which only a fresh key and certificate get (is_trap tells the Executor so). Its fault points
keep the names execute.after_apply and execute.after_verify. A step: NJet is reached only
through ports.NjetWriter and ports.Prober.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from controller.certinfo import key_matches_cert
from controller.errors import ConfigError, ControllerError, PermanentError, TemporaryError
from controller.faultpoints import fault_point, register
from controller.model import KeyKind, KeyType, NjetTarget
from controller.ports import NjetWriter, Prober

register("execute.after_apply", "execute.after_verify")

APPLY_ATTEMPTS = 3
APPLY_RETRY_DELAY = 0.2
VERIFY_ATTEMPTS = 4
VERIFY_DELAY = 0.15


@dataclass(frozen=True)
class Applier:
    """Pushes pairs with `njet` and proves them served with `prober` (None: every apply fails
    with a ConfigError), each handshake within `probe_timeout` seconds. `repeated_error` is the
    NjetWriter's "repeated" (code 11) error class; `sleep` waits between apply attempts and
    verify handshakes (tests pass a no-op)."""

    njet: NjetWriter
    prober: Prober | None
    probe_timeout: float
    repeated_error: type[BaseException] | None
    sleep: Callable[[float], Awaitable[None]]

    async def apply_all(
        self,
        targets: Sequence[NjetTarget],
        sni: str,
        key_type: KeyType,
        cert_pem: bytes,
        key_pem: bytes,
        fingerprint: str,
    ) -> str:
        """Apply to every block of the certificate (one after the other, each verified)."""
        served = ""
        for target in targets:
            served = await self._apply(target, sni, key_type, cert_pem, key_pem, fingerprint)
        return served

    async def _apply(
        self,
        target: NjetTarget,
        sni: str,
        key_type: KeyType,
        cert_pem: bytes,
        key_pem: bytes,
        fingerprint: str,
    ) -> str:
        """PUT the pair inline, then prove it is served; returns the served fingerprint."""
        if not key_matches_cert(key_pem, cert_pem):
            raise PermanentError("refusing to push a certificate whose key does not match")
        last: str = "not attempted"
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            repeated = False
            try:
                await self.njet.add_cert(listens=target.listens, server_names=target.server_names,
                                         cert_type=key_type.njet_cert_type, cert_pem=cert_pem,
                                         key_pem=key_pem)
            except TemporaryError as exc:
                last = str(exc)
                await self.sleep(APPLY_RETRY_DELAY * attempt)
                continue
            except ControllerError as exc:
                if self.repeated_error is not None and isinstance(exc, self.repeated_error):
                    repeated = True
                else:
                    raise
            fault_point("execute.after_apply")
            served = await self._verify(target.listens[0], sni, key_type.njet_cert_type,
                                        fingerprint)
            if served == fingerprint:
                fault_point("execute.after_verify")
                return served
            shown = served[:16] if served else "no certificate (handshake failed)"
            last = f"NJet {'answered repeated' if repeated else 'accepted it'} but serves {shown}"
            if repeated:
                raise ApplyTrapError(last + "; only a fresh key and certificate get out of this")
        raise TemporaryError(f"apply to {target.listens[0]} {sni} failed: {last}")

    async def _verify(self, listen: str, sni: str, kind: KeyKind, expected: str) -> str | None:
        """Handshake until `expected` is served (NJet's workers apply a moment after the
        agent answers) or the attempts run out; returns the last fingerprint seen."""
        if self.prober is None:
            raise ConfigError("no TLS prober configured: cannot verify an apply")
        served: str | None = None
        for i in range(VERIFY_ATTEMPTS):
            res = await self.prober(listen=listen, sni=sni, key_kind=kind,
                                    timeout=self.probe_timeout)
            served = res.fingerprint
            if served == expected:
                return served
            await self.sleep(VERIFY_DELAY * (i + 1))
        return served


class ApplyTrapError(TemporaryError):
    """NJet answers code 11 for the first cert ever pushed to a block, which it does not serve."""


def is_trap(exc: BaseException) -> bool:
    return isinstance(exc, ApplyTrapError)
