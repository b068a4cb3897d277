"""The TOML configuration: NJet cert-manager's keys unchanged, plus our documented additions.

Called by cli.py (load_config) at start-up. `Config` is the whole file: one model per section
(config_sections.py: the sections and the checks of their values; dnsconfig.py: [dns]).
Unknown keys are warnings naming the key; wrong types are ConfigErrors naming the file, the key
and the expected type, never the value (it may be a token or an EAB key).
`[certificates."name"]` table keys are host names (config_sections.certificate_name), checked
here and made canonical; two spellings of one name are an error. `[dns]`
(controller/dnsconfig.py) configures dns-01; challengeType "dns" without it is an error.
`[store]` (controller/storeconfig.py) picks the file store or the fleet's PostgreSQL.
`[[acme.fallback]]` entries list further CAs, every CA once, errors naming
`acme.fallback[<index from 0>].<key>`.
Relative paths are resolved against the NJet prefix (NJet launches copilots from an arbitrary
working directory).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.config_sections import (
    AcmeSection,
    AdminSection,
    CertificateSettings,
    ControllerSection,
    CopilotSection,
    HooksSection,
    LogSection,
    MqttSection,
    NjetSection,
    NotifySection,
    certificate_name,
)
from controller.dnsconfig import DnsSection
from controller.errors import ConfigError
from controller.model import ChallengeType
from controller.storeconfig import StoreSection


def _key_path(key: object) -> str:
    """`certificates."shop.test"` as an error or warning names it (escaped, bounded)."""
    text = str(key)
    shown = text if len(text) <= 80 else text[:80] + "…"
    return "certificates." + json.dumps(shown, ensure_ascii=True)


class Config(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    copilot: CopilotSection = CopilotSection()
    acme: AcmeSection = AcmeSection()
    njet: NjetSection = NjetSection()
    mqtt: MqttSection = MqttSection()
    log: LogSection = LogSection()
    controller: ControllerSection = ControllerSection()
    admin: AdminSection = AdminSection()
    # [certificates."<first server_name>"] tables, keyed by certificate_name(key)
    certificates: dict[str, CertificateSettings] = Field(default_factory=dict)
    # [dns]: the provider of dns-01 (controller/dnsconfig.py); None: no dns-01, no wildcards
    dns: DnsSection | None = None
    hooks: HooksSection = HooksSection()
    notify: NotifySection = NotifySection()
    # [store]: the file store (default) or the fleet's PostgreSQL (controller/storeconfig.py)
    store: StoreSection = StoreSection()

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
    def dns_configured(self) -> bool:
        """A [dns] section exists: dns-01 can be used, wildcard names can be issued."""
        return self.dns is not None

    @property
    def ca_bundle(self) -> Path | None:
        return resolve_path(self.prefix, self.acme.caBundle) if self.acme.caBundle else None

    @property
    def notify_secret_file(self) -> Path | None:
        """`[notify] secretFile`, resolved against the prefix; None: webhooks are unsigned."""
        value = self.notify.secretFile.strip()
        return resolve_path(self.prefix, value) if value else None

    @property
    def mqtt_address(self) -> str:
        addr = self.mqtt.mqttServerAddress
        if addr is None or addr.strip() == "":
            return f"unix:{self.prefix / 'data' / 'mosquitto.sock'}"
        return addr.strip()


def resolve_path(prefix: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else prefix / p


_SECTIONS = ("copilot", "acme", "njet", "mqtt", "log", "controller", "admin", "hooks",
             "notify", "store")


def unknown_keys(cfg: Config) -> list[str]:
    """Dotted names of keys the file had that we do not know (warned about, not fatal)."""
    out = [k for k in (cfg.model_extra or {}) if k not in ("prefix", "source")]
    for name in _SECTIONS:
        section = getattr(cfg, name)
        out.extend(f"{name}.{k}" for k in (section.model_extra or {}))
    for i, ca in enumerate(cfg.acme.fallback):
        out.extend(f"acme.fallback[{i}].{k}" for k in (ca.model_extra or {}))
    out.extend(f"acme.rateLimits.{k}" for k in (cfg.acme.rateLimits.model_extra or {}))
    for key, entry in cfg.certificates.items():
        out.extend(f"{_key_path(key)}.{k}" for k in (entry.model_extra or {}))
    if cfg.dns is not None:
        out.extend(f"dns.{k}" for k in (cfg.dns.model_extra or {}))
    return out


def _describe(err: dict[str, Any]) -> str:
    """One validation error: the key and what was expected, never the value given."""
    parts = [str(p) for p in err["loc"]]
    if parts[:2] == ["acme", "fallback"] and len(parts) > 2 and isinstance(err["loc"][2], int):
        parts = [f"acme.fallback[{parts[2]}]", *parts[3:]]  # acme.fallback[0].acmeCaDir
    if parts[:1] == ["certificates"] and len(parts) > 1:
        parts = [_key_path(parts[1]), *parts[2:]]
    return f"{'.'.join(parts)}: {err['msg']}"


def _certificate_tables(raw: object, source: str) -> dict[str, Any]:
    """[certificates]: a table of tables keyed by valid names, made canonical."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [certificates] must be a table, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, entry in raw.items():
        try:
            name = certificate_name(key)
        except ValueError as exc:
            raise ConfigError(f"{source}: {_key_path(key)}: not a host name: {exc}") from None
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{source}: {_key_path(key)} must be a table, got {type(entry).__name__}")
        if name in spelled:
            raise ConfigError(f"{source}: {_key_path(spelled[name])} and {_key_path(key)}"
                              " name the same certificate")
        spelled[name] = key
        out[name] = entry
    return out


