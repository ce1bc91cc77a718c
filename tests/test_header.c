/* test_header.c - the public headers compile on their own as pedantic C11 and, through
 * test_header_cxx.cpp, as C++11, and the library a program runs against is the one its header
 * describes: hc_version_*() equal the HC_VERSION_* macros. Exit status 0 = pass. */
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

int main(void)
{
    check(hc_version_number() == (uint32_t)HC_VERSION_NUMBER, "hc_version_number() == HC_VERSION_NUMBER");
    check(strcmp(hc_version_string(), HC_VERSION_STRING) == 0, "hc_version_string() == HC_VERSION_STRING");
    char mmp[32];
    snprintf(mmp, sizeof mmp, "%d.%d.%d", HC_VERSION_MAJOR, HC_VERSION_MINOR, HC_VERSION_PATCH);
    check(strcmp(mmp, HC_VERSION_STRING) == 0, "HC_VERSION_STRING == MAJOR.MINOR.PATCH");
    check(HC_VERSION_NUMBER == HC_VERSION_MAJOR * 10000 + HC_VERSION_MINOR * 100 + HC_VERSION_PATCH,
          "HC_VERSION_NUMBER encoding");
    /* size-versioned structs: struct_size first, filled by the init functions */
    check(offsetof(hc_model_params, struct_size) == 0 && offsetof(hc_ctx_params, struct_size) == 0 &&
              offsetof(hc_save_params, struct_size) == 0 && offsetof(hc_model_info, struct_size) == 0,
          "struct_size is the first member");
    hc_ctx_params cp;
    check(hc_ctx_params_init(&cp, sizeof cp) == HC_OK && cp.struct_size == sizeof cp, "hc_ctx_params_init");
    hc_model_params mp;
    check(hc_model_params_init(&mp, sizeof mp) == HC_OK && mp.struct_size == sizeof mp, "hc_model_params_init");
    /* every status has a name and a text, unknown codes too */
    for (hc_status s = HC_ERR_INTERNAL; s <= HC_OK; s++)
        check(hc_strerror(s) != NULL && hc_status_name(s) != NULL, "hc_strerror / hc_status_name never NULL");
    check(strcmp(hc_status_name(HC_ERR_LIMIT), "HC_ERR_LIMIT") == 0, "hc_status_name(HC_ERR_LIMIT)");
#ifdef __cplusplus
    const char *lang = "C++";
#else
    const char *lang = "C";
#endif
    printf("header test (%s): %s, library %s\n", lang, failures ? "FAILED" : "ok", hc_version_string());
    return failures ? 1 : 0;
}
