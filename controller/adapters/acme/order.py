"""One ACME order, driven synchronously with fast polling; runs in a worker thread.

Used only by acme/client.py (AcmeIssuer), which calls, each on a daemon thread (acme/threads.py):
`new_order` -> (then presents the challenges itself on the event loop) -> `complete` (answer the
challenges, poll the authorizations, finalize, poll the order, download the chain).
`new_order` builds the newOrder body itself (`NewOrder`: acme's, plus RFC 9773's `replaces`)
and, when the CA rejects `replaces`, orders once more without it.

acme's own poll_and_finalize sleeps about a second per step; here every wait starts at
`PollPolicy.interval` (5 ms by default) and grows by `growth` up to `max_interval`, bounded by
`timeout`, so a local CA issues in a few hundred milliseconds. The network's stop flag (set when
the calling task is cancelled or the process stops) ends a poll wait at once, and the network
layer sends no request once it is set; both raise TemporaryError "stopping".
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from acme import client as acme_client
from acme import crypto_util, messages
from cryptography import x509
from josepy import json_util
from josepy.jwk import JWK

from controller.adapters.acme.errors import CaResponseError, problem_code
from controller.adapters.acme.network import AcmeNetwork
from controller.errors import PermanentError, TemporaryError, ValidationFailed
from controller.logs import log_event

_PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----\r?\n?", re.DOTALL
)
_PEM_CHAIN = "application/pem-certificate-chain"


class NewOrder(messages.NewOrder):
    """acme's newOrder body with RFC 9773's `replaces` (omitted when None)."""

    replaces: str | None = json_util.field("replaces", omitempty=True)


def replaces_rejected(exc: CaResponseError) -> bool:
    """The CA refused an order because of its `replaces` (alreadyReplaced, a 409, a problem
    naming it), not for a reason an order without it would share (rate limits, 5xx, nonces,
    an unknown account)."""
    if (exc.code in ("badNonce", "rateLimited", "accountDoesNotExist", "serverInternal")
            or exc.http_status >= 500 or exc.http_status == 429):
        return False
    return (exc.code == "alreadyReplaced" or exc.http_status == 409
            or "replace" in exc.detail.lower())


class AccountGone(Exception):
    """The CA does not know our account (e.g. Pebble restarted): register again."""


@dataclass(frozen=True)
class PollPolicy:
    # a local CA answers within milliseconds; a public one takes seconds, where this grows to
    # about nine polls in the first two seconds
    interval: float = 0.005
    max_interval: float = 1.0
    growth: float = 1.8
    timeout: float = 90.0


@dataclass(frozen=True)
class PendingChallenge:
    domain: str
    token: str
    key_authorization: str
    authz: messages.AuthorizationResource
    challenge: messages.ChallengeBody


def split_chain(fullchain: bytes) -> tuple[bytes, bytes]:
    """(leaf PEM, the rest of the chain PEM) of what the CA returned."""
    blocks = _PEM_CERT_RE.findall(fullchain)
    if not blocks:
        raise TemporaryError("the CA returned no PEM certificate")
    fixed = [b if b.endswith(b"\n") else b + b"\n" for b in blocks]
    return fixed[0], b"".join(fixed[1:])


class OrderDriver:
    """Talks to the CA for one order with one account (one HTTP session)."""

    def __init__(
        self,
        directory: messages.Directory,
        net: AcmeNetwork,
        *,
        policy: PollPolicy,
    ) -> None:
        self.net = net
        self.client = acme_client.ClientV2(directory, net)
        self._nonce_url: str = directory["newNonce"]
        self._policy = policy
        self._abort = net.stop
        # the CA accepted a newOrder: an error after it still spends the rate-limit budget
        self.order_placed = False

    def close(self) -> None:
        self.net.close()

    def new_order(self, csr_pem: bytes, profile: str | None,
                  replaces: str | None = None) -> messages.OrderResource:
        """newOrder for the CSR's names, with `profile` and (a renewal) `replaces`, the ARI
        identifier of the certificate it replaces (RFC 9773 §5). A CA that rejects `replaces`
        (replaces_rejected: already replaced, not known) gets the order once more without it."""
        try:
            if replaces:
                try:
                    return self._new_order(csr_pem, profile, replaces)
                except CaResponseError as exc:
                    if not replaces_rejected(exc):
                        raise
                    log_event("the CA rejected the order's replaces; ordering without it",
                              level=logging.WARNING, replaces=replaces, error=exc.describe())
            return self._new_order(csr_pem, profile, None)
        except CaResponseError as exc:
            if exc.code == "accountDoesNotExist":
                raise AccountGone(exc.detail) from exc
            raise

    def _new_order(self, csr_pem: bytes, profile: str | None,
                   replaces: str | None) -> messages.OrderResource:
        """acme's ClientV2.new_order, with `replaces` in the body (acme's NewOrder lacks it)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        dns_names, ips = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n)
                       for n in dns_names]
        identifiers += [messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(ip))
                        for ip in ips]
        body = NewOrder(identifiers=identifiers, profile=profile or "", replaces=replaces)
        response = self.net.post(self.client.directory["newOrder"], body,
                                 new_nonce_url=self._nonce_url)
        self.order_placed = True
        order = messages.Order.from_json(response.json())
        authorizations = []
        for url in order.authorizations:
            got = self.net.post_as_get(url, self._nonce_url)
            authorizations.append(messages.AuthorizationResource(
                body=messages.Authorization.from_json(got.json()),
                uri=got.headers.get("Location", url)))
        return messages.OrderResource(body=order, uri=response.headers.get("Location"),
                                      authorizations=authorizations, csr_pem=csr_pem)

    @staticmethod
    def pending_challenges(
        orderr: messages.OrderResource, challenge_type: str, account_key: JWK
    ) -> list[PendingChallenge]:
        """The challenges of `challenge_type` to solve (authorizations already valid need none)."""
        out: list[PendingChallenge] = []
        for authz in orderr.authorizations:
            name = authz.body.identifier.value
            if authz.body.wildcard:  # ACME authorizes `*.x` on "x"; say which one it is
                name = f"*.{name}"
            status = authz.body.status
            if status == messages.STATUS_VALID:
                continue
            if status != messages.STATUS_PENDING:
                raise PermanentError(f"the authorization for {name} is {status} at the CA")
            offered = [c for c in authz.body.challenges if c.chall.typ == challenge_type]
            if not offered:
                types = ", ".join(sorted(str(c.chall.typ) for c in authz.body.challenges))
                raise PermanentError(
                    f"the CA offers no {challenge_type} challenge for {name} (offered: {types})"
                )
            challb = offered[0]
            out.append(
                PendingChallenge(
                    domain=name,
                    token=challb.chall.encode("token"),
                    key_authorization=challb.chall.key_authorization(account_key),
                    authz=authz,
                    challenge=challb,
                )
            )
        return out

    def complete(
        self, orderr: messages.OrderResource, pending: list[PendingChallenge], account_key: JWK
    ) -> tuple[bytes, str]:
        """Answer, validate, finalize, download: (full chain PEM as returned, certificate URL)."""
        deadline = time.monotonic() + self._policy.timeout
        for ch in pending:
            if ch.challenge.status == messages.STATUS_PENDING:
                self.client.answer_challenge(ch.challenge, ch.challenge.chall.response(account_key))
        self._wait_authorizations([ch.authz for ch in pending], deadline)
        body = self._finalize(orderr, deadline)
        assert body.certificate is not None
        return self._download(body.certificate), body.certificate

    def revoke(self, cert_pem: bytes, reason: int) -> None:
        self.client.revoke(x509.load_pem_x509_certificate(cert_pem), reason)

    # -- steps -------------------------------------------------------------------------------
    def _wait_authorizations(
        self, authzs: list[messages.AuthorizationResource], deadline: float
    ) -> None:
        waiting = list(authzs)
        delay = self._policy.interval
        while waiting:
            still: list[messages.AuthorizationResource] = []
            for authz in waiting:
                updated, _ = self.client.poll(authz)
                status = updated.body.status
                if status == messages.STATUS_VALID:
                    continue
                if status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                    still.append(updated)
                    continue
                raise ValidationFailed(_failure(updated), hosts=(updated.body.identifier.value,))
            waiting = still
            if waiting:
                names = ", ".join(a.body.identifier.value for a in waiting)
                self._sleep(delay, deadline, f"the validation of {names}")
                delay = min(delay * self._policy.growth, self._policy.max_interval)

    def _finalize(self, orderr: messages.OrderResource, deadline: float) -> messages.Order:
        body = self._begin_finalization(orderr) or orderr.body
        refinalized = False
        delay = self._policy.interval
        while True:
            if body.status == messages.STATUS_VALID and body.certificate:
                return body
            if body.status == messages.STATUS_INVALID:
                raise PermanentError(f"the CA marked the order invalid: {_problem(body.error)}")
            if body.status == messages.STATUS_READY and not refinalized:
                refinalized = True
                body = self._begin_finalization(orderr) or body
                continue
            self._sleep(delay, deadline, "the certificate")
            delay = min(delay * self._policy.growth, self._policy.max_interval)
            response = self.net.post_as_get(orderr.uri, self._nonce_url)
            body = messages.Order.from_json(response.json())

    def _begin_finalization(self, orderr: messages.OrderResource) -> messages.Order | None:
        try:
            finalized: messages.Order = self.client.begin_finalization(orderr).body
            return finalized
        except CaResponseError as exc:
            if exc.code == "orderNotReady":  # already processing (e.g. after a retried POST)
                return None
            raise

    def _download(self, url: str) -> bytes:
        headers = {"Content-Type": self.net.JOSE_CONTENT_TYPE, "Accept": _PEM_CHAIN}
        response = self.net.post_as_get(url, self._nonce_url, headers=headers)
        return bytes(response.content)

    def _sleep(self, delay: float, deadline: float, what: str) -> None:
        if time.monotonic() + delay > deadline:
            raise TemporaryError(f"timed out after {self._policy.timeout:g}s waiting for {what}")
        if self._abort.wait(delay):
            raise TemporaryError(f"stopping: no longer waiting for {what}")


def _problem(error: messages.Error | None) -> str:
    if error is None:
        return "no detail given"
    text = f"{problem_code(error)}: {error.detail or error.title or ''}".rstrip(": ")
    for sub in error.subproblems or ():
        who = sub.identifier.value if sub.identifier is not None else "?"
        text += f"; {who}: {problem_code(sub)}: {sub.detail or ''}"
    return text


def _failure(authz: messages.AuthorizationResource) -> str:
    name = authz.body.identifier.value
    errors = [
        f"{c.chall.typ} validation of {name} failed: {_problem(c.error)}"
        for c in authz.body.challenges
        if c.error is not None
    ]
    return "; ".join(errors) or f"the authorization for {name} became {authz.body.status}"
