// cudamath-check: compares CUDA device sinf/cosf/expf/powf with the C ports in
// lib/util/cudamath.c, bit for bit. Needs a GPU. Exit 0 only with zero mismatches.
//
// Build (from the repository root, one line):
//   nvcc -O2 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -ffp-contract=off
//        tools/cudamath-check.cu lib/util/cudamath.c -o cudamath-check
// Run: ./cudamath-check [--quick | --golden]   (full run: about 20 s on an H200 host, 16 cores)
// Device code is built with nvcc's defaults (accurate sinf/cosf/expf/powf, no FTZ); the
// RoPE-recipe arithmetic in device code uses explicit __f*_rn intrinsics so nothing fuses.
// Host loops run on std::thread (all cores).
#include <cuda_runtime.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <mutex>
#include <thread>
#include <vector>

extern "C" {
#include "../lib/util/cudamath.h"
}

#define CK(x)                                                                                    \
    do {                                                                                         \
        cudaError_t e_ = (x);                                                                    \
        if (e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__,        \
                    __LINE__);                                                                   \
            exit(2);                                                                             \
        }                                                                                        \
    } while (0)

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// bitwise equality; all NaNs count as equal (the port returns the canonical one anyway)
static inline bool same(float a, float b) { return f2u(a) == f2u(b) || (a != a && b != b); }

// fn(begin, end, thread index) over [0, n) on all hardware threads
template <class F> static void par_ranges(size_t n, F fn)
{
    unsigned nt = std::max(1u, std::thread::hardware_concurrency());
    if (n < 4096) nt = 1;
    std::vector<std::thread> th;
    for (unsigned t = 0; t < nt; t++) {
        size_t b = n * t / nt, e = n * (t + 1) / nt;
        th.emplace_back([=] { fn(b, e, t); });
    }
    for (auto &x : th) x.join();
}
template <class F> static void par_for(size_t n, F fn)
{
    par_ranges(n, [&](size_t b, size_t e, unsigned) {
        for (size_t i = b; i < e; i++) fn(i);
    });
}

// ------------------------------------------------------------------------------------------
// result table
struct Stat {
    const char *name;
    unsigned long long n = 0, bad = 0;
    bool have = false;
    float in0 = 0, in1 = 0;
    uint32_t gpu = 0, cpu = 0;
    int nin = 1;
};
static std::vector<Stat> g_stats;

static Stat &stat(const char *name, int nin)
{
    for (auto &s : g_stats)
        if (!strcmp(s.name, name)) return s;
    Stat s;
    s.name = name;
    s.nin = nin;
    g_stats.push_back(s);
    return g_stats.back();
}

// Compare n results. in0/in1: inputs (in1 may be null). Records first mismatch (lowest index).
static void compare(Stat &st, size_t n, const float *gpu, const float *cpu, const float *in0,
                    const float *in1)
{
    std::mutex mu;
    unsigned long long bad = 0;
    size_t first = (size_t)-1;
    par_ranges(n, [&](size_t b, size_t e, unsigned) {
        unsigned long long nb = 0;
        size_t f = (size_t)-1;
        for (size_t i = b; i < e; i++)
            if (!same(gpu[i], cpu[i])) {
                nb++;
                if (f == (size_t)-1) f = i;
            }
        std::lock_guard<std::mutex> lk(mu);
        bad += nb;
        first = std::min(first, f);
    });
    st.n += n;
    st.bad += bad;
    if (first != (size_t)-1 && !st.have) {
        st.have = true;
        st.in0 = in0[first];
        st.in1 = in1 ? in1[first] : 0;
        st.gpu = f2u(gpu[first]);
        st.cpu = f2u(cpu[first]);
    }
}

