#include "error.h"
#include <stdio.h>

void hci_verrf(char *buf, size_t bufsz, const char *fmt, va_list ap)
{
    if (buf && bufsz) vsnprintf(buf, bufsz, fmt, ap);
}
