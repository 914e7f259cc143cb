#!/usr/bin/python3
"""Compares `sparq run` outputs with make_models.py's float64 references.

    compare_outputs.py OUTDIR MODELDIR fp32|int8

fp32: max |error| <= 1e-3 x max |reference| and cosine >= 0.99999 per output;
int8: cosine >= 0.99 for every token (row of the last dimension). Prints one line per
output and exits 1 when any check fails."""
import os
import sys

import numpy as np


def main():
    outdir, modeldir, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    ok = True
    for f in sorted(os.listdir(modeldir)):
        if not (f.startswith("ref_") and f.endswith(".npy")):
            continue
        name = f[4:-4]
        ref = np.load(os.path.join(modeldir, f)).astype(np.float64)
        got = np.load(os.path.join(outdir, name + ".npy")).astype(np.float64)
        if got.shape != ref.shape:
            print(f"{name}: shape {got.shape} != reference {ref.shape}")
            ok = False
            continue
        err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
        r, g = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, ref.shape[-1])
        tok = np.sum(r * g, 1) / np.sqrt(np.sum(r * r, 1) * np.sum(g * g, 1))
        cos = float(np.dot(r.ravel(), g.ravel()) / np.sqrt(np.dot(r.ravel(), r.ravel()) * np.dot(g.ravel(), g.ravel())))
        if mode == "fp32":
            good = err <= 1e-3 and cos >= 0.99999
            need = "max|err|/max|ref| <= 1e-3, cosine >= 0.99999"
        else:
            good = tok.min() >= 0.99
            need = "every token's cosine >= 0.99"
        ok &= bool(good)
        print(f"  {mode} {name:<20} max|err|/max|ref| {err:.2e}  cosine {cos:.6f}  worst token cosine {tok.min():.5f}"
              f"  {'ok' if good else 'FAILED'} ({need})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
