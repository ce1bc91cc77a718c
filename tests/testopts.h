/* testopts.h - CUDA backend options for the GPU test suites (tests/testopts.c; linked into the
 * suites that reach the library's internals and test_gpu). */
#ifndef HC_TESTOPTS_H
#define HC_TESTOPTS_H

/* HC_TEST_FAST_OPTIONS="name=value[,name=value...]": CUDA backend options (docs/cuda.md, Options)
 * to set, by hc_x_ctx_set_option, on c when it is a CUDA context in FAST numerics: how a GPU run
 * tries an option that FAST does not set yet (e.g. gemm_fp8_native=1) with the tests that check
 * FAST (test_gpu, test_conformance, test_golden). Prints what it set; 0 when nothing was to be set
 * or all of it was, -1 after printing why not (a malformed list, an unknown option). */
struct hc_ctx;
int tu_fast_env_options(struct hc_ctx *c);

/* One option on c from "name" (set to 1) or "name=value" (an integer): 1 when item is neither
 * (nothing set), else hc_x_ctx_set_option's status. */
int tu_set_option(struct hc_ctx *c, const char *item);

#endif
