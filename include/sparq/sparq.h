/* sparq C API (C99). Opaque handles, a status from every call, and the message of the
 * last failure in a thread-local (sparq_last_error_message). Contract: DESIGN.md.
 *
 *   sparq_model*   immutable once loaded; share it across threads and sessions.
 *   sparq_session* scratch memory and outputs for one caller at a time; it holds a
 *                  reference to its model, so freeing the model first is safe.
 */
#ifndef SPARQ_SPARQ_H_
#define SPARQ_SPARQ_H_

#include <stddef.h>
#include <stdint.h>

#include "sparq/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sparq_model sparq_model;
typedef struct sparq_session sparq_session;

typedef enum {
  SPARQ_OK = 0,
  SPARQ_INVALID_ARGUMENT,
  SPARQ_UNSUPPORTED,
  SPARQ_FORMAT_ERROR,
  SPARQ_OUT_OF_MEMORY,
  SPARQ_INTERNAL
} sparq_status;

/* Element types. The first three are the original ABI; the rest were appended (values
 * 3-6) so that outputs of other types are labelled correctly (bool as one byte, 0 or 1). */
typedef enum {
  SPARQ_INT64,
  SPARQ_INT32,
  SPARQ_FLOAT32,
  SPARQ_FLOAT64,
  SPARQ_INT8,
  SPARQ_UINT8,
  SPARQ_BOOL
} sparq_dtype;

/* A named tensor. Inputs: filled by the caller, data read during sparq_session_run only.
 * Outputs and model descriptions: views owned by the session or model. A dimension of
 * -1 in a model description is symbolic (batch, sequence). */
typedef struct {
  const char* name;
  sparq_dtype dtype;
  int rank;
  const int64_t* shape;
  void* data;
} sparq_tensor;

/* "MAJOR.MINOR.PATCH" of the library actually loaded. */
SPARQ_API const char* sparq_version(void);
/* The kernel ISA chosen at run time: "avx512vnni", "avx512", "avx2" or "generic". */
SPARQ_API const char* sparq_kernel_isa(void);

/* Maps and validates a .sparq file. */
SPARQ_API sparq_status sparq_model_load(const char* path, sparq_model** out);
/* NULL is a no-op. Sessions keep the model alive. */
SPARQ_API void sparq_model_free(sparq_model* model);
SPARQ_API size_t sparq_model_input_count(const sparq_model* model);
/* Name, dtype, rank and shape (data = NULL); valid while the model lives. */
SPARQ_API sparq_status sparq_model_input(const sparq_model* model, size_t index, sparq_tensor* out);
SPARQ_API size_t sparq_model_output_count(const sparq_model* model);
SPARQ_API sparq_status sparq_model_output(const sparq_model* model, size_t index,
                                          sparq_tensor* out);

/* threads: 0 = every core this process may use. */
SPARQ_API sparq_status sparq_session_create(const sparq_model* model, int threads,
                                            sparq_session** out);
SPARQ_API void sparq_session_free(sparq_session* session);
/* Runs with named inputs (int64 or int32 ids and masks; DESIGN.md's input rules).
 * A second concurrent call on the same session fails with SPARQ_INVALID_ARGUMENT. */
SPARQ_API sparq_status sparq_session_run(sparq_session* s, const sparq_tensor* inputs,
                                         size_t n_inputs);
/* Outputs of the last successful run (0 before one). */
SPARQ_API size_t sparq_session_output_count(const sparq_session* s);
/* A view into session memory, valid until the next run or free. */
SPARQ_API sparq_status sparq_session_output(const sparq_session* s, size_t index,
                                            sparq_tensor* out);
/* Bytes of intermediate values the last run held at its peak. */
SPARQ_API size_t sparq_session_peak_bytes(const sparq_session* s);

/* The execution plan for the last successful run's input shapes (plans are made per
 * shape, from shapes alone): what ran fused and what ran op by op. Set struct_size to
 * sizeof(sparq_plan_summary) before the call; fields appended in later versions are then
 * left out for older callers. All counts are 0 when the session runs op by op
 * (SPARQ_EXECUTOR=interpret, or a graph whose shapes depend on run-time values). */
typedef struct {
  size_t struct_size;
  int steps;               /* steps of the plan */
  int op_by_op_steps;      /* of those, nodes run through the reference interpreter */
  int folded_nodes;        /* nodes evaluated once at plan time */
  int matmuls;             /* packed sparse or dense matmul steps */
  int fused_attention;     /* attention steps (never materializing the scores) */
  int fused_residual;      /* residual adds inside a matmul epilogue */
  int fused_embeddings;    /* gather + sum + LayerNorm embedding steps */
  int fused_add_layernorm; /* residual add + LayerNorm steps */
  size_t arena_bytes;      /* planned intermediate buffers, after reuse */
  size_t unshared_bytes;   /* the same without reuse */
  int fused_quantize;      /* per-token quantizations done by the LayerNorm producing them */
} sparq_plan_summary;
/* SPARQ_INVALID_ARGUMENT before a successful run. */
SPARQ_API sparq_status sparq_session_plan_summary(const sparq_session* s, sparq_plan_summary* out);
/* Op-by-op step `index` (< op_by_op_steps) of that plan: the node's name, its op and why no
 * fused step took it. Views valid until the next run or free. */
SPARQ_API sparq_status sparq_session_op_by_op_step(const sparq_session* s, size_t index,
                                                   const char** node, const char** op,
                                                   const char** reason);

/* The message of this thread's last failed call; never NULL ("" when none). */
SPARQ_API const char* sparq_last_error_message(void);

#ifdef __cplusplus
}
#endif
#endif /* SPARQ_SPARQ_H_ */
