/* A batch's life on the HTTP side: turn the uploaded batch into a dispatcher batch, pick the
 * result writer from Accept, and stream results as they come: the response's reader copies
 * what is buffered, suspends the connection when there is nothing, and the dispatcher's
 * result callback resumes it. A stream whose client reads slowly pauses its own batch. */
#include "stream.h"

#include "conn.h"
#include "internal.h"
#include "reply.h"

#include "../api/errors.h"
#include "../api/job.h"
#include "../api/jsonw.h"
#include "../api/outname.h"
#include "../workers/ipc.h"
#include "../workers/ops/ops.h"
#include "log.h"
#include "observe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Output bytes buffered for one client before its batch stops being fed, and the level at
 * which it is fed again. */
#define STREAM_HIGH_WATER (1u << 20)
#define STREAM_LOW_WATER (256u * 1024)

static size_t stream_pending(const struct request *r)
{
    return buf_len(&r->out) - r->out_off;
}

static void stream_wake(struct request *r)
{
    if (r->suspended) {
        r->suspended = 0;
        conn_watch_stream(r->cn, 0, NULL, NULL);
        MHD_resume_connection(r->conn);
        /* In external-epoll mode a resume takes effect only in the next MHD_run. */
        r->srv->resumed = 1;
    }
}

/* ---------------------------------------------------------------- dispatcher callbacks */

static void stream_job_at(void *ud, uint64_t i, struct dispatch_job *job)
{
    struct request *r = ud;
    prepared_job_at(&r->prep, i, job);
}

/* Output of R was lost (its buffer could not grow): the stream can no longer be whole, so it
 * ends with an error at once and the client sees a cut stream (no summary line, SPEC §3),
 * never one with a line missing or half written. The batch is cancelled when the request
 * finishes (stream_finish), not here inside the dispatcher's callback. */
static void stream_break(struct request *r, const char *what)
{
    log_event("error", "stream", "request_id", r->id, "message", what, NULL);
    r->client_gone = 1;
    stream_wake(r);
}

/* SPEC §8's progress line, at most every progress_ms, in an NDJSON stream. */
static void stream_progress(struct request *r)
{
    uint64_t every = r->prep.spec.progress_ms, now = ipc_now_ns();
    if (every == 0 || r->writer.fmt != WRITER_NDJSON ||
        now - r->progress_last_ns < every * 1000000u) {
        return;
    }
    r->progress_last_ns = now;
    uint64_t done = r->n_ok + r->n_failed, total = r->prep.spec.njobs;
    double secs = (double)(now - r->started_ns) / 1e9;
    double rate = secs > 0 ? (double)done / secs : 0.0;
    int rc = jsonw_progress(&r->out, done, total, r->n_ok, r->n_failed, rate);
    rc |= buf_adds(&r->out, "\n");
    if (rc != 0) {
        stream_break(r, "output buffer full");
    }
}

static void stream_on_result(void *ud, const struct job_result *res)
{
    struct request *r = ud;
    observe_job(r->srv, &r->prep, res);
    r->n_ok += res->err == 0;
    r->n_failed += res->err != 0;
    if (writer_result(&r->writer, &r->out, res) != 0) {
        stream_break(r, "output buffer full");
    }
    stream_progress(r);
    if (r->batch != NULL && stream_pending(r) > STREAM_HIGH_WATER) {
        dispatch_batch_set_paused(r->batch, 1);
    }
    stream_wake(r);
}

static void stream_on_block(void *ud, uint64_t index, uint64_t count, const char *text, size_t len,
                            uint64_t busy_ns)
{
    struct request *r = ud;
    observe_block(r->srv, &r->prep, index, count, busy_ns);
    r->n_ok += count;
    if (writer_lines(&r->writer, &r->out, text, len, count) != 0) {
        stream_break(r, "output buffer full");
    }
    stream_progress(r);
    if (r->batch != NULL && stream_pending(r) > STREAM_HIGH_WATER) {
        dispatch_batch_set_paused(r->batch, 1);
    }
    stream_wake(r);
}

