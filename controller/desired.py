"""The desired state: which certificates should exist, built from njet.conf and runtime events.

Called by reconcile (load_desired at every pass, merge_desired for servers NJet announced at
runtime) and by the CLI's `diff`. Pure apart from reading the conf files through conffiles.

Rules: one CertificateSpec per managed server block with an `ssl` listen; its domain (store
key, CN) is the block's first usable server_name, its SAN every usable name (lowercased, trailing
dot stripped, de-duplicated in order). Blocks whose first usable name is the same share ONE spec
(names and listens united, first block first), so the result never flips between them. Names
that cannot be issued become NameWarnings, never silently dropped. A block whose keyType is a
list of two (a dual certificate) is still one spec here; desired_source.expand_dual splits it
into its two certificates (`<name>` and `<name>@<slot>`) once the [certificates] tables apply.

Which names a block's server_name values stand for (wildcards included: `wildcards` says
whether a [dns] section makes dns-01 available) is servernames.py's rule, shared with the
servers NJet announces at runtime (events.py); its functions are re-exported here.
Conf-level warnings (an include glob matching nothing) travel the same way: a NameWarning whose
name is the directive (`include conf.d/*.conf`) and whose origin is its file:line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from controller.conffiles import ConfWarning, load_conf
from controller.gcpause import gc_paused
from controller.model import CertificateSpec, Desired, KeyType, NameWarning, Source
from controller.njetconf import DEFAULT_MAX_CONF_BYTES, ServerBlock, http_servers
from controller.servernames import canonical_name as canonical_name
from controller.servernames import is_wildcard as is_wildcard
from controller.servernames import name_problem as name_problem
from controller.servernames import usable_names as usable_names


def _unite(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def _add(specs: dict[str, CertificateSpec], spec: CertificateSpec) -> None:
    old = specs.get(spec.domain)
    if old is None:
        specs[spec.domain] = spec
        return
    specs[spec.domain] = replace(
        old,
        names=_unite(old.names, spec.names),
        listens=_unite(old.listens, spec.listens),
        key_type=old.key_type or spec.key_type,
        bootstrap_cert=old.bootstrap_cert or spec.bootstrap_cert,
    )


def desired_from_servers(
    servers: Sequence[ServerBlock], *, key_type: KeyType | None = None, wildcards: bool = False
) -> Desired:
    """One spec per managed block with an ssl listen (merged by first usable name);
    `wildcards`: see the module docstring."""
    specs: dict[str, CertificateSpec] = {}
    warnings: list[NameWarning] = []
    for block in servers:
        if not block.managed or not block.has_ssl_listen:
            continue
        origin = f"{block.file}:{block.line}"
        if not block.names:
            warnings.append(NameWarning("", "managed server block has no server_name", origin))
            continue
        names, problems = usable_names(block.names, origin, wildcards=wildcards)
        warnings.extend(problems)
        if not names:
            continue
        listens = _unite((), (listen.address for listen in block.listens if listen.ssl))
        _add(specs, CertificateSpec(
            domain=names[0],
            names=names,
            listens=listens,
            key_type=key_type,
            source=Source.CONF,
            origin=origin,
            bootstrap_cert=block.ssl_certificate,
        ))
    return Desired(specs=specs, warnings=tuple(warnings))


def load_desired(conf_path: Path, *, key_type: KeyType | None = None,
                 max_conf_bytes: int = DEFAULT_MAX_CONF_BYTES, wildcards: bool = False) -> Desired:
    """Parse njet.conf (includes expanded) into the desired state.

    Relative ssl_certificate paths resolve against the main conf file's directory, which is
    what nginx/NJet use (their conf_prefix). Raises ConfSyntaxError (a ConfigError) on a broken
    conf, naming file:line, and when the conf breaks one of conffiles' bounds (`max_conf_bytes`
    is [njet] maxConfBytes).
    """
    return load_desired_and_files(conf_path, key_type=key_type,
                                  max_conf_bytes=max_conf_bytes, wildcards=wildcards)[0]


def load_desired_and_files(
    conf_path: Path, *, key_type: KeyType | None = None,
    max_conf_bytes: int = DEFAULT_MAX_CONF_BYTES, wildcards: bool = False,
) -> tuple[Desired, frozenset[str]]:
    """load_desired, plus every file the parse read (njet.conf and its includes) and every
    folder an include glob looked into (what a cache of the result must watch)."""
    conf_dir = Path(os.path.abspath(conf_path)).parent
    with gc_paused():
        loaded = load_conf(conf_path, max_bytes=max_conf_bytes)
        servers = http_servers(loaded.directives, conf_dir=conf_dir)
        base = desired_from_servers(servers, key_type=key_type, wildcards=wildcards)
        if loaded.warnings:
            base = replace(base, warnings=(*map(_conf_warning, loaded.warnings),
                                           *base.warnings))
        return base, loaded.files


def _conf_warning(w: ConfWarning) -> NameWarning:
    return NameWarning(w.subject, w.reason, w.origin)


def merge_desired(base: Desired, extra: Iterable[CertificateSpec], *,
                  wildcards: bool = False) -> Desired:
    """Unite runtime-announced specs into `base`: same domain -> names and listens united (base
    first, base's other fields kept). Extra names are cleaned like conf names (`wildcards` as
    there); unusable ones become warnings with the spec's origin."""
    specs = dict(base.specs)
    warnings = list(base.warnings)
    for spec in extra:
        origin = spec.origin or spec.source.value
        names, problems = usable_names(spec.names, origin, wildcards=wildcards)
        warnings.extend(problems)
        if not names:
            continue
        _add(specs, replace(spec, domain=names[0], names=names, listens=_unite((), spec.listens)))
    return Desired(specs=specs, warnings=tuple(warnings))
