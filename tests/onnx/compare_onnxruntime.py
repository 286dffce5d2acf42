"""Every example's exported `infer` under onnxruntime, against Strata's own output, timed.

For each model file of dsl-examples/ (or those named), this script runs
`strata export FILE -o DIR/NAME.onnx` (the initial weights of seed 0), draws inputs
(uniform in [-2, 2) for f32, tokens in 0..16 for i32) at the batch size given, runs
`strata run FILE --input ... --output ...` and onnxruntime on them, and prints per
output the error `max |a - b| / max(1, max |b|)`, then the median time of one `infer`
under onnxruntime (one thread and all threads) and under `strata bench --entry infer`.
A model whose export fails is listed with the reason.

The test suite does not need it (tests/tests/onnx_export.rs runs every export under
tract); it needs numpy and onnxruntime.

Usage: python3 tests/onnx/compare_onnxruntime.py [--strata target/release/strata]
       [--batch 64] [--seconds 2] [FILE.strata ...]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[2]


def median_ms(run, seconds):
    """The median wall time of `run()` in milliseconds, over about `seconds`."""
    run()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def inputs_for(session, batch, rng):
    feeds = {}
    for i in session.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in i.shape]
        if i.type == "tensor(int32)":
            feeds[i.name] = rng.integers(0, 16, size=shape).astype(np.int32)
        else:
            feeds[i.name] = (rng.random(shape, dtype=np.float32) * 4 - 2).astype(np.float32)
    return feeds


def compare(strata, model_file, batch, seconds, work):
    name = model_file.stem
    onnx_path = work / f"{name}.onnx"
    export = subprocess.run(
        [strata, "export", str(model_file), "-o", str(onnx_path)],
        capture_output=True,
        text=True,
    )
    if export.returncode != 0:
        reason = export.stderr.strip().splitlines()[-1]
        print(f"{name}: not exported: {reason}")
        return None
    rng = np.random.default_rng(7)
    options = ort.SessionOptions()
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    single = ort.SessionOptions()
    single.intra_op_num_threads = 1
    session1 = ort.InferenceSession(str(onnx_path), single, providers=["CPUExecutionProvider"])
    feeds = inputs_for(session, batch, rng)
    args = [strata, "run", str(model_file)]
    for k, v in feeds.items():
        path = work / f"{name}.in.{k}.npy"
        np.save(path, v)
        args += ["--input", f"{k}={path}"]
    outputs = [o.name for o in session.get_outputs()]
    for o in outputs:
        args += ["--output", f"{o}={work / f'{name}.out.{o}.npy'}"]
    subprocess.run(args, check=True, capture_output=True)
    got = session.run(outputs, feeds)
    errors = {}
    for o, value in zip(outputs, got):
        want = np.load(work / f"{name}.out.{o}.npy")
        scale = max(1.0, float(np.abs(want).max()))
        errors[o] = float(np.abs(value.astype(np.float64) - want).max()) / scale
    ort_all = median_ms(lambda: session.run(outputs, feeds), seconds)
    ort_one = median_ms(lambda: session1.run(outputs, feeds), seconds)
    bench = subprocess.run(
        [strata, "bench", str(model_file), "--entry", "infer", "--batch", str(batch),
         "--seconds", str(seconds), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(bench.stdout.strip().splitlines()[-1])
    row = {
        "model": name,
        "batch": batch,
        "max_error": max(errors.values()),
        "onnxruntime_ms": ort_all,
        "onnxruntime_1thread_ms": ort_one,
        "strata_ms": report["median_ms"],
    }
    print(json.dumps(row))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strata", default=str(ROOT / "target/release/strata"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("files", nargs="*", type=pathlib.Path)
    args = parser.parse_args()
    files = args.files or sorted((ROOT / "dsl-examples").glob("*.strata"))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for f in files:
            row = compare(args.strata, f, args.batch, args.seconds, pathlib.Path(work))
            if row:
                rows.append(row)
    print()
    print(f"| model | max error | onnxruntime (ms) | onnxruntime, 1 thread (ms) | Strata (ms) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['max_error']:.1e} | {r['onnxruntime_ms']:.3f} "
            f"| {r['onnxruntime_1thread_ms']:.3f} | {r['strata_ms']:.3f} |"
        )
    worst = max((r["max_error"] for r in rows), default=0.0)
    sys.exit(0 if worst <= 1e-5 else 1)


if __name__ == "__main__":
    main()
