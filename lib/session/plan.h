/* plan.h - what a session of a given configuration and length holds: the list of sections with
 * their row counts and row sizes (docs/session-format.md §4), the configuration record, the
 * canonical entry layouts and the used rows of a compressor state. Shared by the writer, the
 * reader's semantic checks and hc_ctx_save_size(). */
#ifndef HCS_PLAN_H
#define HCS_PLAN_H
#include <stddef.h>
#include <stdint.h>
#include "../cache/format.h"
#include "../model/config.h"

typedef struct hcs_plan_sec {
    uint16_t type;
    uint32_t layer, dtype, row_bytes;
    uint64_t n_rows;
    int ratio;              /* layer sections: the layer's ratio */
} hcs_plan_sec;

/* Sections of a session of cfg: 2 + per layer 1 (window) + 2 (ratio > 0) + 2 (ratio 4). */
uint32_t hcs_plan_count(const hci_config *cfg);
void hcs_plan_build(const hci_config *cfg, int64_t n_tokens, uint64_t metadata_len, hcs_plan_sec *out);
/* The rows_per_chunk a writer uses for a section (about 1 MiB; a multiple of 64 for entries). */
uint32_t hcs_plan_rows_per_chunk(const hcs_plan_sec *s);

/* Canonical (fp8-format) layouts of main and indexer entries. */
hci_entry_layout hcs_canon_main(const hci_config *cfg);
hci_entry_layout hcs_canon_index(const hci_config *cfg);

/* Rows of a ratio-m compressor state in use after n tokens, ascending, into rows[] (at most
 * 128); returns their number. */
int hcs_state_rows(int ratio, int64_t n, int *rows);
/* Bytes of one stored state row (kv then score, fp32) of a compressor of output width dc. */
uint32_t hcs_state_row_bytes(int ratio, int dc);

/* The CONFIG record (§4.1). */
uint32_t hcs_config_size(int n_layers);
void hcs_config_encode(const hci_config *cfg, uint8_t *out);
/* Decode and validate; returns HC_OK or HC_ERR_CORRUPT with a message. */
int hcs_config_decode(const uint8_t *in, uint64_t len, hci_config *cfg, char *err, size_t errsz);
/* Compare a session's configuration with a model's: HC_OK, or HC_ERR_MODEL_MISMATCH naming the
 * first field that differs. */
int hcs_config_compare(const hci_config *file, const hci_config *model, char *err, size_t errsz);

#endif
