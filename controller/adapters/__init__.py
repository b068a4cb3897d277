"""Adapters: the thin I/O layer behind the Protocols of controller/ports/.

store (lego-layout certificate files), statusfile, lock, ACME client, challenge responders, NJet
API client, TLS probe, MQTT listener, admin HTTP, hooks and webhooks, DNS providers. Steps
(observe, execute, reconcile) call them through controller/ports/; the pure core never imports
them.
"""
