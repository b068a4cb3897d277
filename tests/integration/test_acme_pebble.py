"""AcmeIssuer against a real Pebble: http-01 and tls-alpn-01 issuance, the lego-layout account,
re-registration after a CA restart, EAB, profiles, and how CA failures surface."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from acme import client as acme_client
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from josepy.b64 import b64decode

from controller.adapters.acme.client import AcmeIssuer
from controller.adapters.challenges.solvers import LocalHttp01Solver, LocalTlsAlpn01Solver
from controller.config import parse_config
from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.model import CertificateSpec, IssuedCert, KeyType
from controller.paths import StorePaths
from controller.ports import ChallengeSolver
from tests.fixtures.pebble import EXAMPLE_EAB_KEYS, free_tcp_port
from tests.fixtures.programs import require_program

pytestmark = pytest.mark.pebble

_counter = iter(range(1_000_000))


def unique_names(count: int = 2) -> tuple[str, ...]:
    """Fresh names per test, so no earlier authorization can be reused."""
    n = next(_counter)
    base = f"t{n}-{time.monotonic_ns() % 1_000_000}.test"
    return (base, *[f"w{i}.{base}" for i in range(1, count)])


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def spec_for(names: tuple[str, ...]) -> CertificateSpec:
    return CertificateSpec(domain=names[0], names=names)


def http_solver(pebble: Any) -> LocalHttp01Solver:
    return LocalHttp01Solver(f"127.0.0.1:{pebble.http_port}")


def make_issuer(
    pebble: Any, prefix: Path, solver: ChallengeSolver | None = None, **kw: Any
) -> AcmeIssuer:
    kw.setdefault("email", "admin@example.org")
    kw.setdefault("directory_url", pebble.directory_url)
    return AcmeIssuer(
        paths=StorePaths(prefix),
        solver=solver or http_solver(pebble),
        ca_bundle=pebble.ca_bundle,
        **kw,
    )


@pytest.fixture
def new_account_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every newAccount request (the account URI the CA answered)."""
    calls: list[str] = []
    original = acme_client.ClientV2.new_account

    def counting(self: acme_client.ClientV2, new_account: Any) -> Any:
        try:
            regr = original(self, new_account)
        except Exception:
            calls.append("<error or existing>")
            raise
        calls.append(regr.uri)
        return regr

    monkeypatch.setattr(acme_client.ClientV2, "new_account", counting)
    yield calls


def assert_valid_issue(issued: IssuedCert, names: tuple[str, ...], pebble: Any) -> x509.Certificate:
    chain = x509.load_pem_x509_certificates(issued.cert_pem)
    leaf = chain[0]
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == [names[0]]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    # issuer_pem is the returned chain without the leaf
    assert x509.load_pem_x509_certificates(issued.issuer_pem) == chain[1:]
    assert issued.cert_pem.endswith(issued.issuer_pem)
    # the key is ours
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert leaf.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    # the chain verifies against this Pebble run's root and intermediate
    root_pem, intermediate_pem = pebble.issuing_chain_pem()
    root = x509.load_pem_x509_certificate(root_pem)
    intermediate = x509.load_pem_x509_certificate(intermediate_pem)
    assert chain[1:] == [intermediate]
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([root]))
        .time(datetime.now(UTC))
        .build_server_verifier(x509.DNSName(names[-1]))
    )
    verified = verifier.verify(leaf, chain[1:])
    assert verified[-1] == root
    assert issued.cert_url.startswith("https://127.0.0.1:")  # Pebble's (or the proxy's) URL
    return leaf


async def test_issues_a_two_name_ec256_certificate_over_http01(
    pebble: Any, tmp_path: Path
) -> None:
    names = unique_names(2)
    solver = http_solver(pebble)
    issuer = make_issuer(pebble, tmp_path, solver)
    started = time.monotonic()
    issued = await issuer.issue(spec_for(names), KeyType.EC256)
    elapsed = time.monotonic() - started
    print(f"\nhttp-01 ec256 issuance (incl. account registration): {elapsed:.3f}s")
    leaf = assert_valid_issue(issued, names, pebble)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert solver.ports == []  # the challenge server is closed after validation

    names2 = unique_names(2)
    started = time.monotonic()
    await issuer.issue(spec_for(names2), KeyType.EC256)
    print(f"http-01 ec256 issuance (account known): {time.monotonic() - started:.3f}s")


