/* gpu_timing.cuh - how the kernel checks (tools/gemm-check.cu, tools/attend-check.cu) time a
 * launch: the median of reps runs, each between two CUDA events, all queued behind a spin kernel
 * so that the events measure GPU time and not the host's launch overhead (header only, CUDA). */
#ifndef HC_TOOLS_GPU_TIMING_CUH
#define HC_TOOLS_GPU_TIMING_CUH
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace hc_timing {

inline void check(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        fprintf(stderr, "CUDA error %s in %s\n", cudaGetErrorString(e), what);
        exit(2);
    }
}

/* keeps the GPU busy for about `cycles` clocks */
__global__ void spin(long long cycles)
{
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
}

/* milliseconds: the median of reps timed runs of run() after 3 untimed */
template <class F> double time_ms(F run, int reps)
{
    for (int i = 0; i < 3; i++) run();
    check(cudaDeviceSynchronize(), "time_ms warm-up");
    std::vector<cudaEvent_t> ev(reps + 1);
    for (auto &e : ev) check(cudaEventCreate(&e), "cudaEventCreate");
    spin<<<1, 32>>>(20000000ll); /* ~10 ms */
    check(cudaEventRecord(ev[0]), "cudaEventRecord");
    for (int i = 0; i < reps; i++) {
        run();
        check(cudaEventRecord(ev[i + 1]), "cudaEventRecord");
    }
    check(cudaEventSynchronize(ev[reps]), "cudaEventSynchronize");
    std::vector<float> v;
    for (int i = 0; i < reps; i++) {
        float ms = 0;
        check(cudaEventElapsedTime(&ms, ev[i], ev[i + 1]), "cudaEventElapsedTime");
        v.push_back(ms);
    }
    for (auto &e : ev) check(cudaEventDestroy(e), "cudaEventDestroy");
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace hc_timing

#endif
