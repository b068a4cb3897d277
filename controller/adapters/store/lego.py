"""The lego-layout certificate store (`CertStore` of ports/): read, swap, delete, quarantine.

Layout (lego's, so NJet's Go cert-manager and lego itself read the same files):
  <prefix>/.lego/certificates/<name>.crt         leaf + chain (fullchain)
                              <name>.key         private key, mode 0600
                              <name>.issuer.crt  the chain without the leaf (absent if none)
                              <name>.json        {"domain", "certUrl", "certStableUrl"}
<name> is the domain with "*" -> "_"; the second certificate of a dual block (`keyType` a
list of two) is `<name>@ecc` or `<name>@rsa` (paths.store_key: "@" is in no host name, so lego
and the scan never take it for another domain). A stem with any other "@" is refused: a problem,
never a certificate. Pairs written by lego or NJet's cert-manager (no status file, .json with
more fields, .pem/.pfx siblings) are adopted as they are.

Crash safety: every change goes through a journal entry `journal/<name>/`: new files are staged
and fsynced there, the old files are hard-linked there as a backup, then `JOURNAL` (the record)
is written atomically; only then are files renamed into certificates/. The record's presence
decides recovery: without it the entry is discarded (nothing was touched), with it the swap is
finished in the recorded direction (forward, or back to the backup after a failed rename).
So a name only ever holds its complete old files or its complete new files. The mechanics live
in adapters/store/journal.py; this module builds the records and reads the store (one pair's
files: adapters/store/pairs.py).

load_all() caches parsed facts by (st_size, st_mtime_ns, st_ino) of .crt/.key/.json, so a
scan of an unchanged store costs one stat per file; and while the certificates/ folder itself is
unchanged (same mtime, quiet for a second) the last scan is reused outright, with a full re-stat
at least every `verify_interval` seconds (60) to catch files rewritten in place.

Planted files: every store file is read with fsutil.read_regular (no symlink, no FIFO or
device, at most 1 MiB), so such a pair is unusable (a problem with the reason) like an
unparsable one. A key open to other users, or certificates/ open to them, is a warning and is
repaired to 0600 / 0700 (adapters/store/scan.py).

`LegoStore(paths, read_only=True)` (what `diff` uses) never creates, repairs or rewrites
anything under .lego: no index.json, no permission repair (only the warning), and put /
delete / quarantine / recover raise StoreError.

Called by app.py (recover at start), observe.py (load_all) and execute.py (get, put, key_pem,
cert_pem, delete, quarantine). Thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from controller.adapters.store import fsutil
from controller.adapters.store.index import Parsed, load_index, save_index
from controller.adapters.store.journal import Journal
from controller.adapters.store.journal_record import FILE_SLOTS, JournalRecord
from controller.adapters.store.pairs import parse_pair, refused_stems
from controller.adapters.store.scan import (
    ModeGuard,
    entry_stat,
    ident_of,
    lstat_ident,
    read_optional,
    sweep_temp_files,
)
from controller.certinfo import key_matches_cert, read_cert_info, split_pem_chain
from controller.clock import utc_now
from controller.errors import ConfigError, StoreError
from controller.gcpause import gc_paused
from controller.model import CertInfo, IssuedCert, StoredCert
from controller.paths import (
    StorePaths,
    safe_file_name,
    split_store_key,
    stem_domain,
    validate_domain,
)

KEY_MODE = 0o600
FILE_MODE = 0o644
DIR_MODE = 0o700

# A full re-stat of every file at least this often, so files rewritten in place (lego writes
# that way) are noticed even though the folder's mtime does not change.
VERIFY_INTERVAL = 60.0
SETTLE_NS = 1_000_000_000

_Parsed = Parsed


@dataclass(frozen=True)
class _Snapshot:
    """The last full scan: valid while the folder is unchanged and recently verified."""

    dir_ident: tuple[int, int, int]
    settled: bool
    verified_at: float
    usable: dict[str, StoredCert]
    problems: dict[str, str]


def resource_json(domain: str, cert_url: str) -> bytes:
    """lego's <name>.json: its certificate.Resource without the PEM fields (tab-indented)."""
    doc = {"domain": domain, "certUrl": cert_url, "certStableUrl": cert_url}
    return json.dumps(doc, indent="\t").encode() + b"\n"


def checked_pair(domain: str, issued: IssuedCert) -> CertInfo:
    """The facts of `issued`'s certificate when its key matches it; StoreError otherwise (the
    check every store write makes first: this store's put, and fleet mode's database write)."""
    try:
        info = read_cert_info(issued.cert_pem)
        matches = key_matches_cert(issued.key_pem, issued.cert_pem)
    except ValueError as exc:
        raise StoreError(f"refusing to store the certificate of {domain}: {exc}") from None
    if not matches:
        raise StoreError(
            f"refusing to store the certificate of {domain}: the key does not match it"
        )
    return info


