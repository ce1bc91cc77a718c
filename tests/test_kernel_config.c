/* test_kernel_config.c - the compile-time configuration of the CUDA kernel families
 * (lib/backend/cuda/kernels/<family>/config.h) against the invariants the kernels rely on, on
 * the host, without a GPU: thread counts, tiles that divide the V4 shapes, shared-memory budgets
 * of sm_90, and the pure index maps and exact-arithmetic helpers that the GEMM and the indexer
 * share with this test (swizzles, fragment maps, the e4m3 -> f16 trick, FP4 decoding, the
 * indexer's fast-path exactness rule). */
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "backend/cuda/kernels/attend/config.h"
#include "backend/cuda/kernels/compress/config.h"
#include "backend/cuda/kernels/gemm/config.h"
#include "backend/cuda/kernels/gemv/config.h"
#include "backend/cuda/kernels/index/config.h"
#include "backend/cuda/kernels/io/config.h"
#include "backend/cuda/kernels/qkv/config.h"
#include "backend/cuda/kernels/quant/config.h"
#include "cache/format.h"
#include "model/config.h"
#include "runner.h"
#include "util/quant.h"

#define SM90_SMEM_PER_CTA (227 * 1024) /* opt-in dynamic shared memory of one CTA on sm_90 */
#define DEFAULT_SMEM (48 * 1024)       /* without cudaFuncSetAttribute */
#define QSIM_MAX_BLOCKS 32             /* common.cuh: hci_dev_quant_sim / hci_dev_pack_entry am[32] */

static int is_pow2(long v) { return v > 0 && (v & (v - 1)) == 0; }

static void check_threads(const char *what, int t)
{
    ck_assert_msg(t > 0 && t % 32 == 0 && t <= 1024, "%s = %d: whole warps, at most 1024", what, t);
}

static size_t up256(size_t b) { return (b + 255) & ~(size_t)255; }

static uint32_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* f16 bits -> value (exact in double). */
static double f16_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (h & 0x8000) ? -v : v;
}

static float f32_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---------------------------------------------------------------- launch shapes and budgets */

START_TEST(thread_counts)
{
    check_threads("GF_THREADS", GF_THREADS);
    check_threads("GS_THREADS", GS_THREADS);
    check_threads("GV_WARPS * 32", GV_WARPS * 32);
    check_threads("AQ_THREADS", AQ_THREADS);
    check_threads("QKV_THREADS", QKV_THREADS);
    check_threads("QKV_ROPE_THREADS", QKV_ROPE_THREADS);
    check_threads("CP_THREADS", CP_THREADS);
    check_threads("CP_EMIT_MIN_THREADS", CP_EMIT_MIN_THREADS);
    check_threads("CP_EMIT_MAX_THREADS", CP_EMIT_MAX_THREADS);
    check_threads("IO_THREADS", IO_THREADS);
    check_threads("IO_PACK_THREADS", IO_PACK_THREADS);
    check_threads("IO_GATHER_THREADS", IO_GATHER_THREADS);
    check_threads("IX_THREADS", IX_THREADS);
    check_threads("IX_SEL_THREADS", IX_SEL_THREADS);
    check_threads("IX_PREP_THREADS", IX_PREP_THREADS);
    check_threads("IX_SORT_MAX_THREADS", IX_SORT_MAX_THREADS);
    check_threads("AT_THREADS", AT_THREADS);
    check_threads("AT_COMBINE_THREADS", AT_COMBINE_THREADS);
    /* hci_dev_block_sum halves the block: a power of two */
    ck_assert(is_pow2(QKV_THREADS));
    ck_assert(is_pow2(CP_EMIT_MIN_THREADS) && is_pow2(CP_EMIT_MAX_THREADS));
    ck_assert_int_le(CP_EMIT_MIN_THREADS, CP_EMIT_MAX_THREADS);
}
END_TEST

START_TEST(shared_memory_budgets)
{
    ck_assert_int_le(GF_SMEM_BYTES, SM90_SMEM_PER_CTA);
    ck_assert_int_eq(GF_SMEM_BYTES, 2 * GF_STAGE_BYTES + 2 * GF_BN * 4); /* two stages, two scale rows */
    ck_assert_int_le(GB_SMEM_BYTES, SM90_SMEM_PER_CTA);
    ck_assert_int_ge(GB_STAGES, 2);
    ck_assert_int_le(GS_SMEM_BYTES(GS_MT_WIDE, GS_NT), SM90_SMEM_PER_CTA);
    ck_assert_int_le(GS_SMEM_BYTES(GS_MT_NARROW, GS_NT), SM90_SMEM_PER_CTA);
    ck_assert_int_le(IX_MAX_SMEM, SM90_SMEM_PER_CTA);
    ck_assert_int_le(AT_MAX_SMEM, SM90_SMEM_PER_CTA);
    /* ix_sort's candidates (8 bytes each, K rounded up to a power of two) use the default limit */
    ck_assert(is_pow2(IX_MAX_K));
    ck_assert_int_le(IX_MAX_K * 8, DEFAULT_SMEM);
    /* the query tile alone must leave room in the score CTA */
    ck_assert_int_lt(IX_QTILE_BYTES, IX_MAX_SMEM);
    /* the few-token bf16 GEMM: red and every warp's ring, up to GP_MAX_N tokens (8 n-tiles) */
    ck_assert_int_le(GP_SMEM_BYTES(GP_MAX_N / 8), SM90_SMEM_PER_CTA);
    ck_assert_int_ge(GP_STAGES, 2);
}
END_TEST

/* ---------------------------------------------------------------- gemm */

START_TEST(gemm_tiles)
{
    /* one weight-scale row and one scale block per CTA and pipeline step */
    ck_assert_int_eq(GF_BM, GF_SCALE_BLOCK);
    ck_assert_int_eq(GF_BK, GF_SCALE_BLOCK);
    /* 8 warps: GF_THREADS / 32 / GF_WN along rows of 64, GF_WN along tokens of 32 */
    ck_assert_int_eq(GF_THREADS / 32 / GF_WN * 64, GF_BM);
    ck_assert_int_eq(GF_WN * 32, GF_BN);
    /* loads: 8 threads of 16 codes per 128-code row, 4 parts of GF_THREADS / 8 rows per operand */
    ck_assert_int_eq(8 * 16, GF_BK);
    ck_assert_int_eq(4 * (GF_THREADS / 8), GF_BM);
    ck_assert_int_eq(4 * (GF_THREADS / 8), GF_BN);
    ck_assert_int_eq(GF_BK / 16 / 2, 4); /* part kk/2 is stored at every even mma step kk */
    ck_assert_int_ge(GF_THREADS, GF_BN); /* thread tid < GF_BN loads token tid's scale */
    ck_assert_int_eq(GF_TILE_BYTES, GF_BN * GF_BK * 2);
    /* sliced K: a CTA tile inside one weight-scale block, whole 16-token halves of np */
    ck_assert_int_eq(GS_THREADS, GS_WARPS * 32);
    ck_assert_int_eq(GF_SCALE_BLOCK % (GS_MT_WIDE * 16), 0);
    ck_assert_int_eq(GF_SCALE_BLOCK % (GS_MT_NARROW * 16), 0);
    ck_assert_int_eq(GF_NP_MULT % 8, 0);
    ck_assert_int_eq(GS_SMEM_BYTES(1, 1), GS_WARPS * 32 * 16);
    /* the recipe is one: activation blocks, weight blocks, GEMV blocks */
    ck_assert_int_eq(AQ_BLOCK, GF_SCALE_BLOCK);
    ck_assert_int_eq(GV_SCALE_BLOCK, GF_SCALE_BLOCK);
    ck_assert_int_eq(AQ_ROW_MULT, GF_NP_MULT);
}
END_TEST

