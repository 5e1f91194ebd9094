"""lutlm's modules import only downwards (DESIGN.md, "Layers"), and no two import each other.

Every module is parsed with `ast`, never imported, and every `import` of a lutlm module
counts, wherever it is: an import inside a function (a "lazy" one, often there to dodge a
cycle) runs as surely as one at the top, only later. Imports under `if TYPE_CHECKING:` never
run, so they cannot close a cycle; they still count for the layers, since an annotation
that names a higher layer is a dependency on it all the same.

Importing `a.b.c` from outside `a.b` also runs `a/b/__init__.py`: for cycles that package
counts as imported too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Where each package's sources are, as pyproject.toml's wheel.packages installs them
# (python/lutlm/kernels is only a git-ignored development symlink to kernels/).
SOURCES = {"lutlm": ROOT / "python" / "lutlm", "lutlm.kernels": ROOT / "kernels"}
# Compiled modules: nothing to parse, and they import nothing of lutlm.
EXTENSIONS = {"lutlm._C"}

# The layer of a module is the entry of its longest prefix here. A new top-level module or
# package must be placed here before the test passes.
LAYER_OF = {
    "lutlm.cli": "cli",
    "lutlm.server": "server",
    "lutlm.serve_ray": "server",
    "lutlm.tasks": "tasks",
    "lutlm": "api",  # lutlm/__init__.py: LLM, SamplingParams, set_num_threads, ...
    "lutlm.llm": "api",
    "lutlm.quantize": "api",  # quantize(): load a model, write it packed with its tokenizer
    "lutlm.engine": "engine",
    "lutlm.outputs": "engine",  # DESIGN: engine/outputs (deltas and finals, stop strings)
    "lutlm.model": "model",
    "lutlm.backends": "backends",
    "lutlm.quant": "quant",
    "lutlm.tokenizer": "tokenizer",
    "lutlm.formats": "formats",
    "lutlm.default_model": "formats",  # model resolution by name
    "lutlm.config": "base",
    "lutlm.model_config": "base",
    "lutlm.info": "base",
    "lutlm._C": "kernel",
    "lutlm.kernels": "kernel",
}

# Layer -> the layers it may import (its own is always allowed). From DESIGN.md's "Layers":
#
#   cli            the command line: starts servers, runs tasks, quantizes; may import anything
#   server, tasks  the OpenAI server and the compiler tasks consume the engine's outputs
#                  through the API, "nothing else of it": no model, backends, quant or kernels
#   api            LLM (llm.py) and the package's own exports, on top of the engine
#   engine         scheduling, KV blocks, sampling, outputs; knows nothing of HTTP
#   model          one decoder forward over a flat batch; knows nothing of HTTP or scheduling
#   backends       the ops the decoder calls (cpu: lutlm._C, gpu: torch + lutlm.kernels)
#   quant          the table of weight formats and the quantizers
#   tokenizer      vocabularies -> `tokenizers`, chat templates, incremental decoding; reads
#                  GGUF metadata and JSON files through formats/
#   formats        model files: GGUF, safetensors/HF directories, the packed cache, and where
#                  a model is found by name
#   base           leaves every layer may use: configs (config.py, model_config.py), cpu info
#   kernel         lutlm._C and lutlm.kernels (Triton): no policy, import nothing of lutlm
#
# Layers on one line of DESIGN's diagram below model (backends, quant, formats, tokenizer)
# are ordered here by what their code needs, not by the order they are listed in.
ALLOWED: dict[str, set[str]] = {
    "cli": {
        "server",
        "tasks",
        "api",
        "engine",
        "model",
        "backends",
        "quant",
        "tokenizer",
        "formats",
        "base",
        "kernel",
    },
    "server": {"tasks", "api", "engine", "tokenizer", "formats", "base"},
    "tasks": {"api", "engine", "tokenizer", "base"},
    "api": {"engine", "model", "backends", "quant", "tokenizer", "formats", "base", "kernel"},
    "engine": {"model", "backends", "tokenizer", "formats", "base", "kernel"},
    "model": {"backends", "quant", "formats", "base", "kernel"},
    "backends": {"quant", "base", "kernel"},
    "quant": {"formats", "base", "kernel"},
    "tokenizer": {"formats", "base"},
    "formats": {"base", "kernel"},
    "base": {"kernel"},
    "kernel": set(),
}

# Imports that break the rules today, each (importer, imported module) with who removes it
# (issue 13). The test fails on any violation not listed here, and on an entry that no
# longer breaks a rule: delete it when your change removes it.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True, slots=True)
class Import:
    """One `import` statement's dependency on one lutlm module."""

    importer: str  # the module holding the statement
    imported: str  # the lutlm module it runs
    stated: str  # the module the statement names (`from X import ...`: X)
    file: Path
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`: never runs

    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def find_modules() -> dict[str, Path | None]:
    """Every lutlm module by dotted name: its file, or None for a compiled one."""
    modules: dict[str, Path | None] = dict.fromkeys(EXTENSIONS)
    for package, directory in SOURCES.items():
        for file in sorted(directory.rglob("*.py")):
            parts = file.relative_to(directory).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            name = ".".join((package, *parts)).removesuffix(".__init__")
            if any(
                len(other) > len(package) and (name == other or name.startswith(other + "."))
                for other in SOURCES
            ):
                continue  # a package with sources of its own (the kernels symlink)
            modules[name] = file
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(nodes, type_only: bool = False):
    """(import statement, under TYPE_CHECKING?) for every import among `nodes`, however
    deep (in functions, classes, try blocks)."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, True)
            yield from _statements(node.orelse, type_only)
        else:
            yield from _statements(ast.iter_child_nodes(node), type_only)


def _resolve(name: str, modules: dict[str, Path | None]) -> str:
    """The module `name` runs: itself, else the longest prefix that is a module (a name
    imported from a package's __init__)."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def find_imports(name: str, file: Path, modules: dict[str, Path | None]) -> list[Import]:
    tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, type_only in _statements(tree.body):
        if isinstance(node, ast.Import):
            names = [(alias.name, alias.name) for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the package, or its parents
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names = [(f"{base}.{alias.name}", base) for alias in node.names]
        for imported, stated in names:
            if stated.split(".")[0] != "lutlm":
                continue
            target = _resolve(imported, modules)
            found.append(Import(name, target, stated, file, node.lineno, type_only))
    return found


def build_graph() -> tuple[dict[str, Path | None], list[Import]]:
    modules = find_modules()
    imports = [
        i
        for name, file in modules.items()
        if file is not None
        for i in find_imports(name, file, modules)
    ]
    return modules, imports


def layer_of(module: str) -> str | None:
    """The layer of the longest prefix of `module` in LAYER_OF; "lutlm" alone is the
    package's own __init__, not a default."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYER_OF and (n > 1 or module == "lutlm"):
            return LAYER_OF[prefix]
    return None


def _runs(i: Import, modules: dict[str, Path | None]) -> set[str]:
    """The modules an import runs that the importer has not run already: the module and
    the packages above it that do not hold the importer."""
    ran = {i.imported}
    name = i.imported
    while "." in name:
        name = name.rpartition(".")[0]
        if not (i.importer == name or i.importer.startswith(name + ".")):
            ran.add(name)
    return ran & modules.keys()


def runtime_edges(
    imports: list[Import], modules: dict[str, Path | None], skip: set[tuple[str, str]]
) -> dict[str, dict[str, Import]]:
    """importer -> {module it runs: the import that runs it}, leaving out type-only imports
    and those listed in `skip`."""
    edges: dict[str, dict[str, Import]] = defaultdict(dict)
    for i in imports:
        if i.type_only or (i.importer, i.imported) in skip:
            continue
        for target in _runs(i, modules):
            if target != i.importer:
                edges[i.importer].setdefault(target, i)
    return edges


def find_cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One cycle (as its imports) through each strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [_cycle_in(sorted(g)[0], g, edges) for g in groups]


def _cycle_in(start: str, group: set[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """The shortest path from `start` back to itself inside `group` (breadth first)."""
    came_from: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w, i in sorted(edges.get(v, {}).items()):
                if w not in group or w in came_from:
                    continue
                came_from[w] = i
                if w == start:
                    path = [i]
                    while path[0].importer != start:
                        path.insert(0, came_from[path[0].importer])
                    return path
                following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def layer_violations(imports: list[Import]) -> list[Import]:
    found = []
    for i in imports:
        a, b = layer_of(i.importer), layer_of(i.imported)
        if a is not None and b is not None and a != b and b not in ALLOWED[a]:
            found.append(i)
    return found


def describe(i: Import) -> str:
    a, b = layer_of(i.importer), layer_of(i.imported)
    rule = ""
    if a is not None and b is not None and a != b and b not in ALLOWED[a]:
        rule = f" ({a} may not import {b}; it may import: {', '.join(sorted(ALLOWED[a]))})"
    marker = " [type-only]" if i.type_only else ""
    return f"{i.where()}: {i.importer} imports {i.imported}{marker}{rule}"


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path | None], list[Import]]:
    return build_graph()


def test_the_layer_table_is_well_formed():
    assert set(LAYER_OF.values()) == set(ALLOWED), "every layer has a rule, every rule a layer"
    for layer, allowed in ALLOWED.items():
        assert allowed <= set(ALLOWED) and layer not in allowed, layer
    # The allowances themselves go one way only: no two layers may import each other.
    below = {layer: set(allowed) for layer, allowed in ALLOWED.items()}
    for _ in ALLOWED:
        for layer in below:
            below[layer] |= set().union(*(below[b] for b in below[layer]))
    assert not [layer for layer in below if layer in below[layer]], "ALLOWED has a cycle"


def test_every_module_has_a_layer(graph):
    modules, _ = graph
    assert len(modules) > 50, "the sources were not found"
    missing = sorted(m for m in modules if layer_of(m) is None)
    if missing:
        pytest.fail(f"add these to LAYER_OF in tests/test_layers.py: {missing}")


def test_every_import_names_a_module(graph):
    modules, imports = graph
    broken = [f"{i.where()}: no module {i.stated}" for i in imports if i.stated not in modules]
    if broken:
        pytest.fail("\n".join(broken))


def test_no_layer_imports_a_higher_one(graph):
    _, imports = graph
    new = [
        describe(i)
        for i in layer_violations(imports)
        if (i.importer, i.imported) not in KNOWN_VIOLATIONS
    ]
    if new:
        pytest.fail(
            "imports against the layers (DESIGN.md, 'Layers'):\n" + "\n".join(sorted(set(new)))
        )


def test_no_import_cycles(graph):
    modules, imports = graph
    cycles = find_cycles(runtime_edges(imports, modules, skip=set(KNOWN_VIOLATIONS)))
    report = [
        " -> ".join([c[0].importer, *(i.imported for i in c)])
        + "".join(f"\n    {describe(i)}" for i in c)
        for c in cycles
    ]
    if cycles:
        pytest.fail("import cycles:\n" + "\n".join(report))


def test_known_violations_still_occur(graph):
    """An entry whose import is gone, or no longer breaks a rule, must be deleted: the
    list only shrinks."""
    modules, imports = graph
    edges = runtime_edges(imports, modules, skip=set())
    against_layers = {(i.importer, i.imported) for i in layer_violations(imports)}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for w in edges.get(todo.pop(), {}):
                if w == goal:
                    return True
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return False

    stale = []
    for (importer, imported), owner in KNOWN_VIOLATIONS.items():
        present = any(i.importer == importer and i.imported == imported for i in imports)
        in_cycle = present and reaches(imported, importer)
        if not present or ((importer, imported) not in against_layers and not in_cycle):
            stale.append(f"{importer} -> {imported} ({owner})")
    if stale:
        pytest.fail(
            "fixed: delete from KNOWN_VIOLATIONS in tests/test_layers.py:\n" + "\n".join(stale)
        )
