/* Result writers: NDJSON, a JSON document, tar; each turns a batch's job results into the
 * bytes of its response. Sending those bytes is stream.c's. */
#include "writer.h"

#include "../api/errors.h"
#include "../api/jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void writer_init(struct writer *w, enum writer_format fmt, int timing, uint64_t started_ns)
{
    memset(w, 0, sizeof *w);
    w->fmt = fmt;
    w->timing = timing;
    w->started_ns = started_ns;
    buf_init(&w->errors, 256u * 1024 * 1024);
}

void writer_cleanup(struct writer *w)
{
    buf_cleanup(&w->errors);
    for (size_t i = 0; i < w->names_cap; i++) {
        free(w->names[i]);
    }
    free(w->names);
    w->names = NULL;
    w->names_cap = w->names_len = 0;
}

const char *writer_content_type(enum writer_format fmt)
{
    switch (fmt) {
    case WRITER_JSON:
        return "application/json";
    case WRITER_TAR:
        return "application/x-tar";
    default:
        return "application/x-ndjson";
    }
}

int writer_begin(struct writer *w, struct buf *out)
{
    if (w->fmt == WRITER_JSON) {
        return buf_adds(out, "{\"results\":[");
    }
    return 0;
}

static double ms_since(uint64_t base, uint64_t t)
{
    return t > base ? (double)(t - base) / 1e6 : 0.0;
}

/* The body of one result object after its opening brace: "result":... or "error":{...},
 * then timing. */
static int put_result_fields(struct writer *w, struct buf *out, const struct job_result *r)
{
    int rc = 0;
    if (r->err == 0) {
        rc |= buf_adds(out, "\"result\":");
        rc |= buf_add(out, r->text, r->text_len);
    } else {
        char msg[512];
        snprintf(msg, sizeof msg, "%.*s", (int)r->text_len, r->text);
        rc |= buf_adds(out, "\"error\":");
        rc |= jsonw_error_object(out, r->err, msg, NULL);
    }
    if (w->timing && r->start_ns != 0) {
        rc |= buf_adds(out, ",\"worker\":");
        rc |= jsonw_int(out, r->worker);
        rc |= buf_printf(out, ",\"start_ms\":%.3f,\"end_ms\":%.3f",
                         ms_since(w->started_ns, r->start_ns), ms_since(w->started_ns, r->end_ns));
    }
    return rc;
}

/* ---------------------------------------------------------------- tar */

static void tar_octal(char *field, size_t width, uint64_t v)
{
    /* width-1 octal digits and a NUL, as ustar wants. */
    snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v);
}

static int tar_member(struct buf *out, const char *name, const void *data, size_t len)
{
    char h[512];
    memset(h, 0, sizeof h);
    snprintf(h, 100, "%s", name);
    tar_octal(h + 100, 8, 0644);
    tar_octal(h + 108, 8, 0);
    tar_octal(h + 116, 8, 0);
    tar_octal(h + 124, 12, len);
    tar_octal(h + 136, 12, (uint64_t)time(NULL));
    memset(h + 148, ' ', 8);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) {
        sum += (unsigned char)h[i];
    }
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
    static const char zeros[512];
    int rc = buf_add(out, h, sizeof h);
    rc |= buf_add(out, data, len);
    if (len % 512 != 0) {
        rc |= buf_add(out, zeros, 512 - len % 512);
    }
    return rc;
}

/* A member name from an uploaded file name: its last path part without the extension,
 * with anything odd replaced, so no member can climb out of the folder it is unpacked in. */
static void tar_stem(char *out, size_t outlen, const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *bs = strrchr(base, '\\');
    base = bs ? bs + 1 : base;
    size_t n = 0;
    for (const char *p = base; *p != '\0' && n + 1 < outlen; p++) {
        unsigned char c = (unsigned char)*p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.';
        out[n++] = ok ? (char)c : '_';
    }
    out[n] = '\0';
    char *dot = strrchr(out, '.');
    if (dot != NULL && dot != out) {
        *dot = '\0';
    }
    while (out[0] == '.') {
        memmove(out, out + 1, strlen(out));
    }
}

/* ---------------------------------------------------------------- member names */

/* The slot of NAME in the set (open addressing, FNV-1a), or of the empty slot it would go
 * in. The set is never full: it grows at half load. */
static size_t names_slot(const struct writer *w, const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p != '\0'; p++) {
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    }
    size_t i = (size_t)h & (w->names_cap - 1);
    while (w->names[i] != NULL && strcmp(w->names[i], name) != 0) {
        i = (i + 1) & (w->names_cap - 1);
    }
    return i;
}

static int names_has(const struct writer *w, const char *name)
{
    return w->names_cap > 0 && w->names[names_slot(w, name)] != NULL;
}

/* Adds NAME (copied). Returns 0 or -1 (out of memory). */
static int names_add(struct writer *w, const char *name)
{
    if (2 * (w->names_len + 1) > w->names_cap) {
        size_t cap = w->names_cap ? 2 * w->names_cap : 64;
        char **old = w->names;
        size_t old_cap = w->names_cap;
        w->names = calloc(cap, sizeof *w->names);
        if (w->names == NULL) {
            w->names = old;
            return -1;
        }
        w->names_cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i] != NULL) {
                w->names[names_slot(w, old[i])] = old[i];
            }
        }
        free(old);
    }
    size_t i = names_slot(w, name);
    if (w->names[i] == NULL) {
        w->names[i] = strdup(name);
        if (w->names[i] == NULL) {
            return -1;
        }
        w->names_len++;
    }
    return 0;
}

