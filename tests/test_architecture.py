"""The shape docs/architecture.md describes, checked: imports run one way down the layers, with no circle;
one job per file (at most 400 lines); package __init__ files hold only their docstring; the README is a
front page whose links, like the docs' links, resolve."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT

# Lowest first. A module may import its own package and the layers below its own, never one above, nor
# another package of its own layer (the core's modules excepted). pipeline.tasks.base (the dataclasses the
# tasks share) is a leaf of the core.
LAYERS: list[tuple[str, ...]] = [
    (
        "pipeline.errors",
        "pipeline.files",
        "pipeline.config",
        "pipeline.cli",
        "pipeline.processes",
        "pipeline.dependencies",
        "pipeline.tasks.base",
    ),
    ("pipeline.datasets",),
    ("pipeline.model",),
    ("pipeline.tasks", "pipeline.serving"),
    ("pipeline.tracking",),
    ("pipeline.training",),
    ("pipeline.stages",),
    ("pipeline.generate", "pipeline.predict", "pipeline.team", "pipeline.sweeps", "bench"),
]
MAX_LINES = 400
CORE = 0  # its modules import each other (never in a circle)


def module_files() -> dict[str, Path]:
    """Every module of pipeline/ and bench/ by dotted name (a package by its __init__.py)."""
    found = {}
    for path in [*sorted((ROOT / "pipeline").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = module_files()


def owner(module: str) -> tuple[int, str]:
    """The layer of ``module`` and the entry of LAYERS it belongs to (the longest matching prefix)."""
    matches = [
        (len(entry), rank, entry)
        for rank, entries in enumerate(LAYERS)
        for entry in entries
        if module == entry or module.startswith(f"{entry}.")
    ]
    assert matches, f"{module} is in no layer of tests/test_architecture.py: add it (and to docs/architecture.md)"
    _, rank, entry = max(matches)
    return rank, entry


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports anywhere (lazy imports too), except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", getattr(block.test, "attr", "")) == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in MODULES and name not in ("pipeline", "bench")} - {module}


GRAPH = {module: imports(module) for module in MODULES if module not in ("pipeline", "bench")}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    upward = []
    for module, targets in sorted(graph.items()):
        rank, entry = owner(module)
        for target in sorted(targets):
            target_rank, target_entry = owner(target)
            if target_rank > rank or (target_rank == rank and target_entry != entry and rank != CORE):
                upward.append(f"{module} imports {target}")
    return upward


def circles(graph: dict[str, set[str]]) -> list[str]:
    def cycle_from(start: str, path: list[str], seen: set[str]) -> list[str] | None:
        for target in sorted(graph.get(path[-1], ())):
            if target == start:
                return [*path, target]
            if target not in seen:
                seen.add(target)
                if found := cycle_from(start, [*path, target], seen):
                    return found
        return None

    return [" -> ".join(cycle) for module in sorted(graph) if (cycle := cycle_from(module, [module], set()))]


def test_imports_run_down_the_layers_only():
    assert upward_imports(GRAPH) == []


def test_no_import_circle():
    assert circles(GRAPH) == []


def test_the_checks_see_an_upward_import_and_a_circle():
    """Both checks can fail: the real graph with one import added."""
    assert "pipeline.tracking.store" in GRAPH["pipeline.tracking.runs"]  # real imports are read
    upward = {**GRAPH, "pipeline.model.layers": GRAPH["pipeline.model.layers"] | {"pipeline.training.loop"}}
    assert upward_imports(upward) == ["pipeline.model.layers imports pipeline.training.loop"]
    sideways = {**GRAPH, "pipeline.tasks.mnist": GRAPH["pipeline.tasks.mnist"] | {"pipeline.serving.pyfunc"}}
    assert upward_imports(sideways) == ["pipeline.tasks.mnist imports pipeline.serving.pyfunc"]
    circle = {**GRAPH, "pipeline.tracking.store": GRAPH["pipeline.tracking.store"] | {"pipeline.tracking.runs"}}
    assert "pipeline.tracking.runs -> pipeline.tracking.store -> pipeline.tracking.runs" in circles(circle)


def test_one_job_per_file_at_most_400_lines():
    native = [*(ROOT / "pipeline").rglob("*.cc"), *(ROOT / "pipeline").rglob("*.h")]
    sources = [*MODULES.values(), *native, *sorted((ROOT / "tests").rglob("*.py"))]  # the tests are code too
    long = {str(path.relative_to(ROOT)): n for path in sources if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("package", sorted(p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")))
def test_a_package_init_holds_only_its_docstring(package):
    """So that importing one module of a package runs nothing else (pipeline.dependencies relies on it)."""
    tree = ast.parse((ROOT / "pipeline" / package / "__init__.py").read_text())
    assert ast.get_docstring(tree), f"pipeline/{package}/__init__.py: say what the package owns"
    assert len(tree.body) == 1


def test_the_readme_is_a_front_page_and_every_relative_link_resolves():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 200
    broken = []
    for page in [readme, *sorted((ROOT / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"^[a-z]+:", link) and not (page.parent / link).exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert broken == []
    docs = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert {"architecture.md", "tracking.md", "serving.md", "team.md", "numerics.md"} <= docs
    assert {"benchmark.md", "configuration.md", "reliability.md"} <= docs
