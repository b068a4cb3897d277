"""The njet.conf subset the simulator understands, read into frozen dataclasses.

Called by master.py at start and at every reload, and by dynapi.py for a dyn_srv
`server_body`. The syntax is read by syntax.py (the simulator's own reader, no controller code);
this module interprets the directives: http servers (listen, server_name, ssl_certificate(_key),
ssl_certificate_management, location/return/proxy_pass), `stream {}` with `map` and
`ssl_preread`, `helper` lines (ctrl API listen from its own conf, broker, go copilots) and `pid`.
Paths: ssl_certificate is relative to the main conf's directory (nginx's conf_prefix); helper,
pid and error_log paths are relative to the prefix (NJet's behaviour).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from njetsim.syntax import ConfParseError, Directive, parse_file


class SimConfError(Exception):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Listen:
    text: str  # as GET /api/v1/ssl shows it: "127.0.0.1:8443", "0.0.0.0:8444", "[::1]:8445"
    host: str  # bind address without brackets
    port: int
    ssl: bool = False
    default: bool = False

    @property
    def wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::")


@dataclass(frozen=True)
class LocationConf:
    modifier: str  # "", "=", "^~", "~", "~*"
    path: str
    return_code: int | None = None
    return_text: str | None = None
    proxy_pass: str | None = None
    set_host: bool = False  # proxy_set_header Host $host|$http_host

    @property
    def display(self) -> str:
        """The spelling of GET /api/v1/config/http_log: "/" or "^~ /.well-known/…"."""
        return f"{self.modifier} {self.path}" if self.modifier else self.path


@dataclass(frozen=True)
class CertPair:
    cert: str  # absolute path, or "data:<PEM>"
    key: str


@dataclass(frozen=True)
class ServerConf:
    listens: tuple[Listen, ...]
    names: tuple[str, ...]
    certs: tuple[CertPair, ...]
    ca_type: str | None  # the ssl_certificate_management value; None = unmanaged
    locations: tuple[LocationConf, ...]
    server_return: tuple[int, str | None] | None
    origin: str  # file:line


@dataclass(frozen=True)
class StreamMap:
    source: str  # "$ssl_preread_alpn_protocols"
    target: str  # "$acme_alpn_upstream"
    exact: tuple[tuple[str, str], ...]
    regexes: tuple[tuple[re.Pattern[str], str], ...]
    default: str

    def evaluate(self, value: str) -> str:
        for key, result in self.exact:
            if key == value:
                return result
        for pattern, result in self.regexes:
            if pattern.search(value):
                return result
        return self.default


@dataclass(frozen=True)
class StreamServer:
    listen: Listen
    preread: bool
    proxy_pass: str  # "host:port" or "$variable"


@dataclass(frozen=True)
class CopilotConf:
    name: str
    toml_path: Path  # absolute
    prog: str
    stdout_file: Path


@dataclass(frozen=True)
class SimConf:
    prefix: Path
    conf_path: Path
    pid_path: Path
    error_log: Path | None
    servers: tuple[ServerConf, ...]
    stream_maps: tuple[StreamMap, ...]
    stream_servers: tuple[StreamServer, ...]
    ctrl_listen: Listen | None
    ctrl_locations: tuple[LocationConf, ...]
    broker: bool
    copilots: tuple[CopilotConf, ...]


def _port(text: str, raw: str, where: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise SimConfError(f'{where}: invalid port in "{raw}" of the "listen" directive')
    return int(text)


def _address(raw: str, where: str) -> tuple[str, int]:
    """(bind host without brackets, port): `8444`, `*:8444`, `[::1]:8445`, `localhost:80`."""
    if raw.isascii() and raw.isdigit():
        return "0.0.0.0", _port(raw, raw, where)
    if raw.startswith("["):
        inside, bracket, rest = raw[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise SimConfError(f'{where}: invalid IPv6 address in "{raw}" (write "[addr]:port")')
        host, port_text = inside, rest[1:] or "80"
    else:
        host, colon, port_text = raw.rpartition(":")
        if not colon:
            host, port_text = raw, "80"
    port = _port(port_text, raw, where)
    if host == "*":
        return "0.0.0.0", port
    if host.lower() == "localhost":
        return "127.0.0.1", port
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise SimConfError(f'{where}: host "{host}" in "{raw}" is not an IP address (the '
                           "simulator binds addresses only, and localhost)") from None
    if (ip.version == 6) != raw.startswith("["):
        raise SimConfError(f'{where}: "{raw}": IPv6 addresses go in brackets, others do not')
    return ip.compressed, port


def parse_listen_args(args: Sequence[str], where: str) -> Listen:
    """A `listen` directive's arguments; the text is spelled the way GET /api/v1/ssl shows it."""
    host, port = _address(args[0].strip(), where)
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Listen(text, host, port, ssl="ssl" in args[1:],
                  default=any(a in ("default_server", "default") for a in args[1:]))


