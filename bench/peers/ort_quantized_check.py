#!/usr/bin/python3
"""sparq against ONNX Runtime (npm's onnxruntime-node, a bench peer) on the same quantized
ONNX file (issue 12, part 3). For each model directory (model.onnx, input_<name>.npy,
optionally ref_<output>.npy: the float model's float64 reference) and each quantized form:

  1. writes the quantized model into the scratch directory: form `ort` is
     bench/peers/ort_dynamic_int8.py, every other form tools/make_quantized_models.py's
     flags (FORMS below); form `file` takes model.onnx as it is (a model that arrives
     quantized, e.g. tools/make_qat_model.py's; its reference row is then `convert
     --precision int8` of that file);
  2. runs it with ONNX Runtime (bench/peers/ort_run.js: graph optimizations on) on the
     directory's inputs, and converts it with `sparq convert` (default flags) and runs it
     with `sparq run` on the same inputs;
  3. compares the outputs: the worst per-token cosine (last axis) and the whole-tensor
     cosine of sparq against ONNX Runtime, and of each against the float model
     (ref_<output>.npy, else ONNX Runtime fp32 on model.onnx);
  4. times both at each thread count on the inputs' shape: ONNX Runtime on the same
     inputs (at T > 1 with intra-op spinning off and on, the better p50 counts, as
     bench/compare/compare.py does), sparq with `sparq bench --batch B --seq S` (random
     in-vocabulary ids, all-ones mask).
Once per model, sparq's own int8 conversion of the float model (`convert --precision
int8`) is checked and timed the same way, for reference.

The gate (issue 12): sparq vs ONNX Runtime, per-token cosine >= 0.995 on hidden states
(last_hidden_state), whole-tensor cosine >= 0.995 on logits and pooled outputs.

    ort_quantized_check.py --sparq build/release/sparq --scratch /tmp/q MODEL_DIR...
        [--forms ort,qdq,...] [--threads 1,2] [--iterations 50] [--json OUT.json]

Run it under the machine lock (it times): flock /tmp/sparq-machine.lock ort_quantized_check.py ..."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FORMS = {
    "ort": None,
    "dyn-u8": "--form dynamic --weights u8-128",
    "qdq": "--form qdq",
    "qdq-u8": "--form qdq --weights u8-128",
    "int": "--form integer",
    "int-u8": "--form integer --weights u8-128",
    "qlin": "--form qlinear",
    "qlin-u8": "--form qlinear --weights u8-128",
    "qdq-attn": "--form qdq --attention qdq",  # attention's activation matmuls quantized too
    "qlin-attn": "--form qlinear --attention qlinear",
    # quantize_static's QDQ also around Reshape, Transpose and Softmax
    "qdq-data": "--form qdq --attention qdq --data-qdq",
    "file": "",
}
GATE = 0.995


def cosines(got, ref):
    """(worst per-token cosine over the last axis, whole-tensor cosine)."""
    g = got.astype(np.float64).reshape(-1, got.shape[-1])
    r = ref.astype(np.float64).reshape(-1, ref.shape[-1])
    tok = np.sum(g * r, 1) / np.sqrt(np.sum(g * g, 1) * np.sum(r * r, 1))
    whole = np.sum(g * r) / np.sqrt(np.sum(g * g) * np.sum(r * r))
    return float(tok.min()), float(whole)


def ort_run(model, outdir, feeds, threads, iterations):
    """ONNX Runtime's outputs (written to outdir) and p50 (best of spin off / on at T > 1)."""
    best = None
    for spin in ([0, 1] if threads > 1 else [0]):
        cmd = ["node", os.path.join(HERE, "ort_run.js"), model, outdir, str(threads), str(spin),
               str(iterations)] + [f"{k}={v}" for k, v in feeds.items()]
        r = json.loads(subprocess.check_output(cmd, cwd=HERE))
        if best is None or r["p50"] < best["p50"]:
            best = r
    return best


def sparq_bench(sparq, path, batch, seq, threads, iterations):
    out = subprocess.check_output([sparq, "bench", path, "--batch", str(batch), "--seq", str(seq),
                                   "--threads", str(threads), "--warmup", "3", "--iterations",
                                   str(iterations), "--json"], stderr=subprocess.DEVNULL)
    return json.loads(out)["latency_ms"]["p50"]


def load_outputs(d, names):
    return {n: np.load(os.path.join(d, n + ".npy")) for n in names}


