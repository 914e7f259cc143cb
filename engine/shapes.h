// Shape arithmetic shared by the interpreter and the planner, written once and
// overflow-checked (a corrupt model's constants reach it).
#ifndef SPARQ_ENGINE_SHAPES_H_
#define SPARQ_ENGINE_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

namespace sparq {

// Product of the dimensions into *out; false when one is negative or the product
// overflows int64.
bool safe_elements(const std::vector<int64_t>& shape, int64_t* out);

// ONNX Reshape: resolves 0 (copy the input's dimension unless allowzero) and one -1 in
// `target` against input shape `in`. False, with the reason in *why, when the target is
// malformed or changes the element count.
bool reshape_target(const std::vector<int64_t>& in, std::vector<int64_t>* target, bool allowzero,
                    std::string* why);

}  // namespace sparq

#endif  // SPARQ_ENGINE_SHAPES_H_