static void stream_on_done(void *ud, const struct dispatch_summary *sum)
{
    struct request *r = ud;
    struct buf b;
    int rc = 0;
    buf_init(&b, 4096);
    rc |= buf_printf(
        &b,
        "{\"jobs\":%llu,\"ok\":%llu,\"failed\":%llu,\"order\":\"%s\",\"chunksize\":%zu,"
        "\"workers\":%d,\"elapsed_ms\":",
        (unsigned long long)sum->jobs, (unsigned long long)sum->ok, (unsigned long long)sum->failed,
        r->prep.spec.order == BATCH_ORDER_COMPLETED ? "completed" : "input", sum->chunksize,
        sum->workers);
    rc |= jsonw_double(&b, (double)((ipc_now_ns() - r->started_ns) / 1000) / 1000.0);
    rc |= buf_adds(&b, ",\"busy_ms\":");
    rc |= jsonw_double(&b, (double)(sum->busy_ns / 1000) / 1000.0);
    if (sum->deadline_hit) {
        rc |= buf_adds(&b, ",\"deadline_exceeded\":true");
    }
    if (r->cancelled) {
        rc |= buf_adds(&b, ",\"cancelled\":true");
    }
    /* The id is base32 (store_id_make) or empty: nothing in it to escape. */
    rc |= buf_adds(&b, ",\"batch\":\"");
    rc |= buf_adds(&b, r->batch_id);
    rc |= buf_adds(&b, "\"");
    rc |= buf_adds(&b, ",\"request_id\":");
    rc |= jsonw_cstr(&b, r->id);
    rc |= buf_adds(&b, "}");
    if (rc == 0) {
        rc = writer_end(&r->writer, &r->out, buf_data(&b));
    }
    buf_cleanup(&b);
    r->batch = NULL; /* the dispatcher frees it on return */
    if (rc != 0) {
        stream_break(r, "out of memory writing the summary");
        return;
    }
    r->done = 1;
    stream_wake(r);
}

/* ---------------------------------------------------------------- the response body */

/* The client socket of R (UD) hung up while its stream was suspended (conn.c's watch). */
static void stream_client_gone(void *ud)
{
    struct request *r = ud;
    r->client_gone = 1;
    if (r->batch != NULL) {
        dispatch_batch_cancel(r->batch);
        r->batch = NULL;
    }
    stream_wake(r);
}

size_t stream_copy_out(struct request *r, char *out, size_t max, size_t low_water)
{
    size_t n = stream_pending(r);
    n = n > max ? max : n;
    if (n == 0) {
        return 0;
    }
    memcpy(out, buf_data(&r->out) + r->out_off, n);
    r->out_off += n;
    r->bytes_out += n;
    if (r->out_off == buf_len(&r->out)) {
        buf_reset(&r->out);
        r->out_off = 0;
    } else if (r->out_off > low_water && r->out_off >= stream_pending(r)) {
        /* Move the rest down only when it is no longer than what was read: each byte is
         * then moved at most once on average (moving up to 1 MiB per 64 KiB read cost a
         * fifth of the server's time on a 1M-job batch), and a buffer refilled before it
         * is ever empty does not grow to the whole body. */
        buf_consume(&r->out, r->out_off);
        r->out_off = 0;
    }
    return n;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct request *r = cls;
    (void)pos;
    if (r->client_gone) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = stream_copy_out(r, out, max, STREAM_LOW_WATER);
    if (n > 0) {
        if (r->batch != NULL && stream_pending(r) < STREAM_LOW_WATER) {
            /* May deliver more results into r->out right away. */
            dispatch_batch_set_paused(r->batch, 0);
        }
        return (ssize_t)n;
    }
    if (r->done) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Nothing yet: sleep until the dispatcher has something (returning 0 without suspending
     * would spin). Watch the socket meanwhile, so a client that leaves cancels the batch. */
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
    conn_watch_stream(r->cn, 1, stream_client_gone, r);
    return 0;
}

/* ---------------------------------------------------------------- start and end */

/* Picks the writer from Accept. Returns 0, or -1 when nothing we write is acceptable. */
static int stream_negotiate(const char *accept, enum writer_format *fmt)
{
    *fmt = WRITER_NDJSON;
    if (accept == NULL || accept[0] == '\0') {
        return 0;
    }
    /* The first type we produce that the client lists wins; q-values are not weighed. */
    static const struct {
        const char *type;
        enum writer_format fmt;
    } kinds[] = {
        {"application/x-ndjson", WRITER_NDJSON}, {"application/ndjson", WRITER_NDJSON},
        {"application/jsonl", WRITER_NDJSON},    {"application/json", WRITER_JSON},
        {"application/x-tar", WRITER_TAR},       {"*/*", WRITER_NDJSON},
        {"application/*", WRITER_NDJSON},
    };
    const char *best = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *p = strcasestr(accept, kinds[i].type);
        while (p != NULL) {
            size_t n = strlen(kinds[i].type);
            int starts = p == accept || p[-1] == ',' || p[-1] == ' ';
            int ends = p[n] == '\0' || p[n] == ',' || p[n] == ';' || p[n] == ' ';
            if (starts && ends) {
                break;
            }
            p = strcasestr(p + 1, kinds[i].type);
        }
        if (p != NULL && (best == NULL || p < best)) {
            best = p;
            *fmt = kinds[i].fmt;
        }
    }
    return best != NULL ? 0 : -1;
}

