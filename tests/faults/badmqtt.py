"""Hypothesis strategies and oracles for the MQTT family of tests/faults/test_bad_input.py.

Payloads are random bytes, random JSON, and NJet's recorded event and /ins/srv payloads
(shared/njet-contract/mqtt-*.jsonl) mutated byte-wise or with a value replaced; strings often
carry a PEM private key (whole, base64 body only, or inline as `data:`) so the oracle
`assert_no_secret` can check that error messages never echo it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.contract import CONTRACT


def _recorded_payloads() -> list[bytes]:
    """NJet's recorded event and /ins/srv payloads, as the broker delivered them."""
    out: list[bytes] = []
    for name in ("mqtt-events.jsonl", "mqtt-all-topics.jsonl"):
        for line in (CONTRACT / name).read_text().splitlines():
            rec = json.loads(line)
            topic = rec["topic"]
            if topic.endswith("/event/request") or "/ins/srv/" in topic:
                payload = rec["payload"]
                out.append(payload.encode() if isinstance(payload, str) else
                           json.dumps(payload).encode())  # fmt: skip
    return sorted(set(out))


RECORDED = _recorded_payloads()
_FIELDS = ["action", "domains", "server_name", "server_addr", "ca_type", "type", "addr_port",
           "listen_option", "server_body", "extra"]  # fmt: skip


def pem_body(pem: str) -> str:
    return "".join(ln for ln in pem.splitlines() if ln and not ln.startswith("-----"))


def secret_strings(secret: str) -> st.SearchStrategy[str]:
    """`secret` (a PEM key) as a payload might carry it: whole, inline, or its base64 alone."""
    return st.sampled_from([
        secret, f"data:{secret}", pem_body(secret), "data:" + pem_body(secret),
        f"ssl_certificate_key data:{secret}; ssl_certificate_management acme;",
    ])


def json_with_secret(secret: str) -> st.SearchStrategy[Any]:
    """Random JSON whose strings sometimes carry `secret` (a PEM private key) whole or inline."""
    leaf = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
        st.text(max_size=10),
        st.sampled_from(["generateCertificate", "deleteCertificate", "add", "del", "ssl",
                         "a.test", "127.0.0.1:8443"]),
        secret_strings(secret),
    )  # fmt: skip
    return st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=5), inner, max_size=5),
        max_leaves=12,
    )


def _replace_at(doc: Any, path: list[int], value: Any) -> Any:
    """`doc` with the node reached by following `path` (indices modulo size) set to `value`."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc)[path[0] % len(doc)]
        return {**doc, key: _replace_at(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], _replace_at(doc[i], path[1:], value), *doc[i + 1 :]]


def _mutate_bytes(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, val in ops:
        i = pos % (len(buf) + 1)
        if kind == 0:
            del buf[i : i + 1 + val % 8]
        elif kind == 1:
            buf[i:i] = bytes([val % 256])
        elif kind == 2 and i < len(buf):
            buf[i] ^= 1 << (val % 8)
        else:
            del buf[i:]
    return bytes(buf)


def mqtt_payload(secret: str) -> st.SearchStrategy[bytes]:
    recorded = st.sampled_from(RECORDED)
    documents = st.sampled_from([json.loads(p) for p in RECORDED if p])
    return st.one_of(
        st.binary(max_size=300),
        json_with_secret(secret).map(lambda d: json.dumps(d).encode()),
        st.builds(
            lambda doc, path, value: json.dumps(_replace_at(doc, path, value)).encode(),
            documents, st.lists(st.integers(0, 50), max_size=4), json_with_secret(secret),
        ),
        st.builds(  # one field of a real payload replaced by the key
            lambda doc, path, value: json.dumps(_replace_at(doc, path, value)).encode(),
            documents, st.lists(st.integers(0, 50), min_size=1, max_size=2),
            secret_strings(secret),
        ),
        st.builds(
            _mutate_bytes, recorded,
            st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**5), st.integers(0, 255)),
                     min_size=1, max_size=5),
        ),
    )


def key_fragments(key_pem: str, other_key_pem: str) -> list[str]:
    """Pieces of a PEM key that must never show up in an error message: the PEM label and every
    16-character window of its base64 body that is not shared with another key of the same type
    (the shared parts are the constant algorithm header, not secret)."""
    body, other = pem_body(key_pem), pem_body(other_key_pem)
    windows = {body[i : i + 16] for i in range(0, max(1, len(body) - 15), 4)}
    return ["PRIVATE KEY", *sorted(w for w in windows if w not in other)]


def assert_no_secret(message: str, fragments: list[str]) -> None:
    leaked = [f for f in fragments if f and f in message]
    assert not leaked, f"error message echoes the private key ({leaked[0]!r}): {message[:300]}"

