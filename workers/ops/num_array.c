/* Ops over an array of numbers (SPEC §5): sum, mean, stats, sort. Sums of integers are exact
 * (128-bit accumulator, overflow only if the final sum leaves int64); sums with floats are
 * compensated (Neumaier, as Python 3.12's sum): [0.1, 0.2, -0.3] gives 2.7755575615628914e-17
 * like math.fsum, where a naive loop gives 5.551115123125783e-17.
 * Results keep JSON integer/float types as SPEC §4 asks. */
#include "internal.h"

#include "../../api/jsonw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Fails with invalid_input unless V is an array of numbers. */
static int want_numbers(const json_t *v, struct job_output *out)
{
    if (!json_is_array(v)) {
        return num_fail(out, -BATCHD_E_INVALID_INPUT,
                        "the input must be an array of numbers, not %s", num_kind(v));
    }
    size_t n = json_array_size(v);
    for (size_t k = 0; k < n; k++) {
        const json_t *e = json_array_get(v, k);
        if (!json_is_number(e)) {
            return num_fail(out, -BATCHD_E_INVALID_INPUT,
                            "element %zu of the input must be a number, not %s", k, num_kind(e));
        }
    }
    return 0;
}

/* A Neumaier (improved Kahan) running sum. */
struct fsum {
    double s, c;
};

static void fsum_add(struct fsum *f, double x)
{
    double t = f->s + x;
    if (fabs(f->s) >= fabs(x)) {
        f->c += (f->s - t) + x;
    } else {
        f->c += (x - t) + f->s;
    }
    f->s = t;
}

/* The sum of an array of numbers (checked by want_numbers): integers exactly in *ISUM, and
 * everything as a double in *FSUM, with each element multiplied by SCALE (a power of two, so
 * that a sum past DBL_MAX can be redone smaller without changing any rounding). *NFLOAT
 * counts the floats. */
static void sum_array(const json_t *v, double scale, __int128 *isum, double *dsum, size_t *nfloat)
{
    struct fsum f = {0, 0};
    __int128 is = 0;
    size_t nf = 0;
    size_t n = json_array_size(v);
    for (size_t k = 0; k < n; k++) {
        const json_t *e = json_array_get(v, k);
        if (json_is_integer(e)) {
            is += (int64_t)json_integer_value(e);
        } else {
            fsum_add(&f, json_real_value(e) * scale);
            nf++;
        }
    }
    /* The integers join the float sum last, exactly: as a rounded high part plus the rest. */
    double hi = (double)is;
    double lo = (double)(is - (__int128)hi);
    fsum_add(&f, hi * scale);
    fsum_add(&f, lo * scale);
    *isum = is;
    *dsum = f.s + f.c;
    *nfloat = nf;
}

/* The mean of a non-empty array of numbers, rescaled when the plain sum overflows.
 * Returns 0 or a domain_error. */
static int mean_of(const json_t *v, double *mean, struct job_output *out)
{
    __int128 is;
    double s;
    size_t nf;
    size_t n = json_array_size(v);
    sum_array(v, 1.0, &is, &s, &nf);
    if (isfinite(s)) {
        *mean = s / (double)n;
        return 0;
    }
    sum_array(v, 0x1p-64, &is, &s, &nf);
    *mean = s / (double)n * 0x1p64;
    if (!isfinite(*mean)) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "the mean is not a finite number");
    }
    return 0;
}

static int run_sum(const struct job_input *in, struct job_output *out)
{
    int rc = want_numbers(in->value, out);
    if (rc != 0) {
        return rc;
    }
    __int128 is;
    double s;
    size_t nf;
    sum_array(in->value, 1.0, &is, &s, &nf);
    if (nf == 0) {
        if (is > INT64_MAX || is < INT64_MIN) {
            return num_fail(out, -BATCHD_E_OVERFLOW,
                            "the sum of the integers does not fit in a 64-bit integer");
        }
        return num_put_int(out, (int64_t)is);
    }
    if (!isfinite(s)) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "the sum overflows a double (infinity)");
    }
    return num_put_double(out, s);
}

