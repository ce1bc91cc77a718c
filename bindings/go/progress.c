/* The C side of Go progress callbacks: hands the report to the exported Go function, with the
 * cgo.Handle the registration stored as its user pointer. */
#include "hcgo.h"
#include "_cgo_export.h"

int hcgo_progress(void *user, uint64_t done, uint64_t total)
{
    return hcgoProgress((uintptr_t)user, done, total);
}
