"""AcmeIssuer: the ports.Issuer for one ACME CA and account, on top of certbot's `acme` library.

Built by app.py (`AcmeIssuer.from_config`) and called by execute.py (`issue`). acme is
synchronous, so every CA conversation runs on a daemon thread (acme/threads.py: never joined at
exit) while the challenge servers (a ports.ChallengeSolver) answer on the event loop. What
every call shares (the directory, the account, the stop flags, the timeouts) is its base class
CaConnection (acme/connection.py); this module is the order flow.

Stopping: every issue/revoke call has a stop flag that its networks check before each request
and its retry and poll waits end on (acme/network.py). It is set when the calling task is
cancelled, and for every call in flight or to come by `stop()` (on SIGTERM: service.py through
App.stop) and `close()`. Requests have connect/read timeouts (5 s / 15 s), so a CA that hangs
holds a thread no longer than that, and a stopping process never waits for it.

issue(spec, key_type, key_pem=None): fresh private key (or the one handed in: reuseKey) -> CSR
(CN = csr_common_name, SAN = names) -> newOrder -> present the solver's challenge type for each
pending authorization -> answer -> poll fast -> finalize -> download. It returns an IssuedCert
(with the profile ordered and the one the CA's order object named) and writes nothing but the
account. The solver is the SolverSet's (challenges/solvers.py) for `spec.challenge_type`, else
for [acme] challengeType: one mechanism per order, dns-01 (adapters/dns/solver.py) for every
name of a certificate holding a wildcard (its identifier is `*.x`; ACME authorizes it on `x`,
so a `.x` certificate's two authorizations both present at `_acme-challenge.x`); the profile
asked for is `spec.profile`, else [acme] profile. A
renewal's `replaces` (the old certificate's ARI identifier, RFC 9773) goes into the newOrder;
the order driver (acme/order.py) orders once more without it if the CA rejects it. The ARI
client (acme/ari.py) shares this issuer's directory, timeouts and stop flags.

The account (acme/connection.py, in lego's layout: acme/account.py) is registered once and
reused; EAB is sent when configured. A configured `profile`
([acme]'s, or a certificate's own) is looked up in the directory's meta.profiles (ACME profiles
draft): when the CA does not advertise it, the order goes without a profile (the CA's default)
and a warning is logged once per profile, unless `profileRequired` ([acme]'s, or the
certificate's own) makes that a ConfigError naming the key and the profile. Input checks are in
acme/checks.py.

Errors (acme/errors.py): transient ones are retried in place (acme/network.py), then surface as
TemporaryError(retry_after); refusals as PermanentError with the CA's detail and the failing
name; a bad caBundle, CA URL, email or EAB as ConfigError. A directory that cannot be reached at
the connection level (refused, DNS, TLS, connect timeout; also read afresh after an order's
request could not connect) is CaUnreachableError, a TemporaryError the executor falls back on at
once (acme/multi.py: [[acme.fallback]] CAs).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import requests
from acme import messages

from controller.adapters.acme.checks import check_key_matches, check_reused_key, names_of
from controller.adapters.acme.connection import CaConnection, RegisteredAccount
from controller.adapters.acme.errors import CaResponseError, to_controller_error
from controller.adapters.acme.network import CONNECT_TIMEOUT, READ_TIMEOUT
from controller.adapters.acme.order import AccountGone, OrderDriver, PollPolicy, split_chain
from controller.adapters.challenges import tls_alpn  # registers tls-alpn-01 with acme
from controller.adapters.challenges.solvers import LocalHttp01Solver, SolverSet
from controller.certinfo import generate_private_key, make_csr_pem
from controller.config import Config
from controller.errors import ConfigError, ControllerError, mark_order_placed
from controller.logs import log_event
from controller.model import CertificateSpec, ChallengeType, IssuedCert, KeyType
from controller.paths import StorePaths
from controller.ports import ChallengeSolver
from controller.threads import in_daemon_thread


class AcmeIssuer(CaConnection):
    """See the module docstring. One instance per (CA, account); safe for concurrent issues."""

    def __init__(
        self,
        *,
        directory_url: str,
        email: str,
        paths: StorePaths,
        solver: ChallengeSolver | None = None,
        solvers: SolverSet | None = None,
        challenge_type: ChallengeType | None = None,
        ca_bundle: Path | None = None,
        eab_kid: str = "",
        eab_hmac_key: str = "",
        profile: str = "",
        profile_required: bool = False,
        poll_interval: float = 0.005,
        order_timeout: float = 90.0,
        request_timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        owns_solver: bool = False,
    ) -> None:
        super().__init__(
            directory_url=directory_url, email=email, paths=paths, ca_bundle=ca_bundle,
            eab_kid=eab_kid, eab_hmac_key=eab_hmac_key, request_timeout=request_timeout,
        )
        self.profile = profile.strip()
        self.profile_required = profile_required
        self._profiles_warned: set[str] = set()  # not offered: warned once per profile
        if solvers is None:
            if solver is None:
                raise ValueError("AcmeIssuer needs a solver or a SolverSet")
            solvers = SolverSet.of(solver)
            challenge_type = challenge_type or next(iter(solvers.types))
        self.solvers = solvers
        # the challenge type of a certificate that does not choose one ([acme] challengeType)
        self.challenge_type = challenge_type or ChallengeType.HTTP
        self._policy = PollPolicy(interval=poll_interval, timeout=order_timeout)
        self._owns_solver = owns_solver

    @property
    def solver(self) -> ChallengeSolver:
        """The solver of the default challenge type ([acme] challengeType)."""
        return self.solvers.get(self.challenge_type)

    @classmethod
    def from_config(
        cls, config: Config, paths: StorePaths, solvers: SolverSet | None = None
    ) -> AcmeIssuer:
        """From the [acme] section; without `solvers`, the controller's own http-01 and
        tls-alpn-01 servers (owned: closed with the issuer)."""
        acme = config.acme
        owns = solvers is None
        if solvers is None:
            solvers = SolverSet({
                ChallengeType.HTTP: lambda: LocalHttp01Solver(acme.httpChallengeServerAddress),
                ChallengeType.TLS: lambda: tls_alpn.LocalTlsAlpn01Solver(
                    acme.tlsChallengeServerAddress),
            })
        return cls(
            directory_url=acme.acmeCaDir,
            email=acme.email,
            paths=paths,
            solvers=solvers,
            challenge_type=acme.challengeType,
            ca_bundle=config.ca_bundle,
            eab_kid=acme.eabKid,
            eab_hmac_key=acme.eabHmacKey,
            profile=acme.profile,
            profile_required=acme.profileRequired,
            owns_solver=owns,
        )

    # -- the port ------------------------------------------------------------------------------
    async def issue(
        self, spec: CertificateSpec, key_type: KeyType, *, key_pem: bytes | None = None,
        replaces: str | None = None,
    ) -> IssuedCert:
        names = names_of(spec)
        context = f"ordering a certificate for {', '.join(names)}"
        started = time.monotonic()
        reused = key_pem is not None
        if key_pem is not None:
            check_reused_key(key_pem, key_type, names)
        with self._stop_flags.flag() as stop:
            try:
                directory = await self._get_directory(stop)
                profile = self._profile_to_order(directory, spec)
                solver = self.solvers.get(spec.challenge_type or self.challenge_type)
                account = await self._get_account(directory, stop)
                if key_pem is None:
                    key_pem = await in_daemon_thread(generate_private_key, key_type)
                csr_pem = make_csr_pem(key_pem, names)
                fullchain, cert_url, ca_profile = await self._order(
                    directory, account, csr_pem, stop, solver=solver, profile=profile,
                    replaces=replaces)
            except asyncio.CancelledError:
                stop.set()  # the thread in flight sends nothing more and ends its waits
                raise
            except ControllerError:
                raise
            except requests.exceptions.ConnectionError as exc:  # after the directory was read
                raise await self._unreachable_or(exc, context, stop) from exc
            except Exception as exc:
                raise to_controller_error(exc, context=context, ca_url=self.directory_url) from exc
        leaf, chain = split_chain(fullchain)
        check_key_matches(leaf, key_pem, names)
        log_event(
            "certificate issued", names=",".join(names), key_type=key_type.value,
            key="reused" if reused else "new", seconds=round(time.monotonic() - started, 3),
            ca=self.directory_url, profile=profile or None,
        )
        return IssuedCert(cert_pem=fullchain, issuer_pem=chain, key_pem=key_pem,
                          cert_url=cert_url, profile=profile, ca_profile=ca_profile)

    async def revoke(self, cert_pem: bytes, *, reason: int = 0) -> None:
        """Revoke a certificate issued to this account; already revoked is fine."""
        try:
            with self._stop_flags.flag() as stop:
                try:
                    directory = await self._get_directory(stop)
                    account = await self._get_account(directory, stop)
                    driver = self._driver(directory, account, stop)
                    try:
                        await in_daemon_thread(driver.revoke, cert_pem, reason)
                    finally:
                        driver.close()
                except asyncio.CancelledError:
                    stop.set()
                    raise
        except CaResponseError as exc:
            if exc.code != "alreadyRevoked":
                raise to_controller_error(
                    exc, context="revoking a certificate", ca_url=self.directory_url
                ) from exc
        except ControllerError:
            raise
        except Exception as exc:
            raise to_controller_error(
                exc, context="revoking a certificate", ca_url=self.directory_url
            ) from exc


    async def close(self) -> None:
        self.stop()
        if self._owns_solver:
            await self.solvers.close()

    # -- order ---------------------------------------------------------------------------------
    async def _order(
        self, directory: messages.Directory, account: RegisteredAccount, csr_pem: bytes,
        stop: threading.Event, *, solver: ChallengeSolver, profile: str,
        replaces: str | None = None,
    ) -> tuple[bytes, str, str | None]:
        """(full chain, certificate URL, the profile the CA's order object names or None)."""
        driver = self._driver(directory, account, stop)
        try:
            try:
                orderr = await in_daemon_thread(driver.new_order, csr_pem, profile, replaces)
            except AccountGone:
                driver.close()
                account = await self._register_again(directory, account, stop)
                driver = self._driver(directory, account, stop)
                orderr = await in_daemon_thread(driver.new_order, csr_pem, profile, replaces)
            pending = driver.pending_challenges(orderr, solver.challenge_type, account.key)
            presented = []
            try:
                for ch in pending:
                    await solver.present(ch.domain, ch.token, ch.key_authorization)
                    presented.append(ch)
                fullchain, url = await in_daemon_thread(
                    driver.complete, orderr, pending, account.key)
                return fullchain, url, (getattr(orderr.body, "profile", None) or None)
            finally:
                for ch in presented:
                    await solver.cleanup(ch.domain, ch.token, ch.key_authorization)
        except BaseException as exc:
            if driver.order_placed:  # the rate-limit ledger counts this order
                mark_order_placed(exc)
            raise
        finally:
            driver.close()

    def _driver(
        self, directory: messages.Directory, account: RegisteredAccount, stop: threading.Event
    ) -> OrderDriver:
        net = self._network(account.key, account.alg, stop)
        net.account = messages.RegistrationResource(uri=account.uri, body=messages.Registration())
        return OrderDriver(directory, net, policy=self._policy)


    def _profile_to_order(self, directory: messages.Directory, spec: CertificateSpec) -> str:
        """The profile the newOrder asks for ("": none). A wanted profile the directory does
        not advertise is a ConfigError naming the key when required, else a warning (once
        per profile) and "" (the CA's default profile)."""
        if spec.profile:
            profile, key = spec.profile, f'[certificates."{spec.domain}"] profile'
        else:
            profile, key = self.profile, "[acme] profile"
        if not profile:
            return ""
        offered: dict[str, str] = dict(getattr(directory.meta, "profiles", None) or {})
        if profile in offered:
            return profile
        what = f"it offers: {', '.join(sorted(offered))}" if offered else "it offers none"
        required = self.profile_required if spec.profile_required is None \
            else spec.profile_required
        if required:
            raise ConfigError(
                f"{key} {profile!r} is not offered by the CA at {self.directory_url} ({what})"
            )
        if profile not in self._profiles_warned:
            self._profiles_warned.add(profile)
            log_event("the CA does not offer the profile: ordering with its default profile"
                      " (profileRequired = true refuses instead)", level=logging.WARNING,
                      key=key, profile=profile, ca=self.directory_url, offered=what)
        return ""
