// gemm-check: the FP8 GEMM on Hopper's wgmma (kernels/gemm/gemm_fp8_wgmma.cu, option gemm_wgmma)
// against the mma.sync one (gemm_fp8.cu), bit for bit, and both timed; with --native (below) the
// native FP8 kernel (gemm_fp8_native.cu) against the wgmma one. Needs an sm_90 GPU.
//
// For each V4-Flash projection shape (M, K) and n in {2048, 65, 200}: random e4m3 codes (no NaN
// codes) and random positive scales (powers of two times random mantissas), token rows n..np-1
// zero as act_quant leaves them. Per case:
//   - old vs new: the number of bf16 outputs that differ and the largest difference in ulps (the
//     two tensor-core paths may round a block dot differently in rare cases; the codes reach both
//     in the same order);
//   - the new kernel with every token tile (bn 128, 64, 32, 16) against its own choice: the same
//     bits (a token's result must not depend on the tile);
//   - batch invariance: the rows of n = 65 and 200 equal the first rows of n = 2048, bitwise;
//   - nothing written past row n (sentinels), and the same rows through the kernel's path for a
//     y that does not allow 16-byte stores (ldy = M + 1);
//   - a sample of outputs against the CPU's formula (exact block dots rounded once to fp32;
//     informative: the tensor cores' fp32 accumulation of a block may differ in the last bits);
//   - the median of 20 timed runs of each kernel (cudaEvent, after warm-up, queued behind a spin
//     kernel so that the host's launch overhead is not timed), ms and TFLOP/s.
// Exit 0 when every check passes, 1 when one fails (more than 0.1% of a case's outputs differ
// from the old kernel's big tiles, or any by more than 1 ulp; where the old kernel takes its
// sliced-K path the count is informative; or a tile / invariance / sentinel check), 77
// without a CUDA device or on a GPU other than sm_90, 2 on a CUDA error.
//
// Built with the CUDA module (meson: build-gpu/tools/gemm-check). Options: --quick (n = 200 and
// 2048 only, 5 timed runs), --shape MxK (one shape), --reps N.
//
// --native [--peak TFLOPS] [--codes] [--no-configs] [--no-engine] [--cfg BN/CLUSTER]: the native FP8 kernel
// (kernels/gemm/gemm_fp8_native.cu, option gemm_fp8_native) against the current prefill GEMM
// (gemm_fp8_wgmma.cu, bitwise the CPU's formula on f16 tensor cores), for n in {2048, 200, 65,
// 64, 48, 33, 16} (--quick: 2048, 200, 64). Operands as the model makes them (--codes: uniformly
// random codes instead): activations ~N(0, 1) quantized as act_quant does (power-of-two 1x128
// scales), weights ~N(0, 0.02) with fp32 128x128 block scales (amax / 448). Per case:
//   - accuracy of the native kernel's bf16 outputs against the current kernel's: largest absolute
//     and relative difference, rel L2, share of outputs bitwise equal; and of both against the
//     exact result (double, no rounding) on a sample of outputs (rel L2 over the sample);
//   - every configuration (token tile 128/64/32/16 x cluster 1/2) gives the launcher's bits, the
//     rows of n < 2048 equal those of n = 2048 (batch invariance), a second run gives the same
//     bits, nothing is written past row n, and the scalar-store path (ldy = M + 1) the same rows;
//   - the median time of both kernels, TFLOP/s and the native kernel's share of the FP8 peak
//     (--peak, default 1979: the H100 SXM's dense FP8 rate at boost clock), and (unless
//     --no-configs) the time of every configuration, to tune the launcher's choice.
// --cfg BN/CLUSTER (e.g. 128/1) runs that configuration only, instead of the launcher's choice and
// every configuration (to tell a failing configuration from the others).
// Then (unless --no-engine) the engine's cases (engine_cases): the operands made from bf16 tokens by
// the real act_quant into one scratch buffer as hci_cu_linear_fp8 lays it out, test_gpu's and the
// golden test's piece sizes (129, 300, 700; full: also 256, 500, 2048), every configuration, and
//   - operands whose block dots the tensor cores compute exactly (small grid codes, random
//     power-of-two scales): the native kernel must give the current kernel's bits;
//   - operands of hc_model_create_random's distribution: the share of outputs off the current
//     kernel's (the CPU's formula), which the engine absorbs up to FAITHFUL_SHARE, and on a sample
//     how many outputs two host models of the tensor cores' truncated accumulation reproduce.
// Exit 0 when every bitwise check passes and no case's rel L2 against the current kernel exceeds
// 1e-2 (a wrong layout or scale gives ~1), 1 otherwise, 3 when all passes but more outputs are off
// the CPU's formula than the engine absorbs (whole layers then leave FAST's tolerance: the native
// kernel's 2e-2 of 2026-12-07, docs/perf/NEXT-gemm-native.md), 77 and 2 as above.
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "gpu_timing.cuh"
#include "backend/cuda/kernels/gemm/gemm.h"
#include "backend/cuda/kernels/quant/quant.h"
#include "gpu_ck.cuh"
extern "C" {
#include "hybridctx.h"
#include "util/bf16.h"
#include "util/quant.h"
}


namespace {

const uint16_t SENTINEL = 0x7fc1; /* a bf16 NaN no kernel writes */

uint64_t rng_state = 0x243f6a8885a308d3ull;
uint64_t rnd()
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* an e4m3 code, every finite one equally likely */
uint8_t rnd_code()
{
    for (;;) {
        uint8_t c = (uint8_t)rnd();
        if ((c & 0x7f) != 0x7f) return c;
    }
}

/* 2^e times a random mantissa in [1, 2), e in [lo, hi] */
float rnd_scale(int lo, int hi)
{
    int e = lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
    float m = 1.0f + (float)(rnd() >> 41) * 0x1p-23f;
    return std::ldexp(m, e);
}

/* bf16 bits as an integer that orders like the values (NaNs far away) */
int64_t bf16_ord(uint16_t h)
{
    if ((h & 0x7fff) > 0x7f80) return INT32_MAX;
    return (h & 0x8000) ? -(int64_t)(h & 0x7fff) : (int64_t)(h & 0x7fff);
}
int64_t ulps(uint16_t a, uint16_t b) { return std::llabs(bf16_ord(a) - bf16_ord(b)); }

struct Cmp {
    int64_t differ = 0, max_ulp = 0;
};
/* rows 0..n-1, M values each, leading dims lda and ldb */
Cmp compare(const uint16_t *a, int lda, const uint16_t *b, int ldb, int n, int M)
{
    Cmp c;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < M; r++) {
            uint16_t x = a[(size_t)t * lda + r], y = b[(size_t)t * ldb + r];
            if (x != y) {
                c.differ++;
                c.max_ulp = std::max(c.max_ulp, ulps(x, y));
            }
        }
    return c;
}

