"""AcmeIssuer: the ports.Issuer for one ACME CA and account, on top of certbot's `acme` library.

Built by app.py (`AcmeIssuer.from_config`) and called by execute.py (`issue`). acme is
synchronous, so every CA conversation runs on a daemon thread (acme/threads.py: never joined at
exit) while the challenge servers (a ports.ChallengeSolver) answer on the event loop.

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

The account lives in lego's layout (acme/account.py): registered once, reused (also when lego
wrote it), registered again when the CA answers accountDoesNotExist (Pebble forgets accounts on
restart). EAB (eabKid + base64url eabHmacKey) is sent when configured. A configured `profile`
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
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from josepy.jwa import RS256, JWASignature
from josepy.jwk import JWK

from controller.adapters.acme.account import (
    AccountFiles,
    account_files,
    check_eab,
    jwk_for,
    load_account,
    new_account_key,
    registration_body,
    save_key,
    save_registration,
    validate_email,
)
from controller.adapters.acme.checks import (
    check_ca_bundle,
    check_key_matches,
    check_reused_key,
    check_url,
    names_of,
)
from controller.adapters.acme.errors import (
    CaResponseError,
    describe_network_error,
    to_controller_error,
)
from controller.adapters.acme.network import CONNECT_TIMEOUT, READ_TIMEOUT, AcmeNetwork
from controller.adapters.acme.order import AccountGone, OrderDriver, PollPolicy, split_chain
from controller.adapters.acme.threads import StopFlags
from controller.adapters.challenges import tls_alpn  # registers tls-alpn-01 with acme
from controller.adapters.challenges.solvers import LocalHttp01Solver, SolverSet
from controller.certinfo import generate_private_key, make_csr_pem
from controller.config import Config
from controller.errors import (
    CaUnreachableError,
    ConfigError,
    ControllerError,
    TemporaryError,
    mark_order_placed,
)
from controller.logs import log_event
from controller.model import CertificateSpec, ChallengeType, IssuedCert, KeyType
from controller.paths import StorePaths
from controller.ports import ChallengeSolver
from controller.threads import in_daemon_thread

_EAB_REJECTED = frozenset({"unauthorized", "malformed", "badSignatureAlgorithm"})


@dataclass(frozen=True)
class _Account:
    key: JWK
    alg: JWASignature
    key_pem: bytes
    uri: str


class AcmeIssuer:
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
        self.directory_url = check_url(directory_url)
        self.email = validate_email(email)
        self.ca_bundle = check_ca_bundle(ca_bundle)
        self._eab_kid, self._eab_hmac_key = check_eab(eab_kid, eab_hmac_key)
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
        self.files: AccountFiles = account_files(paths, self.directory_url, self.email)
        self._policy = PollPolicy(interval=poll_interval, timeout=order_timeout)
        self._request_timeout = request_timeout
        self._owns_solver = owns_solver
        self._directory: messages.Directory | None = None
        # (monotonic time, error) of a directory fetch answered with a Retry-After
        self._directory_retry: tuple[float, str] = (0.0, "")
        self._account: _Account | None = None
        self._lock = asyncio.Lock()
        self._stop_flags = StopFlags()

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

    async def directory(self) -> messages.Directory:
        """The CA's directory, fetched once and shared (the ARI client, acme/ari.py, reads
        renewalInfo from it). Raises TemporaryError when it cannot be read."""
        with self._stop_flags.flag() as stop:
            return await self._get_directory(stop)

    def stop_flag(self) -> AbstractContextManager[threading.Event]:
        """A stop flag for one call to this issuer's CA made by a helper (the ARI client)."""
        return self._stop_flags.flag()

    @property
    def request_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds of every request to the CA."""
        return self._request_timeout

    def stop(self) -> None:
        """The process is stopping: from now on no request goes to the CA. Calls in flight end
        at their next request or wait (TemporaryError "stopping"); a thread blocked in a read
        is left to its timeout (it is a daemon thread). Safe to call from a signal handler."""
        self._stop_flags.stop()

    async def close(self) -> None:
        self.stop()
        if self._owns_solver:
            await self.solvers.close()

    # -- order ---------------------------------------------------------------------------------
    async def _order(
        self, directory: messages.Directory, account: _Account, csr_pem: bytes,
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

    def _network(self, key: JWK | None, alg: JWASignature, stop: threading.Event) -> AcmeNetwork:
        return AcmeNetwork(key, alg=alg, verify=self.ca_bundle, stop=stop,
                           timeout=self._request_timeout)

    def _driver(
        self, directory: messages.Directory, account: _Account, stop: threading.Event
    ) -> OrderDriver:
        net = self._network(account.key, account.alg, stop)
        net.account = messages.RegistrationResource(uri=account.uri, body=messages.Registration())
        return OrderDriver(directory, net, policy=self._policy)

    # -- directory -----------------------------------------------------------------------------
    async def _get_directory(self, stop: threading.Event) -> messages.Directory:
        """The directory, fetched once. A fetch answered with a Retry-After is not repeated
        before it (the ARI step and an order in the same pass ask the CA once, not twice)."""
        if self._directory is None:
            async with self._lock:
                if self._directory is None:
                    left = self._directory_retry[0] - time.monotonic()
                    if left > 0:
                        raise TemporaryError(self._directory_retry[1], retry_after=left)
                    try:
                        self._directory = await in_daemon_thread(self._fetch_directory, stop)
                    except TemporaryError as exc:
                        if exc.retry_after:
                            self._directory_retry = (time.monotonic() + exc.retry_after,
                                                     str(exc))
                        raise
        return self._directory

    async def _unreachable_or(
        self, exc: requests.exceptions.ConnectionError, context: str, stop: threading.Event
    ) -> ControllerError:
        """A request of an order could not connect: the directory is read afresh, and when
        that cannot connect either the CA is unreachable (CaUnreachableError), else the error
        is the usual TemporaryError."""
        self._directory = None
        err = to_controller_error(exc, context=context, ca_url=self.directory_url)
        try:
            await self._get_directory(stop)
        except CaUnreachableError:
            return CaUnreachableError(str(err))
        except ControllerError:
            pass
        return err

    def _fetch_directory(self, stop: threading.Event) -> messages.Directory:
        net = self._network(None, RS256, stop)
        try:
            directory = acme_client.ClientV2.get_directory(self.directory_url, net)
        except ControllerError:  # stopping
            raise
        except requests.exceptions.RequestException as exc:
            # refused, DNS, TLS or connect timeout: unreachable (the next CA is tried at once)
            unreachable = isinstance(exc, requests.exceptions.ConnectionError)
            raise (CaUnreachableError if unreachable else TemporaryError)(
                f"cannot load the ACME directory {self.directory_url}:"
                f" {describe_network_error(exc)}"
            ) from exc
        except CaResponseError as exc:
            raise TemporaryError(
                f"cannot load the ACME directory {self.directory_url}: {exc.describe()}",
                retry_after=exc.retry_after,
            ) from exc
        except Exception as exc:  # not JSON, not a directory object
            raise TemporaryError(
                f"cannot load the ACME directory {self.directory_url}: {type(exc).__name__}:"
                f" {' '.join(str(exc).split())[:200]}; check acmeCaDir"
            ) from exc
        finally:
            net.close()
        for field in ("newNonce", "newAccount", "newOrder"):
            try:
                directory[field]
            except KeyError:
                raise TemporaryError(
                    f"{self.directory_url} is not an ACME directory (no {field}); check acmeCaDir"
                ) from None
        return directory

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

    # -- account -------------------------------------------------------------------------------
    async def _get_account(
        self, directory: messages.Directory, stop: threading.Event
    ) -> _Account:
        if self._account is None:
            async with self._lock:
                if self._account is None:
                    self._account = await in_daemon_thread(
                        self._load_or_register, directory, stop)
        return self._account

    async def _register_again(
        self, directory: messages.Directory, stale: _Account, stop: threading.Event
    ) -> _Account:
        async with self._lock:
            if self._account is None or self._account.uri == stale.uri:
                log_event(
                    "the CA no longer knows the ACME account; registering again",
                    level=logging.WARNING, ca=self.directory_url, account=stale.uri,
                )
                self._account = await in_daemon_thread(
                    self._register, directory, stale.key_pem, stop)
            return self._account

    def _load_or_register(self, directory: messages.Directory, stop: threading.Event) -> _Account:
        stored = load_account(self.files)
        if stored is not None and stored.uri:
            key, alg = jwk_for(stored.key_pem, self.files.key)
            return _Account(key=key, alg=alg, key_pem=stored.key_pem, uri=stored.uri)
        if stored is None:
            key_pem = new_account_key()
            save_key(self.files, key_pem)  # before registering: a registered key is never lost
        else:
            key_pem = stored.key_pem
        return self._register(directory, key_pem, stop)

    def _register(
        self, directory: messages.Directory, key_pem: bytes, stop: threading.Event
    ) -> _Account:
        key, alg = jwk_for(key_pem, self.files.key)
        eab: dict[str, Any] | None = None
        if self._eab_kid:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(), kid=self._eab_kid,
                hmac_key=self._eab_hmac_key, directory=directory,
            )
        elif getattr(directory.meta, "external_account_required", False):
            raise ConfigError(
                f"the CA at {self.directory_url} requires external account binding:"
                " set [acme] eabKid and eabHmacKey"
            )
        registration = messages.NewRegistration.from_data(
            email=self.email or None, terms_of_service_agreed=True, external_account_binding=eab
        )
        net = self._network(key, alg, stop)
        try:
            regr = acme_client.ClientV2(directory, net).new_account(registration)
            uri: str = regr.uri
            body = registration_body(regr.body)
        except acme_errors.ConflictError as exc:  # this key already has an account
            uri, body = exc.location, {"status": "valid"}
        except CaResponseError as exc:
            if self._eab_kid and exc.code in _EAB_REJECTED:
                raise ConfigError(
                    f"the CA at {self.directory_url} rejected the external account binding"
                    f" (eabKid {self._eab_kid!r}): {exc.describe()}"
                ) from None
            raise to_controller_error(
                exc, context="registering the ACME account", ca_url=self.directory_url
            ) from exc
        finally:
            net.close()
        save_registration(self.files, self.email, uri, body)
        log_event("acme account registered", account=uri, ca=self.directory_url)
        return _Account(key=key, alg=alg, key_pem=key_pem, uri=uri)
