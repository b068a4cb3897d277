"""Builds the DnsProvider and the dns-01 solver from the TOML's `[dns]` section.

Called by app.py (build_solvers: the dns-01 solver is built when a certificate first needs it,
and at start when pending cleanups are left). `build_provider(dns, prefix)`:
- "rfc2136": adapters/dns/rfc2136.py, the TSIG secret read from `tsigSecretFile`;
- "exec": adapters/dns/exec_provider.py with `command` (a relative program path containing a
  "/" resolves against the prefix) and `timeout`;
- anything else: a dns-lexicon provider (adapters/dns/lexicon_provider.py, imported only then;
  it says what to install when dns-lexicon is missing) with the credentials of
  `credentialsFile`.
Relative files resolve against the NJet prefix. Errors name keys and files, never values.
"""

from __future__ import annotations

from pathlib import Path

from controller.adapters.dns.lookup import DnsLookup, Server
from controller.adapters.dns.pending import PendingCleanups
from controller.adapters.dns.solver import Dns01Solver
from controller.config import resolve_path
from controller.dnsconfig import DnsSection, split_host_port
from controller.ports import DnsProvider


def resolvers_of(dns: DnsSection) -> tuple[Server, ...]:
    return tuple(split_host_port(r) for r in dns.resolvers)


def build_provider(dns: DnsSection, prefix: Path) -> DnsProvider:
    """The provider `[dns] provider` names (see the module docstring)."""
    if dns.provider == "rfc2136":
        from controller.adapters.dns.rfc2136 import Rfc2136Provider, load_tsig_secret

        secret = b""
        if dns.tsigKeyName.strip():
            secret = load_tsig_secret(resolve_path(prefix, dns.tsigSecretFile.strip()))
        return Rfc2136Provider(split_host_port(dns.nameserver), key_name=dns.tsigKeyName.strip(),
                               secret=secret, algorithm=dns.tsigAlgorithm, ttl=dns.ttl)
    if dns.provider == "exec":
        from controller.adapters.dns.exec_provider import ExecProvider

        program, *args = dns.command
        if "/" in program and not Path(program).is_absolute():
            program = str(resolve_path(prefix, program))
        return ExecProvider([program, *args], timeout=dns.timeout.total_seconds())
    from controller.adapters.dns.lexicon_provider import LexiconProvider, load_credentials

    credentials = load_credentials(resolve_path(prefix, dns.credentialsFile.strip()))
    return LexiconProvider(dns.provider, credentials, zone=dns.zone, ttl=dns.ttl)


def build_solver(dns: DnsSection, prefix: Path, pending_path: Path, *,
                 read_only: bool = False) -> Dns01Solver:
    """The dns-01 solver over the configured provider; pending cleanups in `pending_path`."""
    return Dns01Solver(
        build_provider(dns, prefix),
        provider_name=dns.provider,
        lookup=DnsLookup(resolvers_of(dns)),
        pending=PendingCleanups(pending_path, read_only=read_only),
        zone=dns.zone,
        propagation_timeout=dns.propagationTimeout.total_seconds(),
        check_resolvers=dns.checks_resolvers,
    )
