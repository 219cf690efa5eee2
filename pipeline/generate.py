"""Tell a story with the trained fable model: feed each predicted word back as input.

Run::

    python -m pipeline.generate "had a general" --words 32

The prompt must have exactly ``fable.n_input`` tokens, all from the story's vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import load_params
from pipeline.numerics import pin_for
from pipeline.stage import run_stage, stage_parser
from pipeline.vocabulary import load_vocabulary


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.generate", __doc__)
    parser.add_argument("prompt", help="the first words, as many as fable.n_input")
    parser.add_argument("--words", type=int, default=None, help="words to add (default: fable.story_words)")
    args = parser.parse_args(argv)
    with run_stage("generate"):
        params = load_params(args.params)
        words = params.fable.story_words if args.words is None else args.words
        if words < 0:
            parser.error(f"--words must be 0 or more, got {words}")
        vocabulary = load_vocabulary(params.paths.fable.vocabulary)
        pin_for(params, "fable", "generate")  # the arithmetic of the evaluate stage, whose story this repeats
        from pipeline.fable import generate  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned
        from pipeline.model import load_model  # noqa: PLC0415

        print(" ".join(generate(load_model(params.paths.fable.model), vocabulary, args.prompt, words)))


if __name__ == "__main__":
    main()
