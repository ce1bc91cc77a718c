/* testopts.c - HC_TEST_FAST_OPTIONS for the GPU test suites (testopts.h). */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* strtok_r */
#endif
#include "testopts.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"

int tu_set_option(struct hc_ctx *c, const char *item)
{
    char name[64];
    const char *eq = strchr(item, '=');
    char *end = NULL;
    long v = eq ? strtol(eq + 1, &end, 10) : 1;
    size_t len = eq ? (size_t)(eq - item) : strlen(item);
    if (!len || len >= sizeof name || (eq && (end == eq + 1 || *end))) return 1;
    memcpy(name, item, len);
    name[len] = 0;
    return hc_x_ctx_set_option(c, name, v);
}

int tu_fast_env_options(struct hc_ctx *c)
{
    const char *env = getenv("HC_TEST_FAST_OPTIONS");
    if (!env || !*env || hc_ctx_backend(c) != HC_BACKEND_CUDA || hc_ctx_numerics(c) != HC_NUMERICS_FAST) return 0;
    char buf[512];
    if (strlen(env) >= sizeof buf) {
        fprintf(stderr, "HC_TEST_FAST_OPTIONS: too long\n");
        return -1;
    }
    memcpy(buf, env, strlen(env) + 1);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        int st = strchr(item, '=') ? tu_set_option(c, item) : 1;
        if (st == 1) {
            fprintf(stderr, "HC_TEST_FAST_OPTIONS: \"%s\" is not name=value\n", item);
            return -1;
        }
        if (st != HC_OK) {
            fprintf(stderr, "HC_TEST_FAST_OPTIONS: %s\n", hc_ctx_last_error(c));
            return -1;
        }
    }
    static int told; /* once per process */
    if (!told) {
        told = 1;
        printf("(HC_TEST_FAST_OPTIONS=%s on every FAST CUDA context)\n", env);
    }
    return 0;
}
