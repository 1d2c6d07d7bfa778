"""The package's layers point one way, with no import circles and no command-line code in the library.

The test reads every module under ``src/glassformer`` with ``ast`` (nothing is imported), resolves
relative imports, and builds the module graph. An edge is a module-level import, a function-level
one (an ``import`` inside a ``def``) or a ``TYPE_CHECKING`` one. The direction rules count the first
two kinds: a lazy import still ties two layers together at run time. Circles count module-level
edges: a lazy import runs after both modules have loaded, which is how ``registry.families()`` can
import the families that import ``registry``; only inside one package does a lazy import that closes
a circle count, as a circle hidden rather than removed. The rules, also in docs/architecture.md:

==========================  ==========================================================================
who                         rule
==========================  ==========================================================================
glassformer.utils           imports no other part of glassformer
glassformer.nn              imports only glassformer.nn, glassformer.utils; third-party: torch, numpy
glassformer.numpy_ref       imports only glassformer.numpy_ref, glassformer.utils
glassformer.tokenizers      imports only glassformer.tokenizers, glassformer.utils
glassformer.kernels         imports only glassformer.kernels, glassformer.utils
glassformer.train           imports no family (glassformer.models.<family>) and not glassformer.registry,
                            except train/cli.py (command line)
glassformer.models.<X>      imports no other family glassformer.models.<Y> (glassformer.models.base is
                            shared); allowed pairs: FAMILY_PAIRS
library modules             import no argparse and take no argparse.Namespace; command-line modules
                            are cli.py, registry_cli.py, demo.py (and utils/commands.py may import
                            argparse for its AddParser type)
library modules             import no scikit-learn (benchmark baselines live in bench/)
every module                is on no circle of module-level imports, and closes no circle inside its own
                            package with an import inside a function
==========================  ==========================================================================

Each rule's checker is a plain function of the parsed graph, and the ``test_checker_*`` tests run
them on a small planted tree, so a checker that stops seeing violations fails too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "glassformer"

# (layer, the glassformer layers it may import, the third-party packages it may import or None for any)
LAYERS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    ("glassformer.utils", ("glassformer.utils",), None),
    ("glassformer.nn", ("glassformer.nn", "glassformer.utils"), ("torch", "numpy")),
    ("glassformer.numpy_ref", ("glassformer.numpy_ref", "glassformer.utils"), None),
    ("glassformer.tokenizers", ("glassformer.tokenizers", "glassformer.utils"), None),
    ("glassformer.kernels", ("glassformer.kernels", "glassformer.utils"), None),
)
# (importing family, imported family): a family built on another one's parts.
FAMILY_PAIRS: frozenset[tuple[str, str]] = frozenset({("clip", "vit")})
CLI_FILES = ("cli.py", "registry_cli.py", "demo.py")
ARGPARSE_TYPE_MODULES = frozenset({"glassformer.utils.commands"})  # defines AddParser, takes no Namespace
BENCHMARK_ONLY = ("sklearn",)
# Edges left out of the circle searches, each with the change that removes it.
KNOWN_CIRCLE_EDGES: frozenset[tuple[str, str]] = frozenset()

When = Literal["module", "function", "type_checking"]


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    root: Path  # the folder that holds the package, for messages
    tree: ast.Module = field(repr=False)

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def is_cli(self) -> bool:
        return self.path.name in CLI_FILES


@dataclass(frozen=True)
class Edge:
    """One import: ``target`` is a glassformer module, or the top-level name of any other package."""

    source: Module
    target: str
    line: int
    when: When

    @property
    def internal(self) -> bool:
        return in_layer(self.target, PACKAGE)

    def describe(self, why: str) -> str:
        kind = {"module": "", "function": " (inside a function)", "type_checking": " (TYPE_CHECKING)"}[self.when]
        where = self.source.path.relative_to(self.source.root)
        return f"{self.source.name} imports {self.target}{kind} ({why}) at {where}:{self.line}"


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def load_modules(src: Path) -> dict[str, Module]:
    """Every module of the package under ``src``, parsed."""
    modules = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = Module(name, path, src, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: Iterable[ast.AST], when: When) -> Iterator[tuple[ast.Import | ast.ImportFrom, When]]:
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, when
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.body, "type_checking")
            yield from _import_nodes(node.orelse, when)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _import_nodes(ast.iter_child_nodes(node), "function" if when == "module" else when)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node), when)


def _known(name: str, modules: dict[str, Module]) -> str:
    """``name`` itself if it is a module, else the longest prefix that is (``pkg.mod.func`` -> ``pkg.mod``)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def edges_of(module: Module, modules: dict[str, Module]) -> Iterator[Edge]:
    for node, when in _import_nodes(module.tree.body, "module"):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name if in_layer(alias.name, PACKAGE) else alias.name.split(".")[0]
                yield Edge(module, _known(target, modules) if in_layer(target, PACKAGE) else target, node.lineno, when)
            continue
        if node.level:
            package = module.name if module.is_package else module.name.rsplit(".", 1)[0]
            package = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        if not in_layer(base, PACKAGE):
            yield Edge(module, base.split(".")[0], node.lineno, when)
            continue
        for alias in node.names:  # `from pkg import submodule` imports the submodule
            name = f"{base}.{alias.name}"
            yield Edge(module, name if name in modules else _known(base, modules), node.lineno, when)


