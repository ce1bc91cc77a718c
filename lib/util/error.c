#include "error.h"
#include <stdarg.h>
#include <stdio.h>

void hci_errmsg(char *buf, size_t bufsz, const char *fmt, ...)
{
    if (!buf || !bufsz) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, bufsz, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized): va_start is just above
    va_end(ap);
}
