#include "formats/graph.h"

namespace sparq {

const char* elem_type_name(ElemType t) {
  switch (t) {
    case ElemType::kF32: return "float32";
    case ElemType::kS8: return "int8";
    case ElemType::kU8: return "uint8";
    case ElemType::kI32: return "int32";
    case ElemType::kI64: return "int64";
    case ElemType::kBool: return "bool";
    case ElemType::kF64: return "float64";
  }
  return "unknown";
}

size_t elem_type_size(ElemType t) {
  switch (t) {
    case ElemType::kF32:
    case ElemType::kI32: return 4;
    case ElemType::kS8:
    case ElemType::kU8:
    case ElemType::kBool: return 1;
    case ElemType::kI64:
    case ElemType::kF64: return 8;
  }
  return 0;
}

}  // namespace sparq
