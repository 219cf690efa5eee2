"""Tell a story with the trained fable model: feed each predicted word back as input.

Run::

    python -m pipeline.generate                            # from fable.prompt, or the story's first tokens
    python -m pipeline.generate "had a general" --words 32  # the seed fable, from the middle

A prompt must have exactly ``fable.n_input`` tokens, all from the story's vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import load_params
from pipeline.numerics import pin_for
from pipeline.stage import run_stage, stage_parser
from pipeline.text import detokenize, load_vocabulary, prompt_tokens, read_text, tokenize


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("pipeline.generate", __doc__)
    parser.add_argument("prompt", nargs="?", default=None,
                        help="the first tokens, as many as fable.n_input (default: fable.prompt, else the story's first)")
    parser.add_argument("--words", type=int, default=None, help="words to add (default: fable.story_words)")
    args = parser.parse_args(argv)
    with run_stage("generate"):
        params = load_params(args.params)
        words = params.fable.story_words if args.words is None else args.words
        if words < 0:
            parser.error(f"--words must be 0 or more, got {words}")
        paths = params.paths.fable
        vocabulary = load_vocabulary(paths.vocabulary)
        tokens = tokenize(read_text(paths.raw), vocabulary["tokens"]) if (args.prompt or params.fable.prompt) is None else []
        start = prompt_tokens(args.prompt or params.fable.prompt, tokens, vocabulary, params.fable.n_input, paths.vocabulary)
        pin_for(params, "fable", "generate")  # the arithmetic of the evaluate stage, whose story this repeats
        from pipeline.fable import generate  # noqa: PLC0415 - TensorFlow loads here, after its kernels are pinned
        from pipeline.saving import load_model  # noqa: PLC0415

        print(detokenize(generate(load_model(paths.model), vocabulary, start, words), vocabulary["tokens"]))


if __name__ == "__main__":
    main()
