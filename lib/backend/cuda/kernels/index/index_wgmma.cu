/* index_wgmma.cu - the fast indexer scores (option index_fast) for 64 heads on Hopper's wgmma:
 * the native FP8 tensor-core path of sm_90 (mma.sync e4m3, which index_fast.cu's kernel for
 * other head counts uses, is lowered to operand conversions and f16 MMAs there).
 *
 * The arithmetic is index_fast.cu's: exact e4m3 copies of q and the keys, fp32 accumulation, each
 * head's dot scaled back exactly and then the reference's roundings,
 * bf16(sum_h bf16(relu(bf16(D_h * s_qh * s_j)) * w_h)) (index/config.h: ix_fast_terms2), the
 * heads added in fp32 in a fixed order (per lane over n8 blocks in order, then across the 4 lanes
 * of a row by xor-shuffles). Deterministic, and a query's scores do not depend on the other
 * queries.
 *
 * CTA = 16 queries (their 64 x 128 e4m3 rows in shared memory, 128-byte swizzled) and four
 * warpgroups that take alternate key tiles (one cache page of 64 keys each, converted from FP4
 * into their own swizzled buffer; the next tile's codes are fetched into registers meanwhile).
 * Per tile and pair of queries: D[64 keys][128 = 2 x 64 heads] = four wgmma m64n128k32 (keys as
 * A, heads as B, both K-major from shared memory); then the head terms of D and their sum in
 * registers while the other warpgroups' MMAs run.
 *
 * Head sum (template TC): false, in fp32 on the CUDA cores (ix_fast_add2 per lane, then
 * xor-shuffles); true (option index_tcsum), on the tensor cores: the bf16 terms,
 * computed exactly as above (cvt.relu to bf16x2, times the packed bf16 weights in one bf16x2
 * FMA), are already wgmma's register A fragment (rows = keys, k = heads), and four m64n8k16
 * against a block of ones add each query's 64 terms with fp32 accumulation. The terms are the
 * same; only the order and grouping of the fp32 additions differ (the tensor cores' own, fixed):
 * one bf16x2 instruction per two head terms instead of five, deterministic, and each query's sum
 * comes from its own four MMAs whatever the other queries (batch-invariant).
 *
 * REGA (option index_rega, with TC): each warp's 16 keys of the tile loaded once by ldmatrix as
 * wgmma's register A for all eight pairs, so that shared memory feeds the tensor cores only the
 * queries; three warpgroups (registers). The same MMAs on the same values: TC's bits.
 * MIX (option index_tcmix, with TC): one head-term pair in four rounded to bf16 on the fp32
 * adder (ix_bf16_round_fadd) instead of the conversion unit, the same bits.
 * F32 (option index_f32sum): the production kernels' sum instead of the reference's roundings,
 * sum_h relu(D_h) * (w_h s_qh) in fp32 FMAs in a fixed order, times s_j, rounded once. */
#include "index_fast.cuh"
#include "../wgmma.cuh"

namespace ixf {
namespace {

constexpr int WQ = 16;                /* queries per CTA */
constexpr int HEADS = 64;
constexpr int QBYTES = HEADS * DIM;   /* one query's rows */
constexpr int KBYTES = IX_TILE * DIM; /* one key tile */
constexpr int ONES_BYTES = 8 * 128;  /* the head sum's B: 8 columns x 64 heads of bf16 1.0 */
/* warpgroups per CTA, each with its own key tiles: four; three for the pipelined head sum, whose
 * pair in flight needs more than the 128 registers a thread of four warpgroups may have */
constexpr int nwg(bool pipe) { return pipe ? 3 : 4; }
constexpr unsigned smem_bytes(bool pipe, bool f32)
{
    return WQ * QBYTES + nwg(pipe) * KBYTES + ONES_BYTES + WQ * HEADS * 8 + WQ * HEADS * 2 + (f32 ? WQ * HEADS * 4 : 0) +
           nwg(pipe) * IX_TILE * 4 + WQ * 256 * 4 + 1024;
}

/* 128B-swizzled tiles and their descriptors, fences, barriers: wgmma.cuh */

/* d (+)= A.B^T, m64n128k32, e4m3 inputs, fp32 accumulators; scale_d 0 starts from zero. */
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], uint64_t da, uint64_t db, int scale_d)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "r"(scale_d));
#else
    (void)d, (void)da, (void)db, (void)scale_d;
    __trap(); /* the launcher runs this kernel on sm_90 only, where the sm_90a code is loaded */
