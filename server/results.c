/* The results of a stored batch as a response (SPEC §8): NDJSON lines with their seq, or
 * Server-Sent Events, read from the store in pages as the client takes them, then the
 * summary once the batch has ended; with follow, the stream sleeps while nothing new is
 * committed and the store's progress callback wakes it. Also §4's JSON document of an ended
 * batch, in input order. Memory stays bounded whatever the batch's size: one page at a time. */
#include "results.h"

#include "conn.h"
#include "internal.h"
#include "reply.h"
#include "results_tar.h"
#include "stored.h"
#include "stream.h"

#include "../api/errors.h"
#include "../api/jsonw.h"
#include "../workers/ipc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows read from the store per page, and the output level under which the next page is read. */
#define RESULTS_PAGE 512
#define RESULTS_LOW_WATER (64u * 1024)

static size_t results_pending(const struct request *r)
{
    return buf_len(&r->out) - r->out_off;
}

static void results_unfollow(struct request *r)
{
    struct request **pp = &r->srv->followers;
    while (*pp != NULL && *pp != r) {
        pp = &(*pp)->follow_next;
    }
    if (*pp == r) {
        *pp = r->follow_next;
    }
    r->follow_next = NULL;
}

static void results_resume(struct request *r)
{
    if (r->suspended) {
        r->suspended = 0;
        results_unfollow(r);
        conn_watch_stream(r->cn, 0, NULL, NULL);
        MHD_resume_connection(r->conn);
        r->srv->resumed = 1;
    }
}

void results_wake(struct server *s, const char *id)
{
    struct request *r = s->followers;
    while (r != NULL) {
        struct request *next = r->follow_next;
        if (strcmp(r->res.id, id) == 0) {
            results_resume(r);
        }
        r = next;
    }
}

/* ---------------------------------------------------------------- lines */

/* One stored line (LINE, LEN: {"index":...}) with its seq, as NDJSON or as an SSE event. */
static int results_row(void *arg, uint64_t seq, uint32_t index, int ok, const void *line,
                       size_t len)
{
    struct request *r = arg;
    (void)index;
    (void)ok;
    size_t start = buf_len(&r->out);
    int rc = 0;
    if (r->res.sse) {
        rc = buf_printf(&r->out, "id: %llu\nevent: result\ndata: ", (unsigned long long)seq);
    }
    rc = rc != 0 ? rc : buf_printf(&r->out, "{\"seq\":%llu,", (unsigned long long)seq);
    rc = rc != 0 ? rc : buf_add(&r->out, (const char *)line + 1, len - 1);
    rc = rc != 0 ? rc : buf_adds(&r->out, r->res.sse ? "\n\n" : "\n");
    if (rc != 0) {
        buf_truncate(&r->out, start); /* never half a line: the stream is cut before it */
        r->client_gone = 1;
        return rc;
    }
    r->res.after = seq;
    return 0;
}

/* A line that is neither a result nor the summary (SPEC §8: clients skip it) while the
 * batch runs, at most every progress_ms. */
static void results_progress(struct request *r)
{
    struct stored_live lv;
    uint64_t now = ipc_now_ns();
    if (!stored_live(r->srv, r->res.id, &lv) || lv.progress_ms == 0 ||
        now - r->res.progress_last_ns < lv.progress_ms * 1000000u) {
        return;
    }
    r->res.progress_last_ns = now;
    uint64_t done = lv.ok + lv.failed;
    double rate = lv.elapsed_s > 0 ? (double)(done - lv.done_before) / lv.elapsed_s : 0.0;
    buf_adds(&r->out, r->res.sse ? "event: progress\ndata: " : "");
    jsonw_progress(&r->out, done, lv.njobs, lv.ok, lv.failed, rate);
    buf_adds(&r->out, r->res.sse ? "\n\n" : "\n");
}

/* The summary of an ended batch, and the end of the stream. */
static void results_summary(struct request *r, uint64_t last_seq)
{
    void *line = NULL;
    size_t len = 0;
    size_t start = buf_len(&r->out);
    int rc = store_batch_blob(r->srv->store, r->res.id, STORE_PART_SUMMARY, 0, &line, &len);
    if (rc == 0 && r->res.sse) {
        rc = buf_printf(&r->out,
                        "id: %llu\nevent: summary\ndata: ", (unsigned long long)last_seq + 1);
    }
    rc = rc != 0 ? rc : buf_add(&r->out, line, len);
    rc = rc != 0 ? rc : buf_adds(&r->out, r->res.sse ? "\n\n" : "\n");
    free(line);
    if (rc != 0) {
        /* No summary (out of memory): the stream must end cut, not as if whole. */
        buf_truncate(&r->out, start);
        r->client_gone = 1;
        return;
    }
    r->done = 1;
}

/* Reads the next page of lines into r->out; at the end of what is committed, the summary
 * (ended), the end (not following), or nothing (following: the caller sleeps). */
