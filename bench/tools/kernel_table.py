#!/usr/bin/python3
"""Renders `sparq kernel-bench --sweep --json` output as the markdown tables of
docs/performance.md. Usage: kernel_table.py RESULTS.json PEAK_FMA_GFLOPS PEAK_VNNI_GOPS"""
import json
import sys


def main():
    rows = json.load(open(sys.argv[1]))
    peak = {"fp32": float(sys.argv[2]), "int8": float(sys.argv[3])}
    for prec in ("int8", "fp32"):
        for threads in (1, 2):
            sel = [r for r in rows if r["precision"] == prec and r["threads"] == threads]
            if not sel:
                continue
            print(f"\n#### {prec}, {threads} thread{'s' if threads > 1 else ''}\n")
            print("| M | K | N | sparsity | sparq ms | oneDNN ms | speedup | sparq nonzero GOP/s | % of peak |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in sel:
                frac = 100.0 * r["sparq_gops"] / (peak[prec] * threads)
                print(f"| {r['m']} | {r['k']} | {r['n']} | {r['sparsity']:.2f} | {r['sparq_ms']:.4f} "
                      f"| {r['onednn_ms']:.4f} | {r['speedup']:.2f}x | {r['sparq_gops']:.0f} | {frac:.0f}% |")


if __name__ == "__main__":
    main()