#endif
}

/* d (+)= A.B^T, m64n128k32, e4m3, A from registers (this warp's 16 rows x 32 bytes as mma's
 * m16n8k32 A fragment: ldmatrix.x4 of the swizzled tile gives it) */
__device__ __forceinline__ void wgmma_m64n128k32_ra(float (&d)[64], const uint32_t (&ka)[4], uint64_t db, int scale_d)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(ka[0]), "r"(ka[1]), "r"(ka[2]), "r"(ka[3]), "l"(db), "r"(scale_d));
#else
    (void)d, (void)ka, (void)db, (void)scale_d;
    __trap();
#endif
}

/* e (+)= A.B, m64n8k16, A (bf16) from registers in the accumulator layout of the 64 keys, B
 * (bf16, K-major) from shared memory; scale_d 0 starts from zero. */
__device__ __forceinline__ void wgmma_sum_m64n8k16(float (&e)[4], const uint32_t (&t)[4], uint64_t db, int scale_d)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, p, 1, 1, 0;\n}\n"
                 : "+f"(e[0]), "+f"(e[1]), "+f"(e[2]), "+f"(e[3])
                 : "r"(t[0]), "r"(t[1]), "r"(t[2]), "r"(t[3]), "l"(db), "r"(scale_d));
#else
    (void)e, (void)t, (void)db, (void)scale_d;
    __trap();
#endif
}

/* Two head terms bf16(relu(bf16(d_i)) * wq_i) as one bf16x2 (d0 and wq0 low): ix_fast_terms2_folded's
 * roundings, with the weights packed. */
__device__ __forceinline__ uint32_t ixw_terms_bf16x2(float d0, float d1, uint32_t wq)
{
    uint32_t r, m;
    asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(d1), "f"(d0));
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(m) : "r"(r), "r"(wq), "r"(0u));
    return m;
}

/* The same terms with d0, d1 rounded on the fp32 adder (config.h: ix_bf16_round_fadd), packed
 * by a byte permute, the relu as a bf16x2 max with +0 (a negative dot stays negative when
 * rounded): the same bits by other pipes, which MIX uses for a share of the terms so that the
 * conversion unit (a quarter of the fp32 rate) is not the epilogue's only path. */
__device__ __forceinline__ uint32_t ixw_terms_bf16x2_fadd(float d0, float d1, uint32_t wq)
{
    const uint32_t p = __byte_perm(__float_as_uint(ix_bf16_round_fadd(d0)), __float_as_uint(ix_bf16_round_fadd(d1)), 0x7632);
    uint32_t r, m;
    asm("max.bf16x2 %0, %1, %2;\n" : "=r"(r) : "r"(p), "r"(0u));
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(m) : "r"(r), "r"(wq), "r"(0u));
    return m;
}

/* D = the keys' dots with a query pair's 64 heads each (four m64n128k32 over the 128 dims), as
 * one committed group. */
__device__ __forceinline__ void ixw_pair_mma(float (&d)[64], uint64_t da0, uint64_t db0)
{
#pragma unroll
    for (int i = 0; i < 64; i++) hci_reg_fence(d[i]);
    hci_wg_fence();
#pragma unroll
    for (int k = 0; k < 4; k++) wgmma_m64n128k32(d, da0 + 2 * k, db0 + 2 * k, k);
    hci_wg_commit();
}

