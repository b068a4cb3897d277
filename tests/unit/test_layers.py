"""The layers of controller/: one map from module to layer, default-deny, and what each layer may
import and do. A module under controller/ that LAYER_OF does not place fails the test, so a new
module is placed on purpose (and named in README.md's layers bullet and controller/__init__.py).

Layers, bottom-up. A module imports controller modules only from the layers its own layer may
use (MAY_USE; its own included). Every import counts: function-level and TYPE_CHECKING ones too.
  core         pure: no I/O, process, clock or randomness library; no call that touches a file
               (open(), Path.read_*/write_*/stat/exists/..., os.path.abspath) or reads a clock
  support      process-wide helpers (logging, the metrics registry, gc pause, fault points): may
               touch the process (stderr, signals, gc), never a file, the network or asyncio
  loading      reads files (the TOML, njet.conf and its includes, desired state): no network or
               async library, and no write of any kind
  adapters     controller/adapters/<concern>/ (store, acme, challenges, njet, mqtt, admin): all
               the I/O; a subpackage uses another only through a seam listed in ADAPTER_SEAMS
  steps        observe, execute, reconcile: core and support only, never an adapter or a loader
               (they reach the store, the CA, NJet and njet.conf through the Protocols of ports/);
               asyncio but no network library; they may read (observe reads the bootstrap
               certificates njet.conf names), never write
  composition  app, service, admin_backend, cli: build the adapters and hand them to the steps
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "controller"

LAYERS = ("core", "support", "loading", "adapters", "steps", "composition")
MAY_USE: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "support": frozenset({"core", "support"}),
    "loading": frozenset({"core", "support", "loading"}),
    "adapters": frozenset({"core", "support", "loading", "adapters"}),
    "steps": frozenset({"core", "support", "steps"}),
    "composition": frozenset(LAYERS),
}

# The one map. A key ending in ".*" places that package and every module below it (so a new file
# in controller/adapters/store/ is an adapter without an edit here); an exact key wins over it.
LAYER_OF: dict[str, str] = {
    "controller": "core",  # the package itself: __version__ and the layers docstring
    # core (pure)
    "controller.errors": "core",
    "controller.model": "core",
    "controller.reasons": "core",
    "controller.status": "core",
    "controller.renewal_requests": "core",
    "controller.paths": "core",
    "controller.listens": "core",
    "controller.certinfo": "core",
    "controller.njetmatch": "core",
    "controller.events": "core",
    "controller.servernames": "core",
    "controller.ports.*": "core",
    "controller.policy": "core",
    "controller.policies.*": "core",
    "controller.plan": "core",
    "controller.fold": "core",
    "controller.render": "core",
    # support
    "controller.logs": "support",
    "controller.metrics": "support",
    "controller.promtext": "support",
    "controller.gcpause": "support",
    "controller.clock": "support",  # the one place that reads the system clock
    "controller.faultpoints": "support",
    # loading
    "controller.config": "loading",
    "controller.config_sections": "loading",
    "controller.njetconf": "loading",
    "controller.conffiles": "loading",
    "controller.desired": "loading",
    "controller.desired_source": "loading",
    "controller.dnsconfig": "loading",
    "controller.storeconfig": "loading",
    # adapters
    "controller.adapters.*": "adapters",
    # steps
    "controller.observe": "steps",
    "controller.execute": "steps",
    "controller.apply": "steps",
    "controller.ca_fallback": "steps",
    "controller.reconcile": "steps",
    "controller.ari": "steps",
    "controller.threads": "support",  # blocking work on daemon threads, off the event loop
    # composition
    "controller.admin_backend": "composition",
    "controller.pass_metrics": "composition",
    "controller.app": "composition",
    "controller.service": "composition",
    "controller.cli": "composition",
    "controller.cli_gc": "composition",
    "controller.cli_admin": "composition",
    "controller.cli_certs": "composition",
    "controller.cli_show": "composition",
    "controller.cli_output": "composition",
    "controller.fleet": "composition",
    "controller.cli_store": "composition",
}

# Adapter subpackages import no other adapter subpackage except through these seams
# ((importing subpackage, imported module): why).
ADAPTER_SEAMS: dict[tuple[str, str], str] = {
    ("acme", "controller.adapters.store.fsutil"): "the account files are written atomically",
    ("acme", "controller.adapters.challenges.solvers"): "the client drives a challenge solver",
    ("acme", "controller.adapters.challenges.tls_alpn"): "registers tls-alpn-01 with acme",
    ("challenges", "controller.adapters.njet.api"): "http-01 through NJet edits a location",
    ("challenges", "controller.adapters.njet.wire"): "http-01 through NJet edits a location",
    ("dns", "controller.adapters.store.fsutil"): "secrets read and pending cleanups written safely",
    ("pg", "controller.adapters.store.lego"): "fleet mode mirrors the shared store into .lego/",
    ("pg", "controller.adapters.store.fsutil"): "account files are written atomically, 0600",
    ("pg", "controller.adapters.store.gcconfirm"): "the deletion guard's release: one JSON body",
}

NETWORK_OR_ASYNC = ("asyncio", "aiohttp", "socket", "ssl", "_ssl", "selectors", "subprocess",
                    "multiprocessing", "concurrent", "gmqtt", "paho", "acme", "josepy",
                    "requests", "urllib3", "tenacity", "yarl", "http", "urllib.request")
PROCESS_FILES_CLOCK = ("os", "io", "glob", "shutil", "tempfile", "fcntl", "mmap", "signal",
                       "threading", "gc", "logging", "sys", "time", "random", "secrets", "uuid")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": NETWORK_OR_ASYNC + PROCESS_FILES_CLOCK,
    "support": NETWORK_OR_ASYNC,
    "loading": NETWORK_OR_ASYNC,
    "adapters": (),
    "steps": tuple(lib for lib in NETWORK_OR_ASYNC if lib != "asyncio"),
    "composition": (),
}
# the one exception to a layer's library rule, with why
ALLOWED_LIBRARIES: dict[str, tuple[str, ...]] = {
    # awaits blocking calls made on daemon threads: the steps (njet.conf, store scans) and the
    # ACME adapter (CA calls) share it, so it sits below both
    "controller.threads": ("asyncio",),
}
# calls (by function or method name) that touch the file system or the process's working dir:
# open(), Path's methods, os.path's functions that look at the disk
TOUCHES_FILES = frozenset({
    "open", "read_text", "read_bytes", "write_text", "write_bytes", "exists", "stat", "lstat",
    "is_file", "is_dir", "is_symlink", "iterdir", "glob", "rglob", "mkdir", "rmdir", "unlink",
    "touch", "chmod", "rename", "resolve", "samefile", "readlink", "symlink_to", "hardlink_to",
    "absolute", "cwd", "home", "expanduser", "abspath", "realpath", "getsize", "getmtime",
    "isfile", "isdir", "islink", "lexists",
})
# writes: Path's writing methods (by name), os and shutil functions (by dotted name), open()
# with a writing mode, os.open() with a writing flag
WRITE_METHODS = frozenset({"write_text", "write_bytes", "mkdir", "rmdir", "unlink", "touch",
                           "chmod", "rename", "symlink_to", "hardlink_to"})
WRITE_FUNCTIONS = frozenset(f"os.{f}" for f in (
    "write", "remove", "unlink", "rename", "renames", "replace", "mkdir", "makedirs", "rmdir",
    "removedirs", "chmod", "chown", "link", "symlink", "truncate", "ftruncate", "mkfifo"))
WRITE_FLAGS = frozenset({"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"})
CLOCKS = frozenset({"now", "utcnow", "today"})


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def rel(self) -> str:
        return str(self.path.relative_to(REPO))

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def discover() -> list[Module]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(Module(".".join(parts), path))
    return out


MODULES = discover()
NAMES = {m.name for m in MODULES}


def layer_of(name: str) -> str | None:
    if name in LAYER_OF:
        return LAYER_OF[name]
    best: tuple[int, str] | None = None
    for key, layer in LAYER_OF.items():
        if key.endswith(".*"):
            pkg = key[:-2]
            if (name == pkg or name.startswith(pkg + ".")) and (best is None or len(pkg) > best[0]):
                best = (len(pkg), layer)
    return best[1] if best else None


@cache
def tree_of(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imports_of(module: Module) -> set[str]:
    """Every module `module` imports (absolute names; `from pkg import sub` gives pkg.sub)."""
    out: set[str] = set()
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(tree_of(module.path)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            subs = {f"{source}.{a.name}" for a in node.names} & NAMES
            out.update(subs)
            if len(subs) < len(node.names):  # names defined in `source` itself
                out.add(source)
    return out


def controller_imports(module: Module) -> set[str]:
    return {i for i in imports_of(module) if i == "controller" or i.startswith("controller.")}


def _matches(name: str, libs: tuple[str, ...]) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in libs)


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _calls(module: Module) -> list[tuple[int, str, ast.Call]]:
    out = []
    for node in ast.walk(tree_of(module.path)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            out.append((node.lineno, name, node))
    return out


def _open_mode_writes(call: ast.Call) -> bool:
    mode = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return False
    if not isinstance(mode, ast.Constant) or not isinstance(mode.value, str):
        return True  # a computed mode may write
    return any(c in mode.value for c in "wax+")


def by_layer(*layers: str) -> list[Module]:
    return [m for m in MODULES if layer_of(m.name) in layers]


def ids(modules: list[Module]) -> list[str]:
    return [m.name for m in modules]


# --- the map ---------------------------------------------------------------------------------


def test_every_module_under_controller_is_placed_in_a_layer() -> None:
    unplaced = [f"{m.rel} ({m.name})" for m in MODULES if layer_of(m.name) is None]
    assert not unplaced, (
        f"not in any layer: {', '.join(unplaced)}. Add each to LAYER_OF in "
        "tests/unit/test_layers.py (one of " + ", ".join(LAYERS) + "), and name it in "
        "README.md's layers bullet and in controller/__init__.py's docstring")


def test_every_entry_of_the_map_names_a_module_and_a_layer() -> None:
    stale = [key for key in LAYER_OF if (key[:-2] if key.endswith(".*") else key) not in NAMES]
    assert not stale, f"LAYER_OF names modules that do not exist: {stale}"
    unknown = {key: layer for key, layer in LAYER_OF.items() if layer not in LAYERS}
    assert not unknown, f"LAYER_OF uses layers that do not exist: {unknown}"


def test_the_layers_may_only_use_layers_below_them() -> None:
    for i, layer in enumerate(LAYERS):
        assert MAY_USE[layer] <= set(LAYERS[: i + 1]), f"{layer} may use a layer above it"


# --- imports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES, ids=ids(MODULES))
def test_a_module_imports_only_from_the_layers_its_layer_may_use(module: Module) -> None:
    layer = layer_of(module.name)
    if layer is None:
        pytest.fail(f"{module.rel} is in no layer (see the first test)")
    bad = []
    for target in sorted(controller_imports(module)):
        target_layer = layer_of(target)
        if target_layer not in MAY_USE[layer]:
            bad.append(f"{target} ({target_layer or 'no layer'})")
    assert not bad, (f"{module.name} ({layer}) imports {', '.join(bad)}; {layer} may use "
                     f"{', '.join(sorted(MAY_USE[layer]))}")


@pytest.mark.parametrize("module", MODULES, ids=ids(MODULES))
def test_a_module_imports_no_library_its_layer_forbids(module: Module) -> None:
    layer = layer_of(module.name)
    if layer is None:
        pytest.fail(f"{module.rel} is in no layer (see the first test)")
    allowed = ALLOWED_LIBRARIES.get(module.name, ())
    bad = sorted(i for i in imports_of(module)
                 if _matches(i, FORBIDDEN[layer]) and not _matches(i, allowed))
    assert not bad, f"{module.name} ({layer}) imports {bad}"


def test_adapter_subpackages_use_each_other_only_through_the_listed_seams() -> None:
    bad = []
    used: set[tuple[str, str]] = set()
    for module in by_layer("adapters"):
        parts = module.name.split(".")
        if len(parts) < 3:
            continue  # controller.adapters itself
        own = parts[2]
        for target in sorted(controller_imports(module)):
            tparts = target.split(".")
            if tparts[:2] != ["controller", "adapters"] or len(tparts) < 3 or tparts[2] == own:
                continue
            if (own, target) in ADAPTER_SEAMS:
                used.add((own, target))
            else:
                bad.append(f"{module.name} imports {target}")
    assert not bad, "adapter subpackages reach into each other outside ADAPTER_SEAMS: " + (
        "; ".join(bad))
    unused = sorted(set(ADAPTER_SEAMS) - used)
    assert not unused, f"ADAPTER_SEAMS lists seams no module uses any more: {unused}"


# --- what the code does ----------------------------------------------------------------------


@pytest.mark.parametrize("module", by_layer("core", "support"),
                         ids=ids(by_layer("core", "support")))
def test_core_and_support_never_touch_a_file(module: Module) -> None:
    bad = [f"line {line}: {name}()" for line, name, _ in _calls(module)
           if name in TOUCHES_FILES]
    assert not bad, f"{module.name} ({layer_of(module.name)}) touches files: {bad}"


@pytest.mark.parametrize("module", by_layer("core"), ids=ids(by_layer("core")))
def test_core_never_reads_a_clock(module: Module) -> None:
    bad = [f"line {line}: {_dotted(call.func)}()" for line, name, call in _calls(module)
           if name in CLOCKS]
    assert not bad, f"{module.name} reads a clock (take `now` as a parameter): {bad}"


@pytest.mark.parametrize("module", by_layer("loading", "steps"),
                         ids=ids(by_layer("loading", "steps")))
def test_loading_and_steps_never_write(module: Module) -> None:
    bad = []
    for line, name, call in _calls(module):
        dotted = _dotted(call.func)
        if dotted == "os.open":
            writes = any(isinstance(n, ast.Attribute) and n.attr in WRITE_FLAGS
                         for arg in call.args[1:] for n in ast.walk(arg))
        elif name in ("open", "fdopen"):
            writes = _open_mode_writes(call)
        else:
            writes = (name in WRITE_METHODS or dotted in WRITE_FUNCTIONS
                      or dotted.startswith("shutil."))
        if writes:
            bad.append(f"line {line}: {dotted}()")
    assert not bad, f"{module.name} ({layer_of(module.name)}) writes: {bad}"


# --- the same layers in the docs -------------------------------------------------------------


def _paragraphs(text: str) -> dict[str, str]:
    """The text from each layer's heading (its name at the start of an indented line, or in
    bold) up to the next layer's heading."""
    out: dict[str, str] = {}
    positions = []
    for layer in LAYERS:
        found = re.search(rf"(?m)^[ \t]+{layer}\b|\*\*{layer}\*\*", text)
        assert found is not None, f"layer {layer!r} not described"
        positions.append((found.start(), layer))
    positions.sort()
    for (at, layer), (nxt, _) in zip(positions, [*positions[1:], (len(text), "")], strict=True):
        out[layer] = text[at:nxt]
    return out


