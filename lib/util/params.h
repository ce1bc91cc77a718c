/* params.h - reading size-versioned parameter structs (Linux copy_struct_from_user rules). */
#ifndef HCI_PARAMS_H
#define HCI_PARAMS_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "hybridctx.h"

/* p may be NULL (defaults: all zero). Copies min(p->struct_size, ours) bytes; a caller struct
 * larger than ours must have an all-zero tail. */
static inline hc_status hci_read_params(const void *p, size_t ours, void *out)
{
    memset(out, 0, ours);
    if (!p) {
        *(uint32_t *)out = (uint32_t)ours;
        return HC_OK;
    }
    uint32_t theirs;
    memcpy(&theirs, p, sizeof theirs);
    if (theirs < sizeof(uint32_t)) return HC_ERR_INVALID_ARG;
    for (size_t i = ours; i < theirs; i++)
        if (((const unsigned char *)p)[i]) return HC_ERR_UNSUPPORTED;
    memcpy(out, p, theirs < ours ? theirs : ours);
    *(uint32_t *)out = (uint32_t)ours;
    return HC_OK;
}

#endif
