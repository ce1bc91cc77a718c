/* index_fast.cu - the lightning indexer's scores in fast numerics (option index_fast): the dots on
 * e4m3 tensor cores, the reference's roundings after them.
 *
 * q and the keys hold FP4-grid values (e2m1 x a power of two per 32 elements), so a query head
 * divided by one power of two s_qh (its largest value lands in [4, 8)), and a key divided by
 * s_j = 2^(its largest block exponent), are exact e4m3 values: the dots run on e4m3 tensor cores
 * (mma.m16n8k32, fp32 accumulation) with nothing lost in the inputs. Each head's dot D_h is
 * scaled back exactly, (D_h * s_qh) * s_j, and the score is the reference's (cpu_index.c)
 *   bf16( sum_h bf16( relu( bf16(D_h * s_qh * s_j) ) * w_h ) )
 * (index/config.h: ix_fast_terms2), except that the head sum is fp32, in a fixed order (per lane
 * over its heads in order, then across the 4 lanes of a key row by xor-shuffles, which add the
 * same pairs in every lane), where the reference's is exact. The fp32 sum is the exact one, and
 * the score the reference's, whenever its partial sums are exact (terms within about 2^10 of the
 * largest); otherwise it may differ by an fp32 rounding, which changes the bf16 score only when
 * the exact sum lies that close to a rounding boundary. D_h is the reference's fp32 dot when the
 * tensor core's accumulation is exact (docs/numerics.md).
 *
 * 1. ixf_prep:  per query head, 128 bf16 -> 128 e4m3 bytes, the scale s_qh and the head weight
 *    as it is (a float; index_fast.cuh: ixf_prep_hw), once.
 * 2. ixf_score: CTA = 8 queries (one per warp) x strided tiles of 64 keys (one cache page).
 *    The page's FP4 codes become e4m3 bytes in shared memory (byte permutes, no float math);
 *    each warp holds 32 of the tile's keys as A fragments and streams its query's heads
 *    through B, 8 heads per n-tile, the head terms summed in registers; then one 16-bit score key per
 *    visible (query, key) and a shared-memory histogram of high bytes, as the exact path. */
#include "index_fast.cuh"
#include "index_fast.h"

using namespace ixf;

namespace {

constexpr int QT = 8;         /* queries per CTA: one per warp */
constexpr int THREADS = QT * 32;
constexpr int RS = DIM + 16;  /* shared row stride: 8 rows of an ldmatrix phase hit distinct banks */
constexpr int MAX_HEADS = 64;

__device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 1. One warp per (query, head): 4 values per lane. */
__global__ void __launch_bounds__(256) ixf_prep(const uint16_t *qi, const uint16_t *w, int rows, int IH,
                                                size_t qstride, uint8_t *prep)
{
    int item = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (item >= rows * IH) return;
    int r = item / IH, h = item % IH;
    uint2 raw = *(const uint2 *)(qi + (size_t)item * DIM + 4 * lane);
    float v[4] = {hci_f32_from_bf16((uint16_t)raw.x), hci_f32_from_bf16((uint16_t)(raw.x >> 16)),
                  hci_f32_from_bf16((uint16_t)raw.y), hci_f32_from_bf16((uint16_t)(raw.y >> 16))};
    float am = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, o));
    /* s_qh = 2^(E-2) for amax in [2^E, 2^(E+1)): the largest value lands in [4, 8) */
    int e = ix_fast_qexp(am);
    float s = ix_pow2(e - 129), inv = ix_pow2(129 - e);
    uint32_t packed = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) packed |= (uint32_t)hci_e4m3_encode(hci_e4m3_round(v[i] * inv)) << (8 * i);
    uint8_t *row = prep + (size_t)r * qstride;
    *(uint32_t *)(row + (size_t)h * DIM + 4 * lane) = packed;
    if (lane == 0) { /* s and the weight itself, applied after the dot's rounding (or with s folded in) */
        float *hw = (float *)(row + ixf_prep_hw(IH)) + 4 * (h / 2) + (h & 1);
        float wv = hci_f32_from_bf16(w[item]);
        hw[0] = s;
        hw[2] = IXF_FOLD_SCALES ? hci_round_bf16(__fmul_rn(wv, s)) : wv; /* a bf16 value either way */
    }
}

/* Shared memory of a score CTA: q rows, head scales and weights, one key tile and its scales,
 * histograms. */
__host__ __device__ inline unsigned ixf_smem_bytes(int IH)
{
    return (unsigned)(QT * IH * RS + QT * IH * 8 + IX_TILE * RS + IX_TILE * 4 + QT * 256 * 4);
}

