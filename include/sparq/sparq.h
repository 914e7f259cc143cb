/* sparq C API. The full model/session API arrives with the executor; for now the
 * library reports its version and the kernel ISA it dispatches to. */
#ifndef SPARQ_SPARQ_H_
#define SPARQ_SPARQ_H_

#include "sparq/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "MAJOR.MINOR.PATCH" of the library actually loaded. */
SPARQ_API const char* sparq_version(void);

/* Name of the widest kernel ISA chosen at run time: "avx512vnni", "avx512", "avx2" or
 * "generic" (after SPARQ_MAX_ISA caps it). */
SPARQ_API const char* sparq_kernel_isa(void);

#ifdef __cplusplus
}
#endif
#endif /* SPARQ_SPARQ_H_ */
