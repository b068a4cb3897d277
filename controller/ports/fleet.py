"""The port of fleet mode's one-order-per-certificate rule: the order gate.

Implemented by fleet.py's FleetGate (over adapters/pg/leases.py and certs.py); called by
execute.py around every issue/renew. Without fleet mode the executor has no gate. Part of
controller/ports/ (which re-exports every name; the rules of every port are in its docstring).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol


class OrderGate(Protocol):
    """Lets one node of the fleet order a certificate at a time.

    Contract: `order(key, expected=fingerprint)` is an async context manager held around the
    order and the store write of `key`. On entry it takes the certificate's lease (waiting
    while another live node holds one, and taking over one that expired), then re-checks the
    precondition: the shared store still holds `expected` (None: nothing). It raises
    HandledElsewhere when another node stored a newer certificate meanwhile (pulled into this
    node's mirror before raising, so the next pass applies it), when the wait ends without the
    lease, or when this node must not order (its settings differ from the fleet's);
    TemporaryError when the database cannot be reached. While held, the lease is renewed, so
    the store's write is fenced by it (a node that lost its lease cannot overwrite a newer
    certificate). Concurrent holds for different keys are allowed; the executor never holds
    two for the same key.
    """

    def order(self, key: str, *, expected: str | None) -> AbstractAsyncContextManager[None]: ...
