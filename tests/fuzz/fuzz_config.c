/* fuzz_config.c - libFuzzer target: preset names and config.json text through
 * hc_model_create_random() with HC_MODEL_GEOMETRY_ONLY (parsing, range checks, RoPE tables),
 * then the model queries. Only the documented statuses may come back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = 0;
    hc_model_params p;
    hc_model_params_init(&p, sizeof p);
    p.flags = HC_MODEL_GEOMETRY_ONLY;
    p.n_threads = 1;
    hc_model *m = NULL;
    hc_status st = hc_model_create_random(text, 1, &p, &m);
    free(text);
    if (st != HC_OK) {
        if (st != HC_ERR_UNKNOWN_PRESET && st != HC_ERR_BAD_CONFIG && st != HC_ERR_FORMAT && st != HC_ERR_LIMIT)
            abort();
        return 0;
    }
    hc_model_info info = {.struct_size = sizeof info};
    if (hc_model_info_get(m, &info) != HC_OK || info.has_weights) abort();
    for (int l = 0; l < hc_model_n_layers(m); l++)
        if (hc_model_layer_ratio(m, l) < 0) abort();
    uint64_t kv, state;
    for (int32_t fmt = HC_CACHE_DEFAULT; fmt <= HC_CACHE_FP8; fmt++)
        if (hc_model_cache_bytes(m, info.max_positions, fmt, &kv, &state) != HC_OK) abort();
    hc_model_free(m);
    return 0;
}
