"""The one exception type stages report as a clean error line instead of a traceback."""


class PipelineError(Exception):
    """A problem with the pipeline's input (params, data, a prompt): its message names the culprit."""
