// attend-check: the fast attention's ping-pong kernel (option attend_pingpong,
// kernels/attend/attend_pingpong.cu) against attend_fast's kernel (attend_wgmma.cu), the
// attention op alone (hci_cu_attend: the pre-pass, the kernel, the combine of splits), on the
// shapes of V4-Flash (64 heads of 512, window 128, top-k 512, fp8 cache unless a case says bf16).
// Needs an sm_90 GPU.
//
// Per case (a piece of n queries at positions pos0 .. pos0 + n - 1, the caches filled with random
// entries on the FP8 grid, CSA's picks random and distinct, padded with -1 where fewer are
// visible):
//   - the two kernels' outputs: how many bf16 values differ, the largest difference in ulps, and
//     the relative L2 of the new against the old (the numerics contract allows a difference within
//     rounding: docs/numerics.md, attend_pingpong.cu's header);
//   - both against a host reference in double (the exact softmax with the sink over the same bf16
//     queries and dequantised entries) on sampled (query, head) rows: relative L2;
//   - the new kernel run twice: the same bits (determinism), and no NaN or Inf anywhere;
//   - both timed: the median of --reps runs (CUDA events, queued behind a spin kernel so that the
//     host's launch overhead is not timed), ms, TFLOP/s (2 x 64 heads x (512 + 512) per visible
//     (query, entry) pair) and the share of --peak.
// A case fails when the new kernel is not taken (at_pp_ok), on a NaN/Inf, when two runs differ,
// when new vs old exceeds 1e-3 rel. L2, or either vs the reference exceeds 5e-3.
// Exit 0 when every case passes, 1 when one fails, 77 without an sm_90 device, 2 on a CUDA error.
//
// Built with the CUDA module (meson: build-gpu/tools/attend-check, from the attention family's
// sources). Usage:
//   attend-check [--quick] [--peak TFLOPS] [--reps N] [--case NAME]... [--json FILE] [--list]
// Default: every case; --quick: the four timed shapes of issue 11 and the small checks, 5 reps.
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include "gpu_ck.cuh"
#include "gpu_timing.cuh"
#include "backend/cuda/kernels/attend/attend.h"
#include "backend/cuda/kernels/attend/attend_rows.cuh"
extern "C" {
#include "cache/format.h"
#include "hybridctx.h"
#include "util/bf16.h"
#include "util/quant.h"
}


namespace {

const int H = 64, D = 512, ROPE = 64, W = 128, K = 512;

struct Case {
    const char *name;
    int ratio;
    int64_t pos0;
    int n;
    int fmt;    /* HCI_FMT_FP8 or HCI_FMT_BF16 */
    bool timed; /* a prefill chunk's shape (the others check correctness; all are timed) */
    bool quick; /* run in --quick */
};

const Case CASES[] = {
    /* checks first (small, quick): the start of a sequence (partial windows, few entries, CSA rows
     * padded with -1, split rows of odd block counts), decode-sized pieces (split rows and the
     * combine), the bf16 cache format (picks copied, not dequantised) */
    {"swa-start", 0, 0, 100, HCI_FMT_FP8, false, true},
    {"hca-start", 128, 0, 300, HCI_FMT_FP8, false, true},
    {"csa-start", 4, 0, 300, HCI_FMT_FP8, false, true},
    {"hca-1m-decode1", 128, 1013760, 1, HCI_FMT_FP8, false, true},
    {"hca-128k-decode3", 128, 131072 + 4000, 3, HCI_FMT_FP8, false, true},
    {"csa-128k-decode4", 4, 131072, 4, HCI_FMT_FP8, false, true},
    {"csa-8k-bf16", 4, 8192, 256, HCI_FMT_BF16, false, true},
    {"hca-64k-bf16", 128, 65536 + 77, 256, HCI_FMT_BF16, false, true},
    /* issue 11's shapes: a 2048-query prefill chunk at 128K and 1M */
    {"hca-128k", 128, 131072, 2048, HCI_FMT_FP8, true, true},
    {"csa-128k", 4, 131072, 2048, HCI_FMT_FP8, true, true},
    {"hca-1m", 128, 1013760, 2048, HCI_FMT_FP8, true, true},
    {"csa-1m", 4, 1013760, 2048, HCI_FMT_FP8, true, true},
    {"swa-128k", 0, 131072, 2048, HCI_FMT_FP8, true, false},
};

uint64_t rng_state = 0x9e3779b97f4a7c15ull;
uint64_t rnd()
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
double unif() { return (double)(rnd() >> 11) * 0x1p-53; }
/* about N(0, 1): the sum of four uniforms, scaled */
float gauss() { return (float)((unif() + unif() + unif() + unif() - 2.0) * 1.7320508075688772); }

float bf16f(uint16_t h) { return hci_f32_from_bits((uint32_t)h << 16); }

/* bf16 bits as an integer that orders like the values (NaNs far away) */
int64_t bf16_ord(uint16_t h)
{
    if ((h & 0x7fff) > 0x7f80) return INT32_MAX;
    return (h & 0x8000) ? -(int64_t)(h & 0x7fff) : (int64_t)(h & 0x7fff);
}

/* A page table of `count` entries of layout l in one device allocation, with its host copy. */
struct Pages {
    hci_entry_layout l;
    int64_t count = 0;
    std::vector<uint8_t> host; /* the pages back to back */
    uint8_t *dev = nullptr;
    uint8_t **table = nullptr; /* device array of page pointers */