__global__ void __launch_bounds__(THREADS, 2) ixf_score(ixf_args a)
{
    extern __shared__ __align__(16) uint8_t sm[];
    const int IH = a.IH, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    int q0 = blockIdx.y * QT, QTe = min(QT, a.rows - q0);
    int64_t nv_last = (a.pos0 + q0 + QTe) / 4; /* keys visible to the CTA's last query */
    int64_t ntiles = (nv_last + IX_TILE - 1) / IX_TILE;
    if ((int64_t)blockIdx.x >= ntiles) return; /* uniform over the CTA */
    uint8_t *qs = sm;
    float4 *hws = (float4 *)(qs + QT * IH * RS);
    uint8_t *ks = (uint8_t *)(hws + QT * IH / 2);
    float *ksc = (float *)(ks + IX_TILE * RS);
    uint32_t *hist = (uint32_t *)(ksc + IX_TILE);

    /* the queries' e4m3 rows (padded to RS bytes), head scales and weights, the histograms */
    ixf_stage_queries<QT, THREADS>(a, IH, q0, QTe, tid, qs, hws, hist,
                                   [](int r, int c) { return (size_t)r * RS + c * 16; });

    const int qq = warp;
    const int64_t nvq = qq < QTe ? (a.pos0 + q0 + qq + 1) / 4 : 0;
    const uint32_t ks_s = (uint32_t)__cvta_generic_to_shared(ks), qs_s = (uint32_t)__cvta_generic_to_shared(qs);
    /* ldmatrix row addresses: A = keys (matrix i: rows +8*(i&1), bytes +16*(i>>1)); B = heads
     * (matrix i: bytes +16*i of a pair of k-steps) */
    const uint32_t a_off = (uint32_t)(((lane & 7) + ((lane >> 3) & 1) * 8) * RS + (lane >> 4) * 16);
    const uint32_t b_off = (uint32_t)((qq * IH + (lane & 7)) * RS + (lane >> 3) * 16);
    const float4 *hwq = hws + qq * IH / 2;

    auto tile_keys = [&](int64_t tl) { return (int)min((int64_t)IX_TILE, nv_last - tl * IX_TILE); };
    ixf_part next = ixf_fetch(a, a.pages[blockIdx.x], tile_keys(blockIdx.x), tid);
    for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        int64_t j0 = tile * IX_TILE;
        __syncthreads(); /* the previous tile's readers are done; the queries are in */
        {
            uint32_t out[8];
            float sc = ixf_convert(next, out);
            uint4 *dst = (uint4 *)(ks + (size_t)(tid >> 2) * RS + (tid & 3) * 32);
            dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
            dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
            if ((tid & 3) == 0) ksc[tid >> 2] = sc;
        }
        __syncthreads();
        if (tile + gridDim.x < ntiles) next = ixf_fetch(a, a.pages[tile + gridDim.x], tile_keys(tile + gridDim.x), tid);
        if (j0 >= nvq) continue; /* warp-uniform: this query sees none of the tile */
        /* two halves of 32 keys (2 m-tiles): their A fragments stay in registers while the
         * query's heads stream through B */
#pragma unroll 1
        for (int kh = 0; kh < 2; kh++) {
            if (j0 + kh * 32 >= nvq) break; /* warp-uniform */
            uint32_t af[2][4][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int kstep = 0; kstep < 4; kstep++)
                    hci_dev_ldsm_x4(af[mt][kstep], ks_s + a_off + (kh * 2 + mt) * 16 * RS + kstep * 32);
            /* the scales of the 4 keys this lane's fragments hold: rows g and g + 8 of each m-tile */
            float sk[2][2];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int i = 0; i < 2; i++) sk[mt][i] = ksc[kh * 32 + mt * 16 + g + 8 * i];
            float sacc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}}; /* +0: zero terms leave it +0, as the CPU's sum */
