/* test_numerics.c - the rounding helpers against hand-checked values: e4m3 and e2m1 grids with
 * their ties, power-of-two scales, FP8/FP4 block simulation, Hadamard, RoPE frequencies, and
 * lossless packing of cache entries. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cache/format.h"
#include "model/rope.h"
#include "testutil.h"
#include "util/numerics.h"
#include "runner.h"

START_TEST(e4m3_grid)
{
    /* exact values pass through; ties go to the even mantissa */
    ck_assert_float_eq(hci_e4m3_round(448.0f), 448.0f);
    ck_assert_float_eq(hci_e4m3_round(460.0f), 448.0f);   /* saturates (the reference clamps first) */
    ck_assert_float_eq(hci_e4m3_round(-1000.0f), -448.0f);
    ck_assert_float_eq(hci_e4m3_round(17.0f), 16.0f);     /* 16 (m=0) | 18 (m=1): tie -> 16 */
    ck_assert_float_eq(hci_e4m3_round(19.0f), 20.0f);     /* 18 (m=1) | 20 (m=2): tie -> 20 */
    ck_assert_float_eq(hci_e4m3_round(17.5f), 18.0f);
    ck_assert_float_eq(hci_e4m3_round(0x1p-9f), 0x1p-9f); /* smallest subnormal */
    ck_assert_float_eq(hci_e4m3_round(0x1p-10f), 0.0f);   /* half of it: tie -> 0 */
    ck_assert_float_eq(hci_e4m3_round(0x1.8p-9f), 0x1p-8f); /* 1.5 ulp: tie -> 2 */
    ck_assert_float_eq(hci_e4m3_round(0x1.1p-6f), 0x1p-6f); /* tie -> m=0 */
    ck_assert_float_eq(hci_e4m3_round(0x1.2p-6f), 0x1.2p-6f);
    ck_assert_float_eq(hci_e4m3_round(240.0f), 240.0f);
    ck_assert_float_eq(hci_e4m3_round(248.0f), 256.0f);   /* 240 (m=7) | 256 (m=0): tie -> 256 */
    /* every code round-trips */
    for (int cde = 0; cde < 256; cde++) {
        if ((cde & 0x7f) == 0x7f) continue; /* NaN */
        float v = hci_e4m3_decode((uint8_t)cde);
        ck_assert_float_eq(hci_e4m3_round(v), v);
        if (v != 0.0f) ck_assert_int_eq(hci_e4m3_encode(v), cde);
    }
    ck_assert_float_eq(hci_e4m3_decode(0x7e), 448.0f);
    ck_assert_float_eq(hci_e4m3_decode(0x01), 0x1p-9f);
    ck_assert_float_eq(hci_e4m3_decode(0x38), 1.0f);
    ck_assert(isnan(hci_e4m3_decode(0x7f)));
}
END_TEST

START_TEST(e2m1_grid)
{
    const float in[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 7.0f, -2.5f, 0.3f, 2.9f, 4.9f, 5.1f};
    const float out[] = {0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f, 6.0f, -2.0f, 0.5f, 3.0f, 4.0f, 6.0f};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) ck_assert_float_eq(hci_e2m1_round(in[i]), out[i]);
    for (int cde = 0; cde < 16; cde++) {
        float v = hci_e2m1_decode((uint8_t)cde);
        ck_assert_float_eq(hci_e2m1_round(v), v);
        if (v != 0.0f) ck_assert_int_eq(hci_e2m1_encode(v), cde);
    }
}
END_TEST

START_TEST(pow2_scales)
{
    ck_assert_int_eq(hci_pow2_ceil_exp(448.0f, 1.0f / 448.0f), 0);
    ck_assert_int_eq(hci_pow2_ceil_exp(448.5f, 1.0f / 448.0f), 1);
    ck_assert_int_eq(hci_pow2_ceil_exp(224.0f, 1.0f / 448.0f), -1);
    ck_assert_int_eq(hci_pow2_ceil_exp(1e-4f, 1.0f / 448.0f), -22); /* the amax floor */
    ck_assert_int_eq(hci_pow2_ceil_exp(6.0f, 1.0f / 6.0f), 0);
    ck_assert_int_eq(hci_pow2_ceil_exp(6.0f * 0x1p-126f, 1.0f / 6.0f), -126);
    ck_assert_float_eq(hci_pow2(-22), 0x1p-22f);
    ck_assert_float_eq(hci_pow2(10), 1024.0f);
}
END_TEST

