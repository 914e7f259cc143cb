// ONNX Runtime (npm's onnxruntime-node) latency on an ONNX encoder, batch 1:
//   node ort_bench.js MODEL.onnx THREADS SPIN(0|1) [SEQ=128] [ITERATIONS=30]
// Graph optimizations on; intra-op spinning on or off. Random in-vocabulary ids, an
// all-ones mask, zero token types. Prints {"threads","spin","seq","p50","p90"} (ms).
const ort = require('onnxruntime-node');
async function main() {
  const [model, threads, spin] = [process.argv[2], +process.argv[3], process.argv[4] !== '0'];
  const seq = process.argv[5] ? +process.argv[5] : 128;
  const iterations = process.argv[6] ? +process.argv[6] : 30;
  const s = await ort.InferenceSession.create(model, {
    graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1,
    extra: { session: { intra_op: { allow_spinning: spin ? '1' : '0' } } } });
  const ids = new BigInt64Array(seq).map((_, i) => BigInt(1000 + ((i * 37) % 20000)));
  const feeds = {};
  for (const n of s.inputNames) {
    const data = n === 'input_ids' ? ids : (n === 'attention_mask' ? new BigInt64Array(seq).fill(1n) : new BigInt64Array(seq));
    feeds[n] = new ort.Tensor('int64', data, [1, seq]);
  }
  for (let i = 0; i < 3; ++i) await s.run(feeds);
  const t = [];
  for (let i = 0; i < iterations; ++i) { const t0 = process.hrtime.bigint(); await s.run(feeds); t.push(Number(process.hrtime.bigint() - t0) / 1e6); }
  t.sort((a, b) => a - b);
  const pct = (p) => t[Math.min(t.length - 1, Math.ceil(p / 100 * t.length) - 1)];
  console.log(JSON.stringify({ threads, spin, seq, p50: pct(50), p90: pct(90) }));
}
main().catch((e) => { console.error(e.message); process.exit(1); });
