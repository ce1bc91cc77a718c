/* numerics.c - FP8/FP4 grids, power-of-two scales, Hadamard, RMSNorm and exact-order dots. */
#include "numerics.h"
#include <math.h>
#include <pthread.h>

static float e4m3_tab[256];
static float e2m1_tab[16];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    for (int c = 0; c < 256; c++) e4m3_tab[c] = hci_e4m3_value((uint8_t)c);
    for (int c = 0; c < 16; c++) e2m1_tab[c] = hci_e2m1_value((uint8_t)c);
}

const float *hci_e4m3_table(void) { pthread_once(&tables_once, build_tables); return e4m3_tab; }
const float *hci_e2m1_table(void) { pthread_once(&tables_once, build_tables); return e2m1_tab; }

static float block_amax(const float *v, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        if (a > m) m = a;
    }
    return m;
}

void hci_fp8_sim_blocks(float *v, int n, int block, int8_t *exps)
{
    for (int b = 0; b * block < n; b++) {
        float *x = v + (size_t)b * block;
        float amax = fmaxf(block_amax(x, block), 1e-4f);
        int e = hci_pow2_ceil_exp(amax, 1.0f / HCI_E4M3_MAX);
        float s = hci_pow2(e);
        for (int i = 0; i < block; i++) {
            float q = x[i] / s;
            if (q > HCI_E4M3_MAX) q = HCI_E4M3_MAX;
            if (q < -HCI_E4M3_MAX) q = -HCI_E4M3_MAX;
            x[i] = hci_round_bf16(hci_e4m3_round(q) * s);
        }
        if (exps) exps[b] = (int8_t)e;
    }
}

void hci_fp4_sim_blocks(float *v, int n, int block, int8_t *exps)
{
    for (int b = 0; b * block < n; b++) {
        float *x = v + (size_t)b * block;
        float amax = fmaxf(block_amax(x, block), 6.0f * 0x1p-126f);
        int e = hci_pow2_ceil_exp(amax, 1.0f / HCI_E2M1_MAX);
        float s = hci_pow2(e);
        for (int i = 0; i < block; i++) {
            float q = x[i] / s;
            if (q > HCI_E2M1_MAX) q = HCI_E2M1_MAX;
            if (q < -HCI_E2M1_MAX) q = -HCI_E2M1_MAX;
            x[i] = hci_round_bf16(hci_e2m1_round(q) * s);
        }
        if (exps) exps[b] = (int8_t)e;
    }
}

void hci_act_quant_fp8(const uint16_t *x, int n, uint8_t *q, float *scales)
{
    float v[128];
    for (int b = 0; b * 128 < n; b++) {
        hci_bf16_decode_n(x + (size_t)b * 128, 128, v);
        float amax = fmaxf(block_amax(v, 128), 1e-4f);
        float s = hci_pow2(hci_pow2_ceil_exp(amax, 1.0f / HCI_E4M3_MAX));
        for (int i = 0; i < 128; i++) {
            float t = v[i] / s;
            if (t > HCI_E4M3_MAX) t = HCI_E4M3_MAX;
            if (t < -HCI_E4M3_MAX) t = -HCI_E4M3_MAX;
            q[(size_t)b * 128 + i] = hci_e4m3_encode(hci_e4m3_round(t));
        }
        scales[b] = s;
    }
}

void hci_hadamard_bf16(float *v, int n)
{
    for (int h = 1; h < n; h <<= 1)
        for (int i = 0; i < n; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = v[j], b = v[j + h];
                v[j] = a + b;
                v[j + h] = a - b;
            }
    float scale = (float)(1.0 / sqrt((double)n));
    for (int i = 0; i < n; i++) v[i] = hci_round_bf16(v[i] * scale);
}

void hci_rmsnorm_bf16(const float *x, const float *w, int n, float eps, uint16_t *out)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)(x[i] * x[i]);
    /* torch: mean in fp32 (sum rounded once, then / n), + eps, rsqrt; then x * r, then w * (.) */
    float var = (float)ss / (float)n;
    float r = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < n; i++) out[i] = hci_bf16_from_f32(w[i] * (x[i] * r));
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(HCI_NO_CLONES)
#define HCI_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HCI_CLONES
#endif

/* The fuzz builds (tools/check-fuzz.sh) trace every comparison for coverage: in this innermost
 * loop of every projection that made call-sequence targets (fuzz_ctx_ops) some 5 times slower,
 * and its branches tell the fuzzer nothing. */
#if defined(__clang__) && defined(__has_attribute)
#if __has_attribute(no_sanitize)
#define HCI_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#endif
#endif
#ifndef HCI_NO_COVERAGE
#define HCI_NO_COVERAGE
#endif

/* Eight double lanes in a fixed order: vectorisable, and the same result in every clone. */
HCI_CLONES HCI_NO_COVERAGE double hci_dot_exact_f32(const float *a, const float *b, int n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += (double)(a[i + j] * b[i + j]);
    for (int j = 0; i < n; i++, j++) acc[j] += (double)(a[i] * b[i]);
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void hci_e4m3_decode_n(const uint8_t *c, int n, float *out)
{
    const float *t = hci_e4m3_table();
    for (int i = 0; i < n; i++) out[i] = t[c[i]];
}

HCI_CLONES void hci_bf16_decode_n(const uint16_t *h, int n, float *out)
{
    for (int i = 0; i < n; i++) out[i] = hci_f32_from_bits((uint32_t)h[i] << 16);
}