static void results_fill(struct request *r)
{
    struct server *s = r->srv;
    uint64_t last = r->res.after;
    if (store_prefetch_results(s->store, r->owner, r->owner_len, r->res.id, 0, r->res.after,
                               RESULTS_PAGE, r->res.follow) == STORE_E_AGAIN) {
        return; /* on its way (cluster): the stream sleeps until the store reports it */
    }
    int rc = store_results_read(s->store, r->owner, r->owner_len, r->res.id, r->res.after,
                                RESULTS_PAGE, results_row, r, &last);
    if (rc != 0) {
        r->client_gone = 1; /* expired or forgotten meanwhile: a cut stream */
        return;
    }
    if (results_pending(r) > 0) {
        results_progress(r);
        return;
    }
    struct store_info info;
    rc = store_batch_get(s->store, r->owner, r->owner_len, r->res.id, &info);
    if (rc != 0) {
        r->client_gone = 1;
        return;
    }
    int ended = info.state == STORE_DONE || info.state == STORE_CANCELLED;
    if (ended && info.last_seq <= r->res.after) {
        results_summary(r, info.last_seq);
    } else if (!ended && !r->res.follow) {
        r->done = 1;
    } else {
        results_progress(r);
    }
}

/* One stored line as an element of §4's JSON document: {"result":...} without its index. */
static int results_element(void *arg, uint64_t seq, uint32_t index, int ok, const void *line,
                           size_t len)
{
    struct request *r = arg;
    (void)seq;
    (void)ok;
    const char *p = line, *comma = memchr(p, ',', len);
    if (comma == NULL) {
        return -1;
    }
    size_t start = buf_len(&r->out);
    int rc = buf_adds(&r->out, r->res.count > 0 ? ",{" : "{");
    rc = rc != 0 ? rc : buf_add(&r->out, comma + 1, len - (size_t)(comma + 1 - p));
    if (rc != 0) {
        buf_truncate(&r->out, start); /* the store goes on past it: cut the document */
        r->client_gone = 1;
        return rc;
    }
    r->res.count++;
    r->res.next_index = index + 1;
    return 0;
}

/* One stored line as tar members. */
static int results_tar_row(void *arg, uint64_t seq, uint32_t index, int ok, const void *line,
                           size_t len)
{
    struct request *r = arg;
    (void)seq;
    (void)ok;
    r->res.next_index = index + 1;
    int rc = results_tar_line(&r->writer, &r->out, index, line, len);
    r->client_gone |= rc != 0; /* the store goes on past it: cut the tar */
    return rc;
}

static const char *results_name_of(void *ud, uint64_t i)
{
    struct request *r = ud;
    return json_string_value(json_array_get(r->res.names, (size_t)i));
}

/* The tar's end: errors.ndjson and summary.json (the writer's closing members). */
static void results_tar_end(struct request *r, const char *summary, size_t len)
{
    char *text = strndup(summary, len);
    if (text == NULL || writer_end(&r->writer, &r->out, text) != 0) {
        r->client_gone = 1;
    }
    free(text);
}

/* The JSON document or the tar: results in input order, a page at a time, then the summary. */
static void results_fill_document(struct request *r)
{
    uint32_t next = r->res.next_index;
    int tar = r->res.document == 2;
    /* A tar page holds images: a few at a time. */
    if (store_prefetch_results(r->srv->store, r->owner, r->owner_len, r->res.id, 1,
                               r->res.next_index, tar ? 4 : RESULTS_PAGE, 0) == STORE_E_AGAIN) {
        return; /* on its way (cluster): the stream sleeps until the store reports it */
    }
    int rc = store_results_by_index(r->srv->store, r->owner, r->owner_len, r->res.id,
                                    r->res.next_index, tar ? 4 : RESULTS_PAGE,
                                    tar ? results_tar_row : results_element, r, &next);
    if (rc != 0) {
        r->client_gone = 1;
        return;
    }
    r->res.next_index = next;
    if (results_pending(r) > 0) {
        return;
    }
    void *line = NULL;
    size_t len = 0;
    rc = store_batch_blob(r->srv->store, r->res.id, STORE_PART_SUMMARY, 0, &line, &len);
    int have = rc == 0 && len > 12;
    const char *inner = have ? (const char *)line + 11 : "null"; /* {"summary":X} -> X */
    size_t inner_len = have ? len - 12 : 4;
    size_t start = buf_len(&r->out);
    if (rc == STORE_E_NOMEM) {
        r->client_gone = 1; /* the summary is there, but not in memory: a cut document */
    } else if (tar) {
        results_tar_end(r, inner, inner_len);
    } else {
        rc = buf_adds(&r->out, "],\"summary\":");
        rc = rc != 0 ? rc : buf_add(&r->out, inner, inner_len);
        rc = rc != 0 ? rc : buf_adds(&r->out, "}\n");
        if (rc != 0) {
            buf_truncate(&r->out, start);
            r->client_gone = 1;
        }
    }
    free(line);
    r->done = !r->client_gone;
}

