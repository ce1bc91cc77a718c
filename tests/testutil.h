/* testutil.h - small helpers shared by the Check suites. */
#ifndef HC_TESTUTIL_H
#define HC_TESTUTIL_H
#include <stddef.h>
#include <stdint.h>

/* Path of a file in tests/data (HC_TEST_DATA, set by meson), in a static buffer. */
const char *tu_data_path(const char *name);
/* Deterministic pseudo-random floats, roughly N(0, std). */
void tu_fill_normal(float *v, size_t n, uint64_t seed, float std);
/* Relative L2 error ||a-b|| / ||b||. */
double tu_rel_l2(const float *a, const float *b, size_t n);
/* bf16 bits -> float. */
float tu_bf16(uint16_t h);
/* The q-quantile (0..1, nearest rank) of v[0..n) (v is not changed; 0 for n 0). */
double tu_quantile(const double *v, size_t n, double q);

/* Files: a new empty directory under $TMPDIR (malloc'd path; NULL on failure), its removal with
 * everything below it, "dir/name" (malloc'd), whole-file write (0 or -1) and read (malloc'd,
 * NULL on failure). */
char *tu_tempdir(void);
void tu_rmtree(const char *dir);
char *tu_join(const char *dir, const char *name);
int tu_write_file(const char *path, const void *data, size_t n);
void *tu_read_file(const char *path, size_t *n);

#endif
