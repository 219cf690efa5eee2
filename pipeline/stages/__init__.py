"""The DVC stages, one module each: ``python -m pipeline.stages.<stage>`` parses its arguments, reads and
checks params.yaml, and calls plain functions (dvc.yaml lists them; dependencies.py derives their code
dependencies)."""
