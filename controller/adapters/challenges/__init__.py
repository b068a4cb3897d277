"""ACME challenge responders: the ChallengeSolver port implementations for http-01 (own server
or proxied through NJet) and tls-alpn-01, and the shared listening plumbing."""
