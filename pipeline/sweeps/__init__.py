"""Hyperparameter sweeps shared by any number of workers: an Optuna study whose trials are DVC experiments and
MLflow runs (``make sweep SPEC=…``, ``make sweep-show SPEC=…``; docs/sweeps.md)."""
