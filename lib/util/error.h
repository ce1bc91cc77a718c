/* error.h - formatting an error message into a caller buffer while returning its status. */
#ifndef HCI_ERROR_H
#define HCI_ERROR_H
#include <stdarg.h>
#include <stddef.h>

#if defined(__GNUC__)
__attribute__((format(printf, 3, 0)))
#endif
void hci_verrf(char *buf, size_t bufsz, const char *fmt, va_list ap);

/* Format the message into buf (when buf and bufsz are non-zero) and return status. Inline so
 * that static analysers see that the status passed is the one returned: a failure path that
 * returns hci_errf(..., HC_ERR_X, ...) is then known to return non-zero. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static inline int hci_errf(char *buf, size_t bufsz, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    hci_verrf(buf, bufsz, fmt, ap);
    va_end(ap);
    return status;
}

#define HCI_ERRLEN 512

#endif
