#include "error.h"
#include <stdarg.h>
#include <stdio.h>

int hci_errf(char *buf, size_t bufsz, int status, const char *fmt, ...)
{
    if (buf && bufsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, bufsz, fmt, ap);
        va_end(ap);
    }
    return status;
}
