/* fake_cuda_module.c - stand-ins for libhybridctx-cuda.so that the loader must refuse
 * (test_backend_module.c): built with FAKE_ABI (another table version), FAKE_BUILD_ID (another
 * build) or FAKE_NO_ENTRY (a library that is no backend module at all). */
#include "backend/module.h"
#include "hybridctx.h"

#ifndef FAKE_NO_ENTRY
#ifndef FAKE_ABI
#define FAKE_ABI HCI_MODULE_ABI
#endif
#ifndef FAKE_BUILD_ID
#define FAKE_BUILD_ID "0.0.0-not-this-build"
#endif
static const hci_module fake = {
    .abi = FAKE_ABI, .size = sizeof fake, .build_id = FAKE_BUILD_ID, .name = "cuda", .kind = HC_BACKEND_CUDA,
};

__attribute__((visibility("default"))) const hci_module *hybridctx_backend_module(void) { return &fake; }
#else
__attribute__((visibility("default"))) int not_a_backend_module(void) { return 1; }
#endif
