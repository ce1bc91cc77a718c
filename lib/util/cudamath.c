/* cudamath.c - bit-exact CPU ports of CUDA 13.0 device sinf/cosf/sincosf/expf/powf.
 *
 * Source: /usr/local/cuda/nvvm/libdevice/libdevice.10.bc (CUDA 13.0), taking the non-FTZ
 * branch of every __nvvm_reflect("__CUDA_FTZ"), cross-checked against the PTX that
 * nvcc -arch=sm_90a emits for it (NVVM folds constants and turns nvvm.round.f into cvt.rni, i.e.
 * round half to even). Comments name the libdevice helper each piece comes from.
 *
 * Requirements: -ffp-contract=off, round-to-nearest mode, IEEE float/double (no x87 excess
 * precision: x86-64 SSE or AArch64), a correctly rounded fmaf (glibc's is, with or without
 * hardware FMA). */
#include "cudamath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* The GPU returns its canonical NaN (0x7fffffff) for every NaN result. */
static inline float canon(float r) { return r != r ? u2f(0x7fffffffu) : r; }

/* cvt.rni.s32.f32 (llvm.nvvm.f2i.rn): nearest-even, saturating, NaN -> 0. */
static int32_t cvt_rni_s32(float x)
{
    if (x != x) return 0;
    if (x >= 2147483648.0f) return INT32_MAX;
    if (x <= -2147483648.0f) return INT32_MIN;
    return (int32_t)nearbyintf(x);
}

/* cvt.rzi.s32.f32: toward zero, saturating, NaN -> 0. */
static int32_t cvt_rzi_s32(float x)
{
    if (x != x) return 0;
    if (x >= 2147483648.0f) return INT32_MAX;
    if (x <= -2147483648.0f) return INT32_MIN;
    return (int32_t)x;
}

/* ---------------------------------------------------------------------------------------------
 * Hardware approximations: MUFU.EX2 (ex2.approx.ftz.f32, used by expf) and MUFU.RCP
 * (rcp.approx.ftz.f32, used by powf). NVIDIA does not specify their results bit for bit; these
 * models were fitted to every table input on an H200 (sm_90): all 2^23 fractions for EX2, all
 * 2^23 significands for RCP, then checked against the GPU on every 61st bit pattern of all
 * floats (edges included) and through expf/powf (tools/cudamath-check.cu): no difference.
 * They have the shape of the quadratic interpolator of Oberman and Siu (ARITH 2005): the top
 * 6 (EX2) or 7 (RCP) fraction bits select {C0 (26 bits, LSB 2^-2 of the result's), C1 (16 bits),
 * C2 (10 bits)}, the other bits X feed
 *     Y = floor((C0 * 2^13 + kappa + C1 * X + C2 * SQ(X)) / 2^15)
 * where SQ is a truncated squarer (X^2 with only the partial-product columns >= 19 kept) and Y is
 * the 24-bit result significand. Each table entry is the only integer triple that reproduces all
 * outputs of its segment; kappa (a rounding constant) is the one value that fits all segments.
 * ------------------------------------------------------------------------------------------- */

/* X^2 of a 17-bit X from a squarer array that keeps only the partial products in columns >= 19
 * (b_i at column 2i, b_i b_j at column i+j+1), in units of 2^19. */
static uint32_t trunc_square17(uint32_t x)
{
    uint64_t s = 0;
    for (int i = 0; i < 17; i++) {
        if (!((x >> i) & 1u)) continue;
        if (2 * i >= 19) s += (uint64_t)1 << (2 * i);
        int lb = i + 1 > 18 - i ? i + 1 : 18 - i; /* partners j with i < j, i + j + 1 >= 19 */
        s += ((uint64_t)((x >> lb) << lb)) << (i + 1);
    }
    return (uint32_t)(s >> 19);
}

static uint32_t interp(const int32_t c[3], int32_t kappa, uint32_t x, uint32_t x17)
{
    int64_t acc = ((int64_t)c[0] << 13) + kappa + (int64_t)c[1] * x;
    acc += (int64_t)c[2] * trunc_square17(x17);
    return (uint32_t)(acc >> 15);
}