/* The longest part of a member name taken from its stem when the result has blobs (the
 * blob's name follows, in a 100-byte ustar name field). */
#define TAR_STEM_MAX 60

/* The name of member I of result R (its JSON when it has no blobs) from STEM. */
static void tar_member_name(char *name, size_t n, const char *stem, const struct job_result *r,
                            size_t i)
{
    if (r->nblobs == 0) {
        snprintf(name, n, "%.80s.json", stem);
        return;
    }
    /* "jpeg" -> 3.jpeg; a variant "small.jpeg" -> 3-small.jpeg */
    const char *bn = r->blobs[i].name;
    snprintf(name, n, "%.*s%s%.30s", TAR_STEM_MAX, stem, strchr(bn, '.') ? "-" : ".", bn);
}

/* 1 when a member of R named from STEM is already in the stream. */
static int tar_stem_taken(struct writer *w, const char *stem, const struct job_result *r)
{
    char name[100];
    for (size_t i = 0; i < (r->nblobs ? r->nblobs : 1); i++) {
        tar_member_name(name, sizeof name, stem, r, i);
        if (names_has(w, name)) {
            return 1;
        }
    }
    return 0;
}

static int tar_result(struct writer *w, struct buf *out, const struct job_result *r)
{
    if (r->err != 0) {
        int rc = buf_adds(&w->errors, "{\"index\":");
        rc |= jsonw_int(&w->errors, (int64_t)r->index);
        rc |= buf_adds(&w->errors, ",");
        rc |= put_result_fields(w, &w->errors, r);
        rc |= buf_adds(&w->errors, "}\n");
        return rc;
    }
    char stem[96];
    const char *uploaded = w->name_of ? w->name_of(w->ud, r->index) : NULL;
    if (uploaded != NULL) {
        tar_stem(stem, sizeof stem, uploaded);
    }
    if (uploaded == NULL || stem[0] == '\0') {
        snprintf(stem, sizeof stem, "%llu", (unsigned long long)r->index);
    }
    int rc = 0;
    if (w->name_of != NULL && w->names_len == 0) {
        /* The closing members' names are taken from the start. */
        rc |= names_add(w, "errors.ndjson");
        rc |= names_add(w, "summary.json");
    }
    if (w->name_of != NULL) {
        /* A name already in the stream gets the job's index: "p.png", then "p-1.png". The
         * base is cut so that the suffix survives tar_member_name's TAR_STEM_MAX: a cut
         * suffix would give the same taken name on every turn, and never end. */
        char base[96], suffix[40];
        snprintf(base, sizeof base, "%s", stem);
        for (unsigned k = 0; tar_stem_taken(w, stem, r); k++) {
            if (k == 0) {
                snprintf(suffix, sizeof suffix, "-%llu", (unsigned long long)r->index);
            } else {
                snprintf(suffix, sizeof suffix, "-%llu-%u", (unsigned long long)r->index, k);
            }
            snprintf(stem, sizeof stem, "%.*s%s", (int)(TAR_STEM_MAX - strlen(suffix)), base,
                     suffix);
        }
    }
    char name[100];
    for (size_t i = 0; i < (r->nblobs ? r->nblobs : 1); i++) {
        tar_member_name(name, sizeof name, stem, r, i);
        if (w->name_of != NULL) {
            rc |= names_add(w, name);
        }
        rc |= r->nblobs == 0 ? tar_member(out, name, r->text, r->text_len)
                             : tar_member(out, name, r->blobs[i].data, r->blobs[i].len);
    }
    return rc;
}

/* ---------------------------------------------------------------- public */

int writer_result(struct writer *w, struct buf *out, const struct job_result *r)
{
    int rc = 0;
    if (w->fmt == WRITER_NDJSON && r->err == 0 && !w->timing) {
        /* The common line: written by the worker too, in blocks (jsonw_result_line). */
        if (jsonw_result_line(out, r->index, r->text, r->text_len) != 0) {
            return -1;
        }
        w->count++;
        return 0;
    }
    switch (w->fmt) {
    case WRITER_NDJSON:
        rc |= buf_adds(out, "{\"index\":");
        rc |= jsonw_int(out, (int64_t)r->index);
        rc |= buf_adds(out, ",");
        rc |= put_result_fields(w, out, r);
        rc |= buf_adds(out, "}\n");
        break;
    case WRITER_JSON:
        rc |= buf_adds(out, w->count > 0 ? ",{" : "{");
        rc |= put_result_fields(w, out, r);
        rc |= buf_adds(out, "}");
        break;
    case WRITER_TAR:
        rc |= tar_result(w, out, r);
        break;
    }
    w->count++;
    return rc ? -1 : 0;
}

int writer_lines(struct writer *w, struct buf *out, const char *text, size_t len, uint64_t count)
{
    w->count += count;
    return buf_add(out, text, len);
}

int writer_end(struct writer *w, struct buf *out, const char *summary_json)
{
    int rc = 0;
    switch (w->fmt) {
    case WRITER_NDJSON:
        rc |= buf_printf(out, "{\"summary\":%s}\n", summary_json);
        break;
    case WRITER_JSON:
        rc |= buf_printf(out, "],\"summary\":%s}\n", summary_json);
        break;
    case WRITER_TAR: {
        static const char zeros[1024];
        rc |= tar_member(out, "errors.ndjson", buf_data(&w->errors), buf_len(&w->errors));
        rc |= tar_member(out, "summary.json", summary_json, strlen(summary_json));
        rc |= buf_add(out, zeros, sizeof zeros);
        break;
    }
    }
    return rc ? -1 : 0;
}