/* The same with the keys' A fragments in registers (ka[k]: k-step k), loaded once per tile. */
__device__ __forceinline__ void ixw_pair_mma_ra(float (&d)[64], const uint32_t (&ka)[4][4], uint64_t db0)
{
#pragma unroll
    for (int i = 0; i < 64; i++) hci_reg_fence(d[i]);
    hci_wg_fence();
#pragma unroll
    for (int k = 0; k < 4; k++) wgmma_m64n128k32_ra(d, ka[k], db0 + 2 * k, k);
    hci_wg_commit();
}

/* This warp's 16 keys of the swizzled tile ks as the four k-steps' A fragments: ldmatrix.x4
 * (b16 elements = byte pairs) of rows 16 wi + 0..15, 16-byte chunks 2k and 2k + 1; lane l
 * addresses row (l & 7) + 8 ((l >> 3) & 1) of chunk 2k + (l >> 4). */
__device__ __forceinline__ void ixw_load_keys(const uint8_t *ks, int wi, int lane, uint32_t (&ka)[4][4])
{
    const int r = 16 * wi + (lane & 7) + 8 * ((lane >> 3) & 1);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const uint32_t a = (uint32_t)__cvta_generic_to_shared(ks + hci_wg_sw128(r, 2 * k + (lane >> 4)));
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(ka[k][0]), "=r"(ka[k][1]), "=r"(ka[k][2]), "=r"(ka[k][3])
                     : "r"(a));
    }
}

/* Query q (0 or 1) of the pair in D's columns: its head terms as the A fragments of the four k16
 * chunks of the head sum, with the packed weights that lane t reads (wl: 8 words). */
template <bool MIX = false>
__device__ __forceinline__ void ixw_query_terms(const float (&d)[64], const uint32_t *wl, int q, uint32_t (&tm)[4][4])
{
    const uint4 w03 = ((const uint4 *)wl)[0], w47 = ((const uint4 *)wl)[1];
    const uint32_t wq[8] = {w03.x, w03.y, w03.z, w03.w, w47.x, w47.y, w47.z, w47.w};
#pragma unroll
    for (int c = 0; c < 4; c++) {
        const int ja = 8 * q + 2 * c, jb = ja + 1;
        tm[c][0] = ixw_terms_bf16x2(d[4 * ja], d[4 * ja + 1], wq[2 * c]);
        tm[c][1] = ixw_terms_bf16x2(d[4 * ja + 2], d[4 * ja + 3], wq[2 * c]);
        tm[c][2] = ixw_terms_bf16x2(d[4 * jb], d[4 * jb + 1], wq[2 * c + 1]);
        /* MIX: one term pair in four on the fp32 adder (the share that balances the conversion
         * unit against the issue slots the longer form takes) */
        tm[c][3] = MIX ? ixw_terms_bf16x2_fadd(d[4 * jb + 2], d[4 * jb + 3], wq[2 * c + 1])
                       : ixw_terms_bf16x2(d[4 * jb + 2], d[4 * jb + 3], wq[2 * c + 1]);
    }
}

/* The head sum of lane t's (query, row) from the sum MMAs' results: every column of their B is
 * ones, so e[q][0] = e[q][1] is row g's sum of query q and e[q][2] row g + 8's; lane t takes query
 * t & 1, row g + 8 (t >> 1). A sum of zeros as +0, as the fp32 sum from +0 gives it. */
__device__ __forceinline__ float ixw_pick(const float (&e)[2][4], int t)
{
    const float v = (t & 1) ? ((t >> 1) ? e[1][2] : e[1][0]) : ((t >> 1) ? e[0][2] : e[0][0]);
    return __fadd_rn(v, 0.0f);
}

/* PIPE (with TC; option index_tcpipe): the same terms and sums, the tensor work of a query pair
 * overlapping the previous pair's end. Per pair: its four main MMAs complete, their results
 * become the bf16 terms (the sum's register A), then the sum MMAs of this pair and the main MMAs
 * of the next are issued as two groups; the first group's wait leaves the next pair's MMAs
 * running while this pair's scores are stored. Nothing stays in flight across the loop's back
 * edge (ptxas would serialise every wgmma). */
