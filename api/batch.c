/* Batch parsing: every check that refuses a whole batch before any job runs. */
#include "batch.h"

#include "buf.h"
#include "errors.h"
#include "jsonmem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(struct batch_error *e, int err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct batch_error *e, int err, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    snprintf(e->path, sizeof e->path, "%s", path ? path : "");
    e->err = err;
    return err;
}

static const char *const batch_fields[] = {"op",        "inputs", "jobs",        "params",
                                           "chunksize", "order",  "timeout_ms",  "deadline_ms",
                                           "timing",    "async",  "progress_ms", NULL};

static int known_field(const char *k)
{
    for (int i = 0; batch_fields[i] != NULL; i++) {
        if (strcmp(batch_fields[i], k) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A non-negative JSON integer, or -1. */
static long long json_uint(const json_t *v)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return -1;
    }
    return json_integer_value(v);
}

static int check_jobs(json_t *jobs, struct batch_error *e)
{
    size_t i;
    json_t *job;
    char path[64];
    json_array_foreach(jobs, i, job)
    {
        if (!json_is_object(job)) {
            snprintf(path, sizeof path, "jobs[%zu]", i);
            return fail(e, -BATCHD_E_BAD_REQUEST, path, "each job must be an object");
        }
        const char *k;
        json_t *v;
        json_object_foreach(job, k, v)
        {
            if (strcmp(k, "op") != 0 && strcmp(k, "input") != 0 && strcmp(k, "params") != 0) {
                snprintf(path, sizeof path, "jobs[%zu].%.32s", i, k);
                return fail(e, -BATCHD_E_BAD_REQUEST, path,
                            "unknown field: a job has op, input and params");
            }
        }
        if (!json_is_string(json_object_get(job, "op"))) {
            snprintf(path, sizeof path, "jobs[%zu].op", i);
            return fail(e, -BATCHD_E_BAD_REQUEST, path, "each job needs an op (a string)");
        }
        if (json_object_get(job, "input") == NULL) {
            snprintf(path, sizeof path, "jobs[%zu].input", i);
            return fail(e, -BATCHD_E_BAD_REQUEST, path, "each job needs an input");
        }
        json_t *p = json_object_get(job, "params");
        if (p != NULL && !json_is_object(p)) {
            snprintf(path, sizeof path, "jobs[%zu].params", i);
            return fail(e, -BATCHD_E_BAD_REQUEST, path, "params must be an object");
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- integer inputs, fast
 *
 * A batch of a million numbers as a jansson tree costs a million allocations and most of the
 * server's time. When the top-level "inputs" is a flat array of plain integers, it is read
 * here into an int64 array, and jansson parses the rest of the document with "inputs": []
 * in its place. Anything unusual (escapes in keys, floats, 19+ digits, bad syntax) makes
 * the scan give up, and the whole body goes through jansson as before. */

struct scan {
    const char *p, *end;
};

static void scan_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) {
        s->p++;
    }
}

/* Skips a string at s->p (on its quote). Sets *ESC when it holds a backslash. */
static int scan_string(struct scan *s, int *esc)
{
    s->p++;
    while (s->p < s->end) {
        char c = *s->p++;
        if (c == '"') {
            return 0;
        }
        if (c == '\\') {
            *esc = 1;
            if (s->p == s->end) {
                return -1;
            }
            s->p++;
        }
    }
    return -1;
}

/* Skips any value (its syntax is jansson's business later; only the nesting matters). */
static int scan_skip_value(struct scan *s)
{
    int depth = 0, esc = 0;
    while (s->p < s->end) {
        char c = *s->p;
        if (c == '"') {
            if (scan_string(s, &esc) != 0) {
                return -1;
            }
        } else if (c == '[' || c == '{') {
            depth++;
            s->p++;
        } else if (c == ']' || c == '}') {
            if (depth == 0) {
                return 0;
            }
            depth--;
            s->p++;
        } else if (c == ',' && depth == 0) {
            return 0;
        } else {
            s->p++;
        }
    }
    return depth == 0 ? 0 : -1;
}

/* Reads the integer array at s->p (on its '['). Returns the count, or -1 to give up. */
static long long scan_int_array(struct scan *s, uint64_t max, int64_t **out)
{
    size_t n = 0, cap = 0;
    int64_t *v = NULL;
    s->p++;
    scan_ws(s);
    if (s->p < s->end && *s->p == ']') {
        goto fail; /* empty: nothing to gain */
    }
    for (;;) {
        const char *q = s->p;
        int neg = q < s->end && *q == '-';
        q += neg;
        const char *d0 = q;
        int64_t x = 0;
        while (q < s->end && *q >= '0' && *q <= '9' && q - d0 < 18) {
            x = x * 10 + (*q - '0');
            q++;
        }
        size_t nd = (size_t)(q - d0);
        if (nd == 0 || (nd > 1 && *d0 == '0') ||
            (q < s->end && (*q == '.' || *q == 'e' || *q == 'E' || (*q >= '0' && *q <= '9')))) {
            goto fail;
        }
        if (n == cap) {
            if (n >= max) {
                goto fail; /* too many jobs: jansson's path says so */
            }
            cap = cap ? cap * 2 : 1024;
            int64_t *nv = realloc(v, cap * sizeof *v);
            if (nv == NULL) {
                goto fail;
            }
            v = nv;
        }
        v[n++] = neg ? -x : x;
        s->p = q;
        scan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            scan_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            break;
        }
        goto fail;
    }
    *out = v;
    return (long long)n;
fail:
    free(v);
    return -1;
}

/* Finds the top-level "inputs" of BODY and reads it when it is all integers: sets
 * [*AT, *AFTER) to the array's bytes, *VALS and *N. Returns 1, or 0 when not applicable. */
static int scan_int_inputs(const char *body, size_t len, uint64_t max, size_t *at, size_t *after,
                           int64_t **vals, uint64_t *n)
{
    struct scan s = {body, body + len};
    scan_ws(&s);
    if (s.p == s.end || *s.p != '{') {
        return 0;
    }
    s.p++;
    for (;;) {
        scan_ws(&s);
        if (s.p == s.end || *s.p != '"') {
            return 0;
        }
        const char *k0 = s.p + 1;
        int esc = 0;
        if (scan_string(&s, &esc) != 0 || esc) {
            return 0;
        }
        size_t klen = (size_t)(s.p - 1 - k0);
        scan_ws(&s);
        if (s.p == s.end || *s.p != ':') {
            return 0;
        }
        s.p++;
        scan_ws(&s);
        if (klen == 6 && memcmp(k0, "inputs", 6) == 0) {
            if (s.p == s.end || *s.p != '[') {
                return 0;
            }
            size_t a = (size_t)(s.p - body);
            long long c = scan_int_array(&s, max, vals);
            if (c < 0) {
                return 0;
            }
            *at = a;
            *after = (size_t)(s.p - body);
            *n = (uint64_t)c;
            return 1;
        }
        if (scan_skip_value(&s) != 0 || s.p == s.end || *s.p != ',') {
            return 0;
        }
        s.p++;
    }
}

/* json_loadb of BODY, with the integer inputs read aside when they are that. */
static json_t *load_body(const char *body, size_t len, const struct batch_limits *lim,
                         json_error_t *jerr, int64_t **ints, uint64_t *nints)
{
    size_t at, after;
    *ints = NULL;
    *nints = 0;
    if (!lim->multipart && len >= 64 &&
        scan_int_inputs(body, len, lim->max_jobs, &at, &after, ints, nints)) {
        size_t rest = len - after, n = at + 2 + rest;
        char *doc = malloc(n);
        json_t *root = NULL;
        if (doc != NULL) {
            memcpy(doc, body, at);
            memcpy(doc + at, "[]", 2);
            memcpy(doc + at + 2, body + after, rest);
            root = json_loadb(doc, n, JSON_REJECT_DUPLICATES, jerr);
            free(doc);
        }
        if (root != NULL) {
            return root;
        }
        free(*ints); /* the error is reported against the body as sent */
        *ints = NULL;
        *nints = 0;
    }
    return json_loadb(body, len, JSON_REJECT_DUPLICATES, jerr);
}

/* Copies the JSON text BODY to OUT with every integer literal outside strings that does not
 * fit in 64 bits replaced by {"$batchd_bigint":"<digits>"} (BATCH_BIGINT_MARK). */
static int mark_big_integers(const char *body, size_t len, struct buf *out)
{
    size_t i = 0;
    int rc = 0;
    while (i < len && rc == 0) {
        char c = body[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && body[j] != '"') {
                j += body[j] == '\\' ? 2 : 1;
            }
            j = j < len ? j + 1 : len;
            rc = buf_add(out, body + i, j - i);
            i = j;
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i + (c == '-');
            int integral = 1;
            while (j < len && strchr("0123456789.eE+-", body[j]) != NULL) {
                integral &= body[j] >= '0' && body[j] <= '9';
                j++;
            }
            size_t ndigits = j - i - (c == '-');
            int big = 0;
            if (integral && ndigits >= 19) {
                const char *lim = c == '-' ? "9223372036854775808" : "9223372036854775807";
                big = ndigits > 19 || strncmp(body + i + (c == '-'), lim, 19) > 0;
            }
            if (big) {
                rc |= buf_adds(out, BATCH_BIGINT_MARK "\"");
                rc |= buf_add(out, body + i, j - i);
                rc |= buf_adds(out, "\"}");
            } else {
                rc = buf_add(out, body + i, j - i);
            }
            i = j;
            continue;
        }
        rc = buf_add(out, &body[i], 1);
        i++;
    }
    return rc;
}

