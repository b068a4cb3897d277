"""Local HTTP servers that speak hosted DNS APIs (Cloudflare v4, Alibaba Cloud DNS, DNSPod) as
their references document them, from the recorded shapes in tests/data/dns/<provider>/, for
tests/integration/test_dns_hosted.py: their clouds cannot be reached from here.

Each request must fit one recording (method, path, the parameters that pick the operation, and
every parameter the recording says the request carries), else it is answered 400 and noted in
`mismatches`; the answer is the recording's body with the fake's records filled in (the
recording's first record is the template). The fakes check credentials as the services do
(Cloudflare's bearer token, Alibaba Cloud's HMAC-SHA1 signature over the query, DNSPod's
login_token) and can be told to fail (`fail = "error_unavailable"`: every request gets that
recording's answer), to hang until stopped (`hang`) or to answer garbage (`garble`).

`point_lexicon` sends dns-lexicon's provider to a fake. lexicon has no option for the API
endpoint: cloudflare and dnspod set `self.api_endpoint` in their constructors (wrapped here),
aliyun reads the module constant ALIYUN_DNS_API_ENDPOINT (monkeypatched here).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

DATA = Path(__file__).resolve().parents[1] / "data" / "dns"
PROVIDERS = ("cloudflare", "aliyun", "dnspod")
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
            text=doc["response"].get("text"))

    def fits(self, method: str, path: str, params: dict[str, str]) -> bool:
        return (self.method == method and bool(self.path.match(path))
                and all(params.get(k) == v for k, v in self.match.items()))

    def missing(self, seen: dict[str, set[str]]) -> list[str]:
        return [f"{where} {name}" for where, names in self.carries.items() for name in names
                if name.lower() not in {s.lower() for s in seen[where]}]

    def answer(self, body: Any = None) -> web.Response:
        if self.text is not None:
            return web.Response(status=self.status, text=self.text, content_type="text/html")
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
        elif request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw.strip() else {}
            if isinstance(body, dict):
                seen["json"] = set(body)
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
        answer = getattr(self, "op_" + recording.name)(recording, request, params, body)
        return recording.answer(answer)

    def refuse(self, request: web.Request, params: dict[str, str]) -> str | None:
        """The error recording to answer with when the credentials are wrong, else None."""
        raise NotImplementedError

    def relative(self, name: str) -> str:
        return "@" if name == ZONE else name.removesuffix("." + ZONE)

    def absolute(self, rr: str) -> str:
        return ZONE if rr in ("@", "") else f"{rr}.{ZONE}"


class FakeCloudflare(FakeApi):
    zone_id = "023e105f4ecef8ad9ca31a8372d0c353"

    def refuse(self, request: web.Request, params: dict[str, str]) -> str | None:
        expected = f"Bearer {self.credentials['auth_token']}"
        return None if request.headers.get("Authorization") == expected else "error_unauthorized"

    def _record(self, template: dict[str, Any], r: Record) -> dict[str, Any]:
        return {**template, "id": r.id, "name": r.name, "type": r.type, "content": r.value,
                "ttl": r.ttl, "zone_id": self.zone_id, "zone_name": ZONE}

    def op_list_zones(self, rec: Recording, request: web.Request, params, body) -> Any:
        out = rec.template()
        out["result"] = [{**out["result"][0], "id": self.zone_id, "name": ZONE}]
        return out

    def op_list_dns_records(self, rec: Recording, request: web.Request, params, body) -> Any:
        out = rec.template()
        assert request.path.split("/")[4] == self.zone_id
        chosen = [r for r in self.records
                  if all(params.get(k) in (None, v) for k, v in
                         (("type", r.type), ("name", r.name), ("content", r.value)))]
        per_page, page = int(params.get("per_page", 100)), int(params.get("page", 1))
        pages = max(1, -(-len(chosen) // per_page))
        window = chosen[(page - 1) * per_page: page * per_page]
        out["result"] = [self._record(out["result"][0], r) for r in window]
        out["result_info"] = {"page": page, "per_page": per_page, "count": len(window),
                              "total_count": len(chosen), "total_pages": pages}
        return out

    def op_create_dns_record(self, rec: Recording, request: web.Request, params, body) -> Any:
        out = rec.template()
        r = self.add(body["name"], body["content"], int(body.get("ttl", 1)), body["type"])
        out["result"] = self._record(out["result"], r)
        return out

    def op_delete_dns_record(self, rec: Recording, request: web.Request, params, body) -> Any:
        ident = request.path.rsplit("/", 1)[1]
        self.records = [r for r in self.records if r.id != ident]
        out = rec.template()
        out["result"] = {"id": ident}
        return out


class FakeAliyun(FakeApi):
    domain_id = "00efd71a-770e-4255-b54e-6fe5659baffe"

    def refuse(self, request: web.Request, params: dict[str, str]) -> str | None:
        if params.get("AccessKeyId") != self.credentials["auth_key_id"]:
            return "error_unknown_key"
        return None if params.get("Signature") == self.signature(params) else "error_signature"

    def signature(self, params: dict[str, str]) -> str:
        """The documented RPC signature: HMAC-SHA1 over GET&%2F&<percent-encoded sorted query>
        with the AccessKey secret + "&"."""
        def enc(s: str) -> str:
            return quote(s, safe="-_.~")

        canonical = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items())
                             if k != "Signature")
        to_sign = f"GET&{enc('/')}&{enc(canonical)}"
        key = (self.credentials["auth_secret"] + "&").encode()
        return base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha1).digest()).decode()

    def op_describe_domain_info(self, rec: Recording, request: web.Request, params, body) -> Any:
        assert params["DomainName"] == ZONE
        return {**rec.template(), "DomainId": self.domain_id, "DomainName": ZONE}

    def op_describe_domain_records(self, rec: Recording, request: web.Request, params,
                                   body) -> Any:
        out = rec.template()
        rr, rtype = params.get("RRKeyWord", "").lower(), params.get("TypeKeyWord", "").upper()
        value = params.get("ValueKeyWord", "")
        chosen = [r for r in self.records if rr in self.relative(r.name).lower()
                  and (not rtype or r.type == rtype) and value in r.value]
        size, number = int(params.get("PageSize", 20)), int(params.get("PageNumber", 1))
        template = out["DomainRecords"]["Record"][0]
        out["DomainRecords"]["Record"] = [
            {**template, "RecordId": r.id, "RR": self.relative(r.name), "Type": r.type,
             "Value": r.value, "TTL": r.ttl, "DomainName": ZONE}
            for r in chosen[(number - 1) * size: number * size]]
        out.update(TotalCount=len(chosen), PageNumber=number, PageSize=size)
        return out

    def op_add_domain_record(self, rec: Recording, request: web.Request, params, body) -> Any:
        r = self.add(self.absolute(params["RR"]), params["Value"], int(params["TTL"]),
                     params["Type"])
        return {**rec.template(), "RecordId": r.id}

    def op_delete_domain_record(self, rec: Recording, request: web.Request, params,
                                body) -> Any:
        self.records = [r for r in self.records if r.id != params["RecordId"]]
        return {**rec.template(), "RecordId": params["RecordId"]}


class FakeDnspod(FakeApi):
    domain_id = "2059079"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.add(ZONE, "f1g1ns1.dnspod.net.", 86400, "NS")  # every zone has its NS records

    def refuse(self, request: web.Request, params: dict[str, str]) -> str | None:
        token = f"{self.credentials['auth_username']},{self.credentials['auth_token']}"
        return None if params.get("login_token") == token else "error_login"

    def op_domain_info(self, rec: Recording, request: web.Request, params, body) -> Any:
        out = rec.template()
        out["domain"].update(id=self.domain_id, name=ZONE)
        return out

    def op_record_list(self, rec: Recording, request: web.Request, params, body) -> Any:
        out = rec.template()
        template = out["records"][0]
        out["records"] = [{**template, "id": r.id, "name": self.relative(r.name), "type": r.type,
                           "value": r.value, "ttl": str(r.ttl)} for r in self.records]
        n = str(len(self.records))
        out["info"] = {"sub_domains": n, "record_total": n, "records_num": n}
        return out

    def op_record_create(self, rec: Recording, request: web.Request, params, body) -> Any:
        assert params["domain_id"] == self.domain_id and params["record_line"] == "默认"
        r = self.add(self.absolute(params["sub_domain"]), params["value"], int(params["ttl"]),
                     params["record_type"])
        out = rec.template()
        out["record"].update(id=r.id, name=params["sub_domain"])
        return out

    def op_record_remove(self, rec: Recording, request: web.Request, params, body) -> Any:
        self.records = [r for r in self.records if r.id != params["record_id"]]
        return rec.template()


FAKES: dict[str, type[FakeApi]] = {
    "cloudflare": FakeCloudflare, "aliyun": FakeAliyun, "dnspod": FakeDnspod}

CREDENTIALS: dict[str, dict[str, str]] = {
    "cloudflare": {"auth_token": "cf-token-SECRET-3f9a1c"},
    "aliyun": {"auth_key_id": "LTAI5tKEYIDSECRET77", "auth_secret": "ali-secret-SECRET-91x"},
    "dnspod": {"auth_username": "118123", "auth_token": "dnspod-token-SECRET-5c2e"},
}
# the error recording each fake answers wrong credentials with
AUTH_FAILURE = {"cloudflare": "error_unauthorized", "aliyun": "error_signature",
                "dnspod": "error_login"}


def point_lexicon(monkeypatch: pytest.MonkeyPatch, provider: str, url: str) -> None:
    """Send dns-lexicon's `provider` to `url` instead of the real API."""
    import importlib

    module = importlib.import_module(f"lexicon._private.providers.{provider}")
    if provider == "aliyun":
        monkeypatch.setattr(module, "ALIYUN_DNS_API_ENDPOINT", url)
        return
    cls = module.Provider
    original = cls.__init__
    base = url + ("/client/v4" if provider == "cloudflare" else "")

    def init(self: Any, config: Any) -> None:
        original(self, config)
        self.api_endpoint = base

    monkeypatch.setattr(cls, "__init__", init)
