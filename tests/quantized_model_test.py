#!/usr/bin/python3
"""End to end on quantized models (issue 12). Each case is a test model rewritten into a
quantized form, converted with `sparq convert` and run with `sparq run`:

  * ONNX Runtime's dynamic quantization as bench/peers/ort_dynamic_int8.py writes it
    (DynamicQuantizeLinear + MatMulInteger + the Cast / Mul scale chain), and the forms
    of tools/make_quantized_models.py: the same with uint8 weights (zero point 128, or
    asymmetric), per-tensor scales and the other Mul association; QDQ (with and without
    the QAT Transpose); QOperator MatMulInteger on a static QuantizeLinear and
    QLinearMatMul; and with attention's two activation x activation MatMuls quantized too
    (--attention: QDQ pairs on both inputs, or QLinearMatMul);
  * on the BERT, DistilBERT and RoBERTa test models and on each family pruned in each
    block pattern (4x1, 1x4, 1x1): the stored bert-pruned-4x1, distilbert-head-1x4 and
    roberta-1x1, and the other six of the grid (GENERATED), which tools/make_models.py
    writes into the temporary directory, float64 references included, with the stored
    pruned model's options (the models directory is left as it is: the float conformance
    and golden tests run every model there). Every (family, pattern) cell is quantized in
    at least one of the ORT dynamic, QDQ and QOperator forms, every pattern in all three;
  * QAT exports as torch 1.13 writes them (form "qat [flags]": tools/make_qat_model.py
    exports the test model of that name, same family, size, seed, pruning and inputs, with
    fake-quantized Linear layers at opset 13): weights as QuantizeLinear(float W) ->
    DequantizeLinear(axis 0) -> Transpose -> MatMul, the scales and zero points Constant
    nodes, with and without fake-quantized activations. Exported into the temporary
    directory, not the models directory (the float conformance tests read every model
    there against the float model's reference).

Checks, per case:
  * default flags fuse every quantized matmul into a packed int8 SparqMatMul (convert's
    "quantized model:" and "fast path:" lines; no quantized op left in `inspect`), with
    the model's own integers and scales (exactly, except asymmetric uint8 weights, which
    are requantized with a note on stderr), and every attention (one per Softmax) fused, also where the model quantized its activation matmuls;
  * `inspect --json` counts as many nonzero weights in each packed matrix as the model
    has weights other than their zero point (no pruned weight turned into a nonzero);
  * the fused outputs against a float64 NumPy evaluation of the quantized graph's ONNX
    semantics (tools/onnx_numpy_ref.py): every token's cosine >= 0.995; and against the
    float model's float64 reference by sparq's int8 rule (every token >= 0.99);
  * `convert --no-fuse` keeps the quantized ops and runs them with ONNX's exact
    semantics: max |err| <= 2e-2 x max |ref| and every token's cosine >= 0.9999 against
    the same NumPy evaluation (float32 against float64 can move a quantized activation
    across a rounding boundary, hence not exact: bert-14 (8e-3) has an activation 1e-5 of
    a step from a rounding boundary at its sixth DynamicQuantizeLinear).
The "scheme" columns compare the quantized graph's own activation scheme (its exact
semantics) and sparq's per-token dynamic one, both against the float model
(docs/quantized-models.md).

    quantized_model_test.py SPARQ_CLI MODELS_DIR
Exit 77 (skipped) when the models are missing."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import onnx_numpy_ref  # noqa: E402

QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                 "QLinearMatMul")
# (model, form): form None is bench/peers/ort_dynamic_int8.py, else
# tools/make_quantized_models.py's flags.
CASES = [
    ("bert-14", None),
    ("distilbert-14", None),
    ("roberta-14", None),
    ("bert-pruned-4x1", None),
    ("bert-opset11", None),
    ("distilbert-head-1x4", None),
    ("roberta-1x1", None),
    ("bert-14", "--form dynamic --weights u8-128 --scale tensor --chain chain"),
    ("roberta-1x1", "--form dynamic --weights u8-asym"),
    ("distilbert-14", "--form qdq"),
    ("roberta-1x1", "--form qdq"),
    ("bert-pruned-4x1", "--form qdq-t"),
    ("distilbert-head-1x4", "--form qdq --weights u8-128 --scale tensor"),
    ("bert-pruned-4x1", "--form integer --weights u8-128"),
    ("distilbert-head-1x4", "--form integer --weights u8-128"),
    ("roberta-1x1", "--form integer --weights u8-128"),
    ("bert-14", "--form qlinear"),
    ("roberta-14", "--form qlinear --weights u8-128 --scale tensor"),
    ("bert-14", "--form qdq --attention qdq"),
    ("distilbert-14", "--form qlinear --attention qlinear"),
    ("roberta-1x1", "--form qdq --weights u8-128 --attention qlinear"),
    # quantize_static's QDQ around the head splits, the merge and the Softmax too
    ("bert-14", "--form qdq --attention qdq --data-qdq"),
    ("distilbert-head-1x4", "--form qdq --weights u8-128 --attention qdq --data-qdq"),
    ("roberta-1x1", "--form qdq --attention qdq --data-qdq"),
    ("bert-14", "qat --activations"),
    ("bert-pruned-4x1", "qat"),
    # The rest of the family x block pattern grid, on the models of GENERATED: every cell
    # gets a weight format family (ORT dynamic, QDQ, QOperator), every pattern all three.
    ("bert-pruned-1x4", None),
    ("bert-pruned-1x4", "--form qlinear"),
    ("bert-pruned-1x1", "--form qdq-t"),
    ("bert-pruned-1x1", "--form integer --weights u8-128"),
    ("distilbert-head-4x1", "--form qlinear --weights u8-128"),
    ("distilbert-head-4x1", "--form dynamic --weights u8-128 --scale tensor --chain chain"),
    ("distilbert-head-1x1", "--form dynamic --weights u8-128"),
    ("distilbert-head-1x1", "--form qlinear --weights u8-128 --scale tensor"),
    ("roberta-4x1", None),
    ("roberta-4x1", "--form qdq"),
    ("roberta-1x4", "--form qdq"),
    ("roberta-1x4", "--form integer --weights u8-128 --attention qlinear"),
]
# Pruned float models of the grid that MODELS_DIR lacks (every model there is also run by
# the float conformance and golden tests): tools/make_models.py writes them, with their
# inputs and float64 references, into the temporary directory, with the options of the
# stored pruned model of the same family (tools/make_test_models.sh).
GENERATED = {
    "bert-pruned-1x4": "--family bert --opset 17 --prune 0.9 --block 1x4",
    "bert-pruned-1x1": "--family bert --opset 17 --prune 0.9 --block 1x1",
    "distilbert-head-4x1": "--family distilbert --opset 14 --head --prune 0.8 --block 4x1",
    "distilbert-head-1x1": "--family distilbert --opset 14 --head --prune 0.8 --block 1x1",
    "roberta-4x1": "--family roberta --opset 14 --prune 0.7 --block 4x1",
    "roberta-1x4": "--family roberta --opset 14 --prune 0.7 --block 1x4",
}


def token_stats(got, ref):
    r, g = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, ref.shape[-1])
    tok = np.sum(r * g, 1) / np.sqrt(np.sum(r * r, 1) * np.sum(g * g, 1))
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))), float(tok.min())


def weight_matmuls(model):
    inits = {t.name for t in model.graph.initializer}
    return sum(1 for n in model.graph.node
               if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in inits)


def nonzeros(sparq, path):
    r = subprocess.run([sparq, "inspect", path, "--json"], capture_output=True, text=True, check=True)
    return [w["nonzeros"] for w in json.loads(r.stdout)["weights"] if w["precision"] == "int8"]


def model_densities(model):
    """Per quantized matmul weight, in node order: how many q differ from their zero point.
    A weight may be QuantizeLinear of a float constant (QAT exports): q is computed as ONNX
    defines it (float32 division, round half to even, saturate)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ports = {"MatMulInteger": (1, 3), "QLinearMatMul": (3, 5), "DequantizeLinear": (0, 2)}
    out = []
    for n in model.graph.node:
        if n.op_type == "Constant":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        if n.op_type == "QuantizeLinear" and all(i in inits for i in n.input):
            w, s = inits[n.input[0]].astype(np.float32), inits[n.input[1]].astype(np.float32)
            zp = inits[n.input[2]] if len(n.input) > 2 else np.uint8(0)
            axis = onnx.helper.get_attribute_value(n.attribute[0]) if n.attribute else 1
            shape = [1] * w.ndim
            if np.ndim(s) == 1:
                shape[axis] = -1
            info = np.iinfo(zp.dtype)
            q = np.rint(w / s.reshape(shape)) + zp.astype(np.float32).reshape(shape)
            inits[n.output[0]] = np.clip(q, info.min, info.max).astype(zp.dtype)
        if n.op_type not in ports or n.input[ports[n.op_type][0]] not in inits:
            continue
        q = inits[n.input[ports[n.op_type][0]]].astype(np.int64)
        if q.ndim != 2:
            continue
        zp = inits[n.input[ports[n.op_type][1]]].astype(np.int64) if len(n.input) > ports[n.op_type][1] else 0
        if n.op_type == "DequantizeLinear" and np.ndim(zp) == 1:
            axis = onnx.helper.get_attribute_value(n.attribute[0]) if n.attribute else 1
            zp = zp.reshape((-1, 1) if axis == 0 else (1, -1))
        out.append(int(np.count_nonzero(q - zp)))
    return out


