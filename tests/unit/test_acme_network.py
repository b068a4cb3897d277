"""acme/network.py and acme/threads.py against a real local HTTP server: nothing is sent once
the stop flag is set, a retry wait ends when it is set (and sends nothing more), a read the CA
never answers is cut by the read timeout and not retried after a stop; calls on daemon threads
return their result or error, and a process whose call hangs still exits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from josepy.jwa import RS256

from controller.adapters.acme.network import CONNECT_TIMEOUT, READ_TIMEOUT, AcmeNetwork
from controller.adapters.acme.threads import StopFlags
from controller.errors import TemporaryError
from controller.threads import in_daemon_thread

Behaviour = Callable[[BaseHTTPRequestHandler], None]


class CountingServer:
    """A loopback HTTP server that counts requests and answers each with `behaviour`."""

    def __init__(self, behaviour: Behaviour) -> None:
        server = self
        self.requests = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends a hanging answer at teardown

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                with server.lock:
                    server.requests += 1
                behaviour(self)

            do_GET = do_HEAD = do_POST = _any

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/dir"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], CountingServer]]:
    made: list[CountingServer] = []

    def make(behaviour: Behaviour) -> CountingServer:
        made.append(CountingServer(behaviour))
        return made[-1]

    yield make
    for server in made:
        server.close()


def answer(handler: BaseHTTPRequestHandler, status: int = 200,
           headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"newNonce": "x"}).encode() if status < 400 else json.dumps(
        {"type": "urn:ietf:params:acme:error:serverInternal", "detail": "busy"}).encode()
    handler.send_response(status)
    handler.send_header("Content-Type",
                        "application/json" if status < 400 else "application/problem+json")
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def network(stop: threading.Event, **kwargs: object) -> AcmeNetwork:
    return AcmeNetwork(None, alg=RS256, verify=None, stop=stop, **kwargs)  # type: ignore[arg-type]


def test_nothing_is_sent_once_the_stop_flag_is_set(
    serve: Callable[[Behaviour], CountingServer],
) -> None:
    server = serve(answer)
    stop = threading.Event()
    net = network(stop)
    assert net.get(server.url).status_code == 200
    stop.set()
    with pytest.raises(TemporaryError, match="stopping") as err:
        net.get(server.url)
    assert server.url in str(err.value)
    with pytest.raises(TemporaryError, match="stopping"):
        net.head(server.url)
    assert server.requests == 1


def test_a_retry_wait_ends_when_stopped_and_nothing_more_is_sent(
    serve: Callable[[Behaviour], CountingServer],
) -> None:
    stop = threading.Event()

    def busy_then_stop(handler: BaseHTTPRequestHandler) -> None:
        # a 503 with a 3 s Retry-After is waited out in place (3 attempts); the process
        # stops while the first answer is on its way
        stop.set()
        answer(handler, 503, {"Retry-After": "3"})

    server = serve(busy_then_stop)
    with pytest.raises(TemporaryError, match="stopping"):
        network(stop).get(server.url)
    assert server.requests == 1


def test_a_read_the_ca_never_answers_ends_at_the_read_timeout_and_is_not_retried_after_stop(
    serve: Callable[[Behaviour], CountingServer],
) -> None:
    stop = threading.Event()
    hung = threading.Event()

    def hang(handler: BaseHTTPRequestHandler) -> None:
        hung.set()
        server.release.wait(30)

    server = serve(hang)
    net = network(stop, timeout=(CONNECT_TIMEOUT, 0.3))

    def stop_once_hung() -> None:
        if hung.wait(10):
            stop.set()

    threading.Thread(target=stop_once_hung, daemon=True).start()
    with pytest.raises(TemporaryError, match="stopping"):
        net.get(server.url)
    assert server.requests == 1


def test_the_default_timeouts_are_short_connect_and_read_timeouts(
    serve: Callable[[Behaviour], CountingServer],
) -> None:
    seen: list[object] = []
    server = serve(answer)
    net = network(threading.Event())
    send = net.session.request

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("timeout"))
        return send(*args, **kwargs)  # type: ignore[arg-type]

    net.session.request = spy  # type: ignore[method-assign,assignment]
    net.get(server.url)
    assert seen == [(CONNECT_TIMEOUT, READ_TIMEOUT)]
    assert CONNECT_TIMEOUT <= 5 and READ_TIMEOUT <= 15


# -- daemon threads and stop flags -----------------------------------------------------------


async def test_a_daemon_thread_call_returns_its_result_or_raises_its_error() -> None:
    def where(x: int) -> tuple[int, bool, bool]:
        me = threading.current_thread()
        return x * 2, me.daemon, me is threading.main_thread()

    assert await in_daemon_thread(where, 21) == (42, True, False)

    def boom() -> None:
        raise TemporaryError("the CA went away")

    with pytest.raises(TemporaryError, match="went away"):
        await in_daemon_thread(boom)


async def test_cancelling_a_daemon_thread_call_does_not_wait_for_the_thread() -> None:
    release = threading.Event()
    started = threading.Event()

    def blocked() -> None:
        started.set()
        release.wait(30)

    task = asyncio.ensure_future(in_daemon_thread(blocked))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not release.is_set()  # the thread is still blocked; nobody waited for it
    release.set()


def test_a_process_whose_ca_call_hangs_still_exits() -> None:
    # asyncio.to_thread here would keep the process alive: asyncio.run joins its workers
    script = textwrap.dedent("""
        import asyncio, threading
        from controller.threads import in_daemon_thread

        async def main():
            task = asyncio.ensure_future(in_daemon_thread(threading.Event().wait))
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            print("done", flush=True)

        asyncio.run(main())
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "done"


def test_stop_flags_are_set_for_calls_in_flight_and_for_every_later_call() -> None:
    flags = StopFlags()
    with flags.flag() as first:
        assert not first.is_set()
        flags.stop()
        assert first.is_set() and flags.stopped
    with flags.flag() as later:
        assert later.is_set()
