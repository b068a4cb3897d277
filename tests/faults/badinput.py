"""Hypothesis strategies and oracles for tests/faults/test_bad_input.py: njet.conf and TOML.

Each family mixes three sources: token soup built from the format's own vocabulary (so the
parsers get past their first byte), random mutations of a recorded valid input (the contract's
njet.conf, a complete cert-manager.toml) and plain random data.
`assert_*` helpers are the oracles: they say what a clean refusal looks like.
Used only by the fault tests; MQTT lives in tests/faults/badmqtt.py, the admin API in
tests/faults/admin_target.py.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from hypothesis import strategies as st

from controller.desired import canonical_name
from controller.njetconf import ConfSyntaxError

# The contract's njet.conf (shared/njet-contract/njet.conf), copied so the test needs no file.
CONTRACT_CONF = """\
worker_processes 1;
pid logs/njet.pid;
error_log logs/contract-error.log info;
helper ctrl   modules/njt_helper_ctrl_module.so   conf/contract/njet_ctrl.conf;
helper broker modules/njt_helper_broker_module.so;
load_module modules/njt_dyn_ssl_module.so;
events { worker_connections 1024; }
http {
    dyn_kv_conf conf/iot-work.conf;
    access_log off;
    # (a) managed TLS server, two names
    server {
        listen 127.0.0.1:8443 ssl;
        server_name a.test www.a.test;
        ssl_certificate     /usr/local/njet/certs/contract/boot-a.crt;
        ssl_certificate_key /usr/local/njet/certs/contract/boot-a.key;
        ssl_certificate_management acme;
        location / { return 200 "a.test TLS server\\n"; }
    }
    server {
        listen 8444 ssl;
        server_name b.test;
        ssl_certificate_management acme;
        location / { return 200 'b.test TLS server\\n'; }
    }
    server {
        listen [::1]:8445 ssl;
        server_name v6.test;
        ssl_certificate_management acme;
    }
    server {
        listen 127.0.0.1:8443 ssl;
        server_name c.test;
        location / { return 200 "c.test TLS server (unmanaged)\\n"; }
    }
    server { listen 127.0.0.1:8080; server_name a.test; }
    include inc/ok.conf;
}
stream {
    map $ssl_preread_alpn_protocols $acme_alpn_upstream {
        "~(^|,)acme-tls/1(,|$)"  127.0.0.1:10443;
        default                  127.0.0.1:8443;
    }
    server { listen 127.0.0.1:9443; ssl_preread on; proxy_pass $acme_alpn_upstream; }
}
"""

# Files next to the main conf: targets for `include` (valid, broken, a loop, not UTF-8, a dir).
INCLUDE_FILES: dict[str, bytes] = {
    "inc/ok.conf": b"server { listen 9443 ssl; server_name inc.test; "
    b"ssl_certificate_management acme; }\n",
    "inc/broken.conf": b"server { listen 9444 ssl\n server_name broken.test;\n",
    "inc/loop.conf": b"include inc/loop.conf;\n",
    "inc/latin1.conf": b"server { server_name caf\xe9.test; listen 9445 ssl; }\n",
}
INCLUDE_DIRS = ("inc/zdir.conf",)  # a directory a glob matches: reading it must be refused

_INCLUDE_PATHS = [
    "inc/ok.conf", "inc/broken.conf", "inc/loop.conf", "inc/latin1.conf", "inc/*.conf",
    "inc/none-*.conf", "inc/[ol]*.conf", "inc/?k.conf", "missing.conf", "inc", "njet.conf",
    "*.conf", "/nonexistent/x.conf", "/nonexistent/*.conf", "inc/zdir.conf", "'inc/ok.conf'",
    '"inc/*.conf"', "",
]  # fmt: skip
_LISTENS = [
    "443", "8443 ssl", "127.0.0.1:8443 ssl", "[::1]:8445 ssl", "[::1", "[::1]x", "[zz]:1",
    "*:443 ssl", "localhost:99999", "localhost:443 ssl", "0.0.0.0:0", "unix:/tmp/x.sock",
    "example.com:443 ssl", "1.2.3.4:", ":443", "::1:443", "65536", "-1", "ssl",
    "127.0.0.1:8443 ssl http2 reuseport", "1.2.3.999:443",
]  # fmt: skip
_NAMES = [
    "a.test", "www.a.test", "A.TEST.", "*.a.test", ".a.test", "~^re$", "_", "$host", '""',
    "localhost", "1.2.3.4", "[::1]", "caf\u00e9.test", "-bad-.test", "a..test", "x" * 70 + ".test",
    "a.test;", "xn--caf-dma.test", "single",
]  # fmt: skip
_WORDS = [
    "http", "server", "listen", "server_name", "ssl_certificate", "ssl_certificate_key",
    "ssl_certificate_management", "acme", "off", "on", "ssl", "include", "location", "/",
    "return", "200", "stream", "events", "if", "map", "types", "upstream", "root", "$var",
    "${var}", "data:-----BEGIN", "ACME", "On",
]  # fmt: skip
_PUNCT = ["{", "}", ";", " ", "\n", "\t", '"', "'", "\\", "#", "\r", "\ufeff", "\x00", "${", "\\\n"]
_WORD_CHARS = st.characters(
    codec="utf-8", exclude_characters="/", exclude_categories=["Cs"]
)  # no "/": an `include` of random text then always stays inside the conf folder


def _directive(name: str, value: str) -> str:
    return f"{name} {value};"


_server_directive = st.one_of(
    st.builds(_directive, st.just("listen"), st.sampled_from(_LISTENS)),
    st.builds(_directive, st.just("listen"), st.text(_WORD_CHARS, min_size=1, max_size=12)),
    st.builds(lambda ns: "server_name " + " ".join(ns) + ";",
              st.lists(st.sampled_from(_NAMES), min_size=0, max_size=4)),
    st.builds(_directive, st.just("server_name"), st.text(_WORD_CHARS, min_size=1, max_size=12)),
    st.builds(_directive, st.just("ssl_certificate_management"),
              st.sampled_from(["acme", "off", "ACME", "on", "acme acme", ""])),
    st.builds(_directive, st.just("ssl"), st.sampled_from(["on", "off", "yes", ""])),
    st.builds(_directive, st.sampled_from(["ssl_certificate", "ssl_certificate_key"]),
              st.sampled_from(["a.crt", "/x/a.key", "data:abc", "$v.crt", "a b", ""])),
    st.builds(_directive, st.just("include"), st.sampled_from(_INCLUDE_PATHS)),
    st.builds(lambda body: "location / { " + body + " }",
              st.sampled_from(["return 200;", "", "{"])),
)


def _server_block(directives: list[str]) -> str:
    return "server { " + " ".join(directives) + " }"


# njet.conf shaped like NJet's: http { server { ... } } with random directives.
shaped_conf = st.builds(
    lambda head, servers, tail: "http { " + head + "\n" + "\n".join(servers) + "\n}" + tail,
    st.lists(_server_directive, max_size=2).map(" ".join),
    st.lists(st.lists(_server_directive, max_size=7).map(_server_block), max_size=4),
    st.sampled_from(["", "\n", "}", "{", "\nstream { server { listen 1; } }", "\ninclude x;"]),
)

_token = st.one_of(
    st.sampled_from(_WORDS),
    st.sampled_from(_PUNCT),
    st.sampled_from(_LISTENS),
    st.sampled_from(_NAMES),
    st.text(_WORD_CHARS, max_size=8),
    st.sampled_from(_INCLUDE_PATHS).map(lambda p: f"include {p};"),
)
token_soup = st.lists(
    st.tuples(_token, st.sampled_from(["", " ", "\n"])), max_size=50
).map(lambda parts: "".join(tok + sep for tok, sep in parts))


def _apply_text_mutations(base: str, ops: list[tuple[int, int, int, str]]) -> str:
    text = base
    for kind, pos, length, token in ops:
        i = pos % (len(text) + 1)
        if kind == 0:  # delete a slice
            text = text[:i] + text[i + length :]
        elif kind == 1:  # insert a token
            text = text[:i] + token + text[i:]
        elif kind == 2:  # duplicate a slice
            text = text[:i] + text[i : i + length] + text[i:]
        else:  # replace one character
            text = text[:i] + token[:1] + text[i + 1 :]
    return text


_text_op = st.tuples(
    st.integers(0, 3), st.integers(0, 10**6), st.integers(1, 40), _token
)
mutated_conf = st.lists(_text_op, min_size=1, max_size=6).map(
    lambda ops: _apply_text_mutations(CONTRACT_CONF, ops)
)

conf_text = st.one_of(token_soup, shaped_conf, mutated_conf)


def assert_located(exc: ConfSyntaxError, *, files: set[str], text: str, main: str) -> None:
    """A clean njet.conf refusal: `file:line: reason`, naming a conf file and a real line."""
    message = str(exc)
    assert exc.file in files, f"error names an unexpected file {exc.file!r}: {message}"
    assert exc.line >= 1, f"no line number: {message}"
    assert message.startswith(f"{exc.file}:{exc.line}: "), f"not file:line style: {message}"
    assert exc.reason.strip(), f"no reason given: {message}"
    if exc.file == main:
        assert exc.line <= text.count("\n") + 1, f"line {exc.line} beyond the text: {message}"


# --- TOML --------------------------------------------------------------------------------

KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "copilot": ("progName", "copilotType", "stdoutFile", "stderrFile"),
    "acme": ("email", "challengeType", "acmeCaDir", "tlsChallengeServerAddress",
             "httpChallengeServerAddress", "proxyHttpChallengeServerIp", "renewBeforeDays",
             "keyType", "caBundle", "eabKid", "eabHmacKey", "profile", "httpValidationPort",
             "profileRequired", "reuseKey", "fallback", "fallbackAfter", "rateLimits"),
    "njet": ("confPath", "apiAddress", "maxConfBytes"),
    "mqtt": ("mqttServerAddress",),
    "log": ("v", "format"),
    "controller": ("interval", "deleteGracePeriod", "revokeOnDelete", "concurrency",
                   "probeTimeout", "forceRenewPerHour", "forceRenewMinAge", "maxDeleteShare",
                   "quarantineRetention"),
    "admin": ("address", "token", "maxConnections", "headerTimeout", "idleTimeout"),
    "hooks": ("onIssued", "onRenewed", "onFailed", "onDeleted", "timeout"),
    "notify": ("webhook", "template", "retries", "timeout", "secretFile"),
    "dns": ("provider", "zone", "ttl", "resolvers", "propagationCheck", "propagationTimeout",
            "nameserver", "tsigKeyName", "tsigAlgorithm", "tsigSecretFile", "credentialsFile",
            "command", "timeout"),
}  # fmt: skip
_UNKNOWN_NAMES = ("extra", "Acme", "renew_before_days", "x.y", "", "prefix", "source", "ünï")

VALID_TOML = """\
[copilot]
progName = "njet-cert-manager"
copilotType = "cert"
[acme]
email = "admin@example.test"
challengeType = "http"
acmeCaDir = "https://127.0.0.1:14000/dir"
renewBeforeDays = 30
keyType = "ec256"
httpValidationPort = 80
[njet]
confPath = "conf/njet.conf"
apiAddress = ""
[mqtt]
mqttServerAddress = "127.0.0.1:1883"
[log]
v = 1
format = "json"
[controller]
interval = "1h"
deleteGracePeriod = "24h"
revokeOnDelete = false
concurrency = 8
probeTimeout = 5
[admin]
address = "127.0.0.1:2000"
token = "t"
[certificates."shop.example.test"]
keyType = "rsa2048"
challengeType = "tls"
profile = "classic"
"""

_toml_number = st.one_of(
    st.integers(), st.floats(), st.sampled_from([10**20, 2**63 - 1, 1e300, -1, 0, 1e15, 86400])
)
_toml_leaf = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["90s", "1h", "7d", "2w", "-5s", "1e400d", "99999999999999999999w",
                     "99999999d", "0", "1.5m", "ec256", "rsa2048", "RSA4096", "ed25519",
                     "http", "tls", "dns", "json", "text", "127.0.0.1:2000", ":0", "unix:/x",
                     "", " "]),
    _toml_number,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.sampled_from(list(tomllib.loads(  # what tomllib returns for date/time literals
        "a = 1979-05-27T07:32:00\nb = 1979-05-27T07:32:00Z\nc = 1979-05-27\nd = 07:32:00.9"
    ).values())),
)
toml_value = st.recursive(
    _toml_leaf,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=4,
)
_all_keys = sorted({k for keys in KNOWN_KEYS.values() for k in keys}) + list(_UNKNOWN_NAMES)


def _section(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """A table for section `name`: mostly its own keys, some of other sections, some unknown."""
    own = st.sampled_from(KNOWN_KEYS[name])
    return st.dictionaries(st.one_of(own, own, st.sampled_from(_all_keys)), toml_value,
                           max_size=5)


_any_section = st.dictionaries(st.sampled_from(_all_keys), toml_value, max_size=4)


def _table_value(name: str) -> st.SearchStrategy[Any]:
    if name in KNOWN_KEYS:
        return st.one_of(_section(name), _section(name), _section(name), toml_value)
    return st.one_of(_any_section, toml_value)


# [certificates."name"]: tables keyed by names (good, odd, wildcard spellings, not names)
CERTIFICATE_KEYS = ("keyType", "profile", "challengeType", "profileRequired", "reuseKey")
_CERT_NAMES = ("shop.test", "Shop.Test.", "*.w.test", ".d.test", "a b", "", "~x", "localhost",
               "127.0.0.1", "xn--bcher-kva.test", "é.test", "a" * 70 + ".test", "keyType")
_cert_table = st.dictionaries(
    st.one_of(st.sampled_from(CERTIFICATE_KEYS), st.sampled_from(CERTIFICATE_KEYS),
              st.sampled_from(_all_keys)), toml_value, max_size=4)
_certificates = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(_CERT_NAMES), st.text(max_size=6)),
                    st.one_of(_cert_table, _cert_table, toml_value), max_size=3),
    toml_value,
)

toml_dict = st.lists(
    st.one_of([st.tuples(st.just(n), _table_value(n)) for n in [*KNOWN_KEYS, *_UNKNOWN_NAMES]]
              + [st.tuples(st.just("certificates"), _certificates)]),
    unique_by=lambda item: item[0],
    max_size=4,
).map(dict)

_TOML_TOKENS = [
    "[acme]", "[controller]", "[njet]", "[[acme]]", "[log]", "[admin]", "[", "]", "=", "\n",
    '"', "'", '"""', "#", "renewBeforeDays = ", "interval = ", "keyType = ", "v = ", "inf",
    "nan", "-inf", "1979-05-27T07:32:00Z", "1979-05-27", "{a=1}", "[1, 2]", "true", "0x1F",
    "1_000", "1e999", '"1h"', "acme.email = ", "\\u00e9", "\x00", "\ufeff",
    '[certificates."a.test"]', "[certificates.x]", "challengeType = ", '"dns"', '["ec256"]',
]  # fmt: skip
toml_text = st.one_of(
    st.lists(st.one_of(st.sampled_from(_TOML_TOKENS), st.text(max_size=6)), max_size=30).map(
        "".join
    ),
    st.lists(_text_op, min_size=1, max_size=5).map(
        lambda ops: _apply_text_mutations(VALID_TOML, ops)
    ),
)


