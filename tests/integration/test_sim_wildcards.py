"""The simulator against NJet's recorded behaviour for wildcard (`*.w.test`) and dot-prefixed
(`.d.test`) server names (../shared/njet-contract/wildcard-server-names.json): GET lists them
verbatim, PUT finds a block by the exact string or through NJet's virtual-host matching, a
name no block matches is code 4, and real handshakes by SNI serve what was recorded."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.contract import CONTRACT
from tests.fixtures.njetsim import s_client

RECORDED = json.loads((CONTRACT / "wildcard-server-names.json").read_text())
RECORDED_LISTEN = "127.0.0.1:28443"
CONF = """pid logs/njet.pid;
error_log logs/error.log info;
{{helpers}}
events { worker_connections 64; }
http {
    server { listen 127.0.0.1:{{port:https}} ssl; server_name *.w.test;
             ssl_certificate certs/w1.crt; ssl_certificate_key certs/w1.key;
             ssl_certificate_management acme; location / { return 200 "wild\\n"; } }
    server { listen 127.0.0.1:{{port:https}} ssl; server_name .d.test;
             ssl_certificate certs/w2.crt; ssl_certificate_key certs/w2.key;
             ssl_certificate_management acme; location / { return 200 "dot\\n"; } }
    server { listen 127.0.0.1:{{port:https}} ssl; server_name plain.test;
             ssl_certificate certs/w3.crt; ssl_certificate_key certs/w3.key;
             location / { return 200 "plain\\n"; } }
}
"""


def rsa_pair(cn: str) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def common_name(shown: str) -> str:
    """"c1" from the recorded "CN = c1, O = rec-c1" and from s_client's "O=rec-c1,CN=c1"."""
    found = re.search(r"CN ?= ?([^,]+)", shown)
    assert found, shown
    return found.group(1).strip()


@pytest.fixture
def sim(njetsim_factory: Any) -> Any:
    files: dict[str, bytes | str] = {}
    for i in (1, 2, 3):
        crt, key = rsa_pair(f"w{i}")
        files[f"conf/certs/w{i}.crt"], files[f"conf/certs/w{i}.key"] = crt, key
    started = njetsim_factory(CONF, files=files)
    started.wait_replayed()  # as NJet's own start-up replay, before anything is pushed
    return started


def check_served(sim: Any, recorded: dict[str, str]) -> None:
    port = sim.ports["https"]
    for sni, want in recorded.items():
        got = s_client("127.0.0.1", port, sni)
        assert "subject" in got, (sni, got)
        assert common_name(got["subject"]) == common_name(want), sni


def test_the_recorded_wildcard_exchanges_replay_against_the_simulator(sim: Any) -> None:
    listen = f"127.0.0.1:{sim.ports['https']}"
    for exchange in RECORDED["exchanges"]:
        req, want = exchange["request"], exchange["response"]
        if req["method"] == "GET":
            got = sim.api("GET", req["path"])
            assert got.status == want["status"]
            names = [s["serverNames"] for s in got.json["servers"]]
            assert names == [s["serverNames"] for s in want["body"]["servers"]]
            counts = [len(s.get("certificates", [])) for s in got.json["servers"]]
            assert counts == [len(s.get("certificates", [])) for s in want["body"]["servers"]]
        else:
            body = {**req["body"], "listens": [listen]}
            got = sim.api(req["method"], req["path"], body)
            expected = json.loads(json.dumps(want["body"]).replace(RECORDED_LISTEN, listen))
            assert (got.status, got.json) == (want["status"], expected), exchange["title"]
        check_served(sim, exchange["served_after"])