template <bool TC, bool PIPE, bool F32, bool REGA, bool MIX>
__global__ void __launch_bounds__(nwg(PIPE || REGA) * 128, 1) ixw_score(ixf_args a)
{
    constexpr int NWG = nwg(PIPE || REGA), THREADS = NWG * 128;
    static_assert(!REGA || (TC && !PIPE), "the keys in registers: the tensor-core head sum's kernel");
    static_assert(!MIX || (TC && !PIPE), "the mixed conversions: the tensor-core head sum's kernel");
    static_assert(!PIPE || TC, "the pipelined kernel is the tensor-core head sum's");
    static_assert(!F32 || (!TC && IXF_FOLD_SCALES), "the fp32 head sum is a CUDA-core sum of the folded weights");
    extern __shared__ __align__(16) uint8_t sm_raw[];
    /* the first 1024-byte boundary of the shared window (wgmma's swizzle reads shared addresses);
     * an offset from sm_raw, so that the compiler keeps shared loads for the arrays below */
    uint8_t *sm = sm_raw + ((0u - (uint32_t)__cvta_generic_to_shared(sm_raw)) & 1023u);
    const int tid = threadIdx.x, wg = tid >> 7, wt = tid & 127, wi = wt >> 5, lane = tid & 31, g = lane >> 2,
              t = lane & 3;
    const int q0 = blockIdx.y * WQ, QTe = min(WQ, a.rows - q0);
    const int64_t nv_last = (a.pos0 + q0 + QTe) / 4; /* keys visible to the CTA's last query */
    const int64_t ntiles = (nv_last + IX_TILE - 1) / IX_TILE;
    if ((int64_t)blockIdx.x * NWG >= ntiles) return; /* uniform over the CTA */
    uint8_t *qs = sm, *ks = qs + WQ * QBYTES + wg * KBYTES, *ones = qs + WQ * QBYTES + NWG * KBYTES;
    float4 *hw = (float4 *)(ones + ONES_BYTES);
    uint32_t *wpk = (uint32_t *)(hw + WQ * HEADS / 2); /* [query][t][8]: the packed weights lane t takes */
    float *wf = (float *)(wpk + WQ * HEADS / 2); /* F32 only: [query][t][16], the weights lane t takes */
    float *ksc0 = wf + (F32 ? WQ * HEADS : 0), *ksc = ksc0 + wg * IX_TILE;
    uint32_t *hist = (uint32_t *)(ksc0 + NWG * IX_TILE);

    /* the queries' e4m3 rows (swizzled), head scales and weights, the histograms */
    ixf_stage_queries<WQ, THREADS>(a, HEADS, q0, QTe, tid, qs, hw, hist, hci_wg_sw128);
    if constexpr (TC) {
        for (int i = tid; i < ONES_BYTES / 4; i += THREADS) ((uint32_t *)ones)[i] = 0x3F803F80u; /* bf16 1.0 */
    }
    hci_async_fence();
    __syncthreads();
    if constexpr (TC) {
        static_assert(!TC || IXF_FOLD_SCALES, "the tensor-core head sum takes the folded weights");
        /* the weights of heads 2hp, 2hp + 1 (hp = 4 jj + t) as one bf16x2, where lane t reads them */
        for (int i = tid; i < WQ * HEADS / 2; i += THREADS) {
            const int qq = i / (HEADS / 2), hp = i % (HEADS / 2);
            const float4 v = hw[i];
            wpk[qq * (HEADS / 2) + (hp & 3) * 8 + (hp >> 2)] =
                (__float_as_uint(v.z) >> 16) | (__float_as_uint(v.w) & 0xFFFF0000u);
        }
        __syncthreads();
    }
    if constexpr (F32) {
        /* the weights of heads 8 jj + 2t, + 1 at wf[(query * 4 + t) * 16 + 2 jj], + 1 */
        for (int i = tid; i < WQ * HEADS / 2; i += THREADS) {
            const int qq = i / (HEADS / 2), hp = i % (HEADS / 2), jj = hp >> 2, tt = hp & 3;
            const float4 v = hw[i];
            *(float2 *)(wf + (qq * 4 + tt) * 16 + 2 * jj) = make_float2(v.z, v.w);
        }
        __syncthreads();
    }

    const uint32_t ks_s = (uint32_t)__cvta_generic_to_shared(ks), qs_s = (uint32_t)__cvta_generic_to_shared(qs);
    const uint64_t da0 = hci_wg_desc_k(ks_s);
    auto tile_keys = [&](int64_t tl) { return (int)min((int64_t)IX_TILE, nv_last - tl * IX_TILE); };
    const int64_t tile0 = (int64_t)blockIdx.x * NWG + wg, step = (int64_t)gridDim.x * NWG;
    ixf_part nx[2];
    for (int i = 0; i < 2; i++)
        nx[i] = tile0 < ntiles ? ixf_fetch(a, a.pages[tile0], tile_keys(tile0), wt + 128 * i) : ixf_part{};
    /* keys visible to query qq of the CTA (none past its last) */
    auto nv_of = [&](int qq) -> int64_t { return qq < QTe ? (a.pos0 + q0 + qq + 1) / 4 : 0; };
    const uint64_t dones = hci_wg_desc_k((uint32_t)__cvta_generic_to_shared(ones));
    /* PIPE: the pairs of one tile (see the kernel's comment). The pairs that see the tile are
     * p0 .. pe - 1: a later query sees more keys. */
    auto pipe_pairs = [&](int64_t j0, auto &&emit) {
        const int pe = (QTe + 1) / 2;
        int p = 0;
        while (p < pe && j0 >= max(nv_of(2 * p), nv_of(2 * p + 1))) p++;
        if (p >= pe) return;
        const float sk0 = ksc[wi * 16 + g], sk1 = ksc[wi * 16 + g + 8];
        float d[64];
        uint32_t tm[2][4][4];
        auto issue_main = [&](int pp) { ixw_pair_mma(d, da0, hci_wg_desc_k(qs_s + (uint32_t)(2 * pp * QBYTES))); };
        auto terms = [&](int pp) {
#pragma unroll
            for (int i = 0; i < 64; i++) hci_reg_fence(d[i]);
#pragma unroll
            for (int q = 0; q < 2; q++) ixw_query_terms(d, wpk + (2 * pp + q) * (HEADS / 2) + t * 8, q, tm[q]);
        };
        /* this pair's head sums (from tm) as one group, then its scores out */
        auto issue_sums = [&](float (&e)[2][4]) {
#pragma unroll
            for (int q = 0; q < 2; q++)
#pragma unroll
                for (int i = 0; i < 4; i++) e[q][i] = 0.0f, hci_reg_fence(e[q][i]);
            hci_wg_fence();
#pragma unroll
            for (int q = 0; q < 2; q++)
#pragma unroll
                for (int c = 0; c < 4; c++) wgmma_sum_m64n8k16(e[q], tm[q][c], dones + 2 * c, c);
            hci_wg_commit();
        };
        auto scores_out = [&](int pp, float (&e)[2][4]) {
#pragma unroll
            for (int q = 0; q < 2; q++)
#pragma unroll
                for (int i = 0; i < 4; i++) hci_reg_fence(e[q][i]);
            const int query = 2 * pp + (t & 1), key = wi * 16 + g + 8 * (t >> 1);
            const float v = __fmul_rn(ixw_pick(e, t), (t >> 1) ? sk1 : sk0);
            emit(v, query, key, j0 + key < nv_of(query));
        };
#pragma unroll
        for (int i = 0; i < 64; i++) d[i] = 0.0f;
        issue_main(p);
        hci_wg_wait0();
        terms(p);
        /* every pair but the last: its sums and the next pair's MMAs in flight together (no
         * branch around a wgmma: ptxas would serialise them) */
#pragma unroll 1
        for (; p + 1 < pe; p++) {
            float e[2][4];
            issue_sums(e);
            issue_main(p + 1); /* d is free: this pair's terms are in tm */
            hci_wg_wait<1>();  /* the sums; the next pair's MMAs go on */
            scores_out(p, e);
            hci_wg_wait0();
            terms(p + 1);
        }
        float e[2][4];
        issue_sums(e);
        hci_wg_wait0();
        scores_out(p, e);
    };

    for (int64_t tile = tile0; tile < ntiles; tile += step) { /* uniform over the warpgroup */
        const int64_t j0 = tile * IX_TILE;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint32_t out[8];
            float sc = ixf_convert(nx[i], out);
            int item = wt + 128 * i, e = item >> 2, b = item & 3;
            *(uint4 *)(ks + hci_wg_sw128(e, 2 * b)) = make_uint4(out[0], out[1], out[2], out[3]);
            *(uint4 *)(ks + hci_wg_sw128(e, 2 * b + 1)) = make_uint4(out[4], out[5], out[6], out[7]);
            if (b == 0) ksc[e] = sc;
        }
        hci_async_fence();
        hci_bar_sync(1 + wg, 128);
        if (tile + step < ntiles)
            for (int i = 0; i < 2; i++) nx[i] = ixf_fetch(a, a.pages[tile + step], tile_keys(tile + step), wt + 128 * i);
        /* a score to its row (when the query sees the key) and the CTA's histogram */
        auto emit = [&](float v, int query, int key, bool vis) {
            const uint32_t k16 = ix_key16(hci_bf16_from_f32(v));
            if (vis) a.scores[(size_t)(q0 + query) * a.stride + j0 + key] = (uint16_t)k16;
            /* near keys score alike: one shared-memory atomic per distinct (query, high byte) */
            const unsigned bin = (unsigned)query * 256u + (k16 >> 8);
            const unsigned peers = __match_any_sync(0xffffffffu, vis ? bin : 0x10000u + lane);
            if (vis && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], (unsigned)__popc(peers));
        };
        if constexpr (PIPE) pipe_pairs(j0, emit);
        uint32_t ka[4][4]; /* REGA: this warp's keys of the tile as A fragments, for every pair */
        if constexpr (REGA) ixw_load_keys(ks, wi, lane, ka);
