// Command-line helpers shared by the sparq CLI's commands.
#ifndef SPARQ_TOOLS_CLI_H_
#define SPARQ_TOOLS_CLI_H_

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparq::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses "--flag value" pairs and bare switches.
class Args {
 public:
  Args(int argc, char** argv, int first) : argv_(argv + first, argv + argc) {}
  bool flag(const std::string& name) {
    for (size_t i = 0; i < argv_.size(); ++i) {
      if (argv_[i] == name) {
        argv_.erase(argv_.begin() + static_cast<long>(i));
        return true;
      }
    }
    return false;
  }
  bool value(const std::string& name, std::string* out) {
    for (size_t i = 0; i < argv_.size(); ++i) {
      if (argv_[i] == name) {
        if (i + 1 >= argv_.size()) throw UsageError(name + " needs a value");
        *out = argv_[i + 1];
        argv_.erase(argv_.begin() + static_cast<long>(i), argv_.begin() + static_cast<long>(i) + 2);
        return true;
      }
    }
    return false;
  }
  int64_t integer(const std::string& name, int64_t def, int64_t lo, int64_t hi) {
    std::string v;
    if (!value(name, &v)) return def;
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || x < lo || x > hi) {
      throw UsageError(name + " must be an integer in [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "], got '" + v + "'");
    }
    return x;
  }
  double real(const std::string& name, double def, double lo, double hi) {
    std::string v;
    if (!value(name, &v)) return def;
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(x >= lo && x <= hi)) {
      throw UsageError(name + " must be a number in [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "], got '" + v + "'");
    }
    return x;
  }
  // Every value of a repeatable flag, in order.
  std::vector<std::string> values(const std::string& name) {
    std::vector<std::string> out;
    std::string v;
    while (value(name, &v)) out.push_back(v);
    return out;
  }
  // The first remaining argument that is not a flag, removed; `what` names it in errors.
  std::string positional(const std::string& what) {
    for (size_t i = 0; i < argv_.size(); ++i) {
      if (argv_[i].empty() || argv_[i][0] != '-') {
        std::string v = argv_[i];
        argv_.erase(argv_.begin() + static_cast<long>(i));
        return v;
      }
    }
    throw UsageError("missing " + what);
  }
  void finish() {
    if (!argv_.empty()) throw UsageError("unexpected argument '" + argv_.front() + "'");
  }

 private:
  std::vector<std::string> argv_;
};

int convert_cmd(Args& args);
int run_cmd(Args& args);
int bench_cmd(Args& args);
int inspect_cmd(Args& args);

}  // namespace sparq::cli

#endif  // SPARQ_TOOLS_CLI_H_
