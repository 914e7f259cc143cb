// Golden output hashes (issue 10's safety net): every conformance model, converted fp32
// and int8, run at 1 and 2 threads through the planned executor and the op-by-op
// interpreter, under this process's ISA cap and attention choice (SPARQ_MAX_ISA and
// SPARQ_ATTENTION, set per ctest entry). Each run's outputs are hashed (FNV-1a 64 over
// names, dtypes, shapes and bytes) and compared with the hashes recorded in
// tests/golden/<cpu>/<build>/<isa>-<attention>.txt, keyed by the model file's SHA-1
// prefix (<build>: the build type and sanitizers, which change rounding).
//
// A refactor must leave every hash unchanged; a change that alters outputs on purpose
// re-records them (SPARQ_GOLDEN_RECORD=1 ctest -R golden_) and says why in its commit.
// Hashes are exact, so they are only checked on the CPU kind that recorded them (vendor,
// family, model): another CPU (the GELU epilogue's rcp14 is only bounded by the ISA)
// skips with a note naming both.
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/model.h"
#include "formats/npy.h"
#include "formats/onnx_import.h"
#include "sparq/sparq.h"

namespace {

uint64_t fnv(uint64_t h, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

std::string hex(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// A small SHA-1 for the model file's key (no dependency; keys only, not security).
std::string sha1_prefix(const std::string& data) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  std::string m = data;
  const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  m += static_cast<char>(0x80);
  while (m.size() % 64 != 56) m += '\0';
  for (int i = 7; i >= 0; --i) m += static_cast<char>((bits >> (8 * i)) & 0xff);
  auto rol = [](uint32_t x, int s) { return (x << s) | (x >> (32 - s)); };
  for (size_t off = 0; off < m.size(); off += 64) {
    uint32_t w[80];
    for (int i = 0; i < 16; ++i) {
      w[i] = static_cast<uint32_t>(static_cast<uint8_t>(m[off + 4 * i])) << 24 |
             static_cast<uint32_t>(static_cast<uint8_t>(m[off + 4 * i + 1])) << 16 |
             static_cast<uint32_t>(static_cast<uint8_t>(m[off + 4 * i + 2])) << 8 |
             static_cast<uint32_t>(static_cast<uint8_t>(m[off + 4 * i + 3]));
    }
    for (int i = 16; i < 80; ++i) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; ++i) {
      uint32_t f, k;
      if (i < 20) {
        f = (b & c) | (~b & d);
        k = 0x5A827999;
      } else if (i < 40) {
        f = b ^ c ^ d;
        k = 0x6ED9EBA1;
      } else if (i < 60) {
        f = (b & c) | (b & d) | (c & d);
        k = 0x8F1BBCDC;
      } else {
        f = b ^ c ^ d;
        k = 0xCA62C1D6;
      }
      const uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d;
      d = c;
      c = rol(b, 30);
      b = a;
      a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, "%08x%08x", h[0], h[1]);
  return buf;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// vendor-family-model of this CPU, from /proc/cpuinfo.
std::string cpu_key() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, vendor = "unknown", family = "0", model = "0";
  while (std::getline(in, line)) {
    auto value = [&]() { return line.substr(line.find(':') + 2); };
    if (line.rfind("vendor_id", 0) == 0) vendor = value();
    else if (line.rfind("cpu family", 0) == 0) family = value();
    else if (line.rfind("model\t", 0) == 0) model = value();
    else if (line.empty()) break;
  }
  return vendor + "-" + family + "-" + model;
}

std::string env_or(const char* name, const char* def) {
  const char* e = std::getenv(name);
  return e != nullptr && *e != '\0' ? e : def;
}

uint64_t hash_outputs(const std::map<std::string, sparq::Value>& out) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& kv : out) {
    h = fnv(h, kv.first.data(), kv.first.size());
    const auto t = static_cast<uint8_t>(kv.second->type);
    h = fnv(h, &t, 1);
    h = fnv(h, kv.second->shape.data(), kv.second->shape.size() * sizeof(int64_t));
    const size_t bytes =
        static_cast<size_t>(kv.second->elements()) * sparq::elem_type_size(kv.second->type);
    h = fnv(h, kv.second->raw(), bytes);
  }
  return h;
}

