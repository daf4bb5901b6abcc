"""The layout is the architecture: these tests fail when a change breaks it.

The rules are the ones drawn in docs/architecture.md: the product wing (pipeline, server,
edge) and the lab wing (clients, bench, netem, report) meet only in the shared floor
(frames, clock, errors, audio, measure, trace, wire); no import cycles, at module or at
function level; a client imports no server, runtime or engine; no module past 450 lines.
The import graph is read from the source with ``ast`` (every ``import`` anywhere in a
module counts, including those inside functions), so a test here never imports the
package it checks.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "halfsec"

MAX_LINES = 450

# Where each module belongs, by longest matching prefix of its dotted name.
GROUPS: dict[str, str] = {
    "halfsec": "core",
    "halfsec.frames": "core",
    "halfsec.clock": "core",
    "halfsec.errors": "core",
    "halfsec.textnorm": "core",
    "halfsec.audio": "audio",
    "halfsec.measure": "measure",
    "halfsec.trace": "trace",
    "halfsec.wire": "wire",
    "halfsec.turn": "pipeline",
    "halfsec.stt": "pipeline",
    "halfsec.logic": "pipeline",
    "halfsec.tts": "pipeline",
    "halfsec.runtime": "pipeline",
    "halfsec.config": "pipeline",
    "halfsec.plugins": "pipeline",
    "halfsec.models": "pipeline",
    "halfsec.remote_api": "pipeline",
    "halfsec.server": "server",
    "halfsec.edge": "edge",
    "halfsec.gateway": "gateway",
    "halfsec.lab.clients": "lab.clients",
    "halfsec.lab.netem": "lab.netem",
    "halfsec.lab.report": "lab.report",
    "halfsec.lab.bench": "lab.bench",
    "halfsec.lab.peer": "lab.peer",
    "halfsec.lab.load": "lab.load",
    "halfsec.lab.eot": "lab.eot",
    "halfsec.lab.regions": "lab.regions",
    "halfsec.lab": "lab",
    "halfsec.cli": "cli",
}

SHARED = {"core", "audio", "measure", "trace", "wire"}

# Which group may import which (besides itself).  The shared floor looks only down; the
# two wings never import each other; ``cli`` is the top and may use everything.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "audio": {"core"},
    "measure": {"core", "audio"},
    "trace": {"core", "measure"},
    "wire": {"core", "audio", "measure", "trace"},
    "pipeline": SHARED - {"wire"},
    "server": SHARED | {"pipeline"},
    "edge": SHARED | {"pipeline", "server"},
    # The gateway writes and runs Envoy's configuration; it needs no engine and no server.
    "gateway": SHARED,
    "lab": SHARED,
    "lab.netem": SHARED,
    "lab.report": SHARED,
    "lab.clients": SHARED | {"lab.netem"},
    # The bench drives clients and the net lab; it runs the server as a subprocess and
    # never imports it.  It may synthesize its built-in corpus with the TTS engines.
    "lab.bench": SHARED | {"lab.clients", "lab.netem", "lab.report", "lab"},
    # The side-by-side harness runs halfsec's own pipeline in-process next to Pipecat.
    "lab.peer": SHARED | {"pipeline", "lab", "lab.report"},
    # Load runs many bench clients at once against a server subprocess.
    "lab.load": SHARED | {"lab.clients", "lab.netem", "lab.report", "lab.bench", "lab"},
    # The end-of-turn evaluation replays the pipeline's own end-of-turn policies in-process.
    "lab.eot": SHARED | {"pipeline", "lab", "lab.report"},
    # Regions start servers and Envoy as subprocesses in namespaces and drive clients.
    "lab.regions": SHARED
    | {"lab.clients", "lab.netem", "lab.report", "lab.bench", "lab.load", "lab"},
    "cli": SHARED
    | {
        "pipeline",
        "server",
        "edge",
        "gateway",
        "lab",
        "lab.clients",
        "lab.netem",
        "lab.report",
        "lab.bench",
        "lab.peer",
        "lab.load",
        "lab.eot",
        "lab.regions",
    },
}

# Third-party packages that are engines (or pull one in): a client must not need them.
ENGINE_PACKAGES = ("onnxruntime", "ctranslate2", "faster_whisper", "piper", "pocketsphinx")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


MODULES = all_modules()


def group_of(module: str) -> str:
    best = ""
    for prefix in GROUPS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return GROUPS[best]


def allowed(src_module: str, dst_module: str) -> bool:
    src, dst = group_of(src_module), group_of(dst_module)
    if src == dst or dst in ALLOWED[src]:
        return True
    # The bench synthesizes its built-in corpus with the TTS engines (and nothing else
    # of the pipeline); a client never does.
    return src == "lab.bench" and dst_module.startswith("halfsec.tts.")


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """(imported halfsec module, line) for every import statement anywhere in ``module``.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("halfsec"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_pkg:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("halfsec"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def third_party_imports(module: str) -> Iterator[tuple[str, int]]:
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module.split(".")[0], node.lineno


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _ in imports_of(m):
            if target in MODULES and target != m:
                graph[m].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_every_module_has_a_group() -> None:
    for m in MODULES:
        assert group_of(m) in ALLOWED, m


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, f"import cycles (module or function level): {found}"


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle test above must be able to fail."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_follow_the_wings() -> None:
    bad = []
    for m in MODULES:
        src = group_of(m)
        for target, line in imports_of(m):
            if target not in MODULES:
                continue
            dst = group_of(target)
            if not allowed(m, target):
                bad.append(f"{MODULES[m].relative_to(SRC)}:{line}: {src} -> {dst} ({target})")
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_the_wing_rule_can_fail() -> None:
    assert not allowed("halfsec.lab.clients.websocket", "halfsec.server.app")
    assert not allowed("halfsec.lab.clients.webrtc", "halfsec.runtime.session")
    assert not allowed("halfsec.lab.clients.websocket", "halfsec.tts.factory")
    assert allowed("halfsec.lab.bench.corpus", "halfsec.tts.factory")
    assert not allowed("halfsec.lab.bench.run", "halfsec.stt.whisper")
    assert not allowed("halfsec.wire.jitter", "halfsec.runtime.session")
    assert not allowed("halfsec.runtime.session", "halfsec.lab.report.stats")
    assert not allowed("halfsec.server.app", "halfsec.lab.clients.websocket")
    assert allowed("halfsec.server.app", "halfsec.wire.protocol")


@pytest.mark.parametrize("group", ["lab.clients", "wire", "measure", "lab.netem", "lab.report"])
def test_shared_and_client_code_names_no_engine(group: str) -> None:
    bad = [
        f"{MODULES[m].relative_to(SRC)}:{line}: {pkg}"
        for m in MODULES
        if group_of(m) == group
        for pkg, line in third_party_imports(m)
        if pkg in ENGINE_PACKAGES
    ]
    assert not bad, f"{group} imports an engine: {bad}"


def test_a_client_imports_without_any_engine_installed() -> None:
    """Import every client module in a fresh interpreter where the engines cannot load:
    a client must install and run without the pipeline."""
    clients = sorted(m for m in MODULES if group_of(m) in {"lab.clients", "wire", "measure"})
    code = (
        "import sys\n"
        f"for name in {ENGINE_PACKAGES!r}:\n"
        "    sys.modules[name] = None\n"
        "import importlib\n"
        f"for m in {clients!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        f"{('halfsec.runtime', 'halfsec.server', 'halfsec.stt', 'halfsec.tts', 'halfsec.turn')!r}"
        " or any(n == p or n.startswith(p + '.') for p in "
        f"{('halfsec.runtime', 'halfsec.server', 'halfsec.stt', 'halfsec.tts', 'halfsec.turn', 'halfsec.edge')!r}))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


def test_no_module_past_the_size_limit() -> None:
    big = {
        str(p.relative_to(SRC)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_package_map_matches_the_tree() -> None:
    """halfsec/__init__.py's docstring names every package, and nothing that isn't there."""
    doc = ast.get_docstring(ast.parse((PKG / "__init__.py").read_text())) or ""
    packages = {
        str(p.parent.relative_to(PKG)).replace("/", ".")
        for p in PKG.rglob("__init__.py")
        if p.parent != PKG
    }
    named = set(re.findall(r"``([a-z_][a-z_.]*)``", doc))
    missing = sorted(packages - named)
    assert not missing, f"packages missing from the map in halfsec/__init__.py: {missing}"
    stale = sorted(
        n
        for n in named
        if not (PKG / n.replace(".", "/")).is_dir()
        and not (PKG / (n.replace(".", "/") + ".py")).exists()
    )
    assert not stale, f"the package map names what does not exist: {stale}"


def test_span_names_come_from_the_trace_names_module() -> None:
    """A span or span event is always named by a constant from halfsec.trace.names."""
    bad = []
    for m, path in MODULES.items():
        if m == "halfsec.trace.names":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"start_span", "start_as_current_span", "add_event"}
                and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
            ):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not bad, f"span names written as literals: {bad}"


def test_internal_code_never_uses_the_top_level_api() -> None:
    """``halfsec/__init__.py`` re-exports the public API lazily (``_API``, PEP 562), which
    points from the core up into the runtime and the server.  That edge is for users only:
    a halfsec module importing an ``_API`` name from ``halfsec`` would hide a real upward
    import from the rules above, so every module imports from the defining module."""
    init = ast.parse((PKG / "__init__.py").read_text())
    api: set[str] = set()
    for node in init.body:
        if (
            isinstance(node, ast.AnnAssign | ast.Assign)
            and isinstance(node.value, ast.Dict)
            and "_API" in ast.unparse(node)
        ):
            api = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    assert api, "halfsec/__init__.py has no _API table (update this test with the new design)"
    bad = []
    for m, path in MODULES.items():
        if m == "halfsec":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "halfsec" and not node.level:
                used = {a.name for a in node.names} & api
                if used:
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {sorted(used)}")
    assert not bad, f"internal imports of the lazy top-level API: {bad}"
