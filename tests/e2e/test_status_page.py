"""The status page (`/` of the admin API) in a real headless Chromium.

Debian's `chromium` (hack/setup.sh installs it) is driven by Playwright's Python package with
`executable_path`, so no browser is ever downloaded (`playwright install` is never run). The
controller is the real program (`run`, store-only, interval 1 h) against the real Pebble, with
two certificates (a.test + www.a.test, b.test). A missing chromium or playwright skips on a
developer's machine and fails under CI=true (tests/fixtures/programs.py).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import TWO_BLOCKS, Prefix, store_only_toml
from tests.fixtures.pebble import free_tcp_port
from tests.fixtures.programs import require_program, unavailable
from tests.support.procs import clean_env, stop_process, tail, wait_until

pytestmark = pytest.mark.pebble

TOKEN = "page-test-token-5f2c"
DOMAINS = ("a.test", "b.test")


class Controller:
    """`njet-cert-manager run` on a prefix, its admin API on a free loopback port."""

    def __init__(self, prefix: Prefix, token: str = "") -> None:
        self.prefix = prefix
        self.token = token
        self.port = free_tcp_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = prefix.root / "logs" / f"controller-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, pebble: Any) -> Controller:
        toml = store_only_toml(pebble)
        toml["controller"] = {"interval": "1h"}
        toml["admin"] = {"address": f"127.0.0.1:{self.port}", "token": self.token}
        self.prefix.write_conf(TWO_BLOCKS)
        self.prefix.write_toml(toml)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "-p", str(self.prefix.root),
                 "-c", "conf/cert-manager.toml", "run"],
                stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd="/")  # fmt: skip
        assert wait_until(lambda: len(self.serials()) == 2, 60), tail(self.log)
        return self

    def get(self, path: str, *, host: str | None = None,
            auth: bool = True) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Host": host} if host else {}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def serials(self) -> dict[str, str]:
        """domain -> stored serial, from GET /api/v1/cert ({} while it does not answer)."""
        try:
            status, _, body = self.get("/api/v1/cert")
        except OSError:
            return {}
        if status != 200:
            return {}
        return {c["domain"]: c["serial"] for c in json.loads(body)["certificates"]
                if c.get("serial")}

    def serial(self, domain: str) -> str | None:
        status, _, body = self.get(f"/api/v1/cert/{domain}")
        return str(json.loads(body)["serial"]) if status == 200 else None

    def stop(self) -> None:
        code = stop_process(self.proc)
        text = tail(self.log, 200_000)
        assert "Traceback" not in text, text[-3000:]
        assert "PRIVATE KEY" not in text
        assert code in (None, 0), text[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = require_program("chromium", "/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def controller(tmp_path: Path, pebble: Any) -> Iterator[Callable[..., Controller]]:
    started: list[Controller] = []

    def start(token: str = "") -> Controller:
        ctl = Controller(Prefix(tmp_path / "njet"), token)
        started.append(ctl)
        return ctl.start(pebble)

    yield start
    for ctl in started:
        ctl.stop()


def open_page(browser: Any, ctl: Controller) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # a CSP violation or a script error shows here; a 401/404/409 answer is expected
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and not msg.text.startswith("Failed to load resource") else None)
    page.errors = errors
    page.goto(ctl.base + "/")
    return page


def row(page: Any, domain: str) -> Any:
    return page.locator(f'#certs tbody tr[data-domain="{domain}"]')


def test_the_page_lists_both_certificates_and_force_renews_one(
    browser: Any, controller: Callable[..., Controller], tmp_path: Path
) -> None:
    ctl = controller()
    first = ctl.serials()
    page = open_page(browser, ctl)
    page.wait_for_selector('body[data-state="ready"]')

    for domain in DOMAINS:
        r = row(page, domain)
        r.wait_for()
        assert r.get_attribute("data-serial") == first[domain]
        assert "Pebble" in r.locator("td.issuer").inner_text()
        days = r.locator(".days").inner_text()
        assert "days left" in days and float(days.split()[0]) > 1, days
        assert r.locator(".bar .fill").count() == 1
        assert r.locator("td.ready .pill").inner_text() == "Ready"
    assert "www.a.test" in row(page, "a.test").locator(".names").inner_text()
    assert page.locator("#plan-state").inner_text().startswith("In sync")
    assert "store-only" in row(page, "b.test").locator("td.served").inner_text()

    # fresh certificates: the plain renew is refused with the reason, and "force" is offered
    a = row(page, "a.test")
    a.locator("button.renew").click()
    msg = a.locator(".msg.error")
    msg.wait_for()
    assert "forceRenewMinAge" in msg.inner_text()
    assert ctl.serial("a.test") == first["a.test"]
    a.locator("button.force").click()
    assert wait_until(lambda: ctl.serial("a.test") not in (None, first["a.test"]), 60), \
        tail(ctl.log)
    renewed = ctl.serial("a.test")
    assert renewed is not None
    page.wait_for_selector(f'#certs tr[data-domain="a.test"][data-serial="{renewed}"]',
                           timeout=40_000)
    assert "renewed" in row(page, "a.test").locator(".msg").inner_text()
    assert ctl.serials()["b.test"] == first["b.test"]

    # the timeline (GET /api/v1/events) shows the refused and the forced renewal
    page.locator("#refresh").click()
    renews = page.locator('#events li[data-domain="a.test"]').filter(has_text="renew")
    renews.filter(has_text="409").first.wait_for()
    renews.filter(has_text="202").first.wait_for()
    shot = tmp_path / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert page.errors == [], page.errors
    page.context.close()


def test_the_event_timeline_shows_no_events_when_the_route_is_missing(
    browser: Any, controller: Callable[..., Controller]
) -> None:
    ctl = controller()
    context = browser.new_context()
    context.route("**/api/v1/events", lambda route: route.fulfill(
        status=404, content_type="application/json",
        body='{"error": "no such route: /api/v1/events"}'))
    page = context.new_page()
    page.goto(ctl.base + "/")
    page.wait_for_selector('body[data-state="ready"]')
    assert page.locator("#no-events").inner_text() == "No events."
    assert page.locator("#events li").count() == 0
    assert row(page, "a.test").count() == 1
    context.close()


def test_with_a_token_the_page_asks_for_it_once_and_then_works(
    browser: Any, controller: Callable[..., Controller]
) -> None:
    ctl = controller(token=TOKEN)
    assert ctl.get("/api/v1/cert", auth=False)[0] == 401
    status, _, html = ctl.get("/", auth=False)  # the page itself holds no data
    assert status == 200 and b"page.js" in html

    page = open_page(browser, ctl)
    page.wait_for_selector("#login:not([hidden])")
    assert row(page, "a.test").count() == 0
    page.fill("#token", "wrong-token")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "refused" in page.locator("#login-error").inner_text()

    page.fill("#token", TOKEN)
    page.click("#login-submit")
    page.wait_for_selector('body[data-state="ready"]')
    assert {row(page, d).count() for d in DOMAINS} == {1}
    assert page.evaluate("sessionStorage.getItem('njcm-admin-token')") == TOKEN
    assert page.context.cookies() == []

    page.reload()  # same tab: not asked again
    page.wait_for_selector('body[data-state="ready"]')
    assert page.locator("#login").is_hidden()
    a = row(page, "a.test")
    a.locator("button.renew").click()  # a POST with the header: refused as young, not 401
    a.locator(".msg.error").wait_for()
    assert "forceRenewMinAge" in a.locator(".msg.error").inner_text()

    other = browser.new_context().new_page()  # another tab's sessionStorage is its own
    other.goto(ctl.base + "/")
    other.wait_for_selector("#login:not([hidden])")
    other.context.close()
    assert page.errors == [], page.errors
    page.context.close()


def test_a_foreign_host_header_is_refused_and_security_headers_are_sent(
    controller: Callable[..., Controller],
) -> None:
    ctl = controller()
    for path in ("/", "/api/v1/cert", "/api/v1/plan", "/static/page.js"):  # not the scraped
        status, _, body = ctl.get(path, host=f"evil.test:{ctl.port}")
        assert status == 421, (path, status)
        assert "DNS rebinding" in json.loads(body)["error"]
    for host in (f"localhost:{ctl.port}", f"127.0.0.1:{ctl.port}", "localhost:8080"):
        assert ctl.get("/api/v1/cert", host=host)[0] == 200, host
    status, headers, _ = ctl.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    try:
        urllib.request.urlopen(ctl.base + "/static/../server.py", timeout=5)
        raise AssertionError("a path outside the page's files was served")
    except urllib.error.HTTPError as err:
        assert err.code in (400, 404)
