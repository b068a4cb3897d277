"""Step 2 end to end: Pebble cert → NJet (simulator) through the live SSL API, proved served."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from controller.certinfo import fingerprint_pem, key_matches_cert, read_cert_info
from tests.e2e.harness import Prefix
from tests.e2e.njet_harness import (
    boot_files,
    controller_toml,
    served,
    served_fingerprint,
    sim_conf,
)

pytestmark = pytest.mark.pebble


def stored_fp(prefix: Prefix, name: str = "a.test") -> str:
    crt = (prefix.certs / f"{name}.crt").read_bytes()
    assert key_matches_cert((prefix.certs / f"{name}.key").read_bytes(), crt)
    return fingerprint_pem(crt)


def no_pair_without_key(prefix: Prefix) -> None:
    if not prefix.certs.exists():
        return
    for crt in prefix.certs.glob("*.crt"):
        if crt.name.endswith(".issuer.crt"):
            continue
        key = crt.with_suffix(".key")
        assert key.exists(), f"{crt} has no key"
        assert key_matches_cert(key.read_bytes(), crt.read_bytes())


def test_a_two_name_block_gets_a_pebble_cert_that_clients_then_receive(
    pebble: Any, njetsim_factory: Any
) -> None:
    sim = njetsim_factory(sim_conf(), files=boot_files())
    prefix = Prefix(sim.prefix)
    prefix.write_toml(controller_toml(pebble, sim))
    before = served(sim)
    assert "boot-a" in before["subject"]

    diff = prefix.cli("diff")
    assert diff.returncode == 2 and "+ issue" in diff.stdout and "a.test www.a.test" in diff.stdout

    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    fp = stored_fp(prefix)
    info = read_cert_info((prefix.certs / "a.test.crt").read_bytes())
    assert set(info.names) == {"a.test", "www.a.test"}
    for sni in ("a.test", "www.a.test"):
        assert served_fingerprint(sim, sni=sni) == fp
    # the bootstrap cert is EC, so the issued key follows it and ECDSA clients get it too
    assert served_fingerprint(sim, "-sigalgs", "ECDSA+SHA256") == fp

    again = prefix.cli("reconcile")
    assert again.returncode == 0 and stored_fp(prefix) == fp
    assert prefix.cli("diff").returncode == 0
    status = json.loads((prefix.root / ".lego" / "status" / "a.test.json").read_text())
    assert status["applied_fingerprint"] == fp
    assert "PRIVATE KEY" not in run.stderr + again.stderr


def test_http01_proxied_through_an_njet_location(
    pebble: Any, njetsim_factory: Any, tmp_path: Path
) -> None:
    from tests.fixtures.pebble import free_tcp_port

    sim = njetsim_factory(sim_conf(http_port=pebble.http_port), files=boot_files())
    prefix = Prefix(sim.prefix)
    own = free_tcp_port()
    prefix.write_toml(
        controller_toml(
            pebble,
            sim,
            httpChallengeServerAddress=f":{own}",
            proxyHttpChallengeServerIp="127.0.0.1",
            httpValidationPort=pebble.http_port,
        )
    )
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    assert "challenge location added" in run.stderr
    assert served_fingerprint(sim) == stored_fp(prefix)
    locations = sim.api("GET", "/api/v1/config/http_log").json
    assert not any(
        loc["location"].startswith("^~ /.well-known/acme-challenge/")
        for srv in locations["servers"]
        for loc in srv.get("locations", [])
    ), "the challenge location must be removed after the order"


def test_http01_through_njet_needs_a_port80_server_for_the_name(
    pebble: Any, njetsim_factory: Any
) -> None:
    from tests.fixtures.pebble import free_tcp_port

    sim = njetsim_factory(sim_conf(), files=boot_files())
    prefix = Prefix(sim.prefix)
    prefix.write_toml(
        controller_toml(
            pebble,
            sim,
            httpChallengeServerAddress=f"127.0.0.1:{free_tcp_port()}",
            proxyHttpChallengeServerIp="127.0.0.1",
            httpValidationPort=pebble.http_port,
        )
    )
    run = prefix.cli("reconcile")
    assert run.returncode == 1
    assert f"listens on 127.0.0.1:{pebble.http_port}" in run.stderr
    # both names lack a port-80 server; whichever authorization fails first is named
    assert re.search(r"server_name (www\.)?a\.test;", run.stderr)


def test_tls_alpn01_through_the_stream_ssl_preread_route(pebble: Any, njetsim_factory: Any) -> None:
    from tests.fixtures.pebble import free_tcp_port

    responder = free_tcp_port()
    stream = f"""
