"""The README's first command (run by hack/demo.sh after hack/setup.sh): the product's job on
a simulated NJet, start to finish.

Starts a local Pebble ACME CA and the NJet simulator (hack/njet-sim, with its own Mosquitto)
serving examples/njet.conf's two managed servers with their bootstrap certificate, on free
loopback ports. Shows `diff` (changes pending) and what a TLS client receives for each name,
then adds the copilot helper line to njet.conf and reloads the simulator, which launches this
controller as its copilot (examples/cert-manager.toml: http-01 through NJet for one
certificate, tls-alpn-01 through the stream route for the other). Waits until /healthz says
in sync, shows `diff` and the handshakes again (now Pebble's certificates), renames a server in
njet.conf, reloads, and shows the new name served. Stops everything it started, also on
failure or Ctrl-C. Exit 0 on success, 1 naming the failing step, 130 when interrupted.

Environment: NJCM_DEMO_DIR (where the prefix and logs go; default a new .run/demo-* that is
removed after a successful run unless NJCM_DEMO_KEEP=1), NJCM_DEMO_TIMEOUT (seconds to wait
for convergence, default 60). `<dir>/demo.json` lists every pid started and every port used
(tests/e2e/test_demo.py checks that none is left). Reuses the harness of tests/support/.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402

from tests.support.hackmods import PebbleHarness  # noqa: E402
from tests.support.njetsim import NjetSim, ec_cert, layout  # noqa: E402
from tests.support.procs import controller_program  # noqa: E402

EXAMPLES = REPO / "examples"
TOML_REL = "conf/cert-manager.toml"
COPILOT_HELPER = "helper certmanager "
OLD, NEW = "shop.example.test", "store.example.test"  # the rename of step 6
NAMES = ["shop.example.test", "www.shop.example.test", "api.example.test"]
RENAMED = ["store.example.test", "www.store.example.test", "api.example.test"]
STEPS = 7
LOGGED = ("decision", "challenge location", "certificate issued", "njet event")


class DemoFailed(RuntimeError):
    """A step did not do what it should: the message says what."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: stop everything like Ctrl-C does."""


def say(text: str = "") -> None:
    print(text, flush=True)


@contextlib.contextmanager
def step(number: int, title: str) -> Iterator[None]:
    say(f"\n== {number}/{STEPS} {title}")
    started = time.monotonic()
    try:
        yield
    except DemoFailed as exc:
        raise DemoFailed(f"step {number} ({title}): {exc}") from None
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        raise DemoFailed(f"step {number} ({title}): {type(exc).__name__}: {exc}") from exc
    say(f"   ({time.monotonic() - started:.1f} s)")


# -- what a TLS client receives ------------------------------------------------------------

