/* batch_decode.c - serving several users in one step with libhybridctx.
 *
 * A long shared prefix (a "system prompt") is computed once in one context. Each of USERS users
 * gets a fork of it: the forks share the prefix's cache pages (copy-on-write) and cost memory
 * only for what they add. Every user's own question (of a different length) goes through one
 * ragged hc_append_batch per layer; then all users decode together, one hc_decode_batch per layer
 * and step. The model is the embedded `tiny` one with random weights, on the CPU backend; the
 * parts of the model between attention layers are left out (each layer's output is the next
 * layer's input), as in a plain attention stack.
 *
 * The program checks what a server relies on: a second set of forks, run one context at a time
 * with hc_append/hc_decode, must give bitwise the same outputs as the batched calls.
 *
 *   cc -std=c11 -O2 batch_decode.c $(pkg-config --cflags --libs hybridctx) -o batch_decode
 *   ./batch_decode                 (exit status 0 when batched == one by one, bit for bit)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hybridctx.h>

enum { USERS = 4, PREFIX = 96, STEPS = 3 };
static const int64_t question[USERS] = {5, 17, 1, 9}; /* each user's own tokens */

#define CHECK(call, ctx)                                                                      \
    do {                                                                                      \
        hc_status s_ = (call);                                                                \
        if (s_ != HC_OK) {                                                                    \
            fprintf(stderr, "batch_decode: %s failed: %s (%s)\n", #call, hc_status_name(s_), \
                    (ctx) ? hc_ctx_last_error(ctx) : hc_strerror(s_));                        \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "batch_decode: out of memory\n");
        exit(1);
    }
    return p;
}

/* a made-up embedding of token `pos` of stream `s` */
static void embed(float *v, int dim, int s, int64_t pos)
{
    for (int i = 0; i < dim; i++) v[i] = (float)(((s * 1000 + pos) * 37 + i * 11) % 97) / 48.0f - 1.0f;
}

/* n tokens through all layers of c, in place (h: [n][dim]) */
static void run_one(hc_ctx *c, int layers, int64_t n, float *h)
{
    for (int l = 0; l < layers; l++) CHECK(n == 1 ? hc_decode(c, l, h, h) : hc_append(c, l, h, n, h), c);
}

int main(void)
{
    hc_model *m = NULL;
    CHECK(hc_model_create_random("tiny", 7, NULL, &m), NULL);
    const int layers = hc_model_n_layers(m), dim = hc_model_dim(m);
    if (layers <= 0 || dim <= 0) return 1;
    printf("libhybridctx %s: model tiny, %d layers, dim %d, %d users\n", hc_version_string(), layers, dim, USERS);

    hc_ctx_params cp;
    CHECK(hc_ctx_params_init(&cp, sizeof cp), NULL);
    cp.backend = HC_BACKEND_CPU;
    hc_ctx *prefix = NULL;
    CHECK(hc_ctx_create(m, &cp, &prefix), NULL);

    /* the shared prefix, computed once */
    float *h = xmalloc(sizeof(float) * PREFIX * dim);
    for (int64_t t = 0; t < PREFIX; t++) embed(h + t * dim, dim, 0, t);
    run_one(prefix, layers, PREFIX, h);

    /* two forks per user: one for the batched calls, one for the reference run */
    hc_ctx *batch[USERS], *alone[USERS];
    for (int u = 0; u < USERS; u++) {
        CHECK(hc_ctx_fork(prefix, NULL, &batch[u]), prefix);
        CHECK(hc_ctx_fork(prefix, NULL, &alone[u]), prefix);
    }
    hc_ctx_memory_info mi = {.struct_size = sizeof mi};
    CHECK(hc_ctx_memory_info_get(batch[0], &mi), batch[0]);
    printf("prefix of %d tokens; each fork shares %llu bytes of cache and holds %llu of its own\n", PREFIX,
           (unsigned long long)mi.shared_bytes, (unsigned long long)mi.own_bytes);

    /* the questions: one ragged batch per layer; rows of user u follow those of user u - 1 */
    int64_t total = 0;
    for (int u = 0; u < USERS; u++) total += question[u];
    float *xb = xmalloc(sizeof(float) * (size_t)total * dim), *xr = xmalloc(sizeof(float) * (size_t)total * dim);
    for (int u = 0, row = 0; u < USERS; u++)
        for (int64_t t = 0; t < question[u]; t++, row++) embed(xb + (size_t)row * dim, dim, u + 1, PREFIX + t);
    memcpy(xr, xb, sizeof(float) * (size_t)total * dim);
    for (int l = 0; l < layers; l++) CHECK(hc_append_batch(batch, USERS, l, xb, question, xb), batch[0]);
    for (int u = 0, row = 0; u < USERS; row += (int)question[u], u++)
        run_one(alone[u], layers, question[u], xr + (size_t)row * dim);
    int same = memcmp(xb, xr, sizeof(float) * (size_t)total * dim) == 0;

    /* decoding: every user's next input is its last output, all users in one call per layer */
    float *db = xmalloc(sizeof(float) * USERS * dim), *dr = xmalloc(sizeof(float) * USERS * dim);
    for (int u = 0, row = 0; u < USERS; u++) {
        row += (int)question[u];
        memcpy(db + u * dim, xb + (size_t)(row - 1) * dim, sizeof(float) * dim);
    }
    memcpy(dr, db, sizeof(float) * USERS * dim);
    for (int s = 0; s < STEPS; s++) {
        for (int l = 0; l < layers; l++) CHECK(hc_decode_batch(batch, USERS, l, db, db), batch[0]);
        for (int u = 0; u < USERS; u++) run_one(alone[u], layers, 1, dr + u * dim);
    }
    same = same && memcmp(db, dr, sizeof(float) * USERS * dim) == 0;

    for (int u = 0; u < USERS; u++)
        printf("user %d: %lld tokens, output h[:3] = [%.6f, %.6f, %.6f]\n", u, (long long)hc_ctx_n_tokens(batch[u]),
               db[u * dim], db[u * dim + 1], db[u * dim + 2]);
    printf("batched calls bitwise identical to one context at a time: %s\n", same ? "true" : "false");

    for (int u = 0; u < USERS; u++) hc_ctx_free(batch[u]), hc_ctx_free(alone[u]);
    hc_ctx_free(prefix); /* the forks do not depend on their source: any order works */
    hc_model_free(m);
    free(h), free(xb), free(xr), free(db), free(dr);
    return same ? 0 : 1;
}