static int run_mean(const struct job_input *in, struct job_output *out)
{
    int rc = want_numbers(in->value, out);
    if (rc != 0) {
        return rc;
    }
    if (json_array_size(in->value) == 0) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "the mean of an empty array is undefined");
    }
    double mean;
    rc = mean_of(in->value, &mean, out);
    if (rc != 0) {
        return rc;
    }
    return num_put_double(out, mean);
}

/* Population standard deviation around MEAN by the corrected two-pass formula
 * (sum d^2 - (sum d)^2 / n) / n, the second term cancelling the rounding of MEAN. Values are
 * scaled by a power of two so that max |x| is near 1: no square overflows or underflows, and
 * no rounding changes. */
static double pstdev_of(const json_t *v, double mean, double maxabs)
{
    int e = 0;
    frexp(maxabs, &e);
    /* Clamped so that the scale itself stays a finite power of two. */
    e = e < -1000 ? -1000 : e > 1000 ? 1000 : e;
    double s = ldexp(1.0, -e);
    double ms = mean * s;
    struct fsum sd = {0, 0}, sd2 = {0, 0};
    size_t n = json_array_size(v);
    for (size_t k = 0; k < n; k++) {
        struct num x;
        num_read(json_array_get(v, k), &x);
        double d = x.d * s - ms;
        fsum_add(&sd, d);
        fsum_add(&sd2, d * d);
    }
    double sumd = sd.s + sd.c;
    double var = (sd2.s + sd2.c - sumd * sumd / (double)n) / (double)n;
    if (var < 0) {
        var = 0; /* rounding, for (near-)constant arrays */
    }
    return sqrt(var) / s;
}

static int run_stats(const struct job_input *in, struct job_output *out)
{
    int rc = want_numbers(in->value, out);
    if (rc != 0) {
        return rc;
    }
    size_t n = json_array_size(in->value);
    if (n == 0) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "the stats of an empty array are undefined");
    }
    struct num lo, hi;
    num_read(json_array_get(in->value, 0), &lo);
    hi = lo;
    double maxabs = 0;
    for (size_t k = 0; k < n; k++) {
        struct num x;
        num_read(json_array_get(in->value, k), &x);
        if (num_cmp(&x, &lo) < 0) {
            lo = x;
        }
        if (num_cmp(&x, &hi) > 0) {
            hi = x;
        }
        if (fabs(x.d) > maxabs) {
            maxabs = fabs(x.d);
        }
    }
    double mean;
    rc = mean_of(in->value, &mean, out);
    if (rc != 0) {
        return rc;
    }
    double sd = maxabs == 0 ? 0.0 : pstdev_of(in->value, mean, maxabs);
    if (!isfinite(sd)) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "the stddev is not a finite number");
    }
    struct buf *b = out->json;
    int err = buf_printf(b, "{\"count\":%zu,\"min\":", n);
    err |= num_write(b, &lo);
    err |= buf_adds(b, ",\"max\":");
    err |= num_write(b, &hi);
    err |= buf_adds(b, ",\"mean\":");
    err |= jsonw_double(b, mean);
    err |= buf_adds(b, ",\"stddev\":");
    err |= jsonw_double(b, sd);
    err |= buf_adds(b, "}");
    return err == 0 ? 0 : num_too_large(out);
}

/* Reads params.reverse (absent = false). Returns 0, or -1 when it is not a boolean. */
static int sort_reverse(const json_t *params, int *reverse)
{
    const json_t *r = json_is_object(params) ? json_object_get(params, "reverse") : NULL;
    *reverse = 0;
    if (r == NULL) {
        return 0;
    }
    if (!json_is_boolean(r)) {
        return -1;
    }
    *reverse = json_is_true(r);
    return 0;
}

