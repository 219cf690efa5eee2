"""How fast the registered models load and answer: load time in a fresh process, and requests per second
of ``mlflow models serve`` on a loopback port.

Run (after ``make repro``, which registers both models)::

    .venv/bin/python -m bench.serving                   # models:/mnist@champion and models:/fable@champion
    .venv/bin/python -m bench.serving --requests 500

Each request carries one input (one 28x28 image, one prompt), sent one after the other by one client:
the latency a caller sees, not the server's peak throughput. Results also go to bench/serving.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.processes import stop_group
from pipeline.tracking.store import tracking_uri

ROOT = Path(__file__).resolve().parent.parent

LOAD = """
import sys, time
start = time.perf_counter()
import mlflow.pyfunc
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
loaded = time.perf_counter()
import json, numpy as np
inputs = np.load(sys.argv[3], allow_pickle=False) if sys.argv[3].endswith(".npy") else [sys.argv[3]]
model.predict(inputs)
print(json.dumps({"load_s": loaded - start, "first_predict_s": time.perf_counter() - loaded, "inputs": len(inputs)}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def server(uri: str, store: str):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        # MLflow starts uvicorn by name: this interpreter's bin directory first.
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": store,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                break
            if process.poll() is not None:
                raise SystemExit(f"bench.serving: mlflow models serve -m {uri} exited with {process.returncode}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        stop_group(process, grace=60)


def measure(name: str, store: str, requests: int, one_input: object, batch_file: str) -> dict:
    uri = f"models:/{name}@champion"
    # Where the project cannot be imported: what the model carries is all it has.
    elsewhere = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    loading = subprocess.run(
        [sys.executable, "-c", LOAD, store, uri, batch_file],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=600,
        env=elsewhere,
        check=False,
    )
    if loading.returncode != 0:
        raise SystemExit(f"bench.serving: loading {uri} failed: {loading.stderr.strip().splitlines()[-1:]}")
    result = {"model": uri, **json.loads(loading.stdout.strip().splitlines()[-1])}
    body = json.dumps({"inputs": one_input}).encode()
    with server(uri, store) as url:
        post(url, body)  # warm up
        start = time.perf_counter()
        for _ in range(requests):
            post(url, body)
        elapsed = time.perf_counter() - start
    return result | {
        "requests": requests,
        "requests_per_s": requests / elapsed,
        "ms_per_request": 1000 * elapsed / requests,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per model (default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_params(ROOT / "params.yaml")
    store = tracking_uri({"DVC_ROOT": str(ROOT), **os.environ})
    test_images = str(ROOT / params.paths.mnist.prepared / "x_test.npy")
    story = (ROOT / params.paths.fable.story).read_text().split()
    prompt = " ".join(story[: params.fable.n_input])
    results = [
        measure("mnist", store, args.requests, np.load(test_images, allow_pickle=False)[:1].tolist(), test_images),
        measure("fable", store, args.requests, [prompt], prompt),
    ]
    (ROOT / "bench" / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| model | load (fresh process) | first predict | served requests/s (1 input each) | ms/request |")
    print("|---|---|---|---|---|")
    for row in results:
        first = f"{row['first_predict_s']:.2f} s for {row['inputs']} input(s)"
        print(
            f"| {row['model']} | {row['load_s']:.2f} s | {first} | {row['requests_per_s']:.1f} "
            f"| {row['ms_per_request']:.1f} |"
        )


if __name__ == "__main__":
    main()
