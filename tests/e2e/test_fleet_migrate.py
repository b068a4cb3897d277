"""`store migrate` end to end (controller/cli_store.py): a single node with the file backend gets
three certificates from a real Pebble (store-only, `reconcile`), copies them into a real
PostgreSQL (`--from file --to postgres`), and a new, empty prefix copies them back out
(`--from postgres --to file`), through the real CLI each time.

What is checked: exit 0 with every serial printed; the database rows carry the same serials
with sealed keys; the files written in the new prefix are the same certificates (serial,
fingerprint), each key matches its certificate and is 0600; a `reconcile` of the new prefix in
fleet mode orders nothing (Pebble's own log); migrating again is idempotent ("already there");
a different certificate under the same name in the target is refused and left as it was, in
both directions (exit 1, the name in the message).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from controller.certinfo import key_matches_cert, read_cert_info
from tests.e2e.harness import Prefix, store_only_toml

pytestmark = pytest.mark.pebble

NAMES = ["m0.migrate.test", "m1.migrate.test", "m2.migrate.test"]
_ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+)", re.I)


def conf(names: list[str]) -> str:
    blocks = "".join(
        "    server {\n        listen 127.0.0.1:8443 ssl;\n"
        f"        server_name {n};\n        ssl_certificate_management acme;\n    }}\n"
        for n in names)
    return "http {\n" + blocks + "}\n"


def issued(pebble: Any) -> set[int]:
    """Serials Pebble issued so far, from its own log."""
    text = Path(pebble.log_path).read_text(errors="replace")
    return {int(s, 16) for s in _ISSUED.findall(text)}


def stored(prefix: Prefix) -> dict[str, tuple[str, str]]:
    """name -> (serial, fingerprint) of every pair under .lego/certificates/, each checked:
    the key matches the certificate and is 0600."""
    out = {}
    for crt in sorted(prefix.certs.glob("*.crt")):
        if crt.name.endswith(".issuer.crt"):
            continue
        key = crt.with_suffix(".key")
        assert key_matches_cert(key.read_bytes(), crt.read_bytes()), crt
        assert key.stat().st_mode & 0o777 == 0o600, key
        info = read_cert_info(crt.read_bytes())
        out[crt.name.removesuffix(".crt")] = (info.serial, info.fingerprint)
    return out


def fleet_toml(pebble: Any, dsn: str, key_file: Path) -> dict[str, Any]:
    return {**store_only_toml(pebble),
            "store": {"backend": "postgres", "dsn": dsn, "encryptionKeyFile": str(key_file)}}


def db_rows(dsn: str) -> dict[str, tuple[str, str, str, bool]]:
    """key -> (serial, fingerprint, key_alg, key in clear?)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT key, serial, fingerprint, key_alg, "
            "position('PRIVATE KEY'::bytea in key_sealed) > 0 FROM certs").fetchall()
    return {str(k): (str(s), str(f), str(a), bool(c)) for k, s, f, a, c in rows}