static int validate_sort(const json_t *params, char *msg, size_t msglen, char *path, size_t pathlen)
{
    int reverse;
    if (sort_reverse(params, &reverse) != 0) {
        snprintf(msg, msglen, "reverse must be true or false");
        snprintf(path, pathlen, "reverse");
        return -BATCHD_E_INVALID_PARAM;
    }
    return 0;
}

/* An element to sort: its value and its position, so that equal values (1 and 1.0) keep
 * their input order in both directions. */
struct sort_item {
    struct num v;
    size_t idx;
};

static int cmp_up(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;
    int c = num_cmp(&x->v, &y->v);
    return c != 0 ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_down(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;
    int c = num_cmp(&y->v, &x->v);
    return c != 0 ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static int run_sort(const struct job_input *in, struct job_output *out)
{
    int reverse;
    if (sort_reverse(in->params, &reverse) != 0) {
        return num_fail(out, -BATCHD_E_INVALID_INPUT, "params.reverse must be true or false");
    }
    int rc = want_numbers(in->value, out);
    if (rc != 0) {
        return rc;
    }
    size_t n = json_array_size(in->value);
    struct sort_item *items = NULL;
    if (n > 0) {
        items = malloc(n * sizeof *items);
        if (items == NULL) {
            return num_fail(out, -BATCHD_E_TOO_LARGE, "no memory to sort %zu numbers", n);
        }
    }
    for (size_t k = 0; k < n; k++) {
        num_read(json_array_get(in->value, k), &items[k].v);
        items[k].idx = k;
    }
    if (n > 1) {
        qsort(items, n, sizeof *items, reverse ? cmp_down : cmp_up);
    }
    int err = buf_adds(out->json, "[");
    for (size_t k = 0; k < n && err == 0; k++) {
        if (k > 0) {
            err = buf_adds(out->json, ",");
        }
        if (err == 0) {
            err = num_write(out->json, &items[k].v);
        }
    }
    if (err == 0) {
        err = buf_adds(out->json, "]");
    }
    free(items);
    return err == 0 ? 0 : num_too_large(out);
}

static const struct op_param sort_params[] = {
    {.name = "reverse",
     .type = OP_PARAM_BOOL,
     .min = 1,
     .max = 0,
     .def = "false",
     .help = "sort descending instead of ascending"},
    {.name = NULL},
};

const struct op op_sum = {
    .name = "sum",
    .summary = "sum; all integers give an exact integer (overflow past 64 bits is an error), "
               "any float gives a compensated float sum; the sum of [] is 0",
    .input = "array of numbers",
    .result = "number",
    .example = "[1, 2, 3.5]",
    .cost_hint_ns = 200,
    .run = run_sum,
};

const struct op op_mean = {
    .name = "mean",
    .summary = "arithmetic mean, always a float; an empty array is a domain_error",
    .input = "array of numbers, not empty",
    .result = "float",
    .example = "[1, 2, 3, 4]",
    .cost_hint_ns = 200,
    .run = run_mean,
};

const struct op op_stats = {
    .name = "stats",
    .summary = "count, min, max (as given: integers stay integers), mean and population "
               "standard deviation",
    .input = "array of numbers, not empty",
    .result = "{\"count\", \"min\", \"max\", \"mean\", \"stddev\"}",
    .example = "[2, 4, 4, 4, 5, 5, 7, 9]",
    .cost_hint_ns = 400,
    .run = run_stats,
};

const struct op op_sort = {
    .name = "sort",
    .summary = "the numbers in ascending order (params.reverse: descending), stable, each kept "
               "an integer or a float as given",
    .input = "array of numbers",
    .result = "array of numbers",
    .example = "[3, 1.5, -2, 1]",
    .params = sort_params,
    .cost_hint_ns = 400,
    .validate_params = validate_sort,
    .run = run_sort,
};