/* Reads the optional millisecond field NAME of ROOT into *MS (left as it is when absent).
 * Returns 0, or -BATCHD_E_BAD_REQUEST with E filled. */
static int read_ms(const json_t *root, const char *name, long long *ms, struct batch_error *e)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL) {
        return 0;
    }
    long long x = json_uint(v);
    if (x < 1 || x > 86400000) {
        return fail(e, -BATCHD_E_BAD_REQUEST, name, "%s must be an integer from 1 to 86400000",
                    name);
    }
    *ms = x;
    return 0;
}

/* Reads the optional boolean NAME of ROOT into *V. Returns 0 or -BATCHD_E_BAD_REQUEST. */
static int read_bool(const json_t *root, const char *name, int *v, struct batch_error *e)
{
    json_t *b = json_object_get(root, name);
    if (b != NULL && !json_is_boolean(b)) {
        return fail(e, -BATCHD_E_BAD_REQUEST, name, "%s must be true or false", name);
    }
    *v = b != NULL && json_is_true(b);
    return 0;
}

/* Refuses what jansson would misreport: an empty body (it says "wrong arguments" at line -1)
 * and raw NUL bytes, which JSON never allows (outside strings only whitespace may stand
 * between tokens, inside them control characters must be escaped) but jansson's reader
 * takes for the end of its buffer and skips. Returns 0, or -BATCHD_E_INVALID_JSON with E
 * filled and the position of the NUL in the message. */
