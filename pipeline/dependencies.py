"""What each DVC stage depends on, derived from the code: the one source for dvc.yaml and checkpoints.

A stage's code dependencies are the modules its entry point imports, transitively, wherever the import
statement stands (lazy imports inside functions included; ``if TYPE_CHECKING:`` blocks excluded), read
from the source with :mod:`ast`, without importing anything. The task modules (one per model) are
reached through ``pipeline.tasks.registry.get_task``: a stage of one model depends on its own task module only.
A module that loads a library built from C++ (``pipeline.model.detgemm``) names its sources in a top-level
``NATIVE_SOURCES = "<glob relative to the package>"``; they are dependencies wherever the module is.

``tests/test_dependencies.py`` checks that every stage in dvc.yaml lists exactly these modules, so that
editing any of them makes ``dvc status`` report the stage changed; and the training checkpoint's
fingerprint digests the same files (``pipeline.training.loop.fingerprint``), so a run resumes only with the
code that will finish it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "pipeline"
ROOT = Path(__file__).resolve().parent

# stage -> (entry module, the model whose task it runs, or None)
STAGES: dict[str, tuple[str, str | None]] = {
    "params": ("pipeline.stages.params", None),
    "fetch_mnist": ("pipeline.stages.fetch", None),
    "fetch_fable": ("pipeline.stages.fetch", None),
    "prepare": ("pipeline.stages.prepare", None),
    "vocabulary": ("pipeline.stages.vocabulary", None),
    "train_mnist": ("pipeline.stages.train", "mnist"),
    "train_fable": ("pipeline.stages.train", "fable"),
    "evaluate_mnist": ("pipeline.stages.evaluate", "mnist"),
    "evaluate_fable": ("pipeline.stages.evaluate", "fable"),
}
TASK_MODULES = {"mnist": "pipeline.tasks.mnist", "fable": "pipeline.tasks.fable"}

# Modules a stage imports that cannot change any file DVC tracks: not dependencies, so that editing
# them reruns nothing. Each with the reason.
NOT_DEPENDENCIES: dict[str, str] = {
    # Packages: every module in them.
    "pipeline.tracking": "writes to MLflow only (runs, tags, artifacts); DVC-tracked files never hold a run id",
    "pipeline.serving": "wraps the saved model as an MLflow pyfunc model when the run logs it; writes no DVC output",
    "pipeline.tasks.reports": "draws figures logged to MLflow; the DVC plots read the CSV files instead",
    "pipeline.errors": "the exception base class: changes how a failure is reported, never an output",
}


NATIVE_SOURCES = "NATIVE_SOURCES"  # the variable a module names its C++ sources with
NATIVE_SUFFIXES = (".cc", ".h")


def native_sources(module: str) -> list[Path]:
    """The C++ sources ``module`` declares (its top-level ``NATIVE_SOURCES`` glob: .cc and .h files), sorted."""
    tree = ast.parse(module_path(module).read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == NATIVE_SOURCES for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            directory = module_path(module).parent  # the glob is relative to the module's own folder
            return sorted(path for path in directory.glob(node.value.value) if path.suffix in NATIVE_SUFFIXES)
    return []


def imports(module: str) -> set[str]:
    """The ``pipeline.*`` modules ``module``'s source imports anywhere, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(module_path(module).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if _is_ours(alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and _is_ours(node.module):
            # `from pipeline.model import numerics` imports a module; `from pipeline.config import Params` a name
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update(name for name in submodules if module_path(name).exists())
            found.add(node.module)
    # A package's __init__.py holds only its docstring (tests/test_architecture.py checks): never a dependency.
    return {name for name in found if module_path(name).name != "__init__.py" and module_path(name).exists()}


def _runtime_nodes(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(f"{PACKAGE}.")


def module_path(module: str) -> Path:
    """The source file of ``module``: ``pipeline/a/b.py``, or a package's ``pipeline/a/__init__.py``."""
    path = ROOT.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _not_dependency(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in NOT_DEPENDENCIES)


def closure(stage: str) -> set[str]:
    """Every module ``stage`` runs: its entry point's imports, transitively, and its own task module only;
    the imports of a module in NOT_DEPENDENCIES are not followed (they serve MLflow's side only)."""
    entry, model = STAGES[stage]
    other_tasks = {name for task, name in TASK_MODULES.items() if task != model}
    seen, pending = set(), [entry] + ([TASK_MODULES[model]] if model else [])
    while pending:
        module = pending.pop()
        if module in seen or module in other_tasks:
            continue
        seen.add(module)
        if not _not_dependency(module):  # what they import serves them only (MLflow's side)
            pending.extend(imports(module))
    return seen


def code_dependencies(stage: str) -> list[str]:
    """The source files of ``stage`` that can change its outputs (its modules and the C++ sources they
    load), relative to the project root, sorted."""
    modules = {module for module in closure(stage) if not _not_dependency(module)}
    files = [module_path(m) for m in modules] + [path for m in modules for path in native_sources(m)]
    return sorted(f"{PACKAGE}/{path.relative_to(ROOT).as_posix()}" for path in files)


def code_files(stage: str) -> list[Path]:
    """:func:`code_dependencies` as absolute paths (what a checkpoint's fingerprint digests)."""
    return [ROOT.parent / path for path in code_dependencies(stage)]


if __name__ == "__main__":  # python -m pipeline.dependencies: the deps lists for dvc.yaml
    for name in STAGES:
        print(f"{name}:\n" + "".join(f"      - {path}\n" for path in code_dependencies(name)))
