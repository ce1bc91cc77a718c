/* hybridctx - command-line tool of libhybridctx.
 *   hybridctx demo [options]          run a long synthetic context through every layer of a model,
 *                                     decode a few tokens, and report speed and cache memory; with
 *                                     --load FILE start from a saved session (--tokens may then
 *                                     be 0), with --save FILE save the context at the end.
 *   hybridctx info [options] [MODEL]  a model's geometry, weight bytes, cache bytes at a length
 *                                     and the device memory a context needs (nothing is run).
 *   hybridctx inspect [--json] FILE   what a session file holds (no model needed).
 *   hybridctx verify [--json] FILE    check every checksum and entry of a session file; the exit
 *                                     status says the result (0 valid, 1 damaged, 3 not a session
 *                                     file, 4 unsupported version, 5 unreadable, 2 usage).
 * Every command takes --help (usage on stdout, exit 0). A usage error (unknown command or option,
 * missing or malformed value) prints a message naming it on stderr and exits with 2.
 * Long steps (model load or creation, prefill, session save, load and verify) draw a progress bar
 * on stderr when stderr is a terminal and --json is not given. Ctrl-C stops the call in progress
 * through the library's progress callback (HC_ERR_ABORTED: the call changes nothing, a file being
 * saved keeps its previous content) and the program exits with status 130. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"
#include "hybridctx.h"
#include "hybridctx_experimental.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------------------------------------
 * usage texts
 * ------------------------------------------------------------------------------------------- */
static const char usage_main[] =
    "usage: hybridctx COMMAND [options]      (hybridctx COMMAND --help for a command's options)\n"
    "       hybridctx --help | --version\n"
    "\n"
    "commands:\n"
    "  demo      run a long synthetic context through every layer of a model, decode a few\n"
    "            tokens, report speed and cache memory\n"
    "  info      a model's geometry, weight bytes, cache bytes at a length and the device\n"
    "            memory a context needs (nothing is run)\n"
    "  inspect   describe a session file (no model needed)\n"
    "  verify    check every checksum and entry of a session file\n"
    "\n"
    "Long steps draw a progress bar on stderr when it is a terminal (not with --json); Ctrl-C stops\n"
    "them, changing nothing, and exits with status 130.\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted (verify has more, see its\n"
    "--help).\n";

static const char usage_model[] =
    "MODEL: a preset (tiny, v4-flash, v4-pro), a config.json file (random weights of its geometry),\n"
    "       a checkpoint directory (config.json + *.safetensors) or one .safetensors file\n";

static const char usage_demo[] =
    "usage: hybridctx demo [--model MODEL] [--tokens N] [--chunk N] [--decode N] [--threads N]\n"
    "                      [--cache fp8|bf16] [--backend auto|cpu|cuda] [--seed N]\n"
    "                      [--numerics default|fast|exact] [--load FILE] [--save FILE] [--json]\n"
    "\n"
    "Runs N synthetic tokens through every layer of the model in chunks (a stand-in MLP between\n"
    "layers; on CUDA the activations stay on the GPU), then decodes a few tokens one at a time,\n"
    "and reports prefill and decode speed and the cache memory next to a dense bf16 KV cache.\n"
    "With --load the context starts from a saved session (of the same model and seed); with\n"
    "--save it is saved at the end.\n"
    "\n"
    "  --model MODEL       the model (default tiny: random weights)\n"
    "  --tokens N          prefill length, 1 .. the model's positions minus --decode and a loaded\n"
    "                      session's tokens; 0 allowed with --load (default 20000)\n"
    "  --chunk N           tokens per hc_append() call, 1..1048576 (default 2048 on CUDA, 1024\n"
    "                      on the CPU)\n"
    "  --decode N          tokens decoded after the prefill, 0..1000000 (default 16)\n"
    "  --threads N         CPU backend threads, 0..4096; 0 = all online cores (default 0)\n"
    "  --cache FMT         cache format: fp8 (default) or bf16\n"
    "  --backend B         auto (default: CUDA if present), cpu or cuda\n"
    "  --seed N            seed of the random weights and inputs, 0..2^64-1 (default 1)\n"
    "  --numerics N        default (fast on CUDA, exact on the CPU), fast or exact\n"
    "                      (docs/numerics.md; the CPU computes exact)\n"
    "  --load FILE         first load the session FILE (an existing file) into the context\n"
    "  --save FILE         at the end save the context to FILE (replaced atomically)\n"
    "  --json              print the results as one JSON object on stdout (no progress, no text)\n"
    "  -h, --help          this text\n"
    "\n"
    "Progress bars (model, load, prefill, save) go to stderr when it is a terminal. Ctrl-C stops\n"
    "the step in progress (a file being saved keeps its previous content) and exits with 130.\n\n";

static const char usage_info[] =
    "usage: hybridctx info [--model MODEL | MODEL] [--tokens N] [--chunk N] [--json]\n"
    "\n"
    "Prints a model's geometry, the bytes of its weights, the bytes of its cache at N tokens in\n"
    "both formats (hc_model_cache_bytes(), and what a context holds: pages of 64 entries), a dense\n"
    "bf16 KV cache of the same length for comparison, and the device memory one context needs at\n"
    "N tokens (its cache plus its activation workspace; the model's weights and the backend's\n"
    "per-call scratch come on top, see below). Only the configuration is read: nothing is run.\n"
    "\n"
    "  --model MODEL       the model (default tiny); may also be given as the one argument\n"
    "  --tokens N          context length, 0 .. the model's max_position_embeddings (default: that)\n"
    "  --chunk N           tokens per backend step, which sizes the workspace, 1..65536 (default\n"
    "                      2048, the CUDA backend's default; see hc_ctx_params.max_chunk)\n"
    "  --json              print one JSON object on stdout\n"
    "  -h, --help          this text\n";

static const char usage_inspect[] =
    "usage: hybridctx inspect [--json] FILE\n"
    "\n"
    "Describes a session file (format, model fingerprint and configuration, length, metadata and\n"
    "every section) from its headers alone; no model is needed.\n"
    "\n"
    "  --json              the description as JSON\n"
    "  -h, --help          this text\n"
    "\n"
    "Exit status: 0 described, 1 damaged, 3 not a session file, 4 unsupported version,\n"
    "5 unreadable, 2 usage error.\n";

