"""The CA side every call of one AcmeIssuer shares: the directory, the account, the stop flags
and the request timeouts.

`CaConnection` is AcmeIssuer's base class (acme/client.py holds the order flow); the ARI client
(acme/ari.py) reads `directory()`, `stop_flag()` and `request_timeout` through the issuer.
Its blocking parts run on daemon threads (acme/threads.py), each request checking its call's
stop flag (acme/network.py).

The directory is fetched once; a fetch answered with a Retry-After is not repeated before it
(TemporaryError). One that cannot be reached at the connection level (refused, DNS, TLS,
connect timeout) is CaUnreachableError, a TemporaryError the executor falls back on at once
(acme/multi.py: [[acme.fallback]] CAs); an order's request that could not connect reads it
afresh (`_unreachable_or`) to tell the two apart. The account lives in lego's layout
(acme/account.py): registered once, reused (also when lego wrote it), registered again when the
CA answers accountDoesNotExist (Pebble forgets accounts on restart). EAB (eabKid + base64url
eabHmacKey) is sent when configured; a CA that requires it without, or rejects it, is a
ConfigError naming the key.
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
from controller.adapters.acme.checks import check_ca_bundle, check_url
from controller.adapters.acme.errors import (
    CaResponseError,
    describe_network_error,
    to_controller_error,
)
from controller.adapters.acme.network import AcmeNetwork
from controller.adapters.acme.threads import StopFlags
from controller.errors import CaUnreachableError, ConfigError, ControllerError, TemporaryError
from controller.logs import log_event
from controller.paths import StorePaths
from controller.threads import in_daemon_thread

_EAB_REJECTED = frozenset({"unauthorized", "malformed", "badSignatureAlgorithm"})


@dataclass(frozen=True)
class RegisteredAccount:
    key: JWK
    alg: JWASignature
    key_pem: bytes
    uri: str


class CaConnection:
    """The directory, account, stop flags and timeouts of one (CA, account); see the module
    docstring. AcmeIssuer (acme/client.py) builds on it."""

    def __init__(
        self,
        *,
        directory_url: str,
        email: str,
        paths: StorePaths,
        ca_bundle: Path | None,
        eab_kid: str,
        eab_hmac_key: str,
        request_timeout: tuple[float, float],
    ) -> None:
        self.directory_url = check_url(directory_url)
        self.email = validate_email(email)
        self.ca_bundle = check_ca_bundle(ca_bundle)
        self._eab_kid, self._eab_hmac_key = check_eab(eab_kid, eab_hmac_key)
        self.files: AccountFiles = account_files(paths, self.directory_url, self.email)
        self._request_timeout = request_timeout
        self._directory: messages.Directory | None = None
        # (monotonic time, error) of a directory fetch answered with a Retry-After
        self._directory_retry: tuple[float, str] = (0.0, "")
        self._account: RegisteredAccount | None = None
        self._lock = asyncio.Lock()
        self._stop_flags = StopFlags()

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


    def _network(self, key: JWK | None, alg: JWASignature, stop: threading.Event) -> AcmeNetwork:
        return AcmeNetwork(key, alg=alg, verify=self.ca_bundle, stop=stop,
                           timeout=self._request_timeout)

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

    # -- account -------------------------------------------------------------------------------
    async def _get_account(
        self, directory: messages.Directory, stop: threading.Event
    ) -> RegisteredAccount:
        if self._account is None:
            async with self._lock:
                if self._account is None:
                    self._account = await in_daemon_thread(
                        self._load_or_register, directory, stop)
        return self._account

    async def _register_again(
        self, directory: messages.Directory, stale: RegisteredAccount, stop: threading.Event
    ) -> RegisteredAccount:
        async with self._lock:
            if self._account is None or self._account.uri == stale.uri:
                log_event(
                    "the CA no longer knows the ACME account; registering again",
                    level=logging.WARNING, ca=self.directory_url, account=stale.uri,
                )
                self._account = await in_daemon_thread(
                    self._register, directory, stale.key_pem, stop)
            return self._account

    def _load_or_register(
        self, directory: messages.Directory, stop: threading.Event
    ) -> RegisteredAccount:
        stored = load_account(self.files)
        if stored is not None and stored.uri:
            key, alg = jwk_for(stored.key_pem, self.files.key)
            return RegisteredAccount(key=key, alg=alg, key_pem=stored.key_pem, uri=stored.uri)
        if stored is None:
            key_pem = new_account_key()
            save_key(self.files, key_pem)  # before registering: a registered key is never lost
        else:
            key_pem = stored.key_pem
        return self._register(directory, key_pem, stop)

    def _register(
        self, directory: messages.Directory, key_pem: bytes, stop: threading.Event
    ) -> RegisteredAccount:
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
        return RegisteredAccount(key=key, alg=alg, key_pem=key_pem, uri=uri)
