/* gemm/config.h - tile shapes of the FP8 GEMM (gemm_fp8.cu) and the index maps that decide where
 * every code, fragment and output element goes. Plain C (host and device: HCI_HD), so that a host
 * test (tests/test_kernel_config.c) checks the maps against straightforward loops. */
#ifndef HCI_KERNELS_GEMM_CONFIG_H
#define HCI_KERNELS_GEMM_CONFIG_H
#include <stdint.h>
#include "util/bf16.h" /* HCI_HD */

#define GF_SCALE_BLOCK 128    /* the recipe: 128x128 weight scales, 1x128 activation scales */
#define GF_NP_MULT 16         /* token rows of the quantized activations: a multiple of this */

/* ---- big-tile kernel: 128 weight rows x 128 tokens per CTA, 8 warps of 64 rows x 32 tokens ---- */
#define GF_BM 128             /* = the weight-scale block: one scale per CTA and k-block */
#define GF_BN 128
#define GF_BK 128             /* one pipeline step = one scale block */
#define GF_WN 4               /* warps along tokens; 2 along rows */
#define GF_THREADS 256
#define GF_GROUP_M 8          /* row tiles per raster group: neighbours in launch order share data in L2 */
#define GF_TILE_BYTES (GF_BM * GF_BK * 2)           /* one f16 operand tile, 32 KiB */
#define GF_STAGE_BYTES (2 * GF_TILE_BYTES)          /* weights then tokens */
#define GF_SMEM_BYTES (2 * GF_STAGE_BYTES + 2 * GF_BN * 4) /* two stages + two rows of scales */

/* ---- sliced-K kernel (grids too small for the big tiles): CTA tile = warp tile, the 8 warps
 * take 8 consecutive k-blocks each round and the block sums are added in k order in smem ---- */
#define GS_WARPS 8
#define GS_THREADS (GS_WARPS * 32)
#define GS_NT 4               /* n-tiles of 8 tokens per CTA tile */
#define GS_MT_WIDE 4          /* m-tiles of 16 rows per CTA tile when that gives every SM a CTA ... */
#define GS_MT_NARROW 2        /* ... else */
/* the reduction buffer: one float4 per lane and fragment, for every warp (layout: gs_elem) */
#define GS_SMEM_BYTES(MT, NT) (GS_WARPS * (MT) * (NT) * 32 * 16)

/* ---- bf16 GEMM (gemm_bf16.cu, CUDA option comp_fast): the big kernel's CTA and warp tiles,
 * swizzled operand tiles and ldmatrix maps (below) with bf16 operands copied as they are by
 * cp.async, GB_STAGES stages deep; its sliced-K kernel uses the GS_ shapes. ---- */
#define GB_STAGES 3
#define GB_SMEM_BYTES (GB_STAGES * GF_STAGE_BYTES)
#define GB_LD_PARTS 8         /* 16-byte chunks a thread copies per operand and stage */

/* ---- the bf16 GEMM of few tokens (gemm_bf16_few.cu): the sliced-K kernel's CTA (16 weight rows,
 * warp w the k-blocks w, w + 8, ..., block sums added in k order in smem) with each warp's
 * weight tiles streamed by cp.async into a ring of its own, GP_STAGES k-blocks ahead, and read
 * by ldmatrix. A stage: 16 rows x 128 bf16, row r's 16-byte chunk c at chunk c ^ (r % 8). ---- */
#define GP_MAX_N 64           /* tokens it takes (NT up to 8 n-tiles) */
#define GP_STAGES 4
#define GP_STAGE_BYTES (16 * GF_BK * 2)
#define GP_SMEM_BYTES(NT) (GS_SMEM_BYTES(1, NT) + GS_WARPS * GP_STAGES * GP_STAGE_BYTES)
HCI_HD int gp_stage_off(int row, int chunk) { return row * (GF_BK * 2) + ((chunk ^ (row & 7)) << 4); }
/* copy i (< 8) of lane l: chunk l % 16 of row l / 16 + 2 i (16 lanes cover a row's 256 bytes) */
HCI_HD int gp_copy_row(int lane, int i) { return (lane >> 4) + 2 * i; }
HCI_HD int gp_copy_chunk(int lane) { return lane & 15; }
/* ldmatrix.x4 of mma step s (k 16 s .. 16 s + 15): lane l gives the address of row l % 8 of
 * matrix l / 8, i.e. weight row l % 8 (+ 8 for matrices 1 and 3) at chunk 2 s (+ 1 for matrices
 * 2 and 3), so that registers 0..3 are mma.m16n8k16's A fragment (rows g, g + 8 at k 2t, then at
 * k 8 + 2t). */
