"""Fake hosted DNS APIs (Cloudflare v4, Alibaba Cloud DNS, DNSPod, Amazon Route 53) as their
references document them, on the engine of dns_fakes.py, for
tests/integration/test_dns_hosted.py: their clouds cannot be reached from here.

Credentials are checked as the services do: Cloudflare's bearer token, Alibaba Cloud's
HMAC-SHA1 signature over the query, DNSPod's login_token, the access key id in Route 53's SigV4
Authorization header.

`point_lexicon` sends dns-lexicon's provider to a fake. lexicon has no option for the API
endpoint: cloudflare and dnspod set `self.api_endpoint` in their constructors (wrapped here),
aliyun reads the module constant ALIYUN_DNS_API_ENDPOINT (monkeypatched here); route53's boto3
takes AWS_ENDPOINT_URL_ROUTE_53 from the environment (set here, with one attempt per call).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from tests.integration.dns_fakes import ZONE, FakeApi, Record, Recording, Refused

PROVIDERS = ("cloudflare", "aliyun", "dnspod", "route53")


class FakeCloudflare(FakeApi):
    zone_id = "023e105f4ecef8ad9ca31a8372d0c353"

    def refuse(self, request: web.Request, params: dict[str, str]) -> str | None:
        expected = f"Bearer {self.credentials['auth_token']}"
        return None if request.headers.get("Authorization") == expected else "error_unauthorized"

    def _record(self, template: dict[str, Any], r: Record) -> dict[str, Any]:
        return {**template, "id": r.id, "name": r.name, "type": r.type, "content": r.value,
                "ttl": r.ttl, "zone_id": self.zone_id, "zone_name": ZONE}

    def op_list_zones(self, rec: Recording, request: web.Request,
                      params: dict[str, str], body: Any) -> Any:
        out = rec.template()
        out["result"] = [{**out["result"][0], "id": self.zone_id, "name": ZONE}]
        return out

    def op_list_dns_records(self, rec: Recording, request: web.Request,
                            params: dict[str, str], body: Any) -> Any:
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

    def op_create_dns_record(self, rec: Recording, request: web.Request,
                             params: dict[str, str], body: Any) -> Any:
        out = rec.template()
        r = self.add(body["name"], body["content"], int(body.get("ttl", 1)), body["type"])
        out["result"] = self._record(out["result"], r)
        return out

    def op_delete_dns_record(self, rec: Recording, request: web.Request,
                             params: dict[str, str], body: Any) -> Any:
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

    def op_describe_domain_info(self, rec: Recording, request: web.Request,
                                params: dict[str, str], body: Any) -> Any:
        assert params["DomainName"] == ZONE
        return {**rec.template(), "DomainId": self.domain_id, "DomainName": ZONE}

    def op_describe_domain_records(self, rec: Recording, request: web.Request,
                                   params: dict[str, str], body: Any) -> Any:
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

    def op_add_domain_record(self, rec: Recording, request: web.Request,
                             params: dict[str, str], body: Any) -> Any:
        r = self.add(self.absolute(params["RR"]), params["Value"], int(params["TTL"]),
                     params["Type"])
        return {**rec.template(), "RecordId": r.id}

    def op_delete_domain_record(self, rec: Recording, request: web.Request,
                                params: dict[str, str], body: Any) -> Any:
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

    def op_domain_info(self, rec: Recording, request: web.Request,
                       params: dict[str, str], body: Any) -> Any:
        out = rec.template()
        out["domain"].update(id=self.domain_id, name=ZONE)
        return out

    def op_record_list(self, rec: Recording, request: web.Request,
                       params: dict[str, str], body: Any) -> Any:
        out = rec.template()
        template = out["records"][0]
        out["records"] = [{**template, "id": r.id, "name": self.relative(r.name), "type": r.type,
                           "value": r.value, "ttl": str(r.ttl)} for r in self.records]
        n = str(len(self.records))
        out["info"] = {"sub_domains": n, "record_total": n, "records_num": n}
        return out

    def op_record_create(self, rec: Recording, request: web.Request,
                         params: dict[str, str], body: Any) -> Any:
        assert params["domain_id"] == self.domain_id and params["record_line"] == "默认"
        r = self.add(self.absolute(params["sub_domain"]), params["value"], int(params["ttl"]),
                     params["record_type"])
        out = rec.template()
        out["record"].update(id=r.id, name=params["sub_domain"])
        return out

    def op_record_remove(self, rec: Recording, request: web.Request,
                         params: dict[str, str], body: Any) -> Any:
        self.records = [r for r in self.records if r.id != params["record_id"]]
        return rec.template()


_R53 = "{https://route53.amazonaws.com/doc/2013-04-01/}"


class FakeRoute53(FakeApi):
    """Route 53 keeps record sets: one per name and type, holding all its values (in quotes,
    for TXT); a change replaces or deletes a whole set, and a DELETE must name it exactly."""
    zone_id = "Z1D633PJN98FT9"

    def refuse(self, request: web.Request, params: dict[str, str]) -> str | None:
        key_id = self.credentials["auth_access_key"]
        auth = request.headers.get("Authorization", "")
        return None if f"Credential={key_id}/" in auth else "error_unauthorized"

    def _sets(self) -> dict[tuple[str, str], list[Record]]:
        out: dict[tuple[str, str], list[Record]] = {}
        for r in self.records:
            out.setdefault((r.name, r.type), []).append(r)
        return out

    def _xml(self, rec: Recording) -> ET.Element:
        assert rec.text is not None
        return ET.fromstring(rec.text.split("\n", 1)[1])

    def _text(self, root: ET.Element) -> str:
        ET.register_namespace("", _R53[1:-1])
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")

    def op_list_hosted_zones_by_name(self, rec: Recording, request: web.Request,
                                     params: dict[str, str], body: Any) -> Any:
        root = self._xml(rec)
        zone = root.find(f"{_R53}HostedZones/{_R53}HostedZone")
        assert zone is not None
        zone.find(f"{_R53}Id").text = f"/hostedzone/{self.zone_id}"  # type: ignore[union-attr]
        zone.find(f"{_R53}Name").text = f"{ZONE}."  # type: ignore[union-attr]
        return self._text(root)

    def op_list_resource_record_sets(self, rec: Recording, request: web.Request,
                                     params: dict[str, str], body: Any) -> Any:
        assert request.path.split("/")[3] == self.zone_id
        root = self._xml(rec)
        holder = root.find(f"{_R53}ResourceRecordSets")
        assert holder is not None
        template = holder[0]
        holder.remove(template)
        for (name, rtype), records in self._sets().items():
            one = copy.deepcopy(template)
            one.find(f"{_R53}Name").text = f"{name}."  # type: ignore[union-attr]
            one.find(f"{_R53}Type").text = rtype  # type: ignore[union-attr]
            one.find(f"{_R53}TTL").text = str(records[0].ttl)  # type: ignore[union-attr]
            values = one.find(f"{_R53}ResourceRecords")
            assert values is not None
            value_template = values[0]
            values.remove(value_template)
            for r in records:
                v = copy.deepcopy(value_template)
                v.find(f"{_R53}Value").text = f'"{r.value}"' if rtype == "TXT" else r.value  # type: ignore[union-attr]
                values.append(v)
            holder.append(one)
        return self._text(root)

    def op_change_resource_record_sets(self, rec: Recording, request: web.Request,
                                       params: dict[str, str], body: Any) -> Any:
        assert request.path.split("/")[3] == self.zone_id
        batch = ET.fromstring(body)
        sets = self._sets()
        for change in batch.iter(f"{_R53}Change"):
            action = change.findtext(f"{_R53}Action")
            rrset = change.find(f"{_R53}ResourceRecordSet")
            assert rrset is not None
            name = (rrset.findtext(f"{_R53}Name") or "").rstrip(".")
            rtype = rrset.findtext(f"{_R53}Type") or ""
            ttl = int(rrset.findtext(f"{_R53}TTL") or 0)
            values = [(v.text or "").strip('"') for v in rrset.iter(f"{_R53}Value")]
            current = sets.get((name, rtype), [])
            if action == "CREATE" and current:
                raise Refused("error_invalid_change_batch")
            if action == "DELETE" and (not current or current[0].ttl != ttl or sorted(
                    r.value for r in current) != sorted(values)):
                raise Refused("error_invalid_change_batch")
            self.records = [r for r in self.records if (r.name, r.type) != (name, rtype)]
            if action in ("CREATE", "UPSERT"):
                for value in values:
                    self.add(name, value, ttl, rtype)
        return rec.text


FAKES: dict[str, type[FakeApi]] = {
    "cloudflare": FakeCloudflare, "aliyun": FakeAliyun, "dnspod": FakeDnspod,
    "route53": FakeRoute53}

CREDENTIALS: dict[str, dict[str, str]] = {
    "cloudflare": {"auth_token": "cf-token-SECRET-3f9a1c"},
    "aliyun": {"auth_key_id": "LTAI5tKEYIDSECRET77", "auth_secret": "ali-secret-SECRET-91x"},
    "dnspod": {"auth_username": "118123", "auth_token": "dnspod-token-SECRET-5c2e"},
    "route53": {"auth_access_key": "AKIAEXAMPLESECRET42",
                "auth_access_secret": "r53-secret-SECRET-wJalrXUtnFEMI"},
}
# the error recording each fake answers wrong credentials with
AUTH_FAILURE = {"cloudflare": "error_unauthorized", "aliyun": "error_signature",
                "dnspod": "error_login", "route53": "error_unauthorized"}


def point_lexicon(monkeypatch: pytest.MonkeyPatch, provider: str, url: str) -> None:
    """Send dns-lexicon's `provider` to `url` instead of the real API."""
    import importlib

    if provider == "route53":  # boto3 reads its endpoint (and retry budget) from the environment
        monkeypatch.setenv("AWS_ENDPOINT_URL_ROUTE_53", url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # an endpoint URL needs one
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            monkeypatch.setenv(name, "/dev/null")
        return
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
