/* fuzz_safetensors.c - libFuzzer target: the safetensors header and tensor table parser
 * (hci_st_open_mem), then every accessor and a read of every tensor. Any input must give
 * HC_OK, HC_ERR_FORMAT or HC_ERR_LIMIT, and an accepted file must keep every tensor inside it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hci_st_file *f = NULL;
    char err[512];
    int st = hci_st_open_mem(data, size, "fuzz.safetensors", &f, err, sizeof err);
    if (st != HC_OK) {
        if (st != HC_ERR_FORMAT && st != HC_ERR_LIMIT) abort();
        return 0;
    }
    size_t n = hci_st_count(f);
    for (size_t i = 0; i < n; i++) {
        const hci_st_tensor *t = hci_st_at(f, i);
        if (!t || hci_st_find(f, t->name) != t) abort();
        if (i && strcmp(hci_st_at(f, i - 1)->name, t->name) >= 0) abort(); /* sorted, unique */
        if (t->nbytes > size || t->begin > size - t->nbytes) abort();
        char shape[64];
        hci_st_shape_str(t, shape, sizeof shape);
        void *buf = malloc(t->nbytes ? t->nbytes : 1);
        if (!buf) abort();
        if (hci_st_read(f, t, buf, t->nbytes, err, sizeof err) != HC_OK) abort();
        if (t->nbytes && hci_st_read_at(f, t, t->nbytes - 1, buf, 1, err, sizeof err) != HC_OK) abort();
        if (hci_st_read_at(f, t, t->nbytes, buf, 1, err, sizeof err) != HC_ERR_INTERNAL) abort();
        free(buf);
    }
    if (hci_st_at(f, n) != NULL) abort();
    (void)hci_st_metadata(f, "config");
    hci_st_close(f);
    return 0;
}
