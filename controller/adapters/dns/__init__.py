"""dns-01: the solver (solver.py) with its lookups (lookup.py), propagation checks
(propagation.py) and pending cleanups (pending.py), and the DNS providers it writes through:
RFC 2136 (rfc2136.py, dnspython), hosted services (lexicon_provider.py, dns-lexicon), a user's
program (exec_provider.py); providers.py builds them from the TOML's [dns] section."""
