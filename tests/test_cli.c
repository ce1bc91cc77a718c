/* test_cli.c - the command-line programs as a user runs them: malformed and out-of-range values
 * and unknown options or commands are refused with exit 2 and a message naming them; --help of
 * every command prints usage on stdout and exits 0; `hybridctx info` (text and JSON, checked
 * against the library: weight bytes of a model with weights, cache bytes of a filled context);
 * --json of demo, bench and session-bench on tiny runs; demo --save and --load (a round trip, no
 * progress bar on a stderr that is not a terminal, Ctrl-C during the prefill: exit 130 and the
 * saved file as it was).
 * argv[1..3]: the hybridctx, bench and session-bench programs (meson passes them). */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "testutil.h"

static const char *g_tool, *g_bench, *g_sbench;
static char *g_dir;

typedef struct {
    int rc;
    char *out, *err; /* stdout and stderr, NUL-terminated */
} run_result;

static char *slurp(const char *path)
{
    size_t n;
    char *text = tu_read_file(path, &n);
    ck_assert_ptr_nonnull(text);
    text = realloc(text, n + 1);
    ck_assert_ptr_nonnull(text);
    text[n] = 0;
    return text;
}

/* Run "[WRAPPER] PROG ARGS" through the shell with stdout and stderr in separate files. */
static run_result run_wrapped(const char *wrapper, const char *prog, const char *args)
{
    char *o = tu_join(g_dir, "stdout.txt"), *e = tu_join(g_dir, "stderr.txt");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s '%s' %s > '%s' 2> '%s' < /dev/null", wrapper, prog, args, o, e);
    int st = system(cmd);
    ck_assert_msg(WIFEXITED(st), "%s: did not exit", cmd);
    run_result r = {WEXITSTATUS(st), slurp(o), slurp(e)};
    free(o), free(e);
    return r;
}

static run_result run(const char *prog, const char *args) { return run_wrapped("", prog, args); }

static void done(run_result *r) { free(r->out), free(r->err); }

/* A usage error: exit 2, nothing on stdout, and stderr names each of the needles. */
static void refused(const char *prog, const char *args, const char *needle1, const char *needle2)
{
    run_result r = run(prog, args);
    ck_assert_msg(r.rc == 2, "%s %s: exit %d, expected 2\nstdout: %s\nstderr: %s", prog, args, r.rc, r.out, r.err);
    ck_assert_msg(r.out[0] == 0, "%s %s: printed on stdout: %s", prog, args, r.out);
    ck_assert_msg(strstr(r.err, needle1), "%s %s: stderr lacks '%s': %s", prog, args, needle1, r.err);
    if (needle2) ck_assert_msg(strstr(r.err, needle2), "%s %s: stderr lacks '%s': %s", prog, args, needle2, r.err);
    done(&r);
}