/* EX2: 64 segments of [0,1), X = low 17 fraction bits. */
static const int32_t ex2_tab[64][3] = {
    {33554435, 22713, 494}, {33919818, 22960, 501}, {34289182, 23210, 506},
    {34662565, 23463, 511}, {35040018, 23718, 518}, {35421577, 23977, 521},
    {35807292, 24238, 527}, {36197209, 24502, 532}, {36591372, 24768, 541},
    {36989825, 25038, 546}, {37392616, 25311, 551}, {37799797, 25586, 559},
    {38211409, 25865, 564}, {38627504, 26147, 568}, {39048131, 26431, 577},
    {39473337, 26719, 583}, {39903173, 27010, 589}, {40337690, 27304, 596},
    {40776937, 27602, 600}, {41220970, 27902, 609}, {41669836, 28206, 615},
    {42123592, 28513, 622}, {42582286, 28824, 627}, {43045977, 29138, 633},
    {43514717, 29455, 641}, {43988561, 29776, 647}, {44467565, 30100, 655},
    {44951786, 30428, 661}, {45441278, 30759, 670}, {45936101, 31094, 677},
    {46436314, 31432, 686}, {46941971, 31775, 691}, {47453135, 32121, 699},
    {47969867, 32471, 705}, {48492225, 32824, 715}, {49020269, 33182, 721},
    {49554065, 33543, 730}, {50093674, 33908, 739}, {50639159, 34277, 748},
    {51190582, 34651, 753}, {51748011, 35028, 763}, {52311510, 35409, 773},
    {52881146, 35795, 779}, {53456983, 36185, 787}, {54039091, 36579, 796},
    {54627538, 36977, 806}, {55222393, 37380, 813}, {55823725, 37787, 822},
    {56431607, 38198, 833}, {57046106, 38614, 842}, {57667297, 39035, 849},
    {58295254, 39460, 858}, {58930048, 39889, 870}, {59571754, 40324, 877},
    {60220447, 40763, 887}, {60876205, 41207, 896}, {61539104, 41655, 909},
    {62209220, 42109, 917}, {62886634, 42568, 925}, {63571424, 43031, 938},
    {64263672, 43500, 946}, {64963458, 43973, 959}, {65670863, 44452, 969},
    {66385972, 44936, 980},
};
#define EX2_KAPPA 6114

/* MUFU.EX2 with .ftz. |x| is truncated to fixed point with 23 fraction bits, i + f. For x < 0
 * with f != 0 the hardware uses -(i + 1) + (1 - f) with 1 - f formed by one's complement, i.e.
 * 1 - f - 2^-23 (measured: 2^x is then about 1 ulp low); for x = -i it returns 2^-i exactly.
 * Integer part -> exponent, fraction -> table. Subnormal inputs count as 0, subnormal results
 * are flushed to +0, |x| >= 128 gives inf or 0. */
static float mufu_ex2(float x)
{
    uint32_t u = f2u(x), ax = u & 0x7fffffffu;
    int neg = (int)(u >> 31);
    if (ax > 0x7f800000u) return u2f(0x7fffffffu);
    if (ax < 0x00800000u) return 1.0f;
    if (ax >= 0x43000000u) return neg ? 0.0f : INFINITY; /* |x| >= 128 */
    int e = (int)(ax >> 23) - 127;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t q = e >= 0 ? m << e : (e > -24 ? m >> -e : 0u); /* trunc(|x| * 2^23) < 2^30 */
    int32_t ip;
    uint32_t f;
    if (!neg) {
        ip = (int32_t)(q >> 23);
        f = q & 0x7fffffu;
    } else if ((q & 0x7fffffu) == 0) { /* -integer: exact */
        ip = -(int32_t)(q >> 23);
        f = 0;
    } else { /* -(i + f) = -(i + 1) + (1 - f), 1 - f by one's complement */
        ip = -(int32_t)(q >> 23) - 1;
        f = ~q & 0x7fffffu;
    }
    uint32_t y = interp(ex2_tab[f >> 17], EX2_KAPPA, f & 0x1ffffu, f & 0x1ffffu); /* < 2^24 */
    int be = ip + 127;
    if (be <= 0) return 0.0f;
    if (be >= 255) return INFINITY;
    return u2f(((uint32_t)be << 23) + (y - 0x800000u));
}

