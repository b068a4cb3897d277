"""Benchmarks of njet-cert-manager against a local Pebble: `python -m bench` (hack/bench.sh).

Modules: floor (bare acme, the least time one cert takes), served (NJet event → cert served),
throughput (controller vs lego vs certbot, seconds per cert), scale (10,000 blocks and certs),
events (a burst of MQTT events → reconciles); runner, report, common and the fixtures
(simenv, scalegen, scale_child, peers) serve them. See bench/README.md.
"""
