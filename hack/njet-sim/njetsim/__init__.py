"""NJet simulator: a working stand-in process for NJet (control API, TLS, MQTT, copilots).

Started through the `njet-sim` launcher next to this package (`njet-sim -p PREFIX -c CONF`).
The behaviour it reproduces is the recorded contract in shared/njet-contract/ (README there);
see hack/njet-sim/README.md for flags and the sim-only `/__sim/` control endpoints.
"""

VERSION = "njet/4.0.1.0 (njet-sim)"
