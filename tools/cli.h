/* cli.h - option parsing and output helpers shared by the command-line programs (hybridctx,
 * bench, session-bench, bench-gpu): strict numbers and names, getopt_long error reports, JSON
 * strings. Every parsing helper prints a message that names the program, the option and the value
 * to stderr on failure; the program then exits with CLI_EXIT_USAGE. */
#ifndef HC_TOOLS_CLI_H
#define HC_TOOLS_CLI_H
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

/* Exit status of a usage error: an unknown command or option, a missing or malformed value. */
#define CLI_EXIT_USAGE 2

/* A decimal integer in [lo, hi]: the whole string, optional sign, no spaces, no suffix ("10k" is
 * refused). 0 on success; -1 after printing "PROG: invalid value 'VAL' for OPT: ...". */
int cli_int64(const char *prog, const char *opt, const char *val, int64_t lo, int64_t hi, int64_t *out);
int cli_int(const char *prog, const char *opt, const char *val, int lo, int hi, int *out);
/* A decimal integer in [0, UINT64_MAX] (a seed); no sign. */
int cli_uint64(const char *prog, const char *opt, const char *val, uint64_t *out);
/* One of the NULL-terminated names, exactly: its index, or -1 after a message listing them. */
int cli_choice(const char *prog, const char *opt, const char *val, const char *const *names);
/* A comma-separated list of 1..cap integers in [lo, hi]; *n receives the count. 0 or -1. */
int cli_int64_list(const char *prog, const char *opt, const char *val, int64_t lo, int64_t hi, int64_t *out,
                   int cap, int *n);

/* --option NAME=0|1: a CUDA backend option (docs/cuda.md, set with hc_x_ctx_set_option),
 * appended to opts[*n] (at most CLI_MAX_OPTIONS). 0, or -1 after a message. */
#define CLI_MAX_OPTIONS 8
typedef struct cli_option_value {
    char name[64];
    int value;
} cli_option_value;
int cli_backend_option(const char *prog, const char *val, cli_option_value *opts, int *n);

/* getopt_long() with the library's own reports: an unknown option, a missing value, or a value
 * given to an option that takes none prints "PROG: ..." to stderr and returns '?'. Otherwise as
 * getopt_long() (-1 at the end of the options). Set optind = 0 before parsing a new argv. */
int cli_getopt(const char *prog, int argc, char *const *argv, const char *shortopts, const struct option *longopts);
/* "PROG: unexpected argument 'ARG'" for a positional argument where none is taken. */
void cli_unexpected(const char *prog, const char *arg);

/* s as a JSON string (quoted, escaped). */
void cli_json_string(FILE *f, const char *s);
/* A finite double as JSON (non-finite values, which JSON lacks, as null). */
void cli_json_number(FILE *f, double v);

#endif