START_TEST(test_malformed)
{
    /* the three of the issue: formerly 10 tokens, an FP8 cache and the auto backend */
    refused(g_tool, "demo --tokens 10k", "--tokens", "'10k'");
    refused(g_tool, "demo --cache fp16", "--cache", "'fp16'");
    refused(g_tool, "demo --numerics turbo", "--numerics", "'turbo'");
    refused(g_tool, "demo --backend gpu", "--backend", "'gpu'");
    /* numbers: empty, signs, fractions, overflow, out of range, trailing text, spaces */
    refused(g_tool, "demo --tokens ''", "--tokens", NULL);
    refused(g_tool, "demo --tokens 0", "--tokens", "'0'");
    refused(g_tool, "demo --tokens -5", "--tokens", "'-5'");
    refused(g_tool, "demo --tokens 99999999999999999999", "--tokens", "99999999999999999999");
    refused(g_tool, "demo --tokens ' 7'", "--tokens", NULL);
    refused(g_tool, "demo --tokens 1e3", "--tokens", "'1e3'");
    refused(g_tool, "demo --chunk 0x10", "--chunk", "'0x10'");
    refused(g_tool, "demo --decode -1", "--decode", "'-1'");
    refused(g_tool, "demo --threads 1.5", "--threads", "'1.5'");
    refused(g_tool, "demo --seed -1", "--seed", "'-1'");
    refused(g_tool, "demo --seed 18446744073709551616", "--seed", NULL);
    refused(g_tool, "demo --model v5", "--model", "'v5'");
    refused(g_tool, "demo --tokens 1048570", "--tokens", "positions");
    /* unknown or misused options, missing values, stray arguments, unknown commands */
    refused(g_tool, "demo --tokenz 5", "unknown option '--tokenz'", NULL);
    refused(g_tool, "demo -x", "unknown option '-x'", NULL);
    refused(g_tool, "demo --tokens", "'--tokens' needs a value", NULL);
    refused(g_tool, "demo --json=yes", "'--json' takes no value", NULL);
    refused(g_tool, "demo extra", "unexpected argument 'extra'", NULL);
    refused(g_tool, "demo --save", "'--save' needs a value", NULL);
    refused(g_tool, "demo --load", "'--load' needs a value", NULL);
    refused(g_tool, "demo --save ''", "--save", "empty");
    refused(g_tool, "demo --load ''", "--load", "empty");
    refused(g_tool, "demo --load /nonexistent/s.hcs", "--load", "no such file");
    refused(g_tool, "demo --save /", "--save", "directory");
    refused(g_tool, "frobnicate", "unknown command 'frobnicate'", NULL);
    refused(g_tool, "--frobnicate", "unknown option '--frobnicate'", NULL);
    refused(g_tool, "", "no command", NULL);
    refused(g_tool, "info --tokens 10k", "--tokens", "'10k'");
    refused(g_tool, "info --tokens 2000000 v4-flash", "--tokens", "max_position_embeddings");
    refused(g_tool, "info --chunk 70000", "--chunk", "'70000'");
    refused(g_tool, "info tiny v4-flash", "unexpected argument 'v4-flash'", NULL);
    refused(g_tool, "info --model /nonexistent/config.json", "--model", "no such file");
    refused(g_tool, "inspect --yaml x", "unknown option '--yaml'", "usage");
    refused(g_tool, "verify", "no session file", "usage");
    refused(g_tool, "inspect a b", "unexpected argument 'b'", NULL);
    refused(g_bench, "--contexts 512,2k", "--contexts", "'2k'");
    refused(g_bench, "--contexts 512,,8", "--contexts", NULL);
    refused(g_bench, "--model v5", "--model", "'v5'");
    refused(g_bench, "--backend gpu", "--backend", "'gpu'");
    refused(g_bench, "--decode x", "--decode", "'x'");
    refused(g_bench, "--frobnicate", "unknown option", NULL);
    refused(g_sbench, "--tokens 1M", "--tokens", "'1M'");
    refused(g_sbench, "--cache fp16", "--cache", "'fp16'");
    refused(g_sbench, "--zstd-level 0", "--zstd-level", "'0'");
    refused(g_sbench, "--backend gpu", "--backend", "'gpu'");
    refused(g_sbench, "--keep=1", "takes no value", NULL);
}
END_TEST

static void helps(const char *prog, const char *args, const char *needle)
{
    run_result r = run(prog, args);
    ck_assert_msg(r.rc == 0, "%s %s: exit %d\n%s", prog, args, r.rc, r.err);
    ck_assert_msg(strlen(r.out) > 40 && strstr(r.out, "usage:") && strstr(r.out, needle),
                  "%s %s: stdout lacks the usage ('%s'):\n%s", prog, args, needle, r.out);
    ck_assert_msg(r.err[0] == 0, "%s %s: printed on stderr: %s", prog, args, r.err);
    done(&r);
}

START_TEST(test_help)
{
    helps(g_tool, "--help", "commands:");
    helps(g_tool, "-h", "commands:");
    helps(g_tool, "help", "commands:");
    helps(g_tool, "demo --help", "--tokens N");
    helps(g_tool, "demo -h", "--tokens N");
    helps(g_tool, "info --help", "--tokens N");
    helps(g_tool, "inspect --help", "inspect [--json] FILE");
    helps(g_tool, "verify --help", "verify [--json] FILE");
    helps(g_bench, "--help", "--contexts");
    helps(g_sbench, "--help", "--zstd-level");
    run_result r = run(g_tool, "--version");
    ck_assert_int_eq(r.rc, 0);
    ck_assert_msg(strstr(r.out, hc_version_string()), "--version: %s", r.out);
    done(&r);
}
END_TEST

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    ck_assert_msg(j != NULL, "not JSON (line %d: %s):\n%s", e.line, e.text, text);
    return j;
}

static json_int_t jint(json_t *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = root;
    for (char *k = strtok(buf, "."); k; k = strtok(NULL, ".")) {
        v = json_object_get(v, k);
        ck_assert_msg(v != NULL, "JSON lacks %s", path);
    }
    ck_assert_msg(json_is_integer(v), "%s is not an integer", path);
    return json_integer_value(v);
}

/* What the library says for a model given as preset or config text: the bytes of its weights
 * (built with weights) and the bytes a context holds after hc_x_ctx_fill_random(n). */
