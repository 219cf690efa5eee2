"""Stage dependencies derived from the code: dvc.yaml lists exactly each stage's import closure."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT

from pipeline import dependencies


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_is_known_to_the_dependency_table():
    assert set(dvc_stages()) == set(dependencies.STAGES)


@pytest.mark.parametrize("stage", sorted(dependencies.STAGES))
def test_dvc_yaml_lists_exactly_the_modules_the_stage_imports(stage):
    listed = sorted(dep for dep in dvc_stages()[stage]["deps"] if str(dep).startswith("pipeline/"))
    assert listed == dependencies.code_dependencies(stage), (
        f"dvc.yaml stage {stage}: update its deps to `python -m pipeline.dependencies`'s list"
    )


def test_lazy_imports_count_and_type_checking_imports_do_not():
    assert "pipeline.training.loop" in dependencies.imports("pipeline.stages.train")  # imported inside main()
    assert "pipeline.config" not in dependencies.imports("pipeline.model.numerics")  # only under TYPE_CHECKING


def test_a_model_stage_depends_on_its_own_task_module_only():
    assert "pipeline/tasks/mnist.py" in dependencies.code_dependencies("train_mnist")
    assert "pipeline/tasks/fable.py" not in dependencies.code_dependencies("train_mnist")
    assert "pipeline/tasks/mnist.py" not in dependencies.code_dependencies("evaluate_fable")


def test_a_module_that_loads_a_native_library_brings_its_cpp_sources():
    from pipeline.model import detgemm

    assert dependencies.native_sources("pipeline.model.detgemm") == detgemm.sources()
    assert dependencies.native_sources("pipeline.model.layers") == []
    for stage in ("train_mnist", "evaluate_fable"):
        assert {f"pipeline/model/native/{path.name}" for path in detgemm.sources()} <= set(
            dependencies.code_dependencies(stage)
        )
    assert not any("native/" in path for path in dependencies.code_dependencies("prepare"))


def test_exceptions_are_real_modules_with_a_reason():
    for module, reason in dependencies.NOT_DEPENDENCIES.items():
        assert dependencies.module_path(module).exists() and len(reason) > 20


def test_training_stages_track_whole_params_sections():
    for stage in ("train_mnist", "evaluate_mnist"):
        assert dvc_stages()[stage]["params"] == ["mnist", "numerics"]
    for stage in ("train_fable", "evaluate_fable"):
        assert dvc_stages()[stage]["params"] == ["fable", "numerics"]


def changed_stages(project) -> set[str]:
    status = json.loads(project.dvc("status", "--json").stdout)
    return {name.split(":")[-1] for name in status}


@pytest.mark.slow
def test_editing_a_module_changes_exactly_the_stages_that_import_it(trained_copy):
    assert changed_stages(trained_copy) == set()
    for module, expected in [
        ("pipeline/model/layers.py", {"train_mnist", "train_fable", "evaluate_mnist", "evaluate_fable"}),
        # the op's C++ (pipeline.model.detgemm's NATIVE_SOURCES), wherever pipeline.model.detgemm is imported
        ("pipeline/model/native/detgemm_kernel.cc", {"train_mnist", "train_fable", "evaluate_mnist", "evaluate_fable"}),
        ("pipeline/datasets/idx.py", {"prepare"}),  # the IDX format: the MNIST task reads the prepared arrays only
        ("pipeline/datasets/splits.py", {"prepare", "train_mnist", "evaluate_mnist"}),
        ("pipeline/tracking/runs.py", set()),  # MLflow only: listed in pipeline.dependencies.NOT_DEPENDENCIES
        ("pipeline/serving/pyfunc.py", set()),
    ]:
        path = trained_copy.root / module
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        try:
            assert changed_stages(trained_copy) == expected, module
        finally:
            path.write_text(original)
