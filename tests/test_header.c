/* test_header.c - the public headers compile on their own as pedantic C11 and, through
 * test_header_cxx.cpp, as C++11, and the library a program runs against is the one its header
 * describes: hc_version_*() equal the HC_VERSION_* macros, which equal meson.build's version (0.2).
 * Exit status 0 = pass. */
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
    /* this release: 0.2 (meson.build's project version, the header's macros, the library) */
    check(HC_VERSION_MAJOR == 0 && HC_VERSION_MINOR == 2, "HC_VERSION_MAJOR.MINOR == 0.2");
    check(hc_version_number() / 100 == 2, "the library is 0.2");
#ifdef HC_PROJECT_VERSION
    check(strcmp(HC_VERSION_STRING, HC_PROJECT_VERSION) == 0, "HC_VERSION_STRING == meson.build's version");
#endif
    /* 0.2's additions: the status, and the progress members appended to hc_model_params */
    check(HC_ERR_ABORTED == -25 && strcmp(hc_status_name(HC_ERR_ABORTED), "HC_ERR_ABORTED") == 0, "HC_ERR_ABORTED");
    check(offsetof(hc_model_params, progress) >= offsetof(hc_model_params, errbuf_size) + sizeof(uint64_t) &&
              offsetof(hc_model_params, progress_user) > offsetof(hc_model_params, progress),
          "hc_model_params: progress members at the end");
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
