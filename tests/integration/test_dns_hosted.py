"""The hosted DNS providers (controller/adapters/dns/lexicon_provider.py: dns-lexicon) against
local servers that speak Cloudflare's, Alibaba Cloud DNS's, DNSPod's and Route 53's APIs from
recorded shapes (tests/integration/dns_fakes.py, tests/data/dns/): their clouds cannot be
reached from here. Real dns-lexicon, real requests (boto3 for Route 53), real HTTP over
loopback; every other connection and name lookup is refused and fails the test (nothing fetches
the public suffix list).

Checked per provider: present creates the record (name, value, TTL), a second value at the same
name keeps both, cleanup removes only ours (not a value at the same name, not a record at a
similar name) and a value that is not there is fine; wrong credentials and a 401 are
ConfigErrors naming the provider, never a credential; a 503, a hang and a garbled reply are
TemporaryErrors; no credential reaches the logs."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from controller.adapters.dns.lexicon_provider import INSTALL_HINT, LexiconProvider
from controller.errors import ConfigError, TemporaryError
from controller.ports import DnsProvider
from tests.fixtures.programs import require_module
from tests.integration.dns_fake_apis import (
    AUTH_FAILURE,
    CREDENTIALS,
    FAKES,
    PROVIDERS,
    point_lexicon,
)
from tests.integration.dns_fakes import ZONE, FakeApi
from tests.logcapture import capture_logs

require_module("lexicon", why="dns-lexicon, the dns-hosted extra")

NAME = f"_acme-challenge.{ZONE}"
OURS = "gfj9Xq-xsq_Ue3JzA2Wj0yNpSs2SwSmvSfUOhcbYbEc"
SECOND = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
THEIRS = "v=spf-like-record-someone-else-keeps"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Only loopback: any other lookup or connection is refused, noted, and fails the test."""
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and str(host) not in LOOPBACK:
            attempts.append(f"lookup {host}")
            raise socket.gaierror(socket.EAI_NONAME, "network access is blocked in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            attempts.append(f"connect {address}")
            raise OSError(errno.ENETUNREACH, "network access is blocked in this test")
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert not attempts, f"something reached for the network: {attempts}"


@pytest.fixture(params=PROVIDERS)
async def fake(request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeApi]:
    provider = request.param
    if provider == "route53":
        require_module("boto3", why="dns-lexicon's route53 extra")
    api = FAKES[provider](provider, dict(CREDENTIALS[provider]))
    point_lexicon(monkeypatch, provider, await api.start())
    try:
        yield api
    finally:
        await api.stop()
    assert not api.mismatches, f"requests the {provider} API would not take: {api.mismatches}"


def hosted(api: FakeApi, credentials: dict[str, str] | None = None,
           **kwargs: Any) -> LexiconProvider:
    return LexiconProvider(api.provider, credentials or CREDENTIALS[api.provider], zone=ZONE,
                           **kwargs)


def secrets_of(provider: str) -> list[str]:
    return list(CREDENTIALS[provider].values())


async def test_present_creates_the_record_with_name_value_and_ttl(fake: FakeApi) -> None:
    provider: DnsProvider = hosted(fake, ttl=120)  # the port, structurally
    await provider.present(zone=ZONE, fqdn=NAME, value=OURS)
    [record] = [r for r in fake.records if r.type == "TXT"]
    assert (record.name, record.value, record.ttl) == (NAME, OURS, 120)
    await provider.present(zone=ZONE, fqdn=NAME, value=OURS)  # a retried present: no copy
    assert fake.txt(NAME) == [OURS]
    await provider.close()


async def test_a_second_value_at_the_same_name_keeps_both(fake: FakeApi) -> None:
    provider = hosted(fake)
    await provider.present(zone=ZONE, fqdn=NAME, value=OURS)
    await provider.present(zone=ZONE, fqdn=NAME, value=SECOND)
    assert fake.txt(NAME) == sorted([OURS, SECOND])


async def test_values_at_one_name_and_at_others_at_once(fake: FakeApi) -> None:
    provider = hosted(fake)
    other = f"_acme-challenge.www.{ZONE}"
    await asyncio.gather(provider.present(zone=ZONE, fqdn=NAME, value=OURS),
                         provider.present(zone=ZONE, fqdn=NAME, value=SECOND),
                         provider.present(zone=ZONE, fqdn=other, value=OURS))
    assert fake.txt(NAME) == sorted([OURS, SECOND])
    assert fake.txt(other) == [OURS]


async def test_cleanup_removes_only_our_value(fake: FakeApi) -> None:
    fake.add(NAME, THEIRS)
    similar = fake.add(f"_acme-challenge.www.{ZONE}", OURS)  # same value, another name
    provider = hosted(fake)
    await provider.present(zone=ZONE, fqdn=NAME, value=OURS)
    await provider.present(zone=ZONE, fqdn=NAME, value=SECOND)
    await provider.cleanup(zone=ZONE, fqdn=NAME, value=OURS)
    assert fake.txt(NAME) == sorted([SECOND, THEIRS])
    assert similar in fake.records
    await provider.cleanup(zone=ZONE, fqdn=NAME, value=OURS)  # not there any more: fine
    await provider.cleanup(zone=ZONE, fqdn=NAME, value=SECOND)
    assert fake.txt(NAME) == [THEIRS] and similar in fake.records


async def test_our_record_is_found_among_many_similar_names(fake: FakeApi) -> None:
    # Alibaba Cloud matches RRKeyWord loosely and pages by 20: 25 other challenge names
    for i in range(25):
        fake.add(f"_acme-challenge.n{i}.{ZONE}", f"other-value-{i:02d}-{'x' * 30}")
    provider = hosted(fake)
    await provider.present(zone=ZONE, fqdn=NAME, value=OURS)
    await provider.present(zone=ZONE, fqdn=NAME, value=OURS)
    assert fake.txt(NAME) == [OURS]
    await provider.cleanup(zone=ZONE, fqdn=NAME, value=OURS)
    assert fake.txt(NAME) == [] and len([r for r in fake.records if r.type == "TXT"]) == 25


async def test_wrong_credentials_are_a_config_error_without_the_credential(
        fake: FakeApi) -> None:
    wrong = {k: v + "-wrong" for k, v in CREDENTIALS[fake.provider].items()}
    with capture_logs(verbosity=2) as logs, pytest.raises(ConfigError) as caught:
        await hosted(fake, wrong).present(zone=ZONE, fqdn=NAME, value=OURS)
    message = str(caught.value)
    assert fake.provider in message and NAME in message
    assert fake.calls[-1].operation in {r.name for r in fake.recordings}
    for secret in secrets_of(fake.provider) + list(wrong.values()):
        assert secret not in message and secret not in logs.text
    assert fake.txt(NAME) == []
    if fake.provider != "dnspod":  # DNSPod says "Login failed" with HTTP 200
        assert "HTTP" in message
    assert AUTH_FAILURE[fake.provider] in fake.by_name


async def test_an_unauthorized_answer_is_a_config_error(fake: FakeApi) -> None:
    """A 401 (Route 53: AWS's 403 InvalidClientTokenId) for every request."""
    fake.fail = "error_unauthorized"
    status = fake.by_name["error_unauthorized"].status
    assert status == (403 if fake.provider == "route53" else 401)
    expected = rf"dns provider {fake.provider}: present .*HTTP {status}"
    with pytest.raises(ConfigError, match=expected):
        await hosted(fake).present(zone=ZONE, fqdn=NAME, value=OURS)


async def test_a_503_is_a_temporary_error(fake: FakeApi) -> None:
    provider = hosted(fake)
    await provider.present(zone=ZONE, fqdn=NAME, value=OURS)
    fake.fail = "error_unavailable"
    for call in (provider.present, provider.cleanup):
        with pytest.raises(TemporaryError, match=rf"dns provider {fake.provider}: .*HTTP 503"):
            await call(zone=ZONE, fqdn=NAME, value=SECOND)
    fake.fail = None
    assert fake.txt(NAME) == [OURS]


async def test_a_provider_that_never_answers_is_a_temporary_error(fake: FakeApi) -> None:
    fake.hang = True
    with pytest.raises(TemporaryError, match=r"no answer within 0\.5 s"):
        await hosted(fake, timeout=0.5).present(zone=ZONE, fqdn=NAME, value=OURS)


async def test_a_garbled_reply_is_a_temporary_error(fake: FakeApi) -> None:
    fake.garble = True  # a 200 that is not the API's JSON (a captive portal, a proxy)
    with pytest.raises(TemporaryError, match="unexpected reply"):
        await hosted(fake).present(zone=ZONE, fqdn=NAME, value=OURS)


async def test_no_credential_reaches_the_logs(fake: FakeApi) -> None:
    with capture_logs(verbosity=2) as logs:
        provider = hosted(fake)
        await provider.present(zone=ZONE, fqdn=NAME, value=OURS)
        await provider.cleanup(zone=ZONE, fqdn=NAME, value=OURS)
        fake.fail = "error_unavailable"
        with pytest.raises(TemporaryError):
            await provider.present(zone=ZONE, fqdn=NAME, value=OURS)
    assert NAME in logs.text  # the debug lines are there, without what they must not show
    for secret in secrets_of(fake.provider):
        assert secret not in logs.text


# --- without a server -----------------------------------------------------------------------


def test_a_missing_credential_is_named() -> None:
    with pytest.raises(ConfigError, match="lacks auth_secret"):
        LexiconProvider("aliyun", {"auth_key_id": "x"}, zone=ZONE)


def test_dashed_keys_work_like_lexicons_cli_flags() -> None:
    LexiconProvider("aliyun", {"auth-key-id": "id", "auth-secret": "s"}, zone=ZONE)


def test_an_unknown_provider_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean cloudflare"):
        LexiconProvider("cloudfare", {"auth_token": "t"}, zone=ZONE)


@pytest.mark.parametrize("name", ["auto", "../cloudflare", "lexicon.client", ""])
def test_names_that_are_not_a_provider_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        LexiconProvider(name, {}, zone=ZONE)


def test_a_name_outside_the_zone_is_refused() -> None:
    provider = LexiconProvider("cloudflare", {"auth_token": "t"}, zone=ZONE)
    with pytest.raises(ConfigError, match="not inside zone"):
        asyncio.run(provider.present(zone=ZONE, fqdn="_acme-challenge.xshop.test", value=OURS))


@pytest.mark.parametrize(("provider", "sdk"), [("route53", "boto3"), ("qcloud", "tencentcloud")])
def test_a_provider_whose_sdk_is_missing_says_what_to_install(
        provider: str, sdk: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, sdk, None)  # as if not installed
    with pytest.raises(ConfigError, match=rf"needs {sdk}.*dns-lexicon\[{provider}\]"):
        LexiconProvider(provider, {"secret_id": "i", "secret_key": "k"}, zone=ZONE)


def test_without_dns_lexicon_the_error_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "lexicon" or n.startswith("lexicon.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "lexicon", None)
    with pytest.raises(ConfigError) as caught:
        LexiconProvider("cloudflare", {"auth_token": "t"}, zone=ZONE)
    assert INSTALL_HINT in str(caught.value)
    assert INSTALL_HINT == "pip install 'njet-cert-manager[dns-hosted]'"


def test_the_public_suffix_list_is_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    import tldextract
    import tldextract.cache

    def fetch(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("tldextract tried to download the public suffix list")

    monkeypatch.setattr(tldextract.cache.DiskCache, "cached_fetch_url", fetch)
    LexiconProvider("cloudflare", {"auth_token": "t"}, zone=ZONE)
    # the module-wide extractor some providers call (godaddy) now answers from its snapshot
    assert tldextract.extract("www.shop.example.co.uk").suffix == "co.uk"