def _check_doc(where: str, section: str, *, quoted: bool) -> None:
    """Every mapped module is named in its layer's paragraph (a package as `name`, `name/` or
    `controller/name/`), and every adapter subpackage as `sub/`; `quoted`: in backticks."""
    paragraphs = _paragraphs(section)
    q = "`" if quoted else ""
    missing = []
    for key, layer in LAYER_OF.items():
        if key == "controller":
            continue
        name = re.escape(key.removeprefix("controller.").removesuffix(".*"))
        if not re.search(rf"(?<![\w./]){q}(?:controller/)?{name}/?{q}(?!\w)", paragraphs[layer]):
            missing.append(f"{name} ({layer})")
    for sub in sorted({m.name.split(".")[2] for m in by_layer("adapters") if
                       m.name.count(".") >= 2}):
        if f"{q}{sub}/{q}" not in paragraphs["adapters"]:
            missing.append(f"adapters/{sub}/")
    assert not missing, f"{where} does not name, under its layer: {', '.join(missing)}"


def test_the_package_docstring_states_the_same_layers() -> None:
    doc = ast.get_docstring(tree_of(ROOT / "__init__.py")) or ""
    assert "Layers" in doc
    _check_doc("controller/__init__.py's docstring", doc[doc.index("Layers"):], quoted=False)


def test_the_readme_states_the_same_layers() -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.find("- Layers")
    assert start >= 0, "README.md has no '- Layers' bullet"
    end = readme.find("\n- ", start + 1)
    _check_doc("README.md's layers bullet", readme[start: end if end > 0 else None],
               quoted=True)
