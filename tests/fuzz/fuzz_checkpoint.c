/* fuzz_checkpoint.c - libFuzzer target: hc_model_load() on a checkpoint directory built from
 * the input, i.e. config.json, model.safetensors.index.json (the weight_map and its shard
 * names), the shards' headers and the weight conversion, and the single-file form with the
 * configuration in __metadata__.
 *
 * Input: parts separated by "\n====\n": config.json, the index (not written when empty),
 * a.safetensors, b.safetensors. Files go to a private directory under /dev/shm (or TMPDIR). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "hybridctx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEP "\n====\n"
enum { N_PARTS = 4 };
static const char *const names[N_PARTS] = {"config.json", "model.safetensors.index.json", "a.safetensors",
                                           "b.safetensors"};
static char dir[256];

static void cleanup(void)
{
    char p[512];
    for (int i = 0; i < N_PARTS; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void make_dir(void)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/hc-fuzz-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) abort();
    atexit(cleanup);
}

/* Write part i, or remove its file when the part is absent (len < 0). */
static void put(int i, const uint8_t *p, long len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    unlink(path);
    if (len < 0) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) abort();
    for (long off = 0; off < len;) {
        ssize_t w = write(fd, p + off, (size_t)(len - off));
        if (w <= 0) abort();
        off += w;
    }
    close(fd);
}

static void expect(hc_status st)
{
    if (st != HC_OK && st != HC_ERR_IO && st != HC_ERR_FORMAT && st != HC_ERR_BAD_CONFIG &&
        st != HC_ERR_MISSING_TENSOR && st != HC_ERR_TENSOR && st != HC_ERR_LIMIT)
        abort();
}

static void load(const char *path, int32_t flags)
{
    hc_model_params p;
    hc_model_params_init(&p, sizeof p);
    p.flags = flags;
    p.n_threads = 1;
    hc_model *m = NULL;
    hc_status st = hc_model_load(path, &p, &m);
    expect(st);
    if ((st == HC_OK) != (m != NULL)) abort();
    hc_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) make_dir();
    const uint8_t *p = data, *end = data + size;
    for (int i = 0; i < N_PARTS; i++) {
        if (!p) {
            put(i, NULL, -1);
            continue;
        }
        const uint8_t *q = memmem(p, (size_t)(end - p), SEP, sizeof SEP - 1);
        long len = (long)((q ? q : end) - p);
        put(i, p, i == 1 && len == 0 ? -1 : len);
        p = q ? q + sizeof SEP - 1 : NULL;
    }
    load(dir, HC_MODEL_GEOMETRY_ONLY);
    load(dir, 0);
    char single[512];
    snprintf(single, sizeof single, "%s/%s", dir, names[2]);
    if (access(single, F_OK) == 0) load(single, 0);
    return 0;
}
