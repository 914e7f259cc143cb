// NumPy .npy files (format versions 1 and 2, C order, little-endian): the input and
// output format of `sparq run` and of the test references.
#ifndef SPARQ_FORMATS_NPY_H_
#define SPARQ_FORMATS_NPY_H_

#include <string>

#include "formats/graph.h"
#include "sparq/export.h"

namespace sparq {

// Reads float32/float64/int64/int32/int8/uint8/bool arrays. Throws Error(kFormatError)
// for anything else (Fortran order, big-endian, object arrays, truncated data).
SPARQ_API Constant read_npy(const std::string& path);
// Writes atomically (temporary file + rename).
SPARQ_API void write_npy(const std::string& path, const Constant& c);

}  // namespace sparq

#endif  // SPARQ_FORMATS_NPY_H_
