"""ARI (RFC 9773), the pure parts and the client: the certificate identifier against the RFC's
example, the renewalInfo answer checks, Retry-After clamping and jitter, the time chosen (and
kept) inside a window, the status transitions, the renewal policy reading it (a window of the
previous certificate ignored, a past window renewing now, the emergency rule winning), the
`replaces` of a renewal, `diff`'s lines, and AriClient's one GET against a real local HTTP
server."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.adapters.acme.ari import (
    AriClient,
    cert_id,
    cert_id_of_pem,
    parse_renewal_info,
    serial_bytes,
)
from controller.adapters.acme.errors import CaResponseError
from controller.adapters.acme.order import NewOrder, replaces_rejected
from controller.adapters.acme.threads import StopFlags
from controller.model import CertInfo, Desired, KeyType, Observed, StoredCert
from controller.plan import ActionKind, next_renewal, plan
from controller.policies.ari import (
    DEFAULT_POLL,
    MAX_POLL,
    MIN_POLL,
    choose_renewal,
    clamp_poll,
    due_polls,
    error_delay,
    poll_delay,
)
from controller.policies.renewal import (
    EMERGENCY_RULE,
    LIFETIME_RULE,
    renewal_choice,
    renewal_time,
)
from controller.policy import PolicySettings
from controller.reasons import Reason
from controller.render import renewal_rows, renewals_to_list, renewals_to_text
from controller.status import (
    RENEWAL_SOURCE_ARI,
    AriState,
    CertStatus,
    status_from_json,
    status_to_json,
)
from tests.fakes import spec

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SETTINGS = PolicySettings(store_only=True)

# RFC 9773 §4.1's example: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:
# C8:D4 and serial 0x87654321 give this identifier
RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
RFC_SERIAL = 0x87654321
RFC_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def leaf(*, aki: bytes | None = RFC_AKI, serial: int = RFC_SERIAL) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(NOW - timedelta(days=1))
               .not_valid_after(NOW + timedelta(days=89)))
    if aki is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    return builder.sign(key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def stored(domain: str = "a.test", *, age: timedelta = timedelta(days=10),
           lifetime: timedelta = timedelta(days=90), fp: str = "aa" * 32) -> StoredCert:
    nb = NOW - age
    info = CertInfo(common_name=domain, names=(domain,), not_before=nb, not_after=nb + lifetime,
                    key_type=KeyType.EC256, serial="01", fingerprint=fp, issuer="CN=CA")
    return StoredCert(domain, info, key_matches=True)


def ari(fp: str = "aa" * 32, *, start: datetime | None = NOW + timedelta(days=40),
        end: datetime | None = NOW + timedelta(days=41), url: str | None = None) -> AriState:
    return AriState(fingerprint=fp, cert_id="AAAA.AQ", next_poll=NOW + DEFAULT_POLL,
                    window_start=start, window_end=end, explanation_url=url, polled_at=NOW)


# -- the identifier (§4.1) ---------------------------------------------------------------------


def test_the_identifier_of_the_rfc_example() -> None:
    assert cert_id(leaf()) == RFC_ID
    assert cert_id_of_pem(pem(leaf()) + pem(leaf(serial=5))) == RFC_ID  # the leaf: the first


def test_a_certificate_without_an_authority_key_identifier_has_none() -> None:
    assert cert_id(leaf(aki=None)) == ""


@pytest.mark.parametrize(("serial", "content"), [
    (0, b"\x00"), (0x7F, b"\x7f"), (0x80, b"\x00\x80"), (0x0102, b"\x01\x02"),
    (RFC_SERIAL, b"\x00\x87\x65\x43\x21"),
])
def test_the_serial_is_its_der_integer_content(serial: int, content: bytes) -> None:
    assert serial_bytes(serial) == content


# -- the answer (§4.2) ---------------------------------------------------------------------------


def test_a_renewal_info_answer_is_read_with_its_explanation() -> None:
    start, end, url = parse_renewal_info({
        "suggestedWindow": {"start": "2026-06-20T00:00:00Z", "end": "2026-06-21T00:00:00+02:00"},
        "explanationURL": "https://ca.test/why"})
    assert start == datetime(2026, 6, 20, tzinfo=UTC)
    assert end == datetime(2026, 6, 20, 22, tzinfo=UTC) and end.tzinfo is UTC
    assert url == "https://ca.test/why"


@pytest.mark.parametrize(("doc", "says"), [
    ([], "not a JSON object"),
    ({}, "no suggestedWindow"),
    ({"suggestedWindow": {"start": "2026-06-20T00:00:00Z"}}, "end is not a string"),
    ({"suggestedWindow": {"start": "2026-06-20T00:00:00", "end": "2026-06-21T00:00:00Z"}},
     "no UTC offset"),
    ({"suggestedWindow": {"start": "soon", "end": "2026-06-21T00:00:00Z"}}, "not an RFC 3339"),
    ({"suggestedWindow": {"start": "2026-06-21T00:00:00Z", "end": "2026-06-21T00:00:00Z"}},
     "before it starts"),
])
def test_an_unusable_answer_says_why(doc: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_renewal_info(doc)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://x.test/a b", 42, "ftp://x"])
def test_an_explanation_that_is_no_http_url_is_dropped(url: object) -> None:
    window = {"start": "2026-06-20T00:00:00Z", "end": "2026-06-21T00:00:00Z"}
    assert parse_renewal_info({"suggestedWindow": window, "explanationURL": url})[2] is None


# -- Retry-After and the next poll ---------------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "honoured"), [
    (None, DEFAULT_POLL), (10.0, MIN_POLL), (0.0, MIN_POLL), (-5.0, MIN_POLL),
    (float("nan"), MIN_POLL), (7200.0, timedelta(hours=2)), (200_000.0, MAX_POLL),
    (float("inf"), MAX_POLL),
])
def test_retry_after_is_clamped_to_a_minute_and_a_day(retry_after: float | None,
                                                      honoured: timedelta) -> None:
    assert poll_delay(retry_after, jitter=0.0) == honoured
    # the jitter only ever makes it later, by at most a tenth, and never beyond a day
    later = poll_delay(retry_after, jitter=0.999)
    assert honoured <= later <= min(MAX_POLL, honoured * 1.1)


def test_clamp_poll_bounds() -> None:
    assert clamp_poll(59) == MIN_POLL and clamp_poll(61) == timedelta(seconds=61)
    assert clamp_poll(86_401) == MAX_POLL


def test_failed_polls_back_off_up_to_the_default_interval_or_a_longer_retry_after() -> None:
    delays = [error_delay(n, None, jitter=0.0) for n in range(1, 12)]
    assert delays[:4] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert delays[-1] == DEFAULT_POLL and delays == sorted(delays)
    assert error_delay(1, 36_000, jitter=0.0) == timedelta(hours=10)


# -- the chosen time -------------------------------------------------------------------------


def test_a_time_is_drawn_in_the_part_of_the_window_still_ahead() -> None:
    start, end = NOW - timedelta(hours=10), NOW + timedelta(hours=10)
    assert choose_renewal(start, end, current=None, now=NOW, draw=0.0) == NOW
    assert choose_renewal(start, end, current=None, now=NOW, draw=0.5) == NOW + timedelta(hours=5)
    future = (NOW + timedelta(days=1), NOW + timedelta(days=3))
    assert choose_renewal(*future, current=None, now=NOW, draw=0.25) == NOW + timedelta(days=1.5)


def test_a_chosen_time_is_kept_while_a_new_window_contains_it() -> None:
    chosen = NOW + timedelta(days=2)
    wider = (NOW + timedelta(days=1), NOW + timedelta(days=5))
    assert choose_renewal(*wider, current=chosen, now=NOW, draw=0.9) == chosen
    moved = (NOW + timedelta(days=3), NOW + timedelta(days=4))
    again = choose_renewal(*moved, current=chosen, now=NOW, draw=0.5)
    assert again == NOW + timedelta(days=3.5)


def test_a_window_whose_end_is_past_means_renew_now() -> None:
    start, end = NOW - timedelta(days=2), NOW - timedelta(days=1)
    assert choose_renewal(start, end, current=NOW + timedelta(days=9), now=NOW, draw=0.5) == end


def test_no_ari_time_is_less_than_an_hour_after_the_certificate_began() -> None:
    start, end = NOW - timedelta(days=2), NOW - timedelta(days=1)
    young = NOW - timedelta(minutes=10)
    assert choose_renewal(start, end, current=None, now=NOW, draw=0.5,
                          not_before=young) == NOW + timedelta(minutes=50)
    assert choose_renewal(start, end, current=None, now=NOW, draw=0.5,
                          not_before=NOW - timedelta(days=3)) == end


# -- status --------------------------------------------------------------------------------------


def test_with_ari_records_the_chosen_time_for_that_certificate() -> None:
    st = CertStatus(domain="a.test").with_ari(ari(), renewal_at=NOW + timedelta(days=40))
    assert (st.renewal_at, st.renewal_source, st.renewal_for) == (
        NOW + timedelta(days=40), RENEWAL_SOURCE_ARI, "aa" * 32)
    # a poll without a window keeps the time chosen for the same certificate
    failed = replace(ari(), window_start=None, window_end=None, errors=1, last_error="503")
    assert st.with_ari(failed, renewal_at=None).renewal_at == NOW + timedelta(days=40)
    # and drops one chosen for another certificate
    other = replace(failed, fingerprint="bb" * 32)
    dropped = st.with_ari(other, renewal_at=None)
    assert (dropped.renewal_at, dropped.renewal_source, dropped.renewal_for) == (None, None, None)


def test_a_new_pair_clears_the_window_and_the_chosen_time() -> None:
    st = CertStatus(domain="a.test").with_ari(ari(), renewal_at=NOW).with_issued(at=NOW)
    assert (st.ari, st.renewal_at, st.renewal_source, st.renewal_for) == (None, None, None, None)


def test_the_ari_state_survives_a_restart() -> None:
    st = CertStatus(domain="a.test").with_ari(ari(url="https://ca.test/why"),
                                              renewal_at=NOW + timedelta(days=40))
    assert status_from_json(status_to_json(st)) == st


# -- the policy ----------------------------------------------------------------------------------


def test_the_chosen_ari_time_decides_and_says_so() -> None:
    s = stored()
    st = CertStatus(domain="a.test").with_ari(ari(), renewal_at=NOW + timedelta(days=40, hours=3))
    c = renewal_choice(s, st, SETTINGS.renew_before)
    assert (c.at, c.source) == (NOW + timedelta(days=40, hours=3), RENEWAL_SOURCE_ARI)
    assert (c.window_start, c.window_end) == (NOW + timedelta(days=40), NOW + timedelta(days=41))


def test_a_time_chosen_for_the_previous_certificate_never_schedules_the_new_one() -> None:
    old = CertStatus(domain="a.test").with_ari(ari("bb" * 32), renewal_at=NOW - timedelta(hours=1))
    new = stored(age=timedelta(minutes=5))  # fingerprint "aa"*32: another certificate
    c = renewal_choice(new, old, SETTINGS.renew_before)
    assert c.source == LIFETIME_RULE and c.window_start is None and c.at > NOW + timedelta(days=50)
    p = plan(Desired({"a.test": spec("a.test")}), Observed(stored={"a.test": new}),
             {"a.test": old}, NOW, SETTINGS)
    assert p.actions == ()


def test_a_past_window_renews_now_with_replaces() -> None:
    s = stored()
    past = ari(start=NOW - timedelta(days=2), end=NOW - timedelta(days=1))
    st = CertStatus(domain="a.test").with_ari(past, renewal_at=past.window_end)
    p = plan(Desired({"a.test": spec("a.test")}), Observed(stored={"a.test": s}), {"a.test": st},
             NOW, SETTINGS)
    (a,) = p.actions
    assert (a.kind, a.reason, a.replaces) == (ActionKind.RENEW, Reason.RENEWAL_DUE, "AAAA.AQ")


def test_the_emergency_rule_overrides_a_late_ari_time() -> None:
    s = stored(age=timedelta(days=80))  # 10 of 90 days left; a tenth is 9 days
    late = ari(start=NOW + timedelta(days=5), end=NOW + timedelta(days=9))
    st = CertStatus(domain="a.test").with_ari(late, renewal_at=NOW + timedelta(days=8))
    c = renewal_choice(s, st, SETTINGS.renew_before)
    assert (c.at, c.source) == (s.info.not_after - timedelta(days=9), EMERGENCY_RULE)


def test_ari_false_ignores_a_time_chosen_from_ari() -> None:
    s = stored()
    st = CertStatus(domain="a.test").with_ari(ari(), renewal_at=NOW - timedelta(minutes=1))
    assert renewal_time(s, st, SETTINGS.renew_before) == NOW - timedelta(minutes=1)
    off = PolicySettings(store_only=True, ari=False)
    assert next_renewal(Observed(stored={"a.test": s}), {"a.test": st}, off)["a.test"] == (
        s.info.not_after - timedelta(days=30))
    p = plan(Desired({"a.test": spec("a.test")}), Observed(stored={"a.test": s}), {"a.test": st},
             NOW, off)
    assert p.actions == ()


def test_a_renewal_for_another_reason_still_names_what_it_replaces() -> None:
    s = stored()
    st = replace(CertStatus(domain="a.test").with_ari(ari(), renewal_at=NOW + timedelta(days=40)),
                 force_renew=True)
    (a,) = plan(Desired({"a.test": spec("a.test")}), Observed(stored={"a.test": s}),
                {"a.test": st}, NOW, SETTINGS).actions
    assert (a.reason, a.replaces) == (Reason.FORCED, "AAAA.AQ")
    # no window was ever given for it: no replaces
    failed = replace(ari(), window_start=None, window_end=None)
    st2 = replace(CertStatus(domain="a.test").with_ari(failed, renewal_at=None), force_renew=True)
    (b,) = plan(Desired({"a.test": spec("a.test")}), Observed(stored={"a.test": s}),
                {"a.test": st2}, NOW, SETTINGS).actions
    assert b.replaces is None


def test_due_polls_most_overdue_first_never_asked_before_all_and_never_expired() -> None:
    a, b, c = stored("a.test", fp="aa" * 32), stored("b.test", fp="bb" * 32), \
        stored("c.test", fp="cc" * 32)
    gone = stored("d.test", fp="dd" * 32, age=timedelta(days=91))
    statuses = {
        "a.test": CertStatus(domain="a.test", ari=replace(ari("aa" * 32), next_poll=NOW)),
        "b.test": CertStatus(domain="b.test",
                             ari=replace(ari("bb" * 32), next_poll=NOW - timedelta(hours=1))),
        "c.test": CertStatus(domain="c.test", ari=replace(ari("zz" * 32), next_poll=NOW)),
    }
    candidates = {"a.test": a, "b.test": b, "c.test": c, "d.test": gone}
    # c's state is of another certificate: never asked about this one
    assert due_polls(candidates, statuses, NOW) == ["c.test", "b.test", "a.test"]
    assert due_polls(candidates, statuses, NOW - timedelta(hours=2)) == ["c.test"]


# -- diff ----------------------------------------------------------------------------------------


def test_diff_lines_show_the_window_the_time_and_where_it_came_from() -> None:
    soon = stored("a.test", age=timedelta(days=80))  # lifetime rule: due since day 60
    chosen = stored("b.test", fp="bb" * 32)
    later = stored("c.test", fp="cc" * 32)
    window = ari("bb" * 32, start=NOW + timedelta(days=2), end=NOW + timedelta(days=3),
                 url="https://ca.test/incident")
    statuses = {"b.test": CertStatus(domain="b.test").with_ari(
        window, renewal_at=NOW + timedelta(days=2, hours=6))}
    desired = Desired({d: spec(d) for d in ("a.test", "b.test", "c.test")})
    observed = Observed(stored={"a.test": soon, "b.test": chosen, "c.test": later})
    rows = renewal_rows(desired, observed, statuses, SETTINGS, NOW)
    assert [r.domain for r in rows] == ["a.test", "b.test"]  # c.test renews in 50 days
    text = renewals_to_text(rows)
    assert text[0].startswith(f"  renews a.test at {(NOW - timedelta(days=20)).isoformat()} "
                              "from lifetime rule (expires ")
    assert text[1] == (
        f"  renews b.test at {(NOW + timedelta(days=2, hours=6)).isoformat()} from ARI (ARI window "
        f"{(NOW + timedelta(days=2)).isoformat()} .. {(NOW + timedelta(days=3)).isoformat()}; "
        "explanation https://ca.test/incident)")
    every = renewal_rows(desired, observed, statuses, SETTINGS, NOW, everything=True)
    assert [r.domain for r in every] == ["a.test", "b.test", "c.test"]
    doc = renewals_to_list(every)
    assert doc[1]["source"] == "ari" and doc[1]["explanation_url"] == "https://ca.test/incident"
    assert doc[2]["source"] == "lifetime" and doc[2]["window_start"] is None


# -- the order body and its fallback -------------------------------------------------------------


def test_the_new_order_body_carries_replaces_only_when_given() -> None:
    from acme import messages

    ids = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="a.test")]
    with_it = json.loads(NewOrder(identifiers=ids, profile="", replaces=RFC_ID).json_dumps())
    assert with_it == {"identifiers": [{"type": "dns", "value": "a.test"}], "replaces": RFC_ID}
    without = json.loads(NewOrder(identifiers=ids, profile="").json_dumps())
    assert "replaces" not in without and "profile" not in without


def _rejection(status: int, code: str, detail: str = "") -> CaResponseError:
    return CaResponseError(url="https://ca.test/new-order", http_status=status, code=code,
                           detail=detail)


@pytest.mark.parametrize(("error", "retried"), [
    (_rejection(409, "alreadyReplaced", "already replaced"), True),
    (_rejection(409, "conflict"), True),
    (_rejection(400, "malformed", "replaces: unknown certificate"), True),
    (_rejection(400, "malformed", "identifiers missing"), False),
    (_rejection(429, "rateLimited", "too many replaces"), False),
    (_rejection(503, "serverInternal"), False),
    (_rejection(400, "badNonce"), False),
    (_rejection(400, "accountDoesNotExist"), False),
])
def test_which_rejections_are_retried_without_replaces(error: CaResponseError,
                                                       retried: bool) -> None:
    assert replaces_rejected(error) is retried


# -- AriClient against a real local HTTP server -----------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        status, headers, body = self.answers.get(self.path, (404, {}, b"{}"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def ari_server() -> Iterator[str]:
    _Handler.answers, _Handler.seen = {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Issuer:
    """What AriClient uses of an AcmeIssuer: its directory, timeouts, caBundle, stop flags."""

    def __init__(self, directory: dict[str, Any]) -> None:
        self._directory = directory
        self.request_timeout = (2.0, 2.0)
        self.ca_bundle: Path | None = None
        self._flags = StopFlags()

    async def directory(self) -> dict[str, Any]:
        return self._directory

    def stop_flag(self) -> contextlib.AbstractContextManager[threading.Event]:
        return self._flags.flag()


def _client(directory: dict[str, Any]) -> AriClient:
    return AriClient(_Issuer(directory))  # type: ignore[arg-type]


async def test_the_client_fetches_and_reads_one_window(ari_server: str) -> None:
    cert = leaf()
    body = json.dumps({"suggestedWindow": {"start": "2026-06-20T00:00:00Z",
                                           "end": "2026-06-21T00:00:00Z"},
                       "explanationURL": "https://ca.test/why"}).encode()
    _Handler.answers[f"/ari/{RFC_ID}"] = (200, {"Retry-After": "7200",
                                                "Content-Type": "application/json"}, body)
    client = _client({"renewalInfo": f"{ari_server}/ari/"})
    assert await client.supported()
    got = await client.renewal_info(pem(cert))
    await client.close()
    assert _Handler.seen == [f"/ari/{RFC_ID}"]
    assert got.cert_id == RFC_ID and got.error is None
    assert got.fingerprint == cert.fingerprint(hashes.SHA256()).hex()
    assert (got.window_start, got.window_end) == (datetime(2026, 6, 20, tzinfo=UTC),
                                                  datetime(2026, 6, 21, tzinfo=UTC))
    assert got.explanation_url == "https://ca.test/why" and got.retry_after == 7200


@pytest.mark.parametrize(("answer", "says"), [
    ((503, {"Retry-After": "120"}, b'{"type": "urn:ietf:params:acme:error:serverInternal",'
                                   b' "detail": "try later"}'), "HTTP 503: try later"),
    ((200, {}, b"not json"), "unusable answer"),
    ((200, {}, b'{"suggestedWindow": {"start": "2026-06-21T00:00:00Z",'
               b' "end": "2026-06-20T00:00:00Z"}}'), "before it starts"),
    ((200, {}, b" " * (70 * 1024)), "larger than"),
])
async def test_a_failed_poll_is_an_answer_with_the_error(
        ari_server: str, answer: tuple[int, dict[str, str], bytes], says: str) -> None:
    _Handler.answers[f"/ari/{RFC_ID}"] = answer
    client = _client({"renewalInfo": f"{ari_server}/ari"})
    got = await client.renewal_info(pem(leaf()))
    await client.close()
    assert got.error is not None and says in got.error and got.window_start is None
    assert f"{ari_server}/ari/{RFC_ID}" in got.error
    assert got.retry_after == (120 if answer[0] == 503 else None)


async def test_no_renewal_info_in_the_directory_or_no_aki_asks_nothing(ari_server: str) -> None:
    assert not await _client({}).supported()
    got = await _client({"renewalInfo": f"{ari_server}/ari"}).renewal_info(pem(leaf(aki=None)))
    assert got.cert_id == "" and got.error is not None and "authority key" in got.error
    unreachable = await _client({"renewalInfo": "http://127.0.0.1:9/ari"}).renewal_info(
        pem(leaf()))
    assert unreachable.error is not None and unreachable.cert_id == RFC_ID
    assert _Handler.seen == []


async def test_a_stopping_client_sends_nothing(ari_server: str) -> None:
    issuer = _Issuer({"renewalInfo": f"{ari_server}/ari"})
    issuer._flags.stop()
    got = await AriClient(issuer).renewal_info(pem(leaf()))  # type: ignore[arg-type]
    assert got.error is not None and "stopping" in got.error and _Handler.seen == []


def test_renewal_info_runs_off_the_loop() -> None:
    # the GET is made on a daemon thread: the event loop keeps answering meanwhile
    async def main() -> bool:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.ensure_future(tick())
        await _client({"renewalInfo": "http://127.0.0.1:9/ari"}).renewal_info(pem(leaf()))
        t.cancel()
        return ticks > 0

    assert asyncio.run(main())


# -- metrics ---------------------------------------------------------------------------------


def test_the_ari_series_are_rendered_and_dropped_with_the_certificate() -> None:
    from controller.metrics import ControllerMetrics

    m = ControllerMetrics()
    m.set_ari_next_poll("a.test", NOW)
    m.observe_ari_request("ok")
    m.observe_ari_request("ok")
    m.observe_ari_request("error")
    text = m.render()
    assert (f'njcm_certificate_ari_next_poll_timestamp_seconds{{name="a.test"}} '
            f"{NOW.timestamp()!r}") in text
    assert 'njcm_ari_requests_total{result="ok"} 2.0' in text
    assert 'njcm_ari_requests_total{result="error"} 1.0' in text
    m.set_ari_next_poll("a.test", None)
    assert 'next_poll_timestamp_seconds{name="a.test"}' not in m.render()
    m.set_ari_next_poll("b.test", NOW)
    m.retain_certificates([])
    assert 'next_poll_timestamp_seconds{name="b.test"}' not in m.render()


def test_the_renewal_timestamp_follows_the_ari_choice() -> None:
    s = stored()
    st = CertStatus(domain="a.test").with_ari(ari(), renewal_at=NOW + timedelta(days=40, hours=2))
    renewals = next_renewal(Observed(stored={"a.test": s}), {"a.test": st}, SETTINGS)
    assert renewals["a.test"] == NOW + timedelta(days=40, hours=2)


async def test_each_certificate_is_polled_at_the_ca_that_issued_it(ari_server: str) -> None:
    """CaFallbackAri (multi.py): a certificate of the second CA is asked at the second CA's
    renewalInfo; one with no recorded CA (or a CA no longer configured) at [acme]'s."""
    from controller.adapters.acme.multi import CaFallbackAri, CaFallbackIssuer, CaSettings

    bases = {0: f"{ari_server}/first", 1: f"{ari_server}/second"}
    cas = [CaSettings("https://one.test/dir", "[acme]", "", None),
           CaSettings("https://two.test/dir", "acme.fallback[0]", "", None)]
    built: list[int] = []

    def build(index: int, ca: CaSettings) -> Any:
        built.append(index)
        return _Issuer({"renewalInfo": bases[index]})

    ari = CaFallbackAri(CaFallbackIssuer(cas, build, fallback_after=2))
    assert built == []  # nothing built before it is asked
    cert = pem(leaf())
    for answer in ("/first", "/second"):
        _Handler.answers[f"{answer}/{RFC_ID}"] = (200, {}, json.dumps({"suggestedWindow": {
            "start": "2026-06-20T00:00:00Z", "end": "2026-06-21T00:00:00Z"}}).encode())
    second = await ari.renewal_info(cert, ca="https://two.test/dir")
    assert built == [1] and _Handler.seen == [f"/second/{RFC_ID}"] and second.error is None
    await ari.renewal_info(cert, ca=None)
    await ari.renewal_info(cert, ca="https://gone.test/dir")
    assert _Handler.seen[1:] == [f"/first/{RFC_ID}"] * 2 and sorted(built) == [0, 1]
    assert await ari.supported()  # [acme]'s CA's answer
    await ari.close()