/* ---------------------------------------------------------------- the response */

int results_parse_seq(const char *text, uint64_t *out)
{
    uint64_t v = 0;
    if (text == NULL || text[0] == '\0') {
        return -1;
    }
    for (const char *p = text; *p != '\0'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10) {
            return -1; /* strtoull would take "-1" as 2^64-1 and skip every line */
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static void results_client_gone(void *ud)
{
    struct request *r = ud;
    r->client_gone = 1;
    results_resume(r);
}

static ssize_t results_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct request *r = cls;
    (void)pos;
    if (r->client_gone) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (r->out_off > 0 && results_pending(r) < RESULTS_LOW_WATER) {
        /* Drop what was sent before reading more: a slow reader takes a few bytes a call,
         * and a buffer emptied only when drained would keep every byte of the batch. */
        buf_consume(&r->out, r->out_off);
        r->out_off = 0;
    }
    while (results_pending(r) < RESULTS_LOW_WATER && !r->done && !r->client_gone) {
        size_t before = results_pending(r);
        if (r->res.document) {
            results_fill_document(r);
        } else {
            results_fill(r);
        }
        if (results_pending(r) == before) {
            break; /* nothing committed yet */
        }
    }
    size_t n = stream_copy_out(r, out, max, RESULTS_LOW_WATER);
    if (n > 0) {
        return (ssize_t)n;
    }
    if (r->client_gone) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (r->done) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (r->srv->closing) {
        /* The server stops: results_cut_all has run, and MHD_stop_daemon aborts on a
         * connection that sleeps. A follower that was busy then is cut now. */
        r->client_gone = 1;
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    /* Following, and nothing new: sleep until the store commits more for this batch. */
    r->suspended = 1;
    r->follow_next = r->srv->followers;
    r->srv->followers = r;
    MHD_suspend_connection(r->conn);
    conn_watch_stream(r->cn, 1, results_client_gone, r);
    return 0;
}

enum MHD_Result results_respond(struct request *r, const char *id, uint64_t after, int follow,
                                int sse, int document)
{
    snprintf(r->res.id, sizeof r->res.id, "%s", id);
    r->res.after = after;
    r->res.follow = follow && !document;
    r->res.sse = sse && !document;
    r->res.document = document;
    static const char *const types[] = {"application/x-ndjson", "application/json",
                                        "application/x-tar"};
    const char *ctype = sse && !document ? "text/event-stream" : types[document];
    if (document == 1 && buf_adds(&r->out, "{\"results\":[") != 0) {
        return reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
    }
    if (document == 2) {
        /* Uploaded files keep their names in the tar, as in a streamed one. */
        void *names = NULL;
        size_t len = 0;
        writer_init(&r->writer, WRITER_TAR, 0, 0);
        int rc = store_batch_blob(r->srv->store, id, STORE_PART_INPUT, 0, &names, &len);
        if (rc == 0) {
            r->res.names = json_loadb(names, len, 0, NULL);
            r->writer.name_of = results_name_of;
            r->writer.ud = r;
        }
        free(names);
        if (rc == STORE_E_NOMEM || (rc == 0 && r->res.names == NULL)) {
            /* Out of memory: members named by index instead of the files' names are wrong. */
            return reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
        }
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, results_read, r, NULL);
    if (resp == NULL) {
        return MHD_NO;
    }
    char where[32 + STORE_ID_SIZE];
    snprintf(where, sizeof where, "/v1/batches/%s", id);
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    MHD_add_response_header(resp, "Content-Location", where);
    reply_add_common_headers(r, resp);
    r->status = 200;
    r->res.active = 1;
    enum MHD_Result mr = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return mr;
}

void results_cut_all(struct server *s)
{
    while (s->followers != NULL) {
        struct request *r = s->followers;
        if (r->res.active) {
            r->client_gone = 1; /* a cut stream: no summary */
        }
        results_resume(r); /* unlinks it; a sleeper's resume_fn answers without sleeping */
        if (s->followers == r) {
            results_unfollow(r);
        }
    }
}

void results_sleep(struct request *r, const char *id, results_wake_fn fn)
{
    if (id != r->res.id) {
        snprintf(r->res.id, sizeof r->res.id, "%s", id);
    }
    r->resume_fn = fn;
    r->suspended = 1;
    r->follow_next = r->srv->followers;
    r->srv->followers = r;
    MHD_suspend_connection(r->conn);
}

void results_finish(struct request *r)
{
    results_unfollow(r); /* a stream, or a request that slept (results_sleep) */
    json_decref(r->res.names);
    r->res.names = NULL;
    if (r->res.active) {
        conn_watch_stream(r->cn, 0, NULL, NULL);
        r->res.active = 0;
    }
}
