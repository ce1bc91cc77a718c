/* module.h - the contract between the core library and a backend module loaded at run time
 * (libhybridctx-cuda.so.0). The module exports one C function, named HCI_MODULE_ENTRY, that
 * returns a versioned table. The module shares the core's internal structs (backend.h, cache.h,
 * model.h), so the core uses nothing of a module before it has checked that the table's ABI
 * number and build id are its own: a module from another build is refused, never half-used. */
#ifndef HCI_MODULE_H
#define HCI_MODULE_H
#include <stddef.h>
#include <stdint.h>
#include "backend.h"

/* Bumped when this table's layout changes; the build id covers the structs behind it. */
#define HCI_MODULE_ABI 1u
#define HCI_MODULE_ENTRY "hybridctx_backend_module"

typedef struct hci_module {
    uint32_t abi;            /* HCI_MODULE_ABI of the module's build */
    uint32_t size;           /* sizeof(hci_module) in the module's build */
    const char *build_id;    /* HCI_BUILD_ID of the module's build (hc_build_id.h) */
    const char *name;        /* "cuda" */
    int kind;                /* HC_BACKEND_CUDA */
    uint32_t caps;           /* HC_CAP_* the backend offers */
    /* Usable devices; 0 with the reason in detail when the driver or a device is missing. */
    int (*device_count)(char *detail, size_t detail_size);
    /* A backend for one context (see hci_backend_args); the module keeps what the contexts of
     * one model on one device share (its device object) until model_release(m). */
    int (*create)(const struct hc_model *m, const hci_backend_args *a, hci_backend **out);
    /* hc_model_free: drop everything the module keeps for m (weights on every device...). */
    void (*model_release)(const struct hc_model *m);
} hci_module;

typedef const hci_module *(*hci_module_entry_fn)(void);

#endif
