// sparq convert | run | bench | inspect (contract: DESIGN.md, "CLI contract").
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <pthread.h>
#include <random>
#include <sstream>
#include <thread>

#include "engine/model.h"
#include "formats/error.h"
#include "formats/npy.h"
#ifdef SPARQ_HAVE_ONNX
#include "formats/onnx_import.h"
#endif
#include "engine/ops/registry.h"
#include "tools/cli.h"

namespace sparq::cli {
namespace {

int threads_flag(Args& args) { return static_cast<int>(args.integer("--threads", 0, 0, 1024)); }

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      o += buf;
      continue;
    }
    o += c;
  }
  return o;
}

// [{"node":..., "op":..., "<why>":...}, ...] without the brackets.
std::string json_nodes(const std::vector<OffPathNode>& nodes, const char* why) {
  std::string s;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const OffPathNode& o = nodes[i];
    s += std::string(i ? "," : "") + "{\"node\":\"" + json_escape(o.node) + "\",\"op\":\"" +
         json_escape(o.op) + "\",\"" + why + "\":\"" + json_escape(o.cause) + "\"}";
  }
  return s;
}

std::string safe_file_name(const std::string& name) {
  std::string o = name;
  for (char& c : o) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  if (o.empty() || o == "." || o == "..") o = "_" + o;
  return o;
}

}  // namespace

int convert_cmd(Args& args) {
  ConvertOptions o;
  std::string out;
  if (!args.value("-o", &out) && !args.value("--output", &out))
    throw UsageError("convert needs -o OUT.sparq");
  // A quantized model keeps its int8 weights unless --precision is given.
  o.precision_given = args.value("--precision", &o.precision);
  if (o.precision != "fp32" && o.precision != "int8")
    throw UsageError("--precision must be fp32 or int8, got '" + o.precision + "'");
  o.fuse = !args.flag("--no-fuse");  // keep the graph op by op (debugging, A/B runs)
  o.require_fused = args.flag("--require-fused");
  args.value("--block", &o.block);
  if (o.block != "auto" && o.block != "4x1" && o.block != "1x4" && o.block != "1x1") {
    throw UsageError("--block must be auto, 4x1, 1x4 or 1x1, got '" + o.block + "'");
  }
  std::string prune;
  if (args.value("--prune", &prune)) {
    char* end = nullptr;
    o.prune = std::strtod(prune.c_str(), &end);
    if (prune.empty() || *end != '\0' || !(o.prune >= 0.0 && o.prune < 1.0)) {
      throw UsageError("--prune must be a sparsity in [0, 1), got '" + prune + "'");
    }
  }
  o.threads = threads_flag(args);  // weights packed in parallel; the file is the same for any count
  const std::string in = args.positional("MODEL.onnx");
  args.finish();
  // Progress only on a terminal: on a pipe or file, stderr carries errors alone.
  const bool tty = isatty(2) != 0;
#ifndef SPARQ_HAVE_ONNX
  (void)tty;
  throw sparq::Error(sparq::Status::kUnsupported,
                     "this sparq was built without the ONNX importer (Debian: libonnx-dev "
                     "libprotobuf-dev protobuf-compiler; scripts/deps.sh installs them): convert "
                     "is not available");
#else
  if (tty) std::fprintf(stderr, "sparq: importing %s\n", in.c_str());
  Graph g = import_onnx(in);
  FastPathReport fast;
  const auto report = convert_graph(
      std::move(g), out, o,
      [tty](size_t done, size_t total) {
        if (!tty) return;
        std::fprintf(stderr, "\rsparq: packing weights %zu/%zu", done, total);
        if (done == total) std::fputc('\n', stderr);
      },
      &fast);
  std::printf("%-48s %6s %6s %8s %-6s %-7s %10s\n", "weight", "K", "N", "sparsity", "block", "runs",
              "bytes");
  uint64_t total = 0;
  for (const LayerReport& r : report) {
    std::printf("%-48s %6lld %6lld %7.1f%% %-6s %-7s %10llu\n", r.name.c_str(),
                static_cast<long long>(r.k), static_cast<long long>(r.n), 100.0 * r.sparsity,
                r.block.c_str(), r.sparse ? "sparse" : "dense",
                static_cast<unsigned long long>(r.bytes));
    total += r.bytes;
  }
  struct stat st {};
  stat(out.c_str(), &st);
  size_t int8 = 0, quantized = 0, exact = 0;
  for (const LayerReport& r : report) {
    int8 += r.precision == "int8";
    quantized += r.quantized;
    exact += r.exact;
  }
  // One precision when every weight has it (a float model: the --precision flag's).
  std::string precision = o.precision;
  if (!report.empty()) {
    precision = int8 == report.size() ? "int8"
                : int8 == 0           ? "fp32"
                                      : std::to_string(int8) + " int8, " +
                                  std::to_string(report.size() - int8) + " fp32";
  }
  std::printf("%zu weights packed (%s), %llu bytes of packed weights; wrote %s (%lld bytes)\n",
              report.size(), precision.c_str(), static_cast<unsigned long long>(total), out.c_str(),
              static_cast<long long>(st.st_size));
  if (quantized > 0) {
    std::printf(
        "quantized model: %zu quantized matmuls packed, %zu with their own int8 weights and "
        "scales kept exactly; activations quantized per token at run time\n",
        quantized, exact);
  }
  if (fast.quantized_attention_matmuls > 0) {
    std::printf(
        "quantized attention: %d activation matmuls and their fake quantization read in float "
        "for sparq's own attention quantization\n",
        fast.quantized_attention_matmuls);
  }
  std::printf("fast path: %d matmuls packed, %d attentions, %d LayerNorms, %d GELUs fused%s\n",
              fast.matmuls, fast.attention, fast.layernorm, fast.activations,
              fast.fused() ? "" : "; NOT fused: see the warning");
  if (!fast.fused()) {
    std::fprintf(stderr,
                 "sparq: warning: %zu encoder pieces stay off the fast path and run op by op "
                 "(slower, same answers): %s. `sparq inspect %s` lists them; --require-fused "
                 "makes this an error\n",
                 fast.off.size(), fast.summary().c_str(), out.c_str());
  }
  if (o.prune >= 0) {
    std::printf(
        "note: --prune %.3g zeroed the smallest blocks of every encoder MatMul weight; "
        "this changes the model's outputs and accuracy\n",
        o.prune);
  }
  return 0;
#endif
}

