// gemv-check: the decode projections' kernels against the previous ones, bit for bit, and their
// bandwidth. Needs an sm_90 GPU (the kernels are built for it).
//
// Three kinds, each on V4-Flash's and the tiny preset's decode shapes plus a few odd ones (K not a multiple of 8
// k-units, M not of 64), for n = 1, 2, 4, 8, 16, 24, 40, 64 tokens:
//   fp8   the fast FP8 GEMV (gemv_fp8_tc.cu) against the previous kernel (gemv_tc_ref.cu):
//         wq_a, wq_b, wkv, wo_b, the indexer's wq_b;
//   bf16  the fast grouped bf16 GEMV (gemv_bf16_tc.cu) against gemv_tc_ref.cu: wo_a;
//   comp  the bf16 GEMM of option comp_fast (the compressors' wkv/wgate, weights_proj) by its
//         few-token kernel (gemm_bf16_few.cu) against the sliced-K kernel that took these
//         shapes before (and the big tiles where M % 128 == 0);
//   group the grouped launches of option decode_fused (several weights over one input, one
//         launch) against the one-weight launches of each weight: gfp8 the fast FP8 GEMV
//         ([wq_a; wkv] over x, [wq_b; indexer wq_b] over c; every team size), gexact the exact
//         FP8 GEMV (n <= 16), gcomp the few-token bf16 GEMM (head weights and compressors over x),
//         gdouble the double bf16 GEMV (EXACT's, n <= 16). "separate" times the one-weight
//         launches one after another, "grouped" the one launch.
// Per case: random operands (e4m3 codes without NaNs, random scales; normal bf16), then
//   - the number of outputs that differ from the previous kernel's, bitwise (must be 0), for the
//     launcher's choice and for every team size / kernel it may take;
//   - nothing written past row n or column M (sentinels; ldy = M + 8);
//   - batch invariance: the rows of every n equal the first rows of n = 64;
//   - the median of --reps timed runs of the previous and the new kernel (and of each team
//     size), each run between two events, all queued behind a spin kernel, over a rotation of
//     weight copies larger than 2.5 x L2 (every run reads its weights from HBM, as decode does;
//     x stays in L2): microseconds, GB/s of weight bytes, % of the peak.
// Exit 0 when every output is bitwise equal and no sentinel is touched, 1 otherwise, 77 without
// a CUDA device or on a GPU older than sm_90, 2 on a CUDA error.
//
// Options: --json PATH (every case, machine-readable), --peak GBS (HBM read bandwidth for the %;
// default by device name: H100 SXM 3350, H100 NVL 3900, H100 PCIe 2000, H200 4800), --reps N
// (default 50), --quick (n = 1, 8, 64 and 10 runs), --only fp8|bf16|comp|group, --shape MxK (of
// a one-weight case).
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>
#include "backend/cuda/kernels/gemm/gemm.h"
#include "backend/cuda/kernels/gemv/gemv.h"
#include "gpu_ck.cuh"
extern "C" {
#include "hybridctx.h"
#include "util/bf16.h"
}


namespace {

uint64_t rng_state = 0x243f6a8885a308d3ull;
uint64_t rnd()
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
uint8_t rnd_code() /* an e4m3 code, every finite one equally likely */
{
    for (;;) {
        uint8_t c = (uint8_t)rnd();
        if ((c & 0x7f) != 0x7f) return c;
    }
}
float rnd_scale(int lo, int hi) /* 2^e times a mantissa in [1, 2), e in [lo, hi] */
{
    int e = lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
    return std::ldexp(1.0f + (float)(rnd() >> 41) * 0x1p-23f, e);
}
uint16_t rnd_bf16() /* roughly normal, +-4 */
{
    double u = 0;
    for (int i = 0; i < 4; i++) u += (double)(rnd() >> 11) * 0x1p-53 - 0.5;
    return hci_bf16_from_f32((float)(u * 1.7));
}

const uint16_t SENT16 = 0x7fc1;                  /* a bf16 NaN no kernel writes */
const uint64_t SENT64 = 0x7ff8dead0000beefull;   /* a double NaN no kernel writes */

/* keeps the GPU busy for about `cycles` clocks, so that the timed launches queue up behind it */
__global__ void spin(long long cycles)
{
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
}

/* microseconds: the median of reps runs (run(i) launches one, on copy i of the rotation), each
 * between two events, queued behind a spin kernel, after 3 untimed */
template <class F> double time_us(F run, int reps)
{
    for (int i = 0; i < 3; i++) run(i);
    CK(cudaDeviceSynchronize());
    std::vector<cudaEvent_t> ev(reps + 1);
    for (auto &e : ev) CK(cudaEventCreate(&e));
    spin<<<1, 32>>>(20000000ll);
    CK(cudaEventRecord(ev[0]));
    for (int i = 0; i < reps; i++) {
        run(i);
        CK(cudaEventRecord(ev[i + 1]));
    }
    CK(cudaEventSynchronize(ev[reps]));
    std::vector<float> v;
    for (int i = 0; i < reps; i++) {
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, ev[i], ev[i + 1]));
        v.push_back(ms * 1000.0f);
    }
    for (auto &e : ev) CK(cudaEventDestroy(e));
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Opts {
    int reps = 50;
    bool quick = false;
    std::string only;
    int only_m = 0, only_k = 0;
    double peak = 0;
    size_t l2 = 0;
};

