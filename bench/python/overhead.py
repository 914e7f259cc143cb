"""Python Model.run overhead against the CLI's `sparq bench`, side by side in one run.

    PYTHONPATH=build/release/python /usr/bin/python3 bench/python/overhead.py MODEL.sparq \
        [--sparq build/release/sparq] [--threads 2] [--seq 128] [--iterations 100] [--rounds 3]

Both sides use random in-vocabulary ids (batch 1), the same threads and iteration
counts; rounds alternate CLI and Python so drift on a noisy machine hits both. Prints
p50 per round and the median ratio.
"""
import argparse
import json
import statistics
import subprocess
import time

import numpy as np

import sparq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--sparq", default="build/release/sparq")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    m = sparq.Model(a.model, threads=a.threads)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, size=(1, a.seq), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for _ in range(10):
        m.run(feeds)
    ratios = []
    for r in range(a.rounds):
        cli = json.loads(subprocess.check_output(
            [a.sparq, "bench", a.model, "--threads", str(a.threads), "--seq", str(a.seq),
             "--iterations", str(a.iterations), "--json"], stderr=subprocess.DEVNULL))["latency_ms"]["p50"]
        t = []
        for _ in range(a.iterations):
            t0 = time.perf_counter()
            m.run(feeds)
            t.append((time.perf_counter() - t0) * 1e3)
        py = statistics.median(t)
        ratios.append(py / cli)
        print(f"round {r}: cli p50 {cli:.3f} ms, python p50 {py:.3f} ms, ratio {py / cli:.3f}")
    print(f"median ratio python/cli: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
