/* The three result writers of SPEC §4: NDJSON lines, one JSON document, a tar stream. Each
 * turns results and the summary into bytes appended to an output buffer; none knows HTTP. */
#ifndef BATCHD_SERVER_WRITER_H
#define BATCHD_SERVER_WRITER_H

#include "../api/buf.h"
#include "../api/job.h"

#include <stdint.h>

enum writer_format { WRITER_NDJSON, WRITER_JSON, WRITER_TAR };

struct writer {
    enum writer_format fmt;
    int timing;             /* add worker, start_ms, end_ms to each result */
    uint64_t started_ns;    /* the batch's start, for timing */
    uint64_t count;         /* results written */
    struct buf errors;      /* tar: errors.ndjson, written last */
    /* tar: the uploaded file name of job I (borrowed), or NULL; set for uploads only. */
    const char *(*name_of)(void *ud, uint64_t i);
    void *ud;
    /* tar with uploaded names: the member names written so far (a hash set), so that two
     * uploads of one name, or one named like the closing members, never share a member
     * name (tar x would keep only the last). Private. */
    char **names;
    size_t names_cap, names_len;
};

/* Prepares a writer (the caller sets name_of/ud afterwards if wanted). */
void writer_init(struct writer *w, enum writer_format fmt, int timing, uint64_t started_ns);
void writer_cleanup(struct writer *w);

/* What goes before the first result (the JSON document's opening). Returns 0 or -1. */
int writer_begin(struct writer *w, struct buf *out);

/* One result. Returns 0 or -1 (output cap reached). */
int writer_result(struct writer *w, struct buf *out, const struct job_result *r);

/* The summary and whatever closes the stream. SUMMARY_JSON is the summary object's text. */
/* Appends COUNT results already written as NDJSON lines (NDJSON writers only). */
int writer_lines(struct writer *w, struct buf *out, const char *text, size_t len, uint64_t count);

int writer_end(struct writer *w, struct buf *out, const char *summary_json);

/* The Content-Type each writer produces. */
const char *writer_content_type(enum writer_format fmt);

#endif