struct Shape {
    const char *kind, *name;
    int M, K, groups; /* groups: bf16 only */
};

/* one variant's result on a case */
struct Var {
    std::string name;
    double us = -1;
    int64_t differ = 0, stray = 0;
};

struct Case {
    const Shape *sh;
    int n;
    double bytes;
    std::vector<Var> vars; /* [0] the previous kernel, [1] the new launcher's choice, then forced */
    int64_t outputs = 0, invariance = -1;
    int chosen = 0;
    bool ok = true;
};

/* device buffers of one shape: `copies` weight copies (one allocation, copy i at W(i)), the
 * operands and y */
struct Bufs {
    uint8_t *base = nullptr;
    size_t stride = 0;
    int copies = 0;
    void *Ws = nullptr, *x = nullptr, *xs = nullptr, *y = nullptr;
    const void *W(int i) const { return base + (size_t)(i % copies) * stride; }
    ~Bufs()
    {
        cudaFree(base), cudaFree(Ws), cudaFree(x), cudaFree(xs), cudaFree(y);
    }
};

/* weight copies that together exceed 2.5 x L2, so that a run's weights are never in L2 */
void fill_copies(Bufs &b, const void *host, size_t bytes, size_t l2)
{
    const size_t want = (size_t)(2.5 * (double)(l2 ? l2 : (64u << 20)));
    b.stride = (bytes + 255) & ~(size_t)255;
    b.copies = (int)std::max<size_t>(2, (want + b.stride - 1) / b.stride + 1);
    CK(cudaMalloc(&b.base, (size_t)b.copies * b.stride));
    CK(cudaMemcpy(b.base, host, bytes, cudaMemcpyHostToDevice));
    for (int have = 1; have < b.copies;) { /* doubling copies of the copies made so far */
        const int n = std::min(have, b.copies - have);
        CK(cudaMemcpy(b.base + (size_t)have * b.stride, b.base, (size_t)n * b.stride, cudaMemcpyDeviceToDevice));
        have += n;
    }
}