stream {{
    map $ssl_preread_alpn_protocols $acme_upstream {{
        "~(^|,)acme-tls/1(,|$)"  127.0.0.1:{responder};
        default                  127.0.0.1:{{{{port:https}}}};
    }}
    server {{
        listen 127.0.0.1:{pebble.tls_port};
        ssl_preread on;
        proxy_pass $acme_upstream;
    }}
}}
"""
    sim = njetsim_factory(sim_conf(stream=stream), files=boot_files())
    prefix = Prefix(sim.prefix)
    prefix.write_toml(
        controller_toml(
            pebble, sim, challengeType="tls", tlsChallengeServerAddress=f"127.0.0.1:{responder}"
        )
    )
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    fp = stored_fp(prefix)
    assert served_fingerprint(sim) == fp
    # ordinary clients through the stream port reach the https server with the new cert
    via_stream = served(sim, "-alpn", "http/1.1")
    assert via_stream.get("sha256") is not None


def test_a_left_over_challenge_location_is_removed_and_does_not_block(
    pebble: Any, njetsim_factory: Any
) -> None:
    from tests.fixtures.pebble import free_tcp_port

    sim = njetsim_factory(sim_conf(http_port=pebble.http_port), files=boot_files())
    own = free_tcp_port()
    left = sim.api(
        "POST",
        "/api/v1/dyn_loc",
        {
            "type": "add",
            "addr_port": f"127.0.0.1:{pebble.http_port}",
            "server_name": "a.test",
            "locations": [
                {
                    "location_rule": "^~",
                    "location_name": "/.well-known/acme-challenge/",
                    "proxy_pass": f"http://127.0.0.1:{own}",
                }
            ],
        },
    )
    assert left.json["code"] == 0
    prefix = Prefix(sim.prefix)
    prefix.write_toml(
        controller_toml(
            pebble,
            sim,
            httpChallengeServerAddress=f"127.0.0.1:{own}",
            proxyHttpChallengeServerIp="127.0.0.1",
            httpValidationPort=pebble.http_port,
        )
    )
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    assert "left-over challenge location" in run.stderr
    assert served_fingerprint(sim) == stored_fp(prefix)


def test_njet_api_down_issues_into_the_store_and_applies_when_back(
    pebble: Any, njetsim_factory: Any
) -> None:
    sim = njetsim_factory(sim_conf(), files=boot_files())
    prefix = Prefix(sim.prefix)
    prefix.write_toml(controller_toml(pebble, sim))
    sim.set_fault(api="down")
    run = prefix.cli("reconcile")
    assert run.returncode == 1
    assert "NjetUnreachable" in run.stderr
    no_pair_without_key(prefix)
    assert "boot-a" in served(sim)["subject"]
    sim.reset_faults()
    back = prefix.cli("reconcile")
    assert back.returncode == 0, back.stderr
    assert served_fingerprint(sim) == stored_fp(prefix)


def test_an_edited_but_not_reloaded_block_waits_for_a_reload(
    pebble: Any, njetsim_factory: Any
) -> None:
    sim = njetsim_factory(sim_conf(), files=boot_files())
    prefix = Prefix(sim.prefix)
    prefix.write_toml(controller_toml(pebble, sim))
    assert prefix.cli("reconcile").returncode == 0
    conf = sim.prefix / "conf" / "njet.conf"
    conf.write_text(conf.read_text().replace("a.test www.a.test;", "n.test www.a.test;", 1))
    diff = prefix.cli("diff")
    assert diff.returncode == 2
    assert "+ issue  n.test www.a.test" in diff.stdout
    assert "[WaitingForReload]" in diff.stdout
    run = prefix.cli("reconcile")
    assert run.returncode == 1 and "WaitingForReload" in run.stderr
    assert (prefix.certs / "n.test.crt").exists(), "issued ahead of the reload"
    sim.reload()
    assert prefix.cli("reconcile").returncode == 0
    assert served_fingerprint(sim, sni="n.test") == stored_fp(prefix, "n.test")
