"""Writes docs/config-reference.md from the pydantic models of controller/config.py (Config and
the section models it holds: config_sections.py, dnsconfig.py).

    .venv/bin/python hack/gen-config-docs.py           # rewrite docs/config-reference.md
    .venv/bin/python hack/gen-config-docs.py --check   # exit 1 if the committed file is stale

Every section, key, type, default and constraint comes from the models (walked recursively from
`Config`: a model field is a `[table]`, a dict of models a `[table."<name>"]`); only the prose is
kept here, in SECTIONS and KEYS. A key the models have and KEYS lacks is listed with an empty
meaning and named on stderr; add a line for it here and rerun. tests/unit/test_docs.py fails
when the committed file differs from what this prints.
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "config-reference.md"
COMMAND = ".venv/bin/python hack/gen-config-docs.py"
sys.path.insert(0, str(ROOT))

from controller.config import Config  # noqa: E402

# Filled by load_config, not read from the file.
NOT_KEYS = {"prefix", "source"}

SECTIONS: dict[str, str] = {
    "copilot": "Read by NJet's copilot helper (`njt_helper_go_copilot_module.so`), which launches"
               " the controller as `progName -p <prefix>/ -c <toml>` with an empty environment."
               " The controller itself ignores this section.",
    "acme": "The ACME CA, the account and the challenge servers; the defaults of every"
            " certificate (a `[certificates.\"name\"]` table overrides some per certificate).",
    "acme.fallback[]": "`[[acme.fallback]]`: a CA tried after `[acme]`'s, in the order listed,"
                       " when `[acme]`'s keeps failing for a certificate (connection errors,"
                       " 5xx, rate limits; never after a refusal of the name): at its"
                       " `fallbackAfter`-th consecutive failure, and in the same pass when its"
                       " directory cannot be reached at all. The next renewal tries `[acme]`'s"
                       " CA first again. Each CA has its own account"
                       " (`.lego/accounts/<ca host_port>/<email>/`); errors name an entry"
                       " `acme.fallback[0]` (counted from 0).",
    "acme.rateLimits": "The rate-limit budget of `[acme]`'s CA, counted in"
                       " `.lego/ledger/<ca host_port>.json`: an order that would exceed one"
                       " waits (`diff`: `wait ... [RateLimitBudget]`, naming the limit and until"
                       " when), renewals before first issuances. An unset key is Let's Encrypt's"
                       " published limit for its production and staging directories, and no"
                       " limit for any other CA.",
    "njet": "Where desired state comes from (njet.conf) and where certificates are applied"
            " (NJet's control API).",
    "mqtt": "NJet's MQTT broker, whose events (`generateCertificate`, `deleteCertificate`, the"
            " retained `/ins/srv/*` records) wake the loop.",
    "log": "Logging to stdout (which NJet sends to `[copilot] stdoutFile`).",
    "controller": "The reconcile loop, deletion, the deletion guard and forced renewals.",
    "admin": "The admin HTTP API (`/api/v1/...`, `/healthz`, `/metrics`, the status page).",
    "certificates.*": "`[certificates.\"<first server_name>\"]`: the settings of one"
                      " certificate, named by the first server_name of its block (compared"
                      " lowercased, a trailing dot ignored; `*.x.test` and `.x.test` are"
                      " accepted). Every key is optional and falls back to `[acme]`'s. A table"
                      " that names no desired certificate is a `warning:` line in `diff`.",
    "hooks": "Commands run after a certificate event, each as an argv list (no shell), with"
             " `NJCM_EVENT`, `NJCM_DOMAIN`, `NJCM_NAMES`, `NJCM_CERT_PATH`, `NJCM_KEY_PATH`,"
             " `NJCM_SERIAL`, `NJCM_NOT_AFTER`, `NJCM_ERROR` and `PATH=/usr/local/sbin:"
             "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` as their whole environment (never"
             " key material), stdin from /dev/null and the prefix as working directory. A"
             " failing hook is logged and counted (`njcm_hook_runs_total`), never blocks a"
             " reconcile.",
    "dns": "The DNS provider dns-01 writes its `_acme-challenge` TXT records through (needed for"
           " wildcard names). Absent = no dns-01: wildcard names stay `warning:` lines."
           " `provider` is `\"rfc2136\"` (dynamic update, with TSIG), `\"exec\"` (your"
           " program) or a dns-lexicon provider name (`aliyun`, `dnspod`, `cloudflare`, ...)."
           " Errors name the key, never its value.",
    "notify": "A webhook told about every certificate event (issued, renewed, failed,"
              " deleted). Only `scheme://host[:port]` of the URL is ever logged.",
    "store": "Where the certificate set lives: the `.lego/` files of one node (the default), or"
             " a PostgreSQL database several NJet nodes share (fleet mode, README \"Fleet"
             " mode\").",
}

KEYS: dict[str, str] = {
    "copilot.progName": "the program NJet starts: use an absolute path (NJet starts it with an"
                        " empty environment; a relative one is taken from NJet's prefix)",
    "copilot.copilotType": '`"cert"` for a cert-manager',
    "copilot.stdoutFile": "where NJet sends the program's stdout and stderr (truncated at each"
                          " launch)",
    "copilot.stderrFile": "read by NJet's helper; NJet sends stderr to `stdoutFile` too",
    "acme.email": "ACME account contact; the account is kept in"
                  " `.lego/accounts/<ca host>/<email>/` (lego's layout)",
    "acme.challengeType": '`"http"` (http-01), `"tls"` (tls-alpn-01) or `"dns"` (dns-01, needs'
                          " a `[dns]` section; the only one for wildcard names)",
    "acme.acmeCaDir": "the ACME directory URL (default: Let's Encrypt production)",
    "acme.tlsChallengeServerAddress": "where our tls-alpn-01 server listens while a validation"
                                      ' runs (e.g. `":10443"` behind NJet\'s stream'
                                      " `ssl_preread` route)",
    "acme.httpChallengeServerAddress": "where our http-01 server listens while a validation"
                                       " runs",
    "acme.proxyHttpChallengeServerIp": "set = http-01 through NJet: the listen IP of NJet's"
                                       " port-80 server for the name, to which the controller"
                                       " adds a `^~ /.well-known/acme-challenge/` location",
    "acme.renewBeforeDays": "upper bound of the renewal window: renew when less than"
                            " `min(renewBeforeDays, 1/3 of the lifetime)` is left (1/2 for"
                            " lifetimes under 10 days)",
    "acme.keyType": "the key type of new keys; unset = the bootstrap certificate's type in"
                    " njet.conf, else `rsa2048`; a list of two, one RSA and one ECDSA: every"
                    " block gets both (README: Dual certificates)",
    "acme.caBundle": "a PEM file trusted for the CA's HTTPS (e.g. Pebble's test CA); relative"
                     " to the prefix",
    "acme.eabKid": "external account binding: the key id the CA gave",
    "acme.eabHmacKey": "external account binding: the base64url HMAC key the CA gave",
    "acme.profile": "the ACME profile to request (the CA must advertise it)",
    "acme.profileRequired": "a `profile` the CA does not offer: `false` = a warning and the CA's"
                            " default profile, `true` = an error (nothing is ordered)",
    "acme.reuseKey": "a renewal keeps the stored key (e.g. for DANE TLSA 3 1 1 pins); a key"
                     " type change always makes a new one",
    "acme.ari": "ask the CA's renewal information (ARI, RFC 9773) when its directory offers"
                " `renewalInfo`, and renew at a time chosen inside the window it suggests (the"
                " emergency rule still wins); `false` = the lifetime rule only",
    "acme.httpValidationPort": "the port the CA connects to for http-01 (where NJet's port-80"
                               " server listens, with `proxyHttpChallengeServerIp`)",
    "acme.fallbackAfter": "consecutive failed orders of a certificate at a CA (connection"
                          " errors, 5xx, rate limits) after which the next `[[acme.fallback]]`"
                          " CA is tried, in the same pass; an unreachable directory falls back"
                          " at once",
    "acme.rateLimits": "the rate-limit budget: the `[acme.rateLimits]` table below",
    "acme.rateLimits.newOrdersPer3h": "new orders per account within any 3 hours (Let's"
                                      " Encrypt: 300)",
    "acme.rateLimits.certificatesPerDomainPerWeek": "certificates per registered domain (public"
                                                    " suffix list) within any 7 days, whichever"
                                                    " account asked (Let's Encrypt: 50)",
    "acme.rateLimits.duplicatesPerWeek": "certificates for the exact same name set within any 7"
                                         " days (Let's Encrypt: 5)",
    "acme.rateLimits.failedValidationsPerHostPerHour": "failed validations per host name and"
                                                       " account within any hour (Let's"
                                                       " Encrypt: 5)",
    "acme.fallback": "more CAs, each a `[[acme.fallback]]` table (below), tried in order after"
                     " this one",
    "acme.fallback[].acmeCaDir": "the CA's ACME directory URL (required; each CA once)",
    "acme.fallback[].caBundle": "a PEM file trusted for this CA's HTTPS; relative to the prefix",
    "acme.fallback[].eabKid": "external account binding at this CA: the key id",
    "acme.fallback[].eabHmacKey": "external account binding at this CA: the base64url HMAC key",
    "acme.fallback[].profile": "the ACME profile to request from this CA (a certificate's own"
                               " profile wins)",
    "acme.fallback[].email": "the account contact at this CA; unset = `[acme] email`",
    "njet.confPath": "the njet.conf to read desired state from (relative to the prefix)",
    "njet.apiAddress": 'NJet\'s control API; `""` = store-only mode (issue and renew into the'
                       " store, never apply or probe)",
    "njet.maxConfBytes": "cap on njet.conf plus every include, counted per expansion (a file"
                         " included twice counts twice); at most 100,000 included files in all",
    "mqtt.mqttServerAddress": "`host:port` or `unix:<path>`; unset = NJet's embedded broker on"
                              " `unix:<prefix>/data/mosquitto.sock`",
    "log.v": "verbosity: `0` info, `2` adds debug lines, `-1` keeps warnings and errors only",
    "log.format": '`"text"` (`TS LEVEL msg key=value ...`) or `"json"` (one object per line)',
    "controller.interval": "periodic reconcile and TLS re-probe (events wake the loop sooner)",
    "controller.deleteGracePeriod": "how long a certificate whose name left desired state is"
                                    " kept before it is moved to quarantine",
    "controller.maxDeleteShare": "the deletion guard: a pass that would delete more than this"
                                 " share of the stored certificates we manage, or all of"
                                 " them, deletes nothing until `gc confirm`",
    "controller.quarantineRetention": "how long deleted pairs stay in `.lego/quarantine/`"
                                      ' before a pass removes them (`"0s"`: at the next pass)',
    "controller.revokeOnDelete": "revoke at the CA when deleting",
    "controller.concurrency": "ACME orders in flight at once",
    "controller.probeTimeout": "timeout of NJet API calls and of the TLS probe",
    "controller.forceRenewPerHour": "forced renewals per certificate within any hour (`0`"
                                    " refuses them all)",
    "controller.forceRenewMinAge": "a forced renewal of a younger certificate is refused unless"
                                   " forced (`?force=true`, `--force`)",
    "admin.address": "the admin HTTP API's `host:port`",
    "admin.token": "bearer token required (`Authorization: Bearer ...`) on every route but"
                   " `/healthz` when set; without one, a non-loopback bind is read-only",
    "admin.headerTimeout": "a connection must send a complete request header this soon after"
                           " it opens (or after a later request's first byte), else it is"
                           " closed",
    "admin.idleTimeout": "a connection with no request in progress is closed after this long",
    "admin.maxConnections": "admin connections open at once; one more is answered `503` and"
                            " closed",
    "certificates.*.keyType": "this certificate's key type, over `[acme] keyType` and the"
                              " bootstrap certificate's type; a list of two, one RSA and one"
                              " ECDSA: a dual certificate (`<name>.crt` and"
                              " `<name>@ecc.crt` or `<name>@rsa.crt`)",
    "certificates.*.profile": "the ACME profile for this certificate, over `[acme] profile`;"
                              " changing it resets the certificate's backoff",
    "certificates.*.profileRequired": "over `[acme] profileRequired`",
    "certificates.*.reuseKey": "over `[acme] reuseKey`",
    "certificates.*.challengeType": '`"http"`, `"tls"` or `"dns"` (with a `[dns]` section),'
                                    " over `[acme] challengeType`",
    "hooks.onIssued": "run after a first certificate for a name is stored",
    "hooks.onRenewed": "run after a certificate is renewed",
    "hooks.onFailed": "run after an issue, renewal or apply failed (`NJCM_ERROR` says why)",
    "hooks.onDeleted": "run after a certificate is moved to quarantine",
    "hooks.timeout": "a hook still running after this long is killed with its process group",
    "dns.provider": '`"rfc2136"`, `"exec"` or a dns-lexicon provider name (required)',
    "dns.zone": "the zone apex the records go into; `\"\"` = found from the SOA of each name",
    "dns.ttl": "TTL of the TXT records, in seconds",
    "dns.resolvers": "`host:port` IP addresses where names are looked up and, by default,"
                     " where propagation is checked; `[]` = the nameservers of /etc/resolv.conf",
    "dns.propagationCheck": '`"auto"`: on the resolvers when set, else on every authoritative'
                            ' server (NS) of the zone; `"resolvers"`; `"authoritative"`: every'
                            " NS of the zone, found through the resolvers when set",
    "dns.propagationTimeout": "how long to wait for the TXT record to be visible before the CA"
                              " is asked to validate",
    "dns.nameserver": '`"rfc2136"`: the `host:port` where the updates go (required for it)',
    "dns.tsigKeyName": '`"rfc2136"`: the TSIG key name (with `tsigSecretFile`, or neither)',
    "dns.tsigAlgorithm": '`"rfc2136"`: the TSIG algorithm',
    "dns.tsigSecretFile": '`"rfc2136"`: a file holding the base64 TSIG secret (mode 0600;'
                          " relative to the prefix)",
    "dns.credentialsFile": "a dns-lexicon provider: a TOML or JSON file with its credentials"
                           " (mode 0600; relative to the prefix; required for it)",
    "dns.command": '`"exec"`: the program and its arguments (no shell), run to present and'
                   " clean up each record (required for it)",
    "dns.timeout": '`"exec"`: a run still going after this long is killed with its process'
                   " group",
    "notify.webhook": '`""` (none) or the `http://` / `https://` URL events are posted to'
                      " (redirects are not followed)",
    "notify.template": 'the body: `"json"` (the event), or the text message bodies of'
                       ' `"slack"`, `"dingtalk"` and `"wecom"`',
    "notify.retries": "retries after the first post, with exponential backoff, on a network"
                      " error, a timeout, a 5xx, 408 or 429",
    "notify.timeout": "timeout of one post",
    "notify.secretFile": "a file holding the HMAC-SHA256 key: every post then carries"
                         " `X-NJCM-Signature: sha256=<hex>` and `X-NJCM-Timestamp`; `\"\"` ="
                         " unsigned (relative to the prefix)",
    "store.backend": "`\"file\"` (the `.lego/` store) or `\"postgres\"` (fleet mode)",
    "store.dsn": "the libpq connection string of the fleet database (`host=... dbname=...` or"
                 " a `postgresql://` URL; sslmode and the other libpq keys apply)",
    "store.dsnFile": "a file holding the DSN, relative to the prefix (NJet starts copilots"
                     " with an empty environment: keep a password here)",
    "store.dsnEnv": "the name of an environment variable holding the DSN",
    "store.nodeName": "this node's name in the fleet; unset: `<host name>:<prefix>`",
    "store.encryptionKeyFile": "32 bytes (raw, hex or base64) sealing private keys in the"
                               " database with AES-256-GCM; unset: keys stored in clear (a"
                               " warning in the log and in `diff`)",
    "store.leaseDuration": "how long a node's claim to order one certificate lasts without"
                           " renewal (renewed every third of it while the order runs)",
    "store.nodeTimeout": "a node counts as live while its last heartbeat (every quarter of"
                         " this) is younger",
}


def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    """(the type, the metadata of any Annotated wrapping it)."""
    meta: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        meta.extend(tp.__metadata__)
        tp = _args(tp)[0]
    return tp, meta


def _model(tp: Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def type_name(tp: Any) -> str:
    tp, _ = _strip_annotated(tp)
    if _is_union(tp):
        parts = [type_name(a) for a in _args(tp) if a is not type(None)]
        return " or ".join(parts) + (" (or unset)" if type(None) in _args(tp) else "")
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in _args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(f"`{json.dumps(m.value)}`" for m in tp)
    origin = typing.get_origin(tp)
    if origin is tuple and Ellipsis not in _args(tp) and len(set(_args(tp))) == 1:
        return f"list of {len(_args(tp))} ({type_name(_args(tp)[0])} each)"
    if origin in (list, tuple):
        items = [a for a in _args(tp) if a is not Ellipsis]
        return "list of " + (type_name(items[0]) + "s" if items else "values")
    if origin is dict:
        return "table of " + type_name(_args(tp)[1])
    simple = {bool: "boolean", int: "integer", float: "number", str: "string",
              timedelta: "duration", Path: "path"}
    if tp in simple:
        return simple[tp]
    if _model(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == 0:
        return "0s"
    return f"{round(seconds * 1000)}ms"


def toml_value(value: Any) -> str:
    if value is REQUIRED:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return toml_value(value.value)
    if isinstance(value, timedelta):
        return json.dumps(_duration(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value)
    return str(value)


def _bound_text(shown: str) -> str:
    """config_sections.py's `_at_least(..., "10s")` -> `≥ "10s"`; "at least X" -> `≥ X`; other texts
    ('from "1s" to "1h"') as they are."""
    if re.fullmatch(r"[\d.]+\s*[a-z]*", shown):
        return f'≥ "{shown}"'
    if shown.startswith("at least "):
        return "≥ " + shown.removeprefix("at least ")
    return shown


def _closure_minimum(func: Any) -> str | None:
    """The bound a check in config_sections.py or dnsconfig.py shows (the string in its closure)."""
    for cell in getattr(func, "__closure__", None) or ():
        if isinstance(cell.cell_contents, str):
            return cell.cell_contents
    return None


def constraints(field: FieldInfo) -> str:
    meta = list(field.metadata)
    tp = field.annotation
    for arg in (_args(tp) if _is_union(tp) else (tp,)):
        meta.extend(_strip_annotated(arg)[1])
    out: list[str] = []
    for m in meta:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(m, attr, None)
            if isinstance(m, annotated_types.BaseMetadata | annotated_types.GroupedMetadata) \
                    and bound is not None:
                out.append(f"{sign} {bound}")
        for attr, what in (("min_length", "at least"), ("max_length", "at most")):
            n = getattr(m, attr, None)
            if n is not None:
                out.append(f"{what} {n} character{'' if n == 1 else 's'}")
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            out.append(f"matches `{pattern}`")
        func = getattr(m, "func", None)
        if type(m).__name__ == "AfterValidator" and func is not None:
            shown = _closure_minimum(func)
            if shown is not None:
                out.append(_bound_text(shown))
    return ", ".join(dict.fromkeys(out))


REQUIRED = object()


def default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return REQUIRED if field.default is PydanticUndefined else field.default


class Walk:
    def __init__(self) -> None:
        self.sections: list[tuple[str, str, list[tuple[str, str, str, str, str]]]] = []
        self.missing: list[str] = []
        self.seen: set[str] = set()

    def model(self, model: type[BaseModel], path: str, heading: str) -> None:
        rows: list[tuple[str, str, str, str, str]] = []
        nested: list[tuple[type[BaseModel], str, str]] = []
        for name, field in model.model_fields.items():
            if not path and name in NOT_KEYS:
                continue
            key = name if not path else f"{path}.{name}"
            tp, _ = _strip_annotated(field.annotation)
            if _is_union(tp):  # `Section | None`: an optional table
                models = [a for a in _args(tp) if _model(a)]
                if len(models) == 1 and all(a is type(None) or _model(a) for a in _args(tp)):
                    tp = models[0]
            sub = _model(tp)
            if typing.get_origin(tp) is dict and _model(_args(tp)[1]):
                nested.append((_args(tp)[1], f"{key}.*", f'[{key}."<name>"]'))
                continue
            if typing.get_origin(tp) in (list, tuple) and _args(tp) and _model(_args(tp)[0]):
                nested.append((_args(tp)[0], f"{key}[]", f"[[{key}]]"))
                if path:  # a row in its table too, pointing at the [[key]] section
                    self.seen.add(key)
                    rows.append((f"`{name}`", type_name(field.annotation),
                                 toml_value(default_of(field)), "", KEYS.get(key, "")))
                continue
            if sub is not None:
                nested.append((sub, key, f"[{key}]"))
                if path:  # a row in its table too, pointing at the [key] section
                    self.seen.add(key)
                    rows.append((f"`{name}`", "table", "", "", KEYS.get(key, "")))
                continue
            self.seen.add(key)
            meaning = KEYS.get(key) or field.description or ""
            if not meaning:
                self.missing.append(key)
            rows.append((f"`{name}`", type_name(field.annotation),
                         toml_value(default_of(field)), constraints(field), meaning))
        if path:
            self.sections.append((heading, SECTIONS.get(path, ""), rows))
            if path not in SECTIONS:
                self.missing.append(f"[{path}]")
        for sub, key, head in nested:
            self.model(sub, key, head)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> tuple[str, list[str]]:
    """The reference's Markdown, and the keys and sections that have no text in this file."""
    walk = Walk()
    walk.model(Config, "", "")
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the models in `controller/config.py` by `{COMMAND}`; do not edit by"
        " hand (`tests/unit/test_docs.py` fails when this file is stale).",
        "",
        "The TOML is NJet's cert-manager's (`-c`, default `conf/cert-manager.toml`, relative to"
        " the prefix `-p`). Every key is optional. Durations are written `\"100ms\"`,"
        " `\"90s\"`, `\"15m\"`, `\"1h\"`, `\"7d\"`, `\"2w\"` or as seconds (`3600`). Relative"
        " paths resolve against the prefix. An unknown key is a warning naming it; a wrong type"
        " or a value out of bounds is an error naming the file and the key (never the value)."
        " `njet-cert-manager schema` prints the same models as a JSON schema.",
        "",
    ]
    for heading, text, rows in walk.sections:
        lines += [f"## `{heading}`", ""]
        if text:
            lines += [text, ""]
        if not rows:
            continue
        lines += ["| key | type | default | bounds | meaning |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
        lines.append("")
    stale = [k for k in KEYS if k not in walk.seen]
    return "\n".join(lines), walk.missing + [f"{k} (no such key any more)" for k in stale]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/config-reference.md differs from the models")
    args = parser.parse_args(argv)
    text, missing = render()
    for key in missing:
        print(f"gen-config-docs: no text for {key}: add it to KEYS/SECTIONS in"
              f" hack/gen-config-docs.py", file=sys.stderr)
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