def handshake(port: int, sni: str) -> dict[str, str]:
    """One real TLS handshake to 127.0.0.1:port with SNI `sni`: the leaf's fields."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we show what is served, trusted or not
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise DemoFailed(f"{sni}: the server sent no certificate")
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ", ".join(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = "-"
    return {"sni": sni, "subject": cert.subject.rfc4514_string(), "san": names,
            "issuer": cert.issuer.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")}


def show_served(port: int, names: list[str]) -> list[dict[str, str]]:
    rows = [handshake(port, name) for name in names]
    cols = [("SNI", "sni"), ("SUBJECT", "subject"), ("SAN", "san"), ("ISSUER", "issuer"),
            ("NOT AFTER", "not_after")]
    widths = [max(len(title), *(len(r[key]) for r in rows)) for title, key in cols]
    for line in ([title for title, _ in cols], *([r[k] for _, k in cols] for r in rows)):
        say("   " + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return rows


# -- the pieces ------------------------------------------------------------------------------

class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = root / "njet"
        self.pebble: PebbleHarness | None = None
        self.sim: NjetSim | None = None
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.copilot_pids: set[int] = set()
        self.timeout = float(os.environ.get("NJCM_DEMO_TIMEOUT", "60"))
        self.program = ""
        self.started: list[str] = []

    # bookkeeping for the cleanup and for tests/e2e/test_demo.py
    def record(self) -> None:
        if self.sim is not None and self.sim.proc is not None:
            self.pids["njet-sim"] = self.sim.proc.pid
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                state = self.sim.state()
                self.copilot_pids.update(int(p) for p in state["copilots"].values())
        for n, pid in enumerate(sorted(self.copilot_pids)):
            self.pids[f"copilot-{n}"] = pid
        (self.root / "demo.json").write_text(json.dumps(
            {"marker": str(self.root), "pids": self.pids, "ports": self.ports}, indent=2))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.program, "-p", str(self.prefix), "-c", TOML_REL, *args],
                              capture_output=True, text=True, timeout=60)

    def show_diff(self, expect: int) -> None:
        res = self.cli("diff")
        for line in (res.stdout + res.stderr).splitlines():
            say(f"   {line}")
        meaning = {0: "in sync", 2: "changes pending"}.get(res.returncode, "error")
        say(f"   exit {res.returncode} ({meaning})")
        if res.returncode != expect:
            raise DemoFailed(f"`diff` exited {res.returncode}, expected {expect}")

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.ports['admin']}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return dict(json.loads(answer.read()))
        except urllib.error.HTTPError as err:  # 503 while degraded: still a JSON answer
            with contextlib.suppress(ValueError):
                return dict(json.loads(err.read()))
            return None
        except (OSError, ValueError):
            return None

    def copilot_pid(self) -> int | None:
        assert self.sim is not None
        pid = self.sim.state()["copilots"].get("certmanager")
        return int(pid) if pid else None

    def wait_converged(self, not_pid: int | None = None) -> None:
        """Until the copilot NJet runs now (not `not_pid`) says in sync on /healthz."""
        deadline = time.monotonic() + self.timeout
        started = time.monotonic()
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            pid = self.copilot_pid()
            self.record()
            last = self.health()
            if (pid and pid != not_pid and last and last.get("pid") == pid
                    and last.get("in_sync") is True):
                say(f"   /healthz of pid {pid}: in_sync after {last['reconciles']} reconcile(s),"
                    f" {time.monotonic() - started:.1f} s")
                return
            time.sleep(0.2)
        raise DemoFailed(f"not in sync within {self.timeout:.0f} s (last /healthz: {last}); "
                         f"see {self.prefix / 'logs' / 'cert-manager.log'}")

    def show_log(self) -> None:
        """The copilot's log lines about what it did (NJet truncates the log at each launch)."""
        path = self.prefix / "logs" / "cert-manager.log"
        say(f"   {path.relative_to(self.root)} (the copilot's stdout):")
        for line in path.read_text(errors="replace").splitlines():
            ts, _, rest = line.partition(" ")
            rest = rest.split(" logger=")[0].strip()
            if rest.removeprefix("INFO").strip().startswith(LOGGED):
                say(f"     {ts[11:23]}  {rest.removeprefix('INFO').strip()}")

    # the steps
    def start(self) -> None:
        with step(1, "start a local Pebble ACME CA and the NJet simulator (bootstrap certs)"):
            self.program = controller_program()
            self.pebble = PebbleHarness(self.root / "pebble", validity_seconds=90 * 86400,
                                        authz_reuse_percent=0)
            self.ports.update(http=self.pebble.http_port, tls=self.pebble.tls_port,
                              pebble=self.pebble.listen_port,
                              pebble_mgmt=self.pebble.management_port)
            self.record()
            self.started.append("Pebble and its DNS responder")
            self.pebble.start()
            self.pids.update(pebble=self.pebble.state()["pids"]["pebble"],
                             pebble_dns=self.pebble.state()["pids"]["dns"])
            self.ports["pebble_dns_udp"] = self.pebble.dns_port
            toml = (EXAMPLES / "cert-manager.toml").read_text()
            for key, value in {"prog": self.program, "directory": self.pebble.directory_url,
                               "cabundle": str(self.pebble.ca_bundle)}.items():
                toml = toml.replace("{{" + key + "}}", value)
            crt, key_pem = ec_cert(["bootstrap.invalid"], "NJet bootstrap")
            conf = (EXAMPLES / "njet.conf").read_text()
            # NJet runs first without the cert manager: its helper line comes in at step 3
            without = conf.replace(COPILOT_HELPER, "# " + COPILOT_HELPER)
            layout(self.prefix, without, ports=self.ports, files={
                TOML_REL: toml, "conf/certs/bootstrap.crt": crt,
                "conf/certs/bootstrap.key": key_pem})
            self.record()
            self.sim = NjetSim(self.prefix, cwd=self.root)
            self.started.append("the NJet simulator and its Mosquitto")
            self.sim.start()
            self.record()
            say(f"   Pebble        {self.pebble.directory_url}")
            say(f"   NJet (sim)    prefix {self.prefix}, control API {self.sim.api_url}")
            say(f"   listens       https 127.0.0.1:{self.ports['https']} (both servers, by SNI),"
                f" http {self.ports['http']}, stream (ssl_preread) {self.ports['tls']}")
        with step(2, "before: what a TLS client receives, and what `diff` would do"):
            rows = show_served(self.ports["https"], NAMES)
            if not all("bootstrap" in r["issuer"] for r in rows):
                raise DemoFailed("NJet does not serve the bootstrap certificate")
            say(f"   $ njet-cert-manager -p {self.prefix} -c {TOML_REL} diff")
            self.show_diff(expect=2)

    def enable(self) -> None:
        assert self.sim is not None
        with step(3, "add the cert manager to njet.conf and reload NJet: it starts the copilot"):
            say(f"   + {COPILOT_HELPER}modules/njt_helper_go_copilot_module.so {TOML_REL};")
            conf = self.prefix / "conf" / "njet.conf"
            conf.write_text(conf.read_text().replace("# " + COPILOT_HELPER, COPILOT_HELPER))
            say("   $ njet-sim -s reload    (issuing: http-01 via NJet for shop, "
                "tls-alpn-01 via the stream route for api)")
            self.started.append("the copilot(s)")
            self.sim.reload()
            self.wait_converged()
            self.show_log()
            self.show_diff(expect=0)
        with step(4, "after: what a TLS client receives now"):
            rows = show_served(self.ports["https"], NAMES)
            if not all("Pebble" in r["issuer"] for r in rows):
                raise DemoFailed("NJet does not serve Pebble's certificates for every name")

    def rename(self) -> None:
        assert self.sim is not None
        with step(5, f"rename {OLD} to {NEW} in njet.conf and reload NJet"):
            conf = self.prefix / "conf" / "njet.conf"
            conf.write_text(conf.read_text().replace(OLD, NEW))
            say(f"   server_name {OLD} www.{OLD};  ->  server_name {NEW} www.{NEW};")
            old = self.copilot_pid()
            say(f"   $ njet-sim -s reload    (SIGTERM to copilot pid {old}, a new one starts)")
            self.sim.reload()
            self.wait_converged(not_pid=old)
            self.show_log()
            self.show_diff(expect=0)
        with step(6, "after the rename: what a TLS client receives"):
            rows = show_served(self.ports["https"], RENAMED)
            if not all("Pebble" in r["issuer"] and r["sni"] in r["san"].split(", ")
                       for r in rows):
                raise DemoFailed(f"NJet does not serve a Pebble certificate for {NEW}")

    def stop(self) -> list[str]:
        """Everything started, in reverse order; safe to call at any point. What is still
        running afterwards (nothing, normally)."""
        with contextlib.suppress(OSError):
            self.record()
        if self.sim is not None and self.sim.proc is not None:
            try:
                self.sim.quit()
            except Exception:  # quitting already (Ctrl-C reaches the whole process group)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.sim.proc.wait(5)
            self.sim.kill()
        # an old copilot NJet told to stop at a reload; anything the simulator left behind
        for pid in sorted(self.copilot_pids | set(running_with(str(self.root)))):
            stop_pid(pid, str(self.root))
        if self.pebble is not None:
            self.pebble.stop()
        left = running_with(str(self.root))
        dns = self.pids.get("pebble_dns")  # its argv does not name the demo's directory
        if dns and dns in running_with("dns.py"):
            left.append(dns)
        return [f"pid {pid}" for pid in left]


