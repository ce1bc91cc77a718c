/* model_loop.c - a whole (toy) model around libhybridctx's attention.
 *
 * Creates the embedded `tiny` model with random weights and a CPU context, then runs a model
 * loop: a few chunks of a prompt, then token-by-token decoding. Every layer is our attention;
 * between layers the application runs its own parts, here toy stand-ins (elementwise float32
 * only, so that the Python, Rust and Go versions of this program print the same numbers):
 *   x = squash(h)                 the "attn_norm" before the attention, squash(v) = v / (1 + |v|)
 *   h += attention(x)             hc_append / hc_decode, the residual add
 *   h += 0.5 * squash(h[perm])    a "MLP" that mixes channels, perm(i) = (7 i + 3) mod dim
 * The next token's input is squash(h) of the last one (the sampling + embedding of a real model).
 * Finally the session is saved to a temporary file and loaded into a fresh context; one more
 * token is decoded in both contexts, and the outputs must match bit for bit.
 *
 *   cc -std=c11 -O2 model_loop.c $(pkg-config --cflags --libs hybridctx) -o model_loop
 *   ./model_loop                   (exit status 0 when the restored context matches)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hybridctx.h>

enum { CHUNKS = 3, CHUNK = 48, DECODE = 4 };

/* Every call's status is checked: on failure print the library's message and give up. */
#define CHECK(call, ctx)                                                                    \
    do {                                                                                    \
        hc_status s_ = (call);                                                              \
        if (s_ != HC_OK) {                                                                  \
            fprintf(stderr, "model_loop: %s failed: %s (%s)\n", #call, hc_status_name(s_), \
                    (ctx) ? hc_ctx_last_error(ctx) : hc_strerror(s_));                      \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

static float squash(float v) { return v / (1.0f + (v < 0 ? -v : v)); }

/* One chunk of n tokens (h: [n][dim] residual stream) through every layer; n == 1 decodes. */
static void forward(hc_ctx *c, int layers, int dim, float *h, int64_t n, float *x, float *y)
{
    for (int l = 0; l < layers; l++) {
        for (int64_t k = 0; k < n * dim; k++) x[k] = squash(h[k]);
        if (n == 1)
            CHECK(hc_decode(c, l, x, y), c);
        else
            CHECK(hc_append(c, l, x, n, y), c);
        for (int64_t k = 0; k < n * dim; k++) h[k] += y[k];
        for (int64_t t = 0; t < n; t++) { /* toy MLP, from a copy of the token's h */
            float *ht = h + t * dim, *m = x + t * dim;
            for (int i = 0; i < dim; i++) m[i] = 0.5f * squash(ht[(7 * i + 3) % dim]);
            for (int i = 0; i < dim; i++) ht[i] += m[i];
        }
    }
}

/* the next token's input, in place: squash(h) of the last token */
static void next_token(float *h, int dim)
{
    for (int i = 0; i < dim; i++) h[i] = squash(h[i]);
}

static void print_head(const char *what, const float *v)
{
    printf("%s h[:4] = [%.6f, %.6f, %.6f, %.6f]\n", what, v[0], v[1], v[2], v[3]);
}

int main(void)
{
    char err[256] = "";
    hc_model_params mp;
    CHECK(hc_model_params_init(&mp, sizeof mp), NULL);
    mp.errbuf = err;
    mp.errbuf_size = sizeof err;
    hc_model *m = NULL;
    hc_status s = hc_model_create_random("tiny", 42, &mp, &m);
    if (s != HC_OK) {
        fprintf(stderr, "model_loop: hc_model_create_random: %s (%s)\n", hc_status_name(s), err);
        return 1;
    }
    const int layers = hc_model_n_layers(m), dim = hc_model_dim(m);
    if (layers <= 0 || dim <= 0) return 1;
    const size_t row = sizeof(float) * (size_t)dim; /* bytes of one token's vector */
    printf("libhybridctx %s: model tiny, %d layers, dim %d\n", hc_version_string(), layers, dim);

    hc_ctx_params cp;
    CHECK(hc_ctx_params_init(&cp, sizeof cp), NULL);
    cp.backend = HC_BACKEND_CPU;
    hc_ctx *c = NULL, *c2 = NULL;
    CHECK(hc_ctx_create(m, &cp, &c), NULL);

    float *h = malloc(CHUNK * row), *x = malloc(CHUNK * row);
    float *y = malloc(CHUNK * row), *h2 = malloc(row);
    if (!h || !x || !y || !h2) {
        fprintf(stderr, "model_loop: out of memory\n");
        return 1;
    }

    /* prompt: CHUNKS chunks of CHUNK tokens, a made-up embedding per position */
    for (int ch = 0; ch < CHUNKS; ch++) {
        for (int t = 0; t < CHUNK; t++)
            for (int i = 0; i < dim; i++)
                h[t * dim + i] = (float)(((ch * CHUNK + t) * 31 + i * 7) % 101) / 50.0f - 1.0f;
        forward(c, layers, dim, h, CHUNK, x, y);
    }
    printf("prompt: %d chunks of %d tokens, context holds %lld tokens\n", CHUNKS, CHUNK,
           (long long)hc_ctx_n_tokens(c));
    memmove(h, h + (CHUNK - 1) * dim, row); /* from here on h is one token */
    print_head("last prompt token:", h);

    /* decoding: each token's input comes from the previous token's output */
    for (int d = 0; d < DECODE; d++) {
        next_token(h, dim);
        forward(c, layers, dim, h, 1, x, y);
    }
    char line[64];
    snprintf(line, sizeof line, "decoded %d tokens, last:", DECODE);
    print_head(line, h);

    /* save, load into a fresh context, decode one more token in both */
    char path[4096];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/hybridctx-model-loop-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path); /* an empty file: hc_ctx_save replaces it atomically */
    if (fd < 0) {
        perror("model_loop: mkstemp");
        return 1;
    }
    close(fd);
    CHECK(hc_ctx_save(c, path, NULL), c);
    CHECK(hc_ctx_create(m, &cp, &c2), NULL);
    CHECK(hc_ctx_load(c2, path), c2);
    struct stat st;
    if (stat(path, &st) != 0) {
        perror("model_loop: stat");
        return 1;
    }
    unlink(path);
    printf("saved the session (%lld bytes), loaded it into a new context: %lld tokens\n",
           (long long)st.st_size, (long long)hc_ctx_n_tokens(c2));

    next_token(h, dim);
    memcpy(h2, h, row);
    forward(c, layers, dim, h, 1, x, y);
    forward(c2, layers, dim, h2, 1, x, y);
    int same = memcmp(h, h2, row) == 0;
    print_head("next token, original context:", h);
    print_head("next token, restored context:", h2);
    printf("restored context bitwise identical: %s\n", same ? "true" : "false");

    hc_ctx_free(c2);
    hc_ctx_free(c);
    hc_model_free(m);
    free(h), free(x), free(y), free(h2);
    return same ? 0 : 1;
}