HCI_HD int gp_ldsm_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
HCI_HD int gp_ldsm_chunk(int lane, int step) { return 2 * step + (lane >> 4); }

/* ---- wgmma kernel (gemm_fp8_wgmma.cu, sm_90): 128 weight rows x GW BN tokens per tile, BN in
 * {128, 64, 32, 16}; consumer warpgroups 0 and 1 (64 rows each), producer warpgroup 2. A stage
 * holds one k-block as f16: the weight tile (128 rows) then the token tile (BN rows), each as two
 * k-halves of 64 values (128-byte rows, 128B swizzle: gw_sw_off); then GW_STAGES rows of token
 * scales and, per consumer, a BN x 64 bf16 output tile (gw_epi_off). ---- */
#define GW_BM 128             /* = the weight-scale block */
#define GW_THREADS 384
#define GW_PROD_THREADS 128
#define GW_STAGES 3
#define GW_LOADS(BN) (8 + (BN) / 16)                  /* 16-code loads per producer thread and block */
#define GW_HALF_BYTES(ROWS) ((ROWS) * 128)            /* one k-half of a tile of ROWS rows */
#define GW_STAGE_BYTES(BN) ((GW_BM + (BN)) * 256)
#define GW_OFF_SCALES(BN) (GW_STAGES * GW_STAGE_BYTES(BN))
#define GW_OFF_EPI(BN) (GW_OFF_SCALES(BN) + GW_STAGES * (BN) * 4)
#define GW_EPI_BYTES(BN) ((BN) * 128)                 /* one consumer's 64 rows x BN tokens, bf16 */
#define GW_SMEM_BYTES(BN) (GW_OFF_EPI(BN) + 2 * GW_EPI_BYTES(BN) + 1024) /* + aligning the base to 1024 */

/* ---- native FP8 kernel (gemm_fp8_native.cu, sm_90, option gemm_fp8_native): 128 weight rows x
 * GN BN tokens per tile, BN in {128, 64, 32, 16}; consumer warpgroups 0 and 1 (64 rows each),
 * warpgroup 2 the producer (one thread issues the TMA loads). The e4m3 codes are not converted:
 * a stage holds one k-block as the TMA writes it, the weight tile (128 rows of 128 codes, 128B
 * swizzle) and the token tile (BN rows), then the block's BN token scales and its weight scale.
 * Plan: [stages x A][stages x B][stages x token scales][stages x weight scale][full and empty
 * mbarriers][per consumer: a BN x 64 bf16 output tile (gw_epi_off)], from a 1024-byte boundary.
 * GN_CLUSTER: 1, or 2 CTAs of one cluster on tiles of the same weight rows and neighbouring
 * token tiles, each loading 64 of the 128 weight rows and multicasting them to both. ---- */
#define GN_BM 128             /* = the weight-scale block */
#define GN_BK 128             /* one stage = one scale block = 128 codes = one 128-byte row */
#define GN_THREADS 384
#define GN_CONS_THREADS 256
#define GN_STAGES(BN) ((BN) >= 128 ? 5 : (BN) >= 64 ? 7 : 8)
#define GN_A_BYTES (GN_BM * GN_BK)                    /* 16 KiB */
#define GN_B_BYTES(BN) ((BN) * GN_BK)
#define GN_XS_BYTES(BN) ((((BN) * 4) + 127) / 128 * 128) /* TMA destinations on 128 bytes */
#define GN_OFF_B(BN) (GN_STAGES(BN) * GN_A_BYTES)
#define GN_OFF_XS(BN) (GN_OFF_B(BN) + GN_STAGES(BN) * GN_B_BYTES(BN))
#define GN_OFF_WS(BN) (GN_OFF_XS(BN) + GN_STAGES(BN) * GN_XS_BYTES(BN))
#define GN_OFF_BAR(BN) (GN_OFF_WS(BN) + (GN_STAGES(BN) * 4 + 7) / 8 * 8)
#define GN_OFF_EPI(BN) ((GN_OFF_BAR(BN) + 2 * GN_STAGES(BN) * 8 + 127) / 128 * 128) /* stmatrix: 16-byte rows */
#define GN_EPI_BYTES(BN) ((BN) * 128)                 /* one consumer's 64 rows x BN tokens, bf16 */
#define GN_SMEM_BYTES(BN) (GN_OFF_EPI(BN) + 2 * GN_EPI_BYTES(BN) + 1024) /* + aligning the base to 1024 */

/* Byte offset of logical f16 chunk L (0..15: k values 8L..8L+7) of row r in a wgmma operand tile
 * of ROWS rows: k-half L / 8 (ROWS x 128 bytes each), then the 128B swizzle (chunk XOR row mod 8)
 * that the descriptors of gemm_fp8_wgmma.cu read. */
