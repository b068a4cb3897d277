"""Dual certificates: the note that a key type left a block's `keyType` list. Pure.

A dual block (`keyType = ["rsa2048", "ec256"]`) has two certificates, `<name>` and
`<name>@<slot>` (desired_source.expand_dual). NJet has no call that drops one key type of a
block (njet-contract §3.3 [07], §3.5 [34]: a `del` never changes what is served, and fails for
any cert but the block's first), and it replays the retained record of each key type after a
reload or restart (§7). So when a key type is removed from the list, NJet keeps serving that
key type's last certificate to the clients that pick it until it expires. The stored pair of a
removed second slot becomes an orphan like any undesired certificate (grace period, then
quarantine: policies/orphan.py); `slot_notes` says in `diff` (and every pass's notes) which
certificate NJet keeps serving and until when.

Called by plan.py once per pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from controller.model import CertificateSpec, Desired, KeyKind, Observed
from controller.paths import SLOTS, split_store_key, store_key

_CLIENTS: dict[str, str] = {"ecc": "ECDSA-capable clients", "rsa": "RSA-only clients"}
_KIND: dict[str, str] = {"ecc": "ECDSA", "rsa": "RSA"}


def slot_notes(
    desired: Desired, observed: Observed, kind_of: Callable[[CertificateSpec], KeyKind]
) -> tuple[str, ...]:
    """One note per stored certificate of a still desired domain whose key type (NJet's
    cert_type) none of the domain's desired certificates has any more, looked at only for a
    domain with a stored second slot that is no longer desired. `kind_of`: the cert_type a
    desired spec wants (plan.wanted_key_type's)."""
    return tuple(_notes(desired, observed, kind_of))


def _notes(
    desired: Desired, observed: Observed, kind_of: Callable[[CertificateSpec], KeyKind]
) -> Iterator[str]:
    domains = sorted({split_store_key(k)[0] for k in observed.stored
                      if split_store_key(k)[1] is not None and k not in desired.specs})
    for domain in domains:
        primary = desired.specs.get(domain)
        if primary is None:
            continue  # the whole block left: nothing of it is ours to serve
        wanted = {kind_of(primary), *(s for s in SLOTS
                                      if store_key(domain, s) in desired.specs)}
        for key, kind in _stored_kinds(domain, observed):
            if kind in wanted:
                continue
            stored = observed.stored[key]
            yield (f"{key}: keyType no longer has an {_KIND[kind]} key type, but NJet keeps"
                   f" serving this {_KIND[kind]} certificate to {_CLIENTS[kind]} until it"
                   f" expires ({stored.info.not_after.isoformat()}), after a reload too: NJet"
                   " has no call that drops one key type of a block")


def _stored_kinds(domain: str, observed: Observed) -> Iterator[tuple[str, str]]:
    """(store key, cert_type) of each stored certificate of `domain`: its own by its key,
    a second slot's by its slot."""
    first = observed.stored.get(domain)
    if first is not None and first.info.key_type is not None:
        yield domain, first.info.key_type.njet_cert_type
    for slot in SLOTS:
        key = store_key(domain, slot)
        if key in observed.stored:
            yield key, slot