/* RCP: 128 segments of [1,2), X = low 16 significand bits (C1 < 0); the squarer gets 2X. */
static const int32_t rcp_tab[128][3] = {
    {67108864, -65534, 1013}, {66588642, -64522, 989}, {66076422, -63533, 966},
    {65572021, -62567, 945}, {65075262, -61622, 923}, {64585976, -60699, 902},
    {64103992, -59797, 883}, {63629146, -58914, 863}, {63161284, -58051, 845},
    {62700254, -57207, 827}, {62245905, -56381, 809}, {61798091, -55572, 791},
    {61356677, -54781, 774}, {60921524, -54007, 758}, {60492499, -53249, 742},
    {60069474, -52507, 727}, {59652325, -51780, 711}, {59240930, -51068, 696},
    {58835170, -50371, 682}, {58434930, -49688, 669}, {58040099, -49019, 656},
    {57650569, -48363, 642}, {57266231, -47721, 631}, {56886986, -47091, 618},
    {56512729, -46473, 605}, {56143366, -45868, 594}, {55778798, -45274, 582},
    {55418934, -44692, 572}, {55063686, -44121, 561}, {54712961, -43560, 549},
    {54366677, -43011, 540}, {54024747, -42471, 529}, {53687093, -41942, 519},
    {53353633, -41423, 510}, {53024288, -40913, 501}, {52698987, -40412, 490},
    {52377651, -39921, 482}, {52060212, -39439, 474}, {51746596, -38965, 465},
    {51436737, -38500, 457}, {51130565, -38043, 449}, {50828017, -37594, 441},
    {50529029, -37153, 433}, {50233538, -36720, 426}, {49941482, -36294, 418},
    {49652803, -35876, 412}, {49367442, -35464, 403}, {49085342, -35060, 397},
    {48806449, -34663, 390}, {48530705, -34272, 383}, {48258060, -33888, 377},
    {47988464, -33511, 371}, {47721861, -33140, 366}, {47458204, -32774, 358},
    {47197444, -32415, 353}, {46939534, -32062, 348}, {46684429, -31714, 341},
    {46432082, -31373, 337}, {46182446, -31036, 331}, {45935480, -30705, 326},
    {45691143, -30379, 320}, {45449392, -30059, 316}, {45210185, -29743, 310},
    {44973481, -29432, 305}, {44739244, -29127, 302}, {44507436, -28826, 297},
    {44278016, -28529, 291}, {44050948, -28237, 287}, {43826199, -27950, 283},
    {43603730, -27667, 279}, {43383510, -27388, 274}, {43165503, -27114, 271},
    {42949675, -26843, 266}, {42735995, -26577, 263}, {42524430, -26314, 258},
    {42314950, -26056, 256}, {42107525, -25801, 251}, {41902122, -25550, 248},
    {41698714, -25302, 243}, {41497270, -25058, 240}, {41297764, -24818, 237},
    {41100168, -24581, 233}, {40904453, -24348, 231}, {40710593, -24117, 226},
    {40518561, -23890, 223}, {40328333, -23667, 222}, {40139883, -23446, 218},
    {39953186, -23228, 214}, {39768218, -23014, 212}, {39584955, -22802, 208},
    {39403371, -22593, 205}, {39223448, -22388, 204}, {39045159, -22184, 199},
    {38868484, -21984, 197}, {38693401, -21787, 196}, {38519888, -21592, 193},
    {38347924, -21399, 189}, {38177489, -21209, 186}, {38008563, -21022, 184},
    {37841123, -20837, 182}, {37675154, -20655, 180}, {37510633, -20475, 178},
    {37347543, -20297, 175}, {37185866, -20122, 173}, {37025582, -19949, 171},
    {36866673, -19778, 169}, {36709124, -19609, 166}, {36552915, -19443, 165},
    {36398030, -19278, 161}, {36244452, -19116, 160}, {36092164, -18956, 159},
    {35941151, -18797, 155}, {35791396, -18641, 154}, {35642884, -18487, 153},
    {35495599, -18334, 150}, {35349528, -18184, 149}, {35204652, -18035, 147},
    {35060959, -17888, 145}, {34918436, -17743, 143}, {34777064, -17600, 143},
    {34636835, -17458, 140}, {34497732, -17318, 138}, {34359741, -17180, 137},
    {34222849, -17043, 135}, {34087044, -16908, 133}, {33952313, -16775, 132},
    {33818641, -16643, 131}, {33686019, -16513, 130},
};
#define RCP_KAPPA 2023

