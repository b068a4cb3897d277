"""/api/v1/dyn_loc and /api/v1/dyn_srv: dynamic locations and virtual servers.

Called by api.py (requests) and replay.py (retained records). Recorded behaviour
(shared/njet-contract README §4, §5): add is POST, del is PUT (else 400 text/plain code 4),
exact addr_port + server_name lookup, NJet's messages, retained /ins/loc/l_<crc32(addr_port +
server_name + location_rule + location_name)> and /ins/srv/s_<crc32(addr_port + server_name)>
records (payload = request body), /dyn/http_log after a delete, generateCertificate before the
reply of a managed dyn_srv add, deleteCertificate on its del and ("server_addr": []) on a
failed managed add. A server_body key the `nobody` worker cannot read leaves the server out of
the worker: SNI/Host then fall through to the default server and the worker empties the record.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from njetsim.bodies import check_body
from njetsim.broker import compact
from njetsim.certs import worker_can_read
from njetsim.conf import (
    LocationConf,
    SimConfError,
    location_from_directives,
    parse_listen_args,
    server_from_directives,
)
from njetsim.context import TEXT, Reply, SimContext, ok
from njetsim.runtime import Block

NOT_FOUND = Reply(404, {"code": 404, "msg": "not found error"})
JSON_ERROR = Reply(400, {"code": 4, "msg": "json parser error!"}, TEXT)


def _crc(*parts: str) -> int:
    return zlib.crc32("".join(parts).encode())


def loc_topic(body: dict[str, Any]) -> str:
    first: dict[str, Any] = (body.get("locations") or [{}])[0] if body.get("type") == "add" \
        else body
    crc = _crc(str(body.get("addr_port", "")), str(body.get("server_name", "")),
               str(first.get("location_rule", "")), str(first.get("location_name", "")))
    return f"/ins/loc/l_{crc}"


def srv_topic(body: dict[str, Any]) -> str:
    return f"/ins/srv/s_{_crc(str(body.get('addr_port', '')), str(body.get('server_name', '')))}"


def _load(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw.decode("utf-8", errors="replace"), strict=False)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _method_error(method: str, body: dict[str, Any], what: str) -> Reply | None:
    kind = body.get("type")
    if method == "POST" and kind == "del":
        return Reply(400, {"code": 4, "msg": f"no support method when del {what}!"}, TEXT)
    if method == "PUT" and kind == "add":
        return Reply(400, {"code": 4, "msg": f"no support method when add {what}!"}, TEXT)
    if kind not in ("add", "del"):
        return JSON_ERROR
    return None


# --- dyn_loc -------------------------------------------------------------------------------

def build_locations(sim: SimContext, block: Block,
                    body: dict[str, Any]) -> tuple[list[LocationConf], str | None]:
    """The locations of an add body, or an error message (duplicate, bad location_body)."""
    new: list[LocationConf] = []
    for item in body.get("locations") or []:
        if not isinstance(item, dict):
            return [], "json parser error!"
        rule = str(item.get("location_rule", ""))
        name = str(item.get("location_name", ""))
        if any(loc.modifier == rule and loc.path == name for loc in [*block.locations(), *new]):
            return [], f"error:location[{rule}{name}] exist!"
        directives, err = check_body(str(item.get("location_body", "")), prefix=sim.prefix,
                                     scratch="add_location", first_line=2)
        if err is not None:
            return [], err
        new.append(location_from_directives(rule, name, directives,
                                            proxy_pass=item.get("proxy_pass")))
    return new, None


async def dyn_loc(sim: SimContext, method: str, raw: bytes) -> Reply:
    if method not in ("POST", "PUT"):
        return NOT_FOUND
    body = _load(raw)
    if body is None:
        return JSON_ERROR
    bad = _method_error(method, body, "location")
    if bad is not None:
        return bad
    addr, name = str(body.get("addr_port", "")), str(body.get("server_name", ""))
    block = sim.runtime.find(addr, name)
    if block is None:
        return Reply(200, {"code": 4, "msg": f"error:host[{addr}],no find server[{name}]!"})
    if body["type"] == "add":
        new, err = build_locations(sim, block, body)
        if err is not None:
            return Reply(200, {"code": 4, "msg": err})
        block.dyn_locations.extend(new)
        await sim.broker.set_record(loc_topic(body), raw)
        return ok()
    rule = str(body.get("location_rule", ""))
    lname = str(body.get("location_name", ""))
    found = next((loc for loc in block.dyn_locations
                  if loc.modifier == rule and loc.path == lname), None)
    if found is None:
        return Reply(200, {"code": 4, "msg": f"not find  location [{rule}{lname}]!"})
    block.dyn_locations.remove(found)
    await sim.broker.clear_record(loc_topic(body), raw)
    await sim.broker.set_record("/dyn/http_log", compact(sim.runtime.http_log_doc()))
    return ok()


# --- dyn_srv -------------------------------------------------------------------------------

def build_server(sim: SimContext, body: dict[str, Any]) -> tuple[Block | None, str | None]:
    """A new dynamic block (certs loaded by the root agent), or an error message."""
    addr, name = str(body.get("addr_port", "")), str(body.get("server_name", ""))
    directives, err = check_body(str(body.get("server_body", "")), prefix=sim.prefix,
                                 scratch="add_server", first_line=4)
    if err is not None:
        return None, err
    try:
        listen = parse_listen_args([addr, *str(body.get("listen_option", "")).split()],
                                   "dyn_srv addr_port")
        srv = server_from_directives(directives, conf_dir=sim.runtime.conf.conf_path.parent,
                                     origin=f"dyn_srv {addr} {name}", listens=[listen],
                                     names=[name])
        return sim.runtime.new_block(srv, dynamic=True), None
    except SimConfError as exc:
        return None, str(exc)


def worker_lacks(block: Block) -> bool:
    return any(not (worker_can_read(p.cert) and worker_can_read(p.key))
               for p in block.conf.certs)


async def dyn_srv(sim: SimContext, method: str, raw: bytes) -> Reply:
    if method not in ("POST", "PUT"):
        return NOT_FOUND
    body = _load(raw)
    if body is None:
        return JSON_ERROR
    bad = _method_error(method, body, "server")
    if bad is not None:
        return bad
    addr, name = str(body.get("addr_port", "")), str(body.get("server_name", ""))
    topic = srv_topic(body)
    if body["type"] == "add":
        if sim.runtime.find(addr, name) is not None:
            return Reply(200, {"code": 5, "msg": f"error:[{addr}] server[{name}] exist!"})
        block, err = build_server(sim, body)
        if block is None:
            if "ssl_certificate_management" in str(body.get("server_body", "")):
                await sim.broker.event({"action": "deleteCertificate",
                                        "domains": [{"server_name": [name], "server_addr": []}]})
            return Reply(200, {"code": 4, "msg": err})
        if block.conf.ca_type is not None:
            await sim.broker.event({"action": "generateCertificate", "domains": [
                {"server_name": [name], "server_addr": [addr], "ca_type": block.conf.ca_type}]})
        sim.runtime.blocks.append(block)
        await sim.broker.set_record(topic, raw)
        if worker_lacks(block):
            block.in_worker = False
            sim.later(sim.broker.clear_record(topic))
        await sim.sync_listeners()
        return ok()
    found = next((b for b in sim.runtime.blocks if b.dynamic and b.matches(addr, name)), None)
    if found is None:
        return Reply(200, {"code": 4, "msg": f"error:host[{addr}],no find server [{name}]!"})
    if found.conf.ca_type is not None:
        await sim.broker.event({"action": "deleteCertificate",
                                "domains": [{"server_name": [name], "server_addr": [addr]}]})
    sim.runtime.remove(found)
    await sim.broker.clear_record(topic, raw)
    await sim.broker.set_record("/dyn/http_log", compact(sim.runtime.http_log_doc()))
    await sim.sync_listeners()
    return ok()
