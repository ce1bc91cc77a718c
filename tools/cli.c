/* cli.c - option parsing and output helpers shared by the command-line programs (cli.h). */
#include "cli.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void bad_int(const char *prog, const char *opt, const char *val, long long lo, long long hi)
{
    fprintf(stderr, "%s: invalid value '%s' for %s: expected an integer from %lld to %lld\n", prog, val, opt, lo,
            hi);
}

int cli_int64(const char *prog, const char *opt, const char *val, int64_t lo, int64_t hi, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = val && *val && !isspace((unsigned char)*val) ? strtoll(val, &end, 10) : 0;
    if (!end || end == val || *end || errno == ERANGE || v < lo || v > hi) {
        bad_int(prog, opt, val ? val : "", (long long)lo, (long long)hi);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int cli_int(const char *prog, const char *opt, const char *val, int lo, int hi, int *out)
{
    int64_t v;
    if (cli_int64(prog, opt, val, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

int cli_uint64(const char *prog, const char *opt, const char *val, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = val && isdigit((unsigned char)*val) ? strtoull(val, &end, 10) : 0;
    if (!end || *end || errno == ERANGE) {
        fprintf(stderr, "%s: invalid value '%s' for %s: expected an integer from 0 to %llu\n", prog, val ? val : "",
                opt, (unsigned long long)UINT64_MAX);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int cli_choice(const char *prog, const char *opt, const char *val, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (val && !strcmp(val, names[i])) return i;
    fprintf(stderr, "%s: invalid value '%s' for %s: expected one of ", prog, val ? val : "", opt);
    for (int i = 0; names[i]; i++) fprintf(stderr, "%s%s", i ? ", " : "", names[i]);
    fputc('\n', stderr);
    return -1;
}

int cli_backend_option(const char *prog, const char *val, cli_option_value *opts, int *n)
{
    const char *eq = strchr(val, '=');
    if (!eq || eq == val || (size_t)(eq - val) >= sizeof opts[0].name || *n == CLI_MAX_OPTIONS ||
        (strcmp(eq + 1, "0") && strcmp(eq + 1, "1"))) {
        fprintf(stderr, "%s: invalid value '%s' for --option: expected NAME=0 or NAME=1 (at most %d)\n", prog, val,
                CLI_MAX_OPTIONS);
        return -1;
    }
    snprintf(opts[*n].name, sizeof opts[0].name, "%.*s", (int)(eq - val), val);
    opts[(*n)++].value = eq[1] - '0';
    return 0;
}

int cli_int64_list(const char *prog, const char *opt, const char *val, int64_t lo, int64_t hi, int64_t *out,
                   int cap, int *n)
{
    *n = 0;
    const char *p = val;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        if (*n == cap || len == 0 || len >= sizeof item) {
            fprintf(stderr, "%s: invalid value '%s' for %s: expected 1 to %d comma-separated integers from %lld to "
                            "%lld\n", prog, val, opt, cap, (long long)lo, (long long)hi);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = 0;
        if (cli_int64(prog, opt, item, lo, hi, &out[*n])) return -1;
        ++*n;
        if (!comma) return 0;
        p = comma + 1;
    }
}

int cli_getopt(const char *prog, int argc, char *const *argv, const char *shortopts, const struct option *longopts)
{
    char spec[128];
    /* ':' first (after a leading '+' or '-'): a missing value returns ':' */
    int mode = shortopts[0] == '+' || shortopts[0] == '-';
    snprintf(spec, sizeof spec, "%.*s:%s", mode, shortopts, shortopts + mode);
    opterr = 0;
    int c = getopt_long(argc, argv, spec, longopts, NULL);
    if (c != '?' && c != ':') return c;
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    int is_long = !strncmp(arg, "--", 2);
    char name[64];
    if (is_long) snprintf(name, sizeof name, "%.*s", (int)strcspn(arg, "="), arg);
    else snprintf(name, sizeof name, "-%c", optopt ? optopt : '?');
    if (c == ':') fprintf(stderr, "%s: option '%s' needs a value\n", prog, name);
    else if (is_long && optopt && strchr(arg, '=')) fprintf(stderr, "%s: option '%s' takes no value\n", prog, name);
    else if (is_long && strchr(arg, '=') == NULL && optopt == 0 && longopts) {
        /* getopt_long also returns '?' for an ambiguous abbreviation */
        int matches = 0;
        for (const struct option *o = longopts; o->name; o++) matches += !strncmp(o->name, arg + 2, strlen(arg + 2));
        fprintf(stderr, "%s: %s option '%s'\n", prog, matches > 1 ? "ambiguous" : "unknown", name);
    } else fprintf(stderr, "%s: unknown option '%s'\n", prog, name);
    return '?';
}

void cli_unexpected(const char *prog, const char *arg) { fprintf(stderr, "%s: unexpected argument '%s'\n", prog, arg); }

void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void cli_json_number(FILE *f, double v)
{
    if (isfinite(v)) fprintf(f, "%.10g", v);
    else fputs("null", f);
}
