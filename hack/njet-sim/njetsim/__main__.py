"""Command line of the simulator, shaped like NJet's: `njet-sim -p PREFIX -c CONF [-s SIGNAL]`.

Called by the `njet-sim` launcher (or `python -m njetsim`). `-s reload|quit|stop|reopen`
signals the running instance through the pid file named by the conf's `pid` directive
(default logs/njet.pid), `-t` checks the configuration. Timing knobs: --replay-delay,
--event-delay, --copilot-restart-delay (or NJET_SIM_REPLAY_DELAY, NJET_SIM_EVENT_DELAY,
NJET_SIM_COPILOT_RESTART_DELAY).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from njetsim import conf as confmod
from njetsim.master import Options, Sim
from njetsim.runtime import Runtime
from njetsim.tlsctx import ContextFactory

SIGNALS = {"reload": signal.SIGHUP, "quit": signal.SIGQUIT, "stop": signal.SIGTERM,
           "reopen": signal.SIGUSR1}


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="njet-sim", description="NJet simulator")
    p.add_argument("-p", dest="prefix", default="/usr/local/njet/",
                   help="prefix path (default /usr/local/njet/)")
    p.add_argument("-c", dest="conf", default="conf/njet.conf",
                   help="configuration file, relative to the prefix (default conf/njet.conf)")
    p.add_argument("-s", dest="signal", choices=sorted(SIGNALS),
                   help="send a signal to the running instance (via its pid file)")
    p.add_argument("-t", dest="test", action="store_true", help="test the configuration")
    p.add_argument("--replay-delay", type=float,
                   default=_env_float("NJET_SIM_REPLAY_DELAY", 2.0),
                   help="seconds after start/reload before retained records are re-applied")
    p.add_argument("--event-delay", type=float,
                   default=_env_float("NJET_SIM_EVENT_DELAY", 3.0),
                   help="seconds after start/reload before the generateCertificate batch")
    p.add_argument("--copilot-restart-delay", type=float,
                   default=_env_float("NJET_SIM_COPILOT_RESTART_DELAY", 0.1),
                   help="seconds between SIGTERM of a copilot and its new instance on reload")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _send(prefix: Path, conf: str, name: str) -> int:
    try:
        pid_path = confmod.load_pid_path(prefix, conf)
    except confmod.SimConfError as exc:
        print(f"njet-sim: {exc}", file=sys.stderr)
        return 1
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, SIGNALS[name])
    except FileNotFoundError:
        print(f'njet-sim: [error] open() "{pid_path}" failed (2: No such file or directory)',
              file=sys.stderr)
        return 1
    except ValueError:
        print(f'njet-sim: [error] invalid PID number in "{pid_path}"', file=sys.stderr)
        return 1
    except ProcessLookupError:
        print(f"njet-sim: [error] kill({pid}, {SIGNALS[name].value}) failed "
              "(3: No such process)", file=sys.stderr)
        return 1
    return 0


def _test(prefix: Path, conf: str) -> int:
    factory = ContextFactory()
    try:
        loaded = confmod.load(prefix, conf)
        Runtime(loaded, factory)
    except confmod.SimConfError as exc:
        print(f"njet-sim: {exc}\nnjet-sim: configuration file {prefix / conf} test failed",
              file=sys.stderr)
        return 1
    finally:
        factory.close()
    print(f"njet-sim: the configuration file {loaded.conf_path} syntax is ok\n"
          f"njet-sim: configuration file {loaded.conf_path} test is successful", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prefix = Path(args.prefix).resolve()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s [%(levelname)s] {os.getpid()}#0: %(name)s: %(message)s",
        datefmt="%Y/%m/%d %H:%M:%S", stream=sys.stderr)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # failed handshakes are expected
    if args.signal:
        return _send(prefix, args.conf, args.signal)
    if args.test:
        return _test(prefix, args.conf)
    opts = Options(prefix, args.conf, replay_delay=args.replay_delay,
                   event_delay=args.event_delay,
                   copilot_restart_delay=args.copilot_restart_delay)
    return asyncio.run(Sim(opts).run())


if __name__ == "__main__":
    sys.exit(main())