async def test_issues_a_two_name_rsa2048_certificate_over_tls_alpn01(
    pebble: Any, tmp_path: Path
) -> None:
    names = unique_names(2)
    solver = LocalTlsAlpn01Solver(f"127.0.0.1:{pebble.tls_port}")
    issuer = make_issuer(pebble, tmp_path, solver)
    started = time.monotonic()
    issued = await issuer.issue(spec_for(names), KeyType.RSA2048)
    print(f"\ntls-alpn-01 rsa2048 issuance: {time.monotonic() - started:.3f}s")
    leaf = assert_valid_issue(issued, names, pebble)
    public = leaf.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert solver.ports == []


async def test_concurrent_orders_share_one_challenge_server(pebble: Any, tmp_path: Path) -> None:
    solver = http_solver(pebble)
    issuer = make_issuer(pebble, tmp_path, solver)
    specs = [spec_for(unique_names(1)) for _ in range(3)]
    results = await asyncio.gather(*(issuer.issue(s, KeyType.EC256) for s in specs))
    for spec, issued in zip(specs, results, strict=True):
        assert_valid_issue(issued, spec.names, pebble)
    assert solver.ports == []


async def test_account_is_stored_in_lego_layout_and_reused_by_a_new_issuer(
    pebble: Any, tmp_path: Path, new_account_calls: list[str]
) -> None:
    first = make_issuer(pebble, tmp_path)
    await first.issue(spec_for(unique_names(1)), KeyType.EC256)
    assert len(new_account_calls) == 1

    account_dir = StorePaths(tmp_path).account_dir(pebble.directory_url, "admin@example.org")
    account_json = account_dir / "account.json"
    key_file = account_dir / "keys" / "admin@example.org.key"
    doc = json.loads(account_json.read_text())
    assert doc["email"] == "admin@example.org"
    assert doc["registration"]["uri"] == new_account_calls[0]
    assert doc["registration"]["body"]["contact"] == ["mailto:admin@example.org"]
    assert b"BEGIN EC PRIVATE KEY" in key_file.read_bytes()  # what lego's loader accepts
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(account_json.stat().st_mode) == 0o600
    before = (account_json.read_bytes(), key_file.read_bytes())

    second = make_issuer(pebble, tmp_path)  # e.g. after a controller restart
    await second.issue(spec_for(unique_names(1)), KeyType.EC256)
    await second.issue(spec_for(unique_names(1)), KeyType.EC256)
    assert len(new_account_calls) == 1
    assert (account_json.read_bytes(), key_file.read_bytes()) == before
    assert files_under(tmp_path) == {account_json, key_file}


async def test_reuses_a_lego_written_rsa_account_key_and_account_file(
    pebble: Any, tmp_path: Path, new_account_calls: list[str]
) -> None:
    paths = StorePaths(tmp_path)
    account_dir = paths.account_dir(pebble.directory_url, "lego@example.org")
    key_file = account_dir / "keys" / "lego@example.org.key"
    key_file.parent.mkdir(parents=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    lego_key = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "RSA PRIVATE KEY", as lego writes
        serialization.NoEncryption(),
    )
    key_file.write_bytes(lego_key)

    # Only the key: registered with that key, which is kept as it is.
    await make_issuer(pebble, tmp_path, email="lego@example.org").issue(
        spec_for(unique_names(1)), KeyType.EC256
    )
    assert len(new_account_calls) == 1
    assert key_file.read_bytes() == lego_key

    # An account.json shaped like lego's (tabs, lego's body fields): used without registering.
    (account_dir / "account.json").write_text(
        json.dumps(
            {
                "email": "lego@example.org",
                "registration": {
                    "body": {"status": "valid", "contact": ["mailto:lego@example.org"]},
                    "uri": new_account_calls[0],
                },
            },
            indent="\t",
        )
    )
    await make_issuer(pebble, tmp_path, email="lego@example.org").issue(
        spec_for(unique_names(1)), KeyType.RSA2048
    )
    assert len(new_account_calls) == 1


async def test_registers_again_when_the_ca_forgot_the_account(
    pebble_factory: Callable[..., Any], tmp_path: Path, new_account_calls: list[str]
) -> None:
    ca = pebble_factory()
    issuer = make_issuer(ca, tmp_path)
    await issuer.issue(spec_for(unique_names(1)), KeyType.EC256)
    account_json = issuer.files.account_json
    first_uri = json.loads(account_json.read_text())["registration"]["uri"]
    key_before = issuer.files.key.read_bytes()

    ca.restart()  # Pebble forgets every account: the next order says accountDoesNotExist
    names = unique_names(2)
    issued = await issuer.issue(spec_for(names), KeyType.EC256)
    assert_valid_issue(issued, names, ca)
    assert len(new_account_calls) == 2
    assert json.loads(account_json.read_text())["registration"]["uri"] == new_account_calls[1]
    assert new_account_calls[1] != first_uri
    assert issuer.files.key.read_bytes() == key_before  # same key, new registration


