"""Harness pieces shared by the tests and the benchmarks (bench/); nothing here imports pytest.

- `tests.support.hackmods`: hack/ scripts imported by path (Pebble's run.py, faultproxy.py),
  Pebble's harness, its example EAB keys and the free-port picker.
- `tests.support.procs`: finding the controller's program, waiting for a condition, stopping a
  child process, a child's environment, the tail of a log.
- `tests.support.tomlgen`: the controller's TOML from dicts, and the `[acme]` section for Pebble.
- `tests.support.njetsim`: the NJet simulator process (hack/njet-sim), laying out its prefix,
  bootstrap certificates and the default conf.

The pytest fixtures built on these live in tests/fixtures/; bench/ (run as `python -m bench`
from the repository root) imports these modules directly.
"""
