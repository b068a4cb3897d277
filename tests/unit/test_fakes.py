"""The fakes of tests/fakes.py are their ports: statically (mypy checks the annotated
assignments below; run `.venv/bin/mypy tests/fakes.py tests/unit/test_fakes.py ...`) and by
behaviour (the parts of each contract the step tests rely on)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.certinfo import fingerprint_pem
from controller.errors import ControllerError, StoreError, TemporaryError
from controller.model import KeyType
from controller.ports import (
    CertStore,
    Clock,
    DesiredLoader,
    GcConfirmations,
    Issuer,
    IssuerFactory,
    NjetReader,
    NjetWriter,
    OrderGate,
    PassObserver,
    ProbeOutcome,
    Prober,
    QuarantineExpiry,
    RateLedger,
    StatusPersistence,
)
from controller.status import CertStatus
from tests.certbuilder import make_cert
from tests.fakes import (
    FakeBlock,
    FakeClock,
    FakeDesired,
    FakeIssuer,
    FakeNjet,
    FakeProber,
    FakeRepeated,
    MemoryGate,
    MemoryGcConfirmations,
    MemoryLedger,
    MemoryStatus,
    MemoryStore,
    Probed,
    RecordingExpiry,
    RecordingObserver,
    block_for,
    spec,
)

LISTEN = "127.0.0.1:8443"


def test_every_fake_is_its_protocol() -> None:
    clock: Clock = FakeClock()
    njet = FakeNjet()
    fake_issuer = FakeIssuer(clock)
    store: CertStore = MemoryStore()
    gate: OrderGate = MemoryGate()
    issuer: Issuer = fake_issuer
    factory: IssuerFactory = fake_issuer.factory
    reader: NjetReader = njet
    writer: NjetWriter = njet
    prober: Prober = FakeProber(njet)
    outcome: ProbeOutcome = Probed("ab" * 32)
    statuses: StatusPersistence = MemoryStatus()
    desired: DesiredLoader = FakeDesired()
    observer: PassObserver = RecordingObserver()
    confirmations: GcConfirmations = MemoryGcConfirmations()
    expiry: QuarantineExpiry = RecordingExpiry()
    ledger: RateLedger = MemoryLedger()  # behaviour: tests/unit/test_rate_ledger.py
    ports = [store, issuer, factory, reader, writer, prober, outcome, statuses, desired, observer,
             confirmations, expiry, ledger, gate]  # gate behaviour: test_fleet_core.py
    assert all(p is not None for p in ports)


async def test_issuer_signs_real_certificates_for_the_names_with_a_fresh_key() -> None:
    clock = FakeClock()
    issuer = FakeIssuer(clock)
    s = spec("a.test", "www.a.test")
    one = await issuer.issue(s, KeyType.EC256)
    two = await issuer.issue(s, KeyType.EC256)
    store = MemoryStore()
    stored = store.put("a.test", one)
    assert stored.info.names == ("a.test", "www.a.test")
    assert stored.info.key_type is KeyType.EC256
    assert stored.info.not_before < clock() < stored.info.not_after
    assert stored.key_matches
    assert one.key_pem != two.key_pem and one.cert_url != two.cert_url
    assert issuer.orders == [("a.test", KeyType.EC256)] * 2


async def test_issuer_fails_as_told_once_per_error() -> None:
    issuer = FakeIssuer()
    issuer.fail = [TemporaryError("CA down", retry_after=30)]
    with pytest.raises(TemporaryError):
        await issuer.issue(spec("a.test"), KeyType.EC256)
    assert (await issuer.issue(spec("a.test"), KeyType.EC256)).cert_pem


def test_store_refuses_a_key_that_does_not_match_and_keeps_the_old_pair() -> None:
    store = MemoryStore()
    old = make_cert(["a.test"]).issued()
    store.put("a.test", old)
    bad = replace(make_cert(["a.test"]).issued(), key_pem=make_cert(["a.test"]).key_pem)
    with pytest.raises(StoreError, match=r"a\.test"):
        store.put("a.test", bad)
    assert store.cert_pem("a.test") == old.cert_pem
    assert store.get("missing.test") is None
    assert store.delete("missing.test") is False
    assert store.quarantine("missing.test") is None


def test_store_reports_a_seeded_mismatched_pair_as_a_problem() -> None:
    store = MemoryStore()
    issued = replace(make_cert(["a.test"]).issued(), key_pem=make_cert(["x.test"]).key_pem)
    store.put_unchecked("a.test", issued)
    usable, problems = store.load_all()
    assert "a.test" not in usable and "a.test" in problems
    got = store.get("a.test")
    assert got is not None and got.key_matches is False


async def test_njet_serves_what_was_put_and_answers_repeated_for_the_first_dynamic_pair() -> None:
    s = spec("a.test")
    njet = FakeNjet([block_for(s)])
    prober = FakeProber(njet)
    made = make_cert(["a.test"])

    async def push() -> None:
        await njet.add_cert(listens=[LISTEN], server_names=["a.test"], cert_type="ecc",
                            cert_pem=made.fullchain_pem, key_pem=made.key_pem)

    await push()
    served = await prober(listen=LISTEN, sni="a.test", key_kind="ecc", timeout=1.0)
    assert served.fingerprint == fingerprint_pem(made.cert_pem)
    with pytest.raises(FakeRepeated):
        await push()
    assert len(njet.puts) == 1
    (server,) = await njet.get_ssl()
    assert [c.fingerprint for c in server.certificates if c.inline] == [served.fingerprint]


async def test_njet_not_served_lands_in_the_record_only() -> None:
    s = spec("a.test")
    block = block_for(s)
    before = dict(block.served)
    njet = FakeNjet([block])
    njet.not_served = 1
    made = make_cert(["a.test"])
    await njet.add_cert(listens=[LISTEN], server_names=["a.test"], cert_type="ecc",
                        cert_pem=made.fullchain_pem, key_pem=made.key_pem)
    assert block.served == before and len(block.dynamic) == 1


async def test_njet_finds_blocks_by_exact_strings_and_can_be_unreachable() -> None:
    njet = FakeNjet([FakeBlock(("0.0.0.0:8443",), ("a.test",))])
    made = make_cert(["a.test"])
    with pytest.raises(ControllerError, match="can`t find server"):
        await njet.add_cert(listens=["127.0.0.1:8443"], server_names=["a.test"],
                            cert_type="ecc", cert_pem=made.fullchain_pem, key_pem=made.key_pem)
    njet.unreachable = True
    with pytest.raises(TemporaryError):
        await njet.get_ssl()


async def test_prober_answers_the_default_server_and_refuses_down_listens() -> None:
    a, b = spec("a.test"), spec("b.test")
    njet = FakeNjet([block_for(a), block_for(b)])
    prober = FakeProber(njet)
    unknown = await prober(listen=LISTEN, sni="other.test", key_kind="ecc", timeout=1.0)
    assert unknown.fingerprint == njet.blocks[0].served["ecc"]
    rsa = await prober(listen=LISTEN, sni="b.test", key_kind="rsa", timeout=1.0)
    assert rsa.fingerprint is None and rsa.error is not None and "rsa" in rsa.error
    prober.down.add(LISTEN)
    down = await prober(listen=LISTEN, sni="a.test", key_kind="ecc", timeout=1.0)
    assert down.fingerprint is None and down.error is not None and "refused" in down.error
    assert len(prober.calls) == 3


def test_status_persistence_round_trips_and_fails_as_told() -> None:
    statuses = MemoryStatus()
    statuses.save(CertStatus(domain="a.test", attempts=2))
    assert statuses.load_all() == {"a.test": CertStatus(domain="a.test", attempts=2)}
    statuses.delete("a.test")
    statuses.delete("a.test")  # missing is not an error
    assert statuses.load_all() == {}
    statuses.fail = True
    with pytest.raises(StoreError, match=r"a\.test"):
        statuses.save(CertStatus(domain="a.test"))
