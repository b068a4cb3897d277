"""`[notify] webhook` against a real local aiohttp receiver, fed by real passes over the fakes:
each template's body, the HMAC signature checked the way the README tells receivers to, retries
on 5xx with backoff, no retry on 4xx, DingTalk's errcode, a receiver that hangs or is down never
holding a pass, and a URL token that never reaches the log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from controller.adapters.hooks.dispatch import Dispatcher
from controller.adapters.hooks.observer import HookObserver
from controller.adapters.hooks.webhook import WebhookNotifier
from controller.metrics import ControllerMetrics
from controller.model import CertificateSpec
from controller.paths import StorePaths
from controller.reconcile import Reconciler
from tests.fakes import FakeClock, FakeIssuer, MemoryStore, RecordingObserver
from tests.fixtures.pebble import free_tcp_port
from tests.logcapture import capture_logs
from tests.support.hookkit import A, B, store_only_reconciler

SECRET = b"webhook-hmac-key"
TOKEN_PATH = "/hook/T0K3N-in-path"
TOKEN_QUERY = "access_token=S3CR3T-in-query"


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: answers `statuses` in turn (then 200) with `answer`; while `hang`
    is set it holds every request until the event is set."""

    statuses: list[int] = field(default_factory=list)
    answer: bytes = b"{}"
    hang: asyncio.Event | None = None
    seen: list[Seen] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(dict(request.headers), await request.read()))
        self.arrived.set()
        if self.hang is not None:
            await self.hang.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, body=self.answer, content_type="application/json")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post(TOKEN_PATH, rec.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}{TOKEN_PATH}?{TOKEN_QUERY}"
    try:
        yield rec
    finally:
        if rec.hang is not None:
            rec.hang.set()
        await runner.cleanup()


@dataclass
class World:
    rec: Reconciler
    dispatcher: Dispatcher
    metrics: ControllerMetrics
    passes: RecordingObserver

    def count(self, result: str) -> float:
        return self.metrics._notifications.get(result=result) or 0.0


def world(url: str, *, template: str = "json", retries: int = 3, timeout: float = 5.0,
          secret: bytes | None = SECRET, specs: tuple[CertificateSpec, ...] = (A, B)) -> World:
    clock = FakeClock()
    store = MemoryStore()
    issuer = FakeIssuer(clock)
    metrics = ControllerMetrics()
    notifier = WebhookNotifier(url, template=template, retries=retries, timeout=timeout,
                               secret=secret, on_result=metrics.observe_notification,
                               backoff=0.01)
    dispatcher = Dispatcher(store=store, notifier=notifier)
    passes = RecordingObserver()
    rec, _ = store_only_reconciler(
        specs, clock=clock, store=store, issuer=issuer,
        observers=[HookObserver(dispatcher, StorePaths(Path("/srv/njet")), clock=clock), passes])
    return World(rec, dispatcher, metrics, passes)


def verify(seen: Seen, secret: bytes) -> bool:
    """What the README tells a receiver to do: HMAC-SHA256 of the raw body, constant-time."""
    expected = "sha256=" + hmac.new(secret, seen.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, seen.headers.get("X-NJCM-Signature", ""))


def no_token(text: str) -> bool:
    return "T0K3N" not in text and "S3CR3T" not in text


BODY_CHECKS: dict[str, Callable[[dict[str, object]], str]] = {
    "json": lambda doc: f"{doc['event']} {doc['domain']} {doc['serial']}",
    "slack": lambda doc: str(doc["text"]),
    "dingtalk": lambda doc: str(doc["text"]["content"]),  # type: ignore[index]
    "wecom": lambda doc: str(doc["text"]["content"]),  # type: ignore[index]
}


