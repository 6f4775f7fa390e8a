/* Helpers the numeric ops share: reading JSON numbers without loss, comparing an int64 with a
 * double exactly, writing results, failing with a message. Not an op itself, and no op
 * policy lives here beyond "booleans are not numbers". */
#include "internal.h"

#include "../../api/jsonw.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int num_read(const json_t *v, struct num *n)
{
    if (json_is_integer(v)) {
        n->is_int = 1;
        n->i = (int64_t)json_integer_value(v);
        n->d = (double)n->i;
        return 0;
    }
    if (json_is_real(v)) {
        n->is_int = 0;
        n->i = 0;
        n->d = json_real_value(v);
        return 0;
    }
    return -1;
}

/* I against D, exactly: converting I to double could round (past 2^53) and call unequal
 * numbers equal, so compare the integral parts as integers and then the fraction. */
static int cmp_int_double(int64_t i, double d)
{
    if (d >= 9223372036854775808.0) {
        return -1;
    }
    if (d < -9223372036854775808.0) {
        return 1;
    }
    int64_t t = (int64_t)d; /* exact: |d| < 2^63, truncated toward zero */
    if (i != t) {
        return i < t ? -1 : 1;
    }
    double frac = d - (double)t;
    if (frac > 0) {
        return -1;
    }
    return frac < 0 ? 1 : 0;
}

int num_cmp(const struct num *a, const struct num *b)
{
    if (a->is_int && b->is_int) {
        return (a->i > b->i) - (a->i < b->i);
    }
    if (!a->is_int && !b->is_int) {
        return (a->d > b->d) - (a->d < b->d);
    }
    if (a->is_int) {
        return cmp_int_double(a->i, b->d);
    }
    return -cmp_int_double(b->i, a->d);
}

const char *num_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a float";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

int num_fail(struct job_output *out, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
    return err;
}

int num_want_int(const json_t *v, const char *what, int64_t *res, struct job_output *out)
{
    if (v == NULL) {
        return num_fail(out, -BATCHD_E_INVALID_INPUT, "%s is missing", what);
    }
    if (!json_is_integer(v)) {
        return num_fail(out, -BATCHD_E_INVALID_INPUT, "%s must be an integer, not %s", what,
                        num_kind(v));
    }
    *res = (int64_t)json_integer_value(v);
    return 0;
}

int num_member_int(const json_t *obj, const char *key, int has_def, int64_t def, int64_t min,
                   int64_t max, int64_t *res, struct job_output *out)
{
    char what[64];
    snprintf(what, sizeof what, "\"%s\"", key);
    const json_t *v = json_object_get(obj, key);
    if (v == NULL && has_def) {
        *res = def;
        return 0;
    }
    int rc = num_want_int(v, what, res, out);
    if (rc != 0) {
        return rc;
    }
    if (*res < min || *res > max) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "%s must be between %lld and %lld, got %lld",
                        what, (long long)min, (long long)max, (long long)*res);
    }
    return 0;
}

/* 1 if KEY is one of the "|"-separated names in LIST. */
static int name_in_list(const char *key, const char *list)
{
    size_t klen = strlen(key);
    const char *p = list;
    while (*p != '\0') {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == klen && memcmp(p, key, len) == 0) {
            return 1;
        }
        p += len;
        if (*p == '|') {
            p++;
        }
    }
    return 0;
}

int num_want_object(const json_t *v, const char *allowed, struct job_output *out)
{
    if (!json_is_object(v)) {
        return num_fail(out, -BATCHD_E_INVALID_INPUT, "the input must be an object, not %s",
                        num_kind(v));
    }
    const char *key;
    json_t *val;
    /* The const cast is jansson's: its iteration macros take a non-const object. */
    json_object_foreach((json_t *)v, key, val)
    {
        if (!name_in_list(key, allowed)) {
            return num_fail(out, -BATCHD_E_INVALID_INPUT,
                            "unknown member \"%s\" in the input (accepted: %s)", key, allowed);
        }
    }
    return 0;
}

int num_too_large(struct job_output *out)
{
    /* A result buffer that could not grow: past its cap, or out of memory (struct buf
     * leaves ENOMEM then), which is ours and not the input's. */
    if (errno == ENOMEM) {
        return num_fail(out, -BATCHD_E_INTERNAL, "out of memory for the result");
    }
    return num_fail(out, -BATCHD_E_TOO_LARGE, "the result is larger than the result buffer");
}

int num_put_int(struct job_output *out, int64_t v)
{
    return jsonw_int(out->json, v) == 0 ? 0 : num_too_large(out);
}

int num_put_double(struct job_output *out, double d)
{
    if (!isfinite(d)) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR,
                        "the result is not a finite number (NaN or infinity)");
    }
    return jsonw_double(out->json, d) == 0 ? 0 : num_too_large(out);
}

int num_put_bool(struct job_output *out, int v)
{
    return buf_adds(out->json, v ? "true" : "false") == 0 ? 0 : num_too_large(out);
}

int num_write(struct buf *b, const struct num *n)
{
    return n->is_int ? jsonw_int(b, n->i) : jsonw_double(b, n->d);
}
