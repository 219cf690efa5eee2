"""Tell a story with the trained fable model: feed each predicted word back as input.

Run::

    python -m pipeline.generate                            # from fable.prompt, or the story's first tokens
    python -m pipeline.generate "had a general" --words 32  # the seed fable, from the middle
    python -m pipeline.generate --model models:/fable@champion   # any MLflow model URI

A prompt must have exactly ``fable.n_input`` tokens, all from the story's vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.cli import run_stage, stage_parser
from pipeline.config import load_params
from pipeline.datasets.text import detokenize, load_vocabulary, prompt_tokens, read_text, tokenize
from pipeline.model.numerics import pin_for


def tell_with_mlflow(uri: str, prompt: str | None, words: int | None) -> str:
    """The prompt and its continuation by the MLflow model at ``uri`` (pipeline.serving.pyfunc's); without a prompt,
    the one its evaluate stage started from; ``words``: its ``story_words`` unless given."""
    from pipeline.tracking.store import load_model_uri  # noqa: PLC0415 - MLflow only for --model

    model = load_model_uri(uri, answers="story")
    config = model.model_config
    prompt = prompt or config["prompt"]
    story = model.predict([prompt], params=None if words is None else {"story_words": words})["story"][0]
    return prompt + ("" if config["tokens"] == "char" or not story else " ") + story


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.generate", __doc__)
    parser.add_argument(
        "prompt",
        nargs="?",
        default=None,
        help="the first tokens, as many as fable.n_input (default: fable.prompt, else the story's first)",
    )
    parser.add_argument("--words", type=int, default=None, help="words to add (default: fable.story_words)")
    parser.add_argument(
        "--model",
        metavar="URI",
        help="an MLflow model URI, e.g. models:/fable@champion or "
        "runs:/<run id>/model (default: the workspace's model, paths.fable.model)",
    )
    args = parser.parse_args(argv)
    with run_stage("generate"):
        params = load_params(args.params)
        if args.words is not None and args.words < 0:
            parser.error(f"--words must be 0 or more, got {args.words}")
        prompt = args.prompt or params.fable.prompt
        if args.model:
            print(tell_with_mlflow(args.model, prompt, args.words))
            return
        words = params.fable.story_words if args.words is None else args.words
        paths = params.paths.fable
        vocabulary = load_vocabulary(paths.vocabulary)
        tokens = tokenize(read_text(paths.raw), vocabulary["tokens"]) if prompt is None else []
        start = prompt_tokens(prompt, tokens, vocabulary, params.fable.n_input, paths.vocabulary)
        pin_for(params, "fable", "generate")  # the arithmetic of the evaluate stage, whose story this repeats
        from pipeline.model.inference import generate  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned
        from pipeline.model.saving import load_model  # noqa: PLC0415

        print(detokenize(generate(load_model(paths.model), vocabulary, start, words), vocabulary["tokens"]))


if __name__ == "__main__":
    main()