@pytest.mark.parametrize("template", ["json", "slack", "dingtalk", "wecom"])
async def test_each_template_posts_its_body_signed(receiver: Receiver, template: str) -> None:
    w = world(receiver.url, template=template)
    with capture_logs() as logs:
        await w.rec.pass_once()
        await w.dispatcher.drained()
        await w.dispatcher.close()
    assert len(receiver.seen) == 2 and w.count("success") == 2
    domains = set()
    for seen in receiver.seen:
        assert verify(seen, SECRET), "signature does not verify"
        assert not verify(seen, b"another key")
        assert seen.headers["X-NJCM-Timestamp"].isdigit()
        assert seen.headers["Content-Type"].startswith("application/json")
        doc = orjson.loads(seen.body)
        if template == "json":
            assert doc["event"] == "issued" and doc["serial"] and doc["notAfter"].endswith("Z")
            domains.add(doc["domain"])
        elif template == "slack":
            assert set(doc) == {"text"}
        else:
            assert doc["msgtype"] == "text" and set(doc["text"]) == {"content"}
        text = BODY_CHECKS[template](doc)
        assert "issued" in text and ("a.test" in text or "b.test" in text)
    if template == "json":
        assert domains == {"a.test", "b.test"}
    assert "webhook delivered" in logs.text and no_token(logs.text)


async def test_an_unsigned_webhook_has_no_signature_header(receiver: Receiver) -> None:
    w = world(receiver.url, secret=None, specs=(A,))
    await w.rec.pass_once()
    await w.dispatcher.drained()
    await w.dispatcher.close()
    (seen,) = receiver.seen
    assert "X-NJCM-Signature" not in seen.headers and "X-NJCM-Timestamp" not in seen.headers


async def test_two_5xx_then_200_is_three_attempts_and_one_delivery(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    w = world(receiver.url, specs=(A,))
    with capture_logs() as logs:
        await w.rec.pass_once()
        await w.dispatcher.drained()
        await w.dispatcher.close()
    assert len(receiver.seen) == 3
    assert len({s.body for s in receiver.seen}) == 1  # the same event each time
    assert all(verify(s, SECRET) for s in receiver.seen)
    assert w.count("success") == 1 and w.count("failure") == 0
    assert logs.text.count("webhook attempt failed, retrying") == 2
    assert "HTTP 500" in logs.text and "attempts=3" in logs.text and no_token(logs.text)


async def test_retries_end_after_the_configured_count(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    w = world(receiver.url, retries=2, specs=(A,))
    with capture_logs() as logs:
        await w.rec.pass_once()
        await w.dispatcher.drained()
        await w.dispatcher.close()
    assert len(receiver.seen) == 3 and w.count("failure") == 1
    assert "webhook failed" in logs.text and no_token(logs.text)


async def test_a_4xx_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [403]
    w = world(receiver.url, specs=(A,))
    with capture_logs() as logs:
        await w.rec.pass_once()
        await w.dispatcher.drained()
        await w.dispatcher.close()
    assert len(receiver.seen) == 1 and w.count("failure") == 1
    assert "HTTP 403" in logs.text and no_token(logs.text)


async def test_a_dingtalk_errcode_is_a_failure(receiver: Receiver) -> None:
    receiver.answer = b'{"errcode": 310000, "errmsg": "keywords not in content"}'
    w = world(receiver.url, template="dingtalk", specs=(A,))
    with capture_logs() as logs:
        await w.rec.pass_once()
        await w.dispatcher.drained()
        await w.dispatcher.close()
    assert len(receiver.seen) == 1 and w.count("failure") == 1
    assert "errcode 310000" in logs.text


async def test_a_receiver_that_hangs_never_holds_a_pass(receiver: Receiver) -> None:
    receiver.hang = asyncio.Event()
    w = world(receiver.url, retries=0, timeout=2.0, specs=(A,))
    first = await w.rec.pass_once()
    assert [o.ok for o in first.outcomes] == [True]
    await receiver.arrived.wait()  # the post is in flight, held by the receiver
    second = await w.rec.pass_once()
    assert second.plan.actions == () and len(w.passes.passes) == 2
    assert w.count("failure") == w.count("success") == 0, "the post ended before the passes"
    with capture_logs() as logs:
        await w.dispatcher.drained()
    assert w.count("failure") == 1 and "timed out" in logs.text and no_token(logs.text)
    await w.dispatcher.close()


async def test_a_receiver_that_is_down_is_retried_and_logged_by_host_only() -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}{TOKEN_PATH}?{TOKEN_QUERY}"
    w = world(url, retries=1, specs=(A,))
    with capture_logs() as logs:
        await w.rec.pass_once()
        await w.dispatcher.drained()
        await w.dispatcher.close()
    assert w.count("failure") == 1
    assert "webhook failed" in logs.text and "ClientConnectorError" in logs.text
    assert "target=http://127.0.0.1:" in logs.text and no_token(logs.text)
