/* rope.c - RoPE frequencies and rotation, op by op as the reference computes them. */
#include "rope.h"
#include <math.h>
#include "../util/bf16.h"
#include "../util/cudamath.h"

void hci_rope_init(hci_rope *r, int rope_dim, double base, int64_t original_len, double factor,
                   double beta_fast, double beta_slow)
{
    int n = rope_dim / 2;
    r->n_pairs = n;
    float fbase = (float)base;
    for (int i = 0; i < n; i++) {
        float e = (float)(2 * i) / (float)rope_dim;
        r->freq[i] = 1.0f / hci_cuda_powf(fbase, e);
    }
    if (original_len <= 0) return;
    /* YaRN: correction range computed in double, ramp and blend in fp32 (one rounding per op). */
    double dlow = rope_dim * log((double)original_len / (beta_fast * 2.0 * M_PI)) / (2.0 * log(base));
    double dhigh = rope_dim * log((double)original_len / (beta_slow * 2.0 * M_PI)) / (2.0 * log(base));
    double low = floor(dlow), high = ceil(dhigh);
    if (low < 0) low = 0;
    if (high > rope_dim - 1) high = rope_dim - 1;
    if (low == high) high += 0.001;
    float ffactor = (float)factor;
    float span = (float)(high - low);
    for (int i = 0; i < n; i++) {
        float ramp = ((float)i - (float)low) / span;
        if (ramp < 0.0f) ramp = 0.0f;
        if (ramp > 1.0f) ramp = 1.0f;
        float smooth = 1.0f - ramp;
        float f = r->freq[i];
        float a = f / ffactor;
        float b = 1.0f - smooth;
        float ab = a * b;
        float c = f * smooth;
        r->freq[i] = ab + c;
    }
}

void hci_rope_cossin(const hci_rope *r, int64_t pos, float *cosv, float *sinv)
{
    float t = (float)pos;
    for (int i = 0; i < r->n_pairs; i++) {
        float theta = t * r->freq[i];
        hci_cuda_sincosf(theta, &sinv[i], &cosv[i]);
    }
}

void hci_rope_apply(float *x, const float *cosv, const float *sinv, int n_pairs, int inverse)
{
    for (int i = 0; i < n_pairs; i++) {
        float a = x[2 * (size_t)i], b = x[2 * (size_t)i + 1];
        float c = cosv[i], s = inverse ? -sinv[i] : sinv[i];
        float bs = b * s, bc = b * c;
        x[2 * (size_t)i] = hci_round_bf16(fmaf(a, c, -bs));
        x[2 * (size_t)i + 1] = hci_round_bf16(fmaf(a, s, bc));
    }
}