#pragma unroll 1
            for (int nt = 0; nt < IH / 8; nt++) {
                uint32_t bf[2][4];
                hci_dev_ldsm_x4(bf[0], qs_s + b_off + nt * 8 * RS);
                hci_dev_ldsm_x4(bf[1], qs_s + b_off + nt * 8 * RS + 64);
                /* heads nt * 8 + 2t, + 1 (columns 2t, 2t + 1 of the n-tile): scales and weights */
                const float4 hw = hwq[nt * 4 + t];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int kstep = 0; kstep < 4; kstep++)
                        mma_e4m3(acc, af[mt][kstep], bf[kstep >> 1][2 * (kstep & 1)], bf[kstep >> 1][2 * (kstep & 1) + 1]);
                    if constexpr (IXF_FOLD_SCALES) {
                        sacc[mt][0] = ix_fast_add2(sacc[mt][0], ix_fast_terms2_folded(acc[0], acc[1], hw.z, hw.w));
                        sacc[mt][1] = ix_fast_add2(sacc[mt][1], ix_fast_terms2_folded(acc[2], acc[3], hw.z, hw.w));
                    } else {
                        sacc[mt][0] = ix_fast_add2(sacc[mt][0],
                                                   ix_fast_terms2(acc[0], acc[1], hw.x, hw.y, sk[mt][0], hw.z, hw.w));
                        sacc[mt][1] = ix_fast_add2(sacc[mt][1],
                                                   ix_fast_terms2(acc[2], acc[3], hw.x, hw.y, sk[mt][1], hw.z, hw.w));
                    }
                }
            }
            /* the 4 lanes of a key row hold its heads 2t, 2t+1 of every n-tile: add them */
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    float v = sacc[mt][i];
                    v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 1));
                    sacc[mt][i] = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 2));
                }
            /* lane t writes one of the 4 keys its row group holds: m-tile t / 2, row g + 8 (t % 2) */
            float v = t == 0 ? sacc[0][0] : t == 1 ? sacc[0][1] : t == 2 ? sacc[1][0] : sacc[1][1];
            int key = kh * 32 + (t >> 1) * 16 + g + (t & 1) * 8;
            bool vis = j0 + key < nvq;
            if (IXF_FOLD_SCALES) v = __fmul_rn(v, ksc[key]);
            uint32_t k16 = ix_key16(hci_bf16_from_f32(v));
            if (vis) a.scores[(size_t)(q0 + qq) * a.stride + j0 + key] = (uint16_t)k16;
            /* near keys score alike: one shared-memory atomic per distinct high byte of the warp */
            unsigned peers = __match_any_sync(0xffffffffu, vis ? k16 >> 8 : 256u + lane);
            if (vis && lane == __ffs(peers) - 1) atomicAdd(&hist[qq * 256 + (k16 >> 8)], (unsigned)__popc(peers));
        }
    }
    __syncthreads();
    for (int i = tid; i < QTe * 256; i += THREADS)
        if (hist[i]) atomicAdd(&a.hist[(size_t)(q0 + i / 256) * 256 + (i % 256)], hist[i]);
}

} // namespace

bool hci_cu_index_fast_ok(const hci_entry_layout *l, int IH, int ID)
{
    return l && l->fmt == HCI_FMT_FP8 && l->fp4 && l->qblock == 32 && ID == DIM && l->dim == DIM &&
           l->data_bytes == DIM / 2 && l->scale_bytes >= DIM / 32 && IH >= 8 && IH <= MAX_HEADS && IH % 8 == 0;
}

size_t hci_cu_index_fast_qstride(int IH)
{
    return hci_align256(ixf_prep_bytes(IH));
}

int hci_cu_index_fast_scores(cudaStream_t s, const hci_entry_layout *l, uint8_t *const *pages, int rows,
                             int64_t pos0, int IH, const uint16_t *qi, const uint16_t *w, uint8_t *prep,
                             uint16_t *scores, int64_t stride, uint32_t *hist, int sms, int sum)
{
    if (!hci_cu_index_fast_ok(l, IH, DIM)) return HC_ERR_UNSUPPORTED;
    if (rows <= 0) return HC_OK;
    int64_t ne = (pos0 + rows) / 4;
    if (ne <= 0) return HC_OK;
    size_t qstride = hci_cu_index_fast_qstride(IH);
    int items = rows * IH;
    ixf_prep<<<(items + 7) / 8, 256, 0, s>>>(qi, w, rows, IH, qstride, prep);
    if (HCI_CU_CHECK_LAUNCH() != HC_OK) return HC_ERR_CUDA;
    ixf_args a;
    a.pages = pages;
    a.data_bytes = l->data_bytes, a.scale_bytes = l->scale_bytes;
    a.prep = prep, a.qstride = qstride;
    a.IH = IH, a.rows = rows;
    a.pos0 = pos0, a.stride = stride;
    a.scores = scores, a.hist = hist;
    if (IH == 64 && hci_cu_device_is_sm90()) return wgmma_scores(s, a, sms, sum);
    unsigned smem = ixf_smem_bytes(IH);
    if (cudaFuncSetAttribute(ixf_score, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess)
        return HC_ERR_CUDA;
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, ixf_score, THREADS, smem) != cudaSuccess || per_sm < 1) {
        (void)cudaGetLastError(); /* a failed query is not a launch failure */
        per_sm = 1;
    }
    int gy = (rows + QT - 1) / QT;
    int64_t ntiles = (ne + IX_TILE - 1) / IX_TILE, want = (int64_t)(sms > 0 ? sms : 132) * per_sm / gy;
    int gx = (int)(ntiles < want ? ntiles : (want < 1 ? 1 : want));
    ixf_score<<<dim3(gx, gy), THREADS, smem, s>>>(a);
    return HCI_CU_CHECK_LAUNCH();
}