// ------------------------------------------------------------------------------------------
// kernels
__global__ void k_sincos(const float *x, float *s, float *c, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        s[i] = sinf(x[i]);
        c[i] = cosf(x[i]);
    }
}
__global__ void k_sincosf(const float *x, float *s, float *c, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float a, b;
        sincosf(x[i], &a, &b);
        s[i] = a;
        c[i] = b;
    }
}
// expf over consecutive bit patterns b0 + i
__global__ void k_exp_bits(uint32_t b0, float *y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = expf(__uint_as_float(b0 + (uint32_t)i));
}
__global__ void k_exp(const float *x, float *y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = expf(x[i]);
}
__global__ void k_pow(const float *a, const float *b, float *y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = powf(a[i], b[i]);
}
__global__ void k_mufu(const float *x, float *e, float *r, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float a, b;
        asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(a) : "f"(x[i]));
        asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(b) : "f"(x[i]));
        e[i] = a;
        r[i] = b;
    }
}
// RoPE frequencies, the reference recipe, every op rounded in fp32 (no contraction)
__global__ void k_freqs(float *f, int yarn, float base, int low, int high)
{
    int i = threadIdx.x;
    if (i >= 32) return;
    float e = __fdiv_rn((float)(2 * i), 64.0f);
    float v = __fdiv_rn(1.0f, powf(base, e));
    if (yarn) {
        float ramp = __fdiv_rn((float)(i - low), (float)(high - low));
        ramp = fminf(fmaxf(ramp, 0.0f), 1.0f);
        float smooth = __fsub_rn(1.0f, ramp);
        v = __fadd_rn(__fmul_rn(__fdiv_rn(v, 16.0f), __fsub_rn(1.0f, smooth)),
                      __fmul_rn(v, smooth));
    }
    f[i] = v;
}
// angles fl32(t * f_i), t = t0 + idx / 32, i = idx % 32
__global__ void k_rope(const float *f, uint32_t t0, float *ang, float *s, float *c, size_t n)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x) {
        float a = __fmul_rn((float)(t0 + (uint32_t)(k >> 5)), f[k & 31]);
        ang[k] = a;
        s[k] = sinf(a);
        c[k] = cosf(a);
    }
}

// ------------------------------------------------------------------------------------------
// host helpers
struct Dev {
    float *a = nullptr, *b = nullptr, *c = nullptr, *d = nullptr;
    size_t cap = 0;
    void reserve(size_t n)
    {
        if (n <= cap) return;
        if (a) {
            cudaFree(a);
            cudaFree(b);
            cudaFree(c);
            cudaFree(d);
        }
        CK(cudaMalloc(&a, n * 4));
        CK(cudaMalloc(&b, n * 4));
        CK(cudaMalloc(&c, n * 4));
        CK(cudaMalloc(&d, n * 4));
        cap = n;
    }
};
static Dev g_dev;
static const int GRID = 132 * 16, BLOCK = 256;

static void check_sincos(const std::vector<float> &x, const char *ns, const char *nc)
{
    size_t n = x.size();
    g_dev.reserve(n);
    std::vector<float> gs(n), gc(n), hs(n), hc(n);
    CK(cudaMemcpy(g_dev.a, x.data(), n * 4, cudaMemcpyHostToDevice));
    k_sincos<<<GRID, BLOCK>>>(g_dev.a, g_dev.b, g_dev.c, n);
    CK(cudaGetLastError());
    CK(cudaMemcpy(gs.data(), g_dev.b, n * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gc.data(), g_dev.c, n * 4, cudaMemcpyDeviceToHost));
    par_for(n, [&](size_t i) {
        hs[i] = hci_cuda_sinf(x[i]);
        hc[i] = hci_cuda_cosf(x[i]);
    });
    compare(stat(ns, 1), n, gs.data(), hs.data(), x.data(), nullptr);
    compare(stat(nc, 1), n, gc.data(), hc.data(), x.data(), nullptr);
    // sincosf
    k_sincosf<<<GRID, BLOCK>>>(g_dev.a, g_dev.b, g_dev.c, n);
    CK(cudaGetLastError());
    CK(cudaMemcpy(gs.data(), g_dev.b, n * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gc.data(), g_dev.c, n * 4, cudaMemcpyDeviceToHost));
    par_for(n, [&](size_t i) { hci_cuda_sincosf(x[i], &hs[i], &hc[i]); });
    compare(stat("sincosf(all)", 1), n, gs.data(), hs.data(), x.data(), nullptr);
    compare(stat("sincosf(all)", 1), n, gc.data(), hc.data(), x.data(), nullptr);
}

