"""/healthz over real HTTP with the real backend (issue 13 item 19): one shape, `ok` and
`status` first; 503 whenever it is not ok; without the token (when one is set) only the public
fields (states and counts), and never an error's message or anything read from a file, even
with the token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from controller.adapters.admin.server import AdminServer, start_admin
from controller.admin_backend import ControllerBackend
from controller.metrics import ControllerMetrics
from controller.ports import PUBLIC_HEALTH_FIELDS
from controller.reconcile import Loop
from tests.fakes import spec
from tests.unit.test_reconcile_loop import world

TOKEN = "healthz-token"
SECRET = "hunter2-do-not-show"
# what a failed pass leaves: the message quotes the offending njet.conf line
LAST_ERROR = (f'ConfSyntaxError: /p/conf/njet.conf:12: unknown directive "auth_password '
              f'{SECRET}"')


def backend() -> ControllerBackend:
    w = world(spec("a.test"))
    return ControllerBackend(reconciler=w.rec, loop=Loop(w.rec, timedelta(hours=1)),
                             metrics=ControllerMetrics(), mqtt_state={"connected": False})


async def serve(b: ControllerBackend, token: str) -> AdminServer:
    srv = await start_admin(b, "127.0.0.1:0", token)
    await asyncio.wait_for(srv.wait_bound(), 5)
    return srv


@pytest.fixture
async def served() -> AsyncIterator[tuple[ControllerBackend, str, str]]:
    """(backend, base URL with a token set, base URL without one)."""
    b = backend()
    with_token, open_ = await serve(b, TOKEN), await serve(b, "")
    try:
        yield b, f"http://127.0.0.1:{with_token.port}", f"http://127.0.0.1:{open_.port}"
    finally:
        await with_token.stop()
        await open_.stop()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    async with aiohttp.ClientSession() as s, s.get(url + "/healthz", headers=headers) as r:
        text = await r.text()
        return r.status, await r.json(), text


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"}],
                         ids=["no token", "a wrong token"])
async def test_without_the_token_only_states_and_counts_are_shown(
    served: tuple[ControllerBackend, str, str], headers: dict[str, str] | None
) -> None:
    b, guarded, _ = served
    status, doc, _ = await get(guarded, headers)
    assert status == 200 and doc["ok"] is True and doc["status"] == "ok"
    assert set(doc) <= PUBLIC_HEALTH_FIELDS
    assert {"ok", "status", "reconciles", "problem_count"} <= set(doc)
    b.loop.last_error = LAST_ERROR
    status, doc, text = await get(guarded, headers)
    assert status == 503 and (doc["ok"], doc["status"]) == (False, "degraded")
    assert "last_error" not in doc and "njet.conf" not in text and SECRET not in text


async def test_with_the_token_the_error_is_named_by_type_and_place_never_quoted(
    served: tuple[ControllerBackend, str, str],
) -> None:
    b, guarded, open_ = served
    b.loop.last_error = LAST_ERROR
    for url, headers in ((guarded, {"Authorization": f"Bearer {TOKEN}"}), (open_, None)):
        status, doc, text = await get(url, headers)
        assert status == 503 and (doc["ok"], doc["status"]) == (False, "degraded")
        assert doc["last_error"] == ("ConfSyntaxError at /p/conf/njet.conf:12 "
                                     "(the message is in the controller log)")
        assert SECRET not in text and "auth_password" not in text
        assert doc["problems"] == [] and doc["mqtt_connected"] is False
    b.loop.last_error = None
    status, doc, _ = await get(open_)
    assert status == 200 and doc["ok"] is True and doc["last_error"] is None


async def test_stopping_is_not_ok(served: tuple[ControllerBackend, str, str]) -> None:
    b, guarded, _ = served
    b.loop.stop()
    status, doc, _ = await get(guarded)
    assert status == 503 and (doc["ok"], doc["status"]) == (False, "stopping")