/* Every (row, chunk) of a tile has its own 16 bytes; ldmatrix phases and the f16 stores hit 8
 * different bank groups; the precomputed offsets equal the swizzle of the logical fragments. */
START_TEST(gemm_swizzle)
{
    static unsigned char seen[GF_TILE_BYTES / 16];
    memset(seen, 0, sizeof seen);
    for (int row = 0; row < GF_BM; row++)
        for (int chunk = 0; chunk < 16; chunk++) {
            int off = gf_tile_off(row, chunk);
            ck_assert(off >= 0 && off < GF_TILE_BYTES && off % 16 == 0);
            ck_assert_msg(!seen[off / 16]++, "row %d chunk %d collides", row, chunk);
        }
    int wm_n = GF_THREADS / 32 / GF_WN;
    for (int kk = 0; kk < GF_BK / 16; kk++)
        for (int lane = 0; lane < 32; lane++) {
            int m = lane >> 3; /* ldmatrix matrix of this lane, in mma.m16n8k16 order */
            ck_assert_int_eq(gf_lda_row(lane), (lane & 7) + (m & 1) * 8);
            ck_assert_int_eq(gf_lda_chunk(lane, kk), 2 * kk + (m >> 1));
            ck_assert_int_eq(gf_ldb_row(lane), (lane & 7) + (m >> 1) * 8);
            ck_assert_int_eq(gf_ldb_chunk(lane, kk), 2 * kk + (m & 1));
            for (int wm = 0; wm < wm_n; wm++)
                for (int mi = 0; mi < 4; mi++)
                    ck_assert_uint_eq(gf_lda_off(wm, mi, lane, kk),
                                      (uint32_t)gf_tile_off(wm * 64 + mi * 16 + gf_lda_row(lane),
                                                            gf_lda_chunk(lane, kk)));
            for (int wn = 0; wn < GF_WN; wn++)
                for (int p = 0; p < 2; p++)
                    ck_assert_uint_eq(gf_ldb_off(wn, p, lane, kk),
                                      (uint32_t)gf_tile_off(wn * 32 + p * 16 + gf_ldb_row(lane),
                                                            gf_ldb_chunk(lane, kk)));
        }
    /* ldmatrix: the 8 row addresses of one matrix in 8 different 16-byte bank groups */
    for (int kk = 0; kk < GF_BK / 16; kk++)
        for (int m = 0; m < 4; m++) {
            for (int wm = 0; wm < wm_n; wm++)
                for (int mi = 0; mi < 4; mi++) {
                    unsigned banks = 0;
                    for (int l = 8 * m; l < 8 * m + 8; l++) banks |= 1u << ((gf_lda_off(wm, mi, l, kk) >> 4) & 7);
                    ck_assert_uint_eq(banks, 0xff);
                }
            for (int wn = 0; wn < GF_WN; wn++)
                for (int p = 0; p < 2; p++) {
                    unsigned banks = 0;
                    for (int l = 8 * m; l < 8 * m + 8; l++) banks |= 1u << ((gf_ldb_off(wn, p, l, kk) >> 4) & 7);
                    ck_assert_uint_eq(banks, 0xff);
                }
        }
    /* stores: each thread's 16 codes become logical chunks 2*c8 and 2*c8+1 of its rows; the whole
     * tile is written once; an 8-thread phase (one STS.128) hits 8 bank groups */
    memset(seen, 0, sizeof seen);
    for (int j = 0; j < 4; j++)
        for (int half = 0; half < 2; half++)
            for (int t0 = 0; t0 < GF_THREADS; t0 += 8) {
                unsigned banks = 0;
                for (int tid = t0; tid < t0 + 8; tid++) {
                    int row = gf_ld_row(tid, j), c8 = gf_ld_c8(tid), chunk = gf_st_chunk(c8, half);
                    ck_assert(chunk == 2 * c8 || chunk == 2 * c8 + 1);
                    ck_assert_int_ne(gf_st_chunk(c8, 0), gf_st_chunk(c8, 1));
                    int off = gf_tile_off(row, chunk);
                    ck_assert_msg(!seen[off / 16]++, "store of row %d chunk %d twice", row, chunk);
                    banks |= 1u << ((off >> 4) & 7);
                }
                ck_assert_uint_eq(banks, 0xff);
            }
    for (size_t i = 0; i < sizeof seen; i++) ck_assert_int_eq(seen[i], 1);
    /* bf16 copies (gemm_bf16.cu): every (row, chunk) once, in k order, 16 threads per 256-byte row */
    memset(seen, 0, sizeof seen);
    for (int j = 0; j < GB_LD_PARTS; j++)
        for (int tid = 0; tid < GF_THREADS; tid++) {
            int row = gb_ld_row(tid, j), chunk = gb_ld_chunk(tid);
            ck_assert(row >= 0 && row < GF_BM && row < GF_BN && chunk >= 0 && chunk < 16);
            ck_assert_int_eq(gb_ld_row(tid & ~15, j), row);
            int off = gf_tile_off(row, chunk);
            ck_assert_msg(!seen[off / 16]++, "bf16 copy of row %d chunk %d twice", row, chunk);
        }
    for (size_t i = 0; i < sizeof seen; i++) ck_assert_int_eq(seen[i], 1);
}
END_TEST

/* Four e4m3 codes -> f16 values times 2^-8, exactly, for every code but the two NaNs. */
START_TEST(gemm_e4m3_to_f16)
{
    for (int c = 0; c < 256; c++)
        for (int pos = 0; pos < 4; pos++) {
            uint8_t b[4];
            for (int i = 0; i < 4; i++) b[i] = (uint8_t)(c * 37 + i * 101 + pos * 13);
            b[pos] = (uint8_t)c;
            uint32_t q = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            uint32_t lo, hi;
            gf_e4m3x4_to_f16x2(q, &lo, &hi);
            uint16_t h[4] = {(uint16_t)lo, (uint16_t)hi, (uint16_t)(lo >> 16), (uint16_t)(hi >> 16)};
            for (int i = 0; i < 4; i++) {
                if ((b[i] & 0x7f) == 0x7f) continue; /* NaN: act_quant and checkpoints make none */
                double want = ldexp((double)hci_e4m3_value(b[i]), -8);
                ck_assert_msg(f16_value(h[i]) == want, "code 0x%02x: f16 0x%04x, want %g", b[i], h[i], want);
                ck_assert_int_eq(h[i] >> 15, b[i] >> 7); /* the sign of zeros too */
            }
            uint32_t lo2, hi2; /* the wgmma kernel's form: the same bits, NaN codes included */
            gw_e4m3x4_to_f16x2(q, &lo2, &hi2);
            ck_assert_uint_eq(lo2, lo);
            ck_assert_uint_eq(hi2, hi);
        }
}
END_TEST

