/* loader.h - hc_model_load(): a checkpoint directory or one .safetensors file. */
#ifndef HCI_LOADER_H
#define HCI_LOADER_H
#include <stddef.h>
#include "hybridctx.h"
#include "model.h"

/* Fill m (zeroed) from path: the configuration, and with with_weights the
 * layers.{i}.attn.* tensors converted to the model's formats (m->has_weights = 1). Returns an
 * hc_status; err names the file / tensor at fault. progress (may be NULL) reports the tensor
 * bytes read; a stop gives HC_ERR_ABORTED. */
int hci_model_load_path_progress(const char *path, int with_weights, hc_progress_fn progress, void *progress_user,
                                 struct hc_model *m, char *err, size_t errsz);
static inline int hci_model_load_path(const char *path, int with_weights, struct hc_model *m, char *err, size_t errsz)
{
    return hci_model_load_path_progress(path, with_weights, NULL, NULL, m, err, errsz);
}

#endif