async def test_a_ca_that_is_down_is_a_temporary_error_naming_the_url(tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{free_tcp_port()}/dir"
    issuer = AcmeIssuer(
        directory_url=url, email="a@example.org", paths=StorePaths(tmp_path),
        solver=LocalHttp01Solver("127.0.0.1:0"),
    )
    with pytest.raises(TemporaryError) as err:
        await issuer.issue(spec_for(("down.test",)), KeyType.EC256)
    assert url in str(err.value)
    assert "refused" in str(err.value)
    assert files_under(tmp_path) == set()


async def test_a_ca_going_down_after_registration_leaves_only_the_account(
    pebble_factory: Callable[..., Any], tmp_path: Path
) -> None:
    ca = pebble_factory()
    solver = http_solver(ca)
    issuer = make_issuer(ca, tmp_path, solver)
    await issuer.issue(spec_for(unique_names(1)), KeyType.EC256)
    ca.stop_pebble()
    with pytest.raises(TemporaryError) as err:
        await issuer.issue(spec_for(unique_names(1)), KeyType.EC256)
    assert ca.directory_url in str(err.value)
    assert files_under(tmp_path) == {issuer.files.account_json, issuer.files.key}
    assert solver.ports == []


async def test_failed_validation_is_permanent_and_names_the_domain(
    pebble: Any, tmp_path: Path
) -> None:
    # Our server listens elsewhere: Pebble's connection to its http-01 port is refused.
    wrong_port = LocalHttp01Solver(f"127.0.0.1:{free_tcp_port()}")
    issuer = make_issuer(pebble, tmp_path, wrong_port)
    names = unique_names(1)
    with pytest.raises(PermanentError) as err:
        await issuer.issue(spec_for(names), KeyType.EC256)
    assert f"http-01 validation of {names[0]} failed" in str(err.value)
    assert "connection" in str(err.value).lower()
    assert wrong_port.ports == []


async def test_rejected_identifier_is_permanent_with_the_cas_detail(
    pebble_factory: Callable[..., Any], tmp_path: Path
) -> None:
    ca = pebble_factory(domain_blocklist=["blocked.test"])
    issuer = make_issuer(ca, tmp_path)
    with pytest.raises(PermanentError) as err:
        await issuer.issue(spec_for(("ok.test", "blocked.test")), KeyType.EC256)
    assert "rejectedIdentifier" in str(err.value)
    assert "blocked.test" in str(err.value)


async def test_short_validity_and_heavy_nonce_rejection(
    pebble_factory: Callable[..., Any], tmp_path: Path
) -> None:
    ca = pebble_factory(validity_seconds=600, nonce_reject_percent=30)
    issuer = make_issuer(ca, tmp_path)
    for _ in range(2):
        names = unique_names(2)
        leaf = assert_valid_issue(await issuer.issue(spec_for(names), KeyType.EC256), names, ca)
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert 590 <= lifetime.total_seconds() <= 610


async def test_external_account_binding(
    pebble_factory: Callable[..., Any], tmp_path: Path
) -> None:
    ca = pebble_factory(eab_keys=EXAMPLE_EAB_KEYS)
    with pytest.raises(ConfigError, match="requires external account binding"):
        await make_issuer(ca, tmp_path / "none").issue(spec_for(unique_names(1)), KeyType.EC256)
    wrong = make_issuer(ca, tmp_path / "wrong", eab_kid="kid-1",
                        eab_hmac_key=EXAMPLE_EAB_KEYS["kid-2"])
    with pytest.raises(ConfigError, match=r"rejected the external account binding.*kid-1"):
        await wrong.issue(spec_for(unique_names(1)), KeyType.EC256)
    good = make_issuer(ca, tmp_path / "good", eab_kid="kid-1",
                       eab_hmac_key=EXAMPLE_EAB_KEYS["kid-1"])
    names = unique_names(1)
    assert_valid_issue(await good.issue(spec_for(names), KeyType.EC256), names, ca)


async def test_a_profile_the_ca_does_not_offer_is_a_config_error(
    pebble: Any, tmp_path: Path
) -> None:
    issuer = make_issuer(pebble, tmp_path, profile="shortlived", profile_required=True)
    with pytest.raises(ConfigError, match=r"'shortlived' is not offered.*offers none"):
        await issuer.issue(spec_for(unique_names(1)), KeyType.EC256)
    assert files_under(tmp_path) == set()


def test_from_config_builds_the_local_solver_of_the_challenge_type(tmp_path: Path) -> None:
    ca_bundle = tmp_path / "ca.pem"
    ca_bundle.write_bytes(b"not a certificate")
    data: dict[str, Any] = {"acme": {"email": "a@example.org", "challengeType": "tls",
                                     "tlsChallengeServerAddress": "127.0.0.1:0"}}
    issuer = AcmeIssuer.from_config(parse_config(data, prefix=tmp_path), StorePaths(tmp_path))
    assert isinstance(issuer.solver, LocalTlsAlpn01Solver)
    assert issuer.solver.address == "127.0.0.1:0"

    data["acme"]["caBundle"] = "ca.pem"  # relative to the prefix
    with pytest.raises(ConfigError, match=r"caBundle .*ca\.pem: no PEM certificate"):
        AcmeIssuer.from_config(parse_config(data, prefix=tmp_path), StorePaths(tmp_path))
    data["acme"]["caBundle"] = "missing.pem"
    with pytest.raises(ConfigError, match=r"caBundle .*missing\.pem: cannot read"):
        AcmeIssuer.from_config(parse_config(data, prefix=tmp_path), StorePaths(tmp_path))


# -- transient failures, injected by a TLS proxy in front of Pebble ------------------------------

Fault = Callable[[str, str, int], "web.Response | None"]


@contextlib.asynccontextmanager
async def faulty_proxy(
    pebble: Any,
    fault: Fault,
    *,
    edit: Callable[[str, bytes], bytes] | None = None,
    seen: list[tuple[str, bytes]] | None = None,
) -> AsyncIterator[str]:
    """An HTTPS proxy to Pebble (same certificate, Host kept, so Pebble's URLs point to it).

    `fault(method, kind, n)` may answer instead of Pebble; n counts requests per (method, kind)
    where kind is the first path segment. `edit(kind, body)` rewrites Pebble's answers; `seen`
    collects (kind, request body)."""
    counts: dict[tuple[str, str], int] = {}
    client_ctx = pebble.ssl_context()

    async def handle(request: web.Request) -> web.StreamResponse:
        kind = request.path.strip("/").split("/")[0]
        n = counts[(request.method, kind)] = counts.get((request.method, kind), 0) + 1
        injected = fault(request.method, kind, n)
        if injected is not None:
            return injected
        body = await request.read()
        if seen is not None:
            seen.append((kind, body))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with session.request(
            request.method, f"https://127.0.0.1:{pebble.listen_port}{request.path_qs}",
            data=body, headers=headers, ssl=client_ctx,
        ) as upstream:
            payload = await upstream.read()
            if edit is not None:
                payload = edit(kind, payload)
            drop = {"content-length", "transfer-encoding", "content-encoding", "connection"}
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in drop}
            return web.Response(status=upstream.status, body=payload, headers=out)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pebble.state_dir / "server.pem", pebble.state_dir / "server.key")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_tcp_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        await site.start()
        try:
            yield f"https://127.0.0.1:{port}/dir"
        finally:
            await runner.cleanup()


