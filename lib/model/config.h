/* config.h - the model configuration: geometry, RoPE constants and per-layer ratios. */
#ifndef HCI_CONFIG_H
#define HCI_CONFIG_H
#include <stddef.h>
#include <stdint.h>

#define HCI_MAX_LAYERS 1024
#define HCI_MAX_CONFIG_TEXT (1u << 20)

typedef struct hci_config {
    int dim;            /* hidden_size D */
    int n_layers;       /* num_hidden_layers */
    int n_heads;        /* num_attention_heads H */
    int head_dim;       /* head_dim d (q, k and v) */
    int rope_dim;       /* qk_rope_head_dim: the last rope_dim dims carry RoPE */
    int q_lora_rank;
    int o_groups;
    int o_lora_rank;
    int window;         /* sliding_window */
    int index_n_heads;
    int index_head_dim;
    int index_topk;
    double rope_theta;           /* window-only layers, no YaRN */
    double compress_rope_theta;  /* ratio > 0 layers, with YaRN */
    double yarn_factor;          /* rope_scaling.factor */
    int64_t yarn_original_len;   /* rope_scaling.original_max_position_embeddings; 0 = no YaRN */
    double yarn_beta_fast, yarn_beta_slow;
    double norm_eps;
    int64_t max_positions;       /* max_position_embeddings */
    int ratios[HCI_MAX_LAYERS];  /* compress_ratios[0..n_layers-1]: 0, 4 or 128 */
} hci_config;

/* Fill cfg from a preset name ("v4-flash", "v4-pro", "tiny") or JSON text (missing fields take
 * the v4-flash values). Returns an hc_status; err receives a message. */
int hci_config_from_text(const char *preset_or_json, hci_config *cfg, char *err, size_t errsz);
/* Check ranges and consistency. Returns HC_OK or HC_ERR_BAD_CONFIG with a message. */
int hci_config_validate(const hci_config *cfg, char *err, size_t errsz);
void hci_config_preset_flash(hci_config *cfg);

/* Derived sizes. */
static inline int hci_cfg_nope_dim(const hci_config *c) { return c->head_dim - c->rope_dim; }
static inline int hci_cfg_heads_per_group(const hci_config *c) { return c->n_heads / c->o_groups; }
static inline int hci_cfg_coff(int ratio) { return ratio == 4 ? 2 : 1; }

#endif
