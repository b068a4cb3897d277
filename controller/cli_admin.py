"""A CLI command's POST to the running controller's admin API, for when that controller holds
the store lock: `njcm certs renew` (cli.py) and `njcm gc confirm` (cli_gc.py) call
`post_to_admin`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from controller.config import Config


async def post_to_admin(cfg: Config, path_query: str, *, seconds: float,
                        holder: str) -> tuple[int, dict[str, Any], str] | None:
    """POST `path_query` (e.g. "/api/v1/gc/confirm") to `[admin] address` with its token:
    (HTTP status, the JSON object answered ({} when none), host:port); None, with the error
    printed to stderr, when the admin API does not answer."""
    import aiohttp

    from controller.adapters.admin.server import parse_listen_address

    host, port = parse_listen_address(cfg.admin.address)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = {"Authorization": f"Bearer {cfg.admin.token}"} if cfg.admin.token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session, \
                session.post(f"http://{netloc}{path_query}", headers=headers) as response:
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"error: {holder} holds the store lock but its admin API at {netloc} does not "
              f"answer ({type(exc).__name__}: {exc}); retry once it is done", file=sys.stderr)
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = {}
    return status, (doc if isinstance(doc, dict) else {}), netloc
