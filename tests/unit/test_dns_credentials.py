"""`load_credentials` (controller/adapters/dns/lexicon_provider.py): the hosted DNS providers'
credentials file, read like the store reads (regular files only, size-capped, never through a
symlink or blocking on a FIFO), TOML pairs or a JSON object, a warning when group or others may
read it, and errors that name the file and the key but never a value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.adapters.dns.lexicon_provider import CREDENTIALS_MAX_BYTES, load_credentials
from controller.errors import ConfigError
from tests.logcapture import capture_logs

SECRET = "s3cr3t-VALUE-never-shown"


def write(tmp_path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "dns.credentials"
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(mode)
    return path


def test_toml_pairs(tmp_path: Path) -> None:
    path = write(tmp_path, f'auth_key_id = "LTAI5t"\nauth_secret = "{SECRET}"\n'
                           "private_zone = true\nport = 8443\n")
    with capture_logs() as logs:
        assert load_credentials(path) == {"auth_key_id": "LTAI5t", "auth_secret": SECRET,
                                          "private_zone": "true", "port": "8443"}
    assert "chmod 600" not in logs.text  # 0600: no warning


def test_a_json_object(tmp_path: Path) -> None:
    path = write(tmp_path, f'  {{"auth_token": "{SECRET}", "zone-id": "023e"}}')
    assert load_credentials(path) == {"auth_token": SECRET, "zone-id": "023e"}


def test_a_file_others_may_read_is_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, f'auth_token = "{SECRET}"\n', mode=0o644)
    with capture_logs() as logs:
        assert load_credentials(path) == {"auth_token": SECRET}
    assert "chmod 600" in logs.text and str(path) in logs.text and "0o644" in logs.text
    assert SECRET not in logs.text


@pytest.mark.parametrize(("text", "named"), [
    (f'auth_token = "{SECRET}"\n[cloudflare]\nzone_id = "x"\n', "'cloudflare'"),
    (f'auth_token = ["{SECRET}"]\n', "'auth_token'"),
    ('auth_token = ""\n', "'auth_token' is empty"),
    (f'auth_token = 1.5\nother = "{SECRET}"\n', "'auth_token'"),
    (f'{{"auth_token": {{"v": "{SECRET}"}}}}', "'auth_token'"),
    (f'["{SECRET}"]', "key number 1 (not shown"),  # a TOML table named by the secret
    (f'{{"auth_token": "{SECRET}",}}', "not valid JSON"),
    (f'{{"a b": "{SECRET}"}}', "key number 1"),
    (f'{{"auth_token": "{SECRET}", "bad key!": "v"}}', "key number 2 (not shown"),
    (f'auth_token = "{SECRET}\n', "not valid TOML"),
    (f'[1, "{SECRET}"]', "not valid TOML"),
])
def test_bad_content_names_the_file_and_key_never_the_value(
        tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_credentials(path)
    message = str(caught.value)
    assert str(path) in message and named in message
    assert SECRET not in message


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"credentials file {tmp_path}/absent does not exist"):
        load_credentials(tmp_path / "absent")


def test_a_symlink_is_refused_even_to_a_good_file(tmp_path: Path) -> None:
    target = write(tmp_path, f'auth_token = "{SECRET}"\n')
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=f"{link} is a symbolic link; it must be a regular"):
        load_credentials(link)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a FIFO"):
        load_credentials(fifo)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_credentials(tmp_path)


def test_a_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * CREDENTIALS_MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="over the 65536 bytes limit"):
        load_credentials(path)


def test_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load_credentials(write(tmp_path, b'auth_token = "\xff\xfe"\n'))


def test_an_empty_file_holds_no_options(tmp_path: Path) -> None:
    assert load_credentials(write(tmp_path, "# route53 through the instance role\n")) == {}