/* The output maps cover every (row, token) of a tile exactly once; the raster every tile once. */
START_TEST(gemm_maps)
{
    static unsigned char hit[GF_BM][GF_BN];
    memset(hit, 0, sizeof hit);
    for (int w = 0; w < GF_THREADS / 32; w++)
        for (int mi = 0; mi < 4; mi++)
            for (int ni = 0; ni < 4; ni++)
                for (int lane = 0; lane < 32; lane++)
                    for (int c = 0; c < 4; c++) {
                        int row, tok;
                        gf_out(w / GF_WN, w % GF_WN, mi, ni, lane, c, &row, &tok);
                        ck_assert(row >= 0 && row < GF_BM && tok >= 0 && tok < GF_BN);
                        ck_assert(!hit[row][tok]++);
                    }
    const int mts[3] = {GS_MT_WIDE, GS_MT_NARROW, 1};
    for (int k = 0; k < 3; k++) {
        int MT = mts[k], NT = GS_NT;
        memset(hit, 0, sizeof hit);
        for (int f = 0; f < MT * NT * 32; f++)
            for (int c = 0; c < 4; c++) {
                int row, tok;
                gs_elem(NT, f, c, &row, &tok);
                ck_assert(row >= 0 && row < MT * 16 && tok >= 0 && tok < NT * 8);
                ck_assert(!hit[row][tok]++);
            }
    }
    for (int tm = 1; tm <= 3 * GF_GROUP_M + 3; tm++)
        for (int tn = 1; tn <= 9; tn++) {
            unsigned char *seen = calloc((size_t)tm * tn, 1);
            for (int pid = 0; pid < tm * tn; pid++) {
                int mt, nt;
                gf_raster(pid, tm, tn, &mt, &nt);
                ck_assert(mt >= 0 && mt < tm && nt >= 0 && nt < tn);
                ck_assert(!seen[mt * tn + nt]++);
            }
            free(seen);
        }
}
END_TEST

/* The wgmma kernel (gemm_fp8_wgmma.cu): shared-memory plan; the producer's loads and f16 stores
 * cover each operand tile once, conflict-free, at the addresses from which wgmma's 128B swizzle
 * reads the big kernel's logical k order; the accumulator and output-staging maps. */
START_TEST(gemm_wgmma_maps)
{
    static const int bns[4] = {128, 64, 32, 16};
    static unsigned char seen[(GW_BM + 128) * 256 / 2];
    ck_assert_int_eq(GW_THREADS, 3 * 128);
    ck_assert_int_eq(GW_BM, GF_SCALE_BLOCK);
    ck_assert_int_eq(GW_PROD_THREADS, 128);
    for (int b = 0; b < 4; b++) {
        const int BN = bns[b], NL = GW_LOADS(BN);
        /* budget: one CTA per SM; tiles on 1024-byte boundaries (the swizzle), staging on 16 */
        ck_assert_int_le(GW_SMEM_BYTES(BN), SM90_SMEM_PER_CTA);
        ck_assert_int_eq(GW_STAGE_BYTES(BN) % 1024, 0);
        ck_assert_int_eq(GW_HALF_BYTES(GW_BM) % 1024, 0);
        ck_assert_int_eq(GW_HALF_BYTES(BN) % 1024, 0);
        ck_assert_int_eq(GW_OFF_EPI(BN) % 16, 0);
        ck_assert_int_eq(GW_STAGE_BYTES(BN), 2 * GW_HALF_BYTES(GW_BM) + 2 * GW_HALF_BYTES(BN));
        ck_assert_int_ge(GW_PROD_THREADS, BN); /* thread pt < BN writes token pt's scale */
        ck_assert_int_eq(BN % 16, 0);
        /* producer: each (row, 16-byte f16 chunk) of both tiles stored once; an 8-thread phase of
         * an STS.128 in 8 bank groups; a warp's load covers 4 whole 128-byte code rows */
        memset(seen, 0, sizeof seen);
        for (int j = 0; j < NL; j++) {
            const int rows = j < 8 ? GW_BM : BN, base = j < 8 ? 0 : 2 * GW_HALF_BYTES(GW_BM);
            for (int half = 0; half < 2; half++)
                for (int p0 = 0; p0 < GW_PROD_THREADS; p0 += 8) {
                    unsigned banks = 0;
                    for (int pt = p0; pt < p0 + 8; pt++) {
                        const int row = gw_ld_row(pt, j < 8 ? j : j - 8), c8 = gw_ld_c8(pt);
                        ck_assert(row >= 0 && row < rows);
                        ck_assert_int_eq(gw_ld_row(p0, j < 8 ? j : j - 8), row);
                        const int off = base + gw_sw_off(rows, row, gf_st_chunk(c8, half));
                        ck_assert(off >= 0 && off < GW_STAGE_BYTES(BN) && off % 16 == 0);
                        ck_assert_msg(!seen[off / 16]++, "BN %d: chunk at %d stored twice", BN, off);
                        banks |= 1u << ((off >> 4) & 7);
                    }
                    ck_assert_uint_eq(banks, 0xff);
                }
        }
        for (int i = 0; i < GW_STAGE_BYTES(BN) / 16; i++) ck_assert_int_eq(seen[i], 1);
        /* wgmma's view (K-major, 128B swizzle = address bits 4-6 XOR bits 7-9 of the 1024-aligned
         * tile): element e of k16 step kk of row r, at byte (kk % 4) * 32 + 2e of the row in
         * k-half kk / 4, is logical chunk 2 kk + e / 8, position e % 8 - the f16 that the big
         * kernel's ldmatrix feeds its mma step kk (gf_lda_chunk / gf_ldb_chunk) */
        for (int t = 0; t < 2; t++) {
            const int rows = t ? BN : GW_BM;
            for (int r = 0; r < rows; r++)
                for (int kk = 0; kk < GF_BK / 16; kk++)
                    for (int e = 0; e < 16; e++) {
                        const int lin = (kk >> 2) * GW_HALF_BYTES(rows) + r * 128 + (kk & 3) * 32 + 2 * e;
                        const int phys = lin ^ (((lin >> 7) & 7) << 4);
                        ck_assert_int_eq(phys, gw_sw_off(rows, r, 2 * kk + (e >> 3)) + 2 * (e & 7));
                    }
        }
        /* accumulators: each (row, token) of a consumer's 64 x BN tile once, rows g and g + 8 */
        static unsigned char hit[64][128];
        memset(hit, 0, sizeof hit);
        for (int wi = 0; wi < 4; wi++)
            for (int lane = 0; lane < 32; lane++)
                for (int x = 0; x < BN / 2; x++) {
                    int row, tok;
                    gw_out(wi, lane, x, &row, &tok);
                    ck_assert(row >= 0 && row < 64 && tok >= 0 && tok < BN);
                    ck_assert(!hit[row][tok]++);
                    /* the layout attend_wgmma.cu and index_wgmma.cu read (d[4j + 2h + c]) */
                    ck_assert_int_eq(row, 16 * wi + lane / 4 + 8 * ((x / 2) % 2));
                    ck_assert_int_eq(tok, 8 * (x / 4) + 2 * (lane % 4) + x % 2);
                }
        /* staging: each (token, row) once in BN x 128 bytes; one 2-byte store instruction (fixed x,
         * a warp's 32 lanes) in 32 distinct words or two halves of one; 8 threads reading one
         * token's 8 chunks in 8 bank groups */
        static unsigned char used[128 * 128];
        memset(used, 0, sizeof used);
        for (int tok = 0; tok < BN; tok++)
            for (int row = 0; row < 64; row++) {
                const int off = gw_epi_off(tok, row);
                ck_assert(off >= 0 && off < GW_EPI_BYTES(BN) && off % 2 == 0);
                ck_assert(!used[off / 2]++);
                ck_assert_int_eq(off - gw_epi_off(tok, row & ~7), 2 * (row & 7)); /* chunks of 8 rows */
            }
        for (int wi = 0; wi < 4; wi++)
            for (int x = 0; x < BN / 2; x++) {
                int word_lane[32];
                for (int lane = 0; lane < 32; lane++) {
                    int row, tok;
                    gw_out(wi, lane, x, &row, &tok);
                    word_lane[lane] = gw_epi_off(tok, row) / 4;
                }
                for (int l1 = 0; l1 < 32; l1++)
                    for (int l2 = l1 + 1; l2 < 32; l2++)
                        if (word_lane[l1] % 32 == word_lane[l2] % 32)
                            ck_assert_msg(word_lane[l1] == word_lane[l2], "BN %d: staging store bank conflict", BN);
            }
        for (int it0 = 0; it0 < BN * 8; it0 += 8) {
            unsigned banks = 0;
            for (int it = it0; it < it0 + 8; it++) {
                const int tok = it >> 3, q = it & 7;
                ck_assert_int_eq(tok, it0 >> 3);
                banks |= 1u << ((gw_epi_off(tok, 8 * q) >> 4) & 7);
            }
            ck_assert_uint_eq(banks, 0xff);
        }
    }
}
END_TEST