/* The debug line of a batch that starts: its size and the chunk size it runs with. */
static void stream_log_accepted(const struct request *r)
{
    char jobs[24], bytes[24], chunk[24];
    snprintf(jobs, sizeof jobs, "%llu", (unsigned long long)r->prep.spec.njobs);
    snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)upload_bytes(r->upload));
    snprintf(chunk, sizeof chunk, "%zu", dispatch_batch_chunksize(r->batch));
    log_event("debug", "batch_accepted", "request_id", r->id, "batch", r->batch_id, "op",
              r->prep.spec.op ? r->prep.spec.op : "(per job)", "jobs", jobs, "bytes_in", bytes,
              "chunksize", chunk, "order",
              r->prep.spec.order == BATCH_ORDER_COMPLETED ? "completed" : "input", "format",
              writer_content_type(r->writer.fmt), NULL);
}

/* FMT is picked from Accept for R's prepared batch. Returns 0, or -1 with the refusal
 * queued (its result in *MR). */
static int stream_prepare(struct request *r, enum writer_format *fmt, enum MHD_Result *mr)
{
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
    if (stream_negotiate(accept, fmt) != 0) {
        *mr = reply_error(r, -BATCHD_E_NOT_ACCEPTABLE,
                          "Accept must allow application/x-ndjson, application/json or "
                          "application/x-tar",
                          NULL);
        return -1;
    }
    if (*fmt == WRITER_JSON) {
        r->prep.spec.order = BATCH_ORDER_INPUT; /* one document, results in input order */
    }
    return 0;
}

/* Submits R's batch to the dispatcher. Returns 0, or -1 with the refusal queued in *MR. */
static int stream_submit(struct request *r, enum writer_format fmt, enum MHD_Result *mr)
{
    struct server *s = r->srv;
    r->started_ns = ipc_now_ns();
    writer_init(&r->writer, fmt, r->prep.spec.timing, r->started_ns);
    if (upload_is_multipart(r->upload)) {
        /* Only uploads have names (and the tar writer keeps the set of names it wrote). */
        r->writer.name_of = prepared_name_of;
        r->writer.ud = &r->prep;
    }
    struct dispatch_batch_desc desc = {
        .njobs = r->prep.spec.njobs,
        .params = r->prep.spec.params,
        .chunksize = (size_t)r->prep.spec.chunksize,
        .order = r->prep.spec.order == BATCH_ORDER_COMPLETED ? DISPATCH_ORDER_COMPLETED
                                                             : DISPATCH_ORDER_INPUT,
        .timeout_ms = r->prep.spec.timeout_ms >= 0 ? (uint64_t)r->prep.spec.timeout_ms
                                                   : s->cfg.job_timeout_ms,
        .deadline_ms = r->prep.spec.deadline_ms,
        .want_binary = fmt == WRITER_TAR,
        .blob_fd = upload_fd(r->upload),
        .job_at = stream_job_at,
        .ints = prepared_all_ints(&r->prep) ? r->prep.spec.ints : NULL,
        .ints_op = r->prep.op,
        .on_result = stream_on_result,
        /* Ready-made lines from the workers: NDJSON without timing is exactly their form. */
        .on_block = fmt == WRITER_NDJSON && !r->prep.spec.timing ? stream_on_block : NULL,
        .on_done = stream_on_done,
        .ud = r,
    };
    /* Before the batch exists: a document that lost its opening would go out broken. */
    if (writer_begin(&r->writer, &r->out) != 0) {
        *mr = reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
        return -1;
    }
    int err = 0;
    r->batch = dispatch_submit(s->dispatch, &desc, &err);
    if (r->batch == NULL) {
        char msg[160];
        snprintf(msg, sizeof msg, "%llu jobs are queued (limit %llu) in %d batches (limit %llu)",
                 (unsigned long long)dispatch_queued_jobs(s->dispatch),
                 (unsigned long long)s->cfg.max_queued_jobs, dispatch_batches(s->dispatch),
                 (unsigned long long)s->cfg.max_batches);
        *mr = reply_error(r, err, err == -BATCHD_E_OVERLOADED ? msg : NULL, NULL);
        return -1;
    }
    return 0;
}

