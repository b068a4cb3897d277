"""The TOML config: NJet cert-manager's files load unchanged; our additions; clear errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from controller.config import load_config, unknown_keys
from controller.config_sections import MIN_INTERVAL, MIN_PROBE_TIMEOUT, parse_duration
from controller.errors import ConfigError
from controller.model import ChallengeType, KeyType
from tests.support.procs import clean_env

SEED_TOML = """
[copilot]
progName="sbin/cert-manager"
copilotType="cert"
stdoutFile = "/usr/local/njet/logs/cert_stdout.log"
stderrFile = "/usr/local/njet/logs/cert_stderr.log"
[acme]
email="liuqi@lq.com"
challengeType="tls"
acmeCaDir="http://127.0.0.1:4001/directory"
tlsChallengeServerAddress=":10443"
[njet]
[mqtt]
mqttServerAddress="127.0.0.1:1883"
[log]
v=2
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cm.toml"
    p.write_text(text)
    return p


def test_the_seed_articles_toml_loads_unchanged(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_TOML), prefix=tmp_path)
    assert cfg.acme.challengeType is ChallengeType.TLS
    assert cfg.acme.tlsChallengeServerAddress == ":10443"
    assert cfg.mqtt_address == "127.0.0.1:1883"
    assert cfg.acme.renewBeforeDays == 30 and cfg.acme.keyType is None
    assert cfg.controller.interval == timedelta(hours=1)
    assert unknown_keys(cfg) == []


def test_defaults_point_at_njet_under_the_prefix(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), prefix=tmp_path)
    assert cfg.conf_path == tmp_path / "conf" / "njet.conf"
    assert cfg.mqtt_address == f"unix:{tmp_path}/data/mosquitto.sock"
    assert not cfg.store_only and cfg.admin.address == "127.0.0.1:2000"