static void library_bytes(const char *text, int64_t n, int32_t fmt, uint64_t *weights, uint64_t *held)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(text, 1, NULL, &m), HC_OK);
    hc_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(hc_model_info_get(m, &info), HC_OK);
    *weights = info.weight_bytes;
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.cache_format = fmt;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
    ck_assert_int_eq(hc_x_ctx_fill_random(c, n, 3), HC_OK);
    *held = hc_ctx_memory_bytes(c);
    hc_ctx_free(c);
    hc_model_free(m);
}

START_TEST(test_info)
{
    run_result r = run(g_tool, "info tiny --tokens 5000");
    ck_assert_msg(r.rc == 0, "info: exit %d: %s", r.rc, r.err);
    ck_assert_msg(strstr(r.out, "model     tiny (preset)") && strstr(r.out, "4: 1 SWA, 2 CSA (ratio 4), 1 HCA") &&
                      strstr(r.out, "SWA CSA HCA CSA") && strstr(r.out, "at 5000 tokens") &&
                      strstr(r.out, "device memory of a context") && strstr(r.out, "not included:"),
                  "info text:\n%s", r.out);
    done(&r);

    /* tiny: every number against the library */
    r = run(g_tool, "info --json --model tiny --tokens 5000");
    ck_assert_msg(r.rc == 0, "info --json: exit %d: %s", r.rc, r.err);
    json_t *j = parse(r.out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "model")), "tiny");
    ck_assert_int_eq(jint(j, "geometry.n_layers"), 4);
    ck_assert_int_eq(jint(j, "geometry.dim"), 512);
    ck_assert_int_eq(jint(j, "geometry.layer_kinds.CSA"), 2);
    json_t *ratios = json_object_get(json_object_get(j, "geometry"), "layer_ratios");
    ck_assert_int_eq((int)json_array_size(ratios), 4);
    ck_assert_int_eq(json_integer_value(json_array_get(ratios, 2)), 128);
    ck_assert_int_eq(jint(j, "tokens"), 5000);
    uint64_t weights, held_fp8, held_bf16;
    library_bytes("tiny", 5000, HC_CACHE_FP8, &weights, &held_fp8);
    library_bytes("tiny", 5000, HC_CACHE_BF16, &weights, &held_bf16);
    ck_assert_uint_eq((uint64_t)jint(j, "weight_bytes"), weights);
    ck_assert_uint_eq((uint64_t)jint(j, "cache.fp8.context_bytes"), held_fp8);
    ck_assert_uint_eq((uint64_t)jint(j, "cache.bf16.context_bytes"), held_bf16);
    hc_model *m = NULL;
    uint64_t kv, state;
    ck_assert_int_eq(hc_model_create_random("tiny", 1, NULL, &m), HC_OK);
    ck_assert_int_eq(hc_model_cache_bytes(m, 5000, HC_CACHE_FP8, &kv, &state), HC_OK);
    hc_model_free(m);
    ck_assert_uint_eq((uint64_t)jint(j, "cache.fp8.kv_bytes"), kv);
    ck_assert_uint_eq((uint64_t)jint(j, "cache.fp8.state_bytes"), state);
    ck_assert_uint_eq((uint64_t)jint(j, "cache.fp8.bytes"), kv + state);
    ck_assert_int_eq(jint(j, "dense_bf16_bytes"), 4LL * 5000 * 128 * 2);
    ck_assert_int_eq(jint(j, "device.chunk"), 2048);
    ck_assert_int_eq(jint(j, "device.fp8_bytes"),
                     jint(j, "cache.fp8.context_bytes") + jint(j, "device.workspace_bytes"));
    ck_assert_int_gt(jint(j, "device.workspace_bytes"), 0);
    ck_assert(json_is_string(json_object_get(json_object_get(j, "device"), "excludes")));
    json_decref(j);
    done(&r);

    /* a config.json file of another geometry (every layer kind, HCA first), at a length whose
     * entry counts are not multiples of a page */
    const char *cfg = "{\"hidden_size\": 512, \"num_attention_heads\": 8, \"head_dim\": 128, \"q_lora_rank\": 256, "
                      "\"o_groups\": 2, \"o_lora_rank\": 128, \"index_n_heads\": 4, \"index_topk\": 32, "
                      "\"num_hidden_layers\": 3, \"compress_ratios\": [128, 4, 0]}";
    char *path = tu_join(g_dir, "config.json"), args[4200];
    ck_assert_int_eq(tu_write_file(path, cfg, strlen(cfg)), 0);
    snprintf(args, sizeof args, "info --json --tokens 70001 '%s'", path);
    r = run(g_tool, args);
    ck_assert_msg(r.rc == 0, "info config.json: exit %d: %s", r.rc, r.err);
    j = parse(r.out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "model_source")), "config");
    ck_assert_int_eq(jint(j, "geometry.n_layers"), 3);
    ck_assert_int_eq(jint(j, "geometry.o_lora_rank"), 128);
    ck_assert_int_eq(jint(j, "geometry.index_n_heads"), 4);
    library_bytes(cfg, 70001, HC_CACHE_FP8, &weights, &held_fp8);
    ck_assert_uint_eq((uint64_t)jint(j, "weight_bytes"), weights);
    ck_assert_uint_eq((uint64_t)jint(j, "cache.fp8.context_bytes"), held_fp8);
    json_decref(j);
    done(&r);
    free(path);

    /* v4-flash: the numbers of the header's documentation and the H200 record */
    r = run(g_tool, "info --json v4-flash --tokens 1048576");
    ck_assert_msg(r.rc == 0, "info v4-flash: exit %d: %s", r.rc, r.err);
    j = parse(r.out);
    ck_assert_int_eq(jint(j, "geometry.n_layers"), 43);
    ck_assert_int_eq(jint(j, "cache.fp8.state_bytes"), 12206080); /* 11.6 MiB */
    ck_assert_int_eq(jint(j, "cache.fp8.context_bytes"), jint(j, "cache.fp8.bytes")); /* 2^20: whole pages */
    json_decref(j);
    done(&r);
}
END_TEST