TEST(Golden, OutputsMatchTheRecordedHashes) {
  const char* dir = std::getenv("SPARQ_MODELS_DIR");
  if (dir == nullptr) GTEST_SKIP() << "SPARQ_MODELS_DIR is not set";
  const std::string isa = sparq_kernel_isa();
  const std::string attention = env_or("SPARQ_ATTENTION", "default");
  const std::string cpu = cpu_key();
  // The build too: release (-O3) and the sanitizer build (-O2) round differently.
  const std::string dir_cpu = std::string(SPARQ_GOLDEN_DIR) + "/" + cpu;
  const std::string dir_build = dir_cpu + "/" + SPARQ_GOLDEN_BUILD;
  const std::string file = dir_build + "/" + isa + "-" + attention + ".txt";
  const bool record = !env_or("SPARQ_GOLDEN_RECORD", "").empty();

  // Every model directory with a model.onnx and inputs, in name order.
  std::vector<std::string> models;
  if (DIR* d = opendir(dir)) {
    while (dirent* e = readdir(d)) {
      const std::string m = std::string(dir) + "/" + e->d_name;
      struct stat st {};
      if (e->d_name[0] != '.' && stat((m + "/model.onnx").c_str(), &st) == 0)
        models.push_back(e->d_name);
    }
    closedir(d);
  }
  std::sort(models.begin(), models.end());
  if (models.empty()) GTEST_SKIP() << "no models in " << dir << " (python3-torch missing?)";

  std::map<std::string, std::string> got;  // key -> hash
  const char* tmp_env = std::getenv("TMPDIR");
  const std::string tmp = std::string(tmp_env ? tmp_env : "/tmp") + "/sparq-golden-" +
                          std::to_string(getpid()) + ".sparq";
  for (const std::string& name : models) {
    const std::string mdir = std::string(dir) + "/" + name;
    const std::string sha = sha1_prefix(slurp(mdir + "/model.onnx"));
    std::map<std::string, sparq::Value> inputs;
    if (DIR* d = opendir(mdir.c_str())) {
      while (dirent* e = readdir(d)) {
        const std::string f = e->d_name;
        if (f.rfind("input_", 0) == 0 && f.size() > 10 && f.compare(f.size() - 4, 4, ".npy") == 0) {
          inputs[f.substr(6, f.size() - 10)] =
              std::make_shared<sparq::Constant>(sparq::read_npy(mdir + "/" + f));
        }
      }
      closedir(d);
    }
    for (const char* precision : {"fp32", "int8"}) {
      sparq::ConvertOptions o;
      o.precision = precision;
      o.threads = 1;
      sparq::convert_graph(sparq::import_onnx(mdir + "/model.onnx"), tmp, o);
      const auto model = sparq::Model::load(tmp);
      for (int threads : {1, 2}) {
        for (bool interpret : {false, true}) {
          sparq::Session s(model, threads);
          s.use_interpreter(interpret);
          const std::string key = sha + " " + name + " " + precision + " t" +
                                  std::to_string(threads) + " " +
                                  (interpret ? "interp" : "planned");
          got[key] = hex(hash_outputs(s.run(inputs)));
        }
      }
    }
  }
  std::remove(tmp.c_str());

  if (record) {
    mkdir(SPARQ_GOLDEN_DIR, 0755);
    mkdir(dir_cpu.c_str(), 0755);
    mkdir(dir_build.c_str(), 0755);
    std::ofstream f(file);
    f << "# golden output hashes: cpu " << cpu << ", build " << SPARQ_GOLDEN_BUILD << ", kernels "
      << isa << ", attention " << attention
      << "\n# model-sha1 model precision threads executor hash\n";
    for (const auto& kv : got) f << kv.first << " " << kv.second << "\n";
    std::printf("golden: recorded %zu hashes in %s\n", got.size(), file.c_str());
    return;
  }
  std::ifstream f(file);
  if (!f) {
    GTEST_SKIP() << "no golden hashes for this CPU and configuration (" << file
                 << "): they are exact, so they are recorded per CPU kind; record with "
                    "SPARQ_GOLDEN_RECORD=1";
  }
  std::map<std::string, std::string> want;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    want[line.substr(0, sp)] = line.substr(sp + 1);
  }
  size_t checked = 0;
  for (const auto& kv : want) {
    auto it = got.find(kv.first);
    if (it == got.end()) {
      ADD_FAILURE() << "recorded but not run (a model's bytes changed, or it is missing): "
                    << kv.first;
      continue;
    }
    EXPECT_EQ(it->second, kv.second) << "outputs changed: " << kv.first;
    ++checked;
  }
  for (const auto& kv : got) {
    if (!want.count(kv.first)) ADD_FAILURE() << "run but not recorded: " << kv.first;
  }
  std::printf("golden: %zu hashes checked (%s, kernels %s, attention %s)\n", checked, cpu.c_str(),
              isa.c_str(), attention.c_str());
}

}  // namespace
