/* timing.h - the clock and the median of the benchmark programs (header only). */
#ifndef HC_TOOLS_TIMING_H
#define HC_TOOLS_TIMING_H
#include <stdlib.h>
#include <time.h>

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int timing_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* the median of v[0..n) (sorts v) */
static inline double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, timing_cmp);
    return v[n / 2];
}

#endif
