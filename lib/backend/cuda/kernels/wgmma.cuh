/* wgmma.cuh - the Hopper pieces that the wgmma kernels share (attend/attend_wgmma.cu,
 * attend/attend_pingpong.cu, both through attend/attend_wgmma.cuh; index/index_wgmma.cu,
 * gemm/gemm_fp8_wgmma.cu, gemm/gemm_fp8_native.cu): shared-memory matrix descriptors and the
 * 128-byte swizzle they read, the wgmma fence / commit / wait, setmaxnreg, named barriers, the
 * proxy fence between generic stores and wgmma's reads, the register fence around an asynchronous
 * MMA, and mbarriers (with cp.async arrivals), TMA loads and cluster basics. The MMA instructions
 * themselves stay in the kernels (their shapes and types differ).
 *
 * wgmma and setmaxnreg exist only in the sm_90a code (__CUDA_ARCH_FEAT_SM90_ALL); the build's
 * compute_90 PTX gets empty stand-ins, and its kernels must never run: every launcher checks for
 * an sm_90 device (hci_cu_device_is_sm90), where the sm_90a code is what loads. */
#ifndef HCI_KERNELS_WGMMA_CUH
#define HCI_KERNELS_WGMMA_CUH
#include <stdint.h>

/* Byte offset of 16-byte chunk c (0..7) of row r in a tile of 128-byte rows as wgmma's 128B
 * swizzle reads it: chunk index XOR row mod 8 (the tile 1024-byte aligned). */
__device__ __forceinline__ uint32_t hci_wg_sw128(int r, int c) { return (uint32_t)(r * 128 + ((c ^ (r & 7)) << 4)); }

/* Shared-memory matrix descriptor, 128B swizzle, 8-row groups 1024 bytes apart (stride byte
 * offset), leading byte offset lbo (K-major: unused in this mode, 16 by convention; MN-major: the
 * distance between 64-element column tiles). saddr: a shared-state-space address (< 256 KiB). */
__device__ __forceinline__ uint64_t hci_wg_desc(uint32_t saddr, uint32_t lbo)
{
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}
/* K-major rows of 128 bytes (the common case) */
__device__ __forceinline__ uint64_t hci_wg_desc_k(uint32_t saddr) { return hci_wg_desc(saddr, 16); }

/* The descriptor of the matrix `bytes` (a multiple of 16) further on: a 32-bit add to the start
 * address field, which cannot carry out of it while the address stays below 256 KiB. */
__device__ __forceinline__ uint64_t hci_wg_desc_add(uint64_t d, uint32_t bytes)
{
    uint64_t r;
    asm("mov.b64 %0, {%1, %2};\n" : "=l"(r) : "r"((uint32_t)d + (bytes >> 4)), "r"((uint32_t)(d >> 32)));
    return r;
}

/* The warpgroup of the thread, as a value the compiler knows to be the same across the warp
 * (the shuffle), so that what is computed from it can live in uniform registers (the wgmma
 * descriptors). */
__device__ __forceinline__ int hci_wg_index() { return __shfl_sync(0xffffffffu, (int)threadIdx.x / 128, 0); }

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void hci_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void hci_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void hci_wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
/* wait until at most N committed groups are pending (N = 0: hci_wg_wait0; groups complete in
 * order) */
template <int N> __device__ __forceinline__ void hci_wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
template <int N> __device__ __forceinline__ void hci_wg_regs_alloc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N> __device__ __forceinline__ void hci_wg_regs_free() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }
#else /* the compute_90 PTX of the build: never run (see above) */
__device__ __forceinline__ void hci_wg_fence() {}
__device__ __forceinline__ void hci_wg_commit() {}
__device__ __forceinline__ void hci_wg_wait0() {}
template <int N> __device__ __forceinline__ void hci_wg_wait() {}
template <int N> __device__ __forceinline__ void hci_wg_regs_alloc() {}
template <int N> __device__ __forceinline__ void hci_wg_regs_free() {}
#endif

/* Named barrier id (1..15; 0 is __syncthreads) over n threads (a multiple of 32): wait for all,
 * or arrive without waiting (a producer's "full", a consumer's "empty"). */
