"""The one training loop both models go through, its per-epoch checkpoints, and the evaluation that judges a
trained model; each records what it does through pipeline.tracking."""
