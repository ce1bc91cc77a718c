/* error.h - formatting an error message into a caller buffer while returning its status. */
#ifndef HCI_ERROR_H
#define HCI_ERROR_H
#include <stddef.h>

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
int hci_errf(char *buf, size_t bufsz, int status, const char *fmt, ...);

#define HCI_ERRLEN 512

#endif
