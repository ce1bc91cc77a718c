/* runner.c - main() for every Check suite: see runner.h. */
#include <stdlib.h>
#include "runner.h"

int main(int argc, char **argv)
{
    Suite *s = tu_suite(argc, argv);
    if (!s) return 77;
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
