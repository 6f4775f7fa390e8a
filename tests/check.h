/* Tiny assertion macros for unit tests: each failure prints both values and the line, and
 * the test's main returns check_failures() so ctest sees the result. */
#ifndef BATCHD_TESTS_CHECK_H
#define BATCHD_TESTS_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int check_failed_count;
static int check_run_count;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        check_run_count++;                                                              \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
            check_failed_count++;                                                       \
        }                                                                               \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                              \
    do {                                                                                \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                 \
        check_run_count++;                                                              \
        if (check_a_ != check_b_) {                                                     \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
                    #a, #b, check_a_, check_b_);                                        \
            check_failed_count++;                                                       \
        }                                                                               \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                              \
    do {                                                                                \
        const char *check_a_ = (a), *check_b_ = (b);                                    \
        check_run_count++;                                                              \
        if (check_a_ == NULL || check_b_ == NULL || strcmp(check_a_, check_b_) != 0) {  \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,      \
                    __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                   \
                    check_b_ ? check_b_ : "(null)");                                    \
            check_failed_count++;                                                       \
        }                                                                               \
    } while (0)

/* Prints the closing line and returns the exit status for main. */
static inline int check_report(const char *name)
{
    printf("%s: %d checks, %d passed, %d failed\n", name, check_run_count,
           check_run_count - check_failed_count, check_failed_count);
    return check_failed_count == 0 ? 0 : 1;
}

#endif
