"""What the benchmark measures, by name: the pipeline in each numerics mode, and PyTorch; each mode's params."""

from __future__ import annotations

from pipeline.config import Params, parse_params

MODES = ("portable", "native")
TORCH = "PyTorch"
TORCH_MISSING = "torch is not installed (make bench installs torch==2.13.0): PyTorch not measured, no ratios to it"


def implementation_name(mode: str) -> str:
    return f"pipeline {mode}"


def mode_params(params: Params, mode: str, batch: int | None = None, source: str = "params.yaml") -> Params:
    """``params`` with ``numerics.mode`` set to ``mode`` (and ``mnist.batch_size`` to ``batch``), validated again.

    The change is made on the params as plain values and checked by pipeline.config's own validator, so
    it raises pipeline.config.ParamsError when the params cannot run in that mode (portable needs one
    thread per slice), naming ``source`` and the key.
    """
    raw = params.model_dump()
    raw["numerics"]["mode"] = mode
    if batch:
        raw["mnist"]["batch_size"] = batch
    return parse_params(raw, source=f"{source} with numerics.mode {mode}" + (f", batch {batch}" if batch else ""))