def stop_pid(pid: int, marker: str) -> None:
    """SIGTERM, then SIGKILL, a process whose argv still names `marker` (no reused pid)."""
    def alive() -> bool:
        try:
            return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        if not alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        waited_until(lambda: not alive(), wait)


def running_with(marker: str) -> list[int]:
    """Pids of the processes whose argv contains `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
    return found


def waited_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def log_tails(demo: Demo) -> None:
    for path in (demo.prefix / "logs" / "cert-manager.log", demo.prefix / "logs" / "njet-sim.out"):
        with contextlib.suppress(OSError):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            say(f"-- last lines of {path}")
            for line in lines:
                say(f"   {line}")


def main() -> int:
    def interrupted(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    given = os.environ.get("NJCM_DEMO_DIR")
    if given:
        root = Path(given).resolve()
        root.mkdir(parents=True, exist_ok=True)
    else:
        (REPO / ".run").mkdir(exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="demo-", dir=REPO / ".run"))
    say(f"njet-cert-manager demo in {root} "
        f"({dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')})")
    demo = Demo(root)
    code = 1
    try:
        demo.start()
        demo.enable()
        demo.rename()
        code = 0
    except DemoFailed as exc:
        say(f"\ndemo FAILED at {exc}")
        log_tails(demo)
    except (KeyboardInterrupt, Interrupted):
        say("\ndemo interrupted")
        code = 130
    finally:
        # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say(f"\n== {STEPS}/{STEPS} stop everything the demo started")
        left = demo.stop()
        say(f"   stopped: {', '.join(demo.started) or 'nothing was started'}")
        if left:
            say(f"\ndemo FAILED at step {STEPS} (stop): still running: {', '.join(left)}")
            code = code or 1
    if code == 0:
        say("\ndemo OK: NJet went from its bootstrap certificate to Pebble's, pushed through "
            "its live API and proved by TLS handshakes, and followed a server rename")
        if not given and not os.environ.get("NJCM_DEMO_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    else:
        say(f"files and logs kept in {root}")
    return code


if __name__ == "__main__":
    sys.exit(main())