static const char usage_verify[] =
    "usage: hybridctx verify [--json] FILE\n"
    "\n"
    "Checks a session file as a load would: every chunk is read, decompressed and checked\n"
    "(checksums, canonical entries).\n"
    "\n"
    "  --json              the result as JSON\n"
    "  -h, --help          this text\n"
    "\n"
    "A progress bar goes to stderr when it is a terminal (not with --json); Ctrl-C stops the check.\n"
    "\n"
    "Exit status: 0 valid, 1 damaged, 3 not a session file, 4 unsupported version, 5 unreadable,\n"
    "2 usage error, 130 interrupted.\n";

/* A usage error of a command, whose message is printed already: its synopsis (the usage text up
 * to the first blank line) and where the rest is, on stderr. */
static int usage_error(const char *cmd, const char *usage)
{
    const char *end = strstr(usage, "\n\n");
    fprintf(stderr, "%.*s\n(hybridctx %s --help for details)\n", end ? (int)(end - usage) : (int)strlen(usage), usage,
            cmd);
    return CLI_EXIT_USAGE;
}

/* ---------------------------------------------------------------------------------------------
 * helpers
 * ------------------------------------------------------------------------------------------- */
static const char *human(double b, char *buf, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) b /= 1024, i++;
    snprintf(buf, n, "%.2f %s", b, u[i]);
    return buf;
}

static const char *kind_name(int ratio) { return ratio == 0 ? "SWA" : ratio == 4 ? "CSA" : "HCA"; }

