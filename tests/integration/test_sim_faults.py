"""The simulator's test switches (/__sim/fault) and its NJet behaviours outside the replay.

Each test starts its own simulator (the `njetsim` fixture: managed TLS a.test/www.a.test on
ports["https"] with an EC bootstrap cert, plain a.test on ports["http"], ctrl API, broker).
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.fixtures.njetsim import NjetSim, ec_cert, free_port, retained, s_client


def put_body(sim: NjetSim, cert: bytes, key: bytes, *, kind: str = "ecc",
             path_form: bool = False) -> dict[str, object]:
    if path_form:
        crt_path, key_path = sim.prefix / "certs" / "new.crt", sim.prefix / "certs" / "new.key"
        crt_path.parent.mkdir(exist_ok=True)
        crt_path.write_bytes(cert)
        key_path.write_bytes(key)
        crt_path.chmod(0o644)
        key_path.chmod(0o600)
        material = {"certificate": str(crt_path), "certificateKey": str(key_path)}
    else:
        material = {"certificate": "data:" + cert.decode(),
                    "certificateKey": "data:" + key.decode()}
    return {"listens": [f"127.0.0.1:{sim.ports['https']}"], "serverNames": ["a.test"],
            "type": "add", "cert_info": {"cert_type": kind, **material}}


def served_serial(sim: NjetSim) -> str | None:
    return s_client("127.0.0.1", sim.ports["https"], "a.test").get("serial")


def serial_of(cert: bytes) -> str:
    from cryptography import x509

    value = f"{x509.load_pem_x509_certificate(cert).serial_number:X}"
    return "0" + value if len(value) % 2 else value


def refused(sim: NjetSim) -> bool:
    host, _, port = sim.api_url.removeprefix("http://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_api_down_refuses_connections_until_switched_back_up(njetsim: NjetSim) -> None:
    njetsim.set_fault(api="down")
    assert refused(njetsim)
    njetsim.set_fault(api="up")
    assert njetsim.api("GET", "/api/v1/ssl").status == 200


def test_api_down_for_a_while_reopens_by_itself(njetsim: NjetSim) -> None:
    njetsim.set_fault(api_down_for=0.5)
    assert refused(njetsim)
    njetsim.wait(lambda s: s["api_up"], timeout=10, what="API back up")
    assert njetsim.api("GET", "/api/v1/config").json == ["njt_http_kv_module", "http_log"]


def test_slow_delays_every_api_answer(njetsim: NjetSim) -> None:
    njetsim.set_fault(slow=0.4)
    began = time.monotonic()
    assert njetsim.api("GET", "/api/v1/ssl").status == 200
    assert time.monotonic() - began >= 0.4
    njetsim.reset_faults()
    assert njetsim.state()["faults"]["slow"] == 0


def test_injected_reply_answers_only_the_next_put(njetsim: NjetSim) -> None:
    cert, key = ec_cert(["a.test"], "put-1")
    njetsim.set_fault(put_ssl_reply={"code": 4, "msg": " dyn ssl update fail",
                                     "data": ["injected"]})
    first = njetsim.api("PUT", "/api/v1/ssl", put_body(njetsim, cert, key))
    assert (first.status, first.json) == (200, {"data": ["injected"], "code": 4,
                                                "msg": " dyn ssl update fail"})
    assert served_serial(njetsim) != serial_of(cert)
    second = njetsim.api("PUT", "/api/v1/ssl", put_body(njetsim, cert, key))
    assert second.json == {"code": 0, "msg": "success."}
    assert served_serial(njetsim) == serial_of(cert)


def test_not_served_answers_success_but_keeps_serving_the_old_cert(njetsim: NjetSim) -> None:
    # after the start-up replay of retained records (a PUT landing during it on a loaded
    # machine is replayed into the worker: served after all), with the bootstrap pair served
    njetsim.wait_replayed()
    before = serial_of((njetsim.prefix / "conf" / "certs" / "boot-a.crt").read_bytes())
    deadline = time.monotonic() + 10
    while served_serial(njetsim) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served_serial(njetsim) == before
    cert, key = ec_cert(["a.test"], "put-1")
    njetsim.set_fault(not_served=1)
    assert njetsim.api("PUT", "/api/v1/ssl", put_body(njetsim, cert, key)).json["code"] == 0
    listed = njetsim.api("GET", "/api/v1/ssl").json["servers"][0]["certificates"]
    assert listed[-1]["certificate"] == "data:" + cert.decode()
    assert served_serial(njetsim) == before


def test_key_the_worker_cannot_read_breaks_the_block_and_empties_the_record(
        njetsim: NjetSim) -> None:
    cert, key = ec_cert(["a.test"], "put-0600")
    answer = njetsim.api("PUT", "/api/v1/ssl", put_body(njetsim, cert, key, path_form=True))
    assert answer.json == {"code": 0, "msg": "success."}  # the root agent could read it
    failed = s_client("127.0.0.1", njetsim.ports["https"], "a.test")
    assert failed.get("handshake") == "failed" and "alert number 40" in failed["error"]
    deadline = time.monotonic() + 5
    while retained(njetsim.broker_socket, ("/ins/ssl/#",)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert retained(njetsim.broker_socket, ("/ins/ssl/#",)) == []
    good, good_key = ec_cert(["a.test"], "put-inline")
    njetsim.api("PUT", "/api/v1/ssl", put_body(njetsim, good, good_key))
    assert served_serial(njetsim) == serial_of(good)


def test_retained_records_come_back_after_a_restart_once_replayed(njetsim: NjetSim) -> None:
    boot = served_serial(njetsim)
    cert, key = ec_cert(["a.test"], "put-1")
    njetsim.api("PUT", "/api/v1/ssl", put_body(njetsim, cert, key))
    njetsim.replay_delay = 1.5
    njetsim.restart()
    assert served_serial(njetsim) == boot  # bootstrap cert until the replay
    njetsim.wait_replayed()
    assert served_serial(njetsim) == serial_of(cert)


def test_broker_down_drops_the_socket_and_up_brings_the_records_back(njetsim: NjetSim) -> None:
    cert, key = ec_cert(["a.test"], "put-1")
    body = put_body(njetsim, cert, key)
    njetsim.api("PUT", "/api/v1/ssl", body)
    njetsim.set_fault(broker="down")
    with pytest.raises(OSError):
        retained(njetsim.broker_socket)
    second, second_key = ec_cert(["a.test"], "put-2")
    assert njetsim.api("PUT", "/api/v1/ssl", put_body(njetsim, second, second_key)).json[
        "code"] == 0  # NJet answers; the record is simply not stored
    njetsim.set_fault(broker="up")
    records = retained(njetsim.broker_socket, ("/ins/ssl/#",))
    assert [json.loads(payload) for _topic, payload in records] == [body]


def test_state_lists_the_served_certificate_of_each_block(njetsim: NjetSim) -> None:
    blocks = njetsim.served()
    tls = blocks[("a.test", "www.a.test")]
    assert tls["managed"] and set(tls["served"]) == {"ecc"}
    assert tls["served"]["ecc"]["serial"] == served_serial(njetsim)
    assert blocks[("a.test",)]["served"] == {}


def test_dyn_srv_on_a_new_port_opens_and_closes_that_socket(njetsim: NjetSim) -> None:
    sim = njetsim
    assert sim.api("POST", "/api/v1/dyn_srv", {
        "type": "add", "addr_port": f"127.0.0.1:{sim.ports['http']}", "server_name": "a.test",
        "server_body": "return 200 'x';"}).json["code"] == 5  # the static block exists
    new = free_port()
    add = {"type": "add", "addr_port": f"127.0.0.1:{new}", "server_name": "new.test",
           "server_body": 'return 200 "new\\n";'}
    assert sim.api("POST", "/api/v1/dyn_srv", add).json == {"code": 0, "msg": "success."}
    with socket.create_connection(("127.0.0.1", new), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: new.test\r\nConnection: close\r\n\r\n")
        assert s.recv(4096).endswith(b"\r\n\r\nnew\n")
    delete = {"type": "del", "addr_port": f"127.0.0.1:{new}", "server_name": "new.test"}
    assert sim.api("PUT", "/api/v1/dyn_srv", delete).json["code"] == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", new), timeout=2)