def test_file_to_postgres_to_a_new_prefix_without_reissuing(
        tmp_path: Path, pebble_factory: Any, pg_dsn: str) -> None:
    pebble = pebble_factory(nonce_reject_percent=0)
    key_file = tmp_path / "fleet.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)

    # one node, file backend: three certificates from Pebble
    first = Prefix(tmp_path / "first")
    first.write_conf(conf(NAMES))
    first.write_toml(store_only_toml(pebble))
    run = first.cli("reconcile")
    assert run.returncode == 0, run.stdout + run.stderr
    original = stored(first)
    assert sorted(original) == NAMES
    assert {int(s, 16) for s, _ in original.values()} <= issued(pebble)

    # into the database
    first.write_toml(fleet_toml(pebble, pg_dsn, key_file))
    up = first.cli("store", "migrate", "--from", "file", "--to", "postgres")
    assert up.returncode == 0, up.stdout + up.stderr
    for name, (serial, _) in original.items():
        assert f"copied {name} serial {serial}" in up.stdout, up.stdout
    assert "3 certificates copied to database" in up.stdout
    rows = db_rows(pg_dsn)
    assert {k: (s, f) for k, (s, f, _, _) in rows.items()} == original
    assert {alg for _, _, alg, _ in rows.values()} == {"aes-256-gcm"}
    assert not any(clear for *_, clear in rows.values())
    assert stored(first) == original  # the source is left as it was

    again = first.cli("store", "migrate", "--from", "file", "--to", "postgres")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 certificates copied" in again.stdout and "(3 already there)" in again.stdout

    # back out, into a new and empty prefix with the same TOML
    second = Prefix(tmp_path / "second")
    second.write_conf(conf(NAMES))
    second.write_toml(fleet_toml(pebble, pg_dsn, key_file))
    down = second.cli("store", "migrate", "--from", "postgres", "--to", "file")
    assert down.returncode == 0, down.stdout + down.stderr
    for name, (serial, _) in original.items():
        assert f"copied {name} serial {serial}" in down.stdout, down.stdout
    assert stored(second) == original
    again = second.cli("store", "migrate", "--from", "postgres", "--to", "file")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(3 already there)" in again.stdout
    assert stored(second) == original

    # the new node, fleet mode: nothing to order
    before = issued(pebble)
    diff = second.cli("diff")
    assert diff.returncode == 0, diff.stdout + diff.stderr
    rec = second.cli("reconcile")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert issued(pebble) == before
    assert stored(second) == original
    assert {k: (s, f) for k, (s, f, _, _) in db_rows(pg_dsn).items()} == original

    # a third node that never migrated anything: its first pass pulls, orders nothing
    third = Prefix(tmp_path / "third")
    third.write_conf(conf(NAMES))
    third.write_toml(fleet_toml(pebble, pg_dsn, key_file))
    rec = third.cli("reconcile")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert issued(pebble) == before
    assert stored(third) == original


def test_a_different_certificate_under_the_same_name_is_refused_both_ways(
        tmp_path: Path, pebble_factory: Any, pg_dsn: str) -> None:
    pebble = pebble_factory(nonce_reject_percent=0)
    key_file = tmp_path / "fleet.key"
    key_file.write_bytes(os.urandom(32).hex().encode() + b"\n")
    names = NAMES[:2]

    first = Prefix(tmp_path / "first")
    first.write_conf(conf(names))
    first.write_toml(store_only_toml(pebble))
    assert first.cli("reconcile").returncode == 0
    first.write_toml(fleet_toml(pebble, pg_dsn, key_file))
    assert first.cli("store", "migrate", "--from", "file", "--to", "postgres").returncode == 0
    in_db = {k: (s, f) for k, (s, f, _, _) in db_rows(pg_dsn).items()}

    # another node issued its own certificate of m0 (file backend, same Pebble)
    other = Prefix(tmp_path / "other")
    other.write_conf(conf(names[:1]))
    other.write_toml(store_only_toml(pebble))
    assert other.cli("reconcile").returncode == 0
    theirs = stored(other)
    assert theirs[names[0]] != in_db[names[0]]

    other.write_toml(fleet_toml(pebble, pg_dsn, key_file))
    up = other.cli("store", "migrate", "--from", "file", "--to", "postgres")
    assert up.returncode == 1, up.stdout + up.stderr
    assert f"not copied: {names[0]}" in up.stderr and "another certificate" in up.stderr
    assert {k: (s, f) for k, (s, f, _, _) in db_rows(pg_dsn).items()} == in_db
    assert stored(other) == theirs

    # the other way: the files hold their m0; m1 is copied, m0 is not overwritten
    down = other.cli("store", "migrate", "--from", "postgres", "--to", "file")
    assert down.returncode == 1, down.stdout + down.stderr
    assert f"not copied: {names[0]}" in down.stderr and "not overwritten" in down.stderr
    assert f"copied {names[1]} serial {in_db[names[1]][0]}" in down.stdout
    after = stored(other)
    assert after[names[0]] == theirs[names[0]] and after[names[1]] == in_db[names[1]]
