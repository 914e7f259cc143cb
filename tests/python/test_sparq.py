"""The Python module against the float64 references of tools/make_models.py models.

Run by ctest (tests/CMakeLists.txt) with PYTHONPATH at the build tree's python/ folder
and SPARQ_MODELS_DIR at the generated models.
"""
import os
import threading

import numpy as np
import pytest

import sparq

MODELS = os.environ.get("SPARQ_MODELS_DIR", "")


def model_dir(name):
    d = os.path.join(MODELS, name)
    if not os.path.exists(os.path.join(d, "model.onnx")):
        pytest.skip(f"no model {name} under SPARQ_MODELS_DIR")
    return d


def inputs_of(d):
    return {f[6:-4]: np.load(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.startswith("input_") and f.endswith(".npy")}


def refs_of(d):
    return {f[4:-4]: np.load(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.startswith("ref_") and f.endswith(".npy")}


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    d = model_dir("bert-14")
    out = tmp_path_factory.mktemp("py")
    fp32, int8 = str(out / "fp32.sparq"), str(out / "int8.sparq")
    report = sparq.convert(os.path.join(d, "model.onnx"), fp32)
    assert report and {"name", "k", "n", "sparsity", "block", "sparse", "bytes"} <= set(report[0])
    sparq.convert(os.path.join(d, "model.onnx"), int8, precision="int8", block="auto", prune=None)
    return d, fp32, int8


def test_plan_summary_and_fast_path_warning(bert, tmp_path):
    d, fp32, int8 = bert
    m = sparq.Model(fp32, threads=1)
    with pytest.raises(ValueError, match="no successful run"):
        m.plan_summary()
    m.run(inputs_of(d))
    p = m.plan_summary()
    assert p["fused_attention"] == 2 and p["fused_residual"] == 4 and p["matmuls"] == 13
    assert p["op_by_op_steps"] == len(p["op_by_op"]) < p["steps"]
    assert all(s["node"] and s["op"] and s["reason"] for s in p["op_by_op"])
    assert 0 < p["arena_bytes"] <= p["unshared_bytes"]
    assert p["fused_quantize"] == 0  # fp32: nothing is quantized
    m8 = sparq.Model(int8, threads=1)
    m8.run(inputs_of(d))
    assert m8.plan_summary()["fused_quantize"] == 4  # every LayerNorm a matmul reads, 2 layers
    # Without fusion passes convert warns, and require_fused refuses and writes nothing.
    onnx = os.path.join(d, "model.onnx")
    with pytest.warns(RuntimeWarning, match="off the fast path"):
        sparq.convert(onnx, str(tmp_path / "nofuse.sparq"), fuse=False)
    with pytest.raises(RuntimeError, match="require-fused"):
        sparq.convert(onnx, str(tmp_path / "refused.sparq"), fuse=False, require_fused=True)
    assert not (tmp_path / "refused.sparq").exists()
    sparq.convert(onnx, str(tmp_path / "fused.sparq"), require_fused=True)


def test_fp32_matches_float64_reference(bert):
    d, fp32, _ = bert
    m = sparq.Model(fp32, threads=1)
    out = m.run(inputs_of(d))
    for name, ref in refs_of(d).items():
        got = out[name].astype(np.float64)
        assert got.shape == ref.shape and out[name].dtype == np.float32
        assert np.max(np.abs(got - ref)) <= 1e-3 * np.max(np.abs(ref))
        cos = np.dot(got.ravel(), ref.ravel()) / np.sqrt(np.dot(got.ravel(), got.ravel()) * np.dot(ref.ravel(), ref.ravel()))
        assert cos >= 0.99999


def test_int8_per_token_cosine(bert):
    d, _, int8 = bert
    out = sparq.Model(int8).run(inputs_of(d))
    ref = refs_of(d)["last_hidden_state"]
    got = out["last_hidden_state"].astype(np.float64)
    r, g = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, ref.shape[-1])
    cos = np.sum(r * g, axis=1) / np.sqrt(np.sum(r * r, axis=1) * np.sum(g * g, axis=1))
    assert cos.min() >= 0.99


def test_descriptions(bert):
    _, fp32, _ = bert
    m = sparq.Model(fp32)
    names = [i["name"] for i in m.inputs]
    assert names[0] == "input_ids" and "attention_mask" in names
    assert m.inputs[0]["dtype"] == "int64" and len(m.inputs[0]["shape"]) == 2
    last = [o for o in m.outputs if o["name"] == "last_hidden_state"][0]
    assert last["dtype"] == "float32" and isinstance(last["shape"][-1], int)
    assert m.threads == 0 and m.path == fp32


def test_int32_and_strided_inputs_give_the_same_answer(bert):
    d, fp32, _ = bert
    m = sparq.Model(fp32, threads=2)
    feeds = inputs_of(d)
    base = m.run(feeds)
    as32 = m.run({k: v.astype(np.int32) for k, v in feeds.items()})
    # Non-contiguous views (every other column of a wider array) are copied, not misread.
    wide = {k: np.repeat(v, 2, axis=1)[:, ::2] for k, v in feeds.items()}
    assert not wide["input_ids"].flags["C_CONTIGUOUS"]
    strided = m.run(wide)
    for k in base:
        np.testing.assert_array_equal(base[k], as32[k])
        np.testing.assert_array_equal(base[k], strided[k])


def test_results_are_new_arrays(bert):
    d, fp32, _ = bert
    m = sparq.Model(fp32, threads=1)
    a = m.run(inputs_of(d))
    keep = a["last_hidden_state"].copy()
    a["last_hidden_state"][:] = 0
    b = m.run(inputs_of(d))
    np.testing.assert_array_equal(b["last_hidden_state"], keep)


def test_many_python_threads_on_one_model(bert):
    d, _, int8 = bert
    m = sparq.Model(int8, threads=1)
    feeds = inputs_of(d)
    expected = m.run(feeds)
    results, errors = [], []

    def worker():
        try:
            for _ in range(5):
                results.append(m.run(feeds))
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 20
    for r in results:
        for k in expected:
            np.testing.assert_array_equal(r[k], expected[k])


def test_errors_are_value_or_runtime_errors(bert, tmp_path):
    d, fp32, _ = bert
    m = sparq.Model(fp32)
    feeds = inputs_of(d)
    with pytest.raises(ValueError, match="unknown input 'input_idz'"):
        m.run({"input_idz": feeds["input_ids"]})
    with pytest.raises(ValueError, match="int64 or int32"):
        m.run({"input_ids": feeds["input_ids"].astype(np.float32)})
    with pytest.raises(ValueError, match="outside"):
        m.run({"input_ids": np.full_like(feeds["input_ids"], 10**9)})
    with pytest.raises(ValueError, match="rank"):
        m.run({"input_ids": feeds["input_ids"].ravel()})
    with pytest.raises(ValueError, match="unsupported dtype"):
        m.run({"input_ids": feeds["input_ids"].astype(np.complex64)})
    bad = tmp_path / "bad.sparq"
    bad.write_bytes(b"\0" * 300)
    with pytest.raises(RuntimeError):
        sparq.Model(str(bad))
    with pytest.raises(ValueError, match="precision"):
        sparq.convert(os.path.join(d, "model.onnx"), str(tmp_path / "x.sparq"), precision="int4")
    with pytest.raises(ValueError, match="prune"):
        sparq.convert(os.path.join(d, "model.onnx"), str(tmp_path / "x.sparq"), prune=1.5)
    assert not (tmp_path / "x.sparq").exists()