#pragma unroll 1
        for (int p = 0; p < (PIPE ? 0 : WQ / 2); p++) {
            const int qa = 2 * p, qb = qa + 1;
            const int64_t nva = qa < QTe ? (a.pos0 + q0 + qa + 1) / 4 : 0, nvb = qb < QTe ? (a.pos0 + q0 + qb + 1) / 4 : 0;
            if (j0 >= max(nva, nvb)) continue; /* uniform: neither query sees the tile */
            float d[64];
#pragma unroll
            for (int i = 0; i < 64; i++) d[i] = 0.0f;
            if constexpr (REGA) ixw_pair_mma_ra(d, ka, hci_wg_desc_k(qs_s + (uint32_t)(qa * QBYTES)));
            else ixw_pair_mma(d, da0, hci_wg_desc_k(qs_s + (uint32_t)(qa * QBYTES)));
            hci_wg_wait0();
#pragma unroll
            for (int i = 0; i < 64; i++) hci_reg_fence(d[i]);
            /* rows g and g + 8 of this warp's 16 keys; columns 8j + 2t, +1 of n8 block j: query
             * qa + j / 8, heads 8 (j % 8) + 2t, + 1 */
            const float sk0 = ksc[wi * 16 + g], sk1 = ksc[wi * 16 + g + 8];
            float v;
            int query, key;
            if constexpr (TC) {
                /* lane t: query qa + (t & 1), row g + 8 (t >> 1) */
                float e[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
                for (int q = 0; q < 2; q++) {
                    uint32_t tm[4][4]; /* the A fragments of the four k16 chunks of this query's heads */
                    ixw_query_terms<MIX>(d, wpk + (qa + q) * (HEADS / 2) + t * 8, q, tm);
#pragma unroll
                    for (int i = 0; i < 4; i++) hci_reg_fence(e[q][i]);
                    hci_wg_fence();
#pragma unroll
                    for (int c = 0; c < 4; c++) wgmma_sum_m64n8k16(e[q], tm[c], dones + 2 * c, c);
                }
                hci_wg_commit();
                hci_wg_wait0();
#pragma unroll
                for (int q = 0; q < 2; q++)
#pragma unroll
                    for (int i = 0; i < 4; i++) hci_reg_fence(e[q][i]);
                v = ixw_pick(e, t);
                query = qa + (t & 1), key = wi * 16 + g + 8 * (t >> 1);
                v = __fmul_rn(v, (t >> 1) ? sk1 : sk0);
            } else if constexpr (F32) {
                /* lane t: the 16 heads 8 jj + 2t, + 1 of each query, rows g and g + 8 */
                float s[2][2];
#pragma unroll
                for (int q = 0; q < 2; q++) {
                    const float4 *wv = (const float4 *)(wf + ((qa + q) * 4 + t) * 16);
                    float a0 = 0.0f, a1 = 0.0f; /* +0: a sum of zero terms stays +0 */
#pragma unroll
                    for (int i = 0; i < 4; i++) { /* heads of n8 blocks 2i, 2i + 1 */
                        const float4 w4 = wv[i];
                        const float wr[4] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            const int j = 8 * q + 2 * i + h;
                            a0 = __fmaf_rn(fmaxf(d[4 * j], 0.0f), wr[2 * h], a0);
                            a0 = __fmaf_rn(fmaxf(d[4 * j + 1], 0.0f), wr[2 * h + 1], a0);
                            a1 = __fmaf_rn(fmaxf(d[4 * j + 2], 0.0f), wr[2 * h], a1);
                            a1 = __fmaf_rn(fmaxf(d[4 * j + 3], 0.0f), wr[2 * h + 1], a1);
                        }
                    }
                    s[q][0] = a0, s[q][1] = a1;
                }
                /* the 4 lanes' partial sums, transposed: lane t ends with query t >> 1, row t & 1;
                 * each addition commutes with its partner's, so every (query, row) gets the same
                 * bits whichever lanes hold it */
                const bool odd = t & 1, hi = t >> 1;
                float u[2];
#pragma unroll
                for (int q = 0; q < 2; q++)
                    u[q] = __fadd_rn(odd ? s[q][1] : s[q][0], __shfl_xor_sync(0xffffffffu, odd ? s[q][0] : s[q][1], 1));
                v = __fadd_rn(hi ? u[1] : u[0], __shfl_xor_sync(0xffffffffu, hi ? u[0] : u[1], 2));
                query = qa + (t >> 1), key = wi * 16 + g + 8 * (t & 1);
                v = __fmul_rn(v, (t & 1) ? sk1 : sk0);
            } else {
                float s[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}}; /* +0: zero terms leave it +0, as the CPU's sum */
#pragma unroll
                for (int j = 0; j < 16; j++) {
                    const int q = j >> 3;
                    const float4 sw = hw[(qa + q) * (HEADS / 2) + 4 * (j & 7) + t]; /* scales and weights */
                    if constexpr (IXF_FOLD_SCALES) {
                        s[q][0] = ix_fast_add2(s[q][0], ix_fast_terms2_folded(d[4 * j], d[4 * j + 1], sw.z, sw.w));
                        s[q][1] = ix_fast_add2(s[q][1], ix_fast_terms2_folded(d[4 * j + 2], d[4 * j + 3], sw.z, sw.w));
                    } else {
                        s[q][0] = ix_fast_add2(s[q][0], ix_fast_terms2(d[4 * j], d[4 * j + 1], sw.x, sw.y, sk0, sw.z, sw.w));
                        s[q][1] = ix_fast_add2(s[q][1], ix_fast_terms2(d[4 * j + 2], d[4 * j + 3], sw.x, sw.y, sk1, sw.z, sw.w));
                    }
                }
#pragma unroll
                for (int q = 0; q < 2; q++)
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        float u = s[q][r];
                        u = __fadd_rn(u, __shfl_xor_sync(0xffffffffu, u, 1));
                        s[q][r] = __fadd_rn(u, __shfl_xor_sync(0xffffffffu, u, 2));
                    }
                /* lane t writes one of the 4 (query, row) sums its row group holds */
                const int q = t >> 1;
                query = qa + q, key = wi * 16 + g + 8 * (t & 1);
                v = t == 0 ? s[0][0] : t == 1 ? s[0][1] : t == 2 ? s[1][0] : s[1][1];
                if (IXF_FOLD_SCALES) v = __fmul_rn(v, (t & 1) ? sk1 : sk0);
            }
            emit(v, query, key, j0 + key < (query == qa ? nva : nvb));
        }
        hci_bar_sync(1 + wg, 128); /* the warpgroup is done with this tile's keys and scales */
    }
    __syncthreads();
    for (int i = tid; i < QTe * 256; i += THREADS)
        if (hist[i]) atomicAdd(&a.hist[(size_t)(q0 + i / 256) * 256 + (i % 256)], hist[i]);
}