def main():
    sparq, models = sys.argv[1], sys.argv[2]
    present = [c for c in CASES if c[0] not in GENERATED and os.path.exists(os.path.join(models, c[0], "model.onnx"))]
    if not present:
        print(f"quantized_model_test: no models in {models}")
        return 77
    present += [c for c in CASES if c[0] in GENERATED]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for ci, (name, form) in enumerate(present):
            d = os.path.join(models, name)
            if name in GENERATED:
                d = os.path.join(tmp, "models", name)
                if not os.path.exists(os.path.join(d, "manifest.json")):
                    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools/make_models.py"), "--out", d]
                                       + GENERATED[name].split(), capture_output=True, text=True)
                    if r.returncode != 0:
                        print(f"{name}: FAILED: make_models.py {GENERATED[name]}: {r.stderr.strip()}")
                        ok = False
                        continue
            label = f"{name} [{form or 'ort_dynamic_int8.py'}]"
            q = os.path.join(tmp, f"{ci}.onnx")
            if form and form.split()[0] == "qat":  # quantized by torch's export of the same model
                with open(os.path.join(d, "manifest.json")) as f:
                    mf = json.load(f)
                d = os.path.join(tmp, f"{ci}-qat")
                cmd = [sys.executable, os.path.join(ROOT, "tools/make_qat_model.py"), "--out", d, "--opset", "13",
                       "--family", mf["family"], "--size", mf["size"], "--batch", str(mf["batch"]),
                       "--seq", str(mf["seq"]), "--seed", str(mf["seed"])] + form.split()[1:]
                cmd += (["--head"] if mf["head"] else []) + (
                    ["--prune", str(mf["prune"]), "--block", mf["block"]] if mf["prune"] is not None else [])
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                gen, q = None, os.path.join(d, "model.onnx")
                with open(os.path.join(d, "manifest.json")) as f:
                    expected = json.load(f)["quantized_matmuls"]
            elif form is None:
                gen = [os.path.join(ROOT, "bench/peers/ort_dynamic_int8.py"), os.path.join(d, "model.onnx"), q]
            else:
                gen = [os.path.join(ROOT, "tools/make_quantized_models.py"), os.path.join(d, "model.onnx"), q]
                gen += form.split()
            if gen is not None:
                subprocess.run([sys.executable] + gen, check=True, stderr=subprocess.DEVNULL)
                expected = weight_matmuls(onnx.load(os.path.join(d, "model.onnx")))
            model = onnx.load(q)
            attentions = sum(1 for n in model.graph.node if n.op_type == "Softmax")
            inputs = [i.name for i in model.graph.input]
            feeds = {k: np.load(os.path.join(d, f"input_{k}.npy")) for k in inputs}
            reference = onnx_numpy_ref.evaluate(model, feeds)
            args = [a for k in inputs for a in ("-i", f"{k}={d}/input_{k}.npy")]
            want_density = model_densities(model)
            problems = []
            for fused in (True, False):
                sq = os.path.join(tmp, f"{ci}-{int(fused)}.sparq")
                out = os.path.join(tmp, f"{ci}-{int(fused)}")
                conv = subprocess.run([sparq, "convert", q, "-o", sq] + ([] if fused else ["--no-fuse"]),
                                      capture_output=True, text=True)
                if conv.returncode != 0:
                    problems.append(f"convert{'' if fused else ' --no-fuse'} failed: {conv.stderr.strip()}")
                    continue
                if fused:
                    exact = "u8-asym" not in (form or "")
                    want = (f"quantized model: {expected} quantized matmuls packed, "
                            f"{expected if exact else 0} with their own int8 weights")
                    if want not in conv.stdout:
                        problems.append(f"convert did not say '{want}':\n{conv.stdout}")
                    # The attention's activation matmuls read in float (2 per attention), or none.
                    quantized_attention = form is not None and "--attention" in form.split()
                    want_attn = f"quantized attention: {2 * attentions} activation matmuls"
                    if quantized_attention != (want_attn in conv.stdout) or (
                            not quantized_attention and "quantized attention:" in conv.stdout):
                        problems.append(f"convert's quantized attention line: expected "
                                        f"{want_attn if quantized_attention else 'none'}:\n{conv.stdout}")
                    fast = [line for line in conv.stdout.splitlines() if line.startswith("fast path:")]
                    if not fast or "NOT fused" in fast[0]:
                        problems.append(f"not on the fast path: {fast}")
                    elif f" {attentions} attentions" not in fast[0]:
                        problems.append(f"not {attentions} attentions fused: {fast}")
                    if exact == ("note:" in conv.stderr):
                        problems.append(f"stderr {'has' if exact else 'lacks'} a requantization note: "
                                        f"{conv.stderr.strip()}")
                    insp = subprocess.run([sparq, "inspect", sq], capture_output=True, text=True, check=True)
                    ops = [line for line in insp.stdout.splitlines() if " nodes:" in line]
                    if not ops or any(f" {op}=" in ops[0] for op in QUANTIZED_OPS):
                        problems.append(f"quantized ops left in the converted graph: {ops}")
                    # Exactly the model's nonzero weights; requantized ones may lose tiny weights.
                    got_density = nonzeros(sparq, sq)
                    same = len(got_density) == len(want_density) and all(
                        g == w if exact else g <= w for g, w in zip(got_density, want_density))
                    if not same:
                        problems.append(f"nonzeros {got_density}, the model's weights {want_density}")
                run = subprocess.run([sparq, "run", sq, "-o", out] + args, capture_output=True, text=True)
                if run.returncode != 0:
                    problems.append(f"run failed: {run.stderr.strip()}")
                    continue
                for k, want in reference.items():
                    got = np.load(os.path.join(out, k + ".npy")).astype(np.float64)
                    if got.shape != want.shape:
                        problems.append(f"{k}: shape {got.shape}, the quantized graph's {want.shape}")
                        continue
                    fref = np.load(os.path.join(d, f"ref_{k}.npy"))
                    err, tok = token_stats(got, want)
                    _, ftok = token_stats(got, fref)
                    _, qtok = token_stats(want, fref)
                    good = (tok >= 0.995 if fused else err <= 2e-2 and tok >= 0.9999) and ftok >= 0.99
                    if not good:
                        problems.append(f"{k} {'fused' if fused else '--no-fuse'}: cosine {tok:.5f}, "
                                        f"max|err|/max|ref| {err:.2e}, vs float {ftok:.5f}")
                    print(f"  {label:<58} {k:<17} {'fused  ' if fused else 'no-fuse'} vs the quantized graph: "
                          f"max|err|/max|ref| {err:.2e}, worst token cosine {tok:.6f}; vs the float model: "
                          f"{ftok:.5f} (the graph's own scheme: {qtok:.5f})")
            for p in problems:
                print(f"{label}: FAILED: {p}")
            ok &= not problems
        ok &= flags_and_errors(sparq, models, tmp)
    return 0 if ok else 1


