/* Allocation-failure torture (curl's torture mode), for debug builds made with
 * -DBATCHD_TORTURE=ON: every malloc, calloc, realloc, strdup and strndup of our own code
 * (the link wraps them, -Wl,--wrap) and every allocation of jansson (which api/jsonmem.c
 * routes through our malloc) is counted, and once armed the Nth one fails, once. Not in release
 * builds: there these hooks compile to nothing. Allocations inside other libraries (libmicrohttpd,
 * libpng, libjpeg) are not counted. */
#ifndef BATCHD_API_TORTURE_H
#define BATCHD_API_TORTURE_H

#ifdef BATCHD_TORTURE

/* Arms the counter: the Nth allocation of this process from now fails (with ENOMEM) and a
 * line "batchd-torture: pid P fails allocation N (what, bytes)" goes to stderr (and, with
 * BATCHD_TORTURE_STACK=1 in a sanitizer build, the stack). N <= 0
 * disarms. Re-arming restarts the count. */
void torture_arm(long n);

/* torture_arm with N given as decimal text; NULL or text that is not a number: no-op. The
 * server arms it from the X-Batchd-Fail-Alloc request header. */
void torture_arm_text(const char *n);

/* torture_arm with N from the environment variable NAME; unset: no-op. Workers arm it from
 * BATCHD_WORKER_FAIL_ALLOC_AT at the start of every chunk. */
void torture_arm_env(const char *name);

#else

#define torture_arm(n) ((void)0)
#define torture_arm_text(n) ((void)0)
#define torture_arm_env(name) ((void)0)

#endif

#endif
