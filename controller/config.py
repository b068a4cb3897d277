"""The TOML configuration: NJet cert-manager's keys unchanged, plus our documented additions.

Called by cli.py (load_config) at start-up. Unknown keys are warnings naming the key; wrong types
are ConfigErrors naming the file, the key and the expected type, never the value (it may be a
token or an EAB key). Durations have documented minimums (MIN_INTERVAL, MIN_PROBE_TIMEOUT,
MIN_ADMIN_TIMEOUT; a zero interval would spin the loop), refused at load like a wrong type.
Relative paths are resolved against the NJet prefix (NJet launches copilots from an arbitrary
working directory).
"""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from controller.errors import ConfigError
from controller.model import ChallengeType, KeyType
from controller.njetconf import DEFAULT_MAX_CONF_BYTES

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object) -> timedelta:
    """ "90s", "15m", "1h", "7d", "2w", or integer/float seconds → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError('expected a duration like "90s", "1h", "7d" or seconds')
    if isinstance(value, int | float):
        return _bounded(float(value))
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return _bounded(float(m.group(1)) * _UNITS[m.group(2)])
    raise ValueError('expected a duration like "90s", "1h", "7d" or seconds')


_MAX_SECONDS = 100 * 365 * 86400


def _bounded(seconds: float) -> timedelta:
    if seconds != seconds or seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > _MAX_SECONDS:
        raise ValueError("a duration cannot exceed 100 years")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

MIN_INTERVAL = timedelta(seconds=10)  # [controller] interval
MIN_PROBE_TIMEOUT = timedelta(milliseconds=100)  # [controller] probeTimeout
MIN_ADMIN_TIMEOUT = timedelta(seconds=1)  # [admin] headerTimeout, idleTimeout


def _at_least(minimum: timedelta, shown: str) -> AfterValidator:
    def check(value: timedelta) -> timedelta:
        if value < minimum:
            raise ValueError(f"must be at least {shown}")
        return value

    return AfterValidator(check)


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class CopilotSection(_Section):
    progName: str = ""
    copilotType: str = ""
    stdoutFile: str = ""
    stderrFile: str = ""


class AcmeSection(_Section):
    email: str = ""
    challengeType: ChallengeType = ChallengeType.HTTP
    acmeCaDir: str = "https://acme-v02.api.letsencrypt.org/directory"
    tlsChallengeServerAddress: str = ":443"
    httpChallengeServerAddress: str = ":80"
    proxyHttpChallengeServerIp: str = ""
    renewBeforeDays: float = Field(default=30, ge=0, le=36500)
    keyType: KeyType | None = None
    caBundle: str = ""
    eabKid: str = ""
    eabHmacKey: str = ""
    profile: str = ""
    httpValidationPort: int = Field(default=80, ge=1, le=65535)


class NjetSection(_Section):
    confPath: str = "conf/njet.conf"
    apiAddress: str = "http://127.0.0.1:8081"
    # njet.conf and every include, in all (a file included twice counts twice)
    maxConfBytes: int = Field(default=DEFAULT_MAX_CONF_BYTES, ge=1024, le=2**36)


class MqttSection(_Section):
    # Absent = NJet's embedded broker on unix:<prefix>/data/mosquitto.sock
    mqttServerAddress: str | None = None


class LogSection(_Section):
    v: int = 0
    format: Literal["text", "json"] = "text"


class ControllerSection(_Section):
    interval: Annotated[Duration, _at_least(MIN_INTERVAL, "10s")] = timedelta(hours=1)
    deleteGracePeriod: Duration = timedelta(hours=24)  # 0 is fine: delete at once
    # the deletion guard: a pass deleting more than this share of the stored certificates we
    # manage (or all of them) waits for `gc confirm`
    maxDeleteShare: float = Field(default=0.5, gt=0, le=1, strict=True)
    # deleted pairs are moved to quarantine/ and removed after this long (0: at the next pass)
    quarantineRetention: Duration = timedelta(days=30)
    revokeOnDelete: bool = False
    concurrency: int = Field(default=8, ge=1, le=256)
    probeTimeout: Annotated[Duration, _at_least(MIN_PROBE_TIMEOUT, "100ms")] = timedelta(seconds=5)
    # forced renewals (admin API, `certs renew`): at most this many per certificate and hour
    # (0: none), and none of a certificate younger than forceRenewMinAge unless forced
    forceRenewPerHour: int = Field(default=6, ge=0, le=60, strict=True)
    forceRenewMinAge: Duration = timedelta(minutes=10)


class AdminSection(_Section):
    address: str = "127.0.0.1:2000"
    token: str = ""
    # a connection must send a complete request header within headerTimeout; one with no
    # request in progress is closed after idleTimeout; more than maxConnections are refused
    headerTimeout: Annotated[Duration, _at_least(MIN_ADMIN_TIMEOUT, "1s")] = timedelta(seconds=10)
    idleTimeout: Annotated[Duration, _at_least(MIN_ADMIN_TIMEOUT, "1s")] = timedelta(seconds=60)
    maxConnections: int = Field(default=256, ge=1, le=65536)


class Config(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    copilot: CopilotSection = CopilotSection()
    acme: AcmeSection = AcmeSection()
    njet: NjetSection = NjetSection()
    mqtt: MqttSection = MqttSection()
    log: LogSection = LogSection()
    controller: ControllerSection = ControllerSection()
    admin: AdminSection = AdminSection()

    # Filled by load_config, not from the file.
    prefix: Path = Path("/usr/local/njet")
    source: str = ""

    @property
    def store_only(self) -> bool:
        """No NJet API: issue and renew into the store, never apply or probe."""
        return self.njet.apiAddress.strip() == ""

    @property
    def conf_path(self) -> Path:
        return resolve_path(self.prefix, self.njet.confPath)

    @property
    def ca_bundle(self) -> Path | None:
        return resolve_path(self.prefix, self.acme.caBundle) if self.acme.caBundle else None

    @property
    def mqtt_address(self) -> str:
        addr = self.mqtt.mqttServerAddress
        if addr is None or addr.strip() == "":
            return f"unix:{self.prefix / 'data' / 'mosquitto.sock'}"
        return addr.strip()


def resolve_path(prefix: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else prefix / p


_SECTIONS = ("copilot", "acme", "njet", "mqtt", "log", "controller", "admin")


def unknown_keys(cfg: Config) -> list[str]:
    """Dotted names of keys the file had that we do not know (warned about, not fatal)."""
    out = [k for k in (cfg.model_extra or {}) if k not in ("prefix", "source")]
    for name in _SECTIONS:
        section = getattr(cfg, name)
        out.extend(f"{name}.{k}" for k in (section.model_extra or {}))
    return out


def _describe(err: dict[str, Any]) -> str:
    """One validation error: the key and what was expected, never the value given."""
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}"


def parse_config(data: dict[str, Any], *, prefix: Path, source: str = "<config>") -> Config:
    for name in _SECTIONS:
        if name in data and not isinstance(data[name], dict):
            raise ConfigError(
                f"{source}: [{name}] must be a table, got {type(data[name]).__name__}"
            )
    try:
        return Config.model_validate({**data, "prefix": prefix, "source": source})
    except ValidationError as exc:
        details = "; ".join(_describe(e) for e in exc.errors())  # type: ignore[arg-type]
        raise ConfigError(f"{source}: {details}") from None


def load_config(path: str | Path, *, prefix: str | Path | None = None) -> Config:
    """Read the TOML at `path` (relative paths resolve against `prefix`)."""
    pfx = Path(prefix).resolve() if prefix else Path.cwd()
    p = resolve_path(pfx, str(path))
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data, prefix=pfx, source=str(p))
