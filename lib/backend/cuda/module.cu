/* module.cu - the one symbol libhybridctx-cuda.so exports: the table through which the core
 * library (lib/backend/cuda_loader.c) reaches this backend, stamped with this build's id. */
#include <stdio.h>
#include "device.h"
#include "hybridctx.h"
extern "C" {
#include "../module.h"
}

extern "C" const char hci_module_build_id[]; /* module_id.c */

static int device_count(char *detail, size_t detail_size)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(detail, detail_size, "CUDA runtime: %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
        cudaGetLastError();
        return 0;
    }
    if (n == 0) snprintf(detail, detail_size, "no CUDA device");
    return n;
}

static const hci_module cuda_module = {
    HCI_MODULE_ABI, (uint32_t)sizeof(hci_module), hci_module_build_id, "cuda", HC_BACKEND_CUDA,
    HC_CAP_HOST_IO | HC_CAP_DEVICE_IO | HC_CAP_STREAM,
    device_count, hci_backend_cuda_create, hci_cu_devices_release_model,
};

extern "C" __attribute__((visibility("default"))) const hci_module *hybridctx_backend_module(void)
{
    return &cuda_module;
}
