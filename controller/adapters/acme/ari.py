"""The ARI client (RFC 9773): a certificate's ARI identifier and one renewalInfo GET for it.

Built over one AcmeIssuer (`AriClient(issuer)`): by app.py for a plain issuer, by multi.py's
CaFallbackAri once per CA; the ports.AriPoller the ARI step (controller/ari.py) asks. It
shares the issuer's directory (fetched once), caBundle, timeouts and stop flags: a stopping
process sends nothing more. Our own client, because the `acme` package's
`ClientV2.renewal_time()` draws a new random time on every call with a naive clock; here the
answer is only parsed, and the step chooses (and keeps) the time.

- `cert_id(cert)`: base64url(AKI keyIdentifier) "." base64url(the serial's DER content bytes),
  no padding (§4.1); "" for a certificate without an authority key identifier.
- `renewal_info(cert_pem)`: GET `<renewalInfo>/<id>` (unauthenticated, §4.2), on a daemon
  thread with the issuer's connect/read timeouts and a 64 KiB cap on the body; the answer
  `{"suggestedWindow": {"start", "end"}, "explanationURL"?}` is checked (RFC 3339 times with an
  offset, end after start, an http(s) explanation URL) and Retry-After read (delta-seconds or
  an HTTP date, clamped to 24 h by errors.parse_retry_after). Never raises: a failure is an
  AriAnswer with `error`, naming the URL and never anything of the key.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from controller.adapters.acme.errors import describe_network_error, parse_retry_after
from controller.errors import ControllerError
from controller.ports import AriAnswer
from controller.threads import in_daemon_thread

if TYPE_CHECKING:
    from controller.adapters.acme.client import AcmeIssuer

MAX_BODY = 64 * 1024
MAX_URL = 2048
_USER_AGENT = "njet-cert-manager (ARI)"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def serial_bytes(serial: int) -> bytes:
    """The content octets of the serial's DER INTEGER (a leading 0x00 when the top bit is set)."""
    return serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)


def cert_id(cert: x509.Certificate) -> str:
    """The certificate's ARI identifier (RFC 9773 §4.1), "" without an AKI keyIdentifier."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return ""
    if not aki.key_identifier:
        return ""
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_bytes(cert.serial_number))}"


def leaf_of(cert_pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM chain (ValueError when there is none)."""
    return x509.load_pem_x509_certificates(cert_pem)[0]


def cert_id_of_pem(cert_pem: bytes) -> str:
    """The ARI identifier of the leaf of `cert_pem` ("" when it has none)."""
    return cert_id(leaf_of(cert_pem))


def _when(value: Any, key: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"suggestedWindow.{key} is not a string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"suggestedWindow.{key} {value[:40]!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise ValueError(f"suggestedWindow.{key} {value[:40]!r} has no UTC offset")
    return when.astimezone(UTC)


def parse_renewal_info(doc: Any) -> tuple[datetime, datetime, str | None]:
    """(start, end, explanation URL) of a renewalInfo object; ValueError says what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError("the answer is not a JSON object")
    window = doc.get("suggestedWindow")
    if not isinstance(window, dict):
        raise ValueError("no suggestedWindow object")
    start, end = _when(window.get("start"), "start"), _when(window.get("end"), "end")
    if end <= start:
        raise ValueError(f"suggestedWindow ends ({end.isoformat()}) before it starts "
                         f"({start.isoformat()})")
    url = doc.get("explanationURL")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")) or (
            len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url)):
        url = None
    return start, end, url


class AriClient:
    """The ports.AriPoller over one AcmeIssuer's CA; see the module docstring."""

    def __init__(self, issuer: AcmeIssuer) -> None:
        self._issuer = issuer
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    async def supported(self) -> bool:
        return self._base(await self._issuer.directory()) is not None

    @staticmethod
    def _base(directory: Any) -> str | None:
        try:
            url = directory["renewalInfo"]
        except KeyError:
            return None
        return url if isinstance(url, str) and url else None

    async def renewal_info(self, cert_pem: bytes, *, ca: str | None = None) -> AriAnswer:
        """Asks this client's CA (`ca` is for the port's composite: multi.py CaFallbackAri)."""
        try:
            leaf = leaf_of(cert_pem)
        except ValueError as exc:
            return AriAnswer(fingerprint="", cert_id="", error=f"not a certificate: {exc}")
        fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
        ident = cert_id(leaf)
        if not ident:
            return AriAnswer(fingerprint=fingerprint, cert_id="",
                             error="the certificate has no authority key identifier")
        try:
            base = self._base(await self._issuer.directory())
        except ControllerError as exc:
            return AriAnswer(fingerprint=fingerprint, cert_id=ident, error=str(exc))
        if base is None:
            return AriAnswer(fingerprint=fingerprint, cert_id=ident,
                             error="the CA's directory has no renewalInfo")
        url = f"{base.rstrip('/')}/{ident}"
        with self._issuer.stop_flag() as stop:
            return await in_daemon_thread(self._get, url, fingerprint, ident, stop)

    async def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    # -- one GET, on a daemon thread -------------------------------------------------------

    def _get(self, url: str, fingerprint: str, ident: str, stop: threading.Event) -> AriAnswer:
        def failed(error: str, retry_after: float | None = None) -> AriAnswer:
            return AriAnswer(fingerprint=fingerprint, cert_id=ident, retry_after=retry_after,
                             error=f"renewalInfo {url}: {error}")

        if stop.is_set():
            return failed("not asked: stopping")
        session = self._session()
        try:
            response = session.get(
                url, timeout=self._issuer.request_timeout, stream=True,
                verify=str(self._issuer.ca_bundle) if self._issuer.ca_bundle else True,
                headers={"Accept": "application/json", "User-Agent": _USER_AGENT})
            try:
                body = response.raw.read(MAX_BODY + 1, decode_content=True)
            finally:
                response.close()
        except requests.exceptions.RequestException as exc:
            session.close()
            return failed(describe_network_error(exc))
        except Exception as exc:  # a body that breaks off, a decoding error
            session.close()
            return failed(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        self._give_back(session)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if response.status_code != 200:
            return failed(f"HTTP {response.status_code}{_problem(body)}", retry_after)
        if len(body) > MAX_BODY:
            return failed(f"the answer is larger than {MAX_BODY} bytes", retry_after)
        try:
            start, end, explanation = parse_renewal_info(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            return failed(f"unusable answer: {exc}", retry_after)
        return AriAnswer(fingerprint=fingerprint, cert_id=ident, window_start=start,
                         window_end=end, explanation_url=explanation, retry_after=retry_after)

    def _session(self) -> requests.Session:
        with self._lock:
            if self._sessions:
                return self._sessions.pop()
        return requests.Session()

    def _give_back(self, session: requests.Session) -> None:
        with self._lock:
            if len(self._sessions) < 8:
                self._sessions.append(session)
                return
        session.close()


def _problem(body: bytes) -> str:
    """": <detail>" of an RFC 7807 problem document, "" for anything else."""
    try:
        doc = json.loads(body[:MAX_BODY])
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(doc, dict):
        return ""
    detail = doc.get("detail") or doc.get("type")
    return f": {' '.join(str(detail).split())[:200]}" if detail else ""


class NoAri:
    """A ports.AriPoller for an issuer that is no ACME CA (a test's fake): no ARI."""

    async def supported(self) -> bool:
        return False

    async def renewal_info(self, cert_pem: bytes, *, ca: str | None = None) -> AriAnswer:
        return AriAnswer(fingerprint="", cert_id="", error="no ACME CA: no renewal information")

    async def close(self) -> None:
        return None
