// ONNX Runtime (npm's onnxruntime-node) latency on an ONNX model, batch 1, seq 128:
//   node ort_bench.js MODEL.onnx THREADS SPIN(0|1)
// Graph optimizations on; intra-op spinning on or off. Prints p50/p90 of 30 runs (ms).
const ort = require('onnxruntime-node');
async function main() {
  const [model, threads, spin] = [process.argv[2], +process.argv[3], process.argv[4] !== '0'];
  const s = await ort.InferenceSession.create(model, {
    graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1,
    extra: { session: { intra_op: { allow_spinning: spin ? '1' : '0' } } } });
  const seq = 128;
  const ids = new BigInt64Array(seq).map((_, i) => BigInt(1000 + i * 37));
  const feeds = {};
  for (const n of s.inputNames) {
    const data = n === 'input_ids' ? ids : (n === 'attention_mask' ? new BigInt64Array(seq).fill(1n) : new BigInt64Array(seq));
    feeds[n] = new ort.Tensor('int64', data, [1, seq]);
  }
  for (let i = 0; i < 5; ++i) await s.run(feeds);
  const t = [];
  for (let i = 0; i < 30; ++i) { const t0 = process.hrtime.bigint(); await s.run(feeds); t.push(Number(process.hrtime.bigint() - t0) / 1e6); }
  t.sort((a, b) => a - b);
  console.log(JSON.stringify({ threads, spin, p50: t[15], p90: t[27] }));
}
main();