typedef int (*gemm_fn)(cudaStream_t, const uint8_t *, const float *, int, int, int, const uint8_t *, const float *,
                       int, int, uint16_t *, int);

struct Dev {
    uint8_t *W = nullptr, *xq = nullptr;
    float *Ws = nullptr, *xs = nullptr;
    uint16_t *y = nullptr;
};


/* the CPU's formula for output (t, r): block dots exact (double), rounded once to fp32, then
 * fl32(acc + fl32(P * fl32(fl32(xs*ws) * 2^16))) in k order, where P is the dot of the codes'
 * values times 2^-16 (the f16 operands' scaling) */
uint16_t cpu_out(const std::vector<uint8_t> &W, const std::vector<float> &Ws, int sld, int K,
                 const std::vector<uint8_t> &X, const std::vector<float> &xs, int npx, int t, int r)
{
    float acc = 0.0f;
    for (int kb = 0; kb < K / 128; kb++) {
        double d = 0;
        for (int k = kb * 128; k < kb * 128 + 128; k++)
            d += (double)hci_e4m3_value(W[(size_t)r * K + k]) * (double)hci_e4m3_value(X[(size_t)t * K + k]);
        float P = (float)std::ldexp(d, -16);
        volatile float s = xs[(size_t)kb * npx + t] * Ws[(size_t)(r / 128) * sld + kb];
        volatile float s16 = s * 65536.0f;
        volatile float term = P * s16;
        acc = acc + term;
    }
    return hci_bf16_from_f32(acc);
}

/* ---------------------------------------------------------------- --native */