/* The native FP8 kernel (gemm_fp8_native.cu): shared-memory plan (TMA destinations on the
 * boundaries the swizzle and the bulk copies need, one CTA per SM) and the epilogue's stmatrix
 * .trans map: accumulator x of each lane lands at gw_epi_off of its (token, row), once. */
START_TEST(gemm_native_plan)
{
    static const int bns[4] = {128, 64, 32, 16};
    ck_assert_int_eq(GN_BM, GF_SCALE_BLOCK);
    ck_assert_int_eq(GN_BK, GF_SCALE_BLOCK);
    ck_assert_int_eq(GN_THREADS, 3 * 128);
    ck_assert_int_eq(GN_CONS_THREADS, 2 * 128);
    for (int b = 0; b < 4; b++) {
        const int BN = bns[b], S = GN_STAGES(BN);
        ck_assert_int_le(GN_SMEM_BYTES(BN), SM90_SMEM_PER_CTA);
        ck_assert_int_ge(S, 4);
        ck_assert_int_eq(GN_A_BYTES % 1024, 0); /* 128B swizzle: 1024-byte tiles, halves for the multicast */
        ck_assert_int_eq((GN_A_BYTES / 2) % 1024, 0);
        ck_assert_int_eq(GN_B_BYTES(BN) % 1024, 0);
        ck_assert_int_eq(GN_OFF_B(BN) % 1024, 0);
        ck_assert_int_eq(GN_XS_BYTES(BN) % 128, 0);
        ck_assert_int_ge(GN_XS_BYTES(BN), BN * 4);
        ck_assert_int_eq(GN_OFF_XS(BN) % 128, 0);
        ck_assert_int_ge(GN_OFF_WS(BN), GN_OFF_XS(BN) + S * BN * 4);
        ck_assert_int_eq(GN_OFF_BAR(BN) % 8, 0);
        ck_assert_int_ge(GN_OFF_BAR(BN), GN_OFF_WS(BN) + 4 * S);
        ck_assert_int_eq(GN_OFF_EPI(BN) % 128, 0);
        ck_assert_int_ge(GN_OFF_EPI(BN), GN_OFF_BAR(BN) + 16 * S);
        ck_assert_int_eq(GN_EPI_BYTES(BN), BN * 64 * 2);
        /* epilogue: stmatrix step p, matrix m = 2 (j % 2) + h of accumulator x = 4j + 2h + c is
         * stored by lane 8m + (2 (lane % 4) + c) at its address (gn_consume's stsm0 + p * 16 * 128)
         * plus 2 (lane / 4) */
        static unsigned char hit[128][64];
        memset(hit, 0, sizeof hit);
        for (int wi = 0; wi < 4; wi++)
            for (int lane = 0; lane < 32; lane++)
                for (int x = 0; x < BN / 2; x++) {
                    int row, tok;
                    gw_out(wi, lane, x, &row, &tok);
                    const int j = x / 4, h = (x / 2) % 2, c = x % 2, p = j / 2, m = 2 * (j % 2) + h;
                    const int l = 8 * m + 2 * (lane % 4) + c; /* the lane giving the address */
                    const int addr = gw_epi_off(8 * (l >> 4) + (l & 7), 8 * (2 * wi + ((l >> 3) & 1))) + p * 16 * 128;
                    ck_assert_int_eq(addr + 2 * (lane / 4), gw_epi_off(tok, row));
                    ck_assert(gw_epi_off(tok, row) < GN_EPI_BYTES(BN));
                    ck_assert(!hit[tok][row]++);
                }
        for (int tok = 0; tok < BN; tok++)
            for (int row = 0; row < 64; row++) ck_assert_int_eq(hit[tok][row], 1);
    }
}
END_TEST

/* ---------------------------------------------------------------- gemv, quant, qkv, compress, io */

START_TEST(gemv_quant_shapes)
{
    /* GEMV: a block is GV_LANES_PER_BLOCK lanes of one 16-byte load (16 codes) each, reduced by an
     * xor tree inside the group; a warp holds whole groups */
    ck_assert_int_eq(GV_SCALE_BLOCK, GV_LANES_PER_BLOCK * 16);
    ck_assert(is_pow2(GV_LANES_PER_BLOCK) && 32 % GV_LANES_PER_BLOCK == 0);
    ck_assert_int_eq(GV_BLOCKS_PER_STEP * GV_LANES_PER_BLOCK, 32);
    ck_assert_int_ge(GV_MAX_N, 1);
    /* fast GEMV: two mma steps of k 32 per 64-byte span cover it once, and every logical k of
     * lane t's registers lies in the 16 bytes that lane t loaded */
    int hit[64] = {0};
    for (int step = 0; step < 2; step++)
        for (int k = 0; k < 32; k++) {
            int b = gt_span_byte(step, k), t = (k & 15) >> 2;
            ck_assert(b >= 16 * t && b < 16 * t + 16);
            hit[b]++;
        }
    for (int b = 0; b < 64; b++) ck_assert_int_eq(hit[b], 1);
    ck_assert_int_eq(GT_TOK * GT_MAX_MT, GT_MAX_N);
    /* the bf16 map: two k-16 steps per 32-element span, lane t's elements in its own 8 */
    int hit16[GT_BF16_SPAN] = {0};
    for (int step = 0; step < 2; step++)
        for (int k = 0; k < 16; k++) {
            int e = gt_span_elem(step, k), t = (k & 7) >> 1;
            ck_assert(e >= 8 * t && e < 8 * t + 8);
            hit16[e]++;
        }
    for (int e = 0; e < GT_BF16_SPAN; e++) ck_assert_int_eq(hit16[e], 1);
    ck_assert_int_eq(GV_SCALE_BLOCK % GT_ROWS, 0); /* a CTA's rows share one weight-scale row */
    /* act_quant: a warp per (token, block), one 32-bit word of codes per lane */
    ck_assert_int_eq(AQ_PER_LANE, 4);
    ck_assert_int_eq(AQ_BLOCK, 32 * AQ_PER_LANE);
    ck_assert_int_eq(AQ_THREADS % 32, 0);
}
END_TEST

/* The fast GEMVs' teams (config.h): member j of a team of S warps takes the k-units j + S i and
 * keeps unit (j + S i)'s residue class % GT_CLASSES in accumulator i % (GT_CLASSES / S); every
 * unit once, each class's units in k order; and gt_pick_split gives a team that exists (a
 * power of two, accumulators within 8 float4), the largest whose grid is resident at once. */