    void make(const hci_entry_layout &lay, int64_t entries)
    {
        l = lay;
        count = entries;
        const int64_t npages = std::max<int64_t>(1, (entries + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES);
        const size_t pb = hci_page_bytes(&l);
        host.assign((size_t)npages * pb, 0);
        for (int64_t j = 0; j < entries; j++) fill(j);
        CK(cudaMalloc(&dev, host.size()));
        CK(cudaMemcpy(dev, host.data(), host.size(), cudaMemcpyHostToDevice));
        std::vector<uint8_t *> t((size_t)npages);
        for (int64_t p = 0; p < npages; p++) t[(size_t)p] = dev + (size_t)p * pb;
        CK(cudaMalloc(&table, t.size() * sizeof(uint8_t *)));
        CK(cudaMemcpy(table, t.data(), t.size() * sizeof(uint8_t *), cudaMemcpyHostToDevice));
    }
    uint8_t *page(int64_t j) { return host.data() + (size_t)(j / HCI_PAGE_ENTRIES) * hci_page_bytes(&l); }
    /* a random entry on the FP8 grid: 7 blocks of 64 e4m3 values times 2^(-5..-7), rope bf16 */
    void fill(int64_t j)
    {
        uint8_t *pg = page(j);
        const int slot = (int)(j % HCI_PAGE_ENTRIES);
        uint8_t *d = pg + (size_t)slot * l.data_bytes;
        float v[D];
        uint8_t codes[D - ROPE], scales[8] = {0};
        for (int b = 0; b < (D - ROPE) / 64; b++) {
            const int e = -5 - (int)(rnd() % 3);
            scales[b] = (uint8_t)(e + 127);
            for (int k = 0; k < 64; k++) {
                const float c = hci_e4m3_round(gauss() * 24.0f);
                codes[64 * b + k] = hci_e4m3_encode(c);
                v[64 * b + k] = hci_e4m3_value(codes[64 * b + k]) * std::ldexp(1.0f, e);
            }
        }
        uint16_t rope[ROPE];
        for (int k = 0; k < ROPE; k++) rope[k] = hci_bf16_from_f32(gauss() * 0.5f), v[D - ROPE + k] = bf16f(rope[k]);
        if (l.fmt == HCI_FMT_BF16) {
            for (int k = 0; k < D; k++) {
                const uint16_t h = hci_bf16_from_f32(v[k]);
                memcpy(d + 2 * k, &h, 2);
            }
        } else {
            memcpy(d, codes, D - ROPE);
            memcpy(d + D - ROPE, rope, sizeof rope);
            memcpy(pg + (size_t)HCI_PAGE_ENTRIES * l.data_bytes + (size_t)slot * l.scale_bytes, scales, 8);
        }
    }
    /* entry j's 512 values */
    void values(int64_t j, double *out)
    {
        const uint8_t *pg = page(j);
        const int slot = (int)(j % HCI_PAGE_ENTRIES);
        const uint8_t *d = pg + (size_t)slot * l.data_bytes;
        if (l.fmt == HCI_FMT_BF16) {
            for (int k = 0; k < D; k++) {
                uint16_t h;
                memcpy(&h, d + 2 * k, 2);
                out[k] = bf16f(h);
            }
            return;
        }
        const uint8_t *sc = pg + (size_t)HCI_PAGE_ENTRIES * l.data_bytes + (size_t)slot * l.scale_bytes;
        for (int k = 0; k < D - ROPE; k++) out[k] = (double)hci_e4m3_value(d[k]) * std::ldexp(1.0, (int)sc[k / 64] - 127);
        for (int k = 0; k < ROPE; k++) {
            uint16_t h;
            memcpy(&h, d + D - ROPE + 2 * k, 2);
            out[D - ROPE + k] = bf16f(h);
        }
    }
    void release()
    {
        if (dev) CK(cudaFree(dev));
        if (table) CK(cudaFree(table));
        dev = nullptr, table = nullptr;
    }
};


struct Result {
    std::string name, shape;
    bool timed = false;
    double ms_old = 0, ms_new = 0, tflop = 0, differ_share = 0, rel_new_old = 0, ref_old = 0, ref_new = 0;
    int64_t differ = 0, max_ulp = 0;
    bool ok = true;
};

Result run_case(const Case &cs, int reps, double peak)
{
    Result res;
    res.name = cs.name;
    res.timed = cs.timed;
    const int n = cs.n;
    const int64_t pos0 = cs.pos0, end = pos0 + n;
    const int64_t ncomp_all = cs.ratio ? end / cs.ratio : 0;
    /* caches: the ring (W slots, position p in slot p % W) and the compressed entries */
    Pages ring, comp;
    ring.make(hci_layout_main(cs.fmt, D, ROPE), W);
    comp.make(hci_layout_main(cs.fmt, D, ROPE), ncomp_all);
    /* the piece's own window rows, the queries, the sink */
    std::vector<uint16_t> kv((size_t)n * D), q((size_t)n * H * D);
    for (auto &x : kv) x = hci_bf16_from_f32(gauss() * 0.6f);
    for (auto &x : q) x = hci_bf16_from_f32(gauss() * 2.0f);
    std::vector<float> sink(H);
    for (auto &x : sink) x = gauss();
    /* CSA's picks: distinct entries of the visible ones in random order, -1 past them */
    std::vector<int32_t> sel;
    if (cs.ratio == 4) {
        sel.assign((size_t)n * K, -1);
        std::vector<int32_t> stamp((size_t)std::max<int64_t>(ncomp_all, 1), -1);
        for (int i = 0; i < n; i++) {
            const int64_t vis = (pos0 + i + 1) / 4;
            int32_t *row = &sel[(size_t)i * K];
            if (vis <= K) {
                for (int64_t c = 0; c < vis; c++) row[c] = (int32_t)c;
                for (int64_t c = vis - 1; c > 0; c--) std::swap(row[c], row[rnd() % (uint64_t)(c + 1)]);
            } else {
                for (int c = 0; c < K;) {
                    const int32_t j = (int32_t)(rnd() % (uint64_t)vis);
                    if (stamp[(size_t)j] == i) continue;
                    stamp[(size_t)j] = i;
                    row[c++] = j;
                }
            }
        }
    }
    uint16_t *d_q, *d_kv, *o_old, *o_new, *o_new2;
    float *d_sink;
    int32_t *d_sel = nullptr;
    const size_t osz = (size_t)n * H * D * 2;
    CK(cudaMalloc(&d_q, q.size() * 2));
    CK(cudaMalloc(&d_kv, kv.size() * 2));
    CK(cudaMalloc(&d_sink, H * 4));
    CK(cudaMalloc(&o_old, osz));
    CK(cudaMalloc(&o_new, osz));
    CK(cudaMalloc(&o_new2, osz));
    CK(cudaMemcpy(d_q, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_kv, kv.data(), kv.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_sink, sink.data(), H * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(o_old, 0xff, osz)); /* NaN patterns: a value never written shows */
    CK(cudaMemset(o_new, 0xff, osz));
    CK(cudaMemset(o_new2, 0xff, osz));
    if (!sel.empty()) {
        CK(cudaMalloc(&d_sel, sel.size() * 4));
        CK(cudaMemcpy(d_sel, sel.data(), sel.size() * 4, cudaMemcpyHostToDevice));
    }
    hci_cu_attn_args a;
    memset(&a, 0, sizeof a);
    a.n = n;
    a.pos0 = pos0;
    a.H = H;
    a.d = D;
    a.window = W;
    a.ratio = cs.ratio;
    a.K = cs.ratio == 4 ? K : 0;
    a.scale = (float)(1.0 / std::sqrt((double)D));
    a.q = d_q;
    a.kv = d_kv;
    a.win_l = ring.l;
    a.ring = ring.table;
    a.comp_l = comp.l;
    a.comp = comp.table;
    a.sel = d_sel;
    a.sink = d_sink;
    const int64_t max_row = W + (cs.ratio == 4 ? K : ncomp_all);
    const size_t scratch_bytes = std::max(hci_cu_attend_scratch_bytes(n, H, D, max_row, HCI_AT_FAST),
                                          hci_cu_attend_scratch_bytes(n, H, D, max_row, HCI_AT_PINGPONG));
    void *scratch;
    CK(cudaMalloc(&scratch, scratch_bytes));
    const bool taken = hci_at::at_pp_ok(a);
    auto run = [&](int path, uint16_t *o) {
        a.o = o;
        const int st = hci_cu_attend(0, &a, scratch, path);
        if (st != HC_OK) {
            fprintf(stderr, "%s: hci_cu_attend(path %d) status %d (%s)\n", cs.name, path, st,
                    cudaGetErrorString(cudaGetLastError()));
            exit(2);
        }
    };
    run(HCI_AT_FAST, o_old);
    run(HCI_AT_PINGPONG, o_new);
    run(HCI_AT_PINGPONG, o_new2);
    CK(cudaDeviceSynchronize());
    std::vector<uint16_t> h_old((size_t)n * H * D), h_new(h_old.size()), h_new2(h_old.size());
    CK(cudaMemcpy(h_old.data(), o_old, osz, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(h_new.data(), o_new, osz, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(h_new2.data(), o_new2, osz, cudaMemcpyDeviceToHost));

    /* new against old */
    double num = 0, den = 0;
    int64_t nonfinite = 0;
    for (size_t x = 0; x < h_old.size(); x++) {
        const float u = bf16f(h_old[x]), v = bf16f(h_new[x]);
        if (!std::isfinite(u) || !std::isfinite(v)) {
            nonfinite++;
            continue;
        }
        num += (double)(v - u) * (v - u);
        den += (double)u * u;
        if (h_old[x] != h_new[x]) {
            res.differ++;
            res.max_ulp = std::max<int64_t>(res.max_ulp, std::llabs(bf16_ord(h_old[x]) - bf16_ord(h_new[x])));
        }
    }
    res.rel_new_old = den > 0 ? std::sqrt(num / den) : 0;
    res.differ_share = (double)res.differ / (double)h_old.size();
    const bool same_twice = memcmp(h_new.data(), h_new2.data(), osz) == 0;

    /* the host reference on sampled rows: queries first, last and a few between; 8 heads each */
    const int NQ = std::min(n, 6), NH = 8;
    double rn_old = 0, rn_new = 0, rd = 0;
    std::vector<double> vals;
    for (int qi = 0; qi < NQ; qi++) {
        const int i = NQ == 1 ? 0 : (int)((int64_t)qi * (n - 1) / (NQ - 1));
        const int64_t t = pos0 + i;
        /* the row: window positions max(0, t - W + 1) .. t, then the compressed part */
        std::vector<int64_t> ents; /* >= 0: compressed entry; < 0: -(position + 1) */
        for (int64_t p = std::max<int64_t>(0, t - W + 1); p <= t; p++) ents.push_back(-(p + 1));
        if (cs.ratio == 128)
            for (int64_t c = 0; c < (t + 1) / 128; c++) ents.push_back(c);
        if (cs.ratio == 4)
            for (int c = 0; c < K; c++)
                if (sel[(size_t)i * K + c] >= 0) ents.push_back(sel[(size_t)i * K + c]);
        vals.assign(ents.size() * D, 0.0);
        for (size_t u = 0; u < ents.size(); u++) {
            double *v = &vals[u * D];
            if (ents[u] >= 0) {
                comp.values(ents[u], v);
            } else {
                const int64_t p = -ents[u] - 1;
                if (p >= pos0)
                    for (int k = 0; k < D; k++) v[k] = bf16f(kv[(size_t)(p - pos0) * D + k]);
                else
                    ring.values(p % W, v);
            }
        }
        for (int hj = 0; hj < NH; hj++) {
            const int h = (hj * 9 + qi * 5) % H;
            const uint16_t *qr = &q[((size_t)i * H + h) * D];
            std::vector<double> lg(ents.size());
            double m = -INFINITY;
            for (size_t u = 0; u < ents.size(); u++) {
                double s = 0;
                for (int k = 0; k < D; k++) s += (double)bf16f(qr[k]) * vals[u * D + k];
                lg[u] = s * (double)a.scale;
                m = std::max(m, lg[u]);
            }
            double l = std::exp((double)sink[h] - m);
            std::vector<double> o(D, 0.0);
            for (size_t u = 0; u < ents.size(); u++) {
                const double p = std::exp(lg[u] - m);
                l += p;
                for (int k = 0; k < D; k++) o[k] += p * vals[u * D + k];
            }
            for (int k = 0; k < D; k++) {
                const double r = o[k] / l;
                const size_t x = ((size_t)i * H + h) * D + k;
                rn_old += (bf16f(h_old[x]) - r) * (bf16f(h_old[x]) - r);
                rn_new += (bf16f(h_new[x]) - r) * (bf16f(h_new[x]) - r);
                rd += r * r;
            }
        }
    }
    res.ref_old = rd > 0 ? std::sqrt(rn_old / rd) : 0;
    res.ref_new = rd > 0 ? std::sqrt(rn_new / rd) : 0;

    /* FLOPs: 2 x H x (512 + 512) per visible (query, entry) pair */
    double pairs = 0;
    for (int i = 0; i < n; i++) {
        const int64_t t = pos0 + i;
        pairs += (double)std::min<int64_t>(t + 1, W);
        if (cs.ratio == 128) pairs += (double)((t + 1) / 128);
        if (cs.ratio == 4)
            for (int c = 0; c < K; c++) pairs += sel[(size_t)i * K + c] >= 0;
    }
    res.tflop = pairs * 2.0 * H * (2 * D) * 1e-12;
    res.ms_old = hc_timing::time_ms([&] { run(HCI_AT_FAST, o_old); }, reps);
    res.ms_new = hc_timing::time_ms([&] { run(HCI_AT_PINGPONG, o_new); }, reps);
    CK(cudaGetLastError());
    char shape[160];
    snprintf(shape, sizeof shape, "%d queries at %lld, ratio %d, %.0f entries a query, %s", n, (long long)pos0,
             cs.ratio, pairs / n, cs.fmt == HCI_FMT_BF16 ? "bf16 cache" : "fp8 cache");
    res.shape = shape;

    const char *why = nullptr;
    if (!taken) why = "the ping-pong kernel does not take these arguments (at_pp_ok)";
    else if (nonfinite) why = "NaN or Inf outputs";
    else if (!same_twice) why = "two runs of the new kernel differ";
    else if (res.rel_new_old > 1e-3) why = "new vs old above 1e-3";
    else if (res.ref_old > 5e-3 || res.ref_new > 5e-3) why = "vs the reference above 5e-3";
    res.ok = why == nullptr;
    const double tf_old = res.tflop / (res.ms_old * 1e-3), tf_new = res.tflop / (res.ms_new * 1e-3);
    printf("| %s | %s | %.3f | %.0f | %.0f%% | %.3f | %.0f | %.0f%% | x%.2f | %lld (%.4f%%, max %lld ulp) | %.2e | %.2e | "
           "%.2e | %s%s |\n",
           cs.name, shape, res.ms_old, tf_old, 100 * tf_old / peak, res.ms_new, tf_new, 100 * tf_new / peak,
           res.ms_old / res.ms_new, (long long)res.differ, 100 * res.differ_share, (long long)res.max_ulp, res.rel_new_old,
           res.ref_old, res.ref_new, res.ok ? "ok" : "FAIL: ", why ? why : "");
    fflush(stdout);

    ring.release();
    comp.release();
    CK(cudaFree(d_q));
    CK(cudaFree(d_kv));
    CK(cudaFree(d_sink));
    CK(cudaFree(o_old));
    CK(cudaFree(o_new));
    CK(cudaFree(o_new2));
    CK(cudaFree(scratch));
    if (d_sel) CK(cudaFree(d_sel));
    return res;
}

} // namespace

int main(int argc, char **argv)
{
    bool quick = false;
    int reps = 10;
    double peak = 807.0; /* bf16 dense TFLOP/s measured on the H100 (docs/perf/cuda-h100-2026-12-07.md) */
    const char *json = nullptr;
    std::vector<std::string> only;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = true;
            reps = 5;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = std::max(1, atoi(argv[++i]));
        } else if (!strcmp(argv[i], "--peak") && i + 1 < argc) {
            peak = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--case") && i + 1 < argc) {
            only.push_back(argv[++i]);
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json = argv[++i];
        } else if (!strcmp(argv[i], "--list")) {
            for (const Case &c : CASES) printf("%s%s\n", c.name, c.quick ? "" : " (not in --quick)");
            return 0;
        } else {
            fprintf(stderr, "usage: attend-check [--quick] [--peak TFLOPS] [--reps N] [--case NAME]... [--json FILE] [--list]\n");
            return 2;
        }
    }
    if (!(peak > 0)) {
        fprintf(stderr, "attend-check: --peak must be positive\n");
        return 2;
    }
    for (const std::string &o : only) {
        bool known = false;
        for (const Case &c : CASES) known |= o == c.name;
        if (!known) {
            fprintf(stderr, "attend-check: no case \"%s\" (--list)\n", o.c_str());
            return 2;
        }
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("attend-check: no CUDA device, skipped\n");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    if (prop.major != 9 || prop.minor != 0) {
        printf("attend-check: %s is sm_%d%d, the wgmma kernels need sm_90: skipped\n", prop.name, prop.major, prop.minor);
        return 77;
    }
    printf("attend-check on %s (%d SMs), peak %.0f TFLOP/s, %d timed runs a kernel\n\n", prop.name,
           prop.multiProcessorCount, peak, reps);
    printf("| case | shape | attend_fast ms | TFLOP/s | of peak | attend_pingpong ms | TFLOP/s | of peak | speedup | "
           "bf16 outputs differing | rel L2 new vs old | old vs ref | new vs ref | status |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    std::vector<Result> all;
    for (const Case &c : CASES) {
        if (!only.empty() ? std::find(only.begin(), only.end(), c.name) == only.end() : (quick && !c.quick)) continue;
        all.push_back(run_case(c, reps, peak));
    }
    int failed = 0;
    for (const Result &r : all) failed += !r.ok;
    printf("\nsummary: %d cases, %d failed\n", (int)all.size(), failed);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 2;
        }
        fprintf(f, "{\"tool\": \"attend-check\", \"gpu\": \"%s\", \"peak_tflops\": %.1f, \"kernels\": [", prop.name, peak);
        bool first = true;
        for (const Result &r : all)
            for (int k = 0; k < 2 && r.timed; k++) { /* the chunk shapes; the checks' times are in the table */
                const double ms = k ? r.ms_new : r.ms_old;
                fprintf(f, "%s{\"name\": \"attention %s (%s)\", \"shape\": \"%s\", \"us\": %.1f, \"tflops_or_tb_s\": %.1f, "
                           "\"peak\": %.1f}",
                        first ? "" : ", ", k ? "attend_pingpong" : "attend_fast", r.name.c_str(), r.shape.c_str(), ms * 1e3,
                        r.tflop / (ms * 1e-3), peak);
                first = false;
            }
        fprintf(f, "], \"checks\": [");
        for (size_t x = 0; x < all.size(); x++) {
            const Result &r = all[x];
            fprintf(f, "%s{\"case\": \"%s\", \"differ\": %lld, \"max_ulp\": %lld, \"rel_l2_new_vs_old\": %.3e, "
                       "\"rel_l2_old_vs_ref\": %.3e, \"rel_l2_new_vs_ref\": %.3e, \"ok\": %s}",
                    x ? ", " : "", r.name.c_str(), (long long)r.differ, (long long)r.max_ulp, r.rel_new_old, r.ref_old,
                    r.ref_new, r.ok ? "true" : "false");
        }
        fprintf(f, "]}\n");
        fclose(f);
    }
    return failed ? 1 : 0;
}
