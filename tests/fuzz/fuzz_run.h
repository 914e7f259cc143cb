// One bounded run of a loaded model, as a fuzz target drives it: every graph input gets
// a small tensor of its declared type (symbolic dimensions 1 and 4, fixed ones as
// declared up to 64), token ids kept small, then one Session::run.
#ifndef SPARQ_TESTS_FUZZ_FUZZ_RUN_H_
#define SPARQ_TESTS_FUZZ_FUZZ_RUN_H_

#include <map>
#include <memory>
#include <string>

#include "engine/model.h"
#include "formats/error.h"

namespace sparq::fuzz {

inline void run_once(const std::shared_ptr<const Model>& model, bool interpret) {
  std::map<std::string, Value> inputs;
  for (const ValueInfo& vi : model->graph().inputs) {
    auto c = std::make_shared<Constant>();
    c->type = vi.type;
    int symbolic = 0;
    for (const Dim& d : vi.shape) {
      int64_t v = d.value;
      if (v < 0) v = symbolic++ == 0 ? 1 : 4;
      if (v > 64) return;  // a fixed dimension too large for a quick run: loading was the test
      c->shape.push_back(v);
    }
    const int64_t n = c->elements();
    if (n > 4096) return;
    c->bytes.assign(static_cast<size_t>(n) * elem_type_size(vi.type), 0);
    if (vi.name == "input_ids" || vi.name == "attention_mask") {
      for (int64_t i = 0; i < n; ++i) {
        if (vi.type == ElemType::kI64) reinterpret_cast<int64_t*>(c->bytes.data())[i] = 1;
        if (vi.type == ElemType::kI32) reinterpret_cast<int32_t*>(c->bytes.data())[i] = 1;
      }
    }
    inputs[vi.name] = c;
  }
  Session s(model, 1);
  s.use_interpreter(interpret);
  s.run(inputs);
}

}  // namespace sparq::fuzz

#endif  // SPARQ_TESTS_FUZZ_FUZZ_RUN_H_