def _where(d: Directive) -> str:
    return f"{d.file}:{d.line}"


def _location(d: Directive) -> LocationConf:
    if d.block is None or not d.args:
        raise SimConfError(f'{_where(d)}: "location" needs a path and a block')
    modifier, path = ("", d.args[0]) if len(d.args) == 1 else (d.args[0], d.args[1])
    return location_from_directives(modifier, path, d.block)


def location_from_directives(modifier: str, path: str, block: Sequence[Directive], *,
                             proxy_pass: str | None = None) -> LocationConf:
    """A location from its directives (a static `location {}` or a dyn_loc location_body)."""
    code: int | None = None
    text: str | None = None
    proxy = proxy_pass
    set_host = False
    for c in block:
        if c.name == "return" and c.args:
            code, text = _return_args(c)
        elif c.name == "proxy_pass" and c.args:
            proxy = c.args[0]
        elif c.name == "proxy_set_header" and len(c.args) == 2 and c.args[0].lower() == "host":
            set_host = c.args[1] in ("$host", "$http_host")
    return LocationConf(modifier, path, code, text, proxy, set_host)


def _return_args(d: Directive) -> tuple[int, str | None]:
    if not d.args[0].isdigit():
        return 302, d.args[0]
    return int(d.args[0]), d.args[1] if len(d.args) > 1 else None


def _resolve(path: str, conf_dir: Path) -> str:
    if path.startswith("data:") or path.startswith("/"):
        return path
    return str((conf_dir / path).resolve())


def server_from_directives(block: Sequence[Directive], *, conf_dir: Path, origin: str,
                           listens: Sequence[Listen] = (), names: Sequence[str] = (),
                           inherited: Sequence[CertPair] = ()) -> ServerConf:
    """Interpret the directives of one server block (static `server {}` or a dyn_srv body)."""
    all_listens = list(listens)
    all_names = list(names)
    cert_paths: list[str] = []
    key_paths: list[str] = []
    ca_type: str | None = None
    locations: list[LocationConf] = []
    server_return: tuple[int, str | None] | None = None
    for d in block:
        if d.name == "listen" and d.args:
            all_listens.append(parse_listen_args(d.args, _where(d)))
        elif d.name == "server_name":
            all_names.extend(d.args)
        elif d.name == "ssl_certificate" and d.args:
            cert_paths.append(_resolve(d.args[0], conf_dir))
        elif d.name == "ssl_certificate_key" and d.args:
            key_paths.append(_resolve(d.args[0], conf_dir))
        elif d.name == "ssl_certificate_management" and d.args:
            ca_type = None if d.args[0] == "off" else d.args[0]
        elif d.name == "location":
            locations.append(_location(d))
        elif d.name == "return" and d.args:
            server_return = _return_args(d)
    if len(cert_paths) != len(key_paths):
        raise SimConfError(f'{origin}: {len(cert_paths)} "ssl_certificate" but '
                           f'{len(key_paths)} "ssl_certificate_key" directives')
    certs = tuple(CertPair(c, k) for c, k in zip(cert_paths, key_paths, strict=True))
    if not all_listens:
        all_listens.append(Listen("0.0.0.0:80", "0.0.0.0", 80))
    return ServerConf(tuple(all_listens), tuple(all_names), certs or tuple(inherited), ca_type,
                      tuple(locations), server_return, origin)


def _http_servers(http: Directive, conf_dir: Path) -> list[ServerConf]:
    assert http.block is not None
    inherited_c = [_resolve(d.args[0], conf_dir) for d in http.block
                   if d.name == "ssl_certificate" and d.args]
    inherited_k = [_resolve(d.args[0], conf_dir) for d in http.block
                   if d.name == "ssl_certificate_key" and d.args]
    inherited = [CertPair(c, k) for c, k in zip(inherited_c, inherited_k, strict=False)]
    managed = [d.args[0] for d in http.block if d.name == "ssl_certificate_management" and d.args]
    out = []
    for d in http.block:
        if d.name == "server" and d.block is not None:
            srv = server_from_directives(d.block, conf_dir=conf_dir, origin=_where(d),
                                         inherited=inherited)
            if srv.ca_type is None and managed and managed[-1] != "off" and not any(
                    c.name == "ssl_certificate_management" for c in d.block):
                srv = ServerConf(srv.listens, srv.names, srv.certs, managed[-1], srv.locations,
                                 srv.server_return, srv.origin)
            out.append(srv)
    return out


