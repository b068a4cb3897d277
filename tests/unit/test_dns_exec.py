"""The exec DNS provider (controller/adapters/dns/exec_provider.py) with real scripts written to
tmp: the argv and environment it gets (lego's exec shape, the documented minimal environment,
stdin closed), a non-zero exit and a timeout as TemporaryErrors (the timeout kills the whole
process group), output capped, cancellation leaving nothing behind, one call per name at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.adapters.dns.exec_provider import (
    EXEC_PATH,
    MESSAGE_TAIL_CHARS,
    ExecProvider,
)
from controller.errors import ConfigError, TemporaryError
from controller.ports import DnsProvider
from tests.logcapture import capture_logs

VALUE = "Xh1-_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789ab"
FQDN = "_acme-challenge.shop.test"


def script(tmp_path: Path, body: str, name: str = "hook") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o700)
    return path


def environ_of_file(path: Path) -> dict[str, str]:
    pairs = [e.split("=", 1) for e in path.read_bytes().decode().split("\0") if e]
    return {k: v for k, v in pairs}


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


async def wait_until(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_present_passes_action_fqdn_with_dot_and_value_and_only_the_documented_env(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NJCM_TEST_SECRET", "must-not-be-inherited")
    rec = tmp_path / "rec"
    rec.mkdir()
    hook = script(tmp_path, f"""
printf '%s\\0' "$0" "$@" > {rec}/argv
cat /proc/$$/environ > {rec}/env
wc -c < /dev/stdin | tr -d ' ' > {rec}/stdin
""")
    provider: DnsProvider = ExecProvider([str(hook)], timeout=10)  # the port, structurally
    await provider.present(zone="shop.test", fqdn=FQDN, value=VALUE)

    argv = (rec / "argv").read_bytes().decode().split("\0")[:-1]
    assert argv == [str(hook), "present", f"{FQDN}.", VALUE]
    assert environ_of_file(rec / "env") == {"PATH": EXEC_PATH, "NJCM_DNS_ZONE": "shop.test"}
    assert (rec / "stdin").read_text().strip() == "0"  # stdin closed: nothing to read
    await provider.close()


async def test_cleanup_and_extra_arguments_keep_the_shape(tmp_path: Path) -> None:
    rec = tmp_path / "argv"
    hook = script(tmp_path, f"printf '%s\\0' \"$@\" > {rec}\n")
    provider = ExecProvider([str(hook), "--account", "main"], timeout=10)
    await provider.cleanup(zone="shop.test.", fqdn=f"{FQDN}.", value=VALUE)
    assert rec.read_bytes().decode().split("\0")[:-1] == [
        "--account", "main", "cleanup", f"{FQDN}.", VALUE]


async def test_a_bare_command_name_is_found_on_the_minimal_path(tmp_path: Path) -> None:
    provider = ExecProvider(["true"], timeout=10)  # /usr/bin/true or /bin/true
    await provider.present(zone="shop.test", fqdn=FQDN, value=VALUE)


async def test_non_zero_exit_is_a_temporary_error_with_the_code_and_stderr_tail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NJCM_TEST_SECRET", "must-not-be-shown")
    hook = script(tmp_path, "echo 'talking to the API'\necho 'zone not found: shop.test' >&2\n"
                            "exit 3\n")
    provider = ExecProvider([str(hook)], timeout=10)
    with capture_logs() as logs, pytest.raises(TemporaryError) as caught:
        await provider.present(zone="shop.test", fqdn=FQDN, value=VALUE)
    message = str(caught.value)
    assert "exit 3" in message and "zone not found: shop.test" in message
    assert f"present {FQDN}." in message and str(hook) in message
    assert "must-not-be-shown" not in message and "PATH=" not in message
    assert "talking to the API" in logs.text and "zone not found" in logs.text
    assert "must-not-be-shown" not in logs.text


async def test_a_script_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    hook = script(tmp_path, "kill -TERM $$\nsleep 5\n")
    with capture_logs(), pytest.raises(TemporaryError, match="killed by signal 15"):
        await ExecProvider([str(hook)], timeout=10).present(
            zone="shop.test", fqdn=FQDN, value=VALUE)


async def test_output_is_capped_and_the_message_keeps_the_end_of_stderr(tmp_path: Path) -> None:
    hook = script(tmp_path, "head -c 1000000 /dev/zero | tr '\\0' x >&2\n"
                            "echo LAST-LINE >&2\nexit 1\n")
    provider = ExecProvider([str(hook)], timeout=30)
    with capture_logs() as logs, pytest.raises(TemporaryError) as caught:
        await provider.cleanup(zone="shop.test", fqdn=FQDN, value=VALUE)
    message = str(caught.value)
    assert message.endswith("LAST-LINE")
    assert len(message) < MESSAGE_TAIL_CHARS + 200
    assert len(logs.text) < 10_000  # 4 KiB of stderr, not a megabyte


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    hook = script(tmp_path, f"sleep 300 &\necho $! > {child_pid}\nsleep 300\n")
    provider = ExecProvider([str(hook)], timeout=0.5)
    with capture_logs(), pytest.raises(TemporaryError) as caught:
        await provider.present(zone="shop.test", fqdn=FQDN, value=VALUE)
    assert "no exit within 0.5 s" in str(caught.value)
    pid = int(child_pid.read_text())
    await wait_until(lambda: gone(pid), f"the backgrounded child {pid} is killed")


async def test_cancelling_a_call_kills_the_script(tmp_path: Path) -> None:
    started = tmp_path / "started"
    hook = script(tmp_path, f"echo $$ > {started}.tmp && mv {started}.tmp {started}\n"
                            "sleep 300\n")
    provider = ExecProvider([str(hook)], timeout=300)
    task = asyncio.create_task(provider.present(zone="shop.test", fqdn=FQDN, value=VALUE))
    await wait_until(started.exists, "the script starts")
    pid = int(started.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: gone(pid), f"the script {pid} is killed")


async def test_calls_for_the_same_name_run_one_at_a_time(tmp_path: Path) -> None:
    # the script fails if another call for the name is inside it (mkdir is atomic)
    hook = script(tmp_path, f"mkdir {tmp_path}/busy-$NJCM_DNS_ZONE || exit 9\n"
                            f"sleep 0.2\nrmdir {tmp_path}/busy-$NJCM_DNS_ZONE\n")
    provider = ExecProvider([str(hook)], timeout=30)
    await asyncio.gather(
        provider.present(zone="shop.test", fqdn=FQDN, value=VALUE),
        provider.present(zone="shop.test", fqdn=FQDN, value=VALUE[::-1]))


async def test_a_missing_or_unrunnable_command_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot run"):
        await ExecProvider([str(tmp_path / "absent")], timeout=5).present(
            zone="shop.test", fqdn=FQDN, value=VALUE)
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(ConfigError, match="cannot run"):
        await ExecProvider([str(plain)], timeout=5).present(
            zone="shop.test", fqdn=FQDN, value=VALUE)
    with pytest.raises(ConfigError, match=r"cannot run.*PATH="):
        await ExecProvider(["njcm-no-such-hook"], timeout=5).present(
            zone="shop.test", fqdn=FQDN, value=VALUE)


@pytest.mark.parametrize(("command", "timeout"), [([], 5.0), ([""], 5.0), ("hook", 5.0),
                                                  (["hook"], 0.0), (["hook"], -1.0)])
def test_bad_settings_are_config_errors(command: object, timeout: float) -> None:
    with pytest.raises(ConfigError):
        ExecProvider(command, timeout=timeout)  # type: ignore[arg-type]