/* MUFU.RCP with .ftz: the significand goes through the table, the exponent is negated;
 * subnormal inputs count as 0 (result +-inf), subnormal results are flushed to +-0. */
static float mufu_rcp(float x)
{
    uint32_t u = f2u(x), s = u & 0x80000000u, ax = u & 0x7fffffffu;
    if (ax > 0x7f800000u) return u2f(0x7fffffffu);
    if (ax < 0x00800000u) return u2f(s | 0x7f800000u);
    if (ax == 0x7f800000u) return u2f(s);
    int e = (int)(ax >> 23) - 127;
    uint32_t mant = ax & 0x7fffffu;
    uint32_t xl = mant & 0xffffu;
    uint32_t y = interp(rcp_tab[mant >> 16], RCP_KAPPA, xl, xl << 1); /* (2^23, 2^24] */
    int be = 126 - e; /* result = y * 2^(-24-e) */
    if (be < 0 || (be == 0 && y < 0x1000000u)) return u2f(s);
    return u2f(s | (((uint32_t)be << 23) + (y - 0x800000u)));
}

float hci_cuda_ex2_approx_ftz(float x) { return mufu_ex2(x); }
float hci_cuda_rcp_approx_ftz(float x) { return mufu_rcp(x); }

/* ---------------------------------------------------------------------------------------------
 * sin / cos (__internal_trig_reduction_kernel, __internal_accurate_sinf/cosf, __nv_sincosf)
 * ------------------------------------------------------------------------------------------- */

/* __cudart_i2opi_f: 2/pi in 32-bit chunks, least significant first. */
static const uint32_t i2opi_f[6] = {
    0x3c439041u, 0xdb629599u, 0xf534ddc0u, 0xfc2757d1u, 0x4e441529u, 0xa2f9836eu,
};

/* __internal_trig_reduction_slowpath (inlined in __nv_sinf/cosf): Payne-Hanek for |a| >= 105615,
 * finite a.  Returns the reduced argument, *q the quadrant. */
static float trig_reduce_slow(float a, int32_t *q)
{
    uint32_t ia = f2u(a);
    uint32_t sign = ia & 0x80000000u;
    uint32_t e = ((ia >> 23) & 0xffu) - 128u; /* >= 15 here */
    uint32_t m = (ia << 8) | 0x80000000u;
    uint32_t res[7];
    uint64_t carry = 0;
    for (int i = 0; i < 6; i++) { /* mad.lo.cc.u32 / madc.hi.u32 chain */
        uint64_t p = (uint64_t)i2opi_f[i] * m + carry;
        res[i] = (uint32_t)p;
        carry = p >> 32;
    }
    res[6] = (uint32_t)carry;
    int base = 4 - (int)(e >> 5);
    uint32_t hi = res[base + 2], lo = res[base + 1];
    uint32_t sh = e & 31u;
    if (sh) {
        hi = (hi << sh) + (lo >> (32u - sh));
        lo = (lo << sh) + (res[base] >> (32u - sh));
    }
    uint32_t qq = hi >> 30;
    hi = (hi << 2) + (lo >> 30);
    lo <<= 2;
    uint32_t up = hi >> 31; /* fraction >= 1/2: round the quadrant up, negate the rest */
    uint32_t iq = qq + up;
    *q = (int32_t)(sign ? 0u - iq : iq);
    uint32_t s = sign;
    if (up) {
        hi = ~hi;
        lo = ~lo;
        s ^= 0x80000000u;
    }
    int64_t v = (int64_t)(((uint64_t)hi << 32) | lo);
    double d = (double)v * 0x1.921fb54442d19p-64; /* * pi/2^65 */
    float r = (float)d;
    return s ? -r : r;
}

