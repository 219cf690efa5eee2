"""The tags a run carries that the pipeline itself reads back (how evaluation, resumed training, the reuse
of an earlier evaluation and the registry find and judge a run), and those of an experiment."""

from collections.abc import Mapping

MODEL_DIGEST_TAG = "pipeline.model_sha256"  # the saved model file's sha256: evaluation finds its run by it
RESUMES_TAG = "pipeline.resumes_run"  # the interrupted run whose checkpoint a run continued from
RESUMED_AFTER_TAG = "pipeline.resumed_after_epoch"
HOST_TAG, PID_TAG = "pipeline.host", "pipeline.pid"  # who runs it: to close runs a killed process left open
TEST_METRICS_TAG = "pipeline.test_metrics"  # the names of the evaluation's metrics in the run (a JSON list)
EVALUATED_BY_TAG = "pipeline.test_metrics_from"  # the run whose evaluate stage measured them
NOTE_TAG = "pipeline.note"  # a sentence for the person reading the run: why it looks as it does
# A sweep's trial (pipeline.sweeps): the study's name and the trial's number, which the worker passes to the stages
# through the environment; the UI filters a sweep's runs by `tags.sweep`.
SWEEP_TAG, SWEEP_TRIAL_TAG = "sweep", "sweep.trial"
SWEEP_ENV, SWEEP_TRIAL_ENV = "PIPELINE_SWEEP", "PIPELINE_SWEEP_TRIAL"


def sweep_tags(environ: Mapping[str, str]) -> dict[str, str]:
    """The sweep tags of a run started by a sweep worker's trial, else none."""
    if environ.get(SWEEP_ENV) and environ.get(SWEEP_TRIAL_ENV):
        return {SWEEP_TAG: environ[SWEEP_ENV], SWEEP_TRIAL_TAG: environ[SWEEP_TRIAL_ENV]}
    return {}


# What MLflow's UI reads on an experiment: its kind chooses the view (without it, MLflow 3 opens the GenAI one of
# traces and token usage), its note is the description shown above the runs.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"


def experiment_tags(name: str) -> dict[str, str]:
    """The tags of the experiment of model ``name``: a model-training experiment, and what it holds."""
    description = (
        f"Training runs of the `{name}` model: one per `dvc repro` or `dvc exp run` that trained it, with its "
        "params, its metrics per epoch, the evaluate stage's test metrics, its reports and the model itself. "
        f"Runs are named for what made them: the DVC experiment (`dvc exp run --name`), a sweep's trial "
        f"(`<sweep>-<trial>`), or for a `dvc repro` in the workspace `{name}-<short commit>`. Every evaluated "
        f"run is registered as a version of the model `{name}`; the alias `champion` follows the highest "
        "`test_accuracy` (a tie keeps the older version)."
    )
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING, DESCRIPTION_TAG: description}
