/* Tiny assertion macros for unit tests: each failure prints both values and the line, and
 * a case registry so that one case can run alone (see check_main below). The exit status of
 * the test's main says whether every check passed, so ctest sees the result. */
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

/* The case registry (libuv's test list): a test file lists its cases in one table and its
 * main hands the table to check_main, so that one case can run alone. The table sits between
 * clang-format off and on comments, so that it keeps one case a line (clang-format would
 * pack them in columns):
 *
 *     static const struct check_case cases[] = {
 *         {"repr", test_repr},
 *         {"round_trip", test_round_trip},
 *     };
 *     CHECK_MAIN("test_jsonw", cases)
 *
 *     build/test_jsonw               every case, in table order
 *     build/test_jsonw repr          only that case (several names: those, in the order given)
 *     build/test_jsonw --list        the names, one a line
 */
struct check_case {
    const char *name;
    void (*fn)(void);
};

#define CHECK_NCASES(cases) (sizeof(cases) / sizeof((cases)[0]))

/* Optional hooks around the cases that run: SETUP before the first, TEARDOWN after the last
 * (a shared fixture, e.g. a worker pool). Neither runs for --list or a bad name. */
struct check_fixture {
    void (*setup)(void);
    void (*teardown)(void);
};

static inline const struct check_case *check_find(const struct check_case *cases, size_t n,
                                                  const char *name)
{
    if (strncmp(name, "test_", 5) == 0) {
        name += 5; /* the function's name works too */
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(cases[i].name, name) == 0) {
            return &cases[i];
        }
    }
    return NULL;
}

static inline void check_run_case(const struct check_case *c)
{
    int failed_before = check_failed_count;
    c->fn();
    int failed = check_failed_count - failed_before;
    if (failed == 0) {
        printf("ok %s\n", c->name);
    } else {
        printf("not ok %s (%d failed)\n", c->name, failed);
    }
    fflush(stdout);
}

/* Runs the cases named in ARGV (all when none), or lists them for --list. Returns the exit
 * status for main: 0 when every check passed, 1 when one failed, 2 for an unknown name. */
static inline int check_main_fixture(const char *prog, const struct check_case *cases, size_t n,
                                     const struct check_fixture *fx, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n; i++) {
            printf("%s\n", cases[i].name);
        }
        return 0;
    }
    for (int a = 1; a < argc; a++) {
        if (check_find(cases, n, argv[a]) == NULL) {
            fprintf(stderr, "%s: no case named \"%s\" (--list lists them)\n", prog, argv[a]);
            return 2;
        }
    }
    if (fx != NULL && fx->setup != NULL) {
        fx->setup();
    }
    if (argc < 2) {
        for (size_t i = 0; i < n; i++) {
            check_run_case(&cases[i]);
        }
    } else {
        for (int a = 1; a < argc; a++) {
            check_run_case(check_find(cases, n, argv[a]));
        }
    }
    if (fx != NULL && fx->teardown != NULL) {
        fx->teardown();
    }
    return check_report(prog);
}

static inline int check_main(const char *prog, const struct check_case *cases, size_t n, int argc,
                             char **argv)
{
    return check_main_fixture(prog, cases, n, NULL, argc, argv);
}

#define CHECK_MAIN(prog, cases)                                                                    \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return check_main(prog, cases, CHECK_NCASES(cases), argc, argv);                           \
    }

#endif