/* Reduction to t in about [-pi/4, pi/4] and quadrant q (__internal_trig_reduction_kernel). */
static float trig_reduce(float a, int32_t *q)
{
    float j = a * 0x1.45f306p-1f; /* 2/pi */
    int32_t iq = cvt_rni_s32(j);
    float fq = (float)iq;
    float t = fmaf(fq, -0x1.921fb4p+0f, a); /* pi/2 in three pieces (Cody-Waite) */
    t = fmaf(fq, -0x1.4442d0p-24f, t);
    t = fmaf(fq, -0x1.84698ap-48f, t);
    if (fabsf(a) >= 105615.0f) {
        if (fabsf(a) == INFINITY) {
            t = a * 0.0f; /* NaN */
            iq = 0;
        } else {
            t = trig_reduce_slow(a, &iq);
        }
    }
    *q = iq;
    return t;
}

/* __internal_accurate_sinf/cosf core: sin(t) (q even) or cos(t) (q odd), sign from q & 2. */
static float sincos_poly(float t, int32_t q)
{
    int odd = q & 1;
    float p = odd ? 1.0f : t;
    float t2 = t * t;
    float c;
    if (odd) c = fmaf(0x1.9758p-16f, t2, -0x1.6c0fdap-10f);
    else c = -0x1.9a82a6p-13f;
    c = fmaf(c, t2, odd ? 0x1.555576p-5f : 0x1.110bc8p-7f);
    c = fmaf(c, t2, odd ? -0x1.fffffep-2f : -0x1.555550p-3f);
    float tp = fmaf(t2, p, 0.0f);
    float r = fmaf(c, tp, p);
    if (q & 2) r = fmaf(r, -1.0f, 0.0f);
    return r;
}

float hci_cuda_sinf(float x)
{
    int32_t q;
    float t = trig_reduce(x, &q);
    return canon(sincos_poly(t, q));
}

float hci_cuda_cosf(float x)
{
    int32_t q;
    float t = trig_reduce(x, &q);
    return canon(sincos_poly(t, (int32_t)((uint32_t)q + 1u)));
}

/* __nv_sincosf: same reduction; both polynomials evaluated, swapped for odd quadrants, negated
 * with a plain sign flip (not fma(r,-1,0) as in sinf/cosf). */
void hci_cuda_sincosf(float x, float *s, float *c)
{
    int32_t q;
    float t = trig_reduce(x, &q);
    float t2 = t * t;
    float cp = fmaf(0x1.9758p-16f, t2, -0x1.6c0fdap-10f);
    cp = fmaf(cp, t2, 0x1.555576p-5f);
    cp = fmaf(cp, t2, -0x1.fffffep-2f);
    cp = fmaf(cp, t2, 1.0f);
    float t3 = fmaf(t2, t, 0.0f);
    float sp = fmaf(-0x1.9a82a6p-13f, t2, 0x1.110bc8p-7f);
    sp = fmaf(sp, t2, -0x1.555550p-3f);
    sp = fmaf(sp, t3, t);
    float sv = (q & 1) ? cp : sp;
    float cv = (q & 1) ? sp : cp;
    if (q & 2) sv = -sv;
    if (((uint32_t)q + 1u) & 2u) cv = -cv;
    *s = canon(sv);
    *c = canon(cv);
}

/* ---------------------------------------------------------------------------------------------
 * expf (__internal_accurate_expf): 2^(x*log2 e) = ex2.approx(f) * 2^n, n from a saturated
 * round-down trick (which also clamps n to [-126, 126]), f = x*log2 e - n with log2 e split in
 * two pieces.
 * ------------------------------------------------------------------------------------------- */
float hci_cuda_expf(float x)
{
    float j = fmaf(x, 0x1.77313ap-8f, 0.5f); /* x * log2(e)/252 + 1/2 */
    if (!(j > 0.0f)) j = 0.0f;                /* cvt.sat.f32.f32 (NaN -> 0) */
    if (j > 1.0f) j = 1.0f;
    /* fma.rm(j, 252, 12582913): the exact value lies in [2^23, 2^24) where the float grid is
     * the integers, so rounding down is floor(); j*252 is exact in double. */
    float k = (float)floor((double)j * 252.0 + 12582913.0);
    float n = k + -12583039.0f; /* exact */
    float f = fmaf(x, 0x1.715476p+0f, -n);
    f = fmaf(x, 0x1.4ae0c0p-26f, f);
    float scale = u2f(f2u(k) << 23); /* 2^n */
    return canon(mufu_ex2(f) * scale);
}

