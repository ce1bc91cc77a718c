/* cuda_loader.c - finds and loads the CUDA backend module (libhybridctx-cuda.so.0) once per
 * process, the first time a call needs it, and checks that it comes from this very build.
 * Where: $HYBRIDCTX_CUDA_MODULE if set; else beside libhybridctx.so (found with dladdr); else
 * the dynamic linker's search path. The module is never unloaded: contexts and models keep
 * pointers into it. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "hc_build_id.h"
#include "module.h"
#include "registry.h"

#define MODULE_SONAME "libhybridctx-cuda.so.0"

static struct {
    pthread_once_t once;
    const hci_module *mod;     /* NULL when unusable */
    int status, reason;
    char detail[256];
} g = {.once = PTHREAD_ONCE_INIT};

static void fail(int status, int reason, const char *fmt, const char *a, const char *b)
{
    g.status = status;
    g.reason = reason;
    snprintf(g.detail, sizeof g.detail, fmt, a, b);
}

#ifdef HC_HAVE_CUDA
/* The module file beside the library that holds this function, if it is there (load() runs
 * once per process, so one static buffer serves). */
static const char *beside_core(void)
{
    static char buf[4096];
    const size_t n = sizeof buf;
    Dl_info info;
    if (!dladdr((void *)beside_core, &info) || !info.dli_fname) return NULL;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) return NULL;
    int len = snprintf(buf, n, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, MODULE_SONAME);
    if (len < 0 || (size_t)len >= n || access(buf, F_OK) != 0) return NULL;
    return buf;
}

static void load(void)
{
    const char *path = getenv("HYBRIDCTX_CUDA_MODULE");
    if (!path || !*path) path = beside_core();
    if (!path) path = MODULE_SONAME;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        fail(HC_ERR_NO_DEVICE, HC_BACKEND_MODULE_MISSING, "cannot load %s: %s", path, why ? why : "unknown error");
        return;
    }
    hci_module_entry_fn entry;
    *(void **)&entry = dlsym(h, HCI_MODULE_ENTRY); /* object to function pointer, as POSIX allows */
    const hci_module *mod = entry ? entry() : NULL;
    if (!mod) {
        fail(HC_ERR_NO_DEVICE, HC_BACKEND_MODULE_MISSING, "%s is not a libhybridctx backend module (no %s)", path,
             HCI_MODULE_ENTRY);
    } else if (mod->abi != HCI_MODULE_ABI || mod->size < sizeof *mod) {
        char want[64];
        snprintf(want, sizeof want, "ABI %u, table of %u bytes", HCI_MODULE_ABI, (unsigned)sizeof *mod);
        fail(HC_ERR_UNSUPPORTED, HC_BACKEND_MODULE_INVALID, "%s is of another version of libhybridctx (this one needs %s)",
             path, want);
    } else if (!mod->build_id || strcmp(mod->build_id, HCI_BUILD_ID) != 0) {
        fail(HC_ERR_UNSUPPORTED, HC_BACKEND_MODULE_INVALID, "%s comes from another build (build id %s)", path,
             mod->build_id ? mod->build_id : "none");
        snprintf(g.detail + strlen(g.detail), sizeof g.detail - strlen(g.detail), ", this library is %s",
                 HCI_BUILD_ID);
    } else {
        g.mod = mod;
        snprintf(g.detail, sizeof g.detail, "%s", path);
        return;
    }
    dlclose(h);
}
#else
static void load(void)
{
    fail(HC_ERR_NO_DEVICE, HC_BACKEND_NOT_BUILT, "%s%s", "this build of libhybridctx has no CUDA backend",
         " (built without nvcc)");
}
#endif

static int loaded; /* set (release) once load() has finished */

static void load_once(void)
{
    load();
    __atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
}

const struct hci_module *hci_cuda_module(int *status, int *reason, char *detail, size_t detail_size)
{
    pthread_once(&g.once, load_once);
    *status = g.mod ? HC_OK : g.status;
    *reason = g.mod ? HC_BACKEND_USABLE : g.reason;
    snprintf(detail, detail_size, "%s", g.detail);
    return g.mod;
}

const struct hci_module *hci_cuda_module_loaded(void)
{
    return __atomic_load_n(&loaded, __ATOMIC_ACQUIRE) ? g.mod : NULL;
}