START_TEST(test_json_runs)
{
    run_result r = run(g_tool, "demo --tokens 300 --chunk 128 --decode 2 --backend cpu --json");
    ck_assert_msg(r.rc == 0, "demo --json: exit %d: %s", r.rc, r.err);
    json_t *j = parse(r.out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "command")), "demo");
    ck_assert_str_eq(json_string_value(json_object_get(j, "backend")), "cpu");
    ck_assert_str_eq(json_string_value(json_object_get(j, "cache")), "fp8");
    ck_assert_str_eq(json_string_value(json_object_get(j, "numerics")), "exact");
    ck_assert_int_eq((int)json_array_size(json_object_get(j, "layers")), 4);
    ck_assert_int_eq(jint(j, "prefill.tokens"), 300);
    ck_assert_int_eq(jint(j, "prefill.chunk"), 128);
    ck_assert_int_eq(jint(j, "decode.tokens"), 2);
    ck_assert_int_eq(jint(j, "context.n_tokens"), 302);
    ck_assert_int_gt(jint(j, "context.cache_bytes"), 0);
    ck_assert(json_number_value(json_object_get(json_object_get(j, "prefill"), "tokens_per_s")) > 0);
    ck_assert(json_number_value(json_object_get(json_object_get(j, "decode"), "ms_per_token")) > 0);
    json_decref(j);
    done(&r);
    /* without --json: the human text */
    r = run(g_tool, "demo --tokens 200 --chunk 100 --decode 1 --backend cpu --cache bf16 --numerics fast");
    ck_assert_msg(r.rc == 0 && strstr(r.out, "backend cpu, bf16 cache, exact numerics") && strstr(r.out, "context 201 tokens"),
                  "demo: exit %d\n%s%s", r.rc, r.out, r.err);
    done(&r);

    r = run(g_bench, "--model tiny --contexts 130,200 --decode 1 --json");
    ck_assert_msg(r.rc == 0, "bench --json: exit %d: %s", r.rc, r.err);
    j = parse(r.out);
    json_t *res = json_object_get(j, "results");
    ck_assert_int_eq((int)json_array_size(res), 6);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(res, 5), "kind")), "HCA");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(res, 5), "ctx")), 200);
    json_decref(j);
    done(&r);

    char args[4200];
    snprintf(args, sizeof args, "--model tiny --tokens 3000 --dir '%s' --json", g_dir);
    r = run(g_sbench, args);
    ck_assert_msg(r.rc == 0, "session-bench --json: exit %d: %s", r.rc, r.err);
    j = parse(r.out);
    ck_assert_int_eq(jint(j, "tokens"), 3000);
    ck_assert_int_gt(jint(j, "session_bytes"), 0);
    res = json_object_get(j, "runs");
    ck_assert_int_eq((int)json_array_size(res), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(res, 1), "round_trip")), "identical");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(res, 1), "compression")), "zstd-1");
    ck_assert(strstr(r.err, "session-bench: tiny geometry")); /* the text went to stderr */
    json_decref(j);
    done(&r);
}
END_TEST