START_TEST(fp8_and_fp4_simulation)
{
    /* one 64-block: amax 3.5 -> scale 2^-6 (3.5/448 = 2^-7 * 1) -> values on the e4m3 grid * 2^-7 */
    float v[64];
    for (int i = 0; i < 64; i++) v[i] = 0.0f;
    v[0] = 3.5f, v[1] = 0.0137f, v[2] = -1.01f, v[3] = 1e-6f;
    int8_t e;
    hci_fp8_sim_blocks(v, 64, 64, &e);
    ck_assert_int_eq(e, -7);
    ck_assert_float_eq(v[0], 3.5f);
    ck_assert_float_eq(v[1], hci_e4m3_round(0.0137f * 128.0f) / 128.0f);
    ck_assert_float_eq(v[2], -1.0f); /* -1.01*128 = -129.28 -> -128 */
    ck_assert_float_eq(v[3], 0.0f);  /* below 2^-9 * 2^-7 / 2 */
    /* an all-zero block keeps zeros with the floor's scale */
    float z[64] = {0};
    hci_fp8_sim_blocks(z, 64, 64, &e);
    ck_assert_int_eq(e, -22);
    ck_assert_float_eq(z[7], 0.0f);
    /* FP4: amax 5 -> scale 1 -> e2m1 grid */
    float f[32] = {5.0f, 2.5f, -0.3f, 0.2f, 1.7f};
    hci_fp4_sim_blocks(f, 32, 32, &e);
    ck_assert_int_eq(e, 0);
    ck_assert_float_eq(f[0], 4.0f);
    ck_assert_float_eq(f[1], 2.0f);
    ck_assert_float_eq(f[2], -0.5f);
    ck_assert_float_eq(f[3], 0.0f);
    ck_assert_float_eq(f[4], 1.5f);
}
END_TEST

START_TEST(activation_quant)
{
    uint16_t x[128];
    for (int i = 0; i < 128; i++) x[i] = hci_bf16_from_f32((float)(i - 64) * 0.25f);
    uint8_t q[128];
    float s;
    hci_act_quant_fp8(x, 128, q, &s);
    ck_assert_float_eq(s, 0x1p-4f); /* amax 16: 16/448 = 2^-4.8, rounded up to 2^-4 */
    for (int i = 0; i < 128; i++)
        ck_assert_float_eq(hci_e4m3_decode(q[i]) * s, hci_e4m3_round(tu_bf16(x[i]) / s) * s);
}
END_TEST

START_TEST(hadamard)
{
    float v[128] = {0};
    v[0] = 1.0f;
    hci_hadamard_bf16(v, 128);
    float h = hci_round_bf16((float)(1.0 / sqrt(128.0)));
    ck_assert_float_eq(h, 0.08837890625f);
    for (int i = 0; i < 128; i++) ck_assert_float_eq(v[i], h);
    /* e_5: row 5 of the Sylvester matrix, signs (-1)^popcount(i & 5) */
    float w[128] = {0};
    w[5] = 2.0f;
    hci_hadamard_bf16(w, 128);
    for (int i = 0; i < 128; i++) ck_assert_float_eq(w[i], (__builtin_popcount(i & 5) & 1) ? -2 * h : 2 * h);
    /* H is its own inverse (up to the bf16 roundings) */
    float r[128], r0[128];
    tu_fill_normal(r, 128, 3, 1.0f);
    for (int i = 0; i < 128; i++) r0[i] = r[i] = hci_round_bf16(r[i]);
    hci_hadamard_bf16(r, 128);
    hci_hadamard_bf16(r, 128);
    ck_assert(tu_rel_l2(r, r0, 128) < 1e-2);
}
END_TEST

