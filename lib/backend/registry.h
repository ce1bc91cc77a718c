/* registry.h - the backends this library knows, what each can do on this machine, and the one
 * way to create one. The CPU backend is built in; the CUDA backend is a module loaded on first
 * use (cuda_loader.c). Nothing outside lib/backend/ chooses between backends. */
#ifndef HCI_REGISTRY_H
#define HCI_REGISTRY_H
#include "backend.h"
#include "hybridctx.h"

/* Fill info (the library's own hc_backend_info; the API copies it out) for one backend kind,
 * or for HC_BACKEND_AUTO: the backend AUTO picks for device, with the reason CUDA was not
 * picked. Loads the CUDA module on the first call that needs it. */
void hci_backend_describe(int kind, int device, hc_backend_info *info);

/* Create the backend a->kind asks for (AUTO resolved as hci_backend_describe does). Errors:
 * HC_ERR_NO_DEVICE (not built, module missing or unloadable, no device), HC_ERR_UNSUPPORTED
 * (module of another version or build), HC_ERR_INVALID_ARG, HC_ERR_OUT_OF_MEMORY, the module's
 * own; the message is in a->err. */
int hci_backend_create(const struct hc_model *m, const hci_backend_args *a, hci_backend **out);

/* hc_model_free: every loaded module drops what it keeps for m. */
void hci_backends_model_release(const struct hc_model *m);

/* Usable CUDA devices (0 when not built, the module is missing or no device). */
int hci_backend_cuda_devices(void);

/* ---- cuda_loader.c ---- */
struct hci_module;
/* The CUDA module, loaded once per process: NULL with *status (HC_ERR_NO_DEVICE or
 * HC_ERR_UNSUPPORTED), *reason (HC_BACKEND_NOT_BUILT / _MODULE_MISSING / _MODULE_INVALID) and a
 * message naming the file and the reason in detail when it cannot be used. */
const struct hci_module *hci_cuda_module(int *status, int *reason, char *detail, size_t detail_size);
/* The CUDA module if an earlier call loaded it, else NULL (never loads). */
const struct hci_module *hci_cuda_module_loaded(void);

#endif