/* Runs f (copy index -> status) once into a sentinel-filled y: y's content. */
template <class T, class F> std::vector<T> run_get(F f, void *ydev, size_t yelems, T sent)
{
    std::vector<T> h(yelems, sent);
    CK(cudaMemcpy(ydev, h.data(), yelems * sizeof(T), cudaMemcpyHostToDevice));
    const int st = f(0);
    if (st != HC_OK) {
        fprintf(stderr, "a kernel refused the case: status %d\n", st);
        exit(2);
    }
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h.data(), ydev, yelems * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

void print_case(const Case &c, double peak);

typedef std::vector<std::pair<std::string, std::function<int(int, int)>>> Variants; /* (copy, n) -> status */

/* The cases of one shape, one per n: variants(n)[0] is the previous kernel, [1] the new launcher's
 * choice, the rest forced team sizes / kernels; each checked against [0] (the elements of y that
 * inside() names; sentinels elsewhere) and timed. Then the new launcher's rows of every n against
 * those of the largest n. T: the output element (uint16_t bf16, uint64_t double bits). */
/* Whether element i of y (yelems elements) is an output of a case of n tokens. */
typedef std::function<bool(size_t, int)> Inside;

template <class T>
void run_shape(const Shape &sh, const Opts &o, const std::vector<int> &ns, void *ydev, size_t yelems,
               const Inside &inside, T sent, double bytes, const std::function<Variants(int)> &variants,
               const std::function<int(int)> &chosen, std::vector<Case> &out)
{
    std::vector<Case> mine;
    std::vector<std::vector<T>> rows; /* the new launcher's y of each case */
    for (int n : ns) {
        Case c;
        c.sh = &sh, c.n = n, c.bytes = bytes, c.outputs = (int64_t)n * sh.M, c.chosen = chosen(n);
        const Variants vs = variants(n);
        std::vector<T> ref;
        for (size_t k = 0; k < vs.size(); k++) {
            Var v;
            v.name = vs[k].first;
            auto f = [&](int i) { return vs[k].second(i, n); };
            std::vector<T> h = run_get<T>(f, ydev, yelems, sent);
            if (k == 0) ref = h;
            for (size_t i = 0; i < yelems; i++) {
                if (inside(i, n)) v.differ += memcmp(&h[i], &ref[i], sizeof(T)) != 0;
                else v.stray += memcmp(&h[i], &sent, sizeof(T)) != 0;
            }
            if (k == 1) rows.push_back(std::move(h));
            v.us = time_us(f, o.reps);
            CK(cudaGetLastError());
            if (v.differ || v.stray) c.ok = false;
            c.vars.push_back(v);
        }
        mine.push_back(c);
    }
    const size_t last = ns.size() - 1; /* the most tokens: every n's rows must be its first rows */
    for (size_t j = 0; j < mine.size(); j++) {
        int64_t d = 0;
        for (size_t i = 0; i < yelems; i++)
            if (inside(i, mine[j].n)) d += memcmp(&rows[j][i], &rows[last][i], sizeof(T)) != 0;
        mine[j].invariance = d;
        if (d) mine[j].ok = false;
        print_case(mine[j], o.peak);
        out.push_back(mine[j]);
    }
}

void print_case(const Case &c, double peak)
{
    const Var &r = c.vars[0], &nw = c.vars[1];
    const double gr = c.bytes / (r.us * 1e3), gn = c.bytes / (nw.us * 1e3);
    int64_t differ = 0, stray = 0;
    for (auto &v : c.vars) differ += v.differ, stray += v.stray;
    printf("%-4s %-9s %5dx%-5d n=%2d | %s %7.2f us %6.0f GB/s", c.sh->kind, c.sh->name, c.sh->M, c.sh->K, c.n,
           r.name.c_str(), r.us, gr);
    if (peak > 0) printf(" %3.0f%%", 100 * gr / peak);
    printf(" | %s[%d] %7.2f us %6.0f GB/s", nw.name.c_str(), c.chosen, nw.us, gn);
    if (peak > 0) printf(" %3.0f%%", 100 * gn / peak);
    printf(" x%.2f |", r.us / nw.us);
    for (size_t i = 2; i < c.vars.size(); i++) printf(" %s %.2f", c.vars[i].name.c_str(), c.vars[i].us);
    printf(" | differ %lld/%lld stray %lld inv %s | %s\n", (long long)differ, (long long)c.outputs, (long long)stray,
           c.invariance < 0 ? "-" : c.invariance ? "FAIL" : "ok", c.ok ? "ok" : "FAIL");
    fflush(stdout);
}

void write_json(const char *path, const cudaDeviceProp &prop, double peak, const std::vector<Case> &cs, int failed)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fprintf(f, "{\n  \"tool\": \"gemv-check\",\n  \"device\": \"%s\",\n  \"sms\": %d,\n  \"l2_bytes\": %d,\n", prop.name,
            prop.multiProcessorCount, prop.l2CacheSize);
    fprintf(f, "  \"peak_gbs\": %.0f,\n  \"failed\": %d,\n  \"cases\": [\n", peak, failed);
    for (size_t i = 0; i < cs.size(); i++) {
        const Case &c = cs[i];
        fprintf(f, "    {\"kind\": \"%s\", \"name\": \"%s\", \"M\": %d, \"K\": %d, \"groups\": %d, \"n\": %d, "
                   "\"weight_bytes\": %.0f, \"chosen\": %d, \"outputs\": %lld, \"invariance_differ\": %lld, \"ok\": %s,\n"
                   "     \"variants\": [",
                c.sh->kind, c.sh->name, c.sh->M, c.sh->K, c.sh->groups, c.n, c.bytes, c.chosen, (long long)c.outputs,
                (long long)c.invariance, c.ok ? "true" : "false");
        for (size_t j = 0; j < c.vars.size(); j++) {
            const Var &v = c.vars[j];
            const double gbs = c.bytes / (v.us * 1e3);
            fprintf(f, "%s\n       {\"name\": \"%s\", \"us\": %.3f, \"gbs\": %.1f, \"pct_peak\": %.1f, \"differ\": %lld, "
                       "\"stray\": %lld}",
                    j ? "," : "", v.name.c_str(), v.us, gbs, peak > 0 ? 100 * gbs / peak : 0.0, (long long)v.differ,
                    (long long)v.stray);
        }
        fprintf(f, "]}%s\n", i + 1 < cs.size() ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
}

double default_peak(const char *name)
{
    std::string s(name);
    if (s.find("H200") != std::string::npos) return 4800;
    if (s.find("H100") != std::string::npos) {
        if (s.find("PCIe") != std::string::npos) return 2000;
        if (s.find("NVL") != std::string::npos) return 3900;
        return 3350;
    }
    return 0;
}

/* The FP8 operand of the first n tokens of X (rows of K codes) to dev, the rows after them zero,
 * as act_quant leaves the padding rows. */
void upload_tokens(void *dev, const std::vector<uint8_t> &X, int n, int K)
{
    std::vector<uint8_t> xq(X.size(), 0);
    memcpy(xq.data(), X.data(), (size_t)n * K);
    CK(cudaMemcpy(dev, xq.data(), xq.size(), cudaMemcpyHostToDevice));
}

/* ---- grouped launches (option decode_fused): several weights over one input in one launch
 * against each weight's own launch ---- */
struct Group {
    Shape sh; /* kind gfp8, gexact, gcomp or gdouble; M: the rows of all segments; groups: segments */
    int M[3];
};

void run_group(const Group &gr, const Opts &o, const cudaDeviceProp &prop, std::vector<int> ns, std::vector<Case> &out)
{
    const Shape &sh = gr.sh;
    const std::string kind = sh.kind;
    const int K = sh.K, nseg = sh.groups, np = 64, nkb = K / 128, sld = (nkb + 3) & ~3;
    const bool fp8 = kind == "gfp8" || kind == "gexact", dbl = kind == "gcomp" || kind == "gdouble";
    if (kind == "gexact" || kind == "gdouble") { /* the exact GEMVs take up to 16 tokens */
        std::vector<int> small;
        for (int n : ns)
            if (n <= 16) small.push_back(n);
        if (small.empty() || small.back() != 16) small.push_back(16);
        ns = small;
    }
    int mmax = 0, groups8 = 0;
    for (int i = 0; i < nseg; i++) mmax = std::max(mmax, gr.M[i]), groups8 += gr.M[i] / 8;
    const int ldy = mmax + 8;
    const size_t per = (size_t)64 * ldy, esz = dbl ? 8 : 2; /* y: segment i at i * per elements */
    std::vector<Bufs> w(nseg); /* each segment's weight copies (and FP8 scales) */
    Bufs b;                    /* the input, its scales, y */
    CK(cudaMalloc(&b.y, (size_t)nseg * per * esz));
    double bytes = 0;
    std::vector<uint8_t> X8((size_t)np * K);
    if (fp8) {
        std::vector<float> xs((size_t)nkb * np);
        for (auto &c : X8) c = rnd_code();
        for (auto &v : xs) v = rnd_scale(-12, -6);
        for (int i = 0; i < nseg; i++) {
            std::vector<uint8_t> W((size_t)gr.M[i] * K);
            std::vector<float> Ws((size_t)((gr.M[i] + 127) / 128) * sld);
            for (auto &c : W) c = rnd_code();
            for (auto &v : Ws) v = rnd_scale(-12, -6);
            fill_copies(w[i], W.data(), W.size(), o.l2);
            CK(cudaMalloc(&w[i].Ws, Ws.size() * 4));
            CK(cudaMemcpy(w[i].Ws, Ws.data(), Ws.size() * 4, cudaMemcpyHostToDevice));
            bytes += (double)W.size();
        }
        CK(cudaMalloc(&b.x, X8.size()));
        CK(cudaMalloc(&b.xs, xs.size() * 4));
        CK(cudaMemcpy(b.xs, xs.data(), xs.size() * 4, cudaMemcpyHostToDevice));
    } else {
        std::vector<uint16_t> X((size_t)np * K);
        for (auto &v : X) v = rnd_bf16();
        for (int i = 0; i < nseg; i++) {
            std::vector<uint16_t> W((size_t)gr.M[i] * K);
            for (auto &v : W) v = rnd_bf16();
            fill_copies(w[i], W.data(), W.size() * 2, o.l2);
            bytes += 2.0 * (double)W.size();
        }
        CK(cudaMalloc(&b.x, X.size() * 2));
        CK(cudaMemcpy(b.x, X.data(), X.size() * 2, cudaMemcpyHostToDevice));
    }
    /* FP8: tokens n..63 zero, as act_quant leaves the padding rows */
    int last_n = -1;
    auto set_n = [&](int n) {
        if (!fp8 || n == last_n) return;
        upload_tokens(b.x, X8, n, K);
        last_n = n;
    };
    char *y0 = (char *)b.y;
    const uint8_t *xq = (const uint8_t *)b.x;
    const uint16_t *xb = (const uint16_t *)b.x;
    const float *xs = (const float *)b.xs;
    auto segs = [&, y0](int i, hci_cu_seg *sg) {
        for (int k = 0; k < nseg; k++)
            sg[k] = {w[k].W(i), (const float *)w[k].Ws, sld, gr.M[k], y0 + (size_t)k * per * esz, ldy};
    };
    auto separate = [&, kind](int i, int n) -> int {
        hci_cu_seg sg[HCI_CU_SEGS_MAX];
        segs(i, sg);
        for (int k = 0; k < nseg; k++) {
            const int M = sg[k].M;
            int st;
            if (kind == "gfp8")
                st = hci_cu_gemv_fp8_fast(0, (const uint8_t *)sg[k].W, sg[k].Ws, sld, M, K, xq, xs, np, n,
                                          (uint16_t *)sg[k].y, ldy);
            else if (kind == "gexact")
                st = hci_cu_gemv_fp8(0, (const uint8_t *)sg[k].W, sg[k].Ws, sld, M, K, xq, xs, np, n, (uint16_t *)sg[k].y,
                                     ldy);
            else if (kind == "gcomp")
                st = hci_cu_gemm_bf16(0, (const uint16_t *)sg[k].W, M, K, xb, K, n, (double *)sg[k].y, ldy);
            else
                st = hci_cu_gemv_bf16(0, (const uint16_t *)sg[k].W, M, K, 1, xb, K, n, (double *)sg[k].y, nullptr, ldy);
            if (st) return st;
        }
        return HC_OK;
    };
    auto grouped = [&, kind](int i, int n, int split) -> int {
        hci_cu_seg sg[HCI_CU_SEGS_MAX];
        segs(i, sg);
        if (kind == "gfp8") return hci_cu_gemv_fp8_fast_grouped(0, sg, nseg, K, xq, xs, np, n, split);
        if (kind == "gexact") return hci_cu_gemv_fp8_grouped(0, sg, nseg, K, xq, xs, np, n);
        if (kind == "gcomp") return hci_cu_gemm_bf16_few_grouped(0, sg, nseg, K, xb, K, n);
        return hci_cu_gemv_bf16_grouped(0, sg, nseg, K, xb, K, n);
    };
    const Inside inside = [&gr, per, ldy](size_t i, int n) {
        const size_t r = i % per;
        return (int)(r / ldy) < n && (int)(r % ldy) < gr.M[i / per];
    };
    const std::function<Variants(int)> variants = [&](int n) {
        set_n(n);
        Variants v;
        v.push_back({"separate", separate});
        v.push_back({"grouped", [=](int i, int nn) { return grouped(i, nn, 0); }});
        const int mt = (n + 15) / 16;
        if (kind == "gfp8")
            for (int sp = 1; sp <= 8; sp *= 2)
                if (sp >= (mt <= 1 ? 1 : mt == 2 ? 2 : 4))
                    v.push_back({"S" + std::to_string(sp), [=](int i, int nn) { return grouped(i, nn, sp); }});
        return v;
    };
    const std::function<int(int)> chosen = [&](int n) {
        return kind == "gfp8" ? gt_pick_split(groups8, (n + 15) / 16, prop.multiProcessorCount) : 0;
    };
    if (dbl) run_shape<uint64_t>(sh, o, ns, b.y, (size_t)nseg * per, inside, SENT64, bytes, variants, chosen, out);
    else run_shape<uint16_t>(sh, o, ns, b.y, (size_t)nseg * per, inside, SENT16, bytes, variants, chosen, out);
}

} // namespace

int main(int argc, char **argv)
{
    Opts o;
    const char *json = nullptr;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quick")) o.quick = true, o.reps = 10;
        else if (!strcmp(a, "--reps") && i + 1 < argc) o.reps = std::max(1, atoi(argv[++i]));
        else if (!strcmp(a, "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(a, "--peak") && i + 1 < argc) o.peak = atof(argv[++i]);
        else if (!strcmp(a, "--only") && i + 1 < argc) o.only = argv[++i];
        else if (!strcmp(a, "--shape") && i + 1 < argc && sscanf(argv[i + 1], "%dx%d", &o.only_m, &o.only_k) == 2) i++;
        else {
            fprintf(stderr, "usage: gemv-check [--json PATH] [--peak GBS] [--reps N] [--quick] [--only fp8|bf16|comp|group] "
                            "[--shape MxK]\n");
            return 2;
        }
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("gemv-check: no CUDA device, skipped\n");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    if (prop.major < 9) {
        printf("gemv-check: %s is sm_%d%d, the kernels are built for sm_90: skipped\n", prop.name, prop.major, prop.minor);
        return 77;
    }
    if (o.peak <= 0) o.peak = default_peak(prop.name);
    o.l2 = (size_t)prop.l2CacheSize;
    printf("gemv-check on %s (%d SMs, L2 %d MiB), peak %.0f GB/s, median of %d runs\n", prop.name,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, o.peak, o.reps);

    static const Shape shapes[] = {
        {"fp8", "wq_b", 32768, 1024, 1},  {"fp8", "wo_b", 4096, 8192, 1},   {"fp8", "wq_a", 1024, 4096, 1},
        {"fp8", "wkv", 512, 4096, 1},     {"fp8", "idx_wq_b", 8192, 1024, 1}, {"fp8", "odd", 24, 640, 1},
        {"fp8", "odd", 136, 1152, 1},     {"bf16", "wo_a", 8192, 4096, 8},  {"bf16", "odd", 48, 96, 2},
        {"bf16", "odd", 72, 288, 3},      {"comp", "csa", 2048, 4096, 1},   {"comp", "hca", 1024, 4096, 1},
        {"comp", "idx", 512, 4096, 1},    {"comp", "wproj", 64, 4096, 1},   {"comp", "odd", 40, 384, 1},
        /* the tiny preset (dim 512, 8 heads of 128, ranks 256, 2 output groups: the golden set's) */
        {"fp8", "tiny_wq_a", 256, 512, 1}, {"fp8", "tiny_wq_b", 1024, 256, 1}, {"fp8", "tiny_wkv", 128, 512, 1},
        {"fp8", "tiny_wo_b", 512, 512, 1}, {"bf16", "tiny_wo_a", 512, 512, 2}, {"comp", "tiny_csa", 512, 512, 1},
        {"comp", "tiny_hca", 256, 512, 1}, {"comp", "tiny_wproj", 8, 512, 1},
    };
    const std::vector<int> ns = o.quick ? std::vector<int>{1, 8, 64} : std::vector<int>{1, 2, 4, 8, 16, 24, 40, 64};
    std::vector<Case> cases;

    for (const Shape &sh : shapes) {
        if (!o.only.empty() && o.only != sh.kind) continue;
        if (o.only_m && (sh.M != o.only_m || sh.K != o.only_k)) continue;
        const int M = sh.M, K = sh.K, ldy = M + 8;
        const Inside plain = [=](size_t i, int n) { return (int)(i / ldy) < n && (int)(i % ldy) < M; };
        Bufs b;
        CK(cudaMalloc(&b.y, (size_t)64 * ldy * 8));
        if (!strcmp(sh.kind, "fp8")) {
            const int nkb = K / 128, sld = (nkb + 3) & ~3, np = 64;
            std::vector<uint8_t> W((size_t)M * K), X((size_t)np * K);
            std::vector<float> Ws((size_t)((M + 127) / 128) * sld), xs((size_t)nkb * np);
            for (auto &c : W) c = rnd_code();
            for (auto &c : X) c = rnd_code();
            for (auto &s : Ws) s = rnd_scale(-12, -6);
            for (auto &s : xs) s = rnd_scale(-12, -6);
            fill_copies(b, W.data(), W.size(), o.l2);
            CK(cudaMalloc(&b.Ws, Ws.size() * 4));
            CK(cudaMalloc(&b.x, X.size()));
            CK(cudaMalloc(&b.xs, xs.size() * 4));
            CK(cudaMemcpy(b.Ws, Ws.data(), Ws.size() * 4, cudaMemcpyHostToDevice));
            CK(cudaMemcpy(b.xs, xs.data(), xs.size() * 4, cudaMemcpyHostToDevice));
            /* tokens n..63 zero, as act_quant leaves the padding rows (np = 64 for every n) */
            auto set_n = [&](int n) { upload_tokens(b.x, X, n, K); };
            auto call = [&b, M, K, sld, ldy, np](int i, int n, int split) {
                const uint8_t *w = (const uint8_t *)b.W(i);
                if (split < 0)
                    return hci_cu_gemv_fp8_fast_ref(0, w, (const float *)b.Ws, sld, M, K, (const uint8_t *)b.x,
                                                    (const float *)b.xs, np, n, (uint16_t *)b.y, ldy);
                return hci_cu_gemv_fp8_fast_split(0, w, (const float *)b.Ws, sld, M, K, (const uint8_t *)b.x,
                                                  (const float *)b.xs, np, n, (uint16_t *)b.y, ldy, split);
            };
            int last_n = -1;
            run_shape<uint16_t>(
                sh, o, ns, b.y, (size_t)64 * ldy, plain, SENT16, (double)W.size(),
                [&](int n) {
                    if (n != last_n) set_n(n), last_n = n;
                    Variants v;
                    v.push_back({"prev", [=](int i, int nn) { return call(i, nn, -1); }});
                    v.push_back({"new", [=](int i, int nn) { return call(i, nn, 0); }});
                    const int mt = (n + 15) / 16;
                    for (int s = 1; s <= 8; s *= 2)
                        if (s >= (mt <= 1 ? 1 : mt == 2 ? 2 : 4))
                            v.push_back({"S" + std::to_string(s), [=](int i, int nn) { return call(i, nn, s); }});
                    return v;
                },
                [&](int n) { return gt_pick_split(M / 8, (n + 15) / 16, prop.multiProcessorCount); }, cases);
        } else if (!strcmp(sh.kind, "bf16")) {
            const int G = sh.groups, ldx = G * K;
            std::vector<uint16_t> W((size_t)M * K), X((size_t)64 * ldx);
            for (auto &v : W) v = rnd_bf16();
            for (auto &v : X) v = rnd_bf16();
            fill_copies(b, W.data(), W.size() * 2, o.l2);
            CK(cudaMalloc(&b.x, X.size() * 2));
            CK(cudaMemcpy(b.x, X.data(), X.size() * 2, cudaMemcpyHostToDevice));
            auto call = [&b, M, K, G, ldx, ldy](int i, int n, int split) {
                const uint16_t *w = (const uint16_t *)b.W(i);
                if (split < 0)
                    return hci_cu_gemv_bf16_fast_ref(0, w, M, K, G, (const uint16_t *)b.x, ldx, n, (uint16_t *)b.y, ldy);
                return hci_cu_gemv_bf16_fast_split(0, w, M, K, G, (const uint16_t *)b.x, ldx, n, (uint16_t *)b.y, ldy,
                                                   split);
            };
            run_shape<uint16_t>(
                sh, o, ns, b.y, (size_t)64 * ldy, plain, SENT16, (double)W.size() * 2,
                [&](int n) {
                    Variants v;
                    v.push_back({"prev", [=](int i, int nn) { return call(i, nn, -1); }});
                    v.push_back({"new", [=](int i, int nn) { return call(i, nn, 0); }});
                    const int mt = (n + 15) / 16;
                    for (int s = 1; s <= 8; s *= 2)
                        if (s >= (mt <= 1 ? 1 : mt == 2 ? 2 : 4))
                            v.push_back({"S" + std::to_string(s), [=](int i, int nn) { return call(i, nn, s); }});
                    return v;
                },
                [&](int n) { return gt_pick_split(M / 8, (n + 15) / 16, prop.multiProcessorCount); }, cases);
        } else {
            const int ldx = K;
            std::vector<uint16_t> W((size_t)M * K), X((size_t)64 * ldx);
            for (auto &v : W) v = rnd_bf16();
            for (auto &v : X) v = rnd_bf16();
            fill_copies(b, W.data(), W.size() * 2, o.l2);
            CK(cudaMalloc(&b.x, X.size() * 2));
            CK(cudaMemcpy(b.x, X.data(), X.size() * 2, cudaMemcpyHostToDevice));
            auto call = [&b, M, K, ldx, ldy](int i, int n, int kernel) {
                const uint16_t *w = (const uint16_t *)b.W(i);
                return hci_cu_gemm_bf16_kernel(0, w, M, K, (const uint16_t *)b.x, ldx, n, (double *)b.y, ldy, kernel);
            };
            run_shape<uint64_t>(
                sh, o, ns, b.y, (size_t)64 * ldy, plain, SENT64, (double)W.size() * 2,
                [&](int n) {
                    Variants v;
                    v.push_back({"sliced", [=](int i, int nn) { return call(i, nn, 2); }});
                    v.push_back({"new", [=](int i, int nn) { return call(i, nn, 0); }});
                    if (M % 128 == 0) v.push_back({"big", [=](int i, int nn) { return call(i, nn, 1); }});
                    (void)n;
                    return v;
                },
                [&](int n) { return n <= GP_MAX_N ? 3 : 2; }, cases);
        }
        if (json) { /* after every shape: a run cut short keeps what it measured */
            int f = 0;
            for (const Case &c : cases) f += !c.ok;
            write_json(json, prop, o.peak, cases, f);
        }
    }

    /* the grouped launches of option decode_fused: V4-Flash's and the tiny preset's groups, odd ones */
    static const Group grps[] = {
        {{"gfp8", "wq_a+wkv", 1536, 4096, 2}, {1024, 512}},
        {{"gfp8", "wq_b+iwq_b", 40960, 1024, 2}, {32768, 8192}},
        {{"gfp8", "tiny_a+kv", 384, 512, 2}, {256, 128}},
        {{"gfp8", "tiny_b+iwq_b", 2048, 256, 2}, {1024, 1024}},
        {{"gfp8", "odd", 160, 640, 2}, {24, 136}},
        {{"gexact", "wq_a+wkv", 1536, 4096, 2}, {1024, 512}},
        {{"gexact", "wq_b+iwq_b", 40960, 1024, 2}, {32768, 8192}},
        {{"gexact", "odd", 150, 640, 2}, {20, 130}},
        {{"gcomp", "csa", 2624, 4096, 3}, {64, 512, 2048}},
        {{"gcomp", "hca", 1024, 4096, 1}, {1024}},
        {{"gcomp", "tiny_csa", 1032, 512, 3}, {8, 512, 512}},
        {{"gcomp", "odd", 72, 384, 3}, {8, 40, 24}},
        {{"gdouble", "csa", 2624, 4096, 3}, {64, 512, 2048}},
        {{"gdouble", "odd", 72, 384, 3}, {8, 40, 24}},
    };
    for (const Group &g : grps) {
        if (!o.only.empty() && o.only != "group") continue;
        if (o.only_m) continue;
        run_group(g, o, prop, ns, cases);
        if (json) {
            int f = 0;
            for (const Case &c : cases) f += !c.ok;
            write_json(json, prop, o.peak, cases, f);
        }
    }

    int failed = 0;
    for (const Case &c : cases) failed += !c.ok;
    printf("summary: %zu cases, %d failed (outputs bitwise unequal to the previous kernel's or the separate "
           "launches', stray writes or batch-variant rows)\n",
           cases.size(), failed);
    return failed ? 1 : 0;
}