def named_keys(data: Any) -> set[str]:
    """Every way an error may name a place of `data`: "acme", "[acme]", "acme.keyType", …"""
    names: set[str] = set()
    if not isinstance(data, dict):
        return names
    for section, value in data.items():
        names.update({section, f"[{section}]"})
        if isinstance(value, dict):
            names.update(f"{section}.{key}" for key in value)
        if section == "certificates" and isinstance(value, dict):
            names.update(_certificate_keys(value))
        if section == "acme" and isinstance(value, dict):
            names.update(_fallback_keys(value.get("fallback")))
    return names


FALLBACK_KEYS = ("acmeCaDir", "caBundle", "eabKid", "eabHmacKey", "profile", "email")


def _fallback_keys(entries: Any) -> set[str]:
    """How the controller names [[acme.fallback]] entries: acme.fallback[0].acmeCaDir."""
    if not isinstance(entries, list):
        return set()
    names: set[str] = set()
    for i, entry in enumerate(entries):
        names.add(f"acme.fallback[{i}]")
        keys = set(FALLBACK_KEYS) | (set(entry) if isinstance(entry, dict) else set())
        names.update(f"acme.fallback[{i}].{key}" for key in keys)
    return names


def certificate_path(name: str) -> str:
    """How the controller names a [certificates] table: certificates."shop.test"."""
    return "certificates." + json.dumps(name if len(name) <= 80 else name[:80] + "…")


def _certificate_keys(tables: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for name, table in tables.items():
        for spelling in (name, canonical_name(name)):
            names.add(certificate_path(spelling))
            if isinstance(table, dict):
                names.update(f"{certificate_path(spelling)}.{key}" for key in table)
    return names


def unknown_certificate_keys(tables: dict[str, Any]) -> set[str]:
    """The warnings an accepted [certificates] section must give: each unknown key by table."""
    return {f"{certificate_path(canonical_name(name))}.{key}"
            for name, table in tables.items() for key in table if key not in CERTIFICATE_KEYS}


def assert_config_error_names_key(message: str, data: Any) -> None:
    named = named_keys(data)
    hits = [n for n in named if f"{n}:" in message or f"{n} " in message or f"[{n}]" in message]
    assert hits, f"ConfigError names no key of the input: {message}"
