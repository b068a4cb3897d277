"""Re-applies the retained /ins/srv, /ins/loc and /ins/ssl records after a start or reload.

Called by master.py ~replay-delay seconds after each start/reload (NJet: about 2 s; until then
the configured certificates are served [50]). Records are applied in the broker's delivery
order (servers, then locations, then certificates). A record whose block no longer exists, or
that the worker cannot load, is emptied (empty retained + empty non-retained message) and so
lost for good [60] [61].
"""

from __future__ import annotations

import json
import logging
from typing import Any

from njetsim.certs import CertLoadError, load_pair, worker_can_read
from njetsim.context import SimContext
from njetsim.dynapi import build_locations, build_server, worker_lacks

log = logging.getLogger("njetsim.replay")


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(payload.decode("utf-8", errors="replace"), strict=False)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _srv(sim: SimContext, topic: str, body: dict[str, Any]) -> None:
    addr, name = str(body.get("addr_port", "")), str(body.get("server_name", ""))
    if body.get("type") != "add" or sim.runtime.find(addr, name) is not None:
        return
    block, err = build_server(sim, body)
    if block is None:
        log.info("replay %s: add server [%s] error: %s", topic, name, err)
        await sim.broker.clear_record(topic)
        return
    sim.runtime.blocks.append(block)
    if worker_lacks(block):
        block.in_worker = False
        await sim.broker.clear_record(topic)


async def _loc(sim: SimContext, topic: str, body: dict[str, Any]) -> None:
    addr, name = str(body.get("addr_port", "")), str(body.get("server_name", ""))
    block = sim.runtime.find(addr, name)
    if block is None or body.get("type") != "add":
        log.info("replay %s: no server %s %s; record emptied", topic, addr, name)
        await sim.broker.clear_record(topic)
        return
    new, err = build_locations(sim, block, body)
    if err is None:
        block.dyn_locations.extend(new)


async def _ssl(sim: SimContext, topic: str, body: dict[str, Any]) -> None:
    listens = body.get("listens") or [""]
    names = body.get("serverNames") or [""]
    info = body.get("cert_info") or {}
    block = sim.runtime.find(str(listens[0]), str(names[0]))
    if block is None or body.get("type") != "add" or not isinstance(info, dict):
        log.info("replay %s: can`t find server by listen:%s server_name:%s", topic,
                 listens[0], names[0])
        await sim.broker.clear_record(topic)
        return
    cert_type = str(info.get("cert_type", "rsa"))
    cert, key = str(info.get("certificate", "")), str(info.get("certificateKey", ""))
    try:
        loaded = load_pair(cert, key, expect_type=cert_type)
    except CertLoadError as exc:
        log.info("replay %s: %s; record emptied", topic, exc)
        await sim.broker.clear_record(topic)
        return
    block.entries.append({"cert_type": cert_type, "certificate": cert, "certificateKey": key})
    if not block.in_worker:
        return
    if worker_can_read(cert) and worker_can_read(key):
        sim.runtime.serve(block, loaded)
    else:
        block.broken = True
        await sim.broker.clear_record(topic)


async def replay(sim: SimContext) -> int:
    """Apply every retained record; returns how many records were read."""
    records = await sim.broker.snapshot(["/ins/srv/#", "/ins/loc/#", "/ins/ssl/#"])
    for kind, apply in (("/ins/srv/", _srv), ("/ins/loc/", _loc), ("/ins/ssl/", _ssl)):
        for topic, payload in records:
            if not topic.startswith(kind):
                continue
            body = _json(payload)
            if body is None:
                log.warning("replay %s: not JSON; ignored", topic)
                continue
            await apply(sim, topic, body)
    await sim.sync_listeners()
    return len(records)