/* Gives R's accepted batch its id (SPEC §8: every batch has one, streamed ones too), made
 * from the wall clock so that ids sort by submission time across restarts. */
static void stream_name_batch(struct request *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    store_id_make((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, r->batch_id);
}

/* Queues R's streaming response for its submitted batch. */
static enum MHD_Result stream_respond(struct request *r, enum writer_format fmt)
{
    struct server *s = r->srv;
    /* MHD allocates (and zeroes) the block for every response: small batches get a small
     * one, big ones 64 KiB so that their stream goes out in few writes. */
    size_t block = r->prep.spec.njobs <= 256 && !upload_is_multipart(r->upload) ? 4096 : 64 * 1024;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block, stream_read, r, NULL);
    if (resp == NULL) {
        dispatch_batch_cancel(r->batch);
        r->batch = NULL;
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", writer_content_type(fmt));
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    static const char prefix[] = "/v1/batches/";
    char where[sizeof prefix + STORE_ID_SIZE];
    memcpy(where, prefix, sizeof prefix - 1);
    memcpy(where + sizeof prefix - 1, r->batch_id, STORE_ID_SIZE);
    MHD_add_response_header(resp, "Content-Location", where);
    reply_add_common_headers(r, resp);
    r->status = 200;
    r->streaming = 1;
    s->streams++;
    r->stream_next = s->stream_list;
    if (s->stream_list != NULL) {
        s->stream_list->stream_prev = r;
    }
    s->stream_list = r;
    enum MHD_Result mr = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return mr;
}

enum MHD_Result stream_start(struct request *r)
{
    enum MHD_Result mr = MHD_NO;
    enum writer_format fmt = WRITER_NDJSON;
    if (stream_prepare(r, &fmt, &mr) != 0 || stream_submit(r, fmt, &mr) != 0) {
        return mr;
    }
    stream_name_batch(r);
    mr = stream_respond(r, fmt);
    if (r->batch != NULL && log_enabled(LOG_DEBUG)) {
        stream_log_accepted(r);
    }
    return mr;
}

void stream_finish(struct request *r)
{
    conn_watch_stream(r->cn, 0, NULL, NULL);
    if (r->batch != NULL) {
        dispatch_batch_cancel(r->batch);
        r->batch = NULL;
    }
    if (r->streaming) {
        r->streaming = 0;
        r->srv->streams--;
        if (r->stream_prev != NULL) {
            r->stream_prev->stream_next = r->stream_next;
        } else if (r->srv->stream_list == r) {
            r->srv->stream_list = r->stream_next;
        }
        if (r->stream_next != NULL) {
            r->stream_next->stream_prev = r->stream_prev;
        }
        r->stream_prev = r->stream_next = NULL;
    }
    writer_cleanup(&r->writer);
    prepared_cleanup(&r->prep);
}

int stream_cut_all(struct server *s)
{
    int n = 0;
    for (struct request *r = s->stream_list; r != NULL; r = r->stream_next) {
        if (!r->done) {
            /* The reader then ends the response without its last chunk: a cut stream. */
            stream_client_gone(r);
            n++;
        } else {
            stream_wake(r);
        }
    }
    return n;
}

static int stream_owned(const struct request *r, const uint8_t *owner, size_t owner_len)
{
    /* Known while its response lasts: until its client has read the summary. */
    return r->owner_len == owner_len && memcmp(r->owner, owner, owner_len) == 0 && r->streaming;
}

struct request *stream_find_next(struct request *r, const uint8_t *owner, size_t owner_len)
{
    for (r = r->stream_next; r != NULL && !stream_owned(r, owner, owner_len); r = r->stream_next) {
    }
    return r;
}

struct request *stream_find(struct server *s, const char *id, const uint8_t *owner,
                            size_t owner_len)
{
    for (struct request *r = s->stream_list; r != NULL; r = r->stream_next) {
        if (stream_owned(r, owner, owner_len) && (id == NULL || strcmp(r->batch_id, id) == 0)) {
            return r;
        }
    }
    return NULL;
}

void stream_live(const struct request *r, struct stream_live *out)
{
    out->ok = r->n_ok;
    out->failed = r->n_failed;
    out->running = r->batch != NULL ? (uint64_t)dispatch_batch_running(r->batch) : 0;
    out->elapsed_s = (double)(ipc_now_ns() - r->started_ns) / 1e9;
}

void stream_cancel(struct request *r)
{
    if (r->batch != NULL && !r->cancelled) {
        r->cancelled = 1;
        dispatch_batch_stop(r->batch);
    }
}