def all_edges(modules: dict[str, Module]) -> list[Edge]:
    return [edge for module in modules.values() for edge in edges_of(module, modules)]


def _direction_edges(edges: Iterable[Edge]) -> Iterator[Edge]:
    return (e for e in edges if e.when != "type_checking" and e.target != e.source.name)


def layer_violations(edges: Iterable[Edge]) -> list[str]:
    stdlib = sys.stdlib_module_names
    found = []
    for edge in _direction_edges(edges):
        for layer, allowed, third_party in LAYERS:
            if not in_layer(edge.source.name, layer):
                continue
            short = layer.removeprefix(PACKAGE + ".")
            if edge.internal and not any(in_layer(edge.target, a) for a in allowed):
                found.append(edge.describe(f"{short} may import only {', '.join(allowed)}"))
            elif not edge.internal and third_party is not None and edge.target not in (*third_party, *stdlib):
                found.append(edge.describe(f"{short} may use only the standard library and {', '.join(third_party)}"))
    return found


def family_names(modules: dict[str, Module]) -> set[str]:
    return {name.split(".")[2] for name, m in modules.items() if m.is_package and name.count(".") == 2
            and in_layer(name, "glassformer.models")}


def train_violations(edges: Iterable[Edge], families: set[str]) -> list[str]:
    forbidden = ("glassformer.registry", *(f"glassformer.models.{f}" for f in sorted(families)))
    return [
        edge.describe("train knows no family; only train/cli.py may pick one")
        for edge in _direction_edges(edges)
        if in_layer(edge.source.name, "glassformer.train") and not edge.source.is_cli
        and any(in_layer(edge.target, f) for f in forbidden)
    ]


def family_violations(edges: Iterable[Edge], families: set[str]) -> list[str]:
    found = []
    for edge in _direction_edges(edges):
        source, target = edge.source.name.split("."), edge.target.split(".")
        if len(source) < 3 or len(target) < 3 or source[:2] != target[:2] or source[:2] != [PACKAGE, "models"]:
            continue
        mine, theirs = source[2], target[2]
        if mine in families and theirs in families and mine != theirs and (mine, theirs) not in FAMILY_PAIRS:
            found.append(edge.describe(f"family {mine} may not import family {theirs}; "
                                       "shared parts go in glassformer.models.base or glassformer.nn"))
    return found


def argparse_violations(edges: Iterable[Edge], modules: dict[str, Module]) -> list[str]:
    found = [
        edge.describe("argparse belongs in the command-line modules: " + ", ".join(CLI_FILES))
        for edge in _direction_edges(edges)
        if edge.target == "argparse" and not edge.source.is_cli and edge.source.name not in ARGPARSE_TYPE_MODULES
    ]
    for module in modules.values():
        if module.is_cli:
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _takes_namespace(node):
                found.append(f"{module.name}.{node.name} takes an argparse.Namespace (line {node.lineno}); "
                             "take the values it needs, and let a cli.py unpack the arguments")
    return found