START_TEST(gemv_teams)
{
    for (int S = 1; S <= GT_CLASSES; S *= 2) {
        const int C = GT_CLASSES / S, nb = 77;
        int seen[77] = {0}, last[GT_CLASSES];
        for (int c = 0; c < GT_CLASSES; c++) last[c] = -1;
        for (int j = 0; j < S; j++)
            for (int i = 0; j + S * i < nb; i++) {
                const int kb = j + S * i, c = j + S * (i % C);
                ck_assert_int_eq(c, kb % GT_CLASSES);
                ck_assert_int_gt(kb, last[c]);
                last[c] = kb, seen[kb]++;
            }
        for (int kb = 0; kb < nb; kb++) ck_assert_int_eq(seen[kb], 1);
        ck_assert_int_eq(GT_BATCH_FP8 % C, 0); /* a batch holds whole turns of the classes */
        ck_assert_int_eq(GT_BATCH_BF16 % C, 0);
    }
    for (int mt = 1; mt <= GT_MAX_MT; mt++)
        for (int groups = 1; groups <= 8192; groups *= 2)
            for (int sms = 1; sms <= 264; sms += 131) {
                const int S = gt_pick_split(groups, mt, sms);
                ck_assert(is_pow2(S) && S <= GT_CLASSES);
                ck_assert_int_le(GT_CLASSES / S * mt, 8);
                /* the teams' class sums (tc.cuh, gt_team_smem) within static shared memory */
                ck_assert_int_le(GT_WARPS / S * GT_CLASSES * mt * 32 * 16, DEFAULT_SMEM);
                const int lo = mt == 1 ? 1 : mt == 2 ? 2 : 4;
                ck_assert(S >= lo);
                ck_assert(S == lo || (long)groups * S <= (long)GT_WARPS_PER_SM * sms); /* one wave */
                ck_assert(S == GT_CLASSES || (long)groups * S * 2 > (long)GT_WARPS_PER_SM * sms); /* the largest */
            }
    /* V4-Flash decode on 132 SMs: wq_b one warp per row group, wo_b four, the indexer's wq_b and
     * wo_a two, wq_a and wkv eight */
    ck_assert_int_eq(gt_pick_split(32768 / 8, 1, 132), 1);
    ck_assert_int_eq(gt_pick_split(4096 / 8, 1, 132), 4);
    ck_assert_int_eq(gt_pick_split(8192 / 8, 1, 132), 2);
    ck_assert_int_eq(gt_pick_split(1024 / 8, 1, 132), 8);
    ck_assert_int_eq(gt_pick_split(512 / 8, 4, 132), 8);
    ck_assert_int_eq(gt_pick_split(32768 / 8, 4, 132), 4);
}
END_TEST

/* The few-token bf16 GEMM's stage (config.h): the 32 lanes' 8 copies fill each 16-byte chunk of
 * the 16 x 256-byte stage once; an ldmatrix.x4 of step s, simulated, gives lane (g, t) the A
 * fragment of mma.m16n8k16 (rows g, g + 8, k 16 s + 2t (+1), then + 8), and each of its four
 * 8-lane phases touches 8 different bank quads. */
START_TEST(gemm_bf16_few_maps)
{
    int owner[GP_STAGE_BYTES / 16];
    for (int i = 0; i < GP_STAGE_BYTES / 16; i++) owner[i] = -1;
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < 8; i++) {
            const int r = gp_copy_row(lane, i), c = gp_copy_chunk(lane), off = gp_stage_off(r, c);
            ck_assert(r >= 0 && r < 16 && c >= 0 && c < 16 && off % 16 == 0 && off < GP_STAGE_BYTES);
            ck_assert_int_eq(owner[off / 16], -1);
            owner[off / 16] = r * 16 + c; /* (row, chunk) whose data lands there */
        }
    for (int step = 0; step < GF_BK / 16; step++) {
        int addr[32];
        for (int lane = 0; lane < 32; lane++) addr[lane] = gp_stage_off(gp_ldsm_row(lane), gp_ldsm_chunk(lane, step));
        for (int m = 0; m < 4; m++) {
            int quads = 0;
            for (int l = 8 * m; l < 8 * m + 8; l++) quads |= 1 << ((addr[l] / 16) % 8);
            ck_assert_int_eq(quads, 0xff);
        }
        /* register m of lane l: row l / 4 of matrix m, elements 2 (l % 4), + 1 of its 8 */
        for (int lane = 0; lane < 32; lane++)
            for (int m = 0; m < 4; m++) {
                const int src = owner[addr[8 * m + lane / 4] / 16]; /* the (row, chunk) stored there */
                const int row = src / 16, k = (src % 16) * 8 + 2 * (lane % 4) - 16 * step;
                const int g = lane / 4, t = lane % 4;
                ck_assert_int_eq(row, g + (m & 1) * 8);
                ck_assert_int_eq(k, 2 * t + (m >> 1) * 8);
            }
    }
}
END_TEST

/* ---------------------------------------------------------------- index */

START_TEST(index_limits)
{
    ck_assert_int_eq(IX_TILE, HCI_PAGE_ENTRIES); /* a score tile is one cache page: pages[tile] */
    ck_assert_int_eq(IX_TILE * 4 % IX_THREADS, 0); /* bf16 tile decode: uniform loop (4-lane shuffles) */
    ck_assert_int_eq(IX_SEL_THREADS, 256);         /* ix_find_bucket: a thread per histogram bin */
    ck_assert_int_eq(IX_SEG, IX_SEL_THREADS * 8);
    ck_assert_int_eq(IX_SEG % IX_TILE, 0);         /* 16-byte loads of 8 keys from 64-key rows */
    ck_assert_int_lt(IX_SEG, 1 << 16);             /* per-segment counts in 16-bit halves */
    ck_assert_int_ge(IX_TS, IX_TILE);
    ck_assert_int_eq(IX_TS % 2, 0);                /* head terms stored in pairs (32-bit) */
    ck_assert_int_ge(IX_PREP_MAX_BLOCKS, IX_MAX_ROW_ELEMS / 32);
    /* the prepared row (int8 mantissas, block scales, head summaries) of every accepted IH, ID */
    for (int IH = 1; IH <= IX_MAX_HEADS; IH++)
        for (int ID = 32; (int64_t)IH * ID <= IX_MAX_ROW_ELEMS; ID += 32) {
            size_t b = up256((size_t)IH * ID + (size_t)IH * (ID / 32) * 4 + (size_t)IH * 4);
            ck_assert_msg(b <= IX_QPREP_MAX, "IH %d ID %d: %zu prepared bytes", IH, ID, b);
        }
    /* the IMMA bias: 1.5 * 2^23 + N read back exactly for every block dot N */
    ck_assert_float_eq(f32_bits(IX_BIAS_BITS), IX_BIAS_VAL);
    ck_assert_int_lt(32 * 15 * 15, 1 << 22);
    for (int N = -(32 * 15 * 15); N <= 32 * 15 * 15; N++)
        ck_assert_float_eq(f32_bits((uint32_t)(IX_BIAS_BITS + N)) - IX_BIAS_VAL, (float)N);
}
END_TEST

/* ix_derive32 / ix_scan8 + ix_conv8 split FP4-grid bf16 blocks into m * 2^u exactly, and refuse
 * what is not on the grid. */