def _stream(stream: Directive) -> tuple[list[StreamMap], list[StreamServer]]:
    assert stream.block is not None
    maps: list[StreamMap] = []
    servers: list[StreamServer] = []
    for d in stream.block:
        if d.name == "map" and d.block is not None and len(d.args) == 2:
            exact: list[tuple[str, str]] = []
            regexes: list[tuple[re.Pattern[str], str]] = []
            default = ""
            for entry in d.block:
                value = entry.args[0] if entry.args else ""
                if entry.name == "default":
                    default = value
                elif entry.name.startswith("~*"):
                    regexes.append((re.compile(entry.name[2:], re.IGNORECASE), value))
                elif entry.name.startswith("~"):
                    regexes.append((re.compile(entry.name[1:]), value))
                elif entry.name not in ("hostnames", "volatile"):
                    exact.append((entry.name, value))
            maps.append(StreamMap(d.args[0], d.args[1], tuple(exact), tuple(regexes), default))
        elif d.name == "server" and d.block is not None:
            listen = next((c for c in d.block if c.name == "listen"), None)
            proxy = next((c for c in d.block if c.name == "proxy_pass"), None)
            if listen is None or proxy is None or not proxy.args:
                raise SimConfError(f"{_where(d)}: a stream server needs listen and proxy_pass")
            preread = any(c.name == "ssl_preread" and c.args[:1] == ("on",) for c in d.block)
            servers.append(StreamServer(parse_listen_args(listen.args, _where(listen)),
                                        preread, proxy.args[0]))
    return maps, servers


def _ctrl(path: Path) -> tuple[Listen | None, tuple[LocationConf, ...]]:
    for d in _parse(path):
        if d.name == "http" and d.block is not None:
            for srv in d.block:
                if srv.name == "server" and srv.block is not None:
                    conf = server_from_directives(srv.block, conf_dir=path.parent,
                                                  origin=_where(srv))
                    return conf.listens[0], conf.locations
    return None, ()


def _copilot(name: str, toml_path: Path, prefix: Path) -> CopilotConf:
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SimConfError(f'copilot "{name}": cannot read {toml_path}: {exc}') from None
    section = data.get("copilot", {})
    prog = section.get("progName")
    if not isinstance(prog, str) or not prog:
        raise SimConfError(f'copilot "{name}": {toml_path} has no [copilot] progName')
    stdout = section.get("stdoutFile") or f"logs/{name}.stdout"
    prog_path = prog if prog.startswith("/") else str(prefix / prog)
    return CopilotConf(name, toml_path, prog_path, prefix / str(stdout))


def _parse(path: Path) -> tuple[Directive, ...]:
    try:
        return parse_file(path)
    except ConfParseError as exc:
        raise SimConfError(f"[emerg] {exc}") from None


def load(prefix: Path, conf: str) -> SimConf:
    """Read `<prefix>/<conf>` (or an absolute `conf`) and everything it references."""
    conf_path = (prefix / conf).resolve()
    top = _parse(conf_path)
    pid = prefix / "logs/njet.pid"
    error_log: Path | None = None
    servers: list[ServerConf] = []
    maps: list[StreamMap] = []
    streams: list[StreamServer] = []
    ctrl_listen: Listen | None = None
    ctrl_locations: tuple[LocationConf, ...] = ()
    broker = False
    copilots: list[CopilotConf] = []
    for d in top:
        if d.name == "pid" and d.args:
            pid = prefix / d.args[0]
        elif d.name == "error_log" and d.args and error_log is None:
            error_log = prefix / d.args[0]
        elif d.name == "http" and d.block is not None:
            servers.extend(_http_servers(d, conf_path.parent))
        elif d.name == "stream" and d.block is not None:
            m, s = _stream(d)
            maps.extend(m)
            streams.extend(s)
        elif d.name == "helper" and len(d.args) >= 2:
            module = d.args[1]
            if "ctrl" in module and len(d.args) >= 3:
                ctrl_listen, ctrl_locations = _ctrl(prefix / d.args[2])
            elif "broker" in module:
                broker = True
            elif "copilot" in module and len(d.args) >= 3:
                copilots.append(_copilot(d.args[0], (prefix / d.args[2]).resolve(), prefix))
    return SimConf(prefix, conf_path, pid, error_log, tuple(servers), tuple(maps),
                   tuple(streams), ctrl_listen, ctrl_locations, broker, tuple(copilots))


def load_pid_path(prefix: Path, conf: str) -> Path:
    """Only the `pid` file of the conf (for `-s`), without loading anything else."""
    pid = prefix / "logs/njet.pid"
    for d in _parse((prefix / conf).resolve()):
        if d.name == "pid" and d.args:
            pid = prefix / d.args[0]
    return pid
