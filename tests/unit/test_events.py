"""controller.events on NJet's recorded payloads (njet-contract) and on malformed input, and the
names of runtime-announced servers (wildcards with and without [dns]) against njet.conf's rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.desired import desired_from_servers
from controller.events import (
    EventAction,
    EventDomain,
    EventError,
    RuntimeServer,
    body_is_managed,
    parse_event,
    parse_srv_record,
    specs_from_domains,
    specs_from_servers,
)
from controller.model import Source
from controller.njetconf import http_servers, parse_text
from tests.contract import CONTRACT


def _lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CONTRACT / name).read_text().splitlines() if line]


def _wire(payload: Any) -> bytes:
    return b"" if payload == "" else json.dumps(payload).encode()


EVENTS = _lines("mqtt-events.jsonl")
# /ins/srv/* (retained records) and /worker_a/ins/srv/* (the same bodies, as sent to workers)
SRV_MESSAGES = [m for m in _lines("mqtt-all-topics.jsonl") if "/ins/srv/" in m["topic"]]


@pytest.mark.parametrize("msg", EVENTS, ids=lambda m: f"{m['trigger'][:30]}-{m['payload_len']}")
def test_every_recorded_event_payload_parses_to_what_njet_sent(msg: dict[str, Any]) -> None:
    event = parse_event(_wire(msg["payload"]))
    if msg["payload_len"] == 0:
        assert event is None
        return
    assert event is not None
    assert event.action == msg["payload"]["action"]
    assert [list(d.server_names) for d in event.domains] == [
        d["server_name"] for d in msg["payload"]["domains"]
    ]
    assert [list(d.server_addrs) for d in event.domains] == [
        d["server_addr"] for d in msg["payload"]["domains"]
    ]
    assert [d.ca_type for d in event.domains] == [
        d.get("ca_type") for d in msg["payload"]["domains"]
    ]


def test_the_recording_holds_both_actions_and_the_empty_clearing_payloads() -> None:
    actions = {json.dumps(m["payload"]).split('"')[3] for m in EVENTS if m["payload"]}
    assert actions == {"generateCertificate", "deleteCertificate"}
    assert sum(1 for m in EVENTS if m["payload_len"] == 0) >= 5


def test_a_start_batch_becomes_one_spec_per_managed_block() -> None:
    start = next(m for m in EVENTS if m["trigger"] == "fresh start" and m["payload"])
    event = parse_event(_wire(start["payload"]))
    assert event is not None and event.action is EventAction.GENERATE
    result = specs_from_domains(event.domains)
    assert [(s.domain, s.names, s.listens) for s in result.specs] == [
        ("a.test", ("a.test", "www.a.test"), ("127.0.0.1:8443",)),
        ("b.test", ("b.test",), ("0.0.0.0:8444",)),
        ("v6.test", ("v6.test",), ("[::1]:8445",)),
    ]
    assert all(s.source is Source.EVENT for s in result.specs)
    assert result.warnings == ()


def test_a_failed_dyn_srv_add_gives_a_delete_with_no_listens() -> None:
    failed = next(m for m in EVENTS if "78-post" in m["trigger"] and m["payload"])
    event = parse_event(_wire(failed["payload"]))
    assert event is not None
    assert event.action is EventAction.DELETE
    assert event.domains == (EventDomain(("bad.test",), (), None),)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "malformed NJet certificate event"),
        (b"[]", "malformed"),
        (b'{"action":"generateCertificate"}', "domains"),
        (b'{"action":"generateCertificate","domains":[{"server_addr":[]}]}', "server_name"),
        (b'{"action":"generateCertificate","domains":[{"server_name":"a.test"}]}', "server_name"),
        (b'{"action":"generateCertificate","domains":[{"server_name":[1]}]}', "server_name"),
        (b'{"action":"renewAll","domains":[]}', "unknown NJet certificate event action"),
        (b'{"action":7,"domains":[]}', "action"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_malformed_event_payloads_raise_event_error_naming_the_problem(
    payload: bytes, fragment: str
) -> None:
    with pytest.raises(EventError, match=fragment):
        parse_event(payload)


def test_event_error_is_a_value_error_and_never_echoes_the_payload() -> None:
    secret = (
        b'{"action":"generateCertificate","domains":[{"server_name":"-----BEGIN PRIVATE KEY"}]}'
    )
    with pytest.raises(ValueError) as info:
        parse_event(secret)
    assert "PRIVATE KEY" not in str(info.value)


def test_extra_fields_in_an_event_are_tolerated() -> None:
    event = parse_event(
        b'{"action":"deleteCertificate","v":2,"domains":[{"server_name":["x.test"],"zone":"z"}]}'
    )
    assert event is not None and event.domains[0].server_addrs == ()


@pytest.mark.parametrize(
    "msg", [m for m in SRV_MESSAGES if m["payload"]], ids=lambda m: f"{m['topic']}-{m['retain']}"
)
def test_every_recorded_srv_message_parses(msg: dict[str, Any]) -> None:
    server = parse_srv_record(_wire(msg["payload"]))
    body = msg["payload"]
    if body["type"] == "del":
        assert server is None
        return
    assert server is not None
    assert server.addr_port == body["addr_port"]
    assert server.server_name == body["server_name"]
    assert server.listen_ssl == (body.get("listen_option") == "ssl")
    assert server.managed == ("ssl_certificate_management acme;" in body["server_body"])


def test_the_recorded_dyn_srv_records_say_which_servers_are_managed() -> None:
    adds = {
        s.server_name: s
        for m in SRV_MESSAGES
        if m["payload"] and (s := parse_srv_record(_wire(m["payload"]))) is not None
    }
    assert adds["dyn.test"] == RuntimeServer("127.0.0.1:8443", "dyn.test", True, True)
    assert adds["newport.test"].managed
    assert not adds["plain.test"].managed and not adds["plain.test"].listen_ssl
    assert not adds["k600.test"].managed
    specs = specs_from_servers(adds.values()).specs
    assert {(s.domain, s.listens) for s in specs} == {
        ("dyn.test", ("127.0.0.1:8443",)),
        ("newport.test", ("127.0.0.1:8447",)),
        ("bad.test", ("127.0.0.1:8443",)),
    }


def test_a_cleared_srv_record_is_none() -> None:
    assert parse_srv_record(b"") is None


@pytest.mark.parametrize(
    "payload",
    [b"nope", b'{"type":"add"}', b'{"type":"mod","addr_port":"a:1","server_name":"x"}'],
)
def test_malformed_srv_records_raise_event_error(payload: bytes) -> None:
    with pytest.raises(EventError, match="/ins/srv record"):
        parse_srv_record(payload)


@pytest.mark.parametrize(
    ("body", "managed"),
    [
        ("ssl_certificate_management acme;", True),
        ("  ssl_certificate_management   ACME ;\n return 200;", True),
        ("ssl_certificate x.crt;ssl_certificate_management acme;", True),
        ("# ssl_certificate_management acme;\nreturn 200;", False),
        ('return 200 "ssl_certificate_management acme;";', False),
        ("location / { ssl_certificate_management acme; }", False),
        ("ssl_certificate_management off;", False),
        ("ssl_certificate_management_x acme;", False),
        ('return 200 "a;b"; ssl_certificate_management acme;', True),
        ("location / { return 200; } ssl_certificate_management acme;", True),
        ("ssl_certificate_management acme", True),  # unterminated last statement
        ("}} ssl_certificate_management acme; {", True),
        ("", False),
    ],
)
def test_server_body_management_detection(body: str, managed: bool) -> None:
    assert body_is_managed(body) is managed


def test_invalid_and_wildcard_names_are_skipped_and_reported() -> None:
    domains = [
        EventDomain(("_", "WWW.Example.TEST", "www.example.test", "*.x.test"), ("1.2.3.4:443",)),
        EventDomain(("~^re.*$", "../etc"), ("1.2.3.4:443",)),
        EventDomain(("ok.test",), ("1.2.3.4:443", "1.2.3.4:443")),
    ]
    result = specs_from_domains(domains)
    assert [(s.domain, s.names, s.listens) for s in result.specs] == [
        ("www.example.test", ("www.example.test",), ("1.2.3.4:443",)),
        ("ok.test", ("ok.test",), ("1.2.3.4:443",)),
    ]
    reported = {w.name for w in result.warnings}
    assert {"_", "*.x.test", "~^re.*$", "../etc"} <= reported
    assert any("no usable server name" in w.reason for w in result.warnings)
    assert all(w.origin == "event" for w in result.warnings)


def test_a_managed_dynamic_server_without_ssl_is_reported_not_specified() -> None:
    result = specs_from_servers([RuntimeServer("127.0.0.1:8080", "p.test", True, False)])
    assert result.specs == ()
    assert "does not listen with ssl" in result.warnings[0].reason


# --- wildcard and dot-prefixed names: njet.conf's rule (controller/servernames.py) -------------

WILD_DOMAINS = (
    EventDomain(("*.W.test",), ("127.0.0.1:28443",), "acme"),  # as NJet sends it (verbatim)
    EventDomain((".d.test",), ("127.0.0.1:28443",), "acme"),
)


def test_with_dns_a_runtime_wildcard_is_issued_as_is_and_a_dot_name_as_both_halves() -> None:
    result = specs_from_domains(WILD_DOMAINS, wildcards=True)
    assert [(s.domain, s.names, s.listens, s.key) for s in result.specs] == [
        ("*.w.test", ("*.w.test",), ("127.0.0.1:28443",), "*.w.test"),
        ("d.test", ("d.test", "*.d.test"), ("127.0.0.1:28443",), "d.test"),
    ]
    assert all(s.source is Source.EVENT for s in result.specs)
    assert result.warnings == ()


def test_without_dns_a_runtime_wildcard_is_a_warning_and_a_dot_name_gives_its_base() -> None:
    result = specs_from_domains(WILD_DOMAINS)
    assert [(s.domain, s.names) for s in result.specs] == [("d.test", ("d.test",))]
    by_name = {w.name: w.reason for w in result.warnings}
    assert "configure a DNS provider in a [dns] section" in by_name["*.W.test"]
    assert by_name[".d.test"].startswith("a leading dot means d.test and *.d.test")
    assert "no usable server name (got '*.W.test')" in by_name[""]


def test_with_dns_an_event_wildcard_is_issued_and_other_bad_names_stay_warnings() -> None:
    domains = [
        EventDomain(("_", "WWW.Example.TEST", "www.example.test", "*.x.test"), ("1.2.3.4:443",)),
        EventDomain(("~^re.*$", "../etc", "x.*", "*.*.test"), ("1.2.3.4:443",)),
    ]
    result = specs_from_domains(domains, wildcards=True)
    assert [(s.domain, s.names) for s in result.specs] == [
        ("www.example.test", ("www.example.test", "*.x.test")),
    ]
    reported = {w.name for w in result.warnings}
    assert {"_", "~^re.*$", "../etc", "x.*", "*.*.test"} <= reported
    assert "*.x.test" not in reported


@pytest.mark.parametrize("wildcards", [False, True], ids=["no-dns", "dns"])
def test_retained_srv_records_with_wildcard_names_follow_the_same_rule(wildcards: bool) -> None:
    servers = [
        RuntimeServer("127.0.0.1:8443", "*.rt.test", True, True),
        RuntimeServer("127.0.0.1:8443", ".dot.test  extra.test", True, True),
    ]
    result = specs_from_servers(servers, wildcards=wildcards)
    got = [(s.domain, s.names) for s in result.specs]
    if wildcards:
        assert got == [("*.rt.test", ("*.rt.test",)),
                       ("dot.test", ("dot.test", "*.dot.test", "extra.test"))]
        assert result.warnings == ()
    else:
        assert got == [("dot.test", ("dot.test", "extra.test"))]
        assert {w.name for w in result.warnings} == {"*.rt.test", ".dot.test", ""}


@pytest.mark.parametrize("wildcards", [False, True], ids=["no-dns", "dns"])
@pytest.mark.parametrize("names", [
    ("*.a.test",), (".a.test",), (".a.test", "*.a.test", "a.test"), ("b.test", ".a.test"),
    ("*.a.test", "A.test.", "localhost", "10.0.0.1", "_", "x.*.test"),
])
def test_an_announced_block_gets_exactly_the_names_and_warnings_of_the_same_conf_block(
    names: tuple[str, ...], wildcards: bool
) -> None:
    conf = ("http { server { listen 127.0.0.1:8443 ssl; server_name "
            + " ".join(names) + "; ssl_certificate_management acme; } }")
    static = desired_from_servers(http_servers(parse_text(conf, file="n.conf")),
                                  wildcards=wildcards)
    announced = specs_from_domains([EventDomain(names, ("127.0.0.1:8443",))],
                                   wildcards=wildcards)
    assert [s.names for s in announced.specs] == [s.names for s in static.specs.values()]
    assert [(w.name, w.reason) for w in announced.warnings if w.name] == [
        (w.name, w.reason) for w in static.warnings
    ]
