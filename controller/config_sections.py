"""The models of the TOML's sections and the checks of their values: [copilot], [acme] (with
[[acme.fallback]] and [acme.rateLimits]), [njet], [mqtt], [log], [controller], [admin], [hooks],
[notify] and the [certificates."name"] tables.

Used by config.py, whose `Config` holds one of each (and dnsconfig.py's [dns], whose durations
are parse_duration's too). A check's error says what is wrong and never echoes the value (it
may be a token or an EAB key, a URL may carry a token). Durations ("90s", "1h", "7d" or
seconds: Duration) have documented minimums (MIN_INTERVAL, MIN_PROBE_TIMEOUT,
MIN_ADMIN_TIMEOUT, MIN_HOOK_TIMEOUT; a zero interval would spin the loop), refused at load like
a wrong type. `[certificates."name"]` tables (CertificateSettings) set keyType, profile,
profileRequired, reuseKey and challengeType per certificate; their keys are host names
(certificate_name). `keyType` (there and in [acme]) is one key type or a list of exactly two,
one RSA and one ECDSA (a dual certificate: model.KeyTypes, _key_types). `[hooks]` commands are
argv lists (no shell) and `[notify] webhook` an http(s) URL; adapters/hooks/ runs them.
`[[acme.fallback]]` entries (FallbackCa) list further CAs, each with its URL, EAB pair and email
checked. `[acme.rateLimits]` (RateLimitsSection) sets the rate-limit budgets (integers ≥ 1;
unset: Let's Encrypt's limits for its directories, none for other CAs:
policies/ratelimits.limits_for).
"""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from controller.desired import canonical_name, name_problem
from controller.model import ChallengeType, KeyType, KeyTypes
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


_EMAIL_RE = re.compile(r"^[^\s/\\@]+@[^\s/\\@]+$")


def _ca_dir_url(value: object) -> object:
    """A CA's directory URL: http(s) with a host (checked without echoing the value)."""
    if not isinstance(value, str):
        raise ValueError("must be a string: the CA's ACME directory URL")
    url = value.strip()
    bad = ValueError("must be an https:// (or http://) URL with a host")
    if not url or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise bad
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise bad from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise bad
    return url


def _fallback_list(value: object) -> object:
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of tables: write each CA as its own [[acme.fallback]]")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict | FallbackCa):
            raise ValueError(f"entry [{i}] is not a table: write each CA as its own"
                             " [[acme.fallback]]")
    return value


class FallbackCa(_Section):
    """One `[[acme.fallback]]` entry: a CA tried after [acme]'s (adapters/acme/multi.py). Only
    the keys of [acme] that describe a CA; `email` unset = [acme] email. Each CA has its own
    account (`.lego/accounts/<ca host_port>/<email>/`)."""

    acmeCaDir: Annotated[str, BeforeValidator(_ca_dir_url)]
    caBundle: str = ""
    eabKid: Annotated[str, StringConstraints(strip_whitespace=True)] = ""
    eabHmacKey: Annotated[str, StringConstraints(strip_whitespace=True)] = ""
    profile: Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)] = ""
    email: Annotated[str, StringConstraints(strip_whitespace=True)] | None = None

    @model_validator(mode="after")
    def _check(self) -> FallbackCa:
        if bool(self.eabKid) != bool(self.eabHmacKey):
            raise ValueError("eabKid and eabHmacKey must be set together")
        if self.eabHmacKey:
            padded = self.eabHmacKey + "=" * (-len(self.eabHmacKey) % 4)
            try:
                decoded = base64.b64decode(padded, altchars=b"-_", validate=True)
            except ValueError:
                decoded = b""
            if not decoded:
                raise ValueError("eabHmacKey is not base64url")
        email = self.email
        if email and (not _EMAIL_RE.match(email) or email.startswith(".") or len(email) > 254):
            raise ValueError("email is not a valid email address")
        return self


_BUDGET = Field(default=None, ge=1, le=10**9, strict=True)


class RateLimitsSection(_Section):
    """`[acme.rateLimits]`: the CA's rate limits the plan keeps to (policies/ratelimits.py).
    Unset = Let's Encrypt's published limit for its directory URLs, no limit for another CA."""

    newOrdersPer3h: int | None = _BUDGET
    certificatesPerDomainPerWeek: int | None = _BUDGET
    duplicatesPerWeek: int | None = _BUDGET
    failedValidationsPerHostPerHour: int | None = _BUDGET


_KEY_TYPES = "rsa2048, rsa4096, ec256 or ec384"


def _key_types(value: object) -> object:
    """`keyType`: one key type, or a list of exactly two of different families (one RSA, one
    ECDSA: a dual certificate, the first one's file `<name>.crt`). Errors never echo a value
    that is no key type."""
    if value is None or isinstance(value, KeyType):
        return value
    if isinstance(value, str):
        try:
            return KeyType(value)
        except ValueError:
            raise ValueError(f"expected {_KEY_TYPES}") from None
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected {_KEY_TYPES}, or a list of two (one RSA, one ECDSA)")
    if len(value) != 2:
        raise ValueError('a list of key types names exactly two, one RSA and one ECDSA'
                         ' (a dual certificate), e.g. ["rsa2048", "ec256"]')
    try:
        first, second = (KeyType(v) for v in value)
    except (ValueError, TypeError):
        raise ValueError(f"each key type of the list is one of {_KEY_TYPES}") from None
    if first.is_ecdsa == second.is_ecdsa:
        family = "ECDSA" if first.is_ecdsa else "RSA"
        raise ValueError(f"a dual certificate needs one RSA and one ECDSA key type, not two"
                         f" {family} ones ({first}, {second})")
    return (first, second)


