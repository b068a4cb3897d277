"""The engine of the fake hosted DNS APIs (dns_fake_apis.py): recorded request/response shapes
from tests/data/dns/<provider>/ and a local aiohttp server that answers from them, for
tests/integration/test_dns_hosted.py.

Each request must fit one recording (method, path, the parameters that pick the operation, and
every parameter the recording says the request carries), else it is answered 400 and noted in
`mismatches`; the answer is the recording's body with the fake's records filled in by the
provider's `op_<recording>` method (the recording's first record is the template). A provider
checks credentials in `refuse` as its service does. Every fake can be told to fail (`fail =
"error_unavailable"`: every request gets that recording's answer), to hang until stopped
(`hang`) or to answer garbage (`garble`).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

DATA = Path(__file__).resolve().parents[1] / "data" / "dns"
ZONE = "shop.test"


@dataclass(frozen=True)
class Recording:
    name: str
    method: str
    path: re.Pattern[str]
    match: dict[str, str]
    carries: dict[str, tuple[str, ...]]
    status: int
    body: Any
    text: str | None
    content_type: str

    @classmethod
    def load(cls, path: Path) -> Recording:
        doc = json.loads(path.read_text())
        req = doc.get("request", {})
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(req.get("path", "")))
        return cls(
            name=path.stem, method=req.get("method", ""), path=re.compile(f"^{pattern}$"),
            match=req.get("match", {}),
            carries={k: tuple(req.get(k, ())) for k in ("query", "form", "json", "headers")},
            status=doc["response"]["status"], body=doc["response"].get("body"),
            text=doc["response"].get("text"),
            content_type=doc["response"].get("content_type", "text/html"))

    def fits(self, method: str, path: str, params: dict[str, str]) -> bool:
        return (self.method == method and bool(self.path.match(path))
                and all(params.get(k) == v for k, v in self.match.items()))

    def missing(self, seen: dict[str, set[str]]) -> list[str]:
        return [f"{where} {name}" for where, names in self.carries.items() for name in names
                if name.lower() not in {s.lower() for s in seen[where]}]

    def answer(self, body: Any = None) -> web.Response:
        if self.text is not None:
            return web.Response(status=self.status, text=self.text if body is None else body,
                                content_type=self.content_type)
        return web.json_response(self.body if body is None else body, status=self.status)

    def template(self) -> Any:
        return copy.deepcopy(self.body)


@dataclass
class Record:
    id: str
    name: str  # absolute, no trailing dot
    type: str
    value: str
    ttl: int


@dataclass
class Call:
    """What a request looked like, for the tests' assertions."""
    operation: str
    params: dict[str, str]


@dataclass
class FakeApi:
    provider: str
    credentials: dict[str, str]
    records: list[Record] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    fail: str | None = None
    hang: bool = False  # hold every request until stop()
    garble: bool = False  # answer every request with a 200 that is not the API's JSON
    url: str = ""
    _runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.recordings = [Recording.load(p) for p in sorted((DATA / self.provider).glob("*.json"))]
        self.by_name = {r.name: r for r in self.recordings}

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def add(self, name: str, value: str, ttl: int = 600, rtype: str = "TXT") -> Record:
        record = Record(str(next(self._ids)), name, rtype, value, ttl)
        self.records.append(record)
        return record

    def txt(self, name: str) -> list[str]:
        return sorted(r.value for r in self.records if r.name == name and r.type == "TXT")

    def operations(self) -> list[str]:
        return [c.operation for c in self.calls]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.hang:
            await self._released.wait()
            return web.Response(status=503)
        params: dict[str, str] = dict(request.query)
        seen: dict[str, set[str]] = {"query": set(request.query), "form": set(), "json": set(),
                                     "headers": set(request.headers)}
        body: Any = None
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            params.update({k: str(v) for k, v in form.items()})
            seen["form"] = set(form)
        elif request.content_type == "application/json":
            raw = await request.read()
            body = json.loads(raw) if raw.strip() else {}
            if isinstance(body, dict):
                seen["json"] = set(body)
        elif request.can_read_body:
            body = await request.read()  # Route 53's XML
        path = request.path
        fitting = [r for r in self.recordings if r.method and r.fits(request.method, path, params)]
        if len(fitting) != 1:
            self.mismatches.append(f"{request.method} {path} fits {len(fitting)} recordings")
            return web.json_response({"error": "no such operation"}, status=400)
        recording = fitting[0]
        lacking = recording.missing(seen)
        if lacking:
            self.mismatches.append(f"{recording.name}: request lacks {', '.join(lacking)}")
            return web.json_response({"error": "malformed request"}, status=400)
        self.calls.append(Call(recording.name, params))
        if self.fail is not None:
            return self.by_name[self.fail].answer()
        if self.garble:
            return web.Response(text="<html>captive portal</html>", content_type="text/html")
        refusal = self.refuse(request, params)
        if refusal is not None:
            return self.by_name[refusal].answer()
        try:
            answer = getattr(self, "op_" + recording.name)(recording, request, params, body)
        except Refused as refused:
            return self.by_name[refused.recording].answer()
        return recording.answer(answer)

    def refuse(self, request: web.Request, params: dict[str, str]) -> str | None:
        """The error recording to answer with when the credentials are wrong, else None."""
        raise NotImplementedError

    def relative(self, name: str) -> str:
        return "@" if name == ZONE else name.removesuffix("." + ZONE)

    def absolute(self, rr: str) -> str:
        return ZONE if rr in ("@", "") else f"{rr}.{ZONE}"


class Refused(Exception):
    """Answer with the named error recording."""

    def __init__(self, recording: str) -> None:
        super().__init__(recording)
        self.recording = recording