HCI_HD int gw_sw_off(int rows, int r, int L) { return (L >> 3) * GW_HALF_BYTES(rows) + r * 128 + (((L & 7) ^ (r & 7)) << 4); }

/* Producer thread pt (0..127), load j < GW_LOADS(BN): 16 codes (chunk gw_ld_c8 of 8 per 128-code
 * row) of weight row gw_ld_row(pt, j) (j < 8) or token row gw_ld_row(pt, j - 8) (j >= 8): a warp
 * reads 4 whole rows per load. The codes become logical chunks gf_st_chunk(c8, 0 / 1), as in the
 * big kernel, so that each k16 step of the wgmma sums the same 16 products in the same order as
 * that kernel's mma step. */
HCI_HD int gw_ld_row(int pt, int j) { return 16 * j + (pt >> 3); }
HCI_HD int gw_ld_c8(int pt) { return pt & 7; }

/* Accumulator x (0 .. BN/2-1) of lane in warp wi (0..3) of a consumer warpgroup: the wgmma D
 * layout, rows 16 wi + lane / 4 (+8), tokens 8 (x / 4) + 2 (lane % 4) (+1): row and token of the
 * warpgroup's 64 x BN tile. */
HCI_HD void gw_out(int wi, int lane, int x, int *row, int *tok)
{
    *row = 16 * wi + (lane >> 2) + 8 * ((x >> 1) & 1);
    *tok = 8 * (x >> 2) + 2 * (lane & 3) + (x & 1);
}

/* Output staging of a consumer: token tok's 64 rows (128 bytes) as 8 chunks of 8 rows, chunk q
 * at q ^ (tok mod 8): the 2-byte stores of one instruction (4 tokens x 8 rows) and the 16-byte
 * reads of 8 threads (one token) hit different banks. */
HCI_HD int gw_epi_off(int tok, int row) { return tok * 128 + ((((row >> 3) ^ tok) & 7) << 4) + (row & 7) * 2; }

/* f16 operand tile of the big kernel: row r (weight row or token) holds 128 k values = 256 bytes
 * = sixteen 16-byte chunks; chunk c is stored at c ^ (r & 7), so the 8 rows one ldmatrix matrix
 * reads fall in 8 different bank groups. */
HCI_HD int gf_tile_off(int row, int chunk) { return row * 256 + ((chunk ^ (row & 7)) << 4); }

/* Loading a tile: thread tid fetches 16 fp8 codes (chunk c8 = tid & 7 of 8 per 128-byte row) of
 * rows j * 32 + (tid >> 3), j = 0..3: a warp reads 4 whole rows, coalesced. */
HCI_HD int gf_ld_row(int tid, int j) { return j * 32 + (tid >> 3); }
HCI_HD int gf_ld_c8(int tid) { return tid & 7; }

/* Loading a bf16 tile (gemm_bf16.cu): thread tid copies logical chunk tid & 15 (8 k values) of
 * rows j * 16 + (tid >> 4), j < GB_LD_PARTS, to gf_tile_off(row, chunk): 16 threads read one
 * whole 256-byte row. The chunks stay in k order, so ldmatrix gives mma the natural fragments. */
HCI_HD int gb_ld_row(int tid, int j) { return j * 16 + (tid >> 4); }
HCI_HD int gb_ld_chunk(int tid) { return tid & 15; }

/* The 16 codes of chunk c8 become 32 bytes of f16 = logical chunks 2*c8 and 2*c8+1; threads with
 * c8 >= 4 write them in the other order, so that each 8-thread phase of an STS.128 (one row, c8 =
 * 0..7) hits 8 different bank groups. Any such placement is fine for the result: the weights and
 * the tokens go through the same map, so the same codes meet in the products. */
HCI_HD int gf_st_chunk(int c8, int half) { return 2 * c8 + (half ^ (c8 >> 2)); }

/* Four e4m3 codes (bytes b0..b3 of q) -> two f16x2 holding each value times 2^-8, exactly:
 * lo = (b0, b2), hi = (b1, b3), low half first. The f16 bits of v * 2^-8 are
 * sign << 15 | (code & 0x7f) << 7 for every finite code, subnormals included, because the e4m3
 * and f16 exponent biases differ by 8 (e4m3 subnormals become f16 subnormals). A few integer ops
 * instead of cvt.f16x2.e4m3x2, whose throughput on Hopper is low. NaN codes (0x7f, 0xff) become
 * 480 * 2^-8; act_quant never makes them and checkpoint weights hold none. */
