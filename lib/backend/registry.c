/* registry.c - the table of backends: the CPU backend built in, the CUDA backend reached through
 * its module. Each entry answers "can you run here, and if not why" and creates backends; AUTO
 * picks the first usable entry in the order of preference. */
#include <stdio.h>
#include <string.h>
#include "module.h"
#include "registry.h"
#include "../util/error.h"

typedef struct entry {
    int kind;
    const char *name;
    /* Fill state, n_devices, caps, detail (the rest is the caller's). */
    void (*probe)(hc_backend_info *info);
    int (*create)(const struct hc_model *m, const hci_backend_args *a, hci_backend **out);
} entry;

static void cpu_probe(hc_backend_info *info)
{
    info->state = HC_BACKEND_USABLE;
    info->n_devices = 1;
    info->caps = HC_CAP_HOST_IO | HC_CAP_THREADS | HC_CAP_BITWISE_CPU;
    snprintf(info->detail, sizeof info->detail, "built in");
}

/* The CUDA entry: the module's own answers once it is loaded. */
static void cuda_probe(hc_backend_info *info)
{
    int status, reason;
    const hci_module *mod = hci_cuda_module(&status, &reason, info->detail, sizeof info->detail);
    if (!mod) {
        info->state = reason;
        return;
    }
    char why[sizeof info->detail] = "";
    info->n_devices = mod->device_count(why, sizeof why);
    if (info->n_devices <= 0) {
        info->n_devices = 0;
        info->state = HC_BACKEND_NO_DEVICE;
        snprintf(info->detail, sizeof info->detail, "%s", why);
        return;
    }
    info->state = HC_BACKEND_USABLE;
    info->caps = mod->caps;
}

static int cuda_create(const struct hc_model *m, const hci_backend_args *a, hci_backend **out)
{
    int status, reason;
    char detail[256];
    const hci_module *mod = hci_cuda_module(&status, &reason, detail, sizeof detail);
    if (!mod) return hci_errf(a->err, a->errsz, status, "CUDA backend: %s", detail);
    char why[200] = "";
    int n = mod->device_count(why, sizeof why);
    if (a->device >= n)
        return hci_errf(a->err, a->errsz, HC_ERR_NO_DEVICE, "CUDA device %d asked for, %d usable%s%s", a->device,
                        n > 0 ? n : 0, why[0] ? ": " : "", why);
    return mod->create(m, a, out);
}

/* In the order AUTO prefers them. */
static const entry entries[] = {
    {HC_BACKEND_CUDA, "cuda", cuda_probe, cuda_create},
    {HC_BACKEND_CPU, "cpu", cpu_probe, hci_backend_cpu_create},
};
enum { N_ENTRIES = sizeof entries / sizeof entries[0] };

static const entry *find(int kind)
{
    for (int i = 0; i < N_ENTRIES; i++)
        if (entries[i].kind == kind) return &entries[i];
    return NULL;
}

static void describe(const entry *e, int device, hc_backend_info *info)
{
    uint32_t size = info->struct_size;
    memset(info, 0, sizeof *info);
    info->struct_size = size;
    info->backend = e->kind;
    snprintf(info->name, sizeof info->name, "%s", e->name);
    e->probe(info);
    if (info->state == HC_BACKEND_USABLE && device >= info->n_devices && e->kind != HC_BACKEND_CPU) {
        snprintf(info->detail, sizeof info->detail, "device %d asked for, %d usable", device, info->n_devices);
        info->state = HC_BACKEND_NO_DEVICE;
    }
    if (info->state != HC_BACKEND_USABLE) info->caps = 0;
}

void hci_backend_describe(int kind, int device, hc_backend_info *info)
{
    if (kind != HC_BACKEND_AUTO) {
        describe(find(kind), device, info);
        return;
    }
    /* AUTO: the first usable entry; state keeps why the preferred one (CUDA) was passed over */
    hc_backend_info first = {.struct_size = sizeof first};
    for (int i = 0; i < N_ENTRIES; i++) {
        describe(&entries[i], device, i ? info : &first);
        if (i == 0 && first.state == HC_BACKEND_USABLE) {
            *info = first;
            return;
        }
        if (i && info->state == HC_BACKEND_USABLE) {
            info->state = first.state;
            snprintf(info->detail, sizeof info->detail, "%s not used: %.220s", first.name, first.detail);
            return;
        }
    }
}

int hci_backend_create(const struct hc_model *m, const hci_backend_args *a, hci_backend **out)
{
    hci_backend_args args = *a;
    if (args.kind == HC_BACKEND_AUTO) {
        hc_backend_info info = {.struct_size = sizeof info};
        hci_backend_describe(HC_BACKEND_AUTO, a->device, &info);
        args.kind = info.backend;
    }
    const entry *e = find(args.kind);
    if (!e) return hci_errf(a->err, a->errsz, HC_ERR_INVALID_ARG, "unknown backend %d", args.kind);
    return e->create(m, &args, out);
}

void hci_backends_model_release(const struct hc_model *m)
{
    /* only a module already loaded can hold anything for m: never load one here */
    const hci_module *mod = hci_cuda_module_loaded();
    if (mod) mod->model_release(m);
}

int hci_backend_cuda_devices(void)
{
    hc_backend_info info = {.struct_size = sizeof info};
    describe(find(HC_BACKEND_CUDA), 0, &info);
    return info.n_devices;
}
