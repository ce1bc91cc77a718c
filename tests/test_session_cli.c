/* test_session_cli.c - `hybridctx inspect` and `hybridctx verify` on the golden sessions, on
 * damaged copies and on files that are not sessions: what they print and their exit status.
 * argv[1] is the hybridctx program (meson passes it). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "testutil.h"
#include "runner.h"

static const char *g_tool;
static char *g_dir;

/* Run the tool; returns its exit status, *out its stdout (malloc'd). */
static int run(const char *args, char **out)
{
    char *path = tu_join(g_dir, "out.txt");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", g_tool, args, path);
    int st = system(cmd);
    size_t n;
    char *text = tu_read_file(path, &n);
    ck_assert_ptr_nonnull(text);
    text = realloc(text, n + 1);
    text[n] = 0;
    *out = text;
    free(path);
    ck_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void expect(const char *args, int code, const char *needle)
{
    char *out;
    int rc = run(args, &out);
    ck_assert_msg(rc == code, "hybridctx %s: exit %d, expected %d\n%s", args, rc, code, out);
    if (needle) ck_assert_msg(strstr(out, needle), "hybridctx %s: output lacks '%s':\n%s", args, needle, out);
    free(out);
}

START_TEST(test_cli)
{
    char raw[4096], zst[4096], args[8192];
    snprintf(raw, sizeof raw, "%s", tu_data_path("session-golden-v1.0-raw.hcs"));
    snprintf(zst, sizeof zst, "%s", tu_data_path("session-golden-v1.0-zstd.hcs"));
    snprintf(args, sizeof args, "inspect '%s'", raw);
    expect(args, 0, "tokens        300");
    expect(args, 0, "geometry only");
    expect(args, 0, "INDEX_STATE");
    snprintf(args, sizeof args, "inspect --json '%s'", zst);
    expect(args, 0, "\"n_tokens\": 300");
    expect(args, 0, "\"compress_ratios\": [\n      0,\n      4,\n      128,\n      4\n    ]");
    snprintf(args, sizeof args, "verify '%s'", zst);
    expect(args, 0, "verify        OK");
    snprintf(args, sizeof args, "verify --json '%s'", raw);
    expect(args, 0, "\"verified\": true");
    /* a payload byte changed: inspect (headers only) still describes it, verify fails with 1 */
    size_t n;
    uint8_t *b = tu_read_file(raw, &n);
    ck_assert_ptr_nonnull(b);
    b[n / 2] ^= 0x10;
    char *bad = tu_join(g_dir, "bad.hcs");
    ck_assert_int_eq(tu_write_file(bad, b, n), 0);
    snprintf(args, sizeof args, "inspect '%s'", bad);
    expect(args, 0, "tokens        300");
    snprintf(args, sizeof args, "verify '%s'", bad);
    expect(args, 1, "checksum mismatch");
    snprintf(args, sizeof args, "verify --json '%s'", bad);
    expect(args, 1, "\"status\": \"HC_ERR_CORRUPT\"");
    /* truncated, newer major version, not a session, missing, usage */
    ck_assert_int_eq(tu_write_file(bad, b, n - 100), 0);
    snprintf(args, sizeof args, "verify '%s'", bad);
    expect(args, 1, "truncated");
    b[n / 2] ^= 0x10;
    b[8] = 2;
    ck_assert_int_eq(tu_write_file(bad, b, n), 0);
    snprintf(args, sizeof args, "verify '%s'", bad);
    expect(args, 4, "format 2.0");
    ck_assert_int_eq(tu_write_file(bad, "hello", 5), 0);
    snprintf(args, sizeof args, "inspect --json '%s'", bad);
    expect(args, 3, "HC_ERR_FORMAT");
    snprintf(args, sizeof args, "verify '%s/missing.hcs'", g_dir);
    expect(args, 5, "No such file");
    expect("verify", 2, "usage");
    expect("inspect --yaml x", 2, "usage");
    free(b), free(bad);
}
END_TEST

static void remove_dir(void)
{
    tu_rmtree(g_dir);
    free(g_dir);
}

Suite *tu_suite(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_session_cli PATH-OF-hybridctx\n");
        exit(2);
    }
    g_tool = argv[1];
    g_dir = tu_tempdir();
    atexit(remove_dir);
    Suite *s = suite_create("session_cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cli);
    suite_add_tcase(s, tc);
    return s;
}
