"""A real authoritative DNS server for the dns-01 tests and bench/: Debian's BIND (`named`)
in the foreground on loopback addresses, with throwaway zones and TSIG keys.

`BindServer(workdir, listens=[("127.0.0.1", port)], zones={...})` writes named.conf and the
zone files into `workdir`, `start()` runs `named -g` (logs in workdir/named.log) and waits
until it answers, `stop()` ends it. Every zone grants two TSIG keys: ACME_KEY may change TXT
records only (what the controller gets), ADMIN_KEY anything (what a test uses to add a CNAME
or copy a record late). `recursive=True` lets the server follow a CNAME into another zone it
serves (as a CA's resolver would): it then also serves a fake root zone, so nothing is ever
asked outside this machine. No rndc control channel. Zone files come from `zone_file()`: SOA,
NS records (with their addresses), the apex and a wildcard A record to 127.0.0.1.

`update(server, zone, ...)` and `txt(server, name)` talk to any server with dnspython.
Used by tests/fixtures/dns.py and bench/dns01.py.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

ACME_KEY = "acme-key"
ADMIN_KEY = "admin-key"
Server = tuple[str, int]


class BindError(RuntimeError):
    pass


def zone_file(zone: str, nameservers: Sequence[tuple[str, str]] = (("ns1", "127.0.0.1"),),
              extra: Iterable[str] = ()) -> str:
    lines = [f"$ORIGIN {zone}.", "$TTL 60",
             f"@ SOA {nameservers[0][0]}.{zone}. hostmaster.{zone}. 1 60 60 600 5"]
    for label, address in nameservers:
        lines += [f"@ NS {label}.{zone}.", f"{label} A {address}"]
    lines += ["@ A 127.0.0.1", "* A 127.0.0.1", *extra]
    return "\n".join(lines) + "\n"


def new_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def tsig_key(name: str, secret: str) -> dns.tsig.Key:
    return dns.tsig.Key(name + ".", base64.b64decode(secret), dns.tsig.HMAC_SHA256)


class BindServer:
    """One `named` process; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        listens: Sequence[Server],
        zones: Mapping[str, str],
        keys: Mapping[str, str] | None = None,
        recursive: bool = False,
        named: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.listens = tuple(listens)
        self.zones = dict(zones)
        self.keys = dict(keys) if keys else {ACME_KEY: new_secret(), ADMIN_KEY: new_secret()}
        self.recursive = recursive
        self.named = named or shutil.which("named") or "/usr/sbin/named"
        self.log_path = self.workdir / "named.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> Server:
        return self.listens[0]

    @property
    def hostport(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    def key(self, name: str = ADMIN_KEY) -> dns.tsig.Key:
        return tsig_key(name, self.keys[name])

    def write_secret(self, path: Path, name: str = ACME_KEY) -> Path:
        """The base64 secret of key `name` in `path` (mode 0600), for tsigSecretFile."""
        path.write_text(self.keys[name] + "\n")
        path.chmod(0o600)
        return path

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.named, "-g", "-n", "1", "-c", str(self.workdir / "named.conf")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        zone = next(iter(self.zones))
        while True:
            if self._proc.poll() is not None:
                raise BindError(f"named exited ({self._proc.returncode}):\n{self.log_tail()}")
            try:
                if self.soa_serial(self.address, zone) is not None:
                    return
            except (OSError, dns.exception.DNSException):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BindError(f"named not answering after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _write_config(self) -> None:
        d = self.workdir
        by_port: dict[int, list[str]] = {}
        for host, port in self.listens:
            by_port.setdefault(port, []).append(host)
        listen = "\n".join(f"  listen-on port {port} {{ {'; '.join(hosts)}; }};"
                           for port, hosts in by_port.items())
        recursion = ("recursion yes;\n  allow-recursion { 127.0.0.0/8; };" if self.recursive
                     else "recursion no;")
        keys = "\n".join(f'key "{name}" {{ algorithm hmac-sha256; secret "{secret}"; }};'
                         for name, secret in self.keys.items())
        zones = dict(self.zones)
        if self.recursive:  # every name outside our zones ends here, never on the Internet
            zones.setdefault(".", "$TTL 60\n. SOA ns. hostmaster.invalid. 1 60 60 600 5\n"
                                  ". NS ns.\nns. A 127.0.0.1\n")
        zone_stanzas = []
        for i, (zone, text) in enumerate(zones.items()):
            file = f"zone{i}.db"
            (d / file).write_text(text)
            for stale in d.glob(f"{file}.jnl"):
                stale.unlink()
            policy = ""
            if zone != ".":
                policy = (f" update-policy {{ grant {ACME_KEY} zonesub TXT;"
                          f" grant {ADMIN_KEY} zonesub ANY; }};")
            zone_stanzas.append(f'zone "{zone}" {{ type primary; file "{file}";{policy} }};')
        (d / "named.conf").write_text(f"""options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
{listen}
  listen-on-v6 {{ none; }};
  {recursion}
  dnssec-validation no;
  notify no;
  allow-query {{ any; }};
  minimal-responses no;
}};
controls {{ }};
{keys}
{chr(10).join(zone_stanzas)}
""")

    # -- talking to a server -----------------------------------------------------------------
    def soa_serial(self, server: Server, zone: str) -> int | None:
        q = dns.message.make_query(zone + ".", dns.rdatatype.SOA)
        reply = dns.query.udp(q, server[0], port=server[1], timeout=1.0)
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        return None


def update(server: Server, zone: str, key: dns.tsig.Key, *,
           add: Iterable[tuple[str, int, str, str]] = (),
           delete: Iterable[tuple[str, str, str | None]] = ()) -> None:
    """One signed update: `add` (name, ttl, type, data), `delete` (name, type, data or None
    for the whole RRset). Raises AssertionError when the server does not say NOERROR."""
    msg = dns.update.UpdateMessage(zone + ".", keyring=key)
    for name, ttl, rdtype, data in add:
        msg.add(name + ".", ttl, rdtype, data)
    for name, rdtype, value in delete:
        if value is None:
            msg.delete(name + ".", rdtype)
        else:
            msg.delete(name + ".", rdtype, value)
    reply = dns.query.tcp(msg, server[0], port=server[1], timeout=5.0)
    assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())


def txt(server: Server, name: str) -> set[str]:
    """The TXT values `server` has at `name` (no recursion)."""
    q = dns.message.make_query(name + ".", dns.rdatatype.TXT)
    q.flags &= ~dns.flags.RD
    reply = dns.query.tcp(q, server[0], port=server[1], timeout=5.0)
    wanted = dns.name.from_text(name + ".")
    return {b"".join(rr.strings).decode() for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.TXT and rrset.name == wanted for rr in rrset}


def loopback_alias(address: str) -> bool:
    """Put `address` (127.x.y.z) on lo, as BIND listens only on interface addresses; True if
    this call added it (remove it with drop_loopback_alias). Needs root and `ip`; False when
    it is already there, raises BindError when it cannot be added."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    shown = subprocess.run([ip, "-4", "addr", "show", "dev", "lo"], capture_output=True,
                           text=True, check=False).stdout
    if f" {address}/" in shown:
        return False
    if os.geteuid() != 0:
        raise BindError(f"{address} is not on lo and only root can add it")
    done = subprocess.run([ip, "addr", "add", f"{address}/32", "dev", "lo"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BindError(f"cannot add {address} to lo: {done.stderr.strip()}")
    return True


def drop_loopback_alias(address: str) -> None:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    subprocess.run([ip, "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True,
                   check=False)
