"""njetmatch: which running NJet server a desired block is, on real GET bodies of the contract."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.adapters.njet.api import parse_http_log, parse_ssl_servers
from controller.model import CertificateSpec
from controller.njetmatch import (
    LocationServer,
    MatchStatus,
    NjetServer,
    canonical_listen,
    challenge_server,
    has_location,
    match_blocks,
    match_server,
)
from tests.contract import CONTRACT


def recorded_body(prefix: str) -> Any:
    (path,) = CONTRACT.glob(f"{prefix}-*.json")
    return json.loads(path.read_text())["response"]["body"]


def servers(prefix: str) -> tuple[NjetServer, ...]:
    return parse_ssl_servers(recorded_body(prefix))


def location_servers(prefix: str) -> tuple[LocationServer, ...]:
    return parse_http_log(recorded_body(prefix))


def spec(*names: str, listens: tuple[str, ...]) -> CertificateSpec:
    return CertificateSpec(domain=names[0], names=names, listens=listens)


# (case, GET body, spec, expected listens to PUT, expected serverNames to PUT)
FOUND = [
    ("a.test on its specific listen", "01",
     spec("a.test", "www.a.test", listens=("127.0.0.1:8443",)),
     ("127.0.0.1:8443",), ("a.test", "www.a.test")),
    ("a block whose spec lists www.a.test first keeps GET's name order", "01",
     spec("www.a.test", "a.test", listens=("127.0.0.1:8443",)),
     ("127.0.0.1:8443",), ("a.test", "www.a.test")),
    ("wildcard listen 8444 is addressed as 0.0.0.0:8444", "01",
     spec("b.test", listens=("0.0.0.0:8444",)),
     ("0.0.0.0:8444",), ("b.test",)),
    ("wildcard spelled *:8444 still yields GET's 0.0.0.0:8444", "30",
     spec("b.test", listens=("*:8444",)),
     ("0.0.0.0:8444",), ("b.test",)),
    ("IPv6 listen", "01",
     spec("v6.test", listens=("[::1]:8445",)),
     ("[::1]:8445",), ("v6.test",)),
    ("IPv6 written long-hand yields GET's short form", "50",
     spec("v6.test", listens=("[0:0:0:0:0:0:0:1]:8445",)),
     ("[::1]:8445",), ("v6.test",)),
    ("unmanaged c.test next to a.test on the same listen", "30",
     spec("c.test", listens=("127.0.0.1:8443",)),
     ("127.0.0.1:8443",), ("c.test",)),
    ("the renamed block is found under its new name", "60",
     spec("a2.test", "www.a.test", listens=("127.0.0.1:8443",)),
     ("127.0.0.1:8443",), ("a2.test", "www.a.test")),
    ("a dynamic server added through dyn_srv", "71",
     spec("dyn.test", listens=("127.0.0.1:8443",)),
     ("127.0.0.1:8443",), ("dyn.test",)),
    ("a spec naming only part of the block's names", "61",
     spec("www.a.test", listens=("127.0.0.1:8443",)),
     ("127.0.0.1:8443",), ("www.a.test", "a.test")),
]


@pytest.mark.parametrize(
    ("body", "wanted", "listens", "names"),
    [pytest.param(*case[1:], id=case[0]) for case in FOUND],
)
def test_finds_the_running_server_and_the_arrays_to_put(
    body: str,
    wanted: CertificateSpec,
    listens: tuple[str, ...],
    names: tuple[str, ...],
) -> None:
    result = match_server(wanted, servers(body))
    assert result.status is MatchStatus.FOUND, result.reason
    assert result.found
    assert result.listens == listens
    assert result.server_names == names
    assert result.server is not None
    assert set(result.server.server_names) >= set(wanted.names)


WAITING = [
    ("127.0.0.1:8444 is not the wildcard listen 8444", "01",
     spec("b.test", listens=("127.0.0.1:8444",)), "0.0.0.0:8444"),
    ("njet.conf renamed a.test to a2.test, NJet not reloaded yet", "01",
     spec("a2.test", "www.a.test", listens=("127.0.0.1:8443",)), "a.test www.a.test"),
    ("NJet reloaded with a2.test, the old spec for a.test is gone", "60",
     spec("a.test", "www.a.test", listens=("127.0.0.1:8443",)), "a2.test www.a.test"),
    ("a name added to the block in njet.conf only", "30",
     spec("a.test", "www.a.test", "new.a.test", listens=("127.0.0.1:8443",)), "a.test"),
    ("a block on a port NJet does not listen on", "01",
     spec("a.test", listens=("127.0.0.1:9443",)), "nothing on that listen"),
    ("a dyn_srv server that was deleted", "61",
     spec("dyn.test", listens=("127.0.0.1:8443",)), "c.test"),
]


@pytest.mark.parametrize(
    ("body", "wanted", "mentions"),
    [pytest.param(*case[1:], id=case[0]) for case in WAITING],
)
def test_a_block_njet_does_not_run_is_waiting_for_reload(
    body: str, wanted: CertificateSpec, mentions: str
) -> None:
    result = match_server(wanted, servers(body))
    assert result.status is MatchStatus.WAITING_FOR_RELOAD
    assert not result.found
    assert result.server is None
    assert result.listens == () and result.server_names == ()
    assert "waiting for reload" in result.reason
    assert mentions in result.reason


def test_a_spec_without_listens_cannot_be_matched() -> None:
    result = match_server(spec("a.test", listens=()), servers("01"))
    assert result.status is MatchStatus.WAITING_FOR_RELOAD
    assert "no listen" in result.reason


def test_two_running_servers_with_the_names_on_a_wanted_listen_are_ambiguous() -> None:
    running = (
        *servers("01"),
        NjetServer(listens=("[::1]:8443", "127.0.0.1:8443"), server_names=("a.test",)),
    )
    result = match_server(spec("a.test", listens=("127.0.0.1:8443",)), running)
    assert result.status is MatchStatus.AMBIGUOUS
    assert result.server is None
    assert len(result.candidates) == 2
    assert "2 running NJet servers" in result.reason


def test_a_spec_uniting_two_blocks_is_ambiguous_and_match_blocks_lists_each() -> None:
    # desired.py merges blocks whose first name is the same (names and listens united)
    running = (
        *servers("01"),
        NjetServer(listens=("127.0.0.1:9443",), server_names=("a.test", "api.a.test")),
    )
    merged = spec(
        "a.test", "www.a.test", "api.a.test", listens=("127.0.0.1:8443", "127.0.0.1:9443")
    )
    result = match_server(merged, running)
    assert result.status is MatchStatus.AMBIGUOUS
    assert "unites 2 running NJet server blocks" in result.reason
    blocks = match_blocks(merged, running)
    assert [(b.listens, b.server_names) for b in blocks] == [
        (("127.0.0.1:8443",), ("a.test", "www.a.test")),
        (("127.0.0.1:9443",), ("a.test", "api.a.test")),
    ]
    assert all(b.found for b in blocks)


def test_separate_v4_and_v6_blocks_with_the_same_names_are_both_blocks_of_the_spec() -> None:
    running = (
        NjetServer(listens=("127.0.0.1:8443",), server_names=("a.test",)),
        NjetServer(listens=("[::1]:8443",), server_names=("a.test",)),
    )
    wanted = spec("a.test", listens=("127.0.0.1:8443", "[::1]:8443"))
    assert match_server(wanted, running).status is MatchStatus.AMBIGUOUS
    assert [b.listens for b in match_blocks(wanted, running)] == [
        ("127.0.0.1:8443",),
        ("[::1]:8443",),
    ]


def test_match_blocks_of_a_single_block_is_the_match() -> None:
    wanted = spec("a.test", "www.a.test", listens=("127.0.0.1:8443",))
    assert match_blocks(wanted, servers("30")) == (match_server(wanted, servers("30")),)


def test_a_block_not_running_yet_leaves_match_blocks_empty_but_the_running_one_matches() -> None:
    wanted = spec("a.test", "www.a.test", listens=("127.0.0.1:8443", "127.0.0.1:9443"))
    assert match_blocks(wanted, servers("01")) == ()
    assert match_server(wanted, servers("01")).listens == ("127.0.0.1:8443",)


def test_first_entries_are_rotated_to_ones_the_spec_shares() -> None:
    # listens[0] must survive a reload that drops the other listen, serverNames[0] must be an
    # exact name (not the wildcard) that the block keeps: NJet looks up by element 0 only.
    block = NjetServer(
        listens=("127.0.0.1:8443", "[::1]:8443"), server_names=("*.a.test", "a.test", "b.a.test")
    )
    result = match_server(spec("b.a.test", "a.test", listens=("[::1]:8443",)), [block])
    assert result.found
    assert result.listens == ("[::1]:8443", "127.0.0.1:8443")
    assert result.server_names == ("a.test", "*.a.test", "b.a.test")


def test_server_names_compare_case_insensitively() -> None:
    result = match_server(spec("A.Test", "WWW.a.test", listens=("127.0.0.1:8443",)), servers("01"))
    assert result.found
    assert result.server_names == ("a.test", "www.a.test")


@pytest.mark.parametrize(
    ("listen", "canonical"),
    [
        ("8444", "0.0.0.0:8444"),
        ("*:8444", "0.0.0.0:8444"),
        ("0.0.0.0:8444", "0.0.0.0:8444"),
        ("127.0.0.1:8444", "127.0.0.1:8444"),
        ("[::1]:8445", "[::1]:8445"),
        ("[0::1]:8445", "[::1]:8445"),
        ("[::]:443", "[::]:443"),
        ("localhost:443", "localhost:443"),
    ],
)
def test_listen_spellings_are_compared_in_one_form(listen: str, canonical: str) -> None:
    assert canonical_listen(listen) == canonical


# --- the http-01 proxy location (dyn_loc) ---------------------------------------------------


def test_challenge_server_is_the_exact_addr_port_and_name_block_with_the_location() -> None:
    found = challenge_server("a.test", "127.0.0.1:8080", location_servers("42"))
    assert found is not None
    assert found.listens == ("127.0.0.1:8080",)
    assert has_location(found)


def test_challenge_location_survives_a_restart_in_http_log() -> None:
    found = challenge_server("a.test", "127.0.0.1:8080", location_servers("51"))
    assert found is not None and has_location(found)


def test_challenge_server_without_the_location() -> None:
    found = challenge_server("b.test", "127.0.0.1:8080", location_servers("42"))
    assert found is not None
    assert not has_location(found)
    assert has_location(found, rule="", name="/")


@pytest.mark.parametrize(
    ("name", "addr_port"),
    [
        pytest.param("c.test", "127.0.0.1:8080", id="name without a block on that port"),
        pytest.param("a.test", "127.0.0.1:9999", id="unknown port"),
        pytest.param("a.test", "0.0.0.0:8080", id="no wildcard fallback for a specific listen"),
    ],
)
def test_no_challenge_server_when_dyn_loc_would_not_find_one(name: str, addr_port: str) -> None:
    assert challenge_server(name, addr_port, location_servers("42")) is None