START_TEST(index_derive)
{
    uint64_t seed = 1;
    for (int trial = 0; trial < 4000; trial++) {
        uint16_t v[32];
        int s = (int)(lcg(&seed) % 200) - 120, zero = trial % 50 == 0;
        for (int i = 0; i < 32; i++) {
            float x = zero ? 0.0f : ldexpf(hci_e2m1_value((uint8_t)(lcg(&seed) & 15)), s);
            v[i] = hci_bf16_from_f32(x);
            ck_assert_float_eq(hci_f32_from_bf16(v[i]), x);
        }
        int bad_case = trial % 7 == 3 && !zero;
        if (bad_case) v[lcg(&seed) & 31] = (uint16_t)(hci_bf16_from_f32(ldexpf(1.0f, s + 2)) | 1); /* off grid */
        uint32_t m[8];
        int u, st = ix_derive32(v, m, &u);
        int any = 0;
        for (int i = 0; i < 32; i++) any |= (v[i] & 0x7fff) != 0;
        if (bad_case) {
            ck_assert_int_eq(st, IX_BAD);
        } else {
            ck_assert_int_eq(st, any ? IX_OK : IX_ZERO);
            for (int i = 0; i < 32; i++) {
                int mi = (int8_t)(m[i >> 2] >> (8 * (i & 3)));
                ck_assert_int_le(abs(mi), 15);
                ck_assert_msg(ldexp(mi, u) == (double)hci_f32_from_bf16(v[i]), "trial %d element %d", trial, i);
            }
        }
        /* the 4-lane version: max / or over the parts, then the same words */
        int emax = 0, bad = 0;
        uint32_t x[4][4];
        for (int p = 0; p < 4; p++) {
            for (int w = 0; w < 4; w++) x[p][w] = v[8 * p + 2 * w] | (uint32_t)v[8 * p + 2 * w + 1] << 16;
            int e, b;
            ix_scan8(x[p], &e, &b);
            emax = e > emax ? e : emax, bad |= b;
        }
        int ok = 1;
        for (int p = 0; p < 4; p++) {
            uint32_t w0, w1;
            ok &= ix_conv8(x[p], emax, &w0, &w1);
            if (st == IX_OK) {
                ck_assert_uint_eq(w0, m[2 * p]);
                ck_assert_uint_eq(w1, m[2 * p + 1]);
            }
        }
        ck_assert_int_eq(bad || !ok ? IX_BAD : (emax == 0 ? IX_ZERO : IX_OK), st);
    }
    /* a subnormal is refused */
    uint16_t sub[32] = {0};
    sub[5] = 0x0001;
    uint32_t m[8];
    int u;
    ck_assert_int_eq(ix_derive32(sub, m, &u), IX_BAD);
}
END_TEST

/* FP4 keys: every nibble pattern decodes to 2 * e2m1; a block with its ue8m0 byte to m * 2^u. */
START_TEST(index_fp4)
{
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t r = ix_fp4x4_to_s8(h);
        for (int i = 0; i < 4; i++)
            ck_assert_int_eq((int8_t)(r >> (8 * i)), (int)(2.0f * hci_e2m1_value((uint8_t)((h >> (4 * i)) & 15))));
    }
    uint64_t seed = 7;
    for (int byte = 0; byte < 256; byte++)
        for (int trial = 0; trial < 8; trial++) {
            uint32_t w[4];
            for (int i = 0; i < 4; i++) w[i] = trial == 0 ? 0x76543210u + 0x88888888u * (i & 1) : lcg(&seed);
            if (trial == 1) w[0] = w[1] = w[2] = w[3] = 0x88888888u; /* all -0 */
            uint32_t m[8];
            int u, st = ix_fp4_block(w, byte, m, &u);
            if (byte == 255) {
                ck_assert_int_eq(st, IX_BAD);
                continue;
            }
            int nz = 0;
            for (int i = 0; i < 32; i++) nz |= (w[i / 8] >> (4 * (i % 8)) & 7) != 0;
            ck_assert_int_eq(st, byte == 0 || !nz ? IX_ZERO : IX_OK);
            for (int i = 0; i < 32; i++) {
                int mi = (int8_t)(m[i >> 2] >> (8 * (i & 3)));
                double want = st == IX_ZERO ? 0.0
                                            : ldexp(hci_e2m1_value((uint8_t)(w[i / 8] >> (4 * (i % 8)) & 15)), byte - 127);
                ck_assert(ldexp(mi, u) == want);
            }
        }
}
END_TEST

static int cmp_bf16(const void *a, const void *b)
{
    float x = hci_f32_from_bf16(*(const uint16_t *)a), y = hci_f32_from_bf16(*(const uint16_t *)b);
    return x < y ? -1 : x > y;
}

/* The 16-bit score keys order as the scores do. */
START_TEST(index_key_order)
{
    static uint16_t v[65536];
    int n = 0;
    for (uint32_t b = 0; b < 65536; b++)
        if ((b & 0x7f80) != 0x7f80 || (b & 0x7f) == 0) v[n++] = (uint16_t)b; /* no NaN */
    qsort(v, (size_t)n, sizeof v[0], cmp_bf16);
    for (int i = 1; i < n; i++) {
        float a = hci_f32_from_bf16(v[i - 1]), b = hci_f32_from_bf16(v[i]);
        if (a < b) ck_assert_msg(ix_key16(v[i - 1]) < ix_key16(v[i]), "0x%04x 0x%04x", v[i - 1], v[i]);
    }
}
END_TEST

/* ix_pair_fast: when it accepts a pair, the fp32 combine of the block sums (fma of N_b with the
 * exact 2^(uq_b + uk_b), as ix_mma_item does) is the exact dot. */
START_TEST(index_fast_path_exact)
{
    uint64_t seed = 3;
    int accepted = 0;
    for (int trial = 0; trial < 200000; trial++) {
        int nb = 1 + (int)(lcg(&seed) % 32), lg = 0;
        while ((1 << lg) < nb) lg++;
        int q0 = (int)(lcg(&seed) % 254) - 129, k0 = (int)(lcg(&seed) % 254) - 129;
        int qr = (int)(lcg(&seed) % 14), kr = (int)(lcg(&seed) % 14);
        int uq[32], uk[32], N[32], qmin = 1000, qmax = -1000, kmin = 1000, kmax = -1000;
        for (int b = 0; b < nb; b++) {
            uq[b] = q0 + (int)(lcg(&seed) % (unsigned)(qr + 1));
            uk[b] = k0 + (int)(lcg(&seed) % (unsigned)(kr + 1));
            if (uq[b] > 124) uq[b] = 124;
            if (uk[b] > 126) uk[b] = 126;
            N[b] = (int)(lcg(&seed) % 14401) - 7200;
            qmin = uq[b] < qmin ? uq[b] : qmin, qmax = uq[b] > qmax ? uq[b] : qmax;
            kmin = uk[b] < kmin ? uk[b] : kmin, kmax = uk[b] > kmax ? uk[b] : kmax;
        }
        if (!ix_pair_fast(ix_meta(0, qmin, qmax), ix_meta(0, kmin, kmax), lg)) continue;
        accepted++;
        float acc = 0.0f;
        double exact = 0.0;
        for (int b = 0; b < nb; b++) {
            float s = ix_pow2(uq[b]) * ix_pow2(uk[b]);
            ck_assert(ldexp(1.0, uq[b] + uk[b]) == (double)s);
            acc = fmaf((float)N[b], s, acc);
            exact += ldexp(N[b], uq[b] + uk[b]);
        }
        ck_assert_msg((double)acc == exact, "trial %d: %a vs %a", trial, (double)acc, exact);
    }
    ck_assert_int_gt(accepted, 1000);
    /* a bad block is never fast */
    ck_assert(!ix_pair_fast(ix_meta(1, 0, 0), ix_meta(0, 0, 0), 2));
}
END_TEST

