"""params.yaml, read once and validated into frozen, typed objects.

Every stage calls :func:`load_params` first, so a typo or a value of the wrong type stops the
stage before it does any work, with one line per problem naming the file, the key and the value::

    params.yaml: fable.n_input: must be greater than 0, got -3

``python -m pipeline.stages.params`` (DVC stage ``params``) checks the whole file, keys no stage reads included.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from pipeline.errors import PipelineError
from pipeline.files import read_text

# Facts of the MNIST files pinned by their sha256 below, not settings: the split sizes in
# params.yaml are checked against them before anything is downloaded.
MNIST_TRAIN_FILE_IMAGES = 60_000
MNIST_TEST_FILE_IMAGES = 10_000
MNIST_CLASSES = 10  # the digits

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]

# numerics.mode (pipeline.model.numerics): the same bytes on every x86-64 CPU, or this CPU's fastest kernels.
Mode = Literal["portable", "native"]


class ParamsError(PipelineError):
    """params.yaml is missing, not YAML, or has a key or value the pipeline cannot use."""


class _Frozen(BaseModel):
    # strict: YAML's "1e-3" (a string) is not silently turned into a float, nor 3.0 into 3.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelPaths(_Frozen):
    """What training and evaluation of one model write."""

    model: NonEmptyStr
    history: NonEmptyStr
    metrics: NonEmptyStr
    # Rewritten at every epoch's end, deleted once training succeeds (pipeline.training.checkpoint).
    checkpoint: NonEmptyStr


class MnistPaths(ModelPaths):
    raw: NonEmptyStr
    prepared: NonEmptyStr
    confusion: NonEmptyStr


class FablePaths(ModelPaths):
    raw: NonEmptyStr
    vocabulary: NonEmptyStr
    story: NonEmptyStr


class Paths(_Frozen):
    mnist: MnistPaths
    fable: FablePaths


class DataFile(_Frozen):
    name: NonEmptyStr
    sha256: Sha256


class MnistFiles(_Frozen):
    train_images: DataFile
    train_labels: DataFile
    test_images: DataFile
    test_labels: DataFile


class MnistSplit(_Frozen):
    validation_size: PositiveInt
    train_size: PositiveInt
    test_size: PositiveInt

    @model_validator(mode="after")
    def _fits_in_files(self) -> MnistSplit:
        problem = self.misfit(MNIST_TRAIN_FILE_IMAGES, MNIST_TEST_FILE_IMAGES)
        if problem:
            raise ValueError(problem)
        return self

    def misfit(self, train_file_images: int, test_file_images: int) -> str | None:
        """Why the split does not fit files of these sizes (params.yaml's, or the files actually fetched)."""
        if self.validation_size + self.train_size > train_file_images:
            return (
                f"validation_size + train_size = {self.validation_size} + {self.train_size} "
                f"exceeds the {train_file_images} images of the training file"
            )
        if self.test_size > test_file_images:
            return f"test_size = {self.test_size} exceeds the {test_file_images} images of the test file"
        return None


class MnistData(_Frozen):
    mirrors: Annotated[list[NonEmptyStr], Field(min_length=1)]
    files: MnistFiles
    split: MnistSplit


class FableData(_Frozen):
    url: NonEmptyStr
    sha256: Sha256
    tokens: Literal["word", "char"]


class Data(_Frozen):
    # Per file, in MiB, on the bytes downloaded and again on the decompressed content (a gzip bomb).
    max_download_mib: PositiveInt
    mnist: MnistData
    fable: FableData


class Training(_Frozen):
    """One model's architecture and optimisation; the same fields for both seeds."""

    units: PositiveInt
    layers: PositiveInt
    optimizer: Literal["adam", "rmsprop", "sgd"]
    learning_rate: PositiveFloat
    # cosine: decays to 0 over all epochs' steps; constant: the seeds' fixed rate.
    learning_rate_schedule: Literal["constant", "cosine"]
    batch_size: PositiveInt
    epochs: PositiveInt
    seed: NonNegativeInt
    # The LSTM runs on this many consecutive slices of each batch side by side, one per core, with the
    # same weights: the model computes the same function, but the cores no longer split each small
    # operation of the 28-step recurrence between them (1: the whole batch as one sequence of operations).
    parallel_slices: PositiveInt
    # Training steps per call into TensorFlow's graph: fewer returns to Python, the same arithmetic.
    steps_per_execution: PositiveInt


class Mnist(Training):
    # Random shifts of each training image by up to this fraction of its size (0: none). The LSTM
    # overfits MNIST otherwise; at inference the layer passes images through unchanged.
    augment_shift: Annotated[float, Field(ge=0, lt=0.5)]


class Fable(Training):
    n_input: PositiveInt
    # None: each word enters the LSTM as its raw id, as the seed; a number: a learned embedding of that size.
    embedding_dim: PositiveInt | None
    # None: the story's own first n_input tokens, so another text needs no other param.
    prompt: NonEmptyStr | None
    story_words: PositiveInt


class Numerics(_Frozen):
    """Which arithmetic TensorFlow uses (pipeline.model.numerics): the same bytes everywhere, or this CPU's fastest."""

    mode: Mode
    # TensorFlow threads per slice of a batch (slices run side by side, one per core).
    threads_per_slice: PositiveInt

    @model_validator(mode="after")
    def _portable_threads(self) -> Numerics:
        if self.mode == "portable" and self.threads_per_slice != 1:
            raise ValueError(
                f"portable runs each slice on 1 thread (a product split between threads sums in an "
                f"order that depends on the CPU's caches), got {self.threads_per_slice}; "
                f"use parallel_slices for more cores, or mode native"
            )
        return self


class Params(_Frozen):
    paths: Paths
    data: Data
    numerics: Numerics
    mnist: Mnist
    fable: Fable

    def training(self, task: str) -> Mnist | Fable:
        return getattr(self, task)

    def paths_of(self, task: str) -> MnistPaths | FablePaths:
        return getattr(self.paths, task)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raise :class:`ParamsError` naming every bad key and value."""
    path = Path(path)
    text = read_text(path, ParamsError)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ParamsError(f"{path}: not valid YAML{line}: {getattr(error, 'problem', error)}") from None
    return parse_params(raw, source=str(path))


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping (tests build these from the real params.yaml)."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError("\n".join(_describe(source, item) for item in error.errors())) from None


_NUMBER_LIKE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _describe(source: str, item: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in item["loc"]) or "(top level)"
    kind, value = item["type"], item.get("input")
    if kind == "extra_forbidden":
        return f"{source}: {key}: unknown key (a typo?), value {value!r}"
    if kind == "missing":
        return f"{source}: {key}: missing"
    if kind == "value_error":
        return f"{source}: {key}: {item['ctx']['error']}"
    message = item["msg"][0].lower() + item["msg"][1:]
    line = f"{source}: {key}: {message}, got {value!r} ({type(value).__name__})"
    if kind == "float_type" and isinstance(value, str) and _NUMBER_LIKE.match(value):
        line += f"; YAML reads {value} as a string, write it with a dot and a signed exponent, e.g. 1.0e-3"
    return line
