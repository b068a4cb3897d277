"""Root pytest configuration: fixture modules under tests/fixtures/ are plugins, one concern per file."""

pytest_plugins = [
    "tests.fixtures.pebble",
    "tests.fixtures.dns",
    "tests.fixtures.njetsim",
    "tests.fixtures.mqtt",
    "tests.fixtures.faults",
    "tests.fixtures.pg",
    "tests.fixtures.pgcluster",
    "tests.fixtures.haproxy",
]
