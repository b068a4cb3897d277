"""`[hooks]` commands as real child processes, fed by real passes over the fakes: the exact
environment (no key text, minimal PATH), the prefix as working directory and stdin closed; a
hook past its timeout killed with its process group while passes go on; failures logged and
counted; bounded output; a full queue dropping; shutdown killing what still runs."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from controller.adapters.hooks.dispatch import Dispatcher
from controller.adapters.hooks.events import (
    ENV_NAMES,
    HOOK_PATH,
    CertEvent,
    EventKind,
    events_from_pass,
    rfc3339,
)
from controller.adapters.hooks.observer import HookObserver
from controller.adapters.hooks.runner import OUTPUT_TAIL, HookResult, HookRunner
from controller.errors import TemporaryError
from controller.metrics import ControllerMetrics
from controller.model import CertificateSpec
from controller.paths import StorePaths
from controller.reconcile import Reconciler
from tests.fakes import FakeClock, FakeIssuer, MemoryStore, RecordingObserver
from tests.logcapture import capture_logs
from tests.support.hookkit import A, B, store_only_reconciler

DUMP_ENV = textwrap.dedent("""\
    import json, os, sys
    env = dict(kv.split("=", 1) for kv in
               open("/proc/self/environ").read().split("\\0") if kv)
    out = {"env": env, "cwd": os.getcwd(), "stdin": sys.stdin.read()}
    name = env.get("NJCM_DOMAIN", "none")
    with open(os.path.join(sys.argv[1], name + ".json"), "w") as f:
        json.dump(out, f)
""")

SLEEPER = textwrap.dedent("""\
    sleep 60 &
    echo $! > "$1/child.pid"
    echo started > "$1/started"
    wait