def flags_and_errors(sparq, models, tmp):
    """The CLI's flags on a quantized model, and a malformed one refused."""
    src = os.path.join(models, "bert-pruned-4x1", "model.onnx")
    if not os.path.exists(src):
        return True
    q = os.path.join(tmp, "flags.onnx")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench/peers/ort_dynamic_int8.py"), src, q],
                   check=True, stderr=subprocess.DEVNULL)
    out = os.path.join(tmp, "flags.sparq")
    problems = []
    r = subprocess.run([sparq, "convert", q, "-o", out, "--precision", "fp32"], capture_output=True, text=True)
    if r.returncode != 0 or "weights packed (fp32)" not in r.stdout or "dequantized" not in r.stderr:
        problems.append(f"--precision fp32 did not dequantize with a note: {r.stdout} {r.stderr}")
    r = subprocess.run([sparq, "convert", q, "-o", out, "--prune", "0.95", "--block", "1x4"],
                       capture_output=True, text=True)
    if r.returncode != 0 or "12 with their own int8 weights" not in r.stdout or "zero point" not in r.stderr:
        problems.append(f"--prune on a quantized model: {r.stdout} {r.stderr}")
    # A weight scale of 0: refused, one error line, exit 1, nothing written.
    m = onnx.load(q)
    for t in m.graph.initializer:
        if t.name.endswith("_Wscale"):
            a = numpy_helper.to_array(t).copy()
            a[0] = 0
            t.CopyFrom(numpy_helper.from_array(a, t.name))
            break
    bad = os.path.join(tmp, "bad.onnx")
    onnx.save(m, bad)
    bad_out = os.path.join(tmp, "bad.sparq")
    r = subprocess.run([sparq, "convert", bad, "-o", bad_out], capture_output=True, text=True)
    if (r.returncode != 1 or not r.stderr.startswith("sparq: error:") or "not positive" not in r.stderr
            or os.path.exists(bad_out) or any(f.startswith("bad.sparq") for f in os.listdir(tmp))):
        problems.append(f"a weight scale of 0: exit {r.returncode}, {r.stderr.strip()}")
    for p in problems:
        print(f"flags: FAILED: {p}")
    print(f"  flags (--precision fp32, --prune, a scale of 0): {'FAILED' if problems else 'ok'}")
    return not problems


if __name__ == "__main__":
    sys.exit(main())
