"""The tags a run carries that the pipeline itself reads back: how evaluation, resumed training, the reuse
of an earlier evaluation and the registry find and judge a run."""

MODEL_DIGEST_TAG = "pipeline.model_sha256"  # the saved model file's sha256: evaluation finds its run by it
RESUMES_TAG = "pipeline.resumes_run"  # the interrupted run whose checkpoint a run continued from
RESUMED_AFTER_TAG = "pipeline.resumed_after_epoch"
HOST_TAG, PID_TAG = "pipeline.host", "pipeline.pid"  # who runs it: to close runs a killed process left open
TEST_METRICS_TAG = "pipeline.test_metrics"  # the names of the evaluation's metrics in the run (a JSON list)
EVALUATED_BY_TAG = "pipeline.test_metrics_from"  # the run whose evaluate stage measured them
NOTE_TAG = "pipeline.note"  # a sentence for the person reading the run: why it looks as it does