static void check_pow(const std::vector<float> &a, const std::vector<float> &b, const char *name)
{
    size_t n = a.size();
    g_dev.reserve(n);
    std::vector<float> g(n), h(n);
    CK(cudaMemcpy(g_dev.a, a.data(), n * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(g_dev.b, b.data(), n * 4, cudaMemcpyHostToDevice));
    k_pow<<<GRID, BLOCK>>>(g_dev.a, g_dev.b, g_dev.c, n);
    CK(cudaGetLastError());
    CK(cudaMemcpy(g.data(), g_dev.c, n * 4, cudaMemcpyDeviceToHost));
    par_for(n, [&](size_t i) { h[i] = hci_cuda_powf(a[i], b[i]); });
    compare(stat(name, 2), n, g.data(), h.data(), a.data(), b.data());
}

// host version of the RoPE frequency recipe (fp32 ops; build with -ffp-contract=off)
static void host_freqs(float *f, int yarn, float base, int low, int high)
{
    for (int i = 0; i < 32; i++) {
        float e = (float)(2 * i) / 64.0f;
        float v = 1.0f / hci_cuda_powf(base, e);
        if (yarn) {
            float ramp = (float)(i - low) / (float)(high - low);
            ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
            float smooth = 1.0f - ramp;
            float p1 = (v / 16.0f) * (1.0f - smooth);
            float p2 = v * smooth;
            v = p1 + p2;
        }
        f[i] = v;
    }
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32()
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float rndu() { return (float)(rnd32() >> 8) * 0x1p-24f; } // [0,1)

// --golden: print GPU results for a fixed input list as C initializers (for the self-test)
__global__ void k_golden(const float *x, const float *y, float *s, float *c, float *e, float *p,
                         size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) {
        s[i] = sinf(x[i]);
        c[i] = cosf(x[i]);
        e[i] = expf(x[i]);
        p[i] = powf(x[i], y[i]);
    }
}
static int golden()
{
    std::vector<float> x, y;
    const float sp[] = {0.0f,           -0.0f,      0x1p-149f,   0x1p-126f,   1.0f,    -1.0f,
                        0.5f,           2.0f,       3.14159274f, 1.57079637f, 100.0f,  1000.0f,
                        65535.0f,       105614.99f, 105615.0f,   1e6f,        0x1p22f, 1e30f,
                        -3.4028235e38f, 88.7f,      -87.3f,      -103.9f,     10.0f,   -10.0f,
                        1e-10f,         -1e-10f};
    const float spy[] = {0.5f, 3.0f, -1.0f, 2.0f, 0.25f, -0.5f, 7.0f, 1.5f};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
        x.push_back(sp[i]);
        y.push_back(spy[i % 8]);
    }
    for (int i = 0; i < 32; i++) {
        x.push_back(10000.0f);
        y.push_back((float)(2 * i) / 64.0f);
    }
    for (int i = 0; i < 32; i++) {
        x.push_back(160000.0f);
        y.push_back((float)(2 * i) / 64.0f);
    }
    for (int i = 0; i < 96; i++) { // random x in [-104, 89] and moderate y
        x.push_back(-104.0f + 193.0f * rndu());
        y.push_back((rndu() - 0.5f) * 6.0f);
    }
    for (int i = 0; i < 32; i++) {
        x.push_back(0.1f + 4.0f * rndu());
        y.push_back((rndu() - 0.5f) * 60.0f);
    }
    for (int i = 0; i < 32; i++) {
        x.push_back((float)(rnd32() & 0xfffff) * 0.0075f);
        y.push_back(1.0f);
    } // RoPE-like angles
    size_t n = x.size();
    float *d;
    CK(cudaMalloc(&d, n * 4 * 6));
    CK(cudaMemcpy(d, x.data(), n * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + n, y.data(), n * 4, cudaMemcpyHostToDevice));
    k_golden<<<(unsigned)(n + 255) / 256, 256>>>(d, d + n, d + 2 * n, d + 3 * n, d + 4 * n,
                                                 d + 5 * n, n);
    std::vector<float> r(4 * n);
    CK(cudaMemcpy(r.data(), d + 2 * n, n * 16, cudaMemcpyDeviceToHost));
    const char *nm[4] = {"gold_sin", "gold_cos", "gold_exp", "gold_pow"};
    for (int k = 0; k < 4; k++) {
        printf("static const struct gold%d %s[] = {\n", k == 3 ? 2 : 1, nm[k]);
        int col = 0;
        for (size_t i = 0; i < n; i++) {
            if (k == 2 && !(x[i] >= -104.0f && x[i] <= 89.0f)) continue;
            if (k == 3)
                printf("%s{0x%08xu, 0x%08xu, 0x%08xu},", col ? " " : "    ", f2u(x[i]), f2u(y[i]),
                       f2u(r[k * n + i]));
            else
                printf("%s{0x%08xu, 0x%08xu},", col ? " " : "    ", f2u(x[i]), f2u(r[k * n + i]));
            if (++col == (k == 3 ? 3 : 4)) {
                printf("\n");
                col = 0;
            }
        }
        printf("%s};\n", col ? "\n" : "");
    }
    return 0;
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "cudamath-check: no CUDA device\n");
        return 2;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    if (argc > 1 && !strcmp(argv[1], "--golden")) return golden();
    printf("device: %s (sm_%d%d)%s\n", prop.name, prop.major, prop.minor,
           quick ? "  [--quick]" : "");

    // ---------------- (a) RoPE frequencies and angles ----------------
    float *dfreq;
    CK(cudaMalloc(&dfreq, 64 * 4));
    const double PI = 3.14159265358979323846;
    auto d = [&](double r, double base) {
        return 64.0 * log(65536.0 / (2.0 * PI * r)) / (2.0 * log(base));
    };
    int low = (int)fmax(floor(d(32, 160000.0)), 0.0),
        high = (int)fmin(ceil(d(1, 160000.0)), 63.0);
    printf("yarn low=%d high=%d\n", low, high);
    float hf[64], gf[64];
    host_freqs(hf, 0, 10000.0f, 0, 0);
    host_freqs(hf + 32, 1, 160000.0f, low, high);
    k_freqs<<<1, 32>>>(dfreq, 0, 10000.0f, 0, 0);
    k_freqs<<<1, 32>>>(dfreq + 32, 1, 160000.0f, low, high);
    CK(cudaMemcpy(gf, dfreq, 64 * 4, cudaMemcpyDeviceToHost));
    {
        std::vector<float> idx(64);
        for (int i = 0; i < 64; i++) idx[i] = (float)i;
        compare(stat("rope freq", 1), 64, gf, hf, idx.data(), nullptr);
    }
    {
        const uint32_t T = quick ? (1u << 14) : (1u << 20), CH = 1u << 16; // t per chunk
        size_t n = (size_t)CH * 32;
        g_dev.reserve(n);
        std::vector<float> ga(n), gs(n), gc(n), ha(n), hs(n), hc(n);
        for (int tb = 0; tb < 2; tb++) {
            const float *fr = hf + 32 * tb;
            for (uint32_t t0 = 0; t0 < T; t0 += CH) {
                k_rope<<<GRID, BLOCK>>>(dfreq + 32 * tb, t0, g_dev.a, g_dev.b, g_dev.c, n);
                CK(cudaGetLastError());
                CK(cudaMemcpy(ga.data(), g_dev.a, n * 4, cudaMemcpyDeviceToHost));
                CK(cudaMemcpy(gs.data(), g_dev.b, n * 4, cudaMemcpyDeviceToHost));
                CK(cudaMemcpy(gc.data(), g_dev.c, n * 4, cudaMemcpyDeviceToHost));
                par_for(n, [&](size_t k) {
                    float a = (float)(t0 + (uint32_t)(k >> 5)) * fr[k & 31];
                    ha[k] = a;
                    hs[k] = hci_cuda_sinf(a);
                    hc[k] = hci_cuda_cosf(a);
                });
                compare(stat("rope angle", 1), n, ga.data(), ha.data(), ga.data(), nullptr);
                compare(stat("rope sinf", 1), n, gs.data(), hs.data(), ga.data(), nullptr);
                compare(stat("rope cosf", 1), n, gc.data(), hc.data(), ga.data(), nullptr);
            }
        }
    }

    // ---------------- (b) sinf/cosf: every 97th bit pattern + specials ----------------
    {
        std::vector<float> x;
        const uint32_t stride = quick ? 9973 : 97;
        const uint32_t chunk = 1u << 24;
        uint64_t b = 0;
        while (b < (1ull << 32)) {
            x.clear();
            for (; b < (1ull << 32) && x.size() < chunk; b += stride)
                x.push_back(u2f((uint32_t)b));
            check_sincos(x, "sinf(stride)", "cosf(stride)");
        }
        x.clear();
        const float sp[] = {0.0f,      -0.0f,       INFINITY,    -INFINITY,     NAN,
                            -NAN,      0x1p-149f,   -0x1p-149f,  0x1p-127f,     0x1.fffffcp-127f,
                            0x1p-126f, -0x1p-126f,  1.0f,        -1.0f,         105614.99f,
                            105615.0f, -105615.0f,  3.14159265f, 1.5707963f,    0.78539816f,
                            0x1p22f,   0x1p23f,     0x1p24f,     3.4028235e38f, -3.4028235e38f,
                            1e30f,     12582912.0f, 6.2831855f,  0x1.921fb6p+1f};
        for (float v : sp) x.push_back(v);
        for (uint32_t i = 0; i < (1u << 16); i++) x.push_back(u2f(i)); // subnormals
        for (uint32_t i = 0; i < (1u << 16); i++)
            x.push_back(u2f(0x80000000u | (rnd32() & 0x7fffff)));
        // around multiples of pi/2 (hard cases for reduction)
        for (int k = -200000; k <= 200000; k++) {
            float c = (float)(k * 1.5707963267948966);
            uint32_t u = f2u(c);
            for (int dlt = -2; dlt <= 2; dlt++) x.push_back(u2f(u + dlt));
        }
        check_sincos(x, "sinf(special)", "cosf(special)");
    }

    // ---------------- (c) expf over every bit pattern in [-104, 89] ----------------
    {
        const uint32_t step = quick ? 4099 : 1;
        const uint32_t CH = 1u << 26;
        std::vector<float> g(CH), h(CH), in(CH);
        g_dev.reserve(CH);
        Stat &st = stat(step == 1 ? "expf[-104,89] all" : "expf[-104,89] sub", 1);
        const uint32_t ranges[2][2] = {{0x00000000u, f2u(89.0f)}, {0x80000000u, f2u(-104.0f)}};
        for (int r = 0; r < 2; r++) {
            if (step == 1) {
                for (uint64_t b0 = ranges[r][0]; b0 <= ranges[r][1]; b0 += CH) {
                    size_t n =
                        (size_t)((ranges[r][1] - b0 + 1) < CH ? (ranges[r][1] - b0 + 1) : CH);
                    k_exp_bits<<<GRID, BLOCK>>>((uint32_t)b0, g_dev.b, n);
                    CK(cudaGetLastError());
                    CK(cudaMemcpy(g.data(), g_dev.b, n * 4, cudaMemcpyDeviceToHost));
                    par_for(n, [&](size_t i) {
                        float xv = u2f((uint32_t)b0 + (uint32_t)i);
                        in[i] = xv;
                        h[i] = hci_cuda_expf(xv);
                    });
                    compare(st, n, g.data(), h.data(), in.data(), nullptr);
                }
            } else {
                std::vector<float> x;
                for (uint64_t b = ranges[r][0]; b <= ranges[r][1]; b += step)
                    x.push_back(u2f((uint32_t)b));
                size_t n = x.size();
                CK(cudaMemcpy(g_dev.a, x.data(), n * 4, cudaMemcpyHostToDevice));
                k_exp<<<GRID, BLOCK>>>(g_dev.a, g_dev.b, n);
                CK(cudaMemcpy(g.data(), g_dev.b, n * 4, cudaMemcpyDeviceToHost));
                par_for(n, [&](size_t i) { h[i] = hci_cuda_expf(x[i]); });
                compare(st, n, g.data(), h.data(), x.data(), nullptr);
            }
        }
        // outside the range and specials
        std::vector<float> x;
        for (uint64_t b = 0; b < (1ull << 32); b += 65521) x.push_back(u2f((uint32_t)b));
        const float sp[] = {INFINITY,    -INFINITY,   NAN,     88.72283f, 88.72284f, -87.33655f,
                            -103.97208f, -103.97209f, -104.0f, 89.0f,     0.0f,      -0.0f};
        for (float v : sp) x.push_back(v);
        size_t n = x.size();
        CK(cudaMemcpy(g_dev.a, x.data(), n * 4, cudaMemcpyHostToDevice));
        k_exp<<<GRID, BLOCK>>>(g_dev.a, g_dev.b, n);
        CK(cudaMemcpy(g.data(), g_dev.b, n * 4, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) h[i] = hci_cuda_expf(x[i]);
        compare(stat("expf(other)", 1), n, g.data(), h.data(), x.data(), nullptr);
    }

    // ---------------- (d) powf ----------------
    {
        std::vector<float> a, b;
        const float bases[3] = {10000.0f, 160000.0f, 40000.0f};
        for (float base : bases)
            for (int i = -128; i <= 128; i++) {
                a.push_back(base);
                b.push_back((float)i / 32.0f);
            }
        check_pow(a, b, "powf(base,i/32)");
        a.clear();
        b.clear();
        // every mantissa of [1,2) times a few exponents (the log2 core and its MUFU.RCP)
        const float ys[] = {0.5f, 0.03125f, -1.5f, 3.0f};
        const uint32_t mstep = quick ? 61 : 1;
        for (float y : ys)
            for (uint32_t m = 0; m < (1u << 23); m += mstep) {
                a.push_back(u2f(0x3f800000u | m) * (float)(1 << (m % 7)));
                b.push_back(y);
            }
        check_pow(a, b, "powf(mantissas)");
        a.clear();
        b.clear();
        // random pairs: any x with moderate y, x near 1 with large y, negative x with integer y
        const size_t NR = quick ? (1u << 18) : (1u << 24);
        for (size_t i = 0; i < NR; i++) {
            uint32_t kind = i % 4;
            float x, y;
            if (kind == 0) {
                x = u2f(rnd32());
                y = (rndu() - 0.5f) * 8.0f;
            } else if (kind == 1) {
                x = 0.5f + 1.5f * rndu();
                y = (rndu() - 0.5f) * 400.0f;
            } else if (kind == 2) {
                x = -(u2f(rnd32() & 0x7fffffff));
                y = (float)((int)(rnd32() % 61) - 30);
            } else {
                x = u2f(rnd32() & 0x7fffffff);
                y = u2f(rnd32());
            }
            a.push_back(x);
            b.push_back(y);
        }
        const float sx[] = {0.0f, -0.0f, 1.0f, -1.0f,     INFINITY,   -INFINITY,
                            NAN,  2.0f,  0.5f, 0x1p-149f, -0x1p-149f, 3.4028235e38f};
        const float sy[] = {0.0f,  -0.0f,    1.0f,      -1.0f, 2.0f,  3.0f,   -3.0f,    0.5f,
                            -0.5f, INFINITY, -INFINITY, NAN,   1e10f, -1e10f, 0x1p-149f};
        for (float x : sx)
            for (float y : sy) {
                a.push_back(x);
                b.push_back(y);
            }
        check_pow(a, b, "powf(random+special)");
    }

    // ---------------- (e) the hardware approximations on their own ----------------
    {
        std::vector<float> x;
        for (uint64_t b = 0; b < (1ull << 32); b += quick ? 4099 : 61)
            x.push_back(u2f((uint32_t)b));
        for (int k = -140; k <= 140; k++)
            for (int h = 0; h < 2; h++) {
                uint32_t u = f2u((float)k + (h ? 0.5f : 0.0f));
                for (int dlt = -3; dlt <= 3; dlt++) x.push_back(u2f(u + dlt));
            }
        // every 7th fraction for some integer parts, both signs (EX2's table and its edges)
        const int ips[] = {0, 1, 2, 5, 24, 126, 127, -1, -2, -24, -25, -125, -126, -127};
        for (int ip : ips)
            for (uint32_t f = 0; f < (1u << 23); f += quick ? 997 : 7)
                x.push_back((float)ip + (ip < 0 ? -1.0f : 1.0f) * (float)f * 0x1p-23f);
        // RCP: every significand in [1,2), scaled
        for (uint32_t m = 0; m < (1u << 23); m += quick ? 97 : 1)
            x.push_back(u2f(0x3f800000u | m) * (m & 1 ? -8.0f : 0.25f));
        size_t n = x.size();
        g_dev.reserve(n);
        std::vector<float> ge(n), gr(n), he(n), hr(n);
        CK(cudaMemcpy(g_dev.a, x.data(), n * 4, cudaMemcpyHostToDevice));
        k_mufu<<<GRID, BLOCK>>>(g_dev.a, g_dev.b, g_dev.c, n);
        CK(cudaGetLastError());
        CK(cudaMemcpy(ge.data(), g_dev.b, n * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(gr.data(), g_dev.c, n * 4, cudaMemcpyDeviceToHost));
        par_for(n, [&](size_t i) {
            he[i] = hci_cuda_ex2_approx_ftz(x[i]);
            hr[i] = hci_cuda_rcp_approx_ftz(x[i]);
        });
        compare(stat("ex2.approx.ftz", 1), n, ge.data(), he.data(), x.data(), nullptr);
        compare(stat("rcp.approx.ftz", 1), n, gr.data(), hr.data(), x.data(), nullptr);
    }

    // ---------------- report ----------------
    printf("%-22s %14s %12s  %s\n", "function", "inputs", "mismatches",
           "first mismatch: input -> gpu bits / cpu bits");
    unsigned long long total_bad = 0;
    for (auto &s : g_stats) {
        total_bad += s.bad;
        printf("%-22s %14llu %12llu", s.name, s.n, s.bad);
        if (s.have) {
            if (s.nin == 2)
                printf("  (%a, %a)", s.in0, s.in1);
            else
                printf("  %a", s.in0);
            printf(" -> 0x%08x / 0x%08x", s.gpu, s.cpu);
        }
        printf("\n");
    }
    printf("%s\n", total_bad ? "FAIL" : "PASS: all bit-identical");
    return total_bad ? 1 : 0;
}
