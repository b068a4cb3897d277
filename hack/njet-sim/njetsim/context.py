"""Shared types of the request handlers: the reply, the fault switches, the sim interface.

Used by sslapi.py, dynapi.py, replay.py, api.py and control.py; implemented by master.Sim.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from njetsim.broker import Broker
from njetsim.runtime import Runtime

JSON = "application/json"
TEXT = "text/plain"


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    content_type: str = JSON


def ok() -> Reply:
    return Reply(200, {"code": 0, "msg": "success."})


@dataclass
class Faults:
    """Test switches set through /__sim/fault (see README); all off by default."""

    api_down_until: float | None = None  # monotonic deadline; inf = until switched back
    slow: float = 0.0  # seconds added before every /api answer
    put_ssl_replies: list[Reply] = field(default_factory=list)  # answers for the next PUTs
    not_served: int = 0  # next N successful adds are not served (-1: all)
    broker_down: bool = False

    @property
    def api_down(self) -> bool:
        return self.api_down_until is not None and time.monotonic() < self.api_down_until

    def take_put_ssl(self) -> Reply | None:
        return self.put_ssl_replies.pop(0) if self.put_ssl_replies else None

    def take_not_served(self) -> bool:
        if self.not_served == 0:
            return False
        if self.not_served > 0:
            self.not_served -= 1
        return True

    def describe(self) -> dict[str, Any]:
        left = None
        if self.api_down_until is not None:
            left = -1.0 if self.api_down_until == float("inf") else max(
                0.0, self.api_down_until - time.monotonic())
        return {"api_down": self.api_down, "api_down_left_s": left, "slow": self.slow,
                "put_ssl_replies": [{"status": r.status, "body": r.body}
                                    for r in self.put_ssl_replies],
                "not_served": self.not_served, "broker_down": self.broker_down}


class SimContext(Protocol):
    runtime: Runtime
    broker: Broker
    faults: Faults
    prefix: Path

    async def sync_listeners(self) -> None:
        """Open/close sockets after the set of servers changed."""

    def later(self, coro: Coroutine[Any, Any, None], delay: float = 0.003) -> asyncio.Task[None]:
        """Run `coro` shortly after the current request was answered."""
