"""One stored pair of the lego-layout store read from its files, and the stems that are no
certificate name.

Used by adapters/store/lego.py (LegoStore's scan and `get`), which caches what `parse_pair`
returns by the files' identities. `parse_pair` reads `<stem>.crt` and `<stem>.key` with
fsutil.read_regular (no symlink, no FIFO or device, at most 1 MiB): a pair that cannot be read
or parsed, has no key, or whose key does not match is a problem with the reason, naming the
files; its domain is the certificate's own spelling when that maps to the stem (a wildcard's
`*` is `_` in a file name). `refused_stems` takes out every stem with an "@" that is not a dual
block's `<name>@ecc` / `<name>@rsa`.
"""

from __future__ import annotations

import os
from pathlib import Path

from controller.adapters.store import fsutil
from controller.adapters.store.index import Ident, Parsed
from controller.adapters.store.scan import cert_url
from controller.certinfo import key_matches_cert, read_cert_info
from controller.errors import ConfigError
from controller.model import StoredCert
from controller.paths import SLOT_SEP, is_store_name, safe_file_name, stem_domain, validate_domain


def parse_pair(directory: Path, stem: str, ident: tuple[Ident, Ident | None, Ident | None]
               ) -> Parsed:
    """What the pair `<stem>.crt` / `<stem>.key` in `directory` (certificates/) holds, its files
    having the identities `ident` (.crt, .key, .json; None: absent): the StoredCert, or why it
    cannot be used (`problem`; a key that does not match still comes with its StoredCert)."""
    crt_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    domain = stem_domain(stem)

    def bad(problem: str) -> Parsed:
        return Parsed(ident=ident, domain=domain, stored=None, problem=problem)

    if ident[1] is None:
        return bad(f"certificate {crt_path} has no key file {key_path.name}")
    try:
        cert_pem, key_pem = fsutil.read_regular(crt_path), fsutil.read_regular(key_path)
    except OSError as exc:
        return bad(str(fsutil.store_error("read", Path(exc.filename or crt_path), exc)))
    try:
        info = read_cert_info(cert_pem)
    except ValueError as exc:
        return bad(f"certificate {crt_path} cannot be read: {exc}")
    for candidate in (info.common_name, *info.names[:1]):
        if candidate and _file_stem(candidate) == stem:
            domain = validate_domain(candidate)
            break
    try:
        matches = key_matches_cert(key_pem, cert_pem)
    except ValueError as exc:
        return bad(f"key {key_path} cannot be read: {exc}")
    stored = StoredCert(
        domain=domain,
        info=info,
        key_matches=matches,
        cert_url=cert_url(directory / f"{stem}.json") if ident[2] else None,
    )
    problem = None if matches else f"key {key_path} does not match certificate {crt_path}"
    return Parsed(ident=ident, domain=domain, stored=stored, problem=problem)


def refused_stems(directory: Path, *groups: dict[str, os.DirEntry[str]]) -> dict[str, str]:
    """Take every stem with an "@" that is not `<name>@ecc` / `<name>@rsa` out of `groups`;
    returns each as a problem (keyed by the stem) saying why."""
    out: dict[str, str] = {}
    for group in groups:
        for stem in [s for s in group if SLOT_SEP in s and not is_store_name(s)]:
            entry = group.pop(stem)
            out.setdefault(stem, (
                f"{directory / entry.name} is not a certificate name: only a dual block's"
                " second certificate has an \"@\", as <name>@ecc or <name>@rsa"))
    return out


def _file_stem(name: str) -> str | None:
    try:
        return safe_file_name(name)
    except ConfigError:
        return None
