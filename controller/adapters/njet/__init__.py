"""NJet: the control API client, its wire models and typed errors, and the TLS probe that proves
what NJet serves."""
