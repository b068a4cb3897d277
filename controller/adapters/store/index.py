"""A persisted index of what each stored pair meant when last parsed, keyed by file identity.

Parsing 10,000 certificates and keys takes seconds; a fresh process (NJet restarts the copilot
on every reload) reads this index instead and only re-parses pairs whose files changed — the
same (st_size, st_mtime_ns, st_ino) identity the in-memory cache of store/lego.py trusts. The index
holds no key material. A missing, unreadable or foreign-version index is simply ignored; it is
rewritten after a scan that parsed something.

The index is a cache, never the truth: each entry carries a checksum (sha256 over its canonical
facts, file identity included), and an entry that fails it (a hand edit of notAfter, say) or
cannot be decoded is dropped, so its pair is re-read from the files. The file is read with
fsutil.read_regular (regular file, at most 256 MiB).

Called by adapters/store/lego.py only (pairs.py makes its Parsed entries). Stored at
`<prefix>/.lego/index.json` (StorePaths.index).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from controller.adapters.store import fsutil
from controller.model import CertInfo, KeyType, StoredCert

log = logging.getLogger(__name__)

VERSION = 3  # 3: entries carry a checksum

Ident = tuple[int, int, int]
PairIdent = tuple[Ident, Ident | None, Ident | None]  # .crt, .key, .json


@dataclass(frozen=True)
class Parsed:
    """One name's files as last parsed: the identity they had, and what they meant."""

    ident: PairIdent
    domain: str
    stored: StoredCert | None  # None: unusable (see problem)
    problem: str | None  # set when the pair must not be used


def _ident(raw: Any) -> Ident | None:
    return None if raw is None else (int(raw[0]), int(raw[1]), int(raw[2]))


def _encode(p: Parsed) -> list[Any]:
    """A compact list (an index of 10,000 pairs is read at every start)."""
    stored = None
    if p.stored is not None:
        i = p.stored.info
        stored = [i.common_name, list(i.names), i.not_before.isoformat(),
                  i.not_after.isoformat(), i.key_type.value if i.key_type else None, i.serial,
                  i.fingerprint, i.issuer, p.stored.key_matches, p.stored.cert_url]
    facts = [list(p.ident), p.domain, p.problem, stored]
    return [*facts, _checksum(facts)]


def _checksum(facts: list[Any]) -> str:
    """sha256 (128 bits of it, hex) over the canonical JSON of an entry's facts."""
    return hashlib.sha256(orjson.dumps(facts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class _BadEntry(ValueError):
    pass


def _decode(doc: list[Any]) -> Parsed:
    *facts, checksum = doc
    if len(facts) != 4 or checksum != _checksum(facts):
        raise _BadEntry("checksum mismatch")
    (crt, key, res), domain, problem, s = facts
    ident: PairIdent = (_ident(crt) or (0, 0, 0), _ident(key), _ident(res))
    stored = None
    if s is not None:
        cn, names, nb, na, kt, serial, fp, issuer, km, url = s
        info = CertInfo(
            common_name=cn, names=tuple(names), not_before=datetime.fromisoformat(nb),
            not_after=datetime.fromisoformat(na), key_type=KeyType(kt) if kt else None,
            serial=serial, fingerprint=fp, issuer=issuer,
        )
        stored = StoredCert(domain=domain, info=info, key_matches=bool(km), cert_url=url)
    return Parsed(ident=ident, domain=domain, stored=stored, problem=problem)


def load_index(path: Path) -> dict[str, Parsed]:
    """stem -> Parsed from the index file; {} when absent or not usable. Entries that fail
    their checksum or do not decode are left out (a warning says how many)."""
    try:
        doc = orjson.loads(fsutil.read_regular(path, limit=fsutil.MAX_LARGE_FILE_BYTES))
        if doc.get("version") != VERSION:
            return {}
        entries = doc["entries"].items()
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        log.warning("store index %s ignored: %s", path, exc)
        return {}
    out: dict[str, Parsed] = {}
    bad: list[str] = []
    for stem, entry in entries:
        try:
            out[stem] = _decode(entry)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            bad.append(stem)
    if bad:
        log.warning("store index %s: %d entries failed their check (e.g. %s); re-reading "
                    "them from the files", path, len(bad), bad[0])
    return out


def save_index(path: Path, cache: dict[str, Parsed]) -> bool:
    """Write the index atomically; False when it could not be written (e.g. disk full), which
    only costs speed later."""
    doc = {"version": VERSION, "entries": {stem: _encode(p) for stem, p in cache.items()}}
    try:
        fsutil.atomic_write(path, orjson.dumps(doc), mode=0o600)
    except OSError as exc:
        log.warning("store index %s not written: %s", path, exc)
        return False
    return True
