"""dns-01 through a hosted DNS service's API, by dns-lexicon: `[dns] provider = "<lexicon's
provider name>"` (aliyun, dnspod, cloudflare, route53, qcloud, ...) with `[dns] credentialsFile`.

Implements the DnsProvider port (controller/ports/) structurally; built by
adapters/dns/providers.py with `load_credentials(path)` for the credentials. dns-lexicon is an
optional dependency (`pip install 'njet-cert-manager[dns-hosted]'`): it is imported only when a
LexiconProvider is built, and its absence is a ConfigError that says what to install. Some of
its providers need a cloud SDK on top (route53: boto3, qcloud: tencentcloud-sdk-python); their
absence is a ConfigError too.

Nothing is looked up on the network except the provider's own API. lexicon's Client finds a
domain's zone with tldextract (which downloads the public suffix list) or the system resolver;
we never use the Client: the zone is ours to give (`zone`), so we build lexicon's provider
class directly with a ConfigResolver holding the zone, the TTL and the credentials (nothing
from the environment or the working directory), exactly as the Client would after its lookup.
tldextract's module-wide extractor (used by a few providers, e.g. godaddy) is switched to its
bundled snapshot, never the network (and TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS is set empty, when
unset, for any other extractor built in this process).

lexicon is synchronous: each call runs on a daemon thread (controller/threads.py) and is bounded
by `timeout` (lexicon's HTTP calls have none of their own; a thread stuck on a silent server is
abandoned, not joined). Each call builds and authenticates a fresh lexicon provider, so calls
for different names run at once; calls for the same name run one at a time (route53 rewrites
the whole record set to add a value). Errors become TemporaryError (unreachable, timeout, 429,
5xx, an unexpected reply) or ConfigError (credentials rejected, unknown zone, other 4xx), with
a message naming the provider and the name (lexicon_errors.py reads the error shapes);
credential values are cut out of every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import importlib
import importlib.util
import json
import logging
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from controller.adapters.dns.pername import PerNameProvider
from controller.adapters.store.fsutil import UnsafeFileError, read_regular
from controller.errors import ConfigError, ControllerError, TemporaryError
from controller.logs import log_event
from controller.threads import in_daemon_thread

INSTALL_HINT = "pip install 'njet-cert-manager[dns-hosted]'"
CREDENTIALS_MAX_BYTES = 64 << 10
DEFAULT_TIMEOUT = 60.0
_PROVIDERS_PACKAGE = "lexicon._private.providers"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_OPTION_NAME = re.compile(r"^[a-z]{1,20}([_-][a-z]{1,20}){0,5}$")  # auth_key_id, zone-id
_ZONE = re.compile(r"^[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*$")
# lexicon providers that do their own discovery through DNS (the system resolver): refused
_REFUSED = {"auto": "it finds the provider through the system resolver; name the provider"}
# the options lexicon's providers cannot work without (checked here, before any request)
REQUIRED_OPTIONS: dict[str, tuple[str, ...]] = {
    "aliyun": ("auth_key_id", "auth_secret"),
    "dnspod": ("auth_username", "auth_token"),
    "cloudflare": ("auth_token",),
    "qcloud": ("secret_id", "secret_key"),
    "route53": (),  # keys, or boto3's own credential chain (an instance role)
}
# providers whose lexicon module needs an SDK from one of lexicon's extras: (module, extra)
SDK_MODULES: dict[str, str] = {
    "route53": "boto3",
    "qcloud": "tencentcloud.dnspod.v20210323",
    "oci": "oci",
    "softlayer": "SoftLayer",
    "gransy": "zeep",
    "localzone": "localzone",
}
_SECRET_MIN = 4  # shorter credential values ("true") are not worth cutting out of messages


def load_credentials(path: Path) -> dict[str, str]:
    """The provider options of a credentials file: flat `key = "value"` TOML pairs, or one JSON
    object. The file must be a regular file of at most 64 KiB (never a symlink, never a FIFO);
    a file that group or others may read is logged as a warning. Strings, integers and booleans
    are accepted (as strings). Errors name the file and the key, never a value."""
    try:
        data = read_regular(path, limit=CREDENTIALS_MAX_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"credentials file {path} does not exist") from None
    except UnsafeFileError as exc:
        reason = (exc.strerror or "").split(";")[0]
        raise ConfigError(f"credentials file {path} {reason}; it must be a regular file of at "
                          f"most {CREDENTIALS_MAX_BYTES >> 10} KiB") from None
    except OSError as exc:
        raise ConfigError(f"credentials file {path}: cannot read it: "
                          f"{exc.strerror or exc}") from None
    _warn_if_shared(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"credentials file {path} is not UTF-8 text") from None
    doc = _parse(path, text)
    out: dict[str, str] = {}
    for number, (key, value) in enumerate(doc.items(), 1):
        shown = _shown_key(key, number)
        if not _KEY.match(key):
            raise ConfigError(f"credentials file {path}: {shown} is not a plain option name "
                              "(letters, digits, _ and -)")
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, int | str):
            out[key] = str(value)
        else:
            kind = "table" if isinstance(value, dict) else type(value).__name__
            raise ConfigError(f"credentials file {path}: {shown} holds a {kind}; the file holds "
                              'flat key = "value" pairs of strings, numbers and booleans')
        if not out[key].strip():
            raise ConfigError(f"credentials file {path}: {shown} is empty")
    return out


def _shown_key(key: str, number: int) -> str:
    """A key as messages name it: an option name as it is; anything else (a value typed where a
    key goes: `["<secret>"]` is a TOML table header) only by its place."""
    if _OPTION_NAME.match(key):
        return f"key {key!r}"
    return f"key number {number} (not shown: it does not look like an option name)"


def _parse(path: Path, text: str) -> dict[str, Any]:
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:  # msg and position only: never the document
            raise ConfigError(f"credentials file {path} is not valid JSON: {exc.msg} at line "
                              f"{exc.lineno} column {exc.colno}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"credentials file {path}: the JSON must be one object")
        return doc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # tomllib names the position, not the content
        raise ConfigError(f"credentials file {path} is not valid TOML "
                          f'(key = "value" lines): {exc}') from None


def _warn_if_shared(path: Path) -> None:
    try:
        mode = os.stat(path, follow_symlinks=False).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log_event("credentials file is readable by group or others; chmod 600 it",
                  level=logging.WARNING, file=str(path), mode=oct(stat.S_IMODE(mode)))


class LexiconProvider(PerNameProvider):
    """One hosted DNS account (lexicon provider + credentials) for one zone."""

    def __init__(self, provider: str, credentials: Mapping[str, str], *, zone: str,
                 ttl: int = 60, timeout: float = DEFAULT_TIMEOUT) -> None:
        name = provider.strip().lower()
        if not _NAME.match(name):
            raise ConfigError(f"[dns] provider {provider!r} is not a provider name")
        if name in _REFUSED:
            raise ConfigError(f"[dns] provider {name!r} is not supported: {_REFUSED[name]}")
        self.name = name
        self.zone = zone.strip().rstrip(".").lower()  # "": each call's zone (found from SOA)
        if self.zone and not _ZONE.match(self.zone):
            raise ConfigError(f"dns provider {name}: zone {zone!r} is not a domain name")
        if not ttl > 0:
            raise ConfigError(f"dns provider {name}: ttl must be more than 0, not {ttl}")
        self.ttl = int(ttl)
        self.timeout = float(timeout)
        self._options = {key.replace("-", "_").lower(): value
                         for key, value in credentials.items()}
        missing = [k for k in REQUIRED_OPTIONS.get(name, ()) if not self._options.get(k)]
        if missing:
            raise ConfigError(f"dns provider {name}: the credentials file lacks "
                              f"{', '.join(missing)}")
        self._secrets = sorted({v for v in credentials.values() if len(v) >= _SECRET_MIN},
                               key=len, reverse=True)
        self._provider_class: Any = _load_provider_class(name)
        super().__init__()

    async def close(self) -> None:
        """Nothing is kept open between calls (each call has its own lexicon provider)."""

    async def _call(self, action: str, zone: str, fqdn: str, value: str) -> None:
        name = fqdn.strip().rstrip(".").lower()
        apex = zone.strip().rstrip(".").lower() or self.zone
        if not _ZONE.match(apex):
            raise ConfigError(f"dns provider {self.name}: zone {zone!r} is not a domain name")
        if name != apex and not name.endswith("." + apex):
            raise ConfigError(f"dns provider {self.name}: {name} is not inside zone {apex}")
        work = self._present_sync if action == "present" else self._cleanup_sync
        lock = self._lock(name)
        async with lock:
            try:
                await asyncio.wait_for(in_daemon_thread(work, apex, name, value), self.timeout)
            except TimeoutError:
                raise TemporaryError(f"dns provider {self.name}: {action} TXT {name}: no "
                                     f"answer within {self.timeout:g} s") from None
        log_event("dns TXT record changed through lexicon", level=logging.DEBUG,
                  provider=self.name, action=action, fqdn=name)

    # --- on a daemon thread ------------------------------------------------------------------

    def _present_sync(self, zone: str, fqdn: str, value: str) -> None:
        with self._session("present", zone, fqdn) as provider:
            if any(_content(r) == value for r in self._txt_at(provider, fqdn, value)):
                return  # already there (a retried present)
            created = provider.create_record("TXT", fqdn, value)
            if created is False and not any(  # some providers only say False: look
                    _content(r) == value for r in self._txt_at(provider, fqdn, value)):
                raise TemporaryError(f"dns provider {self.name}: present TXT {fqdn}: the "
                                     "provider did not create the record")

    def _cleanup_sync(self, zone: str, fqdn: str, value: str) -> None:
        with self._session("cleanup", zone, fqdn) as provider:
            records = self._txt_at(provider, fqdn, value)
            ours = [r for r in records if _content(r) == value]
            other_ids = {r.get("id") for r in records if _content(r) != value}
            for record in ours:
                ident = record.get("id")
                if ident and ident not in other_ids:
                    provider.delete_record(identifier=ident)
                else:  # route53: one id per record set; remove just this value from it
                    provider.delete_record(None, "TXT", fqdn, value)
                    break

    def _txt_at(self, provider: Any, fqdn: str, value: str) -> list[dict[str, Any]]:
        """The TXT records at exactly `fqdn` that the API lists when asked for `value`: ours,
        and for route53 the other values of the record set that holds it. Asking with the value
        keeps the answer small where the API pages and matches names loosely (Alibaba Cloud:
        `_acme-challenge` matches every challenge name, 20 to a page); the names are then
        compared exactly here."""
        records = provider.list_records("TXT", fqdn, value)
        return [r for r in records if isinstance(r, dict)
                and str(r.get("name", "")).rstrip(".").lower() == fqdn]

    def _session(self, action: str, zone: str, fqdn: str) -> _Session:
        from lexicon.config import ConfigResolver

        config = ConfigResolver().with_dict({  # type: ignore[no-untyped-call]
            "provider_name": self.name, "domain": zone, "ttl": self.ttl,
            self.name: dict(self._options),
        })
        return _Session(self, config, action, zone, fqdn)

    def redact(self, text: str) -> str:
        """`text` with every credential value cut out."""
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


class _Session:
    """A built and authenticated lexicon provider for one call; lexicon's and the SDKs' errors
    leave it as ControllerErrors."""

    def __init__(self, owner: LexiconProvider, config: Any, action: str, zone: str,
                 fqdn: str) -> None:
        self.owner, self.config, self.action, self.zone, self.fqdn = (
            owner, config, action, zone, fqdn)
        self.provider: Any = None

    def __enter__(self) -> Any:
        try:
            self.provider = self.owner._provider_class(self.config)
            self.provider.authenticate()
        except Exception as exc:
            raise self.translate(exc) from None
        return self.provider

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        with contextlib.suppress(Exception):  # nothing to undo: the request is done anyway
            self.provider.cleanup()
        if isinstance(exc, Exception) and not isinstance(exc, ControllerError):
            raise self.translate(exc) from None

    def translate(self, exc: Exception) -> ControllerError:
        from controller.adapters.dns.lexicon_errors import classify

        temporary, detail, retry_after = classify(exc)
        owner = self.owner
        message = owner.redact(f"dns provider {owner.name}: {self.action} TXT {self.fqdn} "
                               f"(zone {self.zone}): {detail}")
        if temporary:
            return TemporaryError(message, retry_after=retry_after)
        return ConfigError(message)


def _content(record: Mapping[str, Any]) -> str:
    """A TXT record's value without the quotes some APIs keep around it."""
    text = str(record.get("content", ""))
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def _load_provider_class(name: str) -> Any:
    try:
        package = importlib.import_module(_PROVIDERS_PACKAGE)
        importlib.import_module("lexicon.config")
    except ImportError as exc:
        raise ConfigError(f"[dns] provider {name!r} needs dns-lexicon, which is not installed "
                          f"({exc.name or 'lexicon'} is missing): {INSTALL_HINT}") from None
    _offline_suffix_list()
    if importlib.util.find_spec(f"{_PROVIDERS_PACKAGE}.{name}") is None:
        known = sorted(_provider_names(package))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"[dns] provider {name!r} is neither rfc2136, exec nor one of "
                          f"dns-lexicon's {len(known)} providers{hint}")
    sdk = SDK_MODULES.get(name)
    if sdk and importlib.util.find_spec(sdk.partition(".")[0]) is None:
        raise ConfigError(f"[dns] provider {name!r} needs {sdk.partition('.')[0]}, which is "
                          f"not installed: pip install 'dns-lexicon[{name}]'")
    try:
        module: ModuleType = importlib.import_module(f"{_PROVIDERS_PACKAGE}.{name}")
    except ImportError as exc:
        raise ConfigError(f"[dns] provider {name!r}: dns-lexicon's module cannot be loaded "
                          f"({exc.name or exc.__class__.__name__} is missing)") from None
    return module.Provider


def _provider_names(package: ModuleType) -> list[str]:
    import pkgutil

    return [m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "base"]


def _offline_suffix_list() -> None:
    """tldextract: the bundled public suffix snapshot, never a download (module-wide)."""
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    try:
        import tldextract.tldextract as tx
    except ImportError:
        return
    current = getattr(tx, "TLD_EXTRACTOR", None)
    if current is not None and not getattr(current, "suffix_list_urls", ()):
        return
    tx.TLD_EXTRACTOR = tx.TLDExtract(cache_dir=None, suffix_list_urls=(),
                                     fallback_to_snapshot=True)

