"""The package's shape, read from its source: no import cycles (function-level imports counted; imports for type
checking only, which never run, are not), layers that only look down, and a reason beside every import kept inside a
function."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "diffsweep"

# compose → validate → plan → execute → record → report, and the command lines on top; a module may import its own
# layer or any below it. The foundation and model-side modules are the ones every layer uses.
LAYERS = {
    "foundation": ("diffsweep", "diffsweep.errors", "diffsweep.hashing", "diffsweep.paths", "diffsweep.hub",
                   "diffsweep.devices", "diffsweep.console", "diffsweep.labels", "diffsweep.inputs", "diffsweep.media"),
    "models": ("diffsweep.providers", "diffsweep.tiny", "diffsweep.lora", "diffsweep.schedulers",
               "diffsweep.previews", "diffsweep.optimize", "diffsweep.truncation", "diffsweep.metrics",
               "diffsweep.conditioning", "diffsweep.control", "diffsweep.quantize", "diffsweep.examples"),
    "config": ("diffsweep.config",),
    "planning": ("diffsweep.planning",),
    "store": ("diffsweep.store",),
    "execution": ("diffsweep.execution",),
    "reports": ("diffsweep.reports",),
    "run": ("diffsweep.run",),
    "cli": ("diffsweep.cli", "diffsweep.__main__"),
}
ORDER = list(LAYERS)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int, bool]]:
    """(imported diffsweep module, line, inside a function) for every import statement of a module; importing a
    submodule also runs its parent packages, so they count as imported too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                   for node in ast.walk(fn)}
    for_types = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for node in ast.walk(block)}  # annotations only: these imports never run
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in for_types:
            for target in _modules_named(node, package, known):
                for parent in _parents(target):
                    if parent != module and parent in known and not module.startswith(parent + "."):
                        yield parent, node.lineno, id(node) in in_function


def _modules_named(node: ast.Import | ast.ImportFrom, package: str, known: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    for name in names:
        while name and name not in known:  # `from x import function` names the module x
            name = name.rpartition(".")[0]
        if name:
            yield name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


def layer_of(module: str) -> str:
    return next(layer for layer in reversed(ORDER) for prefix in LAYERS[layer]
                if module == prefix or module.startswith(prefix + "."))


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        edges[name] |= {target for target, _, _ in imported(name, path, known) if target != "diffsweep"}
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle (its modules, the first repeated at the end), or none."""
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return []


def test_the_package_has_no_import_cycle_function_level_imports_included() -> None:
    assert cycle(graph()) == []


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function() -> None:
    # the checker itself: a cycle closed by an import inside a function is still a cycle
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(set(cycle(edges))) == ["a", "b", "c"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_every_module_has_a_layer_and_imports_only_its_own_layer_or_those_below() -> None:
    known = modules()
    upward = []
    for name, path in known.items():
        here = ORDER.index(layer_of(name))
        for target, line, _ in imported(name, path, known):
            if ORDER.index(layer_of(target)) > here:
                upward.append(f"{path.relative_to(SRC)}:{line} ({layer_of(name)}) imports {target} "
                              f"({layer_of(target)})")
    assert upward == []


def test_an_import_inside_a_function_says_why_it_is_there() -> None:
    unexplained = []
    for module, path in modules().items():
        if module.startswith("diffsweep.tiny."):
            continue  # the tiny recipes import torch and diffusers when called: pyproject.toml's ruff settings say so
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                unexplained += [f"{path.relative_to(SRC)}:{node.lineno}" for node in ast.walk(fn)
                                if isinstance(node, ast.Import | ast.ImportFrom)
                                and not lines[node.lineno - 1].partition("# noqa: PLC0415")[2].lstrip(" -")]
    assert unexplained == []
