// The C API boundary: no C++ exception crosses it.
#include "kernels/common/isa.h"
#include "sparq/sparq.h"
#include "sparq/version.h"

extern "C" {

SPARQ_API const char* sparq_version(void) { return SPARQ_VERSION_STRING; }

SPARQ_API const char* sparq_kernel_isa(void) { return sparq::isa_name(sparq::active_isa()); }

}  // extern "C"