/* demo --save, then demo --load --tokens 0: the loaded context goes on decoding; no bar, no text on
 * stderr (a file, not a terminal) */
START_TEST(test_save_load)
{
    char *path = tu_join(g_dir, "demo.hcs"), args[4200];
    snprintf(args, sizeof args, "demo --tokens 300 --chunk 128 --decode 2 --backend cpu --save '%s'", path);
    run_result r = run(g_tool, args);
    ck_assert_msg(r.rc == 0, "demo --save: exit %d\n%s%s", r.rc, r.out, r.err);
    ck_assert_msg(strstr(r.out, "context 302 tokens") && strstr(r.out, "saved ") && strstr(r.out, path),
                  "demo --save:\n%s", r.out);
    ck_assert_msg(r.err[0] == 0 && !strchr(r.err, '\r'), "demo --save: stderr (not a terminal): %s", r.err);
    done(&r);

    snprintf(args, sizeof args, "demo --load '%s' --tokens 0 --decode 2 --backend cpu", path);
    r = run(g_tool, args);
    ck_assert_msg(r.rc == 0, "demo --load: exit %d\n%s%s", r.rc, r.out, r.err);
    ck_assert_msg(strstr(r.out, "loaded ") && strstr(r.out, ": 302 tokens") && strstr(r.out, "context 304 tokens"),
                  "demo --load:\n%s", r.out);
    ck_assert_msg(r.err[0] == 0, "demo --load: stderr (not a terminal): %s", r.err);
    done(&r);

    /* JSON: the load and save fields; stdout is JSON alone */
    char *path2 = tu_join(g_dir, "demo2.hcs");
    snprintf(args, sizeof args, "demo --load '%s' --tokens 0 --decode 2 --backend cpu --save '%s' --json", path,
             path2);
    r = run(g_tool, args);
    ck_assert_msg(r.rc == 0, "demo --load --save --json: exit %d\n%s%s", r.rc, r.out, r.err);
    json_t *j = parse(r.out);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "load"), "file")), path);
    ck_assert_int_eq(jint(j, "load.n_tokens"), 302);
    ck_assert_int_eq(jint(j, "prefill.tokens"), 0);
    ck_assert_int_eq(jint(j, "context.n_tokens"), 304);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "save"), "file")), path2);
    ck_assert_int_eq(jint(j, "save.n_tokens"), 304);
    ck_assert_int_gt(jint(j, "save.bytes"), 0);
    ck_assert_msg(r.err[0] == 0, "--json: stderr: %s", r.err);
    json_decref(j);
    done(&r);
    r = run(g_tool, "demo --tokens 10 --decode 0 --backend cpu --json");
    j = parse(r.out);
    ck_assert(json_is_null(json_object_get(j, "load")) && json_is_null(json_object_get(j, "save")));
    json_decref(j);
    done(&r);

    /* Ctrl-C during a long prefill: exit 130, the file to save as it was */
    size_t n0, n1;
    char *before = tu_read_file(path, &n0);
    ck_assert_ptr_nonnull(before);
    snprintf(args, sizeof args, "demo --tokens 1000000 --chunk 4096 --backend cpu --save '%s'", path);
    r = run_wrapped("timeout --preserve-status -s INT 1", g_tool, args);
    ck_assert_msg(r.rc == 130, "demo, Ctrl-C: exit %d\n%s%s", r.rc, r.out, r.err);
    ck_assert_msg(strstr(r.err, "interrupted"), "demo, Ctrl-C: stderr: %s", r.err);
    ck_assert_msg(!strstr(r.out, "saved "), "demo, Ctrl-C: %s", r.out);
    done(&r);
    char *after = tu_read_file(path, &n1);
    ck_assert_ptr_nonnull(after);
    ck_assert_msg(n0 == n1 && !memcmp(before, after, n0), "demo, Ctrl-C: the saved file changed");
    free(before), free(after), free(path), free(path2);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: test_cli PATH-OF-hybridctx PATH-OF-bench PATH-OF-session-bench\n");
        return 2;
    }
    g_tool = argv[1], g_bench = argv[2], g_sbench = argv[3];
    if (!(g_dir = tu_tempdir())) {
        perror("test_cli: temporary directory");
        return 1;
    }
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_help);
    tcase_add_test(tc, test_info);
    tcase_add_test(tc, test_json_runs);
    tcase_add_test(tc, test_save_load);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    tu_rmtree(g_dir);
    free(g_dir);
    return failed ? 1 : 0;
}
