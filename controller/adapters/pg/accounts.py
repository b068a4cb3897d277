"""The ACME accounts of the fleet: lego's account folders shared through the `accounts` table.

Every node of a fleet must order with the same accounts (one budget at the CA, one set of
authorizations), so the files under `<prefix>/.lego/accounts/` (adapters/acme/account.py:
`<ca host_port>/<email>/account.json` and `<ca host_port>/<email>/keys/<email>.key`) are kept
in the database: one row per file, `path` relative to the accounts folder, `ca` and `email` its
first two components. Key files (under `keys/`, or named `*.key`) are sealed with the node's
KeySealer (label = the path); the registration (account.json) is stored as it is.
- `pull()` writes every stored file this node does not have (atomically, mode 0600, folders
  0700; a path that would leave the folder or go through a link is refused). A local file that
  differs from the database's is kept (this node's account works; a warning says so). A row
  whose key does not open is logged and skipped. Returns the number of files written.
- `push()` uploads every local account the database does not hold yet, one account folder as
  one unit (a temp file, a link or anything but a regular file is skipped); an account it
  holds stays the fleet's (a warning when this node's files differ) unless `replace=True`.
  Returns the number of files written. The first node to push an account makes it the
  fleet's: stable, no flapping between nodes, never one node's key with another's
  registration.
Built by app.py in fleet mode (pull at start before the issuer loads its account, push after
the issuer registered one); sync: call from a worker thread. Never logs file contents.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path, PurePosixPath

from controller.adapters.pg.crypto import CLEAR, KeySealer
from controller.adapters.pg.db import Database
from controller.adapters.store import fsutil
from controller.errors import StoreError
from controller.logs import log_event


def is_key_file(parts: tuple[str, ...]) -> bool:
    return "keys" in parts[2:-1] or parts[-1].endswith(".key")


def _parts(rel: str) -> tuple[str, ...] | None:
    """The components of a stored relative path, None when it is not a safe account file."""
    path = PurePosixPath(rel)
    parts = path.parts
    if path.is_absolute() or len(parts) < 3 or any(p in ("", ".", "..") for p in parts):
        return None
    if any("\\" in p or "\x00" in p or fsutil.is_temp_name(p) for p in parts):
        return None
    return parts


class AccountSync:
    """The account files under `accounts_dir` and the `accounts` table (module docstring)."""

    def __init__(self, db: Database, sealer: KeySealer, accounts_dir: Path) -> None:
        self.db = db
        self.sealer = sealer
        self.accounts_dir = accounts_dir

    def pull(self) -> int:
        """Write the stored account files this node lacks; the number written."""
        with self.db.tx() as conn:
            rows = conn.execute("SELECT path, body_sealed, key_alg FROM accounts "
                                "ORDER BY path").fetchall()
        written = 0
        for rel, sealed, alg in rows:
            parts = _parts(str(rel))
            if parts is None:
                log_event("fleet account file refused: not a path inside the accounts folder",
                          level=logging.WARNING, path=str(rel))
                continue
            try:
                body = self.sealer.open_(str(alg), bytes(sealed), label=str(rel))
                if self._write(parts, body):
                    written += 1
            except StoreError as exc:
                log_event("fleet account file not written", level=logging.WARNING,
                          path=str(rel), error=str(exc))
        return written

    def _write(self, parts: tuple[str, ...], body: bytes) -> bool:
        target = self.accounts_dir.joinpath(*parts)
        try:
            fsutil.ensure_inside(target, self.accounts_dir)  # no folder on the way is a link
            fsutil.make_dirs(target.parent, mode=0o700)
            fsutil.ensure_inside(target, self.accounts_dir)
            try:
                local = fsutil.read_regular(target)
            except FileNotFoundError:
                local = None
            if local is None:
                fsutil.atomic_write(target, body, mode=0o600)
                log_event("fleet account file written", path=str(target))
                return True
        except OSError as exc:
            raise fsutil.store_error("write", target, exc) from None
        if local != body:
            log_event("local account file differs from the fleet's; keeping the local one",
                      level=logging.WARNING, path=str(target))
        return False

    def push(self, *, replace: bool = False) -> int:
        """Upload every local account the database does not hold; the number of files
        written. An account (a `<ca>/<email>/` folder) goes up as one unit in one
        transaction, and only while the database has no file of it: two nodes that
        registered at once never mix one's registration with the other's key (the first
        keeps it; the other's stays local, with a warning when its files differ). `replace`
        overwrites file by file."""
        written = 0
        accounts: dict[tuple[str, str], list[tuple[str, tuple[str, ...], bytes]]] = {}
        for rel, parts, body in self._local_files():
            accounts.setdefault((parts[0], parts[1]), []).append((rel, parts, body))
        for (ca, email), files in sorted(accounts.items()):
            with self.db.tx() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             (f"njcm-account:{ca}/{email}",))
                rows = {str(r[0]): (str(r[2]), bytes(r[1])) for r in conn.execute(
                    "SELECT path, body_sealed, key_alg FROM accounts WHERE ca = %s AND "
                    "email = %s", (ca, email)).fetchall()}
                if rows and not replace:
                    for rel, _parts, body in files:
                        if rel in rows:
                            self._differs(rows[rel][0], rows[rel][1], rel, body)
                    continue
                for rel, parts, body in files:
                    alg, sealed = (self.sealer.seal(body, label=rel) if is_key_file(parts)
                                   else (CLEAR, body))
                    conn.execute("INSERT INTO accounts (ca, email, path, body_sealed, key_alg) "
                                 "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (ca, email, path) DO "
                                 "UPDATE SET body_sealed = EXCLUDED.body_sealed, "
                                 "key_alg = EXCLUDED.key_alg", (ca, email, rel, sealed, alg))
                    written += 1
        return written

    def _differs(self, alg: str, sealed: bytes, rel: str, body: bytes) -> None:
        try:
            same = self.sealer.open_(alg, sealed, label=rel) == body
        except StoreError as exc:
            log_event("fleet account file not compared; the fleet keeps its own",
                      level=logging.WARNING, path=rel, error=str(exc))
            return
        if not same:
            log_event("local account file differs from the fleet's; the fleet keeps its own",
                      level=logging.WARNING, path=rel)

    def _local_files(self) -> list[tuple[str, tuple[str, ...], bytes]]:
        """(relative path, its parts, content) of every regular account file."""
        out: list[tuple[str, tuple[str, ...], bytes]] = []
        root = self.accounts_dir
        if not root.is_dir():
            return out
        for directory, dirs, files in os.walk(root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(directory, d)))
            for name in sorted(files):
                path = Path(directory, name)
                rel = path.relative_to(root).as_posix()
                parts = _parts(rel)
                if parts is None:
                    continue
                try:
                    if not stat.S_ISREG(os.lstat(path).st_mode):
                        continue
                    body = fsutil.read_regular(path)
                except OSError as exc:
                    log_event("local account file not uploaded", level=logging.WARNING,
                              path=str(path), error=str(fsutil.store_error("read", path, exc)))
                    continue
                out.append((rel, parts, body))
        return out
