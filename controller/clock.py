"""The system clock, read in one place: `utc_now`, the default of every injected clock.

app.py hands one clock to the reconciler and the steps; adapters that stamp a time (the
runtime store's set-aside file names, tls-alpn-01 validation certificates, Retry-After
dates) take a `clock` parameter defaulting to this one, so tests can pass a fixed or moving
clock. Pure modules never read a clock: they are given `now`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)
