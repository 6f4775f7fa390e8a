/* Private to workers/: the op descriptors that ops.c lists in its table, and the small
 * helpers the numeric ops share (num_common.c: reading JSON numbers exactly, writing
 * results, failing with a message). Nothing outside workers/ includes this header. */
#ifndef BATCHD_WORKERS_OPS_INTERNAL_H
#define BATCHD_WORKERS_OPS_INTERNAL_H

#include "../../api/errors.h"
#include "ops.h"

#include <jansson.h>
#include <stdint.h>

/* num_arith.c */
extern const struct op op_square;
extern const struct op op_cube;
extern const struct op op_sqrt;
extern const struct op op_factorial;
extern const struct op op_fibonacci;
/* num_prime.c */
extern const struct op op_is_prime;
extern const struct op op_prime_factors;
extern const struct op op_collatz_steps;
/* num_array.c */
extern const struct op op_sum;
extern const struct op op_mean;
extern const struct op op_stats;
extern const struct op op_sort;
/* num_cpu.c */
extern const struct op op_cpu_loop;
extern const struct op op_sleep;
extern const struct op op_monte_carlo_pi;
/* img_op.c */
extern const struct op op_image;
/* lua_op.c */
extern const struct op op_lua;

/* A JSON number read without loss: integers stay int64, floats stay doubles. D is always the
 * value as a double (rounded for integers past 2^53), for the ops that compute in floats. */
struct num {
    int is_int;
    int64_t i;
    double d;
};

/* Reads V into *N. Returns 0, or -1 when V is not a JSON number (booleans are not). */
int num_read(const json_t *v, struct num *n);

/* Compares two numbers exactly, also an int64 against a double: <0, 0 or >0. */
int num_cmp(const struct num *a, const struct num *b);

/* What V is, for messages: "a string", "a boolean", "an integer", ... Returns a static
 * string. */
const char *num_kind(const json_t *v);

/* Sets OUT's message from FMT and returns ERR (a negative per-job code), so that run() can
 * end with `return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "...")`. */
int num_fail(struct job_output *out, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads V as a JSON integer into *RES. Returns 0, or -BATCHD_E_INVALID_INPUT with OUT's
 * message set when V is anything else (a float with an integral value like 5.0 included).
 * WHAT names the value in the message ("the input", "\"n\""). */
int num_want_int(const json_t *v, const char *what, int64_t *res, struct job_output *out);

/* Reads member KEY of object OBJ as num_want_int does, into *RES; a missing member gives DEF
 * when HAS_DEF, else invalid_input. Values outside MIN..MAX give domain_error. */
int num_member_int(const json_t *obj, const char *key, int has_def, int64_t def, int64_t min,
                   int64_t max, int64_t *res, struct job_output *out);

/* Checks that V is an object whose keys are all in ALLOWED ("n|x"). Returns 0 or
 * -BATCHD_E_INVALID_INPUT with OUT's message set. */
int num_want_object(const json_t *v, const char *allowed, struct job_output *out);

/* Write a result into out->json: an integer, a double (NaN and infinities fail with
 * domain_error), a boolean. Return 0, or a negative per-job code with OUT's message set when
 * the result does not fit in the output buffer (too_large). */
int num_put_int(struct job_output *out, int64_t v);
int num_put_double(struct job_output *out, double d);
int num_put_bool(struct job_output *out, int v);

/* Writes N as JSON (an integer or a shortest-form float) into B. Returns as buf_add. */
int num_write(struct buf *b, const struct num *n);

/* The error run() returns when out->json refused to grow (the result is over its cap). */
int num_too_large(struct job_output *out);

#endif