static int check_raw_bytes(const char *body, size_t len, struct batch_error *e)
{
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) {
        i++;
    }
    if (i == len) {
        return fail(e, -BATCHD_E_INVALID_JSON, NULL,
                    "empty request body: expected a JSON batch (an object with op and inputs, "
                    "or jobs)");
    }
    const char *nul = memchr(body, '\0', len);
    if (nul == NULL) {
        return 0;
    }
    size_t at = (size_t)(nul - body);
    unsigned long long line = 1, column = 1;
    for (size_t k = 0; k < at; k++) {
        if (body[k] == '\n') {
            line++;
            column = 1;
        } else {
            column++;
        }
    }
    return fail(e, -BATCHD_E_INVALID_JSON, NULL,
                "invalid JSON at line %llu column %llu (byte %zu): a raw NUL byte is not allowed",
                line, column, at);
}

int batch_spec_parse(const char *body, size_t len, const struct batch_limits *lim,
                     struct batch_spec *out, struct batch_error *e)
{
    memset(out, 0, sizeof *out);
    memset(e, 0, sizeof *e);
    out->timeout_ms = -1;
    if (check_raw_bytes(body, len, e) != 0) {
        return e->err;
    }
    json_error_t jerr;
    memset(&jerr, 0, sizeof jerr);
    int64_t *ints = NULL;
    uint64_t nints = 0;
    const unsigned long failed = jsonmem_failures();
    json_t *root = load_body(body, len, lim, &jerr, &ints, &nints);
    int rc = 0;
    if (root == NULL && json_error_code(&jerr) == json_error_numeric_overflow) {
        /* jansson refuses integers past 64 bits; such an input is one job's overflow, not
         * a malformed batch: mark those literals and parse again. */
        struct buf marked;
        buf_init(&marked, len * 2 + 64);
        if (mark_big_integers(body, len, &marked) == 0) {
            root = json_loadb(buf_data(&marked), buf_len(&marked), JSON_REJECT_DUPLICATES, &jerr);
        }
        buf_cleanup(&marked);
    }
    /* jansson says out of memory with its code, or (its lexer failed to start) with no
     * text at all, or not at all (jsonmem.h): a document or an error from a parse that
     * lost an allocation is not the client's, and may not even be what was sent. */
    if (jsonmem_failures() != failed ||
        (root == NULL &&
         (json_error_code(&jerr) == json_error_out_of_memory || jerr.text[0] == '\0'))) {
        json_decref(root);
        free(ints);
        return fail(e, -BATCHD_E_INTERNAL, NULL, "out of memory reading the batch");
    }
    if (root == NULL) {
        return fail(e, -BATCHD_E_INVALID_JSON, NULL, "invalid JSON at line %d column %d: %s",
                    jerr.line, jerr.column, jerr.text);
    }
    if (!json_is_object(root)) {
        rc = fail(e, -BATCHD_E_BAD_REQUEST, NULL, "the batch must be a JSON object");
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        if (!known_field(k)) {
            char path[64];
            snprintf(path, sizeof path, "%.60s", k);
            rc = fail(e, -BATCHD_E_BAD_REQUEST, path, "unknown field \"%.60s\"", k);
            goto out;
        }
    }
    json_t *op = json_object_get(root, "op");
    json_t *inputs = json_object_get(root, "inputs");
    json_t *jobs = json_object_get(root, "jobs");
    json_t *params = json_object_get(root, "params");
    if (op != NULL && !json_is_string(op)) {
        rc = fail(e, -BATCHD_E_BAD_REQUEST, "op", "op must be a string");
        goto out;
    }
    if (params != NULL && !json_is_object(params)) {
        rc = fail(e, -BATCHD_E_BAD_REQUEST, "params", "params must be an object");
        goto out;
    }
    if (lim->multipart) {
        if (inputs != NULL || jobs != NULL) {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, inputs ? "inputs" : "jobs",
                      "a multipart batch takes its inputs from the file parts");
            goto out;
        }
        if (op == NULL) {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, "op", "the batch needs an op");
            goto out;
        }
        out->njobs = lim->nfiles;
    } else if (jobs != NULL) {
        if (inputs != NULL || op != NULL) {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, inputs ? "inputs" : "op",
                      "give either op and inputs, or jobs, not both");
            goto out;
        }
        if (!json_is_array(jobs)) {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, "jobs", "jobs must be an array");
            goto out;
        }
        out->njobs = json_array_size(jobs);
        if (out->njobs <= lim->max_jobs) {
            rc = check_jobs(jobs, e);
            if (rc != 0) {
                goto out;
            }
        }
    } else {
        if (inputs == NULL) {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, "inputs",
                      "the batch needs inputs (with op) or jobs");
            goto out;
        }
        if (op == NULL) {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, "op", "inputs need an op");
            goto out;
        }
        if (!json_is_array(inputs)) {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, "inputs", "inputs must be an array");
            goto out;
        }
        out->njobs = ints != NULL ? nints : json_array_size(inputs);
    }
    if (out->njobs > lim->max_jobs) {
        rc = fail(e, -BATCHD_E_TOO_MANY_JOBS, jobs ? "jobs" : "inputs",
                  "the batch has %llu jobs; the limit is %llu", (unsigned long long)out->njobs,
                  (unsigned long long)lim->max_jobs);
        goto out;
    }
    json_t *cs = json_object_get(root, "chunksize");
    if (cs != NULL && !(json_is_string(cs) && strcmp(json_string_value(cs), "auto") == 0)) {
        long long c = json_uint(cs);
        if (c < 1 || c > 1000000) {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, "chunksize",
                      "chunksize must be \"auto\" or an integer from 1 to 1000000");
            goto out;
        }
        out->chunksize = (uint64_t)c;
    }
    json_t *order = json_object_get(root, "order");
    if (order != NULL) {
        const char *o = json_string_value(order);
        if (o != NULL && strcmp(o, "input") == 0) {
            out->order = BATCH_ORDER_INPUT;
        } else if (o != NULL && strcmp(o, "completed") == 0) {
            out->order = BATCH_ORDER_COMPLETED;
        } else {
            rc = fail(e, -BATCHD_E_BAD_REQUEST, "order", "order must be \"input\" or \"completed\"");
            goto out;
        }
    }
    long long ms = -1;
    rc = read_ms(root, "timeout_ms", &ms, e);
    if (rc != 0) {
        goto out;
    }
    out->timeout_ms = ms;
    ms = 0;
    rc = read_ms(root, "deadline_ms", &ms, e);
    if (rc != 0) {
        goto out;
    }
    out->deadline_ms = (uint64_t)ms;
    ms = 0;
    rc = read_ms(root, "progress_ms", &ms, e);
    rc = rc != 0 ? rc : read_bool(root, "timing", &out->timing, e);
    rc = rc != 0 ? rc : read_bool(root, "async", &out->async, e);
    if (rc != 0) {
        goto out;
    }
    out->progress_ms = (uint64_t)ms;
    out->root = root;
    out->op = op != NULL ? json_string_value(op) : NULL;
    out->inputs = inputs;
    out->jobs = jobs;
    out->params = params;
    out->ints = ints;
    return 0;
out:
    free(ints);
    json_decref(root);
    memset(out, 0, sizeof *out);
    return rc;
}

void batch_spec_job(const struct batch_spec *s, uint64_t i, const char **op, json_t **input,
                    json_t **params)
{
    if (s->jobs != NULL) {
        json_t *job = json_array_get(s->jobs, (size_t)i);
        *op = json_string_value(json_object_get(job, "op"));
        *input = json_object_get(job, "input");
        *params = json_object_get(job, "params");
        return;
    }
    *op = s->op;
    *input = s->inputs != NULL ? json_array_get(s->inputs, (size_t)i) : NULL;
    *params = NULL;
}

int batch_spec_int_input(const struct batch_spec *s, uint64_t i, int64_t *v)
{
    if (s->ints == NULL || s->jobs != NULL || i >= s->njobs) {
        return 0;
    }
    *v = s->ints[i];
    return 1;
}

void batch_spec_cleanup(struct batch_spec *s)
{
    free(s->ints);
    json_decref(s->root);
    memset(s, 0, sizeof *s);
}
