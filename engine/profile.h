// SPARQ_PROFILE=1 (RuntimeOptions::profile): wall time and calls per key, for the planned
// executor's steps and the interpreter's ops alike, printed to stderr in one format.
#ifndef SPARQ_ENGINE_PROFILE_H_
#define SPARQ_ENGINE_PROFILE_H_

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <utility>

namespace sparq {

class Profile {
 public:
  using Clock = std::chrono::steady_clock;
  void add(const std::string& key, Clock::time_point since) {
    add_ms(key, std::chrono::duration<double, std::milli>(Clock::now() - since).count());
  }
  void add_ms(const std::string& key, double ms) {
    auto& e = times_[key];
    e.first += ms;
    ++e.second;
  }
  // One line per key, then starts over.
  void print() {
    for (const auto& kv : times_) {
      std::fprintf(stderr, "sparq: profile %-28s %6d calls %10.3f ms\n", kv.first.c_str(),
                   kv.second.second, kv.second.first);
    }
    times_.clear();
  }

 private:
  std::map<std::string, std::pair<double, int>> times_;  // key -> (ms, calls)
};

}  // namespace sparq

#endif  // SPARQ_ENGINE_PROFILE_H_