def check_model(a, mdir):
    mdir = os.path.abspath(mdir)  # node runs in bench/peers
    name = os.path.basename(os.path.normpath(mdir))
    manifest = json.load(open(os.path.join(mdir, "manifest.json")))
    float_onnx = os.path.join(mdir, "model.onnx")
    feeds = {k: os.path.join(mdir, f"input_{k}.npy") for k in manifest["inputs"]}
    batch, seq = np.load(feeds["input_ids"]).shape
    scratch = os.path.join(a.scratch, name)
    os.makedirs(scratch, exist_ok=True)
    sparq_inputs = [x for k, v in feeds.items() for x in ("-i", f"{k}={v}")]
    outputs = manifest["outputs"]

    refs = {n: os.path.join(mdir, f"ref_{n}.npy") for n in outputs}
    if all(os.path.exists(p) for p in refs.values()):
        float_ref, float_ref_kind = load_outputs(mdir, ["ref_" + n for n in outputs]), "float64"
        float_ref = {n: float_ref["ref_" + n] for n in outputs}
    else:
        ort_run(float_onnx, os.path.join(scratch, "ort-fp32"), feeds, 1, 0)
        float_ref, float_ref_kind = load_outputs(os.path.join(scratch, "ort-fp32"), outputs), "ORT fp32"

    def sparq_case(sq, tag):
        out = os.path.join(scratch, f"sparq-{tag}")
        subprocess.run([a.sparq, "run", sq, "-o", out, "--threads", "1"] + sparq_inputs, check=True,
                       stdout=subprocess.DEVNULL)
        lat = {t: sparq_bench(a.sparq, sq, batch, seq, t, a.iterations) for t in a.threads}
        return load_outputs(out, outputs), lat

    rows = []
    own = os.path.join(scratch, "own-int8.sparq")
    subprocess.run([a.sparq, "convert", float_onnx, "-o", own, "--precision", "int8"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own_out, own_lat = sparq_case(own, "own-int8")
    own_label = ("the file" if a.forms == ["file"] else "float model") + ", sparq --precision int8"
    rows.append({"model": name, "form": own_label, "float_ref": float_ref_kind,
                 "outputs": {n: {"sparq_vs_float": cosines(own_out[n], float_ref[n])} for n in outputs},
                 "sparq_p50": own_lat})
    print(table_rows(rows, a.threads), flush=True)
    for form in a.forms:
        q = os.path.join(scratch, f"{form}.onnx")
        if form == "file":
            gen = None
            q = float_onnx
        elif FORMS[form] is None:
            gen = [os.path.join(HERE, "ort_dynamic_int8.py"), float_onnx, q]
        else:
            gen = [os.path.join(ROOT, "tools/make_quantized_models.py"), float_onnx, q] + FORMS[form].split()
        if gen is not None:
            subprocess.run([sys.executable] + gen, check=True, stderr=subprocess.DEVNULL)
        sq = os.path.join(scratch, f"{form}.sparq")
        conv = subprocess.run([a.sparq, "convert", q, "-o", sq], check=True, capture_output=True, text=True)
        fused = [ln for ln in conv.stdout.splitlines() if ln.startswith("quantized model:")]
        ort_dir = os.path.join(scratch, f"ort-{form}")
        ort_lat = {t: ort_run(q, ort_dir, feeds, t, a.iterations) for t in a.threads}
        ort_out = load_outputs(ort_dir, outputs)
        sq_out, sq_lat = sparq_case(sq, form)
        row = {"model": name, "form": form, "flags": "ort_dynamic_int8.py" if FORMS[form] is None else FORMS[form],
               "float_ref": float_ref_kind, "convert": fused[0] if fused else conv.stdout.strip(),
               "ort_p50": {t: r["p50"] for t, r in ort_lat.items()},
               "ort_spin": {t: r["spin"] for t, r in ort_lat.items()}, "sparq_p50": sq_lat, "outputs": {}}
        for n in outputs:
            tok, whole = cosines(sq_out[n], ort_out[n])
            gate = tok if n == "last_hidden_state" else whole
            row["outputs"][n] = {"sparq_vs_ort": (tok, whole), "pass": gate >= GATE,
                                 "ort_vs_float": cosines(ort_out[n], float_ref[n]),
                                 "sparq_vs_float": cosines(sq_out[n], float_ref[n])}
        rows.append(row)
        print(table_rows([row], a.threads), flush=True)
    return rows


def table_rows(rows, threads):
    lines = []
    for r in rows:
        for n, o in r["outputs"].items():
            lat = lambda d: " / ".join(f"{d[t]:.3f}" for t in threads) if d else "-"  # noqa: E731
            if "sparq_vs_ort" not in o:
                lines.append(f"| {r['model']} | {r['form']} | {n} | - | - | - | "
                             f"{o['sparq_vs_float'][0]:.5f} / {o['sparq_vs_float'][1]:.5f} | - | "
                             f"{lat(r['sparq_p50'])} |")
                continue
            tok, whole = o["sparq_vs_ort"]
            mark = "" if o["pass"] else " **below**"
            lines.append(f"| {r['model']} | {r['form']} | {n} | {tok:.5f} | {whole:.5f}{mark} | "
                         f"{o['ort_vs_float'][0]:.5f} / {o['ort_vs_float'][1]:.5f} | "
                         f"{o['sparq_vs_float'][0]:.5f} / {o['sparq_vs_float'][1]:.5f} | "
                         f"{lat(r['ort_p50'])} | {lat(r['sparq_p50'])} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--sparq", default=os.path.join(ROOT, "build/release/sparq"))
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--forms", default=",".join(f for f in FORMS if f != "file"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    a.forms = a.forms.split(",")
    a.threads = [int(t) for t in a.threads.split(",")]
    a.scratch, a.sparq = os.path.abspath(a.scratch), os.path.abspath(a.sparq)
    unknown = [f for f in a.forms if f not in FORMS]
    if unknown:
        ap.error(f"unknown forms {unknown}; known: {', '.join(FORMS)}")
    t = " / ".join(f"{x}T" for x in a.threads)
    print(f"| model | form | output | sparq vs ORT: worst token | whole tensor | ORT vs float: token / whole "
          f"| sparq vs float: token / whole | ORT p50 ms {t} | sparq p50 ms {t} |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    rows = []
    for m in a.models:
        rows += check_model(a, m)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [(r["model"], r["form"], n) for r in rows for n, o in r["outputs"].items() if o.get("pass") is False]
    print(f"ort_quantized_check: {len(rows)} rows, {len(failed)} outputs below {GATE}: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
