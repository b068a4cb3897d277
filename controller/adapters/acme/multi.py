"""CaFallbackIssuer: [acme]'s CA and the `[[acme.fallback]]` CAs behind one ports.Issuer.

Built by app.py (`CaFallbackIssuer.from_config`), also when no fallback is configured (then it
stands for one CA, and the status still records which CA issued). It has the ports.CaChoices
capability: `cas` (the directory URLs, [acme]'s first), `fallback_after` ([acme]
fallbackAfter) and `for_ca(i)`, the AcmeIssuer of CA `i`, built on first use. Which CA an
order goes to is decided by the executor (execute.py, with policies/fallback.py); `issue` on
its own orders from [acme]'s CA.

Every CA has its own account in lego's layout (`.lego/accounts/<ca host_port>/<email>/`, by
AcmeIssuer), its own caBundle, EAB and profile; the challenge solvers are shared. A fallback's
`email` unset is [acme]'s; its profileRequired and challenge type are [acme]'s. A fallback
whose caBundle cannot be read is a ConfigError naming `acme.fallback[<i>].caBundle` when it
is first needed (the primary's, as before, `[acme] caBundle`).

CaFallbackAri is its ports.AriPoller (app.py): each certificate's renewal information from
the CA that issued it, one AriClient per CA.

`revoke` asks the CAs in order until one revokes the certificate (a CA that did not issue it
refuses); when none does, the first CA's error is raised. `stop` and `close` reach every CA
built, also one built after `stop`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from controller.adapters.acme.ari import AriClient, cert_id, leaf_of
from controller.adapters.acme.checks import check_ca_bundle
from controller.adapters.acme.client import AcmeIssuer
from controller.adapters.challenges.solvers import SolverSet
from controller.config import Config, resolve_path
from controller.errors import ControllerError
from controller.model import CertificateSpec, IssuedCert, KeyType
from controller.paths import StorePaths
from controller.ports import AriAnswer


@dataclass(frozen=True)
class CaSettings:
    """One CA as the TOML describes it; `key` is how errors name its table."""

    directory_url: str
    key: str  # "[acme]" or "acme.fallback[0]"
    email: str
    ca_bundle: Path | None
    eab_kid: str = ""
    eab_hmac_key: str = ""
    profile: str = ""


def ca_settings(config: Config) -> tuple[CaSettings, ...]:
    """[acme]'s CA, then every [[acme.fallback]] entry, in the file's order."""
    acme = config.acme
    out = [CaSettings(acme.acmeCaDir.strip(), "[acme]", acme.email, config.ca_bundle,
                      acme.eabKid, acme.eabHmacKey, acme.profile)]
    for i, fb in enumerate(acme.fallback):
        out.append(CaSettings(
            fb.acmeCaDir, f"acme.fallback[{i}]",
            acme.email if fb.email is None else fb.email,
            resolve_path(config.prefix, fb.caBundle) if fb.caBundle.strip() else None,
            fb.eabKid, fb.eabHmacKey, fb.profile))
    return tuple(out)


IssuerBuilder = Callable[[int, CaSettings], AcmeIssuer]


class CaFallbackIssuer:
    """See the module docstring. Safe for concurrent issues (as AcmeIssuer is)."""

    def __init__(self, cas: Sequence[CaSettings], build: IssuerBuilder, *,
                 fallback_after: int) -> None:
        if not cas:
            raise ValueError("CaFallbackIssuer needs at least one CA")
        self.settings = tuple(cas)
        self._build = build
        self._fallback_after = fallback_after
        self._issuers: dict[int, AcmeIssuer] = {}
        self._stopped = False

    @classmethod
    def from_config(cls, config: Config, paths: StorePaths,
                    solvers: SolverSet) -> CaFallbackIssuer:
        acme = config.acme

        def build(index: int, ca: CaSettings) -> AcmeIssuer:
            if index == 0:
                return AcmeIssuer.from_config(config, paths, solvers)
            return AcmeIssuer(
                directory_url=ca.directory_url, email=ca.email, paths=paths, solvers=solvers,
                challenge_type=acme.challengeType,
                ca_bundle=check_ca_bundle(ca.ca_bundle, key=f"{ca.key}.caBundle"),
                eab_kid=ca.eab_kid, eab_hmac_key=ca.eab_hmac_key, profile=ca.profile,
                profile_required=acme.profileRequired,
            )

        return cls(ca_settings(config), build, fallback_after=acme.fallbackAfter)

    # -- ports.CaChoices -------------------------------------------------------------------------
    @property
    def cas(self) -> tuple[str, ...]:
        return tuple(ca.directory_url for ca in self.settings)

    @property
    def fallback_after(self) -> int:
        return self._fallback_after

    async def for_ca(self, index: int) -> AcmeIssuer:
        issuer = self._issuers.get(index)
        if issuer is None:
            issuer = self._build(index, self.settings[index])  # ConfigError: not kept
            if self._stopped:
                issuer.stop()
            self._issuers[index] = issuer
        return issuer

    # -- ports.Issuer ----------------------------------------------------------------------------
    async def issue(
        self, spec: CertificateSpec, key_type: KeyType, *, key_pem: bytes | None = None,
        replaces: str | None = None,
    ) -> IssuedCert:
        """An order from [acme]'s CA (the executor picks the CA through `for_ca`)."""
        primary = await self.for_ca(0)
        return await primary.issue(spec, key_type, key_pem=key_pem, replaces=replaces)

    async def revoke(self, cert_pem: bytes) -> None:
        first: ControllerError | None = None
        for index in range(len(self.settings)):
            try:
                await (await self.for_ca(index)).revoke(cert_pem)
                return
            except ControllerError as exc:
                first = first or exc
        assert first is not None
        raise first

    def stop(self) -> None:
        """No request to any CA from now on (see AcmeIssuer.stop)."""
        self._stopped = True
        for issuer in list(self._issuers.values()):
            issuer.stop()

    async def close(self) -> None:
        self.stop()
        for issuer in list(self._issuers.values()):
            await issuer.close()


class CaFallbackAri:
    """The ports.AriPoller of a CaFallbackIssuer: one AriClient per CA, built on first use over
    that CA's AcmeIssuer (`for_ca`), so a certificate is polled at the CA that issued it
    (`renewal_info(pem, ca=status.issuer_ca)`; None or a CA no longer configured: [acme]'s).
    `supported()` is [acme]'s CA's answer (the step's switch); a fallback CA whose directory
    has no renewalInfo, or that cannot be built, answers that as an AriAnswer's error."""

    def __init__(self, issuer: CaFallbackIssuer) -> None:
        self._issuer = issuer
        self._clients: dict[int, AriClient] = {}

    async def _client(self, index: int) -> AriClient:
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = AriClient(await self._issuer.for_ca(index))
        return client

    async def supported(self) -> bool:
        return await (await self._client(0)).supported()

    async def renewal_info(self, cert_pem: bytes, *, ca: str | None = None) -> AriAnswer:
        cas = self._issuer.cas
        index = cas.index(ca) if ca in cas else 0
        try:
            client = await self._client(index)
        except ControllerError as exc:  # a fallback's caBundle, say: an answer, never a raise
            try:
                leaf = leaf_of(cert_pem)
                fingerprint, ident = leaf.fingerprint(hashes.SHA256()).hex(), cert_id(leaf)
            except ValueError:
                fingerprint, ident = "", ""
            return AriAnswer(fingerprint=fingerprint, cert_id=ident, error=str(exc))
        return await client.renewal_info(cert_pem)

    async def close(self) -> None:
        for client in list(self._clients.values()):
            await client.close()
