/* rope.h - RoPE frequencies (as the reference builds them) and per-position cos/sin. */
#ifndef HCI_ROPE_H
#define HCI_ROPE_H
#include <stdint.h>

#define HCI_MAX_ROPE_PAIRS 64

typedef struct hci_rope {
    int n_pairs;                    /* rope_dim / 2 */
    float freq[HCI_MAX_ROPE_PAIRS]; /* f_i in fp32, YaRN applied where configured */
} hci_rope;

/* Frequencies: f_i = fl32(1 / powf(base, fl32(2i/rope_dim))), then the YaRN blend in fp32 when
 * original_len > 0 (see docs/numerics.md). */
void hci_rope_init(hci_rope *r, int rope_dim, double base, int64_t original_len, double factor,
                   double beta_fast, double beta_slow);
/* cos/sin of the fp32 angle fl32(fl32(pos) * f_i), with CUDA's cosf/sinf bits. */
void hci_rope_cossin(const hci_rope *r, int64_t pos, float *cosv, float *sinv);
/* Rotate interleaved pairs of x (n_pairs*2 bf16-valued floats) in place, forward or inverse,
 * rounding each result to bf16: a' = fma(a, c, -fl32(b*s)), b' = fma(a, s, fl32(b*c)). */
void hci_rope_apply(float *x, const float *cosv, const float *sinv, int n_pairs, int inverse);

#endif