KeyTypeSetting = Annotated[KeyTypes | None, BeforeValidator(_key_types)]


class AcmeSection(_Section):
    email: str = ""
    challengeType: ChallengeType = ChallengeType.HTTP
    acmeCaDir: str = "https://acme-v02.api.letsencrypt.org/directory"
    tlsChallengeServerAddress: str = ":443"
    httpChallengeServerAddress: str = ":80"
    proxyHttpChallengeServerIp: str = ""
    renewBeforeDays: float = Field(default=30, ge=0, le=36500)
    keyType: KeyTypeSetting = None
    caBundle: str = ""
    eabKid: str = ""
    eabHmacKey: str = ""
    profile: str = ""
    httpValidationPort: int = Field(default=80, ge=1, le=65535)
    # a profile the CA does not offer: false = a warning and the CA's default profile, true = a
    # ConfigError (nothing is ordered)
    profileRequired: bool = False
    # a renewal keeps the stored key (e.g. for DANE TLSA 3 1 1 pins); a key type change always
    # makes a new one
    reuseKey: bool = False
    # ask the CA's renewal information (ARI, RFC 9773) when its directory offers it, and renew
    # inside the window it suggests; false = the lifetime rule only
    ari: bool = Field(default=True, strict=True)
    # [[acme.fallback]]: CAs tried in order after this one keeps failing for a certificate:
    # at its fallbackAfter-th consecutive failure, at once when its directory is unreachable
    fallback: Annotated[tuple[FallbackCa, ...], BeforeValidator(_fallback_list)] = ()
    fallbackAfter: int = Field(default=2, ge=1, le=100, strict=True)
    # the rate-limit budget of acmeCaDir's CA (unset keys: Let's Encrypt's limits for its
    # directories, none for other CAs)
    rateLimits: RateLimitsSection = RateLimitsSection()


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


MIN_HOOK_TIMEOUT = timedelta(seconds=1)  # [hooks] timeout, [notify] timeout
_MAX_ARGV = 256  # items of one hook command
_MAX_ARG = 4096  # characters of one item


def _argv(value: object) -> object:
    """A hook command: a list of strings, the program and its arguments (no shell).
    An empty list is no hook. Errors say what is wrong, never the value."""
    if isinstance(value, str):
        raise ValueError('must be a list of strings, the program and its arguments (no shell),'
                         ' e.g. ["/usr/local/bin/reload-service", "--quiet"]')
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ValueError("must be a list of strings, the program and its arguments")
    if not value:
        return None
    if len(value) > _MAX_ARGV:
        raise ValueError(f"must have at most {_MAX_ARGV} items")
    if not all(isinstance(a, str) for a in value):
        raise ValueError("every item must be a string")
    if not value[0].strip():
        raise ValueError("the program (the first item) is empty")
    if any("\x00" in a or len(a) > _MAX_ARG for a in value):
        raise ValueError(f"an item holds a NUL character or is longer than {_MAX_ARG}")
    return tuple(value)


HookCommand = Annotated[tuple[str, ...] | None, BeforeValidator(_argv)]


class HooksSection(_Section):
    """`[hooks]`: commands run after a certificate event (adapters/hooks/runner.py)."""

    onIssued: HookCommand = None
    onRenewed: HookCommand = None
    onFailed: HookCommand = None
    onDeleted: HookCommand = None
    timeout: Annotated[Duration, _at_least(MIN_HOOK_TIMEOUT, "1s")] = timedelta(seconds=30)


def _webhook_url(value: object) -> object:
    """`[notify] webhook`: "" (none) or an http(s) URL with a host; never echoed back."""
    if not isinstance(value, str):
        raise ValueError("must be a string: an http:// or https:// URL")
    url = value.strip()
    if not url:
        return ""
    bad = ValueError("must be an http:// or https:// URL with a host")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise bad
    try:
        parts = urlsplit(url)
        _ = parts.port  # an out-of-range or non-numeric port raises ValueError
    except ValueError:
        raise bad from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise bad
    return url


class NotifySection(_Section):
    """`[notify]`: a webhook told about every certificate event (adapters/hooks/webhook.py)."""

    webhook: Annotated[str, BeforeValidator(_webhook_url)] = ""
    template: Literal["json", "slack", "dingtalk", "wecom"] = "json"
    retries: int = Field(default=3, ge=0, le=10, strict=True)
    timeout: Annotated[Duration, _at_least(MIN_HOOK_TIMEOUT, "1s")] = timedelta(seconds=10)
    secretFile: str = ""  # HMAC-SHA256 key for X-NJCM-Signature; "" = unsigned


class CertificateSettings(_Section):
    """`[certificates."name"]`: settings of the certificate whose first server_name is `name`
    (unset = the [acme] value; desired_source.py applies them to the desired specs)."""

    keyType: KeyTypeSetting = None
    profile: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                              max_length=255)] | None = None
    challengeType: ChallengeType | None = None  # "dns" only with a [dns] section
    profileRequired: bool | None = None
    reuseKey: bool | None = None


def certificate_name(key: str) -> str:
    """A [certificates] key as the name it configures: lowercased, one trailing dot removed;
    the wildcard spellings `*.x.test` and `.x.test` are kept as names (wildcards come with
    dns-01). ValueError says what is wrong with a name that is none."""
    name = canonical_name(key)
    base = name[2:] if name.startswith("*.") else name[1:] if name.startswith(".") else name
    problem = name_problem(base)
    if problem is not None:
        raise ValueError(problem)
    return name