def _takes_namespace(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    args = function.args
    for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        annotation = arg.annotation if arg is not None else None
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            annotation = ast.parse(annotation.value, mode="eval").body
        if annotation is not None and any(
            (isinstance(n, ast.Attribute) and n.attr == "Namespace") or (isinstance(n, ast.Name) and n.id == "Namespace")
            for n in ast.walk(annotation)
        ):
            return True
    return False


def benchmark_only_violations(edges: Iterable[Edge]) -> list[str]:
    return [edge.describe(f"{edge.target} is for benchmarks only: move the code into bench/")
            for edge in _direction_edges(edges) if edge.target in BENCHMARK_ONLY]


def circles(edges: Iterable[Edge], skip: frozenset[tuple[str, str]] = KNOWN_CIRCLE_EDGES) -> list[list[str]]:
    """One shortest circle per strongly connected group of modules (module-level imports only)."""
    return _circles({(e.source.name, e.target) for e in edges if e.when == "module" and e.internal} - skip)


def lazy_circles(edges: Sequence[Edge], modules: dict[str, Module],
                 skip: frozenset[tuple[str, str]] = KNOWN_CIRCLE_EDGES) -> list[list[str]]:
    """Circles inside one package that a lazy (function-level) import closes.

    Across packages a lazy import is how discovery works (``registry.families()`` imports the
    families, which import ``registry``); inside one package it hides a circle that a third module
    holding the shared part would remove.
    """
    def package(name: str) -> str:
        return name if modules[name].is_package else name.rsplit(".", 1)[0]

    pairs = {(e.source.name, e.target) for e in edges
             if e.when != "type_checking" and e.target in modules and package(e.source.name) == package(e.target)}
    module_level = circles(edges, skip)  # reported by the module-level check already
    return [circle for circle in _circles(pairs - skip) if circle not in module_level]


def _circles(pairs: set[tuple[str, str]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for source, target in pairs:
        if source != target:
            graph.setdefault(source, set()).add(target)
    return sorted(_shortest_circle(graph, min(group), group) for group in _strongly_connected(graph) if len(group) > 1)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative so that a long chain of imports cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def _shortest_circle(graph: dict[str, set[str]], start: str, group: set[str]) -> list[str]:
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    return [*paths[node], start]
                if child in group and child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in a strongly connected group but on no circle")


# ---- the real package ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_modules(SRC)


@pytest.fixture(scope="module")
def edges(modules: dict[str, Module]) -> list[Edge]:
    return all_edges(modules)


def _report(found: list[str]) -> str:
    return "\n" + "\n".join(found)


def test_layers_import_only_what_is_below_them(edges: list[Edge]) -> None:
    found = layer_violations(edges)
    assert not found, _report(found)


def test_train_knows_no_family(edges: list[Edge], modules: dict[str, Module]) -> None:
    found = train_violations(edges, family_names(modules))
    assert not found, _report(found)


def test_families_do_not_import_each_other(edges: list[Edge], modules: dict[str, Module]) -> None:
    families = family_names(modules)
    assert {"gpt", "bert", "transformer"} <= families, f"families found: {sorted(families)}"
    found = family_violations(edges, families)
    assert not found, _report(found)


def test_command_line_code_stays_in_cli_modules(edges: list[Edge], modules: dict[str, Module]) -> None:
    found = argparse_violations(edges, modules)
    assert not found, _report(found)


def test_scikit_learn_is_for_benchmarks_only(edges: list[Edge]) -> None:
    found = benchmark_only_violations(edges)
    assert not found, _report(found)


def test_no_import_circles(edges: list[Edge]) -> None:
    found = [" -> ".join(circle) for circle in circles(edges)]
    assert not found, "import circles (module-level imports; break each, e.g. by moving the shared part " \
                      "into a module both import):" + _report(found)


def test_known_circle_edges_still_exist(edges: list[Edge]) -> None:
    present = {(e.source.name, e.target) for e in edges}
    stale = sorted(KNOWN_CIRCLE_EDGES - present)
    assert not stale, f"these imports are gone: remove them from KNOWN_CIRCLE_EDGES: {stale}"


def test_no_lazy_import_circles_within_a_package(edges: list[Edge], modules: dict[str, Module]) -> None:
    found = [" -> ".join(circle) for circle in lazy_circles(edges, modules)]
    assert not found, "circles closed by an import inside a function (move what both need into a third " \
                      "module, or the function into the module it imports):" + _report(found)


# ---- the checkers see what they are for ---------------------------------------------------------


PLANTED = {
    "__init__.py": "",
    "utils/__init__.py": "",
    "utils/paths.py": "import os\n",
    "nn/__init__.py": "",
    "nn/x.py": "from glassformer.models.base import ModelBase\nimport scipy\nfrom . import y\n",
    "nn/y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from glassformer.registry import Family\n",
    "registry.py": "def families():\n    import glassformer.models\n",
    "models/__init__.py": "from glassformer import registry\n",
    "models/base.py": "",
    "models/gpt/__init__.py": "FAMILY = None\n",
    "models/gpt/model.py": "from ..bert import model\nfrom ..base import ModelBase\n",
    "models/bert/__init__.py": "FAMILY = None\n",
    "models/bert/model.py": "def f():\n    import sklearn.linear_model\n",
    "models/clip/__init__.py": "",
    "models/clip/model.py": "from glassformer.models.vit.model import Vit\n",
    "models/vit/__init__.py": "",
    "models/vit/model.py": "",
    "train/__init__.py": "",
    "train/trainer.py": "def f(args: 'argparse.Namespace'):\n    from glassformer import registry\n",
    "train/cli.py": "import argparse\nfrom glassformer.registry import Family\n",
    "generate/__init__.py": "",
    "generate/a.py": "from glassformer.generate import b\n",
    "generate/b.py": "from .c import thing\n",
    "generate/c.py": "import glassformer.generate.a\ndef f():\n    from glassformer.generate import b\n",
}


@pytest.fixture
def planted(tmp_path: Path) -> tuple[dict[str, Module], list[Edge]]:
    for name, text in PLANTED.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = load_modules(tmp_path)
    return modules, all_edges(modules)


def test_checker_resolves_relative_and_submodule_imports(planted: tuple[dict[str, Module], list[Edge]]) -> None:
    _, edges = planted
    pairs = {(e.source.name, e.target, e.when) for e in edges}
    assert ("glassformer.nn.x", "glassformer.nn.y", "module") in pairs
    assert ("glassformer.models.gpt.model", "glassformer.models.bert.model", "module") in pairs
    assert ("glassformer.generate.b", "glassformer.generate.c", "module") in pairs
    assert ("glassformer.train.trainer", "glassformer.registry", "function") in pairs
    assert ("glassformer.nn.y", "glassformer.registry", "type_checking") in pairs


def test_checker_finds_each_planted_violation(planted: tuple[dict[str, Module], list[Edge]]) -> None:
    modules, edges = planted
    families = family_names(modules)
    layers = layer_violations(edges)
    assert len(layers) == 2, layers  # not the TYPE_CHECKING import in nn/y.py
    assert "glassformer.nn.x imports glassformer.models.base (nn may import only glassformer.nn, " \
           "glassformer.utils) at glassformer/nn/x.py:1" in layers
    assert any("imports scipy" in v for v in layers)
    assert train_violations(edges, families) == [
        "glassformer.train.trainer imports glassformer.registry (inside a function) (train knows no family; "
        "only train/cli.py may pick one) at glassformer/train/trainer.py:2"
    ]
    family = family_violations(edges, families)
    assert len(family) == 1 and "family gpt may not import family bert" in family[0], family
    commands = argparse_violations(edges, modules)
    assert commands == ["glassformer.train.trainer.f takes an argparse.Namespace (line 1); take the values it "
                        "needs, and let a cli.py unpack the arguments"]
    assert len(benchmark_only_violations(edges)) == 1


def test_checker_finds_circles_in_order(planted: tuple[dict[str, Module], list[Edge]]) -> None:
    _, edges = planted
    expected = ["glassformer.generate.a", "glassformer.generate.b", "glassformer.generate.c", "glassformer.generate.a"]
    assert circles(edges) == [expected]
    assert circles(edges, skip=frozenset({("glassformer.generate.b", "glassformer.generate.c")})) == []


def test_checker_finds_lazy_circles_inside_a_package_only(planted: tuple[dict[str, Module], list[Edge]]) -> None:
    modules, edges = planted
    skip = frozenset({("glassformer.generate.a", "glassformer.generate.b")})
    assert circles(edges, skip) == []
    assert lazy_circles(edges, modules, skip) == [["glassformer.generate.b", "glassformer.generate.c",
                                                  "glassformer.generate.b"]]
