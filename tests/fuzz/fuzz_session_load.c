/* fuzz_session_load.c - libFuzzer target: hc_ctx_load_buffer() and the inspector's reader on
 * arbitrary bytes, against a small context built once (tiny geometry, geometry-only model).
 *
 * Each input is loaded twice: as it is, and with every checksum repaired (TOC, chunks, superblock,
 * footer), so that mutations reach the checks behind the hashes. Invariants (abort on failure):
 * the status is one a load may return; a failed load leaves the context as it was; a successful
 * load can be saved again and that session loads into a bf16 context with the same state.
 * Build and run: tests/fuzz/run_session_fuzz.sh (docs/fuzzing.md). With -DSESSION_SEEDS it
 * becomes a program that writes the seed corpus (valid sessions at n = 0, 1, 127, 128, 129). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "session/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The smallest geometry the configuration rules allow, with every layer kind and window 16. */
static const char geometry[] =
    "{\"hidden_size\": 128, \"num_hidden_layers\": 3, \"num_attention_heads\": 1, \"head_dim\": 66,"
    " \"qk_rope_head_dim\": 2, \"q_lora_rank\": 128, \"o_groups\": 1, \"o_lora_rank\": 128,"
    " \"index_n_heads\": 1, \"index_head_dim\": 32, \"index_topk\": 1, \"sliding_window\": 16,"
    " \"max_position_embeddings\": 4096, \"compress_ratios\": [0, 4, 128]}";

static hc_model *model;
static hc_ctx *ctx, *ctx_bf16;
static uint64_t ctx_digest; /* of ctx's state, kept small between inputs */
static uint8_t *scratch;
static size_t scratch_cap;

static hc_ctx *make_ctx(int fmt)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = 1;
    p.cache_format = fmt;
    hc_ctx *c = NULL;
    if (hc_ctx_create(model, &p, &c)) abort();
    return c;
}

static void init(void)
{
    if (model) return;
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.flags = HC_MODEL_GEOMETRY_ONLY;
    if (hc_model_create_random(geometry, 1, &mp, &model)) abort();
    ctx = make_ctx(HC_CACHE_FP8);
    ctx_bf16 = make_ctx(HC_CACHE_BF16);
}

static uint64_t digest(hc_ctx *c);

/* Back to a small known state, so that checking "unchanged" stays cheap. */
static void reset_ctx(void)
{
    if (hc_ctx_reset(ctx) || hc_x_ctx_fill_random(ctx, 50, 1) || hc_ctx_set_metadata(ctx, "fuzz", 4)) abort();
    ctx_digest = digest(ctx);
}

/* Digest of a context's state: its session between superblock and footer. */
static uint64_t digest(hc_ctx *c)
{
    uint64_t n = 0;
    if (hc_ctx_save_size(c, NULL, &n)) abort();
    if (n > scratch_cap) {
        free(scratch);
        scratch = malloc(n);
        scratch_cap = n;
        if (!scratch) abort();
    }
    if (hc_ctx_save_buffer(c, scratch, scratch_cap, NULL, &n)) abort();
    return XXH3_64bits(scratch + 4096, n - 8192) ^ (uint64_t)hc_ctx_n_tokens(c);
}

static void allowed(hc_status st)
{
    if (st != HC_OK && st != HC_ERR_FORMAT && st != HC_ERR_VERSION && st != HC_ERR_CORRUPT && st != HC_ERR_LIMIT &&
        st != HC_ERR_MODEL_MISMATCH && st != HC_ERR_POSITION)
        abort();
}

static void load(const uint8_t *b, size_t n)
{
    hc_status st = hc_ctx_load_buffer(ctx, b, n);
    allowed(st);
    if (st) {
        if (hc_ctx_n_tokens(ctx) != 50 || digest(ctx) != ctx_digest) abort(); /* a failed load changed the context */
        return;
    }
    /* the loaded state saves and loads again, into the other format, unchanged */
    uint64_t d = digest(ctx);
    uint64_t len = 0;
    if (hc_ctx_save_size(ctx, NULL, &len)) abort();
    uint8_t *again = malloc(len);
    if (!again || hc_ctx_save_buffer(ctx, again, len, NULL, &len)) abort();
    if (hc_ctx_load_buffer(ctx_bf16, again, len) || digest(ctx_bf16) != d) abort();
    free(again);
    reset_ctx();
}

