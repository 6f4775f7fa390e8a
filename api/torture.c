/* The allocator shim of the torture build (see torture.h). The link gives our objects
 * __wrap_malloc for malloc, and so on (-Wl,--wrap=malloc: only references from our own
 * objects are redirected, the libraries keep theirs); __real_malloc is the allocator
 * underneath, the sanitizer's in an ASan build. Compiled empty without BATCHD_TORTURE. */
#include "torture.h"

#ifdef BATCHD_TORTURE

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t count, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t count, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

/* Allocations left until the one that fails: 0 = disarmed, 1 = the next one fails. The
 * server has more than one thread (libmicrohttpd, sanitizers), hence the atomic. */
static atomic_long torture_left;
static atomic_long torture_at;

void torture_arm(long n)
{
    atomic_store(&torture_at, n > 0 ? n : 0);
    atomic_store(&torture_left, n > 0 ? n : 0);
}

void torture_arm_text(const char *n)
{
    char *end = NULL;
    long v = 0;

    if (n == NULL) {
        return;
    }
    errno = 0;
    v = strtol(n, &end, 10);
    if (end == n || *end != '\0' || errno != 0) {
        return;
    }
    torture_arm(v);
}

void torture_arm_env(const char *name)
{
    torture_arm_text(getenv(name));
}

/* The sanitizers' stack printer, when they are linked in (weak: NULL otherwise). */
extern void __sanitizer_print_stack_trace(void) __attribute__((weak));

/* 1 if this allocation is the one to fail; says so on stderr with write(2) only, as the
 * allocator is not there to lean on. */
static int torture_fails(const char *what, size_t bytes)
{
    long left = atomic_load(&torture_left);
    char line[160];
    int len = 0;

    while (left > 0) {
        if (atomic_compare_exchange_weak(&torture_left, &left, left - 1)) {
            break;
        }
    }
    if (left != 1) {
        return 0;
    }
    len = snprintf(line, sizeof line,
                   "batchd-torture: pid %ld fails allocation %ld (%s, %zu bytes)\n", (long)getpid(),
                   atomic_load(&torture_at), what, bytes);
    if (len > 0 && write(STDERR_FILENO, line, (size_t)len) < 0) {
        /* nothing to do: the line is a courtesy */
    }
    /* BATCHD_TORTURE_STACK=1 (sanitizer builds): where the failing allocation came from. */
    if (__sanitizer_print_stack_trace != NULL && getenv("BATCHD_TORTURE_STACK") != NULL) {
        __sanitizer_print_stack_trace();
    }
    errno = ENOMEM;
    return 1;
}

void *__wrap_malloc(size_t n)
{
    return torture_fails("malloc", n) ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t count, size_t n)
{
    return torture_fails("calloc", count * n) ? NULL : __real_calloc(count, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    return torture_fails("realloc", n) ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    size_t n = strlen(s);
    char *d = torture_fails("strdup", n + 1) ? NULL : __real_malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n + 1);
    }
    return d;
}

char *__wrap_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = torture_fails("strndup", len + 1) ? NULL : __real_malloc(len + 1);

    if (d != NULL) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

#endif
