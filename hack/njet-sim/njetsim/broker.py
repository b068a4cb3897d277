"""The simulator's own Mosquitto (unix socket only) and its MQTT publisher.

Called by master.py (start/stop, fault down/up), sslapi.py/dynapi.py (publish) and replay.py
(snapshot of the retained /ins/* records). Like NJet's broker helper: one broker per instance,
reachable only through `<prefix>/data/mosquitto.sock`, retained messages persisted under
`<prefix>/data/` so they survive a restart. Publishing uses paho-mqtt 2.x over the unix socket;
a QoS-0 publish is awaited until it is written to the socket, so "before the HTTP reply" holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = os.environ.get("NJET_SIM_MOSQUITTO", "/usr/sbin/mosquitto")
EVENT_TOPIC = "/automaticcertificatemanagement/event/request"
log = logging.getLogger("njetsim.broker")


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM the child when the simulator dies (no orphans)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Broker:
    def __init__(self, prefix: Path) -> None:
        self.data = prefix / "data"
        self.socket = self.data / "mosquitto.sock"
        self.logs = prefix / "logs"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: mqtt.Client | None = None
        if len(str(self.socket).encode()) > 107:
            raise RuntimeError(f"broker socket path {self.socket} is longer than the 107 bytes "
                               "a unix socket allows; use a shorter prefix")

    # --- process ------------------------------------------------------------------------

    def _write_conf(self) -> Path:
        self.data.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        conf = self.data / "mosquitto.conf"
        user = pwd.getpwuid(os.getuid()).pw_name
        conf.write_text(
            "# written by njet-sim; NJet's broker helper: unix socket only\n"
            f"listener 0 {self.socket}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.data}/\n"
            "autosave_interval 1\n"
            f"user {user}\n"
            f"log_dest file {self.logs / 'mosquitto.log'}\n",
            encoding="utf-8",
        )
        return conf

    def start_process(self) -> None:
        """Start mosquitto and wait until its socket accepts connections (main thread only:
        the child is tied to this thread's lifetime)."""
        conf = self._write_conf()
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; see "
                                   f"{self.logs / 'mosquitto.log'}")
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(self.socket))
                    return
                except OSError:
                    time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not open {self.socket} within 10 s")

    def stop_process(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its retained messages
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- publisher ----------------------------------------------------------------------

    def connect(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, transport="unix",
                             client_id=f"njet-sim-{os.getpid()}")
        # paho annotates int seconds but sleeps with floats; sub-second retries matter here
        client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # type: ignore[arg-type]
        client.connect(str(self.socket))
        client.loop_start()
        self.client = client

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if self.client is None:
            log.warning("not publishing on %s: no MQTT client", topic)
            return
        info = self.client.publish(topic, payload, qos=0, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish on %s failed (%s): broker unreachable", topic,
                        mqtt.error_string(info.rc))
            return
        with contextlib.suppress(RuntimeError, ValueError):
            await asyncio.to_thread(info.wait_for_publish, 2.0)

    async def set_record(self, topic: str, payload: bytes) -> None:
        await self.publish(topic, payload, retain=True)

    async def clear_record(self, topic: str, followup: bytes = b"") -> None:
        """NJet's clearing sequence: an empty retained message, then a non-retained one."""
        await self.publish(topic, b"", retain=True)
        await self.publish(topic, followup, retain=False)

    async def event(self, payload: dict[str, Any]) -> None:
        """An ACM event: empty retained payload first, then the event with retain=0."""
        await self.publish(EVENT_TOPIC, b"", retain=True)
        await self.publish(EVENT_TOPIC, compact(payload), retain=False)

    # --- snapshot -----------------------------------------------------------------------

    async def snapshot(self, topics: list[str], wait_s: float = 3.0) -> list[tuple[str, bytes]]:
        """The retained, non-empty messages under `topics`, in the broker's delivery order."""
        return await asyncio.to_thread(self._snapshot, topics, wait_s)

    def _snapshot(self, topics: list[str], timeout: float) -> list[tuple[str, bytes]]:
        # The end of the retained burst is found without publishing anything other
        # subscribers could see: a second SUBSCRIBE (to a topic nobody uses) is answered
        # only after the broker queued the retained messages of the first one.
        marker = f"/njet-sim/sync/{uuid.uuid4().hex}"
        got: list[tuple[str, bytes]] = []
        acked: set[int] = set()
        cond = threading.Condition()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if msg.retain and msg.payload:
                got.append((msg.topic, bytes(msg.payload)))

        def on_subscribe(_c: mqtt.Client, _u: object, mid: int, _r: object, _p: object) -> None:
            with cond:
                acked.add(mid)
                cond.notify_all()

        client = mqtt.Client(CallbackAPIVersion.VERSION2, transport="unix",
                             client_id=f"njet-sim-replay-{uuid.uuid4().hex[:8]}")
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        try:
            client.connect(str(self.socket))
        except OSError as exc:
            log.warning("replay: broker unreachable (%s); nothing replayed", exc)
            return []
        client.loop_start()
        try:
            client.subscribe([(t, 0) for t in topics])
            mid = client.subscribe(marker, 0)[1]
            with cond:
                if not cond.wait_for(lambda: mid in acked, timeout):
                    log.warning("replay: broker did not answer within %.1f s", timeout)
        finally:
            client.disconnect()
            client.loop_stop()
        return got
