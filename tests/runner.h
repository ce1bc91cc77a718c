/* runner.h - the one main() of the Check suites (tests/runner.c). A suite file defines
 * tu_suite(); the runner builds the Check runner, runs it without forking (CK_FORK=no is what
 * meson sets; debuggers and sanitizers then see one process) and turns the result into the exit
 * status meson reads: 0 passed, 1 failed, 77 skipped. */
#ifndef HC_TEST_RUNNER_H
#define HC_TEST_RUNNER_H
#include <check.h>

/* The suite to run, given the program's arguments; NULL to skip (print why first). */
Suite *tu_suite(int argc, char **argv);

#endif
