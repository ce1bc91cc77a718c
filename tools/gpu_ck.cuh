// gpu_ck.cuh - the device tools' CUDA error check (attend-check, gemm-check, gemv-check): a
// failed call prints where and exits with status 2, the tools' "CUDA error" status.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CK(x)                                                                                                  \
    do {                                                                                                       \
        cudaError_t e_ = (x);                                                                                  \
        if (e_ != cudaSuccess) {                                                                               \
            fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);           \
            exit(2);                                                                                           \
        }                                                                                                      \
    } while (0)
