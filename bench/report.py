"""The benchmark's report: the ratios between implementations, the table of every phase's figures, the results JSON."""

from __future__ import annotations

from pathlib import Path

from bench.modes import MODES, TORCH, implementation_name
from pipeline.cli import duration
from pipeline.files import write_json


def ratios(implementations: dict[str, dict]) -> dict[str, dict[str, float]]:
    """samples/s of each mode over PyTorch's, and of portable over native, for training and evaluation."""
    pairs = [(f"{mode} / {TORCH}", implementation_name(mode), TORCH) for mode in MODES]
    pairs.append(("portable / native", implementation_name("portable"), implementation_name("native")))
    result = {}
    for key, numerator, denominator in pairs:
        if numerator in implementations and denominator in implementations:
            result[key] = {
                part: implementations[numerator][f"{part}_samples_per_s"]
                / implementations[denominator][f"{part}_samples_per_s"]
                for part in ("train", "eval")
            }
    return result


def write_results(output: str | Path, results: dict) -> None:
    """``results`` with their table under ``table``, written to ``output`` atomically (pipeline.files.write_json)."""
    write_json(output, {**results, "table": table(results)})


def table(results: dict) -> str:
    """The figures as text: the throughput table, then one or two lines per other phase, or why it failed."""
    lines: list[str] = []
    for key, section in (
        ("throughput", _throughput_lines),
        ("profile", _profile_lines),
        ("dvc", _dvc_lines),
        ("fable", lambda f: [f"fable reaches its ceiling {fable_line(f)}"]),
        ("repro", _repro_lines),
    ):
        if key in results:
            item = results[key]
            lines.extend([f"{key}: failed: {item['error'].splitlines()[0]}"] if "error" in item else section(item))
    lines.extend(target_lines(results))
    return "\n".join(lines) + "\n"


# The targets for the portable numerics (docs/benchmark.md): each a name, a limit, whether higher is better, a unit.
Target = tuple[str, float, float, bool, str]


def targets(results: dict) -> list[Target]:
    """Each target whose figure this run measured: its name, the figure, the limit, higher-is-better, its unit."""
    found: list[Target] = []
    t = _measured(results, "throughput")
    if t:
        if f"portable / {TORCH}" in t["ratios"]:
            r = t["ratios"][f"portable / {TORCH}"]
            found += [(f"portable {part} speed / {TORCH}'s", r[part], 2.0, True, "×") for part in ("train", "eval")]
        if "portable / native" in t["ratios"]:
            r = t["ratios"]["portable / native"]
            found += [(f"portable {part} time / native's", 1 / r[part], 1.05, False, "×") for part in ("train", "eval")]
        portable = t["implementations"].get(implementation_name("portable"))
        if portable:
            found.append(("portable training, share of the peak", portable["train_share_of_peak"], 0.70, True, "%"))
        one_core = t.get("one_core_gflops", {})
        if "portable" in one_core and "numpy" in one_core:
            kernel = one_core["portable"]["step"] / one_core["numpy"]["step"]
            found.append(("portable kernel / NumPy's, one core at a step's products", kernel, 0.90, True, "%"))
    p = _measured(results, "profile")
    if p:
        other = 1 - p["train"]["product_share"]
        found.append(("operations other than products, share of a training step", other, 0.15, False, "%"))
    d = _measured(results, "dvc")
    if d:
        found.append(("no-op dvc repro / DVC's floor", d["ratio"], 1.2, False, "×"))
    r = _measured(results, "repro")
    if r:
        found.append(
            ("dvc repro from empty with the library build", r["wall_s"] + r["library_build_s"], 90, False, "s")
        )
    return found


def target_lines(results: dict) -> list[str]:
    """One line per target: the figure, the limit, and met, or by how much it is missed."""
    lines = []
    for name, value, limit, higher, unit in targets(results):
        met = value >= limit if higher else value <= limit
        verdict = "met" if met else f"missed by {abs(value / limit - 1):.0%}"
        lines.append(
            f"target: {name} {_shown(value, unit)} ({'≥' if higher else '≤'} {_shown(limit, unit)}): {verdict}"
        )
    return lines


def _shown(value: float, unit: str) -> str:
    return {"%": f"{value:.1%}", "×": f"{value:.2f}×", "s": f"{value:.0f} s"}[unit]


def _measured(results: dict, key: str) -> dict | None:
    item = results.get(key)
    return None if item is None or "error" in item else item


