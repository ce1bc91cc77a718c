/* model.h - hc_model: configuration + the attention weights of every layer, immutable once
 * built. Weights keep the checkpoint's formats: FP8 e4m3 codes with fp32 128x128 block scales,
 * bf16 matrices, fp32 vectors. */
#ifndef HCI_MODEL_H
#define HCI_MODEL_H
#include <stdint.h>
#include "config.h"
#include "rope.h"

typedef struct hci_fp8_mat {
    int rows, cols;        /* logical [rows][cols] */
    uint8_t *w;            /* e4m3 codes, row-major */
    float *scale;          /* [ceil(rows/128)][ceil(cols/128)], powers of two for ue8m0 checkpoints */
} hci_fp8_mat;

typedef struct hci_bf16_mat {
    int rows, cols;
    uint16_t *w;           /* bf16 bits, row-major */
} hci_bf16_mat;

typedef struct hci_compressor_w {
    int ratio, coff, dc;   /* m, 1 + overlap, output dim (head_dim or index_head_dim) */
    float *ape;            /* [ratio][coff*dc] */
    hci_bf16_mat wkv;      /* [coff*dc][dim] */
    hci_bf16_mat wgate;    /* [coff*dc][dim] */
    float *norm;           /* [dc] */
} hci_compressor_w;

typedef struct hci_layer_w {
    int ratio;
    hci_fp8_mat wq_a;      /* [q_lora][dim] */
    float *q_norm;         /* [q_lora] */
    hci_fp8_mat wq_b;      /* [H*d][q_lora] */
    hci_fp8_mat wkv;       /* [d][dim] */
    float *kv_norm;        /* [d] */
    hci_bf16_mat wo_a;     /* [G*o_lora][H/G*d] */
    hci_fp8_mat wo_b;      /* [dim][G*o_lora] */
    float *attn_sink;      /* [H] */
    hci_compressor_w comp; /* ratio > 0 */
    /* indexer, ratio == 4 */
    hci_fp8_mat idx_wq_b;          /* [IH*ID][q_lora] */
    hci_bf16_mat idx_weights_proj; /* [IH][dim] */
    hci_compressor_w idx_comp;
} hci_layer_w;

struct hc_model {
    hci_config cfg;
    int has_weights;
    hci_layer_w *layers;   /* [n_layers] */
    hci_rope rope_swa;     /* base rope_theta, no YaRN */
    hci_rope rope_comp;    /* base compress_rope_theta with YaRN */
    uint64_t weight_bytes;
    uint8_t fingerprint[32];       /* identity of configuration + weights (sessions) */
    /* Nothing else: device copies of the weights belong to the backends' device objects
     * (lib/backend/cuda/device.cu), which hc_model_free() releases through the registry. */
};

/* The layer table with every weight's dimensions and weight_bytes, but no arrays. */
int hci_model_shape(struct hc_model *m, char *err, size_t errsz);
/* Allocate the weight arrays of every layer for cfg (uninitialised); the layer table too unless
 * hci_model_shape() made it. */
int hci_model_alloc(struct hc_model *m, char *err, size_t errsz);
void hci_model_destroy(struct hc_model *m);
/* Fill all weights with seeded random values of sensible scale. progress (hc_progress_fn, may
 * be NULL) reports the layers done; a stop returns HC_ERR_ABORTED with the weights part filled. */
int hci_model_init_random(struct hc_model *m, uint64_t seed, int n_threads,
                          int (*progress)(void *user, uint64_t done, uint64_t total), void *progress_user);
/* Finish a model after its weights are in place: RoPE tables, fingerprint. */
int hci_model_finish(struct hc_model *m);
static inline const hci_rope *hci_model_rope(const struct hc_model *m, int layer)
{
    return m->cfg.ratios[layer] ? &m->rope_comp : &m->rope_swa;
}

#endif
