#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */
#endif
#include "testutil.h"
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *tu_data_path(const char *name)
{
    static char buf[4096];
    const char *dir = getenv("HC_TEST_DATA");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/data", name);
    return buf;
}

static uint64_t tu_next(uint64_t *s)
{
    uint64_t x = (*s += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void tu_fill_normal(float *v, size_t n, uint64_t seed, float std)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        double u = 0;
        for (int k = 0; k < 4; k++) u += (double)(tu_next(&s) >> 11) / 9007199254740992.0;
        v[i] = (float)((u - 2.0) / 0.5773502691896257) * std;
    }
}

double tu_rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

float tu_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double tu_quantile(const double *v, size_t n, double q)
{
    if (!n) return 0;
    double *s = malloc(sizeof(double) * n);
    if (!s) abort();
    memcpy(s, v, sizeof(double) * n);
    qsort(s, n, sizeof(double), cmp_double);
    size_t k = (size_t)ceil(q * (double)n); /* nearest rank: the smallest value with >= q of v at or below */
    double r = s[k ? k - 1 : 0];
    free(s);
    return r;
}

char *tu_tempdir(void)
{
    const char *base = getenv("TMPDIR");
    char *path = tu_join(base && *base ? base : "/tmp", "hctest-XXXXXX");
    if (path && !mkdtemp(path)) {
        free(path);
        return NULL;
    }
    return path;
}

static int tu_rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)type, (void)ftw;
    return remove(path);
}

void tu_rmtree(const char *dir)
{
    if (dir) nftw(dir, tu_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    int rc = (n == 0 || fwrite(data, 1, n, fp) == n) ? 0 : -1;
    if (fclose(fp) != 0) rc = -1;
    return rc;
}

void *tu_read_file(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char *buf = NULL;
    long len = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    if (len >= 0 && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1)) &&
        fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) {
        buf[len] = 0;
        *n = (size_t)len;
    }
    return buf;
}
