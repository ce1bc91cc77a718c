/* cuda_stub.c - the CUDA backend's entry points in builds without nvcc. */
#include "backend.h"
#include "hybridctx.h"
#include "../util/error.h"

int hci_backend_cuda_device_count(void) { return 0; }

int hci_backend_cuda_create(const struct hc_model *m, int device, void *stream, int max_chunk, char *err,
                            size_t errsz, hci_backend **out)
{
    (void)m, (void)device, (void)stream, (void)max_chunk, (void)out;
    return hci_errf(err, errsz, HC_ERR_NO_DEVICE, "this build of libhybridctx has no CUDA backend");
}

void *hci_backend_cuda_stream(hci_backend *be)
{
    (void)be;
    return NULL;
}
