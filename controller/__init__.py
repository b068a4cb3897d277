"""njet-cert-manager: keeps NJet's TLS certificates issued, renewed, applied and cleaned up
via ACME.

Layers (imports only go downwards; tests/unit/test_layers.py enforces it):
  pure core   model, reasons, errors, paths, njetconf, desired, certinfo, policy, plan,
              fold, render, status, njetmatch, events, config
  adapters    controller/adapters/* (store, ACME, challenges, NJet API, probe, MQTT, admin HTTP)
  steps       observe (the one gatherer), execute (runs actions), reconcile (the loop)
  entry       cli
"""

__version__ = "0.1.0"
