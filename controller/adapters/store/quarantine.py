"""The quarantine shelf: list, restore and expire the pairs taken out of certificates/.

Layout (written by LegoStore.quarantine through the journal, adapters/store/lego.py):
  <prefix>/.lego/quarantine/<name>.<YYYYmmddTHHMMSSZ>[-N]/<name>.crt|.key|.issuer.crt|.json
                                                          (and .pem/.pfx when lego wrote them)
The folder name is the store name and the UTC time it was quarantined (`-N` when one name was
quarantined twice within a second). Pairs land there when the garbage collection deletes a
certificate (the executor's DELETE and the admin API's DELETE quarantine, never unlink) and
when a first issuance cannot be applied.

- `entries()` lists them (`njet-cert-manager certs quarantine list`), newest last per name.
- `restore(name)` puts one back (`certs quarantine restore NAME`, NAME a domain, the newest
  entry of it, or an entry's folder name): refused while any file of that name is in
  certificates/ (the error names them); the .crt/.key/.issuer.crt/.json go back all at once
  through the store's swap journal (a crash leaves the old state or the restored pair), byte
  for byte, the key at 0600; .pem/.pfx follow; then the entry is removed.
- `expire(now)` removes entries quarantined `[controller] quarantineRetention` (default 30
  days) ago or earlier; the reconciler calls it at the start of every executing pass
  (reconcile.py), so `"0s"` removes them at the next pass.
Planted entries (someone with write access to `.lego/` only): only a real folder (never a
symlink) named like above is looked at, files are read with fsutil.read_regular (no symlink,
no FIFO, 1 MiB at most), and quarantine/ itself must resolve inside the store. Anything else
is left alone.

Built by app.py (expiry) and cli.py (list, restore; restore under the store lock). Holds no
key material in its messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from controller.adapters.store import fsutil
from controller.adapters.store.journal import Journal
from controller.adapters.store.journal_record import FILE_SLOTS, STAGE_ORDER
from controller.adapters.store.lego import FILE_MODE, KEY_MODE
from controller.certinfo import read_cert_info
from controller.errors import ConfigError, StoreError
from controller.logs import log_event
from controller.paths import StorePaths, is_store_name, safe_file_name, stem_domain

_ENTRY_RE = re.compile(r"^(?P<name>.+)\.(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d{1,6}))?$")
_STAMP = "%Y%m%dT%H%M%SZ"
DEFAULT_RETENTION = timedelta(days=30)


@dataclass(frozen=True)
class QuarantinedPair:
    """One folder of quarantine/ (what `certs quarantine list` shows)."""

    entry: str  # the folder name under quarantine/
    domain: str
    quarantined_at: datetime
    expires_at: datetime  # when expire() removes it
    files: tuple[str, ...]  # the file names it holds
    names: tuple[str, ...] = ()  # the certificate's DNS names, when its .crt reads
    not_after: datetime | None = None
    problem: str | None = None  # why its .crt cannot be read, if it cannot

    @property
    def sort_key(self) -> tuple[str, datetime, str]:
        return (self.domain, self.quarantined_at, self.entry)


def parse_entry(entry: str) -> tuple[str, datetime, int] | None:
    """(store name, quarantine time, counter) of a folder name; None if it is not one."""
    m = _ENTRY_RE.match(entry)
    if m is None or not is_store_name(m["name"]):
        return None
    try:
        at = datetime.strptime(m["stamp"], _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
    return m["name"], at, int(m["n"] or 1)


def _mode(slot: str) -> int:
    return KEY_MODE if slot in ("key", "pem", "pfx") else FILE_MODE


class Quarantine(fsutil.ReadOnlyGuard):
    """quarantine/ of one store (see the module docstring)."""

    def __init__(
        self, paths: StorePaths, *, retention: timedelta = DEFAULT_RETENTION,
        read_only: bool = False,
    ) -> None:
        self.paths = paths
        self.retention = retention
        self.read_only = read_only

    # -- reading ------------------------------------------------------------------------------

    def _folders(self) -> list[tuple[str, str, datetime, int]]:
        """(entry, name, time, counter) of every real entry folder, sorted by name and time."""
        root = self.paths.quarantine
        try:
            fsutil.ensure_inside(root / "x", self.paths.lego)
            names = os.listdir(root)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise fsutil.store_error("list", root, exc) from None
        out = []
        for entry in names:
            parsed = parse_entry(entry)
            if parsed is None:
                continue
            try:
                if not stat.S_ISDIR(os.lstat(root / entry).st_mode):
                    continue  # a symlink or a file planted under an entry's name
            except FileNotFoundError:
                continue
            out.append((entry, *parsed))
        out.sort(key=lambda e: (e[1], e[2], e[3]))
        return out

    def entries(self) -> list[QuarantinedPair]:
        return [self._describe(entry, name, at) for entry, name, at, _ in self._folders()]

    def _describe(self, entry: str, name: str, at: datetime) -> QuarantinedPair:
        folder = self.paths.quarantine_entry(entry)
        files = tuple(f"{name}{suffix}" for suffix in FILE_SLOTS.values()
                      if os.path.lexists(folder / f"{name}{suffix}"))
        pair = QuarantinedPair(entry=entry, domain=stem_domain(name), quarantined_at=at,
                               expires_at=at + self.retention, files=files)
        try:
            info = read_cert_info(fsutil.read_regular(folder / f"{name}.crt"))
        except FileNotFoundError:
            return replace(pair, problem="no certificate file")
        except OSError as exc:
            return replace(pair, problem=str(fsutil.store_error("read", folder, exc)))
        except ValueError as exc:
            return replace(pair, problem=f"certificate cannot be read: {exc}")
        return replace(pair, names=info.names, not_after=info.not_after)

    def find(self, name: str) -> tuple[str, str, datetime]:
        """(entry, store name, time) that `name` means: an entry's folder name, or a domain
        (its newest entry). StoreError naming `name` when nothing is quarantined under it."""
        folders = self._folders()
        for entry, stem, at, _ in folders:
            if entry == name:
                return entry, stem, at
        try:
            wanted: str | None = safe_file_name(name)
        except ConfigError:
            wanted = None
        matching = [(entry, stem, at) for entry, stem, at, _ in folders if stem == wanted]
        if not matching:
            raise StoreError(f"nothing is quarantined under {name!r} in {self.paths.quarantine}; "
                             "`njet-cert-manager certs quarantine list` shows what is")
        return matching[-1]

    # -- writing ------------------------------------------------------------------------------

    def restore(self, name: str) -> QuarantinedPair:
        """Put the quarantined pair `name` back into certificates/ (see the module docstring).
        The caller holds the store lock. Returns what was restored."""
        self._writable(f"restore {name}")
        entry, stem, at = self.find(name)
        folder = self.paths.quarantine_entry(entry)
        domain = stem_domain(stem)
        in_way = [f"{stem}{suffix}" for suffix in FILE_SLOTS.values()
                  if os.path.lexists(self.paths.certificates / f"{stem}{suffix}")]
        if in_way:
            raise StoreError(
                f"cannot restore {domain} from quarantine/{entry}: {', '.join(in_way)} already "
                f"in {self.paths.certificates} (move them away first; nothing was changed)")
        files: dict[str, bytes] = {}
        for slot in STAGE_ORDER:
            path = folder / f"{stem}{FILE_SLOTS[slot]}"
            try:
                fsutil.ensure_inside(path, self.paths.lego)
                files[slot] = fsutil.read_regular(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise fsutil.store_error("read", path, exc) from None
        missing = [f"{stem}{FILE_SLOTS[s]}" for s in ("crt", "key") if s not in files]
        if missing:
            raise StoreError(f"cannot restore {domain}: quarantine/{entry} has no "
                             f"{' or '.join(missing)}; nothing was changed")
        described = self._describe(entry, stem, at)
        digests = {slot: hashlib.sha256(data).hexdigest() for slot, data in files.items()}
        Journal(self.paths, file_mode=_mode).put(stem, domain, files, digests)
        try:
            for slot in ("pem", "pfx"):
                extra = folder / f"{stem}{FILE_SLOTS[slot]}"
                target = self.paths.certificates / extra.name
                if os.path.lexists(extra) and not os.path.lexists(target):
                    os.rename(extra, target)
            fsutil.fsync_dir(self.paths.certificates)
            fsutil.remove_tree(folder)
            fsutil.fsync_dir(self.paths.quarantine)
        except OSError as exc:
            raise StoreError(f"{domain} is restored, but quarantine/{entry} could not be "
                             f"cleaned up: {fsutil.store_error('remove', folder, exc)}") from None
        log_event("certificate restored from quarantine", domain=domain, entry=entry)
        return described

    def expire(self, now: datetime) -> list[str]:
        """Remove entries whose retention is over; one human line per removed entry. An entry
        that cannot be removed is logged and left for the next pass."""
        self._writable("expire quarantined certificates")
        lines: list[str] = []
        for entry, _, at, _ in self._folders():
            if at + self.retention > now:
                continue
            folder = self.paths.quarantine_entry(entry)
            try:
                fsutil.ensure_inside(folder, self.paths.lego)
                fsutil.remove_tree(folder)
            except OSError as exc:
                log_event("quarantined pair not removed", level=logging.WARNING, entry=entry,
                          error=str(fsutil.store_error("remove", folder, exc)))
                continue
            lines.append(f"removed quarantine/{entry} (quarantined {at.isoformat()}, "
                         f"kept {_days(self.retention)})")
        if lines:
            with contextlib.suppress(OSError):
                fsutil.fsync_dir(self.paths.quarantine)
        return lines


def _days(d: timedelta) -> str:
    return f"{d.total_seconds() / 86400:g} days" if d >= timedelta(days=1) else str(d)