def parse_config(data: dict[str, Any], *, prefix: Path, source: str = "<config>") -> Config:
    for name in _SECTIONS:
        if name in data and not isinstance(data[name], dict):
            raise ConfigError(
                f"{source}: [{name}] must be a table, got {type(data[name]).__name__}"
            )
    if "dns" in data and not isinstance(data["dns"], dict):
        raise ConfigError(f"{source}: [dns] must be a table, got {type(data['dns']).__name__}")
    if "certificates" in data:
        data = {**data, "certificates": _certificate_tables(data["certificates"], source)}
    try:
        cfg = Config.model_validate({**data, "prefix": prefix, "source": source})
    except ValidationError as exc:
        details = "; ".join(_describe(e) for e in exc.errors())  # type: ignore[arg-type]
        raise ConfigError(f"{source}: {details}") from None
    _check_dns_wanted(cfg, source)
    _check_fallback_cas(cfg, source)
    return cfg


def _check_fallback_cas(cfg: Config, source: str) -> None:
    """Every CA once: a [[acme.fallback]] directory URL that repeats [acme]'s or an earlier
    entry's is an error (failures are counted per directory URL)."""
    seen = {cfg.acme.acmeCaDir.strip(): "acme.acmeCaDir"}
    for i, ca in enumerate(cfg.acme.fallback):
        key = f"acme.fallback[{i}].acmeCaDir"
        if ca.acmeCaDir in seen:
            raise ConfigError(f"{source}: {key}: the same CA as {seen[ca.acmeCaDir]}")
        seen[ca.acmeCaDir] = key


_NEEDS_DNS = ('"dns" (dns-01) needs a [dns] section: a DNS provider, e.g. provider = "rfc2136"'
              ' with nameserver, tsigKeyName, tsigSecretFile (README: "dns-01 and wildcards")')


def _check_dns_wanted(cfg: Config, source: str) -> None:
    """challengeType "dns" ([acme]'s or a certificate's) without a [dns] section is an error."""
    if cfg.dns is not None:
        return
    wanting = ["acme.challengeType"] if cfg.acme.challengeType is ChallengeType.DNS else []
    wanting += [f"{_key_path(name)}.challengeType" for name, entry in cfg.certificates.items()
                if entry.challengeType is ChallengeType.DNS]
    if wanting:
        raise ConfigError(f"{source}: {', '.join(wanting)}: {_NEEDS_DNS}")


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