static int is_preset(const char *s) { return !strcmp(s, "tiny") || !strcmp(s, "v4-flash") || !strcmp(s, "v4-pro"); }

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The text of a config.json file (malloc'd), or NULL after a message. The library refuses text
 * over 1 MiB (HC_ERR_LIMIT); a few bytes more are read so that it can say so. */
static char *read_text(const char *prog, const char *path)
{
    FILE *f = fopen(path, "rb");
    size_t cap = (1u << 20) + 2, n = 0;
    char *buf = f ? malloc(cap) : NULL;
    if (buf) n = fread(buf, 1, cap - 1, f);
    if (!f || !buf || ferror(f)) {
        fprintf(stderr, "%s: %s: cannot read\n", prog, path);
        if (f) fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * progress bars (stderr, terminals only) and Ctrl-C
 * ------------------------------------------------------------------------------------------- */
static volatile sig_atomic_t interrupted;
static int bars_on; /* stderr is a terminal and no --json: draw bars */

static void on_sigint(int sig) { (void)sig, interrupted = 1; }

/* From now on Ctrl-C sets `interrupted`, which the progress callbacks turn into a stop. */
static void catch_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* One bar: what it counts ("tokens", "layers" or "bytes"), when it was last drawn, and whether a
 * line of it is open (drawn without its final newline). */
typedef struct bar {
    const char *label, *unit;
    double t0, drawn;
    int pct, open;
} bar;

static bar bar_new(const char *label, const char *unit) { return (bar){label, unit, now_s(), 0, -1, 0}; }

/* End an open bar line, so that a message can follow on a line of its own. */
static void bar_end(bar *b)
{
    if (b && b->open) fputc('\n', stderr), fflush(stderr), b->open = 0;
}

static void bar_draw(bar *b, uint64_t done, uint64_t total)
{
    if (!bars_on || !total) return;
    int pct = (int)(100.0 * (double)done / (double)total);
    double t = now_s();
    if (done < total && pct == b->pct && t - b->drawn < 0.2) return;
    b->pct = pct, b->drawn = t;
    int w = 30, f = (int)((double)w * (double)done / (double)total);
    double el = t - b->t0, rate = el > 0 ? (double)done / el : 0.0;
    char amount[96];
    if (!strcmp(b->unit, "bytes"))
        snprintf(amount, sizeof amount, "%.1f/%.1f MiB  %.0f MiB/s", (double)done / 1048576.0,
                 (double)total / 1048576.0, rate / 1048576.0);
    else
        snprintf(amount, sizeof amount, "%llu/%llu %s  %.0f %s/s", (unsigned long long)done,
                 (unsigned long long)total, b->unit, rate, b->unit);
    fprintf(stderr, "\r  %-8s [%.*s%*s] %3d%%  %s ", b->label, f, "##############################", w - f, "", pct,
            amount);
    b->open = 1;
    if (done >= total) bar_end(b);
    fflush(stderr);
}

/* hc_progress_fn drawing the bar `user`: a Ctrl-C stops the call. */
static int bar_cb(void *user, uint64_t done, uint64_t total)
{
    if (interrupted) return bar_end(user), 1;
    bar_draw(user, done, total);
    return 0;
}

/* hc_progress_fn of the prefill's layer calls: no bar of their own (the chunks draw it), only
 * Ctrl-C. */
static int stop_cb(void *user, uint64_t done, uint64_t total)
{
    (void)user, (void)done, (void)total;
    return interrupted;
}

/* A file name option: not empty; for a session to load, an existing regular file; for one to
 * save, not a directory. 0, or -1 after a message. */
static int path_value(const char *prog, const char *opt, const char *val, int must_exist)
{
    struct stat sb;
    const char *why = NULL;
    if (!*val) why = "empty file name";
    else if (must_exist && stat(val, &sb) != 0) why = "no such file";
    else if (must_exist && !S_ISREG(sb.st_mode)) why = "not a regular file";
    else if (!must_exist && stat(val, &sb) == 0 && S_ISDIR(sb.st_mode)) why = "a directory";
    if (!why) return 0;
    fprintf(stderr, "%s: invalid value '%s' for %s: %s\n", prog, val, opt, why);
    return -1;
}

/* Open the model named on the command line: a preset (random weights from seed), a config.json
 * file (random weights of its geometry), a checkpoint directory or a .safetensors file.
 * geometry_only: the configuration without weights. *source says which. A bar shows the layers
 * created or the weight bytes read; Ctrl-C stops it. Returns 0; 2 when the name is neither a
 * preset nor an existing path (a usage error); 1 when building it failed; 130 when interrupted. */
static int open_model(const char *prog, const char *name, uint64_t seed, int geometry_only, hc_model **m,
                      const char **source)
{
    bar b = bar_new("model", "layers");
    char err[512] = "";
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.errbuf = err;
    mp.errbuf_size = sizeof err;
    if (geometry_only) mp.flags = HC_MODEL_GEOMETRY_ONLY;
    mp.progress = bar_cb;
    mp.progress_user = &b;
    struct stat sb;
    hc_status st;
    *m = NULL;
    if (is_preset(name)) {
        *source = "preset";
        st = hc_model_create_random(name, seed, &mp, m);
    } else if (stat(name, &sb) != 0) {
        fprintf(stderr, "%s: invalid value '%s' for --model: not a preset (tiny, v4-flash, v4-pro) and no such "
                        "file or directory\n", prog, name);
        return CLI_EXIT_USAGE;
    } else if (S_ISREG(sb.st_mode) && ends_with(name, ".json")) {
        *source = "config";
        char *text = read_text(prog, name);
        if (!text) return 1;
        st = hc_model_create_random(text, seed, &mp, m);
        free(text);
    } else {
        *source = S_ISDIR(sb.st_mode) ? "checkpoint" : "safetensors";
        b.unit = "bytes";
        st = hc_model_load(name, &mp, m);
    }
    bar_end(&b);
    if (st == HC_ERR_ABORTED) {
        fprintf(stderr, "%s: model %s: interrupted\n", prog, name);
        return 130;
    }
    if (st) {
        fprintf(stderr, "%s: model %s: %s: %s\n", prog, name, hc_strerror(st), err);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * demo
 * ------------------------------------------------------------------------------------------- */

/* The host work between layers runs on every core for large chunks (a 1M-token V4-Flash prefill
 * is 1.8e11 values per pass): tokens [t0, t1) of a chunk per thread, each token on one thread with
 * the same operations, so the results do not depend on the thread count. */
typedef void (*token_fn)(void *arg, int64_t t0, int64_t t1);
typedef struct { token_fn fn; void *arg; int64_t t0, t1; } token_job;

static void *token_thread(void *p)
{
    token_job *j = p;
    j->fn(j->arg, j->t0, j->t1);
    return NULL;
}

static void for_tokens(int64_t n, int dim, token_fn fn, void *arg)
{
    enum { MAX_THREADS = 64 };
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t k = (int64_t)n * dim >> 18; /* a thread per 256K values at least */
    if (k > cores) k = cores;
    if (k > MAX_THREADS) k = MAX_THREADS;
    if (k > n) k = n;
    pthread_t th[MAX_THREADS];
    token_job jobs[MAX_THREADS];
    int started = 0;
    for (int64_t i = 1; i < k; i++) {
        jobs[i] = (token_job){fn, arg, n * i / k, n * (i + 1) / k};
        if (pthread_create(&th[i], NULL, token_thread, &jobs[i])) break; /* the rest on this thread */
        started = (int)i;
    }
    fn(arg, 0, k > 1 ? n / k : n); /* this thread's share ... */
    if (k > 1 && started < k - 1) fn(arg, n * (started + 1) / k, n); /* ... and what no thread took */
    for (int i = 1; i <= started; i++) pthread_join(th[i], NULL);
}

/* Synthetic inputs: a smooth random walk per channel, so that neighbouring tokens are related.
 * Value i of token t takes the 64-bit state advanced t * dim + i + 1 times, plus sin(0.001 (t + i))
 * from a table. */
typedef struct { float *x; int dim; uint64_t state; const float *sin_tab; } synth_arg;

static void synth_range(void *p, int64_t t0, int64_t t1)
{
    const synth_arg *a = p;
    for (int64_t t = t0; t < t1; t++) {
        uint64_t s = a->state + (uint64_t)(t * a->dim) * 0x9e3779b97f4a7c15ull;
        for (int i = 0; i < a->dim; i++) {
            uint64_t z = (s += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            float u = (float)((double)(z >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
            a->x[t * a->dim + i] = u * 1.7f + a->sin_tab[t + i];
        }
    }
}

static int synth_tokens(float *x, int64_t n, int dim, uint64_t *state)
{
    float *tab = malloc(sizeof(float) * (size_t)(n + dim));
    if (!tab) return 1;
    for (int64_t k = 0; k < n + dim; k++) tab[k] = sinf(0.001f * (float)k);
    synth_arg a = {x, dim, *state, tab};
    for_tokens(n, dim, synth_range, &a);
    *state += (uint64_t)(n * dim) * 0x9e3779b97f4a7c15ull;
    free(tab);
    return 0;
}

/* One chunk through every layer: x and y in the context's io memory (on the GPU for a CUDA
 * context), and the stand-in for the MLP between layers, next x = RMS-normalised (x + y), run by
 * the library on the same backend (hc_x_ctx_residual_norm). */
static int run_chunk(hc_ctx *c, int layers, void *x, void *y, int64_t n)
{
    for (int l = 0; l < layers; l++) {
        hc_status st = hc_append(c, l, x, n, y);
        if (st == HC_ERR_ABORTED) {
            fprintf(stderr, "hybridctx: interrupted (the context holds %lld tokens)\n",
                    (long long)hc_ctx_n_tokens(c));
            return 130;
        }
        if (!st) st = hc_x_ctx_residual_norm(c, x, y, n);
        if (st) {
            fprintf(stderr, "hybridctx: layer %d: %s (%s)\n", l, hc_strerror(st), hc_ctx_last_error(c));
            return 1;
        }
    }
    return 0;
}

/* A chunk of synthetic tokens into the context's io memory x (staged in host memory hx). */
static int feed_chunk(hc_ctx *c, float *hx, void *x, int64_t n, int dim, uint64_t *state)
{
    if (synth_tokens(hx, n, dim, state)) {
        fprintf(stderr, "hybridctx: out of memory\n");
        return 1;
    }
    hc_status st = hc_x_ctx_io_copy(c, x, hx, sizeof(float) * (uint64_t)n * dim, 1);
    if (st) fprintf(stderr, "hybridctx: input copy: %s (%s)\n", hc_strerror(st), hc_ctx_last_error(c));
    return st ? 1 : 0;
}

static const char *const cache_names[] = {"fp8", "bf16", NULL};
static const char *const backend_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const numerics_names[] = {"default", "fast", "exact", NULL}; /* = HC_NUMERICS_* */

static int cmd_demo(int argc, char **argv)
{
    const char *prog = "hybridctx demo", *model_name = "tiny", *load = NULL, *save = NULL;
    int64_t tokens = 20000, chunk = 0, decode = 16;
    int threads = 0, cache = 0, backend = 0, json = 0, numerics = 0;
    uint64_t seed = 1;
    static const struct option opts[] = {
        {"numerics", required_argument, NULL, 'n'},
        {"model", required_argument, NULL, 'm'},   {"tokens", required_argument, NULL, 't'},
        {"chunk", required_argument, NULL, 'c'},   {"decode", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 'j'}, {"cache", required_argument, NULL, 'C'},
        {"backend", required_argument, NULL, 'b'}, {"seed", required_argument, NULL, 's'},
        {"load", required_argument, NULL, 'L'},    {"save", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'J'},          {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o, bad = 0;
    optind = 0;
    while (!bad && (o = cli_getopt(prog, argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 'm': model_name = optarg; break;
        case 't': bad = cli_int64(prog, "--tokens", optarg, 0, (int64_t)1 << 40, &tokens); break;
        case 'c': bad = cli_int64(prog, "--chunk", optarg, 1, 1 << 20, &chunk); break;
        case 'd': bad = cli_int64(prog, "--decode", optarg, 0, 1000000, &decode); break;
        case 'j': bad = cli_int(prog, "--threads", optarg, 0, 4096, &threads); break;
        case 'C': bad = (cache = cli_choice(prog, "--cache", optarg, cache_names)) < 0; break;
        case 'b': bad = (backend = cli_choice(prog, "--backend", optarg, backend_names)) < 0; break;
        case 's': bad = cli_uint64(prog, "--seed", optarg, &seed); break;
        case 'n': bad = (numerics = cli_choice(prog, "--numerics", optarg, numerics_names)) < 0; break;
        case 'L': bad = path_value(prog, "--load", load = optarg, 1); break;
        case 'S': bad = path_value(prog, "--save", save = optarg, 0); break;
        case 'J': json = 1; break;
        case 'h': fputs(usage_demo, stdout), fputs(usage_model, stdout); return 0;
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) cli_unexpected(prog, argv[optind]), bad = 1;
    if (!bad && tokens == 0 && !load)
        fprintf(stderr, "%s: invalid value '0' for --tokens: at least 1 (0 only with --load)\n", prog), bad = 1;
    if (bad) return usage_error("demo", usage_demo);

    bars_on = !json && isatty(2);
    catch_sigint();
    hc_model *m = NULL;
    const char *source;
    double t0 = now_s();
    int rc = open_model(prog, model_name, seed, 0, &m, &source);
    if (rc) return rc;
    double t_model = now_s() - t0;
    hc_model_info info = {.struct_size = sizeof info};
    hc_model_info_get(m, &info);
    if (tokens + decode > info.max_positions) {
        fprintf(stderr, "%s: --tokens %lld plus --decode %lld is over the model's %lld positions\n", prog,
                (long long)tokens, (long long)decode, (long long)info.max_positions);
        hc_model_free(m);
        return CLI_EXIT_USAGE;
    }
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.n_threads = threads;
    p.cache_format = cache == 1 ? HC_CACHE_BF16 : HC_CACHE_FP8;
    p.backend = backend == 1 ? HC_BACKEND_CPU : backend == 2 ? HC_BACKEND_CUDA : HC_BACKEND_AUTO;
    p.numerics = numerics;
    hc_ctx *c = NULL;
    hc_status st;
    /* on CUDA, x and y stay on the GPU (device io): the host's part is the synthetic input */
    p.io_memory = backend == 2 ? HC_MEM_DEVICE : HC_MEM_HOST;
    if (!(st = hc_ctx_create(m, &p, &c)) && backend == 0 && hc_ctx_backend(c) == HC_BACKEND_CUDA) {
        hc_ctx_free(c);
        c = NULL;
        p.io_memory = HC_MEM_DEVICE;
        st = hc_ctx_create(m, &p, &c);
    }
    if (st) {
        fprintf(stderr, "%s: context: %s\n", prog, hc_strerror(st));
        hc_model_free(m);
        return 1;
    }
    if (!chunk) chunk = hc_ctx_backend(c) == HC_BACKEND_CUDA ? 2048 : 1024;
    int L = info.n_layers, D = info.dim;
    const char *be_name = hc_ctx_backend(c) == HC_BACKEND_CUDA ? "cuda" : "cpu";
    const char *num_name = hc_ctx_numerics(c) == HC_NUMERICS_FAST ? "fast" : "exact";
    if (!json) {
        printf("libhybridctx %s demo\n", hc_version_string());
        printf("  model   %s: %d layers (", model_name, L);
        for (int l = 0; l < L; l++) printf("%s%s", l ? " " : "", kind_name(hc_model_layer_ratio(m, l)));
        printf("), dim %d, %d heads x %d, built in %.2f s\n", D, info.n_heads, info.head_dim, t_model);
        printf("  backend %s, %s cache, %s numerics\n", be_name, cache_names[cache], num_name);
        fflush(stdout);
    }
    float *hx = malloc(sizeof(float) * (size_t)chunk * D);
    void *x = NULL, *y = NULL;
    uint64_t io_bytes = sizeof(float) * (uint64_t)chunk * D;
    if (!hx || (st = hc_x_ctx_io_alloc(c, io_bytes, &x)) || (st = hc_x_ctx_io_alloc(c, io_bytes, &y))) {
        fprintf(stderr, "%s: out of memory for chunks of %lld tokens\n", prog, (long long)chunk);
        free(hx);
        hc_x_ctx_io_free(c, x);
        hc_ctx_free(c);
        hc_model_free(m);
        return 1;
    }
    /* the session to start from */
    int64_t loaded = 0;
    double tl = 0;
    if (load) {
        bar b = bar_new("load", "bytes");
        hc_ctx_set_progress(c, bar_cb, &b);
        t0 = now_s();
        st = hc_ctx_load(c, load);
        tl = now_s() - t0;
        hc_ctx_set_progress(c, NULL, NULL);
        bar_end(&b);
        if (st == HC_ERR_ABORTED) {
            fprintf(stderr, "%s: load %s: interrupted; nothing loaded\n", prog, load);
            rc = 130;
        } else if (st) {
            fprintf(stderr, "%s: load %s: %s (%s)\n", prog, load, hc_strerror(st), hc_ctx_last_error(c));
            rc = 1;
        } else if ((loaded = hc_ctx_n_tokens(c)) + tokens + decode > info.max_positions) {
            fprintf(stderr, "%s: %s holds %lld tokens: plus --tokens %lld and --decode %lld it is over the model's "
                            "%lld positions\n", prog, load, (long long)loaded, (long long)tokens, (long long)decode,
                    (long long)info.max_positions);
            rc = CLI_EXIT_USAGE;
        } else if (!json) {
            printf("  loaded  %s: %lld tokens in %.2f s\n", load, (long long)loaded, tl);
        }
    }
    if (!rc && !json && tokens) {
        printf("  prefill %lld tokens in chunks of %lld\n", (long long)tokens, (long long)chunk);
        fflush(stdout);
    }
    uint64_t rs = seed;
    bar pb = bar_new("prefill", "tokens");
    hc_ctx_set_progress(c, stop_cb, NULL); /* Ctrl-C stops a layer call between pieces */
    t0 = now_s();
    for (int64_t done = 0; done < tokens && !rc;) {
        int64_t n = tokens - done < chunk ? tokens - done : chunk;
        rc = feed_chunk(c, hx, x, n, D, &rs);
        if (!rc) rc = run_chunk(c, L, x, y, n);
        if (rc) bar_end(&pb);
        else bar_draw(&pb, (uint64_t)(done += n), (uint64_t)tokens);
    }
    /* device io: the calls return before the GPU is done; a copy back waits for it */
    if (!rc && tokens && hc_x_ctx_io_copy(c, hx, y, sizeof(float) * (uint64_t)D, 0)) {
        fprintf(stderr, "%s: output copy: %s\n", prog, hc_ctx_last_error(c));
        rc = 1;
    }
    double tp = now_s() - t0;
    hc_ctx_set_progress(c, NULL, NULL); /* decode: the lowest latency (no rollback copies on CUDA) */
    double td = 0;
    for (int64_t k = 0; k < decode && !rc; k++) {
        if (interrupted) {
            fprintf(stderr, "%s: interrupted (the context holds %lld tokens)\n", prog, (long long)hc_ctx_n_tokens(c));
            rc = 130;
            break;
        }
        if ((rc = feed_chunk(c, hx, x, 1, D, &rs))) break;
        double t1 = now_s();
        rc = run_chunk(c, L, x, y, 1);
        if (!rc && hc_x_ctx_io_copy(c, hx, y, sizeof(float) * (uint64_t)D, 0)) rc = 1; /* the token's output */
        td += now_s() - t1;
    }
    uint64_t bytes = hc_ctx_memory_bytes(c);
    int64_t n = hc_ctx_n_tokens(c);
    /* dense: one head_dim-wide bf16 vector per token per layer (MQA, K = V), no compression */
    double dense = (double)L * (double)n * info.head_dim * 2.0;
    if (!rc && !json) {
        char a[32], b[32];
        if (tokens) printf("  prefill %.1f tokens/s (%.2f s)\n", (double)tokens / tp, tp);
        if (decode)
            printf("  decode  %.2f ms/token over %lld tokens (all %d layers)\n", 1e3 * td / (double)decode,
                   (long long)decode, L);
        printf("  context %lld tokens; cache %s (windows, compressed entries, indexer keys, compressor "
               "state)\n", (long long)n, human((double)bytes, a, sizeof a));
        if (bytes)
            printf("  a dense bf16 KV cache of the same length (one %d-wide vector per token and layer) would "
                   "take %s: %.1fx more\n", info.head_dim, human(dense, b, sizeof b), dense / (double)bytes);
        fflush(stdout);
    }
    /* the session to save: atomically, so an interrupted or failed save leaves the old file */
    double ts = 0;
    uint64_t saved_bytes = 0;
    if (!rc && save) {
        bar b = bar_new("save", "bytes");
        hc_ctx_set_progress(c, bar_cb, &b);
        t0 = now_s();
        st = hc_ctx_save(c, save, NULL);
        ts = now_s() - t0;
        hc_ctx_set_progress(c, NULL, NULL);
        bar_end(&b);
        struct stat sb;
        if (st == HC_ERR_ABORTED) {
            fprintf(stderr, "%s: save %s: interrupted; the file is as it was\n", prog, save);
            rc = 130;
        } else if (st) {
            fprintf(stderr, "%s: save %s: %s (%s)\n", prog, save, hc_strerror(st), hc_ctx_last_error(c));
            rc = 1;
        } else {
            if (stat(save, &sb) == 0) saved_bytes = (uint64_t)sb.st_size;
            if (!json) printf("  saved   %s: %lld tokens, %llu bytes in %.2f s\n", save, (long long)n,
                              (unsigned long long)saved_bytes, ts);
        }
    }
    if (!rc && json) {
        printf("{\n  \"command\": \"demo\",\n  \"version\": ");
        cli_json_string(stdout, hc_version_string());
        printf(",\n  \"model\": ");
        cli_json_string(stdout, model_name);
        printf(",\n  \"model_source\": \"%s\",\n  \"model_seconds\": ", source);
        cli_json_number(stdout, t_model);
        printf(",\n  \"layers\": [");
        for (int l = 0; l < L; l++) printf("%s\"%s\"", l ? ", " : "", kind_name(hc_model_layer_ratio(m, l)));
        printf("],\n  \"dim\": %d,\n  \"n_heads\": %d,\n  \"head_dim\": %d,\n", D, info.n_heads, info.head_dim);
        printf("  \"backend\": \"%s\",\n  \"cache\": \"%s\",\n  \"numerics\": \"%s\",\n  \"threads\": %d,\n  \"seed\": %llu,\n",
               be_name, cache_names[cache], num_name, threads, (unsigned long long)seed);
        printf("  \"load\": ");
        if (load) {
            printf("{\"file\": ");
            cli_json_string(stdout, load);
            printf(", \"n_tokens\": %lld, \"seconds\": ", (long long)loaded);
            cli_json_number(stdout, tl);
            printf("}");
        } else {
            printf("null");
        }
        printf(",\n  \"prefill\": {\"tokens\": %lld, \"chunk\": %lld, \"seconds\": ", (long long)tokens,
               (long long)chunk);
        cli_json_number(stdout, tp);
        printf(", \"tokens_per_s\": ");
        cli_json_number(stdout, tokens && tp > 0 ? (double)tokens / tp : NAN);
        printf("},\n  \"decode\": {\"tokens\": %lld, \"seconds\": ", (long long)decode);
        cli_json_number(stdout, td);
        printf(", \"ms_per_token\": ");
        cli_json_number(stdout, decode ? 1e3 * td / (double)decode : NAN);
        printf("},\n  \"context\": {\"n_tokens\": %lld, \"cache_bytes\": %llu, \"dense_bf16_bytes\": %.0f, "
               "\"dense_ratio\": ", (long long)n, (unsigned long long)bytes, dense);
        cli_json_number(stdout, bytes ? dense / (double)bytes : NAN);
        printf("},\n  \"save\": ");
        if (save) {
            printf("{\"file\": ");
            cli_json_string(stdout, save);
            printf(", \"n_tokens\": %lld, \"bytes\": %llu, \"seconds\": ", (long long)n,
                   (unsigned long long)saved_bytes);
            cli_json_number(stdout, ts);
            printf("}");
        } else {
            printf("null");
        }
        printf("\n}\n");
    }
    free(hx);
    hc_x_ctx_io_free(c, x);
    hc_x_ctx_io_free(c, y);
    hc_ctx_free(c);
    hc_model_free(m);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * info
 * ------------------------------------------------------------------------------------------- */

/* Bytes of a model's attention weights as the library holds them (hc_model_info.weight_bytes of
 * a model with weights), from the geometry: FP8 matrices as 1-byte codes plus one fp32 scale per
 * 128x128 block, bf16 matrices 2 bytes per element, norms, sinks and compressor position terms in
 * fp32. Per layer: wq_a, q_norm, wq_b, wkv, kv_norm, wo_a (bf16), wo_b, attn_sink; a compressor
 * (ratio 4 and 128; ratio 4 overlaps two windows: twice the width); at ratio 4 the indexer:
 * wq_b, weights_proj (bf16) and its own compressor. */
static uint64_t fp8_bytes(uint64_t rows, uint64_t cols)
{
    return rows * cols + (rows + 127) / 128 * ((cols + 127) / 128) * 4;
}

static uint64_t compressor_bytes(int ratio, uint64_t width, uint64_t dim)
{
    uint64_t out = (ratio == 4 ? 2 : 1) * width; /* ape [ratio][out], wkv and wgate [out][dim], norm */
    return 4 * (uint64_t)ratio * out + 2 * (2 * out * dim) + 4 * width;
}

static uint64_t weight_bytes(const hc_model *m, const hc_model_info *g)
{
    uint64_t D = (uint64_t)g->dim, H = (uint64_t)g->n_heads, d = (uint64_t)g->head_dim, Q = (uint64_t)g->q_lora_rank;
    uint64_t G = (uint64_t)g->o_groups, O = (uint64_t)g->o_lora_rank, IH = (uint64_t)g->index_n_heads;
    uint64_t ID = (uint64_t)g->index_head_dim, total = 0;
    for (int l = 0; l < g->n_layers; l++) {
        int r = hc_model_layer_ratio(m, l);
        total += fp8_bytes(Q, D) + 4 * Q + fp8_bytes(H * d, Q) + fp8_bytes(d, D) + 4 * d + 2 * (G * O) * (H / G * d) +
                 fp8_bytes(D, G * O) + 4 * H;
        if (r) total += compressor_bytes(r, d, D);
        if (r == 4) total += fp8_bytes(IH * ID, Q) + 2 * IH * D + compressor_bytes(4, ID, D);
    }
    return total;
}

/* Bytes a context of the model holds at n tokens (what hc_ctx_memory_bytes() reports): every
 * layer's window ring in full, its compressed entries and indexer keys in pages of 64 entries,
 * and the compressor state. The entry sizes come from hc_model_cache_bytes(), which counts per
 * entry: at 0 tokens the windows alone, at 4 tokens one more entry and indexer key per ratio-4
 * layer. Returns 0, or -1 when the model's counts do not have that form. */
static int context_cache_bytes(const hc_model *m, const hc_model_info *g, int64_t n, int32_t fmt, uint64_t *out)
{
    uint64_t kv0, kv4, state;
    if (hc_model_cache_bytes(m, 0, fmt, &kv0, &state) || hc_model_cache_bytes(m, 4, fmt, &kv4, NULL)) return -1;
    int n_csa = 0;
    for (int l = 0; l < g->n_layers; l++) n_csa += hc_model_layer_ratio(m, l) == 4;
    uint64_t wslots = (uint64_t)g->n_layers * (uint64_t)g->window;
    if (!wslots || kv0 % wslots || (n_csa && (kv4 - kv0) % (uint64_t)n_csa)) return -1;
    uint64_t e_main = kv0 / wslots, e_idx = n_csa ? (kv4 - kv0) / (uint64_t)n_csa - e_main : 0;
#define PAGED(entries) (((uint64_t)(entries) + 63) / 64 * 64)
    uint64_t total = state;
    for (int l = 0; l < g->n_layers; l++) {
        int r = hc_model_layer_ratio(m, l);
        total += PAGED(g->window) * e_main;
        if (r) total += PAGED((uint64_t)n / (uint64_t)r) * e_main;
        if (r == 4) total += PAGED((uint64_t)n / 4) * e_idx;
    }
#undef PAGED
    *out = total;
    return 0;
}

/* The activation workspace a context allocates in backend memory for a chunk of `chunk` tokens:
 * per token bf16 x and y (dim each), the query latent (q_lora_rank), q and the attention output
 * (heads x head_dim each), kv (head_dim), the indexer query (index heads x index_head_dim) and
 * head weights (index heads), and int32 top-k indices (index_topk). */
static uint64_t workspace_bytes(const hc_model_info *g, int64_t chunk)
{
    uint64_t per = 2 * (2 * (uint64_t)g->dim + (uint64_t)g->q_lora_rank + 2 * (uint64_t)g->n_heads * g->head_dim +
                        (uint64_t)g->head_dim + (uint64_t)g->index_n_heads * g->index_head_dim +
                        (uint64_t)g->index_n_heads) +
                   4 * (uint64_t)g->index_topk;
    return per * (uint64_t)chunk;
}

static const char info_includes[] =
    "the context's cache (window rings, compressed entries and indexer keys in pages of 64 entries, "
    "compressor state) and its activation workspace for one chunk (bf16 x, query latent, q, kv, indexer "
    "query and head weights, attention output, y; int32 top-k indices)";
static const char info_excludes[] =
    "the model's weights on the device (uploaded once per device, shared by every context of the model); "
    "the backend's per-call scratch (attention partials, indexer top-k over the context, FP8 activations: "
    "it grows with the chunk and the context length); cuBLASLt's workspace; the CUDA runtime's own memory";

/* text after a label, wrapped at 100 columns, continuation lines indented by 2 */
static void print_wrapped(const char *label, const char *text)
{
    int col = printf("%s", label), first = 1;
    for (const char *p = text; *p;) {
        while (*p == ' ') p++;
        int w = (int)strcspn(p, " ");
        if (!w) break;
        if (!first && col + 1 + w > 98) col = printf("\n  ") - 1;
        else if (!first) col += printf(" ");
        col += printf("%.*s", w, p);
        p += w;
        first = 0;
    }
    putchar('\n');
}

static int cmd_info(int argc, char **argv)
{
    const char *prog = "hybridctx info", *model_name = NULL;
    int64_t tokens = -1, chunk = 2048;
    int json = 0, o, bad = 0;
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'}, {"tokens", required_argument, NULL, 't'},
        {"chunk", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'J'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    optind = 0;
    while (!bad && (o = cli_getopt(prog, argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 'm': model_name = optarg; break;
        case 't': bad = cli_int64(prog, "--tokens", optarg, 0, (int64_t)1 << 40, &tokens); break;
        case 'c': bad = cli_int64(prog, "--chunk", optarg, 1, 65536, &chunk); break;
        case 'J': json = 1; break;
        case 'h': fputs(usage_info, stdout), fputs(usage_model, stdout); return 0;
        default: bad = 1;
        }
    }
    for (; !bad && optind < argc; optind++) {
        if (model_name) cli_unexpected(prog, argv[optind]), bad = 1;
        else model_name = argv[optind];
    }
    if (bad) return usage_error("info", usage_info);
    if (!model_name) model_name = "tiny";

    hc_model *m = NULL;
    const char *source;
    int rc = open_model(prog, model_name, 1, 1, &m, &source);
    if (rc) return rc;
    hc_model_info g = {.struct_size = sizeof g};
    hc_model_info_get(m, &g);
    if (tokens < 0) tokens = g.max_positions;
    if (tokens > g.max_positions) {
        fprintf(stderr, "%s: invalid value '%lld' for --tokens: over the model's max_position_embeddings %lld\n",
                prog, (long long)tokens, (long long)g.max_positions);
        hc_model_free(m);
        return CLI_EXIT_USAGE;
    }
    const int32_t fmts[2] = {HC_CACHE_FP8, HC_CACHE_BF16};
    uint64_t kv[2], state[2], held[2];
    for (int f = 0; f < 2; f++)
        if (hc_model_cache_bytes(m, tokens, fmts[f], &kv[f], &state[f]) ||
            context_cache_bytes(m, &g, tokens, fmts[f], &held[f])) {
            fprintf(stderr, "%s: cannot size the cache of %s\n", prog, model_name);
            hc_model_free(m);
            return 1;
        }
    uint64_t wbytes = weight_bytes(m, &g), ws = workspace_bytes(&g, chunk);
    double dense = (double)g.n_layers * (double)tokens * g.head_dim * 2.0;
    int kinds[3] = {0, 0, 0};
    for (int l = 0; l < g.n_layers; l++) {
        int r = hc_model_layer_ratio(m, l);
        kinds[r == 0 ? 0 : r == 4 ? 1 : 2]++;
    }
    if (json) {
        printf("{\n  \"command\": \"info\",\n  \"version\": ");
        cli_json_string(stdout, hc_version_string());
        printf(",\n  \"model\": ");
        cli_json_string(stdout, model_name);
        printf(",\n  \"model_source\": \"%s\",\n  \"geometry\": {\n    \"n_layers\": %d,\n    \"layer_ratios\": [",
               source, g.n_layers);
        for (int l = 0; l < g.n_layers; l++) printf("%s%d", l ? ", " : "", hc_model_layer_ratio(m, l));
        printf("],\n    \"layer_kinds\": {\"SWA\": %d, \"CSA\": %d, \"HCA\": %d},\n", kinds[0], kinds[1], kinds[2]);
        printf("    \"dim\": %d,\n    \"n_heads\": %d,\n    \"head_dim\": %d,\n    \"rope_dim\": %d,\n"
               "    \"q_lora_rank\": %d,\n    \"o_groups\": %d,\n    \"o_lora_rank\": %d,\n    \"window\": %d,\n"
               "    \"index_n_heads\": %d,\n    \"index_head_dim\": %d,\n    \"index_topk\": %d,\n"
               "    \"max_positions\": %lld\n  },\n",
               g.dim, g.n_heads, g.head_dim, g.rope_dim, g.q_lora_rank, g.o_groups, g.o_lora_rank, g.window,
               g.index_n_heads, g.index_head_dim, g.index_topk, (long long)g.max_positions);
        printf("  \"weight_bytes\": %llu,\n  \"tokens\": %lld,\n  \"cache\": {\n", (unsigned long long)wbytes,
               (long long)tokens);
        for (int f = 0; f < 2; f++)
            printf("    \"%s\": {\"kv_bytes\": %llu, \"state_bytes\": %llu, \"bytes\": %llu, "
                   "\"context_bytes\": %llu}%s\n",
                   f ? "bf16" : "fp8", (unsigned long long)kv[f], (unsigned long long)state[f],
                   (unsigned long long)(kv[f] + state[f]), (unsigned long long)held[f], f ? "" : ",");
        printf("  },\n  \"dense_bf16_bytes\": %.0f,\n", dense);
        printf("  \"device\": {\n    \"chunk\": %lld,\n    \"workspace_bytes\": %llu,\n    \"fp8_bytes\": %llu,\n"
               "    \"bf16_bytes\": %llu,\n    \"includes\": ",
               (long long)chunk, (unsigned long long)ws, (unsigned long long)(held[0] + ws),
               (unsigned long long)(held[1] + ws));
        cli_json_string(stdout, info_includes);
        printf(",\n    \"excludes\": ");
        cli_json_string(stdout, info_excludes);
        printf("\n  }\n}\n");
    } else {
        char a[40], b[40];
        printf("model     %s (%s)\n", model_name, source);
        printf("layers    %d: %d SWA, %d CSA (ratio 4), %d HCA (ratio 128)\n          ", g.n_layers, kinds[0],
               kinds[1], kinds[2]);
        for (int l = 0; l < g.n_layers; l++)
            printf("%s%s", kind_name(hc_model_layer_ratio(m, l)),
                   l + 1 == g.n_layers ? "\n" : (l + 1) % 16 ? " " : "\n          ");
        printf("geometry  dim %d; %d heads x %d (rope %d); q_lora_rank %d; output %d groups x rank %d\n", g.dim,
               g.n_heads, g.head_dim, g.rope_dim, g.q_lora_rank, g.o_groups, g.o_lora_rank);
        printf("          window %d; indexer %d heads x %d, top-k %d; max positions %lld\n", g.window,
               g.index_n_heads, g.index_head_dim, g.index_topk, (long long)g.max_positions);
        printf("weights   %s (%llu bytes as held in memory: FP8 codes + fp32 block scales, bf16, fp32)\n",
               human((double)wbytes, a, sizeof a), (unsigned long long)wbytes);
        char label[64];
        snprintf(label, sizeof label, "at %lld tokens", (long long)tokens);
        printf("\n%-32s %-24s %s\n", label, "fp8 cache", "bf16 cache");
#define ROW(name, v0, v1) \
    printf("%-32s %-24s %s\n", name, human((double)(v0), a, sizeof a), human((double)(v1), b, sizeof b))
        ROW("  cache (hc_model_cache_bytes)", kv[0] + state[0], kv[1] + state[1]);
        ROW("    windows, entries, keys", kv[0], kv[1]);
        ROW("    compressor state", state[0], state[1]);
        ROW("  held by a context (pages)", held[0], held[1]);
        snprintf(label, sizeof label, "  + workspace (chunk %lld)", (long long)chunk);
        ROW(label, ws, ws);
        ROW("  = device memory of a context", held[0] + ws, held[1] + ws);
#undef ROW
        printf("%-32s %s: one %d-wide vector per token and layer\n", "  dense bf16 KV cache", human(dense, a, sizeof a),
               g.head_dim);
        printf("\nThe device memory of a context is its cache, held in pages of 64 entries, plus its workspace.\n");
        print_wrapped("includes: ", info_includes);
        print_wrapped("not included: ", info_excludes);
    }
    hc_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * inspect / verify: the library describes the file; the exit status classifies the result.
 * ------------------------------------------------------------------------------------------- */
static int cmd_session(int argc, char **argv, int verify)
{
    const char *prog = verify ? "hybridctx verify" : "hybridctx inspect", *cmd = verify ? "verify" : "inspect";
    int json = 0, o, bad = 0;
    const char *path = NULL;
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'J'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    optind = 0;
    while (!bad && (o = cli_getopt(prog, argc, argv, "h", opts)) != -1) {
        if (o == 'J') json = 1;
        else if (o == 'h') return fputs(verify ? usage_verify : usage_inspect, stdout), 0;
        else bad = 1;
    }
    for (; !bad && optind < argc; optind++) {
        if (path) cli_unexpected(prog, argv[optind]), bad = 1;
        else path = argv[optind];
    }
    if (!bad && !path) fprintf(stderr, "%s: no session file named\n", prog), bad = 1;
    if (bad) return usage_error(cmd, verify ? usage_verify : usage_inspect);
    int32_t flags = (json ? HC_X_INSPECT_JSON : 0) | (verify ? HC_X_INSPECT_VERIFY : 0);
    uint64_t cap = 1 << 20, len = 0;
    char *buf = NULL;
    hc_status st;
    bars_on = !json && isatty(2); /* verify reports the payload bytes checked; inspect reads headers */
    catch_sigint();
    for (;;) {
        char *nb = realloc(buf, (size_t)cap);
        if (!nb) { free(buf); fprintf(stderr, "hybridctx: out of memory\n"); return 5; }
        buf = nb;
        bar b = bar_new("verify", "bytes");
        st = hc_x_session_inspect_progress(path, flags, bar_cb, &b, buf, cap, &len);
        bar_end(&b);
        if (st != HC_ERR_BUFFER_TOO_SMALL || len <= cap) break;
        cap = len;
    }
    if (st == HC_ERR_ABORTED) {
        free(buf);
        fprintf(stderr, "%s: %s: interrupted\n", prog, path);
        return 130;
    }
    if (st == HC_ERR_BUFFER_TOO_SMALL || st == HC_ERR_OUT_OF_MEMORY) {
        free(buf);
        fprintf(stderr, "hybridctx: %s: %s\n", path, hc_strerror(st));
        return 5;
    }
    if (json) printf("%s\n", buf);
    else printf("session %s\n%s", path, buf);
    free(buf);
    switch (st) {
    case HC_OK: return 0;
    case HC_ERR_CORRUPT:
    case HC_ERR_LIMIT: return 1;
    case HC_ERR_FORMAT: return 3;
    case HC_ERR_VERSION: return 4;
    default: return 5;
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    int o;
    /* "+": stop at the command; its options are its own */
    while ((o = cli_getopt("hybridctx", argc, argv, "+h", opts)) != -1) {
        if (o == 'h') return fputs(usage_main, stdout), 0;
        if (o == 'V') return printf("hybridctx %s\n", hc_version_string()), 0;
        fputs(usage_main, stderr);
        return CLI_EXIT_USAGE;
    }
    if (optind >= argc) {
        fprintf(stderr, "hybridctx: no command given\n");
        fputs(usage_main, stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    int n = argc - optind;
    char **v = argv + optind;
    if (!strcmp(cmd, "demo")) return cmd_demo(n, v);
    if (!strcmp(cmd, "info")) return cmd_info(n, v);
    if (!strcmp(cmd, "inspect")) return cmd_session(n, v, 0);
    if (!strcmp(cmd, "verify")) return cmd_session(n, v, 1);
    if (!strcmp(cmd, "help")) return fputs(usage_main, stdout), 0;
    fprintf(stderr, "hybridctx: unknown command '%s'\n", cmd);
    fputs(usage_main, stderr);
    return CLI_EXIT_USAGE;
}