def problem(status: int, code: str, detail: str, **headers: str) -> web.Response:
    body = json.dumps({"type": f"urn:ietf:params:acme:error:{code}", "detail": detail})
    return web.Response(
        status=status, text=body, content_type="application/problem+json", headers=headers
    )


async def test_transient_ca_failures_are_retried_in_place(pebble: Any, tmp_path: Path) -> None:
    injected: list[str] = []

    def fault(method: str, kind: str, n: int) -> web.Response | None:
        if kind == "dir" and n == 1:
            injected.append("502 on the directory")
            return web.Response(status=502, text="bad gateway")
        if kind == "order-plz" and n == 1:
            injected.append("503 on newOrder")
            return problem(503, "serverInternal", "try again")
        if kind == "order-plz" and n == 2:
            injected.append("rateLimited, Retry-After 1")
            return problem(429, "rateLimited", "slow down", **{"Retry-After": "1"})
        if kind == "finalize-order" and n == 1:
            injected.append("badNonce on finalize")
            return problem(400, "badNonce", "stale nonce")
        return None

    async with faulty_proxy(pebble, fault) as url:
        issuer = make_issuer(pebble, tmp_path, directory_url=url)
        names = unique_names(1)
        assert_valid_issue(await issuer.issue(spec_for(names), KeyType.EC256), names, pebble)
    assert len(injected) == 4