template <bool TC, bool PIPE, bool F32 = false, bool REGA = false, bool MIX = false>
int launch(cudaStream_t s, const ixf_args &a, int sms)
{
    constexpr int NWG = nwg(PIPE || REGA), THREADS = NWG * 128;
    constexpr unsigned SMEM = smem_bytes(PIPE || REGA, F32);
    if (cudaFuncSetAttribute(ixw_score<TC, PIPE, F32, REGA, MIX>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM) != cudaSuccess)
        return HC_ERR_CUDA;
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, ixw_score<TC, PIPE, F32, REGA, MIX>, THREADS, SMEM) != cudaSuccess ||
        per_sm < 1) {
        (void)cudaGetLastError(); /* a failed query is not a launch failure */
        per_sm = 1;
    }
    int64_t ne = (a.pos0 + a.rows) / 4;
    int gy = (a.rows + WQ - 1) / WQ;
    int64_t pairs = (ne + IX_TILE - 1) / IX_TILE / NWG + 1, want = (int64_t)(sms > 0 ? sms : 132) * per_sm / gy;
    int gx = (int)(pairs < want ? pairs : (want < 1 ? 1 : want));
    ixw_score<TC, PIPE, F32, REGA, MIX><<<dim3(gx, gy), THREADS, SMEM, s>>>(a);
    return HCI_CU_CHECK_LAUNCH();
}

} // namespace

int wgmma_scores(cudaStream_t s, const ixf_args &a, int sms, int sum)
{
    if (sum == HCI_IX_SUM_F32 && IXF_FOLD_SCALES) return launch<false, false, true>(s, a, sms);
    if (sum == HCI_IX_SUM_TC_PIPE && IXF_FOLD_SCALES) return launch<true, true>(s, a, sms);
    if (sum == HCI_IX_SUM_TC_REGA && IXF_FOLD_SCALES) return launch<true, false, false, true>(s, a, sms);
    if (sum == HCI_IX_SUM_TC_MIX && IXF_FOLD_SCALES) return launch<true, false, false, false, true>(s, a, sms);
    if (sum == HCI_IX_SUM_TC_REGA_MIX && IXF_FOLD_SCALES) return launch<true, false, false, true, true>(s, a, sms);
    if (sum == HCI_IX_SUM_TC && IXF_FOLD_SCALES) return launch<true, false>(s, a, sms);
    return launch<false, false>(s, a, sms);
}

} // namespace ixf