""")


@dataclass
class World:
    rec: Reconciler
    store: MemoryStore
    issuer: FakeIssuer
    dispatcher: Dispatcher
    metrics: ControllerMetrics
    passes: RecordingObserver
    prefix: Path


def world(tmp_path: Path, commands: dict[str, tuple[str, ...]], *, timeout: float = 10.0,
          specs: tuple[CertificateSpec, ...] = (A, B), queue_size: int = 100) -> World:
    prefix = tmp_path / "njet"
    prefix.mkdir(exist_ok=True)
    clock = FakeClock()
    store = MemoryStore()
    issuer = FakeIssuer(clock)
    metrics = ControllerMetrics()
    runner = HookRunner(commands, cwd=prefix, timeout=timeout,
                        on_result=metrics.observe_hook_run)
    dispatcher = Dispatcher(store=store, runner=runner, queue_size=queue_size)
    passes = RecordingObserver()
    rec, _ = store_only_reconciler(
        specs, clock=clock, store=store, issuer=issuer, delete_grace=timedelta(0),
        observers=[HookObserver(dispatcher, StorePaths(prefix), clock=clock), passes])
    return World(rec, store, issuer, dispatcher, metrics, passes, prefix)


def runs(w: World, hook: str, result: str) -> float:
    return w.metrics._hook_runs.get(hook=hook, result=result) or 0.0


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed orphan may wait for init to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def until(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_hook_gets_only_the_documented_variables_and_never_key_text(
        tmp_path: Path) -> None:
    script = tmp_path / "dump_env.py"
    script.write_text(DUMP_ENV)
    out = tmp_path / "out"
    out.mkdir()
    w = world(tmp_path, {"onIssued": (sys.executable, str(script), str(out))})
    await w.rec.pass_once()
    await w.dispatcher.drained()
    for domain, names in (("a.test", "a.test,www.a.test"), ("b.test", "b.test")):
        seen = json.loads((out / f"{domain}.json").read_text())
        env = seen["env"]
        assert set(env) == set(ENV_NAMES), sorted(env)
        assert env["PATH"] == HOOK_PATH
        assert env["NJCM_EVENT"] == "issued" and env["NJCM_DOMAIN"] == domain
        assert env["NJCM_NAMES"] == names and env["NJCM_ERROR"] == ""
        stored = w.store.get(domain)
        assert stored is not None
        assert env["NJCM_SERIAL"] == stored.info.serial
        assert env["NJCM_NOT_AFTER"] == rfc3339(stored.info.not_after)
        assert env["NJCM_CERT_PATH"] == str(w.prefix / ".lego" / "certificates" / f"{domain}.crt")
        assert env["NJCM_KEY_PATH"] == str(w.prefix / ".lego" / "certificates" / f"{domain}.key")
        text = json.dumps(env)
        key = w.store.key_pem(domain)
        assert key is not None and "PRIVATE KEY" not in text and "-----BEGIN" not in text
        assert key.decode().splitlines()[1] not in text
        assert seen["cwd"] == str(w.prefix) and seen["stdin"] == ""
    assert runs(w, "onIssued", "success") == 2


async def test_a_hook_past_its_timeout_is_killed_with_its_group_while_passes_go_on(
        tmp_path: Path) -> None:
    script = tmp_path / "sleeper.sh"
    script.write_text(SLEEPER)
    marks = tmp_path / "marks"
    marks.mkdir()
    w = world(tmp_path, {"onIssued": ("/bin/sh", str(script), str(marks))}, timeout=3.0,
              specs=(A,))
    first = await w.rec.pass_once()
    assert [o.ok for o in first.outcomes] == [True]
    await until(lambda: (marks / "started").exists() and (marks / "child.pid").exists())
    child = int((marks / "child.pid").read_text())
    assert alive(child)
    # the hook runs; passes are not held by it
    second = await w.rec.pass_once()
    assert second.plan.actions == () and len(w.passes.passes) == 2
    assert runs(w, "onIssued", "timeout") == 0, "the hook ended before the passes were done"
    with capture_logs() as logs:
        await w.dispatcher.drained()
    assert runs(w, "onIssued", "timeout") == 1
    assert "hook failed" in logs.text and "result=timeout" in logs.text
    await until(lambda: not alive(child))  # the sleeping grandchild went with its group


async def test_a_failing_hook_is_logged_and_counted(tmp_path: Path) -> None:
    w = world(tmp_path, {"onFailed": ("/bin/sh", "-c", 'echo "boom $NJCM_DOMAIN: $NJCM_ERROR"'
                                                       " >&2; exit 3")}, specs=(A,))
    w.issuer.fail.append(TemporaryError("the CA answered 503"))
    with capture_logs() as logs:
        await w.rec.pass_once()
        await w.dispatcher.drained()
    assert runs(w, "onFailed", "failure") == 1
    (line,) = [ln for ln in logs.lines() if "hook failed" in ln]
    assert "hook=onFailed" in line and "exit_code=3" in line and "domain=a.test" in line
    assert "boom a.test: the CA answered 503" in line
    assert 'njcm_hook_runs_total{hook="onFailed",result="failure"} 1.0' in w.metrics.render()


async def test_a_program_that_cannot_start_is_a_failure_not_an_error(tmp_path: Path) -> None:
    w = world(tmp_path, {"onIssued": (str(tmp_path / "missing"),)}, specs=(A,))
    with capture_logs() as logs:
        result = await w.rec.pass_once()
        await w.dispatcher.drained()
    assert all(o.ok for o in result.outcomes)
    assert runs(w, "onIssued", "failure") == 1
    assert "cannot start: No such file or directory" in logs.text


async def test_only_the_tail_of_the_output_is_kept(tmp_path: Path) -> None:
    runner = HookRunner({"onIssued": ("/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x;"
                                                       " echo; echo END")},
                        cwd=tmp_path, timeout=20.0)
    w = world(tmp_path, {}, specs=(A,))
    await w.rec.pass_once()
    with capture_logs() as logs:
        run = await runner.run(issued_event(w))
    assert run is not None and run.result is HookResult.SUCCESS and run.exit_code == 0
    assert len(run.output) == OUTPUT_TAIL and run.output.endswith("x\nEND\n")
    assert len(logs.text) < 2 * OUTPUT_TAIL


async def test_a_full_queue_drops_the_event_with_a_warning(tmp_path: Path) -> None:
    release = tmp_path / "release"
    w = world(tmp_path, {"onIssued": ("/bin/sh", "-c", f"while [ ! -e {release} ]; do sleep 0.05;"
                                                       " done")}, queue_size=1)
    with capture_logs() as logs:
        await w.rec.pass_once()  # two events at once: the second finds the queue full
        release.touch()
        await w.dispatcher.drained()
    assert runs(w, "onIssued", "dropped") == 1 and runs(w, "onIssued", "success") == 1
    assert "hook event dropped: queue full" in logs.text


async def test_shutdown_gives_a_short_grace_then_kills_the_hook(tmp_path: Path) -> None:
    script = tmp_path / "sleeper.sh"
    script.write_text(SLEEPER)
    marks = tmp_path / "marks"
    marks.mkdir()
    w = world(tmp_path, {"onIssued": ("/bin/sh", str(script), str(marks))}, specs=(A,))
    await w.rec.pass_once()
    await until(lambda: (marks / "child.pid").exists())
    child = int((marks / "child.pid").read_text())
    await w.dispatcher.close(grace=0.2)
    await until(lambda: not alive(child))
    assert runs(w, "onIssued", "success") == 0
    w.dispatcher.submit(issued_event(w))  # after close: dropped, never run
    assert runs(w, "onIssued", "dropped") == 1


def issued_event(w: World) -> CertEvent:
    last = w.passes.passes[-1]
    events = events_from_pass(last.outcomes, last.observed, now=FakeClock()(),
                              paths=StorePaths(w.prefix))
    assert events and events[0].kind is EventKind.ISSUED
    return events[0]