int run_cmd(Args& args) {
  std::string outdir;
  if (!args.value("-o", &outdir) && !args.value("--output", &outdir))
    throw UsageError("run needs -o OUTDIR");
  std::vector<std::string> specs = args.values("-i");
  for (const std::string& s : args.values("--input")) specs.push_back(s);
  const int threads = threads_flag(args);
  const std::string path = args.positional("MODEL.sparq");
  args.finish();
  // No -i is fine for a model without graph inputs; a model that has inputs names the
  // missing one in its error.
  std::map<std::string, Value> inputs;
  for (const std::string& s : specs) {
    const size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == s.size()) {
      throw UsageError("-i takes NAME=FILE.npy, got '" + s + "'");
    }
    const std::string name = s.substr(0, eq);
    if (inputs.count(name)) throw UsageError("input '" + name + "' given twice");
    inputs[name] = std::make_shared<Constant>(read_npy(s.substr(eq + 1)));
  }
  Session session(Model::load(path), threads);
  const auto outputs = session.run(inputs);
  // Everything ran: only now create the directory and write (each file atomically).
  if (mkdir(outdir.c_str(), 0777) != 0 && errno != EEXIST) {
    throw Error(Status::kInvalidArgument, "cannot create '" + outdir + "'");
  }
  for (const auto& kv : outputs) {
    const std::string file = outdir + "/" + safe_file_name(kv.first) + ".npy";
    write_npy(file, *kv.second);
    std::printf("wrote %s\n", file.c_str());
  }
  return 0;
}

