"""Gatherer over the fakes: what one pass observes from the store, NJet's record and probes."""

from __future__ import annotations

import os
from pathlib import Path

from controller.model import CertificateSpec, Desired, KeyType
from controller.observe import Gatherer
from controller.policy import PolicySettings
from tests.certbuilder import make_cert
from tests.fakes import FakeBlock, FakeNjet, FakeProber, MemoryStore, block_for, spec

NJET = PolicySettings(default_key_type=KeyType.EC256, store_only=False)


def desired(*specs: CertificateSpec) -> Desired:
    return Desired(specs={s.domain: s for s in specs})


def gatherer(store: MemoryStore, njet: FakeNjet | None) -> tuple[Gatherer, FakeProber | None]:
    prober = FakeProber(njet) if njet is not None else None
    settings = NJET if njet is not None else PolicySettings(store_only=True)
    return Gatherer(store, settings, njet=njet, prober=prober, probe_timeout=1.0), prober


async def test_store_only_sees_the_store_and_nothing_of_njet() -> None:
    store = MemoryStore()
    store.put("a.test", make_cert(["a.test"]).issued())
    store.problems["b.test"] = "b.test.key: not a private key"
    g, _ = gatherer(store, None)
    obs = await g.observe(desired(spec("a.test")), probe=True)
    assert set(obs.stored) == {"a.test"}
    assert obs.problems == {"b.test": "b.test.key: not a private key"}
    assert obs.njet_targets == {} and obs.served == {} and obs.njet_error is None


async def test_an_unreachable_njet_becomes_njet_error_and_nothing_is_probed() -> None:
    a = spec("a.test")
    store = MemoryStore()
    store.put("a.test", make_cert(["a.test"]).issued())
    njet = FakeNjet([block_for(a)])
    njet.unreachable = True
    g, prober = gatherer(store, njet)
    obs = await g.observe(desired(a), probe=True)
    assert obs.njet_error is not None and "unreachable" in obs.njet_error
    assert set(obs.stored) == {"a.test"}
    assert obs.njet_targets == {} and obs.served == {}
    assert prober is not None and prober.calls == []


async def test_probes_only_when_asked() -> None:
    a = spec("a.test", "www.a.test")
    njet = FakeNjet([block_for(a)])
    g, prober = gatherer(MemoryStore(), njet)
    assert prober is not None
    quiet = await g.observe(desired(a))
    assert quiet.served == {} and prober.calls == []
    assert quiet.njet_targets["a.test"][0].listens == ("127.0.0.1:8443",)
    probed = await g.observe(desired(a), probe=True)
    assert prober.calls == [("127.0.0.1:8443", "a.test", "ecc")]
    served = probed.served["a.test"]
    assert served.fingerprint == njet.blocks[0].served["ecc"] and served.error is None


async def test_merged_blocks_serving_different_certs_show_no_fingerprint() -> None:
    # two njet.conf blocks sharing the first name, merged into one spec; neither has every name
    merged = spec("a.test", "x.a.test", "y.a.test",
                  listens=("127.0.0.1:8443", "127.0.0.1:8444"))
    one = block_for(spec("a.test", "x.a.test", listens=("127.0.0.1:8443",)))
    two = block_for(spec("a.test", "y.a.test", listens=("127.0.0.1:8444",)))
    njet = FakeNjet([one, two])
    g, prober = gatherer(MemoryStore(), njet)
    obs = await g.observe(desired(merged), probe=True)
    assert len(obs.njet_targets["a.test"]) == 2
    assert prober is not None and {c[0] for c in prober.calls} == {"127.0.0.1:8443",
                                                                     "127.0.0.1:8444"}
    served = obs.served["a.test"]
    assert served.fingerprint is None
    assert served.error == "the blocks serve different certificates"

    two.served["ecc"] = one.served["ecc"]
    same = (await g.observe(desired(merged), probe=True)).served["a.test"]
    assert same.fingerprint == one.served["ecc"] and same.error is None


async def test_a_failed_handshake_is_observed_with_its_error() -> None:
    a = spec("a.test")
    njet = FakeNjet([block_for(a)])
    g, prober = gatherer(MemoryStore(), njet)
    assert prober is not None
    prober.down.add("127.0.0.1:8443")
    served = (await g.observe(desired(a), probe=True)).served["a.test"]
    assert served.fingerprint is None
    assert served.error is not None and "connection refused" in served.error


async def test_the_probe_offers_the_key_type_of_the_block_config_cert() -> None:
    """A runtime-announced block has no bootstrap file we read: NJet's GET says its type."""
    a = spec("a.test", key_type=None)
    njet = FakeNjet([block_for(a, bootstrap="rsa")])
    g, prober = gatherer(MemoryStore(), njet)
    obs = await g.observe(desired(a), probe=True)
    assert obs.bootstrap_key_types == {"a.test": KeyType.RSA2048}
    assert prober is not None and prober.calls == [("127.0.0.1:8443", "a.test", "rsa")]
    assert obs.served["a.test"].fingerprint == njet.blocks[0].served["rsa"]


async def test_a_block_njet_does_not_run_is_unmatched_with_the_reason() -> None:
    njet = FakeNjet([FakeBlock(("127.0.0.1:8443",), ("a.test",))])
    g, prober = gatherer(MemoryStore(), njet)
    obs = await g.observe(desired(spec("b.test")), probe=True)
    assert "b.test" not in obs.njet_targets
    assert "waiting for reload" in obs.njet_unmatched["b.test"]
    assert prober is not None and prober.calls == []


async def test_the_bootstrap_cert_file_gives_the_key_type_and_a_change_is_seen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "server.crt"
    path.write_bytes(make_cert(["a.test"], key_type=KeyType.RSA2048, self_signed=True).cert_pem)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    a = CertificateSpec(domain="a.test", names=("a.test",), listens=("127.0.0.1:8443",),
                        bootstrap_cert=str(path))
    g, _ = gatherer(MemoryStore(), None)
    assert (await g.observe(desired(a))).bootstrap_key_types == {"a.test": KeyType.RSA2048}

    path.write_bytes(make_cert(["a.test"], key_type=KeyType.EC256, self_signed=True).cert_pem)
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert (await g.observe(desired(a))).bootstrap_key_types == {"a.test": KeyType.EC256}

    path.write_bytes(b"not a certificate")
    os.utime(path, ns=(3_000_000_000, 3_000_000_000))
    assert (await g.observe(desired(a))).bootstrap_key_types == {}