async def test_a_long_rate_limit_surfaces_as_temporary_with_retry_after(
    pebble: Any, tmp_path: Path
) -> None:
    def fault(method: str, kind: str, n: int) -> web.Response | None:
        if kind == "order-plz":
            return problem(429, "rateLimited", "too many orders", **{"Retry-After": "3600"})
        return None

    async with faulty_proxy(pebble, fault) as url:
        issuer = make_issuer(pebble, tmp_path, directory_url=url)
        started = time.monotonic()
        with pytest.raises(TemporaryError) as err:
            await issuer.issue(spec_for(unique_names(1)), KeyType.EC256)
    assert time.monotonic() - started < 5  # not waited out in place
    assert err.value.retry_after == 3600
    assert "rateLimited: too many orders" in str(err.value)
    assert url in str(err.value)


async def test_a_ca_failing_persistently_is_temporary_after_a_few_attempts(
    pebble: Any, tmp_path: Path
) -> None:
    attempts: list[int] = []

    def fault(method: str, kind: str, n: int) -> web.Response | None:
        if kind == "order-plz":
            attempts.append(n)
            return problem(500, "serverInternal", "database on fire")
        return None

    async with faulty_proxy(pebble, fault) as url:
        issuer = make_issuer(pebble, tmp_path, directory_url=url)
        with pytest.raises(TemporaryError, match="serverInternal: database on fire"):
            await issuer.issue(spec_for(unique_names(1)), KeyType.EC256)
    assert attempts == [1, 2, 3]


# -- interoperability with the real lego (NJet's Go cert-manager is built on it) ------------------


def run_lego(pebble: Any, prefix: Path, email: str, name: str) -> subprocess.CompletedProcess[str]:
    lego = require_program("lego")
    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(pebble.ca_bundle)}
    result = subprocess.run(
        [lego, "--server", pebble.directory_url, "--email", email, "--accept-tos",
         "--key-type", "ec256", "--domains", name, "--http",
         "--http.port", f"127.0.0.1:{pebble.http_port}", "--path", str(prefix / ".lego"), "run"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


async def test_an_account_registered_by_lego_is_reused(
    pebble: Any, tmp_path: Path, new_account_calls: list[str]
) -> None:
    await asyncio.to_thread(run_lego, pebble, tmp_path, "lego@example.org", unique_names(1)[0])
    issuer = make_issuer(pebble, tmp_path, email="lego@example.org")
    lego_account = issuer.files.account_json.read_bytes()
    names = unique_names(2)
    assert_valid_issue(await issuer.issue(spec_for(names), KeyType.EC256), names, pebble)
    assert new_account_calls == []
    assert issuer.files.account_json.read_bytes() == lego_account


@pytest.mark.slow
async def test_lego_reuses_an_account_we_registered(pebble: Any, tmp_path: Path) -> None:
    issuer = make_issuer(pebble, tmp_path, email="ours@example.org")
    await issuer.issue(spec_for(unique_names(1)), KeyType.EC256)
    result = await asyncio.to_thread(
        run_lego, pebble, tmp_path, "ours@example.org", unique_names(1)[0]
    )
    assert "Registering account" not in result.stderr
    assert "No key found" not in result.stderr


async def test_a_profile_the_ca_offers_is_sent_with_the_order(pebble: Any, tmp_path: Path) -> None:
    def offer_profiles(kind: str, body: bytes) -> bytes:
        if kind != "dir":
            return body
        directory = json.loads(body)
        directory["meta"]["profiles"] = {"shortlived": "6-day certificates", "classic": "90d"}
        return json.dumps(directory).encode()

    seen: list[tuple[str, bytes]] = []
    async with faulty_proxy(pebble, lambda *_: None, edit=offer_profiles, seen=seen) as url:
        issuer = make_issuer(pebble, tmp_path, directory_url=url, profile="shortlived")
        names = unique_names(1)  # Pebble 2.4 ignores the field it does not know, and issues
        assert_valid_issue(await issuer.issue(spec_for(names), KeyType.EC256), names, pebble)
    orders = [json.loads(b64decode(json.loads(body)["payload"])) for k, body in seen
              if k == "order-plz"]
    assert orders and all(order["profile"] == "shortlived" for order in orders)
