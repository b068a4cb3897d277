"""An in-memory ports.AriPoller for step tests and bench/ari.py: a CA's renewal information
without a network.

    ari = FakeAri(clock)                           # every certificate: the middle of its lifetime
    ari = FakeAri(clock, window=lambda info: (info.not_before, info.not_after))
    ari.retry_after = 3600                          # Retry-After of every answer (None: none)
    ari.move(cert_id, start, end)                   # this certificate's window from now on
    ari.fail = "503"                                # every answer an error until cleared
    ari.offered = False                             # the directory has no renewalInfo

The ARI identifier is "fake." + the serial in hex (tests/certbuilder.py's certificates carry no
authority key identifier); `requests` lists (time, cert_id) of every renewal_info call.
tests/unit/test_ari_step.py checks it against its Protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from controller.certinfo import read_cert_info
from controller.errors import TemporaryError
from controller.model import CertInfo
from controller.ports import AriAnswer

WindowRule = Callable[[CertInfo], tuple[datetime, datetime]]


def middle_third(info: CertInfo) -> tuple[datetime, datetime]:
    """A window over the middle third of the lifetime (about where CAs suggest renewal)."""
    life = info.not_after - info.not_before
    return info.not_before + life / 3, info.not_before + life * 2 / 3


def fake_cert_id(info: CertInfo) -> str:
    return f"fake.{info.serial}"


class FakeAri:
    def __init__(self, clock: Callable[[], datetime], *, window: WindowRule = middle_third,
                 retry_after: float | None = None, explanation_url: str | None = None) -> None:
        self.clock = clock
        self.window = window
        self.retry_after = retry_after
        self.explanation_url = explanation_url
        self.offered = True
        self.unreachable = False  # supported() raises TemporaryError (no directory)
        self.fail: str | None = None
        self.moved: dict[str, tuple[datetime, datetime]] = {}
        self.requests: list[tuple[datetime, str]] = []
        self.closed = False

    def move(self, cert_id: str, start: datetime, end: datetime) -> None:
        self.moved[cert_id] = (start, end)

    async def supported(self) -> bool:
        if self.unreachable:
            raise TemporaryError("cannot load the ACME directory https://ca.fake/dir: refused")
        return self.offered

    async def renewal_info(self, cert_pem: bytes) -> AriAnswer:
        info = read_cert_info(cert_pem)
        ident = fake_cert_id(info)
        self.requests.append((self.clock(), ident))
        if self.fail is not None:
            return AriAnswer(fingerprint=info.fingerprint, cert_id=ident,
                             retry_after=self.retry_after, error=self.fail)
        start, end = self.moved.get(ident) or self.window(info)
        return AriAnswer(fingerprint=info.fingerprint, cert_id=ident, window_start=start,
                         window_end=end, explanation_url=self.explanation_url,
                         retry_after=self.retry_after)

    async def factory(self) -> FakeAri:
        return self

    async def close(self) -> None:
        self.closed = True
