#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into tests/fuzz/corpus/<target>/ (committed).

  onnx   micro BERT, DistilBERT and RoBERTa exports (tools/make_models.py --size micro:
         1 layer, hidden 8) at opsets 11, 14 and 17, pruned and dense, the opset-14 BERT
         also quantized (QUANTIZED_FORMS: ONNX Runtime's dynamic int8 as
         bench/peers/ort_dynamic_int8.py writes it, QDQ, and QOperator MatMulInteger with
         uint8 weights shifted by 128 and QLinearMatMul, by tools/make_quantized_models.py;
         and the same BERT as torch's QAT export, tools/make_qat_model.py --activations),
         plus every ONNX node test model (Debian's libonnx-testdata) whose ops sparq
         supports
  sparq  each onnx seed converted to fp32 and int8 by the sparq CLI (those it converts);
         each quantized seed to int8 and with default flags (its own int8 weights)
  npy    arrays of every supported dtype and a few shapes, header versions 1 and 2
  c_api  descriptor byte strings for fuzz_c_api (valid runs and hostile shapes)

Usage: tools/make_fuzz_corpus.py --sparq build/release/sparq [--out tests/fuzz/corpus]
           [--quantized-only]
--quantized-only adds the quantized micro BERT seeds and their conversions to the
existing corpus (nothing removed, nothing else regenerated), as session 6 added them.
Files are named by the SHA-1 of their bytes, as libFuzzer names its corpus files.
"""
import argparse
import glob
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_TESTS = "/usr/share/libonnx-testdata/data/node"
# The micro opset-14 BERT's quantized versions: (file, generator script, its flags).
QUANTIZED_FORMS = [
    ("model-ort-int8.onnx", "bench/peers/ort_dynamic_int8.py", []),
    ("model-qdq.onnx", "tools/make_quantized_models.py", ["--form", "qdq"]),
    ("model-integer-u8.onnx", "tools/make_quantized_models.py", ["--form", "integer", "--weights", "u8-128"]),
    ("model-qlinear.onnx", "tools/make_quantized_models.py", ["--form", "qlinear"]),
    # quantize_static's QDQ around the attention's data movement and Softmax (session 7)
    ("model-qdq-data.onnx", "tools/make_quantized_models.py",
     ["--form", "qdq", "--attention", "qdq", "--data-qdq"]),
]


def put(outdir, data):
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def supported_ops(sparq):
    # The CLI does not list ops; the importer's registry is mirrored here by reading
    # engine/ops/ops.inc, the one place they are declared.
    ops = set()
    with open(os.path.join(HERE, "..", "engine", "ops", "ops.inc")) as f:
        for line in f:
            if line.startswith("SPARQ_OP(") and "kOnnx" in line:
                ops.add(line.split('"')[1])
    return ops


def quantized_seeds(d):
    """The quantized versions of the float model d/model.onnx (inputs d/input_*.npy calibrate
    the static forms)."""
    out = []
    for name, script, flags in QUANTIZED_FORMS:
        q = os.path.join(d, name)
        subprocess.run([sys.executable, os.path.join(HERE, "..", script), os.path.join(d, "model.onnx"), q] + flags,
                       check=True, stderr=subprocess.DEVNULL)
        out.append(q)
    q = os.path.join(d, "qat")  # torch's QAT export of the same model (opset 13)
    subprocess.run([sys.executable, os.path.join(HERE, "make_qat_model.py"), "--family", "bert", "--size", "micro",
                    "--opset", "13", "--head", "--activations", "--batch", "1", "--seq", "4", "--out", q],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out + [os.path.join(q, "model.onnx")]


def put_seed(a, tmp, path, quantized):
    """An onnx seed and its conversions: fp32 and int8; a quantized model int8 and with
    default flags (its own int8 weights; its fp32 conversion, dequantized, is a float model
    like the others)."""
    put(os.path.join(a.out, "onnx"), open(path, "rb").read())
    for prec in (("int8", None) if quantized else ("fp32", "int8")):
        out = os.path.join(tmp, "seed.sparq")
        r = subprocess.run([a.sparq, "convert", path, "-o", out, "--threads", "1"]
                           + (["--precision", prec] if prec else []),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            put(os.path.join(a.out, "sparq"), open(out, "rb").read())
            os.remove(out)


def add_quantized_only(a):
    tmp = tempfile.mkdtemp(prefix="sparq-corpus-")
    d = os.path.join(tmp, "m1")
    subprocess.run([sys.executable, os.path.join(HERE, "make_models.py"), "--family", "bert", "--size", "micro",
                    "--opset", "14", "--head", "--batch", "1", "--seq", "4", "--no-reference", "--out", d],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = {t: set(os.listdir(os.path.join(a.out, t))) for t in ("onnx", "sparq")}
    for p in quantized_seeds(d):
        put_seed(a, tmp, p, True)
    shutil.rmtree(tmp)
    for t in ("onnx", "sparq"):
        new = sorted(set(os.listdir(os.path.join(a.out, t))) - before[t])
        print("%s: %d new seeds, %d bytes: %s" % (t, len(new), sum(os.path.getsize(os.path.join(a.out, t, f))
                                                                 for f in new), " ".join(new)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparq", required=True, help="the sparq CLI used to convert the onnx seeds")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fuzz", "corpus"))
    ap.add_argument("--quantized-only", action="store_true",
                    help="add only the quantized micro BERT seeds to the existing corpus")
    a = ap.parse_args()
    if a.quantized_only:
        return add_quantized_only(a)
    for t in ("onnx", "sparq", "npy", "c_api"):
        shutil.rmtree(os.path.join(a.out, t), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix="sparq-corpus-")
    onnx_seeds, quantized = [], []
    variants = [
        ("bert", 17, []), ("bert", 14, ["--head"]), ("bert", 11, []),
        ("bert", 17, ["--prune", "0.5", "--block", "4x1"]),
        ("distilbert", 14, ["--prune", "0.5", "--block", "1x4"]), ("distilbert", 17, []),
        ("roberta", 14, ["--prune", "0.5", "--block", "1x1"]), ("roberta", 13, []),
    ]
    for i, (fam, opset, extra) in enumerate(variants):
        d = os.path.join(tmp, "m%d" % i)
        subprocess.run([sys.executable, os.path.join(HERE, "make_models.py"), "--family", fam, "--size", "micro",
                        "--opset", str(opset), "--batch", "1", "--seq", "4", "--no-reference", "--out", d] + extra,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        onnx_seeds.append(os.path.join(d, "model.onnx"))
        if fam == "bert" and opset == 14:
            quantized += quantized_seeds(d)
    onnx_seeds += quantized
    ops = supported_ops(a.sparq)
    for path in sorted(glob.glob(os.path.join(NODE_TESTS, "*", "model.onnx"))):
        m = onnx.load(path)
        if all(n.op_type in ops and n.domain in ("", "ai.onnx") for n in m.graph.node):
            onnx_seeds.append(path)
    for p in onnx_seeds:
        put_seed(a, tmp, p, p in quantized)

    # .npy: every dtype the reader takes, scalars to 3-D, both header versions.
    rng = np.random.default_rng(0)
    for dt in ("<f4", "<f8", "<i8", "<i4", "|i1", "|u1", "|b1"):
        for shape in ((), (0,), (3,), (2, 5), (1, 2, 3)):
            arr = (rng.integers(0, 3, size=shape)).astype(dt)
            for version in ((1, 0), (2, 0)):
                p = os.path.join(tmp, "a.npy")
                with open(p, "wb") as f:
                    np.lib.format.write_array(f, arr, version=version)
                put(os.path.join(a.out, "npy"), open(p, "rb").read())

    # C API descriptors (the byte layout fuzz_c_api.cpp reads): count, then per tensor a
    # name pick, dtype, rank and dims, then data bytes.
    def tensor(name_pick, dtype, rank, dims):
        b = bytes([name_pick, dtype, rank & 0xFF])
        for d in dims:
            b += bytes([d]) if d < 200 else bytes([255]) + struct.pack("<q", d)
        return b
    seeds = [
        bytes([1]) + tensor(0, 0, 2, [1, 4]) + bytes([1, 2, 3, 1] * 8),
        bytes([2]) + tensor(0, 0, 2, [2, 3]) + tensor(1, 0, 2, [2, 3]) + bytes([1] * 96),
        bytes([3]) + tensor(0, 1, 2, [1, 5]) + tensor(1, 1, 2, [1, 5]) + tensor(2, 1, 2, [1, 5]) + bytes([0] * 60),
        bytes([1]) + tensor(0, 0, 2, [1, 2 ** 40]) + bytes([0] * 8),
        bytes([1]) + tensor(0, 0, 2, [2 ** 62, 4]) + bytes([0] * 8),
        bytes([1]) + tensor(0, 2, 2, [1, 4]) + bytes([0] * 16),
        bytes([1]) + tensor(6, 0, 2, [1, 4]) + bytes([0] * 32),
        bytes([1]) + tensor(0x80, 0, 2, [1, 4]),
        bytes([2]) + tensor(0, 0, 2, [1, 4]) + tensor(0, 0, 2, [1, 4]) + bytes([1] * 64),
        bytes([1]) + tensor(0, 0, 0xFC, []),
        bytes([0]),
    ]
    for s in seeds:
        put(os.path.join(a.out, "c_api"), s)
    shutil.rmtree(tmp)
    for t in ("onnx", "sparq", "npy", "c_api"):
        files = glob.glob(os.path.join(a.out, t, "*"))
        print("%s: %d seeds, %d bytes" % (t, len(files), sum(os.path.getsize(f) for f in files)))


if __name__ == "__main__":
    main()