class LegoStore(fsutil.ReadOnlyGuard):
    """`CertStore` over `<prefix>/.lego/certificates/` (see the module docstring)."""

    def __init__(
        self,
        paths: StorePaths,
        *,
        now: Callable[[], datetime] | None = None,
        verify_interval: float = VERIFY_INTERVAL,
        read_only: bool = False,
    ) -> None:
        self.paths = paths
        self.read_only = read_only
        self._modes = ModeGuard(paths.lego, repair=not read_only)
        self._now = now or utc_now
        self._verify_interval = verify_interval
        self._lock = threading.RLock()
        self._cache: dict[str, _Parsed] = {}
        self._index_loaded = False
        # what the index file on disk holds: stem -> identity of the files it describes
        self._indexed: dict[str, object] = {}
        self._snapshot: _Snapshot | None = None
        self._journal = Journal(paths, file_mode=self._file_mode, now=self._now)

    def _forget(self, name: str | None = None) -> None:
        self._snapshot = None
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    # -- recovery ---------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish or undo interrupted swaps, remove temp files; one human line per action, for
        the caller to log (app.py does).

        A planted or broken journal entry is reported and set aside, never raised; only a store
        whose folders cannot be listed raises StoreError (see journal.py).
        """
        self._writable("recover interrupted store operations")
        with self._lock:
            lines = self._journal.recover_all()
            for directory in (
                self.paths.lego,
                self.paths.certificates,
                self.paths.status,
                self.paths.journal,
            ):
                lines.extend(sweep_temp_files(directory, self.paths.lego))
            self._forget()
        return lines

    # -- reading ----------------------------------------------------------------------------

    def load_all(self) -> tuple[Mapping[str, StoredCert], Mapping[str, str]]:
        """Every usable pair by domain, and every unusable one with the reason."""
        directory = self.paths.certificates
        with self._lock:
            try:
                st = os.stat(directory)
            except FileNotFoundError:
                self._forget()
                return {}, {}
            except OSError as exc:
                raise fsutil.store_error("stat", directory, exc) from None
            if self._modes.check_dir(directory, st):
                st = os.stat(directory)
            dir_ident = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            snap = self._snapshot
            if (
                snap is not None
                and snap.settled
                and snap.dir_ident == dir_ident
                and time.monotonic() - snap.verified_at < self._verify_interval
            ):
                return dict(snap.usable), dict(snap.problems)
            started_ns, verified_at = time.time_ns(), time.monotonic()
            with gc_paused():
                usable, problems = self._scan(directory)
            # A folder changed within the last second may change again within the same clock
            # tick without a visible change of its ctime, so only a quiet folder is trusted.
            settled = st.st_ctime_ns < started_ns - SETTLE_NS
            self._snapshot = _Snapshot(dir_ident, settled, verified_at, usable, problems)
            return dict(usable), dict(problems)

    def _scan(self, directory: Path) -> tuple[dict[str, StoredCert], dict[str, str]]:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            self._cache = {}
            return {}, {}
        except OSError as exc:
            raise fsutil.store_error("list", directory, exc) from None
        crts: dict[str, os.DirEntry[str]] = {}
        keys: dict[str, os.DirEntry[str]] = {}
        jsons: dict[str, os.DirEntry[str]] = {}
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue  # temp files, hidden files
            if name.endswith(".crt"):
                crts[name[:-4]] = entry
            elif name.endswith(".key"):
                keys[name[:-4]] = entry
            elif name.endswith(".json"):
                jsons[name[:-5]] = entry
        for stem in [s for s in crts if s.endswith(".issuer")]:
            if stem not in keys:
                del crts[stem]  # <name>.issuer.crt is the chain of <name>, not a leaf
        refused = refused_stems(directory, crts, keys, jsons)
        if not self._index_loaded:
            self._index_loaded = True
            on_disk = load_index(self.paths.index)
            self._indexed = {stem: p.ident for stem, p in on_disk.items()}
            self._cache = {**on_disk, **self._cache}
        usable: dict[str, StoredCert] = {}
        problems: dict[str, str] = dict(refused)
        cache: dict[str, _Parsed] = {}
        key_stats = {stem: entry_stat(entry) for stem, entry in keys.items()}
        for stem, key_st in key_stats.items():
            self._modes.check_key(directory / f"{stem}.key", key_st)
        for stem, crt_entry in crts.items():
            key_st, json_st = key_stats.get(stem), entry_stat(jsons.get(stem))
            try:
                ident = (
                    ident_of(crt_entry.stat(follow_symlinks=False)),
                    ident_of(key_st) if key_st is not None else None,
                    ident_of(json_st) if json_st is not None else None,
                )
            except FileNotFoundError:
                continue  # removed while we listed
            except OSError as exc:
                raise fsutil.store_error("stat", directory / crt_entry.name, exc) from None
            parsed = self._cache.get(stem)
            if parsed is None or parsed.ident != ident:
                parsed = parse_pair(directory, stem, ident)
            cache[stem] = parsed
            if parsed.problem is None and parsed.stored is not None:
                usable[parsed.domain] = parsed.stored
            else:
                problems[parsed.domain] = parsed.problem or "unusable"
        for stem in keys.keys() - crts.keys():
            problems.setdefault(
                stem_domain(stem), f"key file {directory / (stem + '.key')} has no certificate"
            )
        idents = {stem: p.ident for stem, p in cache.items()}
        if not self.read_only and idents != self._indexed and save_index(self.paths.index, cache):
            self._indexed = dict(idents)
        self._cache = cache
        return usable, problems

    def _parsed_for(self, domain: str) -> _Parsed | None:
        stem = safe_file_name(domain)
        directory = self.paths.certificates
        crt = lstat_ident(directory / f"{stem}.crt")
        if crt is None:
            return None
        ident = (
            crt,
            lstat_ident(directory / f"{stem}.key"),
            lstat_ident(directory / f"{stem}.json"),
        )
        parsed = self._cache.get(stem)
        if parsed is None or parsed.ident != ident:
            parsed = parse_pair(directory, stem, ident)
            self._cache[stem] = parsed
        return parsed

    def get(self, domain: str) -> StoredCert | None:
        """The pair for `domain`; None when the .crt or .key is missing.

        A key that does not match comes back with key_matches=False; a certificate or key that
        cannot be parsed raises StoreError with the reason.
        """
        with self._lock:
            parsed = self._parsed_for(domain)
        if parsed is None or parsed.ident[1] is None:
            return None
        if parsed.stored is None:
            raise StoreError(parsed.problem or f"stored pair of {domain} is unusable")
        return parsed.stored

    def key_pem(self, domain: str) -> bytes | None:
        return read_optional(self.paths.key(domain))

    def cert_pem(self, domain: str) -> bytes | None:
        return read_optional(self.paths.cert(domain))

    # -- writing ----------------------------------------------------------------------------

    def put(self, domain: str, issued: IssuedCert) -> StoredCert:
        """Replace the pair of `domain` all-or-nothing (see the module docstring)."""
        self._writable(f"store the certificate of {domain}")
        try:
            name = safe_file_name(domain)
        except ConfigError as exc:
            raise StoreError(f"cannot store a certificate under {domain!r}: {exc}") from None
        info = checked_pair(domain, issued)
        chain = issued.issuer_pem if issued.issuer_pem.strip() else b""
        if not chain:
            chain = b"".join(split_pem_chain(issued.cert_pem)[1:])
        files = {
            "crt": issued.cert_pem,
            "key": issued.key_pem,
            "json": resource_json(validate_domain(split_store_key(domain)[0]), issued.cert_url),
        }
        if chain:
            files["issuer"] = chain
        digests = {slot: hashlib.sha256(data).hexdigest() for slot, data in files.items()}
        with self._lock:
            self._journal.put(name, domain, files, digests)
            self._forget(name)
            parsed = self._parsed_for(domain)
        if parsed is None or parsed.stored is None or parsed.problem is not None:
            problem = parsed.problem if parsed is not None else "files missing"
            raise StoreError(f"stored pair of {domain} does not read back: {problem}")
        return StoredCert(
            domain=parsed.stored.domain, info=info, key_matches=True, cert_url=issued.cert_url
        )

    def delete(self, domain: str) -> bool:
        """Remove every file of `domain` (.crt/.key/.issuer.crt/.json/.pem/.pfx) all at once."""
        self._writable(f"delete the certificate of {domain}")
        name = safe_file_name(domain)
        with self._lock:
            present = self._present_slots(name)
            if not present:
                return False
            self._journal.move_out(JournalRecord.for_delete(name, domain, present))
            self._forget(name)
        return True

    def quarantine(self, domain: str) -> str | None:
        """Move the files of `domain` to quarantine/<name>.<UTC timestamp>/; None if none."""
        self._writable(f"quarantine the certificate of {domain}")
        name = safe_file_name(domain)
        with self._lock:
            present = self._present_slots(name)
            if not present:
                return None
            stamp = self._now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            dest_name = f"{name}.{stamp}"
            counter = 1
            while os.path.lexists(self.paths.quarantine / dest_name):
                counter += 1
                dest_name = f"{name}.{stamp}-{counter}"
            record = JournalRecord.for_quarantine(name, domain, present, dest_name)
            self._journal.move_out(record)
            self._forget(name)
        return str(self.paths.quarantine / dest_name)

    def _present_slots(self, name: str) -> list[str]:
        directory = self.paths.certificates
        return [s for s in FILE_SLOTS if os.path.lexists(directory / f"{name}{FILE_SLOTS[s]}")]

    @staticmethod
    def _file_mode(slot: str) -> int:
        return KEY_MODE if slot in ("key", "pem", "pfx") else FILE_MODE