/* The fast scores' arithmetic (index/config.h: ix_fast_qexp, ix_fast_terms2 and ix_fast_add2 in
 * the kernels' head order) against cpu_index.c's score, on random FP4-grid query heads and keys
 * (32-blocks a few binades apart, as after the Hadamard) and bf16 weights of either sign, taking
 * the tensor cores' fp32 dot of the e4m3 copies as the exact dot rounded to fp32: the copies are
 * exact, every head term is the reference's, and a score differs only where the fp32 head sum is
 * not the exact one. The folded form (IXF_FOLD_SCALES: s_q in the weights, s_k once per score)
 * gives the same bits. */
#define IXT_HEADS 64
#define IXT_DIM 128

/* The kernels' head sum: lane t adds heads 8n + 2t, 8n + 2t + 1 for n = 0, 1, ... in order, then
 * the 4 lanes by xor-shuffles: (l0 + l1) + (l2 + l3). terms[h / 2] holds heads h, h + 1. */
static float ixt_kernel_sum(const ix_terms2 *terms, int IH)
{
    float l[4];
    for (int t = 0; t < 4; t++) {
        l[t] = 0.0f;
        for (int n = 0; n < IH / 8; n++) l[t] = ix_fast_add2(l[t], terms[(8 * n + 2 * t) / 2]);
    }
    return (l[0] + l[1]) + (l[2] + l[3]);
}

/* ix_bf16_round_fadd (the indexer's bf16 rounding on the fp32 adder, option index_tcmix) against
 * hci_round_bf16, bit for bit: random normal values of either sign over the exponents the rule
 * covers, every tie (low 16 bits 0x8000, either parity), the values that round up into the next
 * binade, the largest and smallest normals it takes, and +0. */
START_TEST(index_bf16_round_fadd)
{
    uint64_t seed = 5;
    int checked = 0, bad = 0;
    uint32_t first_bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t e = 1 + (uint32_t)(lcg(&seed) % 237); /* biased exponents 1..237: 2^-126 .. 2^110 */
        uint32_t m = (uint32_t)(lcg(&seed) & 0x7FFFFFu);
        switch (i % 4) {
        case 1: m = (m & ~0xFFFFu) | 0x8000u; break; /* a tie */
        case 2: m = 0x7FFF8000u & 0x7FFFFFu; break;  /* rounds up into the next binade */
        default: break;
        }
        uint32_t u = (uint32_t)(lcg(&seed) & 1u) << 31 | e << 23 | m;
        float x = hci_f32_from_bits(u);
        uint32_t got = hci_bits_from_f32(ix_bf16_round_fadd(x)), want = hci_bits_from_f32(hci_round_bf16(x));
        if (got != want && !bad++) first_bad = u;
        checked++;
    }
    const float edge[] = {0.0f, ldexpf(1.0f, -126), ldexpf(1.0f, -18), ldexpf(1.0f, 110) * 1.99f, 448.0f * 448.0f * 128.0f};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        for (int sgn = 0; sgn < 2 - (i == 0); sgn++) {
            float x = sgn ? -edge[i] : edge[i];
            uint32_t got = hci_bits_from_f32(ix_bf16_round_fadd(x)), want = hci_bits_from_f32(hci_round_bf16(x));
            if (got != want && !bad++) first_bad = hci_bits_from_f32(x);
            checked++;
        }
    }
    printf("index_bf16_round_fadd: %d values, %d differ from hci_round_bf16\n", checked, bad);
    ck_assert_msg(bad == 0, "%d values round differently, the first 0x%08x", bad, (unsigned)first_bad);
}
END_TEST

START_TEST(index_fast_terms)
{
    uint64_t seed = 11;
    static float q[IXT_HEADS][IXT_DIM], qe[IXT_HEADS][IXT_DIM], k[IXT_DIM], ke[IXT_DIM];
    float sq[IXT_HEADS], w[IXT_HEADS], wq[IXT_HEADS]; /* w, wq: bf16 values */
    int pairs = 0, differ = 0, worst_ulps = 0, inexact = 0, bad_terms = 0, bad_folded = 0;
    /* (few assertions inside the loops: each is a message to the runner in fork mode) */
    for (int trial = 0; trial < 100; trial++) {
        /* one query: 64 heads (largest block exponent -6..1, the others up to 4 below), bf16
         * weights of either sign between 2^-12 and 1 */
        for (int h = 0; h < IXT_HEADS; h++) {
            int eh = (int)(lcg(&seed) % 8) - 6;
            float amax = 0.0f;
            for (int b = 0; b < IXT_DIM / 32; b++) {
                int eb = eh - (int)(lcg(&seed) % 5);
                for (int i = 32 * b; i < 32 * b + 32; i++) {
                    q[h][i] = ldexpf(hci_e2m1_value((uint8_t)(lcg(&seed) & 15)), eb);
                    amax = fabsf(q[h][i]) > amax ? fabsf(q[h][i]) : amax;
                }
            }
            /* ixf_prep: s_qh and the e4m3 copy (exact here), the weight with s_qh folded in */
            int e = ix_fast_qexp(amax);
            sq[h] = ix_pow2(e - 129);
            for (int i = 0; i < IXT_DIM; i++) {
                qe[h][i] = hci_e4m3_round(q[h][i] * ix_pow2(129 - e));
                inexact += qe[h][i] * sq[h] != q[h][i];
            }
            float wv = ldexpf((float)((int)(lcg(&seed) % 2001) - 1000) / 1000.0f, -(int)(lcg(&seed) % 12));
            w[h] = hci_round_bf16(wv);
            wq[h] = hci_round_bf16(w[h] * sq[h]);
        }
        for (int key = 0; key < 32; key++) {
            /* a key: ue8m0 block bytes within 5 of the largest (ixf_convert's exact byte permutes) */
            int bytes[IXT_DIM / 32], bmax = 0, b0 = 120 + (int)(lcg(&seed) % 10);
            for (int b = 0; b < IXT_DIM / 32; b++) {
                bytes[b] = b0 - (int)(lcg(&seed) % 6);
                bmax = bytes[b] > bmax ? bytes[b] : bmax;
            }
            float sk = ix_pow2(bmax - 127);
            for (int i = 0; i < IXT_DIM; i++) {
                float c = hci_e2m1_value((uint8_t)(lcg(&seed) & 15));
                k[i] = ldexpf(c, bytes[i / 32] - 127);
                ke[i] = ldexpf(c, bytes[i / 32] - bmax);
                inexact += hci_e4m3_round(ke[i]) != ke[i];
            }
            /* the reference (cpu_index.c) and the fast terms, head by head */
            double ref_sum = 0.0;
            ix_terms2 terms[IXT_HEADS / 2], folded[IXT_HEADS / 2];
            for (int h = 0; h < IXT_HEADS; h += 2) {
                float D[2], ref_term[2];
                for (int j = 0; j < 2; j++) {
                    double exact = 0.0, exact_e = 0.0;
                    for (int i = 0; i < IXT_DIM; i++) {
                        exact += (double)q[h + j][i] * k[i];
                        exact_e += (double)qe[h + j][i] * ke[i];
                    }
                    D[j] = (float)exact_e; /* the tensor cores' fp32 dot, taken as exact */
                    float d = hci_round_bf16((float)exact);
                    if (d < 0.0f) d = 0.0f;
                    ref_term[j] = hci_round_bf16(d * w[h + j]);
                    ref_sum += (double)ref_term[j];
                }
                terms[h / 2] = ix_fast_terms2(D[0], D[1], sq[h], sq[h + 1], sk, w[h], w[h + 1]);
                folded[h / 2] = ix_fast_terms2_folded(D[0], D[1], wq[h], wq[h + 1]);
                /* each term is the reference's */
                bad_terms += (terms[h / 2].t0 != ref_term[0]) + (terms[h / 2].t1 != ref_term[1]);
            }
            uint16_t ref = hci_bf16_from_f32((float)ref_sum);
            uint16_t fast = hci_bf16_from_f32(ixt_kernel_sum(terms, IXT_HEADS));
            bad_folded += hci_bf16_from_f32(ixt_kernel_sum(folded, IXT_HEADS) * sk) != fast;
            pairs++;
            if (fast != ref) {
                int ulps = abs((int)ix_key16(fast) - (int)ix_key16(ref));
                differ++;
                worst_ulps = ulps > worst_ulps ? ulps : worst_ulps;
            }
        }
    }
    printf("index_fast_terms: %d of %d scores differ from the exact head sum's (at most %d bf16 ulps)\n", differ,
           pairs, worst_ulps);
    ck_assert_int_eq(inexact, 0);    /* the e4m3 copies are exact */
    ck_assert_int_eq(bad_terms, 0);  /* every head term is the reference's */
    ck_assert_int_eq(bad_folded, 0); /* the folded form gives the same scores */
    ck_assert_int_le(differ * 1000, pairs); /* <= 0.1% */

    /* Where the fp32 head sum is not the exact one: a partial sum that drops a small term, here
     * 1 + 2^-30 - 1 in lane 0's order (heads 0, 1, 8), gives 0 where the exact sum is 2^-30. */
    ix_terms2 t3[IXT_HEADS / 2] = {{0.0f, 0.0f}};
    t3[0] = (ix_terms2){1.0f, 0x1p-30f};
    t3[4] = (ix_terms2){-1.0f, 0.0f};
    ck_assert(ixt_kernel_sum(t3, IXT_HEADS) == 0.0f);
}
END_TEST

