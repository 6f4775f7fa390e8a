/* Numeric ops on one number (SPEC §5): square, cube, sqrt, factorial, fibonacci.
 * Integers stay integers and overflow is an error, never a wrap or a silent float;
 * floats that leave the finite range are domain errors. */
#include "internal.h"

#include <math.h>

/* Reads the input as a number, refusing everything else (booleans included). */
static int want_number(const struct job_input *in, struct num *n, struct job_output *out)
{
    if (num_read(in->value, n) != 0) {
        return num_fail(out, -BATCHD_E_INVALID_INPUT, "the input must be a number, not %s",
                        num_kind(in->value));
    }
    return 0;
}

/* x^POWER for POWER 2 or 3. */
static int run_power(const struct job_input *in, struct job_output *out, int power)
{
    const char *what = power == 2 ? "square" : "cube";
    struct num n;
    int rc = want_number(in, &n, out);
    if (rc != 0) {
        return rc;
    }
    if (n.is_int) {
        int64_t r = n.i;
        for (int k = 1; k < power; k++) {
            if (__builtin_mul_overflow(r, n.i, &r)) {
                return num_fail(out, -BATCHD_E_OVERFLOW,
                                "the %s of %lld does not fit in a 64-bit integer", what,
                                (long long)n.i);
            }
        }
        return num_put_int(out, r);
    }
    double r = power == 2 ? n.d * n.d : n.d * n.d * n.d;
    if (!isfinite(r)) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "the %s of %g is too large for a double", what,
                        n.d);
    }
    return num_put_double(out, r);
}

static int run_square(const struct job_input *in, struct job_output *out)
{
    return run_power(in, out, 2);
}

static int run_cube(const struct job_input *in, struct job_output *out)
{
    return run_power(in, out, 3);
}

static int run_sqrt(const struct job_input *in, struct job_output *out)
{
    struct num n;
    int rc = want_number(in, &n, out);
    if (rc != 0) {
        return rc;
    }
    /* An integer is rounded to the nearest double first, as Python's math.sqrt does. */
    if (n.d < 0) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "sqrt of a negative number");
    }
    return num_put_double(out, sqrt(n.d));
}

static int run_factorial(const struct job_input *in, struct job_output *out)
{
    int64_t n;
    int rc = num_want_int(in->value, "the input", &n, out);
    if (rc != 0) {
        return rc;
    }
    if (n < 0 || n > 20) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR,
                        "factorial takes 0..20 (21! does not fit in a 64-bit integer), got %lld",
                        (long long)n);
    }
    int64_t r = 1;
    for (int64_t k = 2; k <= n; k++) {
        r *= k;
    }
    return num_put_int(out, r);
}

static int run_fibonacci(const struct job_input *in, struct job_output *out)
{
    int64_t n;
    int rc = num_want_int(in->value, "the input", &n, out);
    if (rc != 0) {
        return rc;
    }
    if (n < 0 || n > 92) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR,
                        "fibonacci takes 0..92 (F(93) does not fit in a 64-bit integer), "
                        "got %lld",
                        (long long)n);
    }
    /* Unsigned: the loop also computes F(n+1), and F(93) passes INT64_MAX (not UINT64_MAX). */
    uint64_t a = 0, b = 1; /* F(k), F(k+1) */
    for (int64_t k = 0; k < n; k++) {
        uint64_t next = a + b;
        a = b;
        b = next;
    }
    return num_put_int(out, (int64_t)a);
}

const struct op op_square = {
    .name = "square",
    .summary = "x squared; an integer stays an integer (overflow past 64 bits is an error)",
    .input = "number",
    .result = "number: an integer for an integer input, else a float",
    .example = "12",
    .cost_hint_ns = 50,
    .run = run_square,
};

const struct op op_cube = {
    .name = "cube",
    .summary = "x cubed; an integer stays an integer (overflow past 64 bits is an error)",
    .input = "number",
    .result = "number: an integer for an integer input, else a float",
    .example = "-3",
    .cost_hint_ns = 50,
    .run = run_cube,
};

const struct op op_sqrt = {
    .name = "sqrt",
    .summary = "square root, always a float; a negative input is a domain_error",
    .input = "number >= 0",
    .result = "float",
    .example = "2",
    .cost_hint_ns = 50,
    .run = run_sqrt,
};

const struct op op_factorial = {
    .name = "factorial",
    .summary = "n! for a JSON integer n in 0..20 (5.0 is not an integer here)",
    .input = "integer 0..20",
    .result = "integer",
    .example = "20",
    .cost_hint_ns = 50,
    .run = run_factorial,
};

const struct op op_fibonacci = {
    .name = "fibonacci",
    .summary = "the n-th Fibonacci number, F(0) = 0, F(1) = 1, for a JSON integer n in 0..92",
    .input = "integer 0..92",
    .result = "integer",
    .example = "92",
    .cost_hint_ns = 100,
    .run = run_fibonacci,
};
