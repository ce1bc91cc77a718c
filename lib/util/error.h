/* error.h - formatting an error message into a caller buffer while returning its status. */
#ifndef HCI_ERROR_H
#define HCI_ERROR_H
#include <stddef.h>

/* Format a message into buf (nothing when buf is NULL or bufsz 0). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void hci_errmsg(char *buf, size_t bufsz, const char *fmt, ...);

static inline int hci_status_ret(int status) { return status; }

/* int hci_errf(char *buf, size_t bufsz, int status, const char *fmt, ...): format the message
 * into buf and evaluate to status. A macro so that static analysers, which do not follow
 * variadic calls, see that the status passed is the one returned. */
#define hci_errf(buf, bufsz, status, ...) hci_status_ret((hci_errmsg((buf), (bufsz), __VA_ARGS__), (status)))

#define HCI_ERRLEN 512

#endif