START_TEST(rope_frequencies)
{
    hci_rope plain, yarn, plain160;
    hci_rope_init(&plain, 64, 10000.0, 0, 1.0, 32, 1);
    hci_rope_init(&plain160, 64, 160000.0, 0, 1.0, 32, 1);
    hci_rope_init(&yarn, 64, 160000.0, 65536, 16.0, 32, 1);
    ck_assert_int_eq(plain.n_pairs, 32);
    ck_assert_float_eq(plain.freq[0], 1.0f);
    ck_assert(fabsf(plain.freq[1] - (float)pow(10000.0, -1.0 / 32)) <= 2e-7f * plain.freq[1]);
    for (int i = 0; i <= 15; i++) ck_assert_float_eq(yarn.freq[i], plain160.freq[i]);
    for (int i = 25; i < 32; i++) ck_assert_float_eq(yarn.freq[i], plain160.freq[i] / 16.0f);
    for (int i = 16; i < 25; i++) {
        ck_assert(yarn.freq[i] < plain160.freq[i]);
        ck_assert(yarn.freq[i] > plain160.freq[i] / 16.0f);
    }
    /* rotation then inverse rotation returns the input within bf16 rounding */
    float cs[32], sn[32], x[64], x0[64];
    hci_rope_cossin(&yarn, 1000, cs, sn);
    tu_fill_normal(x, 64, 9, 1.0f);
    for (int i = 0; i < 64; i++) x0[i] = x[i] = hci_round_bf16(x[i]);
    hci_rope_apply(x, cs, sn, 32, 0);
    ck_assert(tu_rel_l2(x, x0, 64) > 0.1);
    hci_rope_apply(x, cs, sn, 32, 1);
    ck_assert(tu_rel_l2(x, x0, 64) < 1e-2);
    /* position 0 is the identity */
    hci_rope_cossin(&yarn, 0, cs, sn);
    for (int i = 0; i < 32; i++) ck_assert(cs[i] == 1.0f && sn[i] == 0.0f);
}
END_TEST

/* Values on the FP8 / FP4 grids survive the fp8 cache layout bit for bit. */
START_TEST(entry_pack_lossless)
{
    int dims[][2] = {{512, 64}, {128, 64}};
    for (int k = 0; k < 2; k++) {
        int d = dims[k][0], rd = dims[k][1];
        hci_entry_layout l8 = hci_layout_main(HCI_FMT_FP8, d, rd), l16 = hci_layout_main(HCI_FMT_BF16, d, rd);
        if (d == 512) ck_assert_int_eq(l8.entry_bytes, 584);
        void *p8 = calloc(1, hci_page_bytes(&l8)), *p16 = calloc(1, hci_page_bytes(&l16));
        for (int slot = 0; slot < 64; slot++) {
            float v[512], a[512], b[512];
            tu_fill_normal(v, (size_t)d, 100 + (uint64_t)slot, slot == 3 ? 1e-7f : (float)(slot + 1));
            for (int i = 0; i < d; i++) v[i] = hci_round_bf16(v[i]);
            if (slot == 5) memset(v, 0, sizeof v);
            hci_fp8_sim_blocks(v, d - rd, 64, NULL);
            hci_entry_pack(&l8, p8, slot, v);
            hci_entry_pack(&l16, p16, slot, v);
            hci_entry_unpack(&l8, p8, slot, a);
            hci_entry_unpack(&l16, p16, slot, b);
            ck_assert_mem_eq(a, v, sizeof(float) * (size_t)d);
            ck_assert_mem_eq(b, v, sizeof(float) * (size_t)d);
        }
        free(p8), free(p16);
    }
    hci_entry_layout li = hci_layout_index(HCI_FMT_FP8, 128);
    ck_assert_int_eq(li.entry_bytes, 68);
    void *pi = calloc(1, hci_page_bytes(&li));
    for (int slot = 0; slot < 64; slot++) {
        float v[128], a[128];
        tu_fill_normal(v, 128, 500 + (uint64_t)slot, (float)slot * 0.5f + 0.01f);
        for (int i = 0; i < 128; i++) v[i] = hci_round_bf16(v[i]);
        hci_hadamard_bf16(v, 128);
        hci_fp4_sim_blocks(v, 128, 32, NULL);
        hci_entry_pack(&li, pi, slot, v);
        hci_entry_unpack(&li, pi, slot, a);
        ck_assert_mem_eq(a, v, sizeof v);
    }
    free(pi);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("numerics");
    TCase *tc = tcase_create("rounding");
    tcase_add_test(tc, e4m3_grid);
    tcase_add_test(tc, e2m1_grid);
    tcase_add_test(tc, pow2_scales);
    tcase_add_test(tc, fp8_and_fp4_simulation);
    tcase_add_test(tc, activation_quant);
    tcase_add_test(tc, hadamard);
    tcase_add_test(tc, rope_frequencies);
    tcase_add_test(tc, entry_pack_lossless);
    suite_add_tcase(s, tc);
    return s;
}
