/* test_session_util.h - helpers shared by the session suites: small models, session bytes,
 * comparison of two sessions up to the fields that differ between saves. */
#ifndef HC_TEST_SESSION_UTIL_H
#define HC_TEST_SESSION_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include "hybridctx.h"

/* A small configuration with every layer kind (window only, ratio 4, ratio 128), fast enough
 * to compute thousands of tokens in a test: JSON text for hc_model_create_random(). */
extern const char tsu_micro_json[];
/* The golden-file configuration (tiny geometry spelled out, so that preset changes do not move it). */
extern const char tsu_golden_json[];

hc_model *tsu_model(const char *json, uint64_t seed, int geometry_only);
hc_ctx *tsu_ctx(hc_model *m, int cache_format, int64_t max_tokens);
/* Save into the file at path with the given compression (a failure fails the test). */
void tsu_save_file(hc_ctx *c, const char *path, int compression);
/* Save into a malloc'd buffer (abort on failure). */
uint8_t *tsu_save(hc_ctx *c, int compression, uint64_t *len);
/* 1 when a and b are the same session apart from uuid, generation, time, writer, the writer
 * context's cache format and backend, and the hashes that cover them; on a difference *where receives its offset. */
int tsu_same_session(const uint8_t *a, uint64_t na, const uint8_t *b, uint64_t nb, uint64_t *where);
/* XXH64-like digest of a context's state: its session bytes with the varying fields masked. */
uint64_t tsu_digest(hc_ctx *c);

#endif
