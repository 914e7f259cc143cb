/* Runs a .sparq model through the C API on random in-vocabulary token ids and prints
 * every output's shape and first values. Build it against an installed sparq:
 *   cmake -S examples/c -B build-example -DCMAKE_PREFIX_PATH=<prefix> && cmake --build
 * build-example cc main.c $(pkg-config --cflags --libs sparq) Usage: sparq_example MODEL.sparq
 * [SEQ] */
#include <sparq/sparq.h>
#include <stdio.h>
#include <stdlib.h>

static int check(sparq_status s, const char* what) {
  if (s != SPARQ_OK) {
    fprintf(stderr, "sparq_example: %s failed (%d): %s\n", what, (int)s,
            sparq_last_error_message());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.sparq [SEQ]\n", argv[0]);
    return 2;
  }
  const int64_t seq = argc > 2 ? atoll(argv[2]) : 16;
  sparq_model* model = NULL;
  if (check(sparq_model_load(argv[1], &model), "sparq_model_load")) return 1;
  printf("sparq %s (%s): %zu inputs, %zu outputs\n", sparq_version(), sparq_kernel_isa(),
         sparq_model_input_count(model), sparq_model_output_count(model));
  sparq_session* session = NULL;
  if (check(sparq_session_create(model, 0, &session), "sparq_session_create")) return 1;
  sparq_model_free(model); /* the session keeps it alive */

  int64_t shape[2] = {1, seq};
  int64_t* ids = malloc(sizeof(int64_t) * (size_t)seq);
  for (int64_t i = 0; i < seq; ++i) ids[i] = 5 + (i * 7) % 50;
  sparq_tensor input = {"input_ids", SPARQ_INT64, 2, shape, ids};
  if (check(sparq_session_run(session, &input, 1), "sparq_session_run")) return 1;
  for (size_t i = 0; i < sparq_session_output_count(session); ++i) {
    sparq_tensor out;
    if (check(sparq_session_output(session, i, &out), "sparq_session_output")) return 1;
    printf("%s: [", out.name);
    for (int d = 0; d < out.rank; ++d) printf("%s%lld", d ? ", " : "", (long long)out.shape[d]);
    const float* v = (const float*)out.data;
    printf("] %.5f %.5f %.5f ...\n", v[0], v[1], v[2]);
  }
  printf("peak intermediate bytes: %zu\n", sparq_session_peak_bytes(session));
  /* What the plan for these shapes fused, and what ran op by op. */
  sparq_plan_summary plan;
  plan.struct_size = sizeof plan;
  if (check(sparq_session_plan_summary(session, &plan), "sparq_session_plan_summary")) return 1;
  printf("plan: %d steps (%d op by op), %d matmuls, %d attentions fused, arena %zu bytes\n",
         plan.steps, plan.op_by_op_steps, plan.matmuls, plan.fused_attention, plan.arena_bytes);
  for (int i = 0; i < plan.op_by_op_steps && i < 3; ++i) {
    const char *node, *op, *reason;
    if (check(sparq_session_op_by_op_step(session, (size_t)i, &node, &op, &reason),
              "sparq_session_op_by_op_step"))
      return 1;
    printf("  op by op: %s '%s' (%s)\n", op, node, reason);
  }
  /* A bad call reports through the status and the thread-local message. */
  sparq_tensor bad = {"no_such_input", SPARQ_INT64, 2, shape, ids};
  if (sparq_session_run(session, &bad, 1) != SPARQ_INVALID_ARGUMENT) return 1;
  printf("expected error: %s\n", sparq_last_error_message());
  free(ids);
  sparq_session_free(session);
  return 0;
}