def _throughput_lines(t: dict) -> list[str]:
    rows = [
        "| implementation | train samples/s | eval samples/s | train, share of peak | eval, share of peak |",
        "|---|---|---|---|---|",
    ]
    for name, item in t["implementations"].items():
        rows.append(
            f"| {name} | {item['train_samples_per_s']:,.0f} | {item['eval_samples_per_s']:,.0f} | "
            f"{item['train_share_of_peak']:.1%} | {item['eval_share_of_peak']:.1%} |"
        )
    lines = ["\n".join(rows), ""]
    for mode in MODES:
        if f"{mode} / {TORCH}" in t["ratios"]:
            r = t["ratios"][f"{mode} / {TORCH}"]
            lines.append(f"{mode} / {TORCH}: train {r['train']:.2f}×, eval {r['eval']:.2f}×")
    if "portable / native" in t["ratios"]:
        r = t["ratios"]["portable / native"]
        lines.append(f"portable costs: train {1 / r['train']:.2f}× native's time, eval {1 / r['eval']:.2f}×")
    lines.extend(t["notes"])
    torch_threads = t["implementations"].get(TORCH, {}).get("setup", {}).get("threads")
    lines.append(
        f"batch {t['batch_size']}, {t['steps_per_execution']} steps per execution, "
        f"{t['timed_batches_per_round']} timed batches per round after the first execution; medians of "
        f"{t['repeats']} round(s) in turns, each implementation in its own process; pipeline "
        f"{t['parallel_slices']} slice(s) × {t['threads_per_slice']} thread(s)"
        + (f", PyTorch {torch_threads} thread(s)" if torch_threads else "")
    )
    peak, flops = t["peak"], t["flop_per_sample"]
    lines.append(
        f"float32 peak {peak['peak_gflops']:.0f} GFLOP/s ({peak['peak_library']}), the best {peak['size']}² product "
        "on all cores: "
        + ", ".join(f"{k} {v:.0f}" for k, v in peak["gflops"].items())
        + f"; FLOP per sample: train {flops['train'] / 1e6:.2f} M, inference {flops['inference'] / 1e6:.2f} M"
    )
    lines.extend(f"peak: {note}" for note in peak["notes"])
    lines.append(
        "float32 GEMM at the step's shape, all cores: "
        + ", ".join(f"{k} {v:.0f}" for k, v in t["gemm_gflops"].items())
        + " GFLOP/s"
    )
    one_core = t.get("one_core_gflops")
    if one_core:
        products = [name for name in next(iter(one_core.values())) if name != "step"]
        lines.append(
            f"one core, one step's products on a batch slice ({', '.join(products)}; all three): "
            + "; ".join(
                f"{library} " + " / ".join(f"{rates[name]:.0f}" for name in products) + f" ({rates['step']:.0f})"
                for library, rates in one_core.items()
            )
            + " GFLOP/s"
        )
    return lines


def _profile_lines(profile: dict) -> list[str]:
    return [
        f"{what}: {p['step_ms']:.1f} ms; of its operations' time ({p['ops_ms']:.1f} ms over the threads, "
        f"TensorFlow's trace) its {p['matmuls']} matrix products {p['product_share']:.1%}, "
        f"the other {p['other_ops']:,} operations that ran ≈ {p['other_ms_per_op']:.1f} µs each"
        for what, p in (
            (f"one training step (batch {profile['train_batch']}, {profile['mode']})", profile["train"]),
            (f"one inference batch ({profile['inference_batch']}, {profile['mode']})", profile["inference"]),
        )
    ]


def _dvc_lines(d: dict) -> list[str]:
    return [
        f"no-op dvc repro {d['pipeline_no_op_repro_s']:.2f} s vs DVC floor {d['dvc_floor_no_op_repro_s']:.2f} s "
        f"({d['ratio']:.2f}×)"
    ]


def fable_line(f: dict) -> str:
    return f"{f['ceiling']:.4f} ({f['mode']}): " + (
        f"epoch {f['epoch']}, {f['seconds']:.1f} s" if f["reached"] else f"not within {f['epochs_allowed']} epochs"
    )


def _repro_lines(r: dict) -> list[str]:
    return [
        f"full dvc repro from empty: {duration(r['wall_s'])} (and {duration(r['library_build_s'])} "
        f"to build the matrix product's library first); "
        f"MNIST test_accuracy {r['mnist_test_accuracy']:.4f}, fable {r['fable_accuracy']:.4f} "
        f"(ceiling {r['fable_ceiling']:.4f}); outputs match the committed dvc.lock: "
        f"{r['outputs_match_committed_dvc_lock']}"
        + (
            f" (differ: {', '.join(differing)})"
            if (differing := r.get("outputs_differing_from_committed_dvc_lock"))
            else ""
        ),
        "peak RSS: " + ", ".join(f"{stage} {mb:,.0f} MB" for stage, mb in sorted(r["peak_rss_mb"].items())),
    ]
