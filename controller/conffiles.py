"""Reading njet.conf from disk: the main file and every `include`, expanded in place, bounded.

Called by desired.py (load_desired_and_files) at every pass and by the NJet simulator; the
parsing itself is njetconf.py's (pure). This is the "loading" layer: it reads files, nothing else.

`include` paths (globs allowed, sorted order) resolve against the directory of the main conf
file, like nginx's conf_prefix, also inside included files. A missing plain path is an error; a
glob matching nothing is a ConfWarning naming the include's file:line (an unmounted volume or a
bad edit would otherwise silently empty the desired state).

Every file is opened with O_NONBLOCK (a FIFO cannot hang us) and must be a regular file once
opened (a symlink is fine, its target is what counts: sites-enabled/ is made of them), so
`include /dev/zero;` is refused before a byte is read. Bounds, each a ConfSyntaxError naming the
file:line where it was hit:
  - `max_bytes` ([njet] maxConfBytes, default 256 MiB): the bytes of njet.conf plus every
    include, counted each time a file is expanded (a file included twice counts twice);
  - MAX_INCLUDES included-file expansions in all, so an include bomb (files that include the
    next one twice) stops after a bounded amount of work instead of running for minutes;
  - includes nested at most njetconf.MAX_DEPTH deep, and no include loops.
A file expanded again in the same load is not read or parsed again (it comes from a per-load
cache), which keeps the work up to those bounds small.
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller.njetconf import (
    DEFAULT_MAX_CONF_BYTES,
    MAX_DEPTH,
    ConfSyntaxError,
    Directive,
    parse_text,
)
from controller.paths import file_kind

MAX_INCLUDES = 100_000  # included-file expansions per load (10,000 vhost files fit ten times)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ConfWarning:
    """Something in njet.conf that is not an error but may be a mistake (a glob matching
    nothing), with where it is."""

    subject: str  # e.g. 'include conf.d/*.conf'
    reason: str
    file: str
    line: int

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class LoadedConf:
    directives: tuple[Directive, ...]
    warnings: tuple[ConfWarning, ...]
    # every file read, and every folder an include glob looked into (a new matching file
    # changes that folder): what a cache of this load must watch
    files: frozenset[str]


@dataclass
class _Load:
    conf_dir: Path
    max_bytes: int
    used: int = 0
    includes: int = 0
    parsed: dict[str, tuple[int, tuple[Directive, ...]]] = field(default_factory=dict)
    matches: dict[str, list[Path]] = field(default_factory=dict)
    warnings: dict[tuple[str, int], ConfWarning] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)


def load_conf(path: Path, *, max_bytes: int = DEFAULT_MAX_CONF_BYTES) -> LoadedConf:
    """Parse the main conf file with every `include` expanded in place, recursively."""
    main = Path(os.path.abspath(path))
    state = _Load(main.parent, max_bytes)
    data = _read(main, None, max_bytes, max_bytes)
    state.used = len(data)
    state.files.add(str(main))
    directives = parse_text(data.decode("utf-8", errors="replace"), file=str(main))
    out = _expand(directives, state, (os.path.realpath(main),), 0)
    return LoadedConf(out, tuple(state.warnings.values()), frozenset(state.files))


def parse_file(path: Path, *, max_bytes: int = DEFAULT_MAX_CONF_BYTES) -> tuple[Directive, ...]:
    """load_conf's directives alone (the NJet simulator's view: warnings are not its concern)."""
    return load_conf(path, max_bytes=max_bytes).directives


def _kind(mode: int) -> str:
    return file_kind(mode, otherwise="a special file")


def _site_error(site: Directive | None, path: Path, why: str) -> ConfSyntaxError:
    if site is None:
        return ConfSyntaxError(f"cannot read the configuration file: {why}", file=str(path),
                               line=0)
    return ConfSyntaxError(f'include "{site.args[0]}": cannot read {path}: {why}',
                           file=site.file, line=site.line)


def _over_budget(site: Directive | None, path: Path, cap: int) -> ConfSyntaxError:
    what = "it is" if site is None else "njet.conf and its includes would be"
    return _site_error(site, path, f"{what} larger than [njet] maxConfBytes ({cap} bytes)")


def _read(path: Path, site: Directive | None, limit: int, cap: int) -> bytes:
    """The bytes of a regular file (never blocking on a FIFO), at most `limit` of them (what
    is left of the load's `cap`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _site_error(site, path, exc.strerror or type(exc).__name__) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _site_error(site, path, f"not a regular file ({_kind(st.st_mode)})")
        if st.st_size > limit:
            raise _over_budget(site, path, cap)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the size may change while we read: bounded by limit, not st
            chunk = os.read(fd, min(max(st.st_size, 1 << 16), limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise _over_budget(site, path, cap)
        return b"".join(chunks)
    except OSError as exc:
        raise _site_error(site, path, exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)


def _included(site: Directive, target: Path, state: _Load) -> tuple[Directive, ...]:
    """The parsed directives of one include target, charged to the load's budgets."""
    state.includes += 1
    if state.includes > MAX_INCLUDES:
        raise ConfSyntaxError(
            f'include "{site.args[0]}": more than {MAX_INCLUDES} included files in all '
            "(files including each other many times over?)", file=site.file, line=site.line)
    key = str(target)
    cached = state.parsed.get(key)
    if cached is None:
        data = _read(target, site, state.max_bytes - state.used, state.max_bytes)
        cached = (len(data), parse_text(data.decode("utf-8", errors="replace"), file=key))
        state.parsed[key] = cached
        state.files.add(key)
    size, directives = cached
    if state.used + size > state.max_bytes:
        raise _over_budget(site, target, state.max_bytes)
    state.used += size
    return directives


def _expand(directives: tuple[Directive, ...], state: _Load, stack: tuple[str, ...],
            level: int) -> tuple[Directive, ...]:
    out: list[Directive] = []
    for d in directives:
        if level > 2 * MAX_DEPTH:
            raise ConfSyntaxError("blocks and includes nested too deep", file=d.file, line=d.line)
        if d.name == "include" and d.block is None:
            for target in _targets(d, state):
                real = os.path.realpath(target)
                if real in stack:
                    chain = " -> ".join((*stack[stack.index(real):], real))
                    raise ConfSyntaxError(f'include "{d.args[0]}": include loop ({chain})',
                                          file=d.file, line=d.line)
                if len(stack) >= MAX_DEPTH:
                    raise ConfSyntaxError(f'include "{d.args[0]}": includes nested deeper '
                                          f"than {MAX_DEPTH} levels", file=d.file, line=d.line)
                inner = _included(d, target, state)
                out.extend(_expand(inner, state, (*stack, real), level + 1))
        elif d.block is not None:
            out.append(replace(d, block=_expand(d.block, state, stack, level + 1)))
        else:
            out.append(d)
    return tuple(out)


def _targets(site: Directive, state: _Load) -> list[Path]:
    pattern = site.args[0]
    if not any(c in pattern for c in _GLOB_CHARS):
        return [state.conf_dir / pattern]  # an absolute pattern replaces conf_dir
    found = state.matches.get(pattern)
    if found is None:
        full = os.path.join(glob.escape(str(state.conf_dir)), pattern)
        found = [Path(p) for p in sorted(glob.glob(full))]
        state.matches[pattern] = found
        state.files.add(_glob_folder(state.conf_dir, pattern))
    if not found and (site.file, site.line) not in state.warnings:
        state.warnings[(site.file, site.line)] = ConfWarning(
            f"include {pattern}",
            "matches no files (a missing folder or an unmounted volume?): no server is read "
            "from it",
            site.file, site.line)
    return found


def _glob_folder(conf_dir: Path, pattern: str) -> str:
    """The deepest folder of `pattern` without glob characters (where new matches appear)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in _GLOB_CHARS):
            break
        fixed.append(part)
    return os.path.normpath(os.path.join(conf_dir, *fixed))