namespace {

struct BenchResult {
  int64_t batch = 1, seq = 128, instances = 1, tpi = 1, iterations = 0;
  bool pinned = false;
  double p50 = 0, p90 = 0, p99 = 0, mean = 0, tput = 0;
};

// Random in-vocabulary ids: the vocabulary is the table that input_ids index.
Value random_ids(const Model& model, int64_t batch, int64_t seq, uint32_t seed) {
  int64_t vocab = 2;
  for (const Node& n : model.graph().nodes) {
    if (op_of(n) == OpId::kGather && n.inputs.size() > 1 && n.inputs[1] == "input_ids") {
      if (const Constant* t = model.graph().initializer(n.inputs[0])) vocab = t->shape.at(0);
    }
  }
  std::mt19937 rng(seed);
  auto ids = std::make_shared<Constant>();
  ids->type = ElemType::kI64;
  ids->shape = {batch, seq};
  ids->bytes.resize(static_cast<size_t>(batch * seq) * 8);
  for (int64_t i = 0; i < batch * seq; ++i) {
    reinterpret_cast<int64_t*>(ids->bytes.data())[i] =
        2 + static_cast<int64_t>(rng() % static_cast<uint32_t>(std::max<int64_t>(1, vocab - 2)));
  }
  return ids;
}

// Inputs for a run at [batch, seq], for every graph input a model declares: input_ids
// random in-vocabulary ids, attention_mask ones, token_type_ids zeros, position_ids
// 0..seq-1 per row; any other input zeros of its declared shape, with its first
// symbolic dimension taken as the batch and its second as the sequence. An input whose
// shape that does not fix is named in the error.
std::map<std::string, Value> default_inputs(const Model& model, int64_t batch, int64_t seq,
                                            uint32_t seed) {
  std::map<std::string, Value> in;
  for (const ValueInfo& v : model.graph().inputs) {
    if (v.name == "input_ids") {
      in[v.name] = random_ids(model, batch, seq, seed);
      continue;
    }
    std::vector<int64_t> shape;
    int symbolic = 0;
    for (const Dim& d : v.shape) {
      if (d.value >= 0) {
        shape.push_back(d.value);
      } else if (symbolic < 2) {
        shape.push_back(symbolic++ == 0 ? batch : seq);
      } else {
        throw Error(Status::kInvalidArgument,
                    "input '" + v.name +
                        "' has more than two symbolic dimensions; give it a value "
                        "with `sparq run -i " +
                        v.name + "=FILE.npy`");
      }
    }
    const bool pair =
        v.name == "attention_mask" || v.name == "token_type_ids" || v.name == "position_ids";
    if (pair) shape = {batch, seq};  // as Session::run checks them against input_ids
    auto c = std::make_shared<Constant>();
    c->type = v.type;
    c->shape = shape;
    const size_t elem = elem_type_size(v.type);
    if (elem == 0) {
      throw Error(Status::kInvalidArgument, "input '" + v.name + "' has type " +
                                                elem_type_name(v.type) +
                                                ", which inspect cannot fill");
    }
    c->bytes.assign(static_cast<size_t>(c->elements()) * elem, 0);
    for (int64_t i = 0; i < c->elements(); ++i) {
      double x = 0;
      if (v.name == "attention_mask") x = 1;
      if (v.name == "position_ids") x = static_cast<double>(i % seq);
      if (x == 0) continue;
      uint8_t* p = c->bytes.data() + static_cast<size_t>(i) * elem;
      switch (v.type) {
        case ElemType::kI64: *reinterpret_cast<int64_t*>(p) = static_cast<int64_t>(x); break;
        case ElemType::kI32: *reinterpret_cast<int32_t*>(p) = static_cast<int32_t>(x); break;
        case ElemType::kF32: *reinterpret_cast<float*>(p) = static_cast<float>(x); break;
        case ElemType::kF64: *reinterpret_cast<double*>(p) = x; break;
        default: *p = static_cast<uint8_t>(x); break;
      }
    }
    in[v.name] = c;
  }
  return in;
}

// `instances` threads, each with its own Session (`tpi` threads) on the shared model,
// pinned to its own cores when they fit; each runs warmup calls, waits for the others,
// then `iterations` timed calls. Latency is per call; throughput = batch x calls / wall.
BenchResult measure(const std::shared_ptr<const Model>& model, int64_t batch, int64_t seq,
                    int64_t instances, int tpi, int64_t warmup, int64_t iterations) {
  BenchResult r;
  r.batch = batch;
  r.seq = seq;
  r.instances = instances;
  r.iterations = iterations;
  std::vector<int> cores;
  {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) cores.push_back(c);
    }
  }
  const int per = tpi > 0 ? tpi : static_cast<int>(std::max<size_t>(1, cores.size()));
  r.tpi = per;
  r.pinned = instances > 1 && static_cast<size_t>(instances * per) <= cores.size();
  std::vector<std::vector<double>> ms(static_cast<size_t>(instances));
  std::atomic<int64_t> ready{0};
  std::atomic<bool> go{false};
  std::chrono::steady_clock::time_point t0;
  std::vector<std::chrono::steady_clock::time_point> ends(static_cast<size_t>(instances));
  std::vector<std::string> errors(static_cast<size_t>(instances));
  auto body = [&](int64_t inst) {
    try {
      if (r.pinned) {  // before the Session exists: its workers inherit the mask
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c = 0; c < per; ++c) CPU_SET(cores[static_cast<size_t>(inst * per + c)], &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
      }
      Session session(model, per);
      const std::map<std::string, Value> inputs =
          default_inputs(*model, batch, seq, static_cast<uint32_t>(1 + inst));
      for (int64_t i = 0; i < warmup; ++i) session.run(inputs);
      ++ready;
      while (!go.load()) std::this_thread::yield();
      auto& mine = ms[static_cast<size_t>(inst)];
      for (int64_t i = 0; i < iterations; ++i) {
        const auto s = std::chrono::steady_clock::now();
        session.run(inputs);
        mine.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s)
                .count());
      }
      ends[static_cast<size_t>(inst)] = std::chrono::steady_clock::now();
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(inst)] = e.what();
      ++ready;
    }
  };
  std::vector<std::thread> threads;
  for (int64_t i = 1; i < instances; ++i) threads.emplace_back(body, i);
  std::thread first;
  if (instances == 1) {
    // One instance runs on this thread (no extra thread in the common case).
    t0 = std::chrono::steady_clock::now();
    go = true;
    body(0);
    t0 = std::chrono::steady_clock::time_point{};
  } else {
    first = std::thread(body, 0);
    while (ready.load() < instances) std::this_thread::yield();
    t0 = std::chrono::steady_clock::now();
    go = true;
    first.join();
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& e : errors)
    if (!e.empty()) throw Error(Status::kInternal, e);
  std::vector<double> all;
  for (const auto& v : ms) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    const size_t i =
        static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(all.size()))) - 1;
    return all[std::min(i, all.size() - 1)];
  };
  for (double v : all) r.mean += v;
  r.mean /= static_cast<double>(all.size());
  r.p50 = pct(50);
  r.p90 = pct(90);
  r.p99 = pct(99);
  double wall;
  if (instances == 1) {
    double sum = 0;
    for (double v : all) sum += v;
    wall = sum / 1000.0;
  } else {
    auto last = *std::max_element(ends.begin(), ends.end());
    wall = std::chrono::duration<double>(last - t0).count();
  }
  r.tput = static_cast<double>(batch * static_cast<int64_t>(all.size())) / wall;
  return r;
}

