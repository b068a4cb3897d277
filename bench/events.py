"""Bench 5, event bursts: N `generateCertificate` events at once → how many reconciles.

Publishes N copies of NJet's event for the managed a.test block (QoS 0, paho-mqtt over the
simulator's broker unix socket) as fast as paho sends them, reads `reconciles` from the
controller's GET /healthz before and after, and times from the first publish until the counter
stops moving (the last change seen; "quiet" = unchanged for 1.5 s). Goal: 1 or 2 reconciles
and in sync afterwards. Uses the controller of bench/simenv.py; called by bench/__main__.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.common import BenchError, Goal
from bench.simenv import SimEnv

QUIET = 1.5
TOPIC = "/automaticcertificatemanagement/event/request"


def publish_burst(env: SimEnv, count: int) -> float:
    """Publish `count` events; seconds from the first publish until paho handed all over."""
    import paho.mqtt.client as mqtt

    event = json.dumps({"action": "generateCertificate", "domains": [
        {"server_name": ["a.test", "www.a.test"],
         "server_addr": [f"127.0.0.1:{env.https_port}"], "ca_type": "acme"}]})
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, transport="unix")
    client.connect(str(env.sim.broker_socket))
    client.loop_start()
    try:
        started = time.perf_counter()
        infos = [client.publish(TOPIC, event, qos=0) for _ in range(count)]
        for info in infos:
            info.wait_for_publish(10)
        return time.perf_counter() - started
    finally:
        client.loop_stop()
        client.disconnect()


def run_events(env: SimEnv, *, count: int) -> dict[str, Any]:
    before = env.wait_quiet()
    started = time.perf_counter()
    publish_seconds = publish_burst(env, count)
    last, last_change = before, started
    deadline = started + 120
    while time.perf_counter() < deadline:
        h = env.health() or {}
        now = time.perf_counter()
        n = int(h.get("reconciles", last))
        if n != last:
            last, last_change = n, now
        elif now - last_change >= QUIET and now - started >= QUIET:
            break
        time.sleep(0.02)
    else:
        raise BenchError(f"reconciles still changing {deadline - started:.0f}s after the burst")
    health = env.health() or {}
    ran = last - before
    quiet = last_change - started if ran else publish_seconds
    in_sync = health.get("in_sync") is True
    return {
        "figures": {
            "events": count,
            "publish_seconds": round(publish_seconds, 4),
            "reconciles": ran,
            "seconds_until_quiet": round(quiet, 4),
            "in_sync_after": in_sync,
        },
        "goals": [
            Goal("reconciles for the burst", ">=", 1, ran).as_dict(),
            Goal("reconciles for the burst", "<=", 2, ran).as_dict(),
            Goal("in sync after (1 = yes)", ">=", 1, 1.0 if in_sync else 0.0).as_dict(),
        ],
        "notes": [f"quiet = /healthz reconciles unchanged for {QUIET}s; the time is until "
                  "its last change"],
    }