/* The inspector's reader and describer on the same bytes. */
static void inspect(const uint8_t *b, size_t n)
{
    hcs_src src = {-1, "fuzz", b, n};
    hcs_file f;
    char err[512];
    if (hcs_file_open(&f, &src, err, sizeof err)) return;
    int vst = hcs_file_stream(&f, 0, 0, NULL, NULL, NULL, NULL, err, sizeof err);
    for (int json = 0; json < 2; json++) {
        char *text = NULL;
        if (hcs_describe(&f, json, 1, vst, err, &text) == HC_OK && !text) abort();
        free(text);
    }
    hcs_file_close(&f);
}

/* Recompute every hash the file's own (unchecked) fields point at. */
static void repair(uint8_t *b, size_t n)
{
    if (n < 8192 || memcmp(b, hcs_magic_sb, 8)) return;
    uint64_t toff = hcs_get64(b + 8 + 40), tlen = hcs_get64(b + 8 + 48);
    if (toff <= n && tlen <= n - toff && tlen >= HCS_TOC_HEAD) {
        uint8_t *t = b + toff;
        uint32_t ns = hcs_get32(t + 8), nc = hcs_get32(t + 12);
        if (HCS_TOC_HEAD + (uint64_t)HCS_SEC_ENTRY * ns + (uint64_t)HCS_CHUNK_ENTRY * nc <= tlen) {
            uint8_t *raw = NULL;
            for (uint32_t i = 0; i < ns; i++) {
                hcs_section s;
                hcs_section_decode(t + HCS_TOC_HEAD + (size_t)i * HCS_SEC_ENTRY, &s);
                if (s.first_chunk > nc || s.n_chunks > nc - s.first_chunk) continue;
                uint64_t off = s.offset;
                for (uint32_t j = 0; j < s.n_chunks; j++) {
                    uint8_t *ce = t + HCS_TOC_HEAD + (size_t)ns * HCS_SEC_ENTRY + (size_t)(s.first_chunk + j) * HCS_CHUNK_ENTRY;
                    hcs_chunk c;
                    hcs_chunk_decode(ce, &c);
                    if (off > n || c.stored_size > n - off) break;
                    if (c.codec == HCS_CODEC_RAW) {
                        c.hash = XXH3_64bits(b + off, c.stored_size);
                    } else if (c.codec == HCS_CODEC_ZSTD && c.raw_size <= HCS_MAX_CHUNK_RAW) {
                        if (!raw) raw = malloc(HCS_MAX_CHUNK_RAW);
                        size_t r = raw ? ZSTD_decompress(raw, c.raw_size, b + off, c.stored_size) : 0;
                        if (raw && !ZSTD_isError(r)) c.hash = XXH3_64bits(raw, r);
                    }
                    hcs_chunk_encode(&c, ce);
                    off += c.stored_size;
                }
            }
            free(raw);
            uint64_t h = XXH3_64bits(t, tlen);
            hcs_put64(b + 8 + 56, h);
            hcs_put64(b + n - 4096 + 8 + 56, h);
        }
    }
    hcs_put64(b + HCS_SB_HASH_OFF, XXH3_64bits(b, HCS_SB_HASH_OFF));
    hcs_put64(b + n - 4096 + HCS_FOOT_HASH_OFF, XXH3_64bits(b + n - 4096, HCS_FOOT_HASH_OFF));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!model) {
        init();
        reset_ctx();
    }
    load(data, size);
    inspect(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    repair(copy, size);
    load(copy, size);
    inspect(copy, size);
    free(copy);
    return 0;
}

#ifdef SESSION_SEEDS
int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    init();
    static const int64_t ns[] = {0, 1, 127, 128, 129};
    for (int z = 0; z < 2; z++)
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            if (z && ns[i] != 129) continue;
            hc_ctx *c = make_ctx(HC_CACHE_FP8);
            char meta[32], path[4096];
            snprintf(meta, sizeof meta, "seed n=%lld", (long long)ns[i]);
            if (hc_x_ctx_fill_random(c, ns[i], (uint64_t)i + 1) || hc_ctx_set_metadata(c, meta, strlen(meta))) abort();
            hc_save_params p;
            hc_save_params_init(&p, sizeof p);
            p.compression = z ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE;
            snprintf(path, sizeof path, "%s/n%lld%s.hcs", argv[1], (long long)ns[i], z ? "-zstd" : "");
            if (hc_ctx_save(c, path, &p)) {
                fprintf(stderr, "%s: %s\n", path, hc_ctx_last_error(c));
                return 1;
            }
            hc_ctx_free(c);
        }
    return 0;
}
#endif