HCI_HD void gf_e4m3x4_to_f16x2(uint32_t q, uint32_t *lo, uint32_t *hi)
{
    uint32_t x = (q & 0x00ff00ffu) << 8;                /* b0, b2 in the high bytes: s<<15 | m<<8 */
    *lo = x - (q & 0x007f007fu) * 128u;                 /* minus m<<7: s<<15 | m<<7, no borrow */
    *hi = (q & 0x80008000u) + ((q & 0x7f007f00u) >> 1); /* b1, b3 are already in the high bytes */
}

/* The same bits in fewer operations where the compiler makes LOP3s of them (4 a word for lo, 3
 * for hi, against 5 + 3): the wgmma kernel's producer, whose issue slots the conversion fills. */
HCI_HD void gw_e4m3x4_to_f16x2(uint32_t q, uint32_t *lo, uint32_t *hi)
{
    *lo = ((q << 8) & 0x80008000u) | ((q << 7) & 0x3f803f80u); /* b0, b2: sign to bit 15, m to bits 7..13 */
    *hi = (q & 0x80008000u) | ((q >> 1) & 0x3f803f80u);        /* b1, b3 */
}

/* ldmatrix.x4 row address of lane l for a 16x16 A tile (rows r0.., k 16*kk..) and for two 8-token
 * B tiles (tokens n0.., same k): row, and the logical chunk. Matrix order as mma.m16n8k16 wants
 * it: A = (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15);
 * B = (tok 0-7, k 0-7), (tok 0-7, k 8-15), (tok 8-15, k 0-7), (tok 8-15, k 8-15). */
HCI_HD int gf_lda_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
HCI_HD int gf_lda_chunk(int lane, int kk) { return 2 * kk + (lane >> 4); }
HCI_HD int gf_ldb_row(int lane) { return (lane & 7) + (lane >> 4) * 8; }
HCI_HD int gf_ldb_chunk(int lane, int kk) { return 2 * kk + ((lane >> 3) & 1); }

/* The same as byte offsets in the tile, as the big kernel computes them: for rows r0 + 8i the
 * swizzle term is lane & 7, so step kk's chunk is (2 kk) ^ y with a per-lane constant y. */
HCI_HD uint32_t gf_lda_y(int lane) { return (uint32_t)((lane >> 4) ^ (lane & 7)); }
HCI_HD uint32_t gf_ldb_y(int lane) { return (uint32_t)(((lane >> 3) & 1) ^ (lane & 7)); }
HCI_HD uint32_t gf_lda_rowoff(int wm, int lane) { return (uint32_t)(wm * 64 + gf_lda_row(lane)) * 256u; }
HCI_HD uint32_t gf_ldb_rowoff(int wn, int lane) { return (uint32_t)(wn * 32 + gf_ldb_row(lane)) * 256u; }
HCI_HD uint32_t gf_lda_off(int wm, int mi, int lane, int kk)
{
    return gf_lda_rowoff(wm, lane) + mi * 16 * 256 + (((2u * kk) ^ gf_lda_y(lane)) << 4);
}
HCI_HD uint32_t gf_ldb_off(int wn, int p, int lane, int kk)
{
    return gf_ldb_rowoff(wn, lane) + p * 16 * 256 + (((2u * kk) ^ gf_ldb_y(lane)) << 4);
}

/* Accumulator c of m-tile mi, n-tile ni of lane in warp (wm, wn) -> (row, token) in the CTA tile. */
HCI_HD void gf_out(int wm, int wn, int mi, int ni, int lane, int c, int *row, int *tok)
{
    *row = wm * 64 + mi * 16 + (lane >> 2) + (c >> 1) * 8;
    *tok = wn * 32 + ni * 8 + (lane & 3) * 2 + (c & 1);
}

/* Raster of the big kernel: CTA pid -> (row tile, token tile), GF_GROUP_M row tiles at a time. */
HCI_HD void gf_raster(int pid, int tiles_m, int tiles_n, int *mt, int *nt)
{
    int per_group = GF_GROUP_M * tiles_n, first = pid / per_group * GF_GROUP_M;
    int gsz = tiles_m - first < GF_GROUP_M ? tiles_m - first : GF_GROUP_M;
    *mt = first + pid % per_group % gsz;
    *nt = pid % per_group / gsz;
}

/* Sliced-K reduction buffer: slot w holds warp w's scaled block sums, fragment-major: float4
 * number (mi * NT + ni) * 32 + lane = the four accumulators of m-tile mi, n-tile ni of that lane.
 * gs_elem maps float4 f, component c back to the tile's (row, token). */
HCI_HD void gs_elem(int NT, int f, int c, int *row, int *tok)
{
    int tile = f >> 5, lane = f & 31, mi = tile / NT, ni = tile % NT;
    *row = mi * 16 + (lane >> 2) + (c >> 1) * 8;
    *tok = ni * 8 + (lane & 3) * 2 + (c & 1);
}

#endif
