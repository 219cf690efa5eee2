"""The benchmark (``python -m bench.benchmark``, ``make bench``) and the serving one (``python -m bench.serving``).

benchmark.py is the entry: its options, the list of phases, the exit status. Each phase's measuring is a
module of its own: throughput.py (both numerics modes and PyTorch, timed in turns; implementations.py holds
the measured models, peak.py the FLOP counts and the machine's peak, gemm_limit.py the GEMM rate at the
step's shape), profile.py (a training step's and an inference batch's operations), fable_ceiling.py
(epochs to the fable's ceiling), repro.py (no-op and fresh-clone ``dvc repro``). prerequisites.py checks
what the phases need before any runs; phases.py runs them in turn; report.py writes the table, the targets
and the results JSON; workers.py runs a measurement in a fresh process of its own; modes.py and timing.py
hold what several of them share.
"""
