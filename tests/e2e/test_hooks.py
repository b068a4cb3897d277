"""Hooks and notifications end to end: `run` in store-only mode against a real Pebble, with an
`onIssued` hook that dumps its environment and a signed `[notify] webhook` to a local receiver.
Each real issuance runs the hook with the stored pair's serial, expiry and paths (never key
text, only the documented variables) and posts a verifiable event; /metrics counts both."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.hooks.events import ENV_NAMES, HOOK_PATH, rfc3339
from controller.certinfo import read_cert_info
from tests.e2e.harness import TWO_BLOCKS, Prefix, store_only_toml
from tests.fixtures.pebble import free_tcp_port
from tests.support.procs import clean_env, stop_process, tail, wait_until
from tests.support.tomlgen import render_toml, toml_value

pytestmark = pytest.mark.pebble

DUMP_ENV = textwrap.dedent("""\
    import json, os, sys
    env = dict(kv.split("=", 1) for kv in
               open("/proc/self/environ").read().split("\\0") if kv)
    path = os.path.join(sys.argv[1], env["NJCM_DOMAIN"] + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump({"env": env, "cwd": os.getcwd()}, f)
    os.rename(path + ".tmp", path)
""")
SECRET = b"e2e-webhook-secret"


class Posts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[dict[str, str], bytes]] = []


@pytest.fixture
def receiver() -> Iterator[tuple[str, Posts]]:
    posts = Posts()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with posts.lock:
                posts.items.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/notify/tok3n", posts
    finally:
        server.shutdown()
        server.server_close()


def test_on_issued_runs_for_each_real_issuance_and_the_webhook_is_told(
    tmp_path: Path, pebble: Any, receiver: tuple[str, Posts]
) -> None:
    url, posts = receiver
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(TWO_BLOCKS)
    script = tmp_path / "dump_env.py"
    script.write_text(DUMP_ENV)
    out = tmp_path / "hook-out"
    out.mkdir()
    (prefix.root / "conf" / "webhook.key").write_bytes(SECRET + b"\n")
    admin = free_tcp_port()
    sections = store_only_toml(pebble)
    sections["admin"] = {"address": f"127.0.0.1:{admin}"}
    argv = ", ".join(toml_value(a) for a in (sys.executable, str(script), str(out)))
    prefix.toml.write_text(render_toml(sections) + textwrap.dedent(f"""
        [hooks]
        onIssued = [{argv}]
        timeout = "20s"

        [notify]
        webhook = {toml_value(url)}
        template = "json"
        secretFile = "conf/webhook.key"
        """))
    log = prefix.root / "controller.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "-p", str(prefix.root), "-c",
             "conf/cert-manager.toml", "run"],
            stdout=sink, stderr=subprocess.STDOUT, env=clean_env(), cwd="/")
    try:
        done = wait_until(lambda: all((out / f"{d}.json").exists() for d in ("a.test", "b.test"))
                          and len(posts.items) >= 2, timeout=90)
        assert done, tail(log)
        # counted once each hook has ended (after it wrote its file)
        counted = wait_until(lambda: all(line in metrics_text(admin) for line in (
            'njcm_hook_runs_total{hook="onIssued",result="success"} 2.0',
            'njcm_notifications_total{result="success"} 2.0')), timeout=30)
        assert counted, metrics_text(admin)
    finally:
        code = stop_process(proc)
    text = log.read_text()
    assert code == 0, tail(log)
    assert "Traceback" not in text and "PRIVATE KEY" not in text and "tok3n" not in text

    for domain in ("a.test", "b.test"):
        seen = json.loads((out / f"{domain}.json").read_text())
        env = seen["env"]
        assert set(env) == set(ENV_NAMES) and env["PATH"] == HOOK_PATH
        crt = prefix.certs / f"{domain}.crt"
        info = read_cert_info(crt.read_bytes())
        assert env["NJCM_EVENT"] == "issued" and env["NJCM_DOMAIN"] == domain
        names = env["NJCM_NAMES"].split(",")
        assert names[0] == domain and set(names) == set(info.names)
        assert env["NJCM_SERIAL"] == info.serial
        assert env["NJCM_NOT_AFTER"] == rfc3339(info.not_after)
        assert env["NJCM_CERT_PATH"] == str(crt)
        assert env["NJCM_KEY_PATH"] == str(prefix.certs / f"{domain}.key")
        assert Path(env["NJCM_KEY_PATH"]).exists()
        assert "-----BEGIN" not in json.dumps(env) and "PRIVATE KEY" not in json.dumps(env)
        assert seen["cwd"] == str(prefix.root)

    with posts.lock:
        items = list(posts.items)
    by_domain = {}
    for headers, body in items:
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, headers["X-NJCM-Signature"])
        doc = json.loads(body)
        by_domain[doc["domain"]] = doc
    assert set(by_domain) == {"a.test", "b.test"}
    a = read_cert_info((prefix.certs / "a.test.crt").read_bytes())
    assert by_domain["a.test"]["event"] == "issued"
    assert by_domain["a.test"]["serial"] == a.serial


def metrics_text(admin: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""