/* ---------------------------------------------------------------------------------------------
 * powf (__internal_accurate_powf: __internal_log2_ep, then __internal_powf_exp2, then
 * __internal_powf_special_cases).
 * ------------------------------------------------------------------------------------------- */
float hci_cuda_powf(float a, float b)
{
    /* |b - 2 trunc(b/2)| == 1 iff b is an odd integer */
    float hb = truncf(b * 0.5f);
    float oddf = fabsf(b - (hb + hb));

    /* log2|a| as a double-float hi + lo (__internal_log2_ep) */
    float aa = fabsf(a);
    int sub = aa < 0x1p-126f;
    float ma = sub ? aa * 0x1p24f : aa;
    float ex0 = sub ? -24.0f : 0.0f;
    uint32_t ia = f2u(ma);
    uint32_t ie = (ia - 0x3f3504f3u) & 0xff800000u;
    float m = u2f(ia - ie); /* in [sqrt(1/2), sqrt(2)) */
    float e = fmaf((float)(int32_t)ie, 0x1p-23f, ex0);
    float mm1 = m - 1.0f;
    float mp1 = m + 1.0f;
    float r = mufu_rcp(mp1);
    float tw = mm1 + mm1;
    float u = tw * r; /* 2(m-1)/(m+1) */
    float u2 = u * u;
    float d = mm1 - u;
    d = d + d;
    d = fmaf(-u, mm1, d);
    float ul = r * d; /* correction of u */
    float p = fmaf(0x1.5865c8p-11f, u2, 0x1.a5cfb6p-9f);
    p = fmaf(p, u2, 0x1.2776e6p-6f);
    p = fmaf(p, u2, 0x1.ec709ep-4f);
    p = p * u2;
    float hi = fmaf(u, 0x1.715476p+0f, e);
    float lo = e - hi;
    lo = fmaf(u, 0x1.715476p+0f, lo);
    lo = fmaf(ul, 0x1.715476p+0f, lo);
    lo = fmaf(u, 0x1.4abc68p-26f, lo);
    lo = fmaf(p * 3.0f, ul, lo);
    lo = fmaf(p, u, lo);
    float lh = hi + lo; /* renormalize */
    float ll = lo - (lh - hi);

    /* b * log2|a| as hi + lo, then 2^that (__internal_powf_exp2) */
    float th = lh * b;
    float tl = fmaf(lh, b, -th);
    tl = fmaf(ll, b, tl);
    float n = nearbyintf(th); /* cvt.rni.f32.f32 */
    float f = th - n;
    f = tl + f;
    float z = fmaf(0x1.3f971cp-13f, f, 0x1.5f0bdap-10f);
    z = fmaf(z, f, 0x1.3b30acp-7f);
    z = fmaf(z, f, 0x1.c6af76p-5f);
    z = fmaf(z, f, 0x1.ebfbd8p-3f);
    z = fmaf(z, f, 0x1.62e430p-1f);
    z = fmaf(z, f, 1.0f);
    uint32_t ni = (uint32_t)cvt_rzi_s32(n);
    uint32_t bias = n > 0.0f ? 0u : 0x83000000u;
    z = z * u2f(0x7f000000u + bias);
    z = z * u2f((ni << 23) - bias);
    float res = z;
    if (fabsf(th) > 152.0f) res = th < 0.0f ? 0.0f : INFINITY;

    /* __internal_powf_special_cases */
    if (a == 1.0f || b == 0.0f) return 1.0f;
    if (a != a || b != b) return canon(a + b);
    if (a == 0.0f || aa == INFINITY) {
        uint32_t t = f2u(a + a);
        if (b < 0.0f) t ^= 0x7f800000u;
        if (oddf != 1.0f) t &= 0x7fffffffu;
        return u2f(t);
    }
    if (a == -1.0f && fabsf(b) == INFINITY) return 1.0f;
    if (!(a < 0.0f)) return canon(res);
    if (oddf == 1.0f) res = -res;
    if (floorf(b) != b) return u2f(0x7fffffffu);
    return canon(res);
}
