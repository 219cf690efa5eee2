"""The Belling-the-Cat seed's pieces: ``n_input`` words in, the next word out; judged on every window and on
the story it tells (pipeline.model.inference.generate).

Every window of the text is a training example (the seed drew them one at a time, 50,000 times);
accuracy is judged on every window too, against the ceiling the vocabulary stage computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from pipeline.config import Params
from pipeline.datasets.text import detokenize, prompt_tokens, text_tokens
from pipeline.model.inference import generate, logits_function, logits_loss
from pipeline.model.network import recurrent_classifier
from pipeline.tasks.base import Dataset, Evaluation, Examples, Task, TrainingData


def windows(ids: Sequence[int], n_input: int) -> Examples:
    """Every run of ``n_input`` ids, labelled with the id that follows it."""
    ids = np.asarray(ids, dtype=np.int32)
    count = len(ids) - n_input
    x = np.stack([ids[start : start + n_input] for start in range(count)])
    return Examples(x=x, y=ids[n_input:].copy())


def load_training_data(params: Params) -> TrainingData:
    tokens, vocabulary = text_tokens(params)
    dictionary = vocabulary["dictionary"]
    return TrainingData(
        train=windows([dictionary[token] for token in tokens], params.fable.n_input),
        validation=None,
        classes=len(dictionary),
    )


def build_model(params: Params, data: TrainingData) -> keras.Model:
    training = params.fable
    inputs = keras.Input(shape=(training.n_input,), name="word_ids")
    if training.embedding_dim is None:
        # The seed: each word's raw id is the single feature of its time step.
        sequence = keras.layers.Reshape((training.n_input, 1), name="raw_ids")(inputs)
    else:
        sequence = keras.layers.Embedding(data.classes, training.embedding_dim, name="embedding")(inputs)
    return recurrent_classifier(inputs, sequence, training, data.classes, name="fable_lstm")


def continuation_in_text(tokens: Sequence[str], prompt_tokens: Sequence[str], words: int) -> list[str] | None:
    """What follows the first occurrence of the prompt in the text, or None if the text lacks it."""
    width = len(prompt_tokens)
    for start in range(len(tokens) - width + 1):
        if list(tokens[start : start + width]) == list(prompt_tokens):
            return list(tokens[start : start + width + words])
    return None


def evaluate(params: Params, model: keras.Model) -> Evaluation:
    training = params.fable
    tokens, vocabulary = text_tokens(params)
    examples = windows([vocabulary["dictionary"][token] for token in tokens], training.n_input)
    logits = logits_function(model, batch_size=len(examples))(examples.x)
    start = prompt_tokens(training.prompt, tokens, vocabulary, training.n_input, params.paths.fable.vocabulary)
    story = generate(model, vocabulary, start, training.story_words)
    original = continuation_in_text(tokens, story[: training.n_input], training.story_words)
    matching = next(
        (i for i, (a, b) in enumerate(zip(story, original or [], strict=False)) if a != b),
        min(len(story), len(original or [])),
    )
    metrics = {
        "accuracy": float((logits.argmax(axis=1) == examples.y).mean()),
        "ceiling": vocabulary["ceiling"],
        "loss": logits_loss(logits, examples.y),
        "windows": len(examples),
        # The story reproduces the text when every generated word is the original's.
        "story_reproduces_text": original is not None and story == original,
        "story_matching_words": max(matching - training.n_input, 0),
    }
    return Evaluation(
        metrics=metrics, files={params.paths.fable.story: (detokenize(story, vocabulary["tokens"]) + "\n").encode()}
    )


TASK = Task(
    name="fable",
    load_training_data=load_training_data,
    build_model=build_model,
    evaluate=evaluate,
    input_paths=lambda params: {"text": params.paths.fable.raw, "vocabulary": params.paths.fable.vocabulary},
    # Trained and judged on the one text.
    datasets=lambda params: [Dataset("fable", "training", (params.paths.fable.raw,), params.data.fable.url)],
    extra_artifacts=lambda params: [params.paths.fable.vocabulary],
)