std::string result_json(const BenchResult& r) {
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "\"batch\":%lld,\"seq\":%lld,\"threads\":%lld,\"instances\":%lld,\"threads_per_"
                "instance\":%lld,"
                "\"pinned\":%s,\"iterations\":%lld,\"latency_ms\":{\"p50\":%.4f,\"p90\":%.4f,"
                "\"p99\":%.4f,\"mean\":%.4f},"
                "\"throughput_seq_per_s\":%.3f",
                static_cast<long long>(r.batch), static_cast<long long>(r.seq),
                static_cast<long long>(r.instances * r.tpi), static_cast<long long>(r.instances),
                static_cast<long long>(r.tpi), r.pinned ? "true" : "false",
                static_cast<long long>(r.iterations), r.p50, r.p90, r.p99, r.mean, r.tput);
  return buf;
}

}  // namespace

int bench_cmd(Args& args) {
  const bool json = args.flag("--json");
  const int64_t batch = args.integer("--batch", 1, 1, 4096);
  const int64_t seq = args.integer("--seq", 128, 1, 1 << 20);
  const int threads = threads_flag(args);
  const int64_t warmup = args.integer("--warmup", 10, 0, 1000000);
  const int64_t iterations = args.integer("--iterations", 100, 1, 10000000);
  const int64_t instances = args.integer("--instances", 1, 1, 1024);
  const int64_t tpi = args.integer("--threads-per-instance", 0, 0, 1024);
  const double cap = args.real("--latency-cap", 0.0, 0.0, 1e9);
  const std::string path = args.positional("MODEL.sparq");
  args.finish();
  if (tpi > 0 && threads > 0)
    throw UsageError("give --threads or --threads-per-instance, not both");
  if (instances > 1 && tpi == 0 && threads > 0)
    throw UsageError("--instances needs --threads-per-instance");
  const auto l0 = std::chrono::steady_clock::now();
  auto model = Model::load(path);
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - l0).count();
  const double file_mib = static_cast<double>(model->file().file_size()) / (1024.0 * 1024.0);
  auto peak_mib = [] {
    long peak_kb = -1;
    FILE* f = std::fopen("/proc/self/status", "r");
    char line[256];
    while (f != nullptr && std::fgets(line, sizeof(line), f)) {
      if (std::strncmp(line, "VmHWM:", 6) == 0) peak_kb = std::strtol(line + 6, nullptr, 10);
    }
    if (f != nullptr) std::fclose(f);
    return static_cast<double>(peak_kb) / 1024.0;
  };
  if (cap > 0) {
    // Every batch size up to 8 and every way to split this process's cores into
    // instances; the best throughput whose p90 stays under the cap wins.
    const int cores = ThreadPool::hardware_threads();
    std::vector<BenchResult> tried;
    const BenchResult* best = nullptr;
    for (int64_t b : {1, 2, 4, 8}) {
      for (int inst = 1; inst <= cores; ++inst) {
        if (cores % inst != 0) continue;
        const BenchResult r =
            measure(model, b, seq, inst, cores / inst, std::min<int64_t>(warmup, 3), iterations);
        tried.push_back(r);
        if (!json) {
          std::printf("batch %lld, %lld x %lld threads: p50 %.3f p90 %.3f ms, %.2f sequences/s%s\n",
                      static_cast<long long>(b), static_cast<long long>(r.instances),
                      static_cast<long long>(r.tpi), r.p50, r.p90, r.tput,
                      r.p90 <= cap ? "" : " (p90 over the cap)");
          std::fflush(stdout);
        }
      }
    }
    for (const BenchResult& r : tried) {
      if (r.p90 <= cap && (best == nullptr || r.tput > best->tput)) best = &r;
    }
    if (json) {
      std::string cands;
      for (const BenchResult& r : tried)
        cands += (cands.empty() ? "{" : ",{") + result_json(r) + "}";
      std::printf(
          "{%s\"latency_cap_ms\":%.3f,\"met_cap\":%s,\"candidates\":[%s],\"load_ms\":%.3f,"
          "\"peak_rss_mib\":%.1f,\"file_mib\":%.1f}\n",
          best ? (result_json(*best) + ",").c_str() : "", cap, best ? "true" : "false",
          cands.c_str(), load_ms, peak_mib(), file_mib);
    } else if (best) {
      std::printf(
          "best under a %.1f ms p90 cap: batch %lld, %lld instance(s) x %lld thread(s): %.2f "
          "sequences/s "
          "(p50 %.3f, p90 %.3f ms)\n",
          cap, static_cast<long long>(best->batch), static_cast<long long>(best->instances),
          static_cast<long long>(best->tpi), best->tput, best->p50, best->p90);
    } else {
      std::printf("no layout kept p90 under %.1f ms\n", cap);
    }
    return 0;
  }
  const int per = tpi > 0 ? static_cast<int>(tpi) : threads;
  const BenchResult r = measure(model, batch, seq, instances, per, warmup, iterations);
  if (json) {
    std::printf("{%s,\"load_ms\":%.3f,\"peak_rss_mib\":%.1f,\"file_mib\":%.1f}\n",
                result_json(r).c_str(), load_ms, peak_mib(), file_mib);
  } else {
    std::printf(
        "%s: batch %lld, seq %lld, %lld instance(s) x %lld thread(s)%s, %lld iterations each\n",
        path.c_str(), static_cast<long long>(batch), static_cast<long long>(seq),
        static_cast<long long>(r.instances), static_cast<long long>(r.tpi),
        r.pinned ? " pinned" : "", static_cast<long long>(iterations));
    std::printf(
        "latency ms: p50 %.3f  p90 %.3f  p99 %.3f  mean %.3f\nthroughput: %.2f sequences/s\n",
        r.p50, r.p90, r.p99, r.mean, r.tput);
    std::printf("load %.1f ms; peak resident memory %.1f MiB for a %.1f MiB file\n", load_ms,
                peak_mib(), file_mib);
  }
  return 0;
}

