/* module_id.c - the build id stamped into libhybridctx-cuda.so (module.cu's table). Compiled as
 * C so that the compiler's dependency file makes it follow hc_build_id.h: meson 1.0's nvcc rule
 * writes none, so a .cu file including the header would keep a stale id. */
#include "hc_build_id.h"

const char hci_module_build_id[] = HCI_BUILD_ID;