/* ---------------------------------------------------------------- attend */

START_TEST(attend_layout)
{
    /* 8 warps = (AT_HG / 16) head tiles x 4 entry quarters of 16 */
    ck_assert_int_eq(AT_HG % 16, 0);
    ck_assert_int_eq(AT_THREADS / 32, AT_HG / 16 * 4);
    ck_assert_int_eq(AT_BLK, 4 * 16);
    ck_assert_int_eq(AT_BLK, 2 * 32); /* simple path: a lane holds entries lane and lane + 32 */
    ck_assert_int_ge(AT_THREADS, AT_BLK); /* one thread resolves each entry of a block */
    ck_assert_int_ge(AT_THREADS, AT_HG);  /* one thread keeps each head's running m, l */
    ck_assert_int_ge(AT_PS, AT_BLK);
    ck_assert_int_eq(AT_PS * 2 % 16, 0);  /* ldmatrix rows of P on 16 bytes */
    ck_assert(AT_MAX_SPLIT >= 1 && AT_MIN_BLKS >= 1);
}
END_TEST

/* ---------------------------------------------------------------- the V4 shapes */

START_TEST(v4_shapes)
{
    const char *names[] = {"v4-flash", "v4-pro", "tiny"};
    for (int p = 0; p < 3; p++) {
        static hci_config c;
        char err[256];
        ck_assert_int_eq(hci_config_from_text(names[p], &c, err, sizeof err), 0);
        /* FP8 projections (rows x cols): q_a, q_b, kv, o_b, indexer q_b */
        int mk[5][2] = {{c.q_lora_rank, c.dim},
                        {c.n_heads * c.head_dim, c.q_lora_rank},
                        {c.head_dim, c.dim},
                        {c.dim, c.o_groups * c.o_lora_rank},
                        {c.index_n_heads * c.index_head_dim, c.q_lora_rank}};
        for (int i = 0; i < 5; i++) {
            ck_assert_msg(mk[i][0] % GF_BM == 0 && mk[i][1] % GF_BK == 0, "%s: projection %d is %dx%d", names[p],
                          i, mk[i][0], mk[i][1]);
            ck_assert_int_eq(mk[i][1] % GV_SCALE_BLOCK, 0);
            ck_assert_int_eq(mk[i][1] % AQ_BLOCK, 0);
        }
        /* attention: the tensor-core kernel's head dims */
        int d = c.head_dim;
        ck_assert_msg(d == 64 || d == 128 || d == 256 || d == 512, "%s: head_dim %d", names[p], d);
        /* FP8 / FP4 simulations (main: 64-blocks of the nope dims; indexer: 32-blocks) */
        ck_assert_int_le((c.head_dim - c.rope_dim) / 64, QSIM_MAX_BLOCKS);
        ck_assert_int_le(c.index_head_dim / 32, QSIM_MAX_BLOCKS);
        ck_assert(is_pow2(c.index_head_dim)); /* Hadamard */
        /* indexer: within the launcher's limits, on the fast path, FP4 pages as index.cu reads them */
        int IH = c.index_n_heads, ID = c.index_head_dim;
        ck_assert_int_le(IH, IX_MAX_HEADS);
        ck_assert_int_le(IH * ID, IX_MAX_ROW_ELEMS);
        ck_assert_int_le(c.index_topk, IX_MAX_K);
        ck_assert_int_eq(ID % 32, 0);
        hci_entry_layout li = hci_layout_index(HCI_FMT_FP8, ID);
        ck_assert(li.fp4 && li.qblock == 32 && li.data_bytes == ID / 2 && li.scale_bytes == ID / 32);
        ck_assert_int_le(IH * (ID + 16), IX_QTILE_BYTES); /* one query's int8 rows within a score CTA's */
        /* compressor emit blocks: one thread per channel within the block limit */
        ck_assert_int_le((c.head_dim + 31) / 32 * 32, CP_EMIT_MAX_THREADS);
        ck_assert_int_le((c.index_head_dim + 31) / 32 * 32, CP_EMIT_MAX_THREADS);
    }
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("kernel_config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, thread_counts);
    tcase_add_test(tc, shared_memory_budgets);
    tcase_add_test(tc, gemm_tiles);
    tcase_add_test(tc, gemm_swizzle);
    tcase_add_test(tc, gemm_e4m3_to_f16);
    tcase_add_test(tc, gemm_maps);
    tcase_add_test(tc, gemm_wgmma_maps);
    tcase_add_test(tc, gemm_native_plan);
    tcase_add_test(tc, gemv_quant_shapes);
    tcase_add_test(tc, gemv_teams);
    tcase_add_test(tc, gemm_bf16_few_maps);
    tcase_add_test(tc, index_limits);
    tcase_add_test(tc, index_derive);
    tcase_add_test(tc, index_fp4);
    tcase_add_test(tc, index_key_order);
    tcase_add_test(tc, index_fast_path_exact);
    tcase_add_test(tc, index_fast_terms);
    tcase_add_test(tc, index_bf16_round_fadd);
    tcase_add_test(tc, attend_layout);
    tcase_add_test(tc, v4_shapes);
    suite_add_tcase(s, tc);
    return s;
}