int inspect_cmd(Args& args) {
  const bool json = args.flag("--json");
  const bool verify = args.flag("--verify");
  const int64_t batch = args.integer("--batch", 1, 1, 4096);
  std::string seq_given;
  const bool has_seq = args.value("--seq", &seq_given);
  int64_t seq = 128;
  if (has_seq) {
    char* end = nullptr;
    seq = std::strtoll(seq_given.c_str(), &end, 10);
    if (seq_given.empty() || *end != '\0' || seq < 1 || seq > (1 << 20)) {
      throw UsageError("--seq must be an integer in [1, 1048576], got '" + seq_given + "'");
    }
  }
  const std::string path = args.positional("MODEL.sparq");
  args.finish();
  auto model = Model::load(path);
  if (verify) model->file().verify();
  if (!has_seq) {  // the default stays inside a short position table (less RoBERTa's offset of 2)
    for (const auto& kv : model->graph().initializers) {
      if (kv.first.find("position_embeddings") != std::string::npos && !kv.second->shape.empty()) {
        seq = std::max<int64_t>(1, std::min<int64_t>(seq, kv.second->shape[0] - 2));
      }
    }
  }
  // The plan for one input shape (a run on random in-vocabulary ids): its steps and the
  // memory it needs.
  // Every graph input gets a value (default_inputs); a plan that cannot be made for
  // these shapes is reported, and inspect still describes the file.
  PlanSummary plan;
  size_t peak = 0;
  bool planned = false;
  std::string plan_error;
  try {
    Session session(model, 1);
    const std::map<std::string, Value> in = default_inputs(*model, batch, seq, 1);
    session.run(in);         // records the plan
    session.run(in, &peak);  // replays it: the steady-state peak
    plan = session.plan_summary();
    planned = true;
  } catch (const Error& e) {
    plan_error = e.what();
  }
  const Graph& g = model->graph();
  const FastPathReport fast = fast_path_report(g);
  std::map<std::string, int> ops;
  for (const Node& n : g.nodes) ++ops[n.op];
  std::ostringstream js;
  if (!json) {
    std::printf("%s: .sparq version %u, %llu bytes, opset %lld%s\n", path.c_str(),
                model->file().version(), static_cast<unsigned long long>(model->file().file_size()),
                static_cast<long long>(g.opset), verify ? ", checksums verified" : "");
    for (const ValueInfo& v : g.inputs)
      std::printf("input  %s (%s)\n", v.name.c_str(), elem_type_name(v.type));
    for (const ValueInfo& v : g.outputs)
      std::printf("output %s (%s)\n", v.name.c_str(), elem_type_name(v.type));
    std::printf("%zu nodes:", g.nodes.size());
    for (const auto& kv : ops) std::printf(" %s=%d", kv.first.c_str(), kv.second);
    std::printf("\n%-16s %6s %6s %-6s %-7s %-6s %8s\n", "weight", "K", "N", "type", "runs", "R",
                "density");
  }
  js << "{\"path\":\"" << json_escape(path) << "\",\"version\":" << model->file().version()
     << ",\"file_bytes\":" << model->file().file_size() << ",\"opset\":" << g.opset
     << ",\"checksums_verified\":" << (verify ? "true" : "false") << ",\"inputs\":[";
  for (size_t i = 0; i < g.inputs.size(); ++i)
    js << (i ? "," : "") << "\"" << json_escape(g.inputs[i].name) << "\"";
  js << "],\"outputs\":[";
  for (size_t i = 0; i < g.outputs.size(); ++i)
    js << (i ? "," : "") << "\"" << json_escape(g.outputs[i].name) << "\"";
  js << "],\"weights\":[";
  bool first = true;
  for (const Node& n : g.nodes) {
    if (op_of(n) != OpId::kSparqMatMul) continue;
    const std::string& name = n.attr("weight")->s;
    const PackedWeights& w = model->packed(name);
    BlockShape b;
    read_packed(model->file(), name, &b);
    const double slots = static_cast<double>(w.num_groups) * w.rows_per_block * w.group;
    const double density = slots / (static_cast<double>(w.n) * w.k);
    // Nonzero weights stored (padding slots hold zeros): a quantized model's count of
    // weights other than their zero point.
    int64_t nonzero = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(slots); ++i) {
      nonzero += w.type == WeightType::kS8 ? static_cast<const int8_t*>(w.values)[i] != 0
                                           : static_cast<const float*>(w.values)[i] != 0.0f;
    }
    if (!json) {
      std::printf("%-16s %6d %6d %-6s %-7s %-6s %7.1f%%\n", name.c_str(), w.k, w.n,
                  w.type == WeightType::kS8 ? "int8" : "fp32", w.dense ? "dense" : "sparse",
                  block_shape_name(b).c_str(), 100.0 * density);
    }
    js << (first ? "" : ",") << "{\"name\":\"" << json_escape(name) << "\",\"k\":" << w.k
       << ",\"n\":" << w.n << ",\"precision\":\"" << (w.type == WeightType::kS8 ? "int8" : "fp32")
       << "\",\"sparse\":" << (w.dense ? "false" : "true") << ",\"block\":\"" << block_shape_name(b)
       << "\",\"stored_density\":" << density << ",\"nonzeros\":" << nonzero << "}";
    first = false;
  }
  js << "]";
  if (planned) {
    js << ",\"plan\":{\"batch\":" << batch << ",\"seq\":" << seq << ",\"steps\":" << plan.steps
       << ",\"op_by_op_steps\":" << plan.generic_steps << ",\"folded_nodes\":" << plan.folded
       << ",\"matmuls\":" << plan.matmuls << ",\"fused_attention\":" << plan.fused_attention
       << ",\"fused_residual\":" << plan.fused_residual
       << ",\"fused_embeddings\":" << plan.fused_embeddings
       << ",\"fused_add_layernorm\":" << plan.fused_add_layernorm
       << ",\"fused_quantize\":" << plan.fused_quantize
       << ",\"fused_mask_bias\":" << plan.fused_mask_bias << ",\"views\":" << plan.views
       << ",\"arena_bytes\":" << plan.arena_bytes << ",\"unshared_bytes\":" << plan.unshared_bytes
       << ",\"peak_bytes\":" << peak << ",\"not_planned\":\"" << json_escape(plan.not_planned)
       << "\",\"op_by_op\":[";
    js << json_nodes(plan.op_by_op, "reason") << "]}";
  } else {
    js << ",\"plan\":null,\"plan_error\":\"" << json_escape(plan_error) << "\"";
  }
  js << ",\"fast_path\":{\"matmuls\":" << fast.matmuls << ",\"attention\":" << fast.attention
     << ",\"layernorm\":" << fast.layernorm << ",\"activations\":" << fast.activations
     << ",\"not_fused\":[";
  js << json_nodes(fast.off, "cause") << "]}}";
  if (json) {
    std::printf("%s\n", js.str().c_str());
    return 0;
  }
  std::printf("fast path: %d matmuls packed, %d attentions, %d LayerNorms, %d GELUs fused\n",
              fast.matmuls, fast.attention, fast.layernorm, fast.activations);
  for (const OffPathNode& o : fast.off) {
    std::printf("not fused (%s): %s '%s'\n", o.cause.c_str(), o.op.c_str(), o.node.c_str());
  }
  if (!planned) {
    std::printf("plan: not made for batch %lld, seq %lld: %s\n", static_cast<long long>(batch),
                static_cast<long long>(seq), plan_error.c_str());
  } else if (!plan.not_planned.empty()) {
    std::printf("plan: not made for batch %lld, seq %lld (the graph runs op by op): %s\n",
                static_cast<long long>(batch), static_cast<long long>(seq),
                plan.not_planned.c_str());
  } else {
    std::printf(
        "plan for batch %lld, seq %lld: %d steps (%d op by op), %d nodes folded, %d matmuls, "
        "%d attentions fused, %d residuals in epilogues, %d embeddings fused\n",
        static_cast<long long>(batch), static_cast<long long>(seq), plan.steps, plan.generic_steps,
        plan.folded, plan.matmuls, plan.fused_attention, plan.fused_residual,
        plan.fused_embeddings);
    const size_t shown = std::min<size_t>(plan.op_by_op.size(), 20);
    for (size_t i = 0; i < shown; ++i) {
      const OffPathNode& o = plan.op_by_op[i];
      std::printf("  op by op: %s '%s' (%s)\n", o.op.c_str(), o.node.c_str(), o.cause.c_str());
    }
    if (plan.op_by_op.size() > shown)
      std::printf("  ... %zu more op-by-op steps (--json lists all)\n",
                  plan.op_by_op.size() - shown);
    std::printf(
        "memory: arena %.2f MiB (%.2f MiB without reuse), peak %.2f MiB of intermediate values\n",
        static_cast<double>(plan.arena_bytes) / 1048576.0,
        static_cast<double>(plan.unshared_bytes) / 1048576.0,
        static_cast<double>(peak) / 1048576.0);
  }
  return 0;
}

}  // namespace sparq::cli
