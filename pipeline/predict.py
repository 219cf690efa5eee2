"""Read a handwritten digit from an image with the trained MNIST model.

Run::

    python -m pipeline.predict some-digit.png                                # the workspace's model
    python -m pipeline.predict some-digit.png --model models:/mnist@champion  # any MLflow model URI

Any image Pillow reads; it is converted to grayscale and resized to the model's 28×28. MNIST digits
are light on a dark background, so an image that is mostly light (dark ink on paper) is inverted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.cli import run_stage, stage_parser
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.model.numerics import pin_for

if TYPE_CHECKING:
    import keras


class ImageError(PipelineError):
    """A file that is not a readable image."""


def open_grayscale(path: str | Path) -> Image.Image:
    """The image at ``path`` in 8-bit grayscale; a clear error for anything that is not an image."""
    try:
        with Image.open(path) as image:
            return image.convert("L")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ImageError(f"{path}: not an image Pillow can read ({error.__class__.__name__})") from None


def digit_pixels(image: Image.Image, shape: tuple[int, int]) -> np.ndarray:
    """uint8 pixels of ``shape`` (rows, columns), a light digit on a dark ground as in MNIST."""
    rows, columns = shape
    if image.size != (columns, rows):
        image = image.resize((columns, rows), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8)
    return 255 - pixels if pixels.mean() > 127 else pixels


def predict_digit(model: keras.Model, pixels: np.ndarray) -> tuple[int, float]:
    """The most probable digit and its probability."""
    from pipeline.model.inference import softmax  # noqa: PLC0415 - TensorFlow loads only after pin_for

    probabilities = softmax(np.asarray(model(pixels[None].astype(np.float32), training=False))[0])
    digit = int(probabilities.argmax())
    return digit, float(probabilities[digit])


def predict_with_mlflow(uri: str, image: Image.Image) -> tuple[int, float]:
    """The most probable digit and its probability from the MLflow model at ``uri`` (pipeline.serving.pyfunc's)."""
    from pipeline.tracking.store import load_model_uri  # noqa: PLC0415 - MLflow only for --model

    model = load_model_uri(uri, answers="digit")
    shape = tuple(model.metadata.signature.inputs.inputs[0].shape[1:])
    answer = model.predict(digit_pixels(image, shape)[None])
    digit = int(answer["digit"][0])
    return digit, float(answer["probabilities"][0][digit])


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.predict", __doc__)
    parser.add_argument("image")
    parser.add_argument(
        "--model",
        metavar="URI",
        help="an MLflow model URI, e.g. models:/mnist@champion or "
        "runs:/<run id>/model (default: the workspace's model, paths.mnist.model)",
    )
    args = parser.parse_args(argv)
    with run_stage("predict"):
        params = load_params(args.params)
        image = open_grayscale(args.image)
        if args.model:
            digit, probability = predict_with_mlflow(args.model, image)
            print(f"{digit} (probability {probability:.4f})")
            return
        pin_for(params, "mnist", "predict")  # the arithmetic of the evaluate stage
        from pipeline.model.saving import load_model  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned

        model = load_model(params.paths.mnist.model)
        digit, probability = predict_digit(model, digit_pixels(image, model.input_shape[1:]))
        print(f"{digit} (probability {probability:.4f})")


if __name__ == "__main__":
    main()