/* a standard normal sample (Box-Muller on rnd) */
double rnd_normal()
{
    const double u1 = ((double)(rnd() >> 11) + 0.5) * 0x1p-53, u2 = (double)(rnd() >> 11) * 0x1p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

/* codes and scales of the native-mode operands: W [M][K] with fp32 128x128 block scales
 * Ws [M/128][sld] (amax / 448), X [N][K] with power-of-two 1x128 scales xs [K/128][N] (act_quant's
 * rule); or, with codes, uniformly random finite codes and rnd_scale scales */
void make_operands(bool codes, int M, int K, int N, int sld, std::vector<uint8_t> &W, std::vector<float> &Ws,
                   std::vector<uint8_t> &X, std::vector<float> &xs)
{
    const int nkb = K / 128;
    W.assign((size_t)M * K, 0), X.assign((size_t)N * K, 0);
    Ws.assign((size_t)(M / 128) * sld, 0.0f), xs.assign((size_t)nkb * N, 0.0f);
    if (codes) {
        for (auto &c : W) c = rnd_code();
        for (auto &c : X) c = rnd_code();
        for (auto &v : Ws) v = rnd_scale(-12, -6);
        for (auto &v : xs) v = rnd_scale(-12, -6);
        return;
    }
    std::vector<float> v((size_t)128 * K);
    for (int mb = 0; mb < M / 128; mb++) {
        for (auto &e : v) e = (float)(0.02 * rnd_normal());
        for (int kb = 0; kb < nkb; kb++) {
            float amax = 0.0f;
            for (int r = 0; r < 128; r++)
                for (int k = 0; k < 128; k++) amax = std::max(amax, std::fabs(v[(size_t)r * K + kb * 128 + k]));
            const float sc = amax > 0.0f ? amax / HCI_E4M3_MAX : 1.0f;
            Ws[(size_t)mb * sld + kb] = sc;
            for (int r = 0; r < 128; r++)
                for (int k = 0; k < 128; k++) {
                    const float u = std::min(std::max(v[(size_t)r * K + kb * 128 + k] / sc, -HCI_E4M3_MAX), HCI_E4M3_MAX);
                    W[(size_t)(mb * 128 + r) * K + kb * 128 + k] = hci_e4m3_encode(hci_e4m3_round(u));
                }
        }
    }
    std::vector<float> xr(K);
    for (int t = 0; t < N; t++) {
        for (auto &e : xr) e = hci_round_bf16((float)rnd_normal());
        for (int kb = 0; kb < nkb; kb++) {
            float amax = 0.0f;
            for (int k = 0; k < 128; k++) amax = std::max(amax, std::fabs(xr[kb * 128 + k]));
            const int e = hci_pow2_ceil_exp(std::max(amax, 1e-4f), 1.0f / HCI_E4M3_MAX);
            const float sc = hci_pow2(e), inv = hci_pow2(-e);
            xs[(size_t)kb * N + t] = sc;
            for (int k = 0; k < 128; k++) {
                const float u = std::min(std::max(xr[kb * 128 + k] * inv, -HCI_E4M3_MAX), HCI_E4M3_MAX);
                X[(size_t)t * K + kb * 128 + k] = hci_e4m3_encode(hci_e4m3_round(u));
            }
        }
    }
}

/* the exact y[t][r] (double: every product and sum exact up to double rounding) */
double exact_out(const std::vector<uint8_t> &W, const std::vector<float> &Ws, int sld, int K,
                 const std::vector<uint8_t> &X, const std::vector<float> &xs, int npx, int t, int r)
{
    double y = 0;
    for (int kb = 0; kb < K / 128; kb++) {
        double d = 0;
        for (int k = kb * 128; k < kb * 128 + 128; k++)
            d += (double)hci_e4m3_value(W[(size_t)r * K + k]) * (double)hci_e4m3_value(X[(size_t)t * K + k]);
        y += d * (double)xs[(size_t)kb * npx + t] * (double)Ws[(size_t)(r / 128) * sld + kb];
    }
    return y;
}

struct Acc {
    double max_abs = 0, max_rel = 0, d2 = 0, r2 = 0;
    int64_t equal = 0, count = 0;
};
/* a (bf16, leading dim M) against ref (bf16, leading dim M), rows 0..n-1 */
Acc accuracy(const uint16_t *a, const uint16_t *ref, int n, int M)
{
    Acc s;
    for (size_t i = 0; i < (size_t)n * M; i++) {
        const double x = hci_f32_from_bf16(a[i]), y = hci_f32_from_bf16(ref[i]), d = std::fabs(x - y);
        s.equal += a[i] == ref[i];
        s.count++;
        s.max_abs = std::max(s.max_abs, d);
        if (y != 0) s.max_rel = std::max(s.max_rel, d / std::fabs(y));
        s.d2 += d * d, s.r2 += y * y;
    }
    return s;
}

/* ---------------------------------------------------------------- --native: the engine's cases */

/* The FP8 tensor cores' block dot, as a model of Hopper's e4m3 wgmma (products exact, the
 * accumulator kept to 13 fraction bits by truncation toward zero), in two variants: TC_CHAIN adds
 * each k32 step's 32 exact products to the running value (the first step from zero) and truncates
 * the result to 14 significant bits; TC_ALIGN first truncates the products and the running value
 * at 13 bits below the largest of them, then the sum likewise. Informative: whether the kernel's
 * differences from the CPU's formula are the hardware's arithmetic or something else. */
enum { TC_EXACT, TC_CHAIN, TC_ALIGN, TC_MODELS };

double trunc_sig(double v, int bits)
{
    if (v == 0) return 0;
    int e;
    const double m = std::frexp(std::fabs(v), &e), q = std::ldexp(std::floor(std::ldexp(m, bits)), e - bits);
    return v < 0 ? -q : q;
}

double trunc_at(double v, int e)
{
    const double u = std::ldexp(1.0, e), q = std::floor(std::fabs(v) / u) * u;
    return v < 0 ? -q : q;
}

/* one 128-k block: w and x the codes' values */
float tc_block(const float *w, const float *x, int model)
{
    double d = 0;
    for (int kk = 0; kk < 4; kk++) {
        double p[32], mx = std::fabs(d), s = 0;
        for (int i = 0; i < 32; i++) {
            p[i] = (double)w[32 * kk + i] * (double)x[32 * kk + i];
            mx = std::max(mx, std::fabs(p[i]));
        }
        if (model == TC_ALIGN && mx > 0) {
            int e;
            std::frexp(mx, &e); /* mx in [2^(e-1), 2^e) */
            s = trunc_at(d, e - 14);
            for (int i = 0; i < 32; i++) s += trunc_at(p[i], e - 14);
        } else {
            s = d;
            for (int i = 0; i < 32; i++) s += p[i]; /* exact in double */
        }
        d = trunc_sig(s, 14);
    }
    return (float)d;
}

/* y[t][r] by a model: TC_EXACT is the CPU backend's formula (cpu_linear.c: the exact block dot
 * rounded to fp32, times fl32(xs * ws), added), the others the kernel's promotion of a modelled
 * block dot, fma(P, fl32(xs * ws), acc). wv: W's values [M][K]; xv: the quantized tokens' values
 * [np][K]; xs [K/128][np]. */
uint16_t model_out(const std::vector<float> &wv, const std::vector<float> &Ws, int sld, int K,
                   const std::vector<float> &xv, const std::vector<float> &xs, int np, int t, int r, int model)
{
    float acc = 0.0f;
    for (int kb = 0; kb < K / 128; kb++) {
        const float *w = wv.data() + (size_t)r * K + kb * 128, *x = xv.data() + (size_t)t * K + kb * 128;
        volatile float s = xs[(size_t)kb * np + t] * Ws[(size_t)(r / 128) * sld + kb];
        if (model == TC_EXACT) {
            double d = 0;
            for (int k = 0; k < 128; k++) d += (double)w[k] * (double)x[k];
            volatile float term = (float)d * s;
            acc = acc + term;
        } else {
            acc = std::fmaf(tc_block(w, x, model), s, acc);
        }
    }
    return hci_bf16_from_f32(acc);
}

/* Operands of the engine's cases. GRID: weight codes in {0, +-0.5, +-1, +-1.5, +-2} and token
 * values c * s with c in {0, +-64, +-128, +-192, +-256} (each 128-block holding a 256, so that
 * act_quant's scale is s and its codes are c), random power-of-two scales (2^-10..2^-8 per weight
 * block, 2^-3..1 per token block): every partial sum of a block is a multiple of 32 of at most
 * 2^16, exact in the tensor cores' accumulator, and every sum of the scaled blocks is a multiple
 * of 2^-8 below 2^14, exact in fp32 in any order, so the native kernel must give the current
 * kernel's bits and any difference is a fault of layout, scales or addressing. RND: hc_model_create_random's FP8 weights (lib/model/model.c:
 * codes of std 48, a power-of-two scale per block near 1/sqrt(K) times 1 or 2) and N(0, 1)
 * tokens, as in test_gpu. */
enum { OP_GRID, OP_RND };

void engine_operands(int kind, int M, int K, int N, int sld, std::vector<uint8_t> &W, std::vector<float> &Ws,
                     std::vector<uint16_t> &x)
{
    const int nkb = K / 128;
    W.resize((size_t)M * K), Ws.assign((size_t)(M / 128) * sld, 1.0f), x.resize((size_t)N * K);
    if (kind == OP_GRID) {
        static const float wgrid[9] = {0.0f, 0.5f, -0.5f, 1.0f, -1.0f, 1.5f, -1.5f, 2.0f, -2.0f};
        static const float cgrid[9] = {0.0f, 64.0f, -64.0f, 128.0f, -128.0f, 192.0f, -192.0f, 256.0f, -256.0f};
        for (auto &c : W) c = hci_e4m3_encode(wgrid[rnd() % 9]);
        for (int i = 0; i < M / 128; i++)
            for (int kb = 0; kb < nkb; kb++) Ws[(size_t)i * sld + kb] = hci_pow2(-10 + (int)(rnd() % 3));
        for (int t = 0; t < N; t++)
            for (int kb = 0; kb < nkb; kb++) {
                const float s = hci_pow2(-3 + (int)(rnd() % 4));
                const int big = (int)(rnd() % 128);
                for (int k = 0; k < 128; k++) {
                    const float c = k == big ? (rnd() & 1 ? 256.0f : -256.0f) : cgrid[rnd() % 9];
                    x[(size_t)t * K + kb * 128 + k] = hci_bf16_from_f32(c * s);
                }
            }
        return;
    }
    int e = 0;
    while ((1 << (e + 1)) * (1 << (e + 1)) <= K) e++; /* 2^e ~ sqrt(K), as the random model */
    for (auto &c : W) c = hci_e4m3_encode(hci_e4m3_round((float)(48.0 * rnd_normal())));
    for (int i = 0; i < M / 128; i++)
        for (int kb = 0; kb < nkb; kb++) Ws[(size_t)i * sld + kb] = hci_pow2(-e - 7 + (int)(rnd() & 1));
    for (auto &v : x) v = hci_bf16_from_f32((float)rnd_normal());
}

/* The share of one projection's outputs that may differ from the CPU's by an ulp while test_gpu's
 * FAST layers stay within 1e-2: a CPU emulation of its tiny run (every FP8 projection of more than
 * 64 tokens with a random ulp in a share p of its outputs) gave layers 3-6e-3 from the exact run
 * at p = 1e-4, 1e-2 at 1e-3, 1.4e-2 at 5e-3 and 2e-2 at 2e-2: the FP8 quantizations after the
 * projections (act_quant of c and of wo_a's output, the FP8-simulated KV) round a small change to
 * a whole e4m3 step now and then, which grows as its square root (NEXT-gemm-native.md). */
const double FAITHFUL_SHARE = 2e-4;

struct EngineSummary {
    int cases = 0, faults = 0;
    double worst_share = 0;
};

/* The native kernel on the engine's path: x (bf16 [n][K]) through the real act_quant into one
 * scratch buffer as hci_cu_linear_fp8 lays it out (q at the start, the scales at align256(np K)),
 * piece sizes of test_gpu and the golden test (129, 300, 700; full: also 256, 500, 2048), y [n][M];
 * the current kernel (gemm_wgmma's) for reference. GRID cases must match it bit for bit (and
 * every configuration the launcher's choice); RND cases give the share of outputs off the CPU's
 * formula, which the engine tolerates up to FAITHFUL_SHARE, and a sample against the models of
 * the tensor cores' arithmetic. */
void engine_cases(bool quick, int only_m, int only_k, const int (*shapes)[2], int nshapes, EngineSummary &sum)
{
    const int ns_full[6] = {129, 256, 300, 500, 700, 2048}, ns_quick[3] = {129, 300, 700};
    const int *ns = quick ? ns_quick : ns_full, nn = quick ? 3 : 6, NE = ns[nn - 1], NEP = (NE + 15) & ~15;
    const int BNS[4] = {128, 64, 32, 16}, SAMPLE = quick ? 1024 : 4096;
    for (int si = 0; si < nshapes; si++) {
        const int M = shapes[si][0], K = shapes[si][1], nkb = K / 128, sld = (nkb + 3) & ~3;
        if (only_m && (M != only_m || K != only_k)) continue;
        for (int kind = OP_GRID; kind <= OP_RND; kind++) {
            std::vector<uint8_t> W;
            std::vector<float> Ws;
            std::vector<uint16_t> x;
            engine_operands(kind, M, K, NE, sld, W, Ws, x);
            std::vector<float> wv(W.size());
            for (size_t i = 0; i < W.size(); i++) wv[i] = hci_e4m3_value(W[i]);
            uint8_t *dW = nullptr, *scratch = nullptr;
            float *dWs = nullptr;
            uint16_t *dx = nullptr, *y_cur = nullptr, *y_nat = nullptr;
            const size_t q_bytes = hci_align256((size_t)NEP * K), yelems = (size_t)(NE + 1) * M;
            const size_t ybytes = yelems * 2;
            CK(cudaMalloc(&dW, W.size()));
            CK(cudaMalloc(&dWs, Ws.size() * 4));
            CK(cudaMalloc(&dx, x.size() * 2));
            CK(cudaMalloc(&scratch, q_bytes + (size_t)NEP * nkb * 4));
            CK(cudaMalloc(&y_cur, ybytes));
            CK(cudaMalloc(&y_nat, ybytes));
            CK(cudaMemcpy(dW, W.data(), W.size(), cudaMemcpyHostToDevice));
            CK(cudaMemcpy(dWs, Ws.data(), Ws.size() * 4, cudaMemcpyHostToDevice));
            CK(cudaMemcpy(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
            std::vector<uint16_t> h_cur(yelems), h_nat(yelems), h_cfg(yelems), fill(yelems, SENTINEL);
            for (int ni = 0; ni < nn; ni++) {
                const int n = ns[ni], np = (n + 15) & ~15;
                /* hci_cu_linear_fp8's scratch: codes at the start, scales after align256(np K) */
                uint8_t *q = scratch;
                float *qs = (float *)(scratch + hci_align256((size_t)np * K));
                if (hci_cu_act_quant(0, dx, K, n, np, K, q, qs) != HC_OK) {
                    fprintf(stderr, "act_quant failed: %s\n", cudaGetErrorString(cudaGetLastError()));
                    exit(2);
                }
                auto run = [&](int which, int bn, int cl, uint16_t *y, std::vector<uint16_t> &h) {
                    CK(cudaMemcpy(y, fill.data(), ybytes, cudaMemcpyHostToDevice));
                    int st = which ? hci_cu_gemm_fp8_native_cfg(0, dW, dWs, sld, M, K, q, qs, np, n, y, M, bn, cl)
                                   : hci_cu_gemm_fp8_wgmma(0, dW, dWs, sld, M, K, q, qs, np, n, y, M);
                    if (!which && st == HC_ERR_INVALID_ARG) /* a shape the wgmma kernel leaves to gemm_fp8.cu */
                        st = hci_cu_gemm_fp8(0, dW, dWs, sld, M, K, q, qs, np, n, y, M);
                    if (st != HC_OK) {
                        fprintf(stderr, "engine M=%d K=%d n=%d: %s kernel status %d (%s)\n", M, K, n,
                                which ? "native" : "current", st, cudaGetErrorString(cudaGetLastError()));
                        exit(2);
                    }
                    CK(cudaDeviceSynchronize());
                    CK(cudaMemcpy(h.data(), y, ybytes, cudaMemcpyDeviceToHost));
                };
                run(0, 0, 0, y_cur, h_cur);
                run(1, 0, 0, y_nat, h_nat);
                bool ok = true;
                const Cmp c = compare(h_nat.data(), M, h_cur.data(), M, n, M);
                const Acc acc = accuracy(h_nat.data(), h_cur.data(), n, M);
                const double share = (double)c.differ / ((double)n * M);
                const double l2 = acc.r2 > 0 ? std::sqrt(acc.d2 / acc.r2) : 0.0;
                int64_t past = 0;
                for (size_t i = (size_t)n * M; i < yelems; i++) past += h_nat[i] != SENTINEL;
                if (past) ok = false, printf("  past-n: %lld values written\n", (long long)past);
                int cfg_bad = 0;
                for (int bn : BNS)
                    for (int cl = 1; cl <= 2; cl++) {
                        run(1, bn, cl, y_nat, h_cfg);
                        cfg_bad += compare(h_nat.data(), M, h_cfg.data(), M, NE + 1, M).differ != 0;
                    }
                if (cfg_bad) ok = false, printf("  %d configurations differ from the launcher's choice\n", cfg_bad);
                printf("engine M=%5d K=%4d n=%4d %-4s | native vs current: %lld of %lld outputs differ (%.4f%%, "
                       "max %lld ulp), rel L2 %.3g | configs %s",
                       M, K, n, kind == OP_GRID ? "grid" : "rnd", (long long)c.differ, (long long)n * M, 100.0 * share,
                       (long long)c.max_ulp, l2, cfg_bad ? "FAIL" : "ok");
                if (kind == OP_GRID) {
                    /* exact block dots: any difference is the kernel's or the integration's fault */
                    if (c.differ) ok = false;
                    printf(" | exact operands: %s\n", c.differ ? "FAIL (a layout, scale or addressing fault)" : "ok");
                } else {
                    /* a sample against the CPU's formula and the tensor-core models, on the operands
                     * the kernel read (act_quant's codes and scales) */
                    std::vector<uint8_t> hq((size_t)np * K);
                    std::vector<float> hqs((size_t)nkb * np), xv((size_t)np * K);
                    CK(cudaMemcpy(hq.data(), q, hq.size(), cudaMemcpyDeviceToHost));
                    CK(cudaMemcpy(hqs.data(), qs, hqs.size() * 4, cudaMemcpyDeviceToHost));
                    for (size_t i = 0; i < hq.size(); i++) xv[i] = hci_e4m3_value(hq[i]);
                    int64_t eq_nat[TC_MODELS] = {0}, eq_cur = 0;
                    for (int i = 0; i < SAMPLE; i++) {
                        const int t = (int)(rnd() % (uint64_t)n), r = (int)(rnd() % (uint64_t)M);
                        const uint16_t v = h_nat[(size_t)t * M + r];
                        for (int m = 0; m < TC_MODELS; m++) {
                            const uint16_t e = model_out(wv, Ws, sld, K, xv, hqs, np, t, r, m);
                            eq_nat[m] += v == e;
                            if (m == TC_EXACT) eq_cur += h_cur[(size_t)t * M + r] == e;
                        }
                    }
                    const bool faithful = share <= FAITHFUL_SHARE;
                    sum.worst_share = std::max(sum.worst_share, share);
                    printf(" | sample of %d equal to the CPU's formula: native %.2f%% current %.2f%%; to the "
                           "tensor-core models: chain %.2f%% align %.2f%% | faithful %s\n",
                           SAMPLE, 100.0 * eq_nat[TC_EXACT] / SAMPLE, 100.0 * eq_cur / SAMPLE,
                           100.0 * eq_nat[TC_CHAIN] / SAMPLE, 100.0 * eq_nat[TC_ALIGN] / SAMPLE,
                           faithful ? "yes" : "NO");
                }
                fflush(stdout);
                sum.cases++;
                sum.faults += !ok;
            }
            CK(cudaFree(dW));
            CK(cudaFree(dWs));
            CK(cudaFree(dx));
            CK(cudaFree(scratch));
            CK(cudaFree(y_cur));
            CK(cudaFree(y_nat));
        }
    }
}

int native_main(bool quick, int reps, int only_m, int only_k, double peak, bool codes, bool configs, int fbn, int fcl,
                bool engine, const cudaDeviceProp &prop)
{
    printf("gemm-check --native on %s (%d SMs), FP8 peak %.0f TFLOP/s, %s operands", prop.name,
           prop.multiProcessorCount, peak, codes ? "random-code" : "model-like");
    if (fbn) printf(", configuration %d/%d only", fbn, fcl);
    printf("\n");
    /* V4-Flash's projections, then the tiny preset's (the golden set's: K of 256 and 512) */
    const int shapes[9][2] = {{1024, 4096}, {32768, 1024}, {4096, 8192}, {512, 4096}, {8192, 1024},
                              {1024, 256},  {256, 512},    {128, 512},   {512, 512}};
    const int ns_full[7] = {2048, 200, 65, 64, 48, 33, 16}, ns_quick[3] = {2048, 200, 64};
    const int *ns = quick ? ns_quick : ns_full, nn = quick ? 3 : 7;
    const int NMAX = 2048, BNS[4] = {128, 64, 32, 16};
    int cases = 0, failed = 0;
    double worst_l2 = 0, sum_cur_ms = 0, sum_nat_ms = 0, sum_flop = 0;

    for (const auto &sh : shapes) {
        const int M = sh[0], K = sh[1], nkb = K / 128, sld = (nkb + 3) & ~3;
        if (only_m && (M != only_m || K != only_k)) continue;
        std::vector<uint8_t> W, X;
        std::vector<float> Ws, xs;
        make_operands(codes, M, K, NMAX, sld, W, Ws, X, xs);
        Dev d;
        CK(cudaMalloc(&d.W, W.size()));
        CK(cudaMalloc(&d.Ws, Ws.size() * 4));
        CK(cudaMalloc(&d.xq, X.size()));
        CK(cudaMalloc(&d.xs, xs.size() * 4));
        const size_t yelems = (size_t)(NMAX + 1) * (M + 8), ybytes = yelems * 2;
        uint16_t *y_cur = nullptr, *y_nat = nullptr;
        CK(cudaMalloc(&y_cur, ybytes));
        CK(cudaMalloc(&y_nat, ybytes));
        CK(cudaMemcpy(d.W, W.data(), W.size(), cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d.Ws, Ws.data(), Ws.size() * 4, cudaMemcpyHostToDevice));
        std::vector<uint16_t> ref_nat; /* the native kernel's rows at n = 2048 */

        for (int ni = 0; ni < nn; ni++) {
            const int n = ns[ni], np = (n + 15) & ~15;
            std::vector<uint8_t> xq((size_t)np * K, 0);
            memcpy(xq.data(), X.data(), (size_t)n * K);
            std::vector<float> xsn((size_t)nkb * np, 1.0f); /* act_quant: padding rows scale 1, codes 0 */
            for (int kb = 0; kb < nkb; kb++)
                for (int t = 0; t < n; t++) xsn[(size_t)kb * np + t] = xs[(size_t)kb * NMAX + t];
            CK(cudaMemcpy(d.xq, xq.data(), xq.size(), cudaMemcpyHostToDevice));
            CK(cudaMemcpy(d.xs, xsn.data(), xsn.size() * 4, cudaMemcpyHostToDevice));

            std::vector<uint16_t> h_cur(yelems), h_nat(yelems), h_cfg(yelems), fill(yelems, SENTINEL);
            auto reset = [&](uint16_t *y) { CK(cudaMemcpy(y, fill.data(), ybytes, cudaMemcpyHostToDevice)); };
            auto fetch = [&](std::vector<uint16_t> &h, uint16_t *y) {
                CK(cudaDeviceSynchronize());
                CK(cudaMemcpy(h.data(), y, ybytes, cudaMemcpyDeviceToHost));
            };
            /* the current prefill GEMM: the wgmma kernel (the default), else the mma.sync one */
            gemm_fn cur = hci_cu_gemm_fp8_wgmma;
            auto run_cur = [&](uint16_t *y) {
                int st = cur(0, d.W, d.Ws, sld, M, K, d.xq, d.xs, np, n, y, M);
                if (st == HC_ERR_INVALID_ARG && cur != hci_cu_gemm_fp8) {
                    cur = hci_cu_gemm_fp8;
                    st = cur(0, d.W, d.Ws, sld, M, K, d.xq, d.xs, np, n, y, M);
                }
                if (st != HC_OK) {
                    fprintf(stderr, "M=%d K=%d n=%d: current kernel status %d\n", M, K, n, st);
                    exit(2);
                }
            };
            auto run_nat = [&](int bn, int cl, uint16_t *y, int ldy) {
                int st = hci_cu_gemm_fp8_native_cfg(0, d.W, d.Ws, sld, M, K, d.xq, d.xs, np, n, y, ldy, bn, cl);
                if (st != HC_OK) {
                    fprintf(stderr, "M=%d K=%d n=%d bn=%d cluster=%d: native kernel status %d (%s)\n", M, K, n, bn,
                            cl, st, cudaGetErrorString(cudaGetLastError()));
                    exit(2);
                }
            };
            reset(y_cur);
            reset(y_nat);
            run_cur(y_cur);
            run_nat(fbn, fcl, y_nat, M);
            fetch(h_cur, y_cur);
            fetch(h_nat, y_nat);

            bool ok = true;
            int64_t past = 0;
            for (size_t i = (size_t)n * M; i < h_nat.size(); i++) past += h_nat[i] != SENTINEL;
            if (past) ok = false, printf("  past-n: %lld values written\n", (long long)past);
            const Acc acc = accuracy(h_nat.data(), h_cur.data(), n, M);
            const double l2 = acc.r2 > 0 ? std::sqrt(acc.d2 / acc.r2) : 0.0;
            worst_l2 = std::max(worst_l2, l2);
            if (!(l2 <= 1e-2)) ok = false;
            /* a sample against the exact result */
            double e_cur = 0, e_nat = 0, e_ref = 0;
            for (int i = 0; i < 256; i++) {
                const int t = (int)(rnd() % (uint64_t)n), r = (int)(rnd() % (uint64_t)M);
                const double ex = exact_out(W, Ws, sld, K, X, xs, NMAX, t, r);
                const double c = hci_f32_from_bf16(h_cur[(size_t)t * M + r]), v = hci_f32_from_bf16(h_nat[(size_t)t * M + r]);
                e_cur += (c - ex) * (c - ex), e_nat += (v - ex) * (v - ex), e_ref += ex * ex;
            }
            e_cur = e_ref > 0 ? std::sqrt(e_cur / e_ref) : 0, e_nat = e_ref > 0 ? std::sqrt(e_nat / e_ref) : 0;
            /* determinism */
            reset(y_nat);
            run_nat(fbn, fcl, y_nat, M);
            fetch(h_cfg, y_nat);
            const int64_t rerun = compare(h_nat.data(), M, h_cfg.data(), M, NMAX, M).differ;
            if (rerun) ok = false, printf("  second run: %lld outputs differ\n", (long long)rerun);
            /* every configuration */
            int cfg_bad = 0;
            for (int bn : BNS)
                for (int cl = 1; cl <= 2; cl++) {
                    if (fbn && (bn != fbn || cl != fcl)) continue;
                    reset(y_nat);
                    run_nat(bn, cl, y_nat, M);
                    fetch(h_cfg, y_nat);
                    const Cmp cb = compare(h_nat.data(), M, h_cfg.data(), M, NMAX, M); /* sentinels included */
                    if (cb.differ) {
                        cfg_bad++;
                        printf("  bn=%d cluster=%d: %lld outputs differ from the launcher's choice (max %lld ulp)\n", bn,
                               cl, (long long)cb.differ, (long long)cb.max_ulp);
                    }
                }
            if (cfg_bad) ok = false;
            /* scalar stores */
            reset(y_nat);
            run_nat(fbn, fcl, y_nat, M + 1);
            fetch(h_cfg, y_nat);
            int64_t unaligned = compare(h_nat.data(), M, h_cfg.data(), M + 1, n, M).differ;
            for (int t = 0; t < n; t++) unaligned += h_cfg[(size_t)t * (M + 1) + M] != SENTINEL;
            for (size_t i = (size_t)n * (M + 1); i < h_cfg.size(); i++) unaligned += h_cfg[i] != SENTINEL;
            if (unaligned) ok = false, printf("  ldy=M+1: %lld outputs wrong\n", (long long)unaligned);
            /* batch invariance */
            const char *inv = "-";
            if (n == NMAX) {
                ref_nat = h_nat;
            } else if (!ref_nat.empty()) {
                const Cmp ci = compare(ref_nat.data(), M, h_nat.data(), M, n, M);
                inv = ci.differ ? "FAIL" : "ok";
                if (ci.differ) {
                    ok = false;
                    printf("  invariance: %lld outputs of n=%d differ from n=%d\n", (long long)ci.differ, n, NMAX);
                }
            }
            /* timing */
            const double ms_cur = hc_timing::time_ms([&] { run_cur(y_cur); }, reps);
            const double ms_nat = hc_timing::time_ms([&] { run_nat(fbn, fcl, y_nat, M); }, reps);
            CK(cudaGetLastError());
            const double flop = 2.0 * M * K * n, tf_nat = flop / ms_nat * 1e-9;
            int pbn = 0, pcl = 0;
            hci_cu_gemm_fp8_native_pick(M, np, &pbn, &pcl);
            if (fbn) pbn = fbn, pcl = fcl;
            printf("M=%5d K=%4d n=%4d | current %8.4f ms %6.1f TF/s | native bn=%3d cl=%d %8.4f ms %6.1f TF/s "
                   "%5.1f%% of peak x%.2f | vs current: equal %.4f max abs %.3g max rel %.3g rel L2 %.3g | vs exact "
                   "(sample) current %.3g native %.3g | configs %s | invariant %s | %s\n",
                   M, K, n, ms_cur, flop / ms_cur * 1e-9, pbn, pcl, ms_nat, tf_nat, 100.0 * tf_nat / peak,
                   ms_cur / ms_nat, (double)acc.equal / (double)acc.count, acc.max_abs, acc.max_rel, l2, e_cur, e_nat,
                   cfg_bad ? "FAIL" : "ok", inv, ok ? "ok" : "FAIL");
            if (configs && !fbn) {
                printf("  configs:");
                double best = 1e30;
                int bbn = 0, bcl = 0;
                for (int bn : BNS)
                    for (int cl = 1; cl <= 2; cl++) {
                        const double ms = hc_timing::time_ms([&] { run_nat(bn, cl, y_nat, M); }, std::max(3, reps / 4));
                        printf(" %d/%d %.4f", bn, cl, ms);
                        if (ms < best) best = ms, bbn = bn, bcl = cl;
                    }
                printf(" ms | fastest %d/%d (%.1f TF/s), launcher's %d/%d\n", bbn, bcl, flop / best * 1e-9, pbn, pcl);
            }
            fflush(stdout);
            cases++;
            failed += !ok;
            sum_cur_ms += ms_cur, sum_nat_ms += ms_nat, sum_flop += flop;
        }
        CK(cudaFree(d.W));
        CK(cudaFree(d.Ws));
        CK(cudaFree(d.xq));
        CK(cudaFree(d.xs));
        CK(cudaFree(y_cur));
        CK(cudaFree(y_nat));
    }
    printf("summary: %d cases, %d failed; worst rel L2 against the current kernel %.3g; total time current %.3f ms, "
           "native %.3f ms (x%.2f, %.1f TF/s overall)\n",
           cases, failed, worst_l2, sum_cur_ms, sum_nat_ms, sum_nat_ms > 0 ? sum_cur_ms / sum_nat_ms : 0.0,
           sum_nat_ms > 0 ? sum_flop / sum_nat_ms * 1e-9 : 0.0);
    if (!engine) return failed ? 1 : 0;
    EngineSummary es;
    engine_cases(quick, only_m, only_k, shapes, 9, es);
    const bool faithful = es.worst_share <= FAITHFUL_SHARE;
    printf("engine: %d cases, %d faults; up to %.3f%% of a projection's outputs off the CPU's formula (the engine "
           "tolerates %.3f%%): %s\n",
           es.cases, es.faults, 100.0 * es.worst_share, 100.0 * FAITHFUL_SHARE,
           faithful ? "within FAST's faithful tolerance"
                    : "NOT within FAST's faithful tolerance for projections followed by an FP8 quantization (q, kv, "
                      "c: gemm_fp8_native); wo_b's alone is (gemm_fp8_native_out)");
    if (failed || es.faults) return 1;
    return faithful ? 0 : 3;
}

} // namespace

int main(int argc, char **argv)
{
    bool quick = false, native = false, codes = false, configs = true, engine = true;
    int reps = 20, only_m = 0, only_k = 0, fbn = 0, fcl = 0;
    double peak = 1979.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--native")) {
            native = true;
        } else if (!strcmp(argv[i], "--cfg") && i + 1 < argc && sscanf(argv[i + 1], "%d/%d", &fbn, &fcl) == 2 &&
                   (fbn == 128 || fbn == 64 || fbn == 32 || fbn == 16) && (fcl == 1 || fcl == 2)) {
            i++;
        } else if (!strcmp(argv[i], "--codes")) {
            codes = true;
        } else if (!strcmp(argv[i], "--no-configs")) {
            configs = false;
        } else if (!strcmp(argv[i], "--no-engine")) {
            engine = false;
        } else if (!strcmp(argv[i], "--peak") && i + 1 < argc && atof(argv[i + 1]) > 0) {
            peak = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--quick")) {
            quick = true;
            reps = 5;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = std::max(1, atoi(argv[++i]));
        } else if (!strcmp(argv[i], "--shape") && i + 1 < argc && sscanf(argv[i + 1], "%dx%d", &only_m, &only_k) == 2) {
            i++;
        } else {
            fprintf(stderr, "usage: gemm-check [--quick] [--reps N] [--shape MxK] [--native [--peak TFLOPS] [--codes] "
                            "[--no-configs] [--no-engine] [--cfg BN/CLUSTER]]\n");
            return 2;
        }
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("gemm-check: no CUDA device, skipped\n");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    if (prop.major != 9 || prop.minor != 0) {
        printf("gemm-check: %s is sm_%d%d, the wgmma kernel needs sm_90: skipped\n", prop.name, prop.major, prop.minor);
        return 77;
    }
    if (native) return native_main(quick, reps, only_m, only_k, peak, codes, configs, fbn, fcl, engine, prop);
    printf("gemm-check on %s (%d SMs)\n", prop.name, prop.multiProcessorCount);

    /* V4-Flash's projections, then the tiny preset's (the golden set's: K of 256 and 512) */
    const int shapes[9][2] = {{1024, 4096}, {32768, 1024}, {4096, 8192}, {512, 4096}, {8192, 1024},
                              {1024, 256},  {256, 512},    {128, 512},   {512, 512}};
    const int ns_full[3] = {2048, 65, 200}, ns_quick[2] = {2048, 200};
    const int *ns = quick ? ns_quick : ns_full, nn = quick ? 2 : 3;
    const int NMAX = 2048, BNS[4] = {128, 64, 32, 16};
    int cases = 0, failed = 0;
    int64_t all_outputs = 0, all_differ = 0, all_max_ulp = 0;
    double sum_old_ms = 0, sum_new_ms = 0;

    for (const auto &sh : shapes) {
        const int M = sh[0], K = sh[1], nkb = K / 128, sld = (nkb + 3) & ~3;
        if (only_m && (M != only_m || K != only_k)) continue;
        /* host data: weights, and the tokens of the largest n (rows past n zeroed per case) */
        std::vector<uint8_t> W((size_t)M * K), X((size_t)NMAX * K);
        std::vector<float> Ws((size_t)(M / 128) * sld), xs((size_t)nkb * NMAX);
        for (auto &c : W) c = rnd_code();
        for (auto &c : X) c = rnd_code();
        for (auto &s : Ws) s = rnd_scale(-12, -6);
        for (auto &s : xs) s = rnd_scale(-12, -6);
        Dev d;
        CK(cudaMalloc(&d.W, W.size()));
        CK(cudaMalloc(&d.Ws, Ws.size() * 4));
        CK(cudaMalloc(&d.xq, X.size()));
        CK(cudaMalloc(&d.xs, xs.size() * 4));
        const size_t yelems = (size_t)(NMAX + 1) * (M + 8), ybytes = yelems * 2; /* room for ldy = M + 1 */
        uint16_t *y_old = nullptr, *y_new = nullptr;
        CK(cudaMalloc(&y_old, ybytes));
        CK(cudaMalloc(&y_new, ybytes));
        CK(cudaMemcpy(d.W, W.data(), W.size(), cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d.Ws, Ws.data(), Ws.size() * 4, cudaMemcpyHostToDevice));
        std::vector<uint16_t> ref_new; /* the new kernel's rows at n = 2048 */

        for (int ni = 0; ni < nn; ni++) {
            const int n = ns[ni], np = (n + 15) & ~15;
            /* this case's operands: tokens 0..n-1, rows n..np-1 zero, scales [K/128][np] */
            std::vector<uint8_t> xq((size_t)np * K, 0);
            memcpy(xq.data(), X.data(), (size_t)n * K);
            std::vector<float> xsn((size_t)nkb * np);
            for (int kb = 0; kb < nkb; kb++)
                for (int t = 0; t < np; t++) xsn[(size_t)kb * np + t] = xs[(size_t)kb * NMAX + t];
            CK(cudaMemcpy(d.xq, xq.data(), xq.size(), cudaMemcpyHostToDevice));
            CK(cudaMemcpy(d.xs, xsn.data(), xsn.size() * 4, cudaMemcpyHostToDevice));

            std::vector<uint16_t> h_old(yelems), h_new(yelems), h_bn(yelems), fill(yelems, SENTINEL);
            auto reset = [&](uint16_t *y) { CK(cudaMemcpy(y, fill.data(), ybytes, cudaMemcpyHostToDevice)); };
            auto run = [&](gemm_fn f, uint16_t *y) {
                int st = f(0, d.W, d.Ws, sld, M, K, d.xq, d.xs, np, n, y, M);
                if (st != HC_OK) {
                    fprintf(stderr, "M=%d K=%d n=%d: status %d\n", M, K, n, st);
                    exit(2);
                }
            };
            auto run_bn = [&](int bn, uint16_t *y, int ldy) {
                int st = hci_cu_gemm_fp8_wgmma_bn(0, d.W, d.Ws, sld, M, K, d.xq, d.xs, np, n, y, ldy, bn);
                if (st != HC_OK) {
                    fprintf(stderr, "M=%d K=%d n=%d bn=%d: status %d\n", M, K, n, bn, st);
                    exit(2);
                }
            };
            reset(y_old);
            reset(y_new);
            run(hci_cu_gemm_fp8, y_old);
            run(hci_cu_gemm_fp8_wgmma, y_new);
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(h_old.data(), y_old, ybytes, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(h_new.data(), y_new, ybytes, cudaMemcpyDeviceToHost));

            bool ok = true;
            /* sentinels: nothing past row n */
            int64_t past = 0;
            for (size_t i = (size_t)n * M; i < h_new.size(); i++) past += h_new[i] != SENTINEL;
            if (past) ok = false;
            const Cmp c = compare(h_old.data(), M, h_new.data(), M, n, M);
            const int64_t outputs = (int64_t)n * M;
            /* the old kernel's big tiles order every block dot as the new kernel does: the same
             * bits expected; its sliced-K path (small grids) groups k otherwise: informative */
            const int np16 = (n + 15) / 16 * 16;
            const bool old_big = 2 * (int64_t)(M / 128) * ((np16 + 127) / 128) >= prop.multiProcessorCount;
            if (old_big && (c.differ * 1000 > outputs || c.max_ulp > 1)) ok = false;
            /* every token tile gives the same bits */
            int bn_bad = 0;
            for (int bn : BNS) {
                reset(y_new);
                run_bn(bn, y_new, M);
                CK(cudaDeviceSynchronize());
                CK(cudaMemcpy(h_bn.data(), y_new, ybytes, cudaMemcpyDeviceToHost));
                const Cmp cb = compare(h_new.data(), M, h_bn.data(), M, NMAX, M); /* sentinels included */
                if (cb.differ) {
                    bn_bad++;
                    printf("  bn=%d: %lld outputs differ from the launcher's choice\n", bn, (long long)cb.differ);
                }
            }
            if (bn_bad) ok = false;
            /* y without 16-byte alignment of its rows: the scalar stores */
            reset(y_new);
            run_bn(0, y_new, M + 1);
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(h_bn.data(), y_new, ybytes, cudaMemcpyDeviceToHost));
            int64_t unaligned = compare(h_new.data(), M, h_bn.data(), M + 1, n, M).differ;
            for (int t = 0; t < n; t++)
                for (int r = M; r < M + 1; r++) unaligned += h_bn[(size_t)t * (M + 1) + r] != SENTINEL;
            for (size_t i = (size_t)n * (M + 1); i < h_bn.size(); i++) unaligned += h_bn[i] != SENTINEL;
            if (unaligned) {
                ok = false;
                printf("  ldy=M+1: %lld outputs wrong\n", (long long)unaligned);
            }
            /* batch invariance */
            const char *inv = "-";
            if (n == NMAX) {
                ref_new = h_new;
            } else if (!ref_new.empty()) {
                const Cmp ci = compare(ref_new.data(), M, h_new.data(), M, n, M);
                inv = ci.differ ? "FAIL" : "ok";
                if (ci.differ) {
                    ok = false;
                    printf("  invariance: %lld outputs of n=%d differ from n=%d\n", (long long)ci.differ, n, NMAX);
                }
            }
            /* a sample against the CPU's formula */
            const int SAMPLES = 64;
            int cpu_old = 0, cpu_new = 0;
            for (int i = 0; i < SAMPLES; i++) {
                const int t = (int)(rnd() % (uint64_t)n), r = (int)(rnd() % (uint64_t)M);
                const uint16_t want = cpu_out(W, Ws, sld, K, X, xs, NMAX, t, r);
                cpu_old += h_old[(size_t)t * M + r] != want;
                cpu_new += h_new[(size_t)t * M + r] != want;
            }
            /* timing */
            const double ms_old = hc_timing::time_ms([&] { run(hci_cu_gemm_fp8, y_old); }, reps);
            const double ms_new = hc_timing::time_ms([&] { run(hci_cu_gemm_fp8_wgmma, y_new); }, reps);
            CK(cudaGetLastError());
            const double flop = 2.0 * M * K * n;
            printf("M=%5d K=%4d n=%4d | old %8.4f ms %6.1f TF/s | wgmma bn=%3d %8.4f ms %6.1f TF/s x%.2f | differ "
                   "%lld/%lld max %lld ulp%s | tiles %s | invariant %s | past-n %lld | cpu-sample old %d/%d new %d/%d | %s\n",
                   M, K, n, ms_old, flop / ms_old * 1e-9, hci_cu_gemm_fp8_wgmma_tile(M, np), ms_new,
                   flop / ms_new * 1e-9, ms_old / ms_new,
                   (long long)c.differ, (long long)outputs, (long long)c.max_ulp, old_big ? "" : " (old: sliced K)",
                   bn_bad ? "FAIL" : "ok", inv,
                   (long long)past, cpu_old, SAMPLES, cpu_new, SAMPLES, ok ? "ok" : "FAIL");
            fflush(stdout);
            cases++;
            failed += !ok;
            all_outputs += outputs;
            all_differ += c.differ;
            all_max_ulp = std::max(all_max_ulp, c.max_ulp);
            sum_old_ms += ms_old;
            sum_new_ms += ms_new;
        }
        CK(cudaFree(d.W));
        CK(cudaFree(d.Ws));
        CK(cudaFree(d.xq));
        CK(cudaFree(d.xs));
        CK(cudaFree(y_old));
        CK(cudaFree(y_new));
    }
    printf("summary: %d cases, %d failed; %lld of %lld outputs differ from the mma.sync kernel (max %lld ulp); "
           "total time old %.3f ms, wgmma %.3f ms (x%.2f)\n",
           cases, failed, (long long)all_differ, (long long)all_outputs, (long long)all_max_ulp, sum_old_ms,
           sum_new_ms, sum_new_ms > 0 ? sum_old_ms / sum_new_ms : 0.0);
    return failed ? 1 : 0;
}