__device__ __forceinline__ void hci_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void hci_bar_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

/* Generic-proxy stores to shared memory, before wgmma (the async proxy) reads them. */
__device__ __forceinline__ void hci_async_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/* Keeps the compiler from moving accumulator reads or writes across an asynchronous MMA. */
__device__ __forceinline__ void hci_reg_fence(float &r) { asm volatile("" : "+f"(r)::"memory"); }

/* ---- mbarriers, TMA and clusters (sm_90; gemm/gemm_fp8_native.cu, attend/attend_pingpong.cu).
 * Barrier and shared-memory operands are shared-state-space addresses (hci_smem_addr); a CTA's own
 * shared::cta address is also its shared::cluster address. ---- */
__device__ __forceinline__ uint32_t hci_smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* an mbarrier expecting `count` arrivals per phase; then, once by the initialising thread, the
 * fence that makes the initialisations visible to the cluster and to the async proxy (TMA) */
__device__ __forceinline__ void hci_mbar_init(uint32_t bar, uint32_t count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void hci_mbar_init_fence()
{
    asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
}
/* one arrival that also expects `bytes` of asynchronous copies (complete_tx) in this phase */
__device__ __forceinline__ void hci_mbar_arrive_tx(uint32_t bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void hci_mbar_arrive(uint32_t bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/* one arrival on the barrier at the same offset in the cluster's CTA `rank` (this one included).
 * The default semantics (release at CTA scope), as CUTLASS's cluster barriers: .release.cluster
 * costs a GPU-wide memory barrier per arrival; what the arrival announces (a stage's reads by
 * wgmma and ld.shared) is complete before it anyway. */
__device__ __forceinline__ void hci_mbar_arrive_cluster(uint32_t bar, uint32_t rank)
{
    asm volatile("{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
                 "mbarrier.arrive.shared::cluster.b64 _, [ra];\n}\n" ::"r"(bar), "r"(rank)
                 : "memory");
}
/* wait for the completion of the phase of the given parity (0 for the first phase; a new barrier
 * counts as having completed the phase of parity 1, so a producer's first wait for "free" with
 * parity 1 passes) */
__device__ __forceinline__ bool hci_mbar_try_wait(uint32_t bar, uint32_t parity)
{
    uint32_t ok;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(ok)
                 : "r"(bar), "r"(parity)
                 : "memory");
    return ok != 0;
}
__device__ __forceinline__ void hci_mbar_wait(uint32_t bar, uint32_t parity)
{
    while (!hci_mbar_try_wait(bar, parity)) {
    }
}
/* one arrival of the executing thread once all its earlier cp.async copies have landed (.noinc:
 * the barrier's expected count includes it) */
__device__ __forceinline__ void hci_cp_async_mbar_arrive(uint32_t bar)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

/* TMA: the box at element coordinates (c0 innermost, c1) of the tensor map (a __grid_constant__
 * kernel parameter) into shared memory at dst, completing on bar; _mc: into the same offset of
 * every CTA of the cluster in mask, each completing on its barrier at bar's offset. */
__device__ __forceinline__ void hci_tma_load_2d(uint32_t dst, const void *map, int c0, int c1, uint32_t bar)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
                 "[%4];\n" ::"r"(dst),
                 "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(bar)
                 : "memory");
}
__device__ __forceinline__ void hci_tma_load_2d_mc(uint32_t dst, const void *map, int c0, int c1, uint32_t bar,
                                                   uint16_t mask)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster "
                 "[%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
                 "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(bar), "h"(mask)
                 : "memory");
}
__device__ __forceinline__ void hci_tma_prefetch(const void *map)
{
    asm volatile("prefetch.tensormap [%0];\n" ::"l"((uint64_t)map) : "memory");
}

/* this CTA's rank in its cluster; all threads of the cluster's CTAs meet (release / acquire) */
__device__ __forceinline__ uint32_t hci_cluster_rank()
{
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
__device__ __forceinline__ void hci_cluster_sync()
{
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

#endif
