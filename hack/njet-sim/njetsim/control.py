"""The sim-only `/__sim/` endpoints: state dump and fault switches for tests.

Called by api.py on the ctrl API listener and on the control socket
`<prefix>/data/njet-sim.sock`. Endpoints (JSON in, JSON out):
* GET  /__sim/state  — generation, replay done?, listening sockets, copilot pids, and per block
  the served certificate of each key type (sha256, subject, serial), broken/in_worker flags.
* GET  /__sim/fault  — the current switches.
* POST /__sim/fault  — any of: {"api": "down"|"up", "api_down_for": s, "slow": s,
  "put_ssl_reply": {"code": n, "msg": str, "status": 200, "data": [...], "count": 1},
  "not_served": n (-1 = every add until reset), "broker": "down"|"up"}.
* POST /__sim/reset  — every switch off (API and broker back up).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web

from njetsim.context import Faults, Reply


class Controlled(Protocol):
    faults: Faults

    def describe(self) -> dict[str, Any]: ...

    async def api_down(self, seconds: float | None) -> None: ...

    async def api_up(self) -> None: ...

    async def broker_down(self) -> None: ...

    async def broker_up(self) -> None: ...


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(obj, indent=1).encode(), status=status,
                        headers={"Content-Type": "application/json"})


async def apply_faults(sim: Controlled, spec: dict[str, Any]) -> None:
    unknown = set(spec) - {"api", "api_down_for", "slow", "put_ssl_reply", "not_served",
                           "broker"}
    if unknown:
        raise ValueError(f"unknown fault switch(es): {sorted(unknown)}")
    if "slow" in spec:
        sim.faults.slow = float(spec["slow"])
    if "not_served" in spec:
        sim.faults.not_served = int(spec["not_served"])
    if "put_ssl_reply" in spec:
        r = dict(spec["put_ssl_reply"])
        body: dict[str, Any] = {}
        if "data" in r:
            body["data"] = list(r["data"])
        body["code"] = int(r.get("code", 4))
        body["msg"] = str(r.get("msg", " dyn ssl update fail"))
        reply = Reply(int(r.get("status", 200)), body)
        sim.faults.put_ssl_replies.extend([reply] * int(r.get("count", 1)))
    if spec.get("api") == "down" or "api_down_for" in spec:
        seconds = spec.get("api_down_for")
        await sim.api_down(None if seconds is None else float(seconds))
    elif spec.get("api") == "up":
        await sim.api_up()
    if spec.get("broker") == "down":
        await sim.broker_down()
    elif spec.get("broker") == "up":
        await sim.broker_up()


async def handle(sim: Controlled, request: web.Request) -> web.Response:
    path = request.path.rstrip("/")
    if path == "/__sim/state" and request.method == "GET":
        return _json(sim.describe())
    if path == "/__sim/fault" and request.method == "GET":
        return _json(sim.faults.describe())
    if path == "/__sim/fault" and request.method == "POST":
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            await apply_faults(sim, spec)
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json(sim.faults.describe())
    if path == "/__sim/reset" and request.method == "POST":
        sim.faults.slow = 0.0
        sim.faults.not_served = 0
        sim.faults.put_ssl_replies.clear()
        await sim.api_up()
        await sim.broker_up()
        return _json(sim.faults.describe())
    return _json({"error": f"no such sim endpoint: {request.method} {path}"}, 404)