def test_empty_api_address_means_store_only(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[njet]\napiAddress = ""\n'), prefix=tmp_path)
    assert cfg.store_only


def test_documented_additions_parse(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
[acme]
keyType = "ec384"
renewBeforeDays = 10
httpValidationPort = 5002
[controller]
interval = "90s"
deleteGracePeriod = "7d"
[log]
format = "json"
""",
        ),
        prefix=tmp_path,
    )
    assert cfg.acme.keyType is KeyType.EC384 and cfg.acme.httpValidationPort == 5002
    assert cfg.controller.interval == timedelta(seconds=90)
    assert cfg.controller.deleteGracePeriod == timedelta(days=7)
    assert cfg.log.format == "json"


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[acme]\nemial='x'\n[extra]\na=1\n"), prefix=tmp_path)
    assert sorted(unknown_keys(cfg)) == ["acme.emial", "extra"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[acme]\nrenewBeforeDays = 'soon'\n", "acme.renewBeforeDays"),
        ("[acme]\nkeyType = 'dsa'\n", "acme.keyType"),
        ("[acme]\nchallengeType = 'dns'\n", "acme.challengeType"),
        ("[controller]\ninterval = 'often'\n", "controller.interval"),
        ("acme = 3\n", "[acme] must be a table"),
        ("[acme\n", "not valid TOML"),
    ],
)
def test_wrong_types_name_file_key_and_expectation(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), prefix=tmp_path)
    assert needle in str(err.value) and "cm.toml" in str(err.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml", prefix=tmp_path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("1h", 3600), ("7d", 604800), (42, 42), ("1.5m", 90)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


# --- minimums --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "minimum"),
    [
        ("interval", '"0s"', "10s"),
        ("interval", "0", "10s"),
        ("interval", '"9.9s"', "10s"),
        ("probeTimeout", '"0s"', "100ms"),
        ("probeTimeout", '"50ms"', "100ms"),
        ("probeTimeout", "0.01", "100ms"),
    ],
)
def test_durations_below_their_minimum_are_refused_naming_the_key(
    tmp_path: Path, key: str, value: str, minimum: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"[controller]\n{key} = {value}\n"), prefix=tmp_path)
    assert f"cm.toml: controller.{key}: " in str(err.value)
    assert f"at least {minimum}" in str(err.value)


def test_durations_at_their_minimum_are_accepted(tmp_path: Path) -> None:
    text = '[controller]\ninterval = "10s"\nprobeTimeout = "100ms"\ndeleteGracePeriod = "0s"\n'
    c = load_config(write(tmp_path, text), prefix=tmp_path).controller
    assert (c.interval, c.probeTimeout) == (timedelta(seconds=10), timedelta(seconds=0.1))
    assert (c.interval, c.probeTimeout) == (MIN_INTERVAL, MIN_PROBE_TIMEOUT)
    assert c.deleteGracePeriod == timedelta(0)


def test_diff_refuses_a_zero_interval_with_exit_1_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "njet.conf").write_text("http { }\n")
    (tmp_path / "conf" / "cm.toml").write_text(
        '[njet]\napiAddress = ""\n[controller]\ninterval = "0s"\nprobeTimeout = "0s"\n'
    )
    script = Path(sys.executable).with_name("njet-cert-manager")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli"]
    done = subprocess.run([*command, "-p", str(tmp_path), "-c", "conf/cm.toml", "diff"],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env=clean_env())  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "controller.interval: " in done.stderr and "controller.probeTimeout: " in done.stderr
    assert "at least 10s" in done.stderr and done.stdout == ""


# --- maxConfBytes ------------------------------------------------------------------------------


def test_max_conf_bytes_defaults_to_256_mib_and_is_bounded(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), prefix=tmp_path).njet.maxConfBytes == 256 * 2**20
    cfg = load_config(write(tmp_path, "[njet]\nmaxConfBytes = 4096\n"), prefix=tmp_path)
    assert cfg.njet.maxConfBytes == 4096
    with pytest.raises(ConfigError, match=r"njet\.maxConfBytes: "):
        load_config(write(tmp_path, "[njet]\nmaxConfBytes = 0\n"), prefix=tmp_path)


# --- errors never echo a value -----------------------------------------------------------------

SECRET = "s3cr3t-Value-42"
# every known key, with a value of the wrong type that carries the secret
KEYS = {
    "copilot": ["progName", "copilotType", "stdoutFile", "stderrFile"],
    "acme": ["email", "challengeType", "acmeCaDir", "tlsChallengeServerAddress",
             "httpChallengeServerAddress", "proxyHttpChallengeServerIp", "renewBeforeDays",
             "keyType", "caBundle", "eabKid", "eabHmacKey", "profile", "httpValidationPort",
             "profileRequired", "reuseKey", "ari", "fallback", "fallbackAfter", "rateLimits"],
    "njet": ["confPath", "apiAddress", "maxConfBytes"],
    "mqtt": ["mqttServerAddress"],
    "log": ["v", "format"],
    "controller": ["interval", "deleteGracePeriod", "revokeOnDelete", "concurrency",
                   "probeTimeout", "maxDeleteShare", "quarantineRetention",
                   "forceRenewPerHour", "forceRenewMinAge"],
    "admin": ["address", "token", "headerTimeout", "idleTimeout", "maxConnections"],
}  # fmt: skip
CASES = [(s, k) for s, keys in KEYS.items() for k in keys]
# keys whose type is a table: a table value is theirs to take (its own keys' errors are tested
# with the keys, e.g. tests/unit/test_rate_budget.py for [acme.rateLimits])
TABLES = {("acme", "rateLimits")}


def test_the_secret_cases_cover_every_key() -> None:
    from controller.config import Config

    for section, keys in KEYS.items():
        model = Config.model_fields[section].annotation
        assert model is not None and set(model.model_fields) == set(keys), section


@pytest.mark.parametrize(("section", "key"), CASES, ids=[f"{s}.{k}" for s, k in CASES])
@pytest.mark.parametrize(
    "value", [f'["{SECRET}"]', f'{{ k = "{SECRET}" }}', f'"{SECRET}"'], ids=["list", "table", "str"]
)
def test_config_errors_name_the_key_never_the_value(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    if (section, key) in TABLES and value.startswith("{"):
        pytest.skip("a table is this key's own type")
    path = write(tmp_path, f"[{section}]\n{key} = {value}\n")
    try:
        load_config(path, prefix=tmp_path)
    except ConfigError as exc:
        assert f"{section}.{key}: " in str(exc)
        assert "s3cr3t" not in str(exc).lower(), str(exc)
    else:
        assert value.startswith('"'), f"{section}.{key} = {value} was accepted"
