"""The TOML config: NJet cert-manager's files load unchanged; our additions; clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from controller.config import load_config, parse_duration, unknown_keys
from controller.errors import ConfigError
from controller.model import ChallengeType, KeyType

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
