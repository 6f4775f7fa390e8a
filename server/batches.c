/* The batch resources of SPEC §8: GET /v1/batches (the list), GET and DELETE
 * /v1/batches/{id} (status, cancel or forget) and GET /v1/batches/{id}/results. A batch is
 * read from the store for the request's owner (another owner's is 404, as one never issued),
 * with what only this process knows laid over it: counts not yet committed, jobs running
 * now. A streamed batch that is not stored is known only while it runs (stream.c). */
#include "batches.h"

#include "body.h"
#include "internal.h"
#include "reply.h"
#include "results.h"
#include "stored.h"
#include "stream.h"

#include "../api/errors.h"
#include "../api/jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define LIST_DEFAULT 50
#define LIST_MAX 1000

/* What a status document shows of one batch. */
struct batch_view {
    const struct store_info *info; /* as committed (the id, times, request id) */
    int state;
    uint64_t total, running, ok, failed;
    double elapsed_s; /* time it has run, for the rate */
};

static int put_time(struct buf *b, const char *name, int64_t ms)
{
    int rc = buf_printf(b, ",\"%s\":", name);
    if (ms <= 0) {
        return rc | buf_adds(b, "null");
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char text[40];
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    return rc | buf_printf(b, "\"%s.%03dZ\"", text, (int)(ms % 1000));
}

/* The status document of V (SPEC §8). */
static int put_status(struct buf *b, const struct batch_view *v)
{
    const struct store_info *in = v->info;
    uint64_t done = v->ok + v->failed;
    uint64_t running = v->state == STORE_RUNNING ? v->running : 0;
    uint64_t queued = v->total > done + running ? v->total - done - running : 0;
    double rate = v->elapsed_s > 0 ? (double)done / v->elapsed_s : 0.0;
    int rc = buf_adds(b, "{\"id\":");
    rc |= jsonw_cstr(b, in->id);
    rc |= buf_adds(b, ",\"state\":");
    rc |= jsonw_cstr(b, store_state_name(v->state));
    rc |= buf_adds(b, ",\"op\":");
    rc |= jsonw_cstr(b, in->op);
    rc |= put_time(b, "created_at", in->created_ms);
    rc |= put_time(b, "started_at", in->started_ms);
    rc |= put_time(b, "finished_at", in->finished_ms);
    rc |= put_time(b, "expires_at", in->expires_ms);
    rc |= buf_printf(b,
                     ",\"jobs\":{\"total\":%llu,\"queued\":%llu,\"running\":%llu,\"ok\":%llu,"
                     "\"failed\":%llu},\"progress\":",
                     (unsigned long long)v->total, (unsigned long long)queued,
                     (unsigned long long)running, (unsigned long long)v->ok,
                     (unsigned long long)v->failed);
    rc |= jsonw_double(b, v->total > 0 ? (double)done / (double)v->total : 1.0);
    rc |= buf_adds(b, ",\"rate_per_s\":");
    rc |= jsonw_double(b, rate);
    if (rate > 0 && done < v->total && v->state == STORE_RUNNING) {
        rc |= buf_printf(b, ",\"eta_ms\":%lld",
                         (long long)((double)(v->total - done) / rate * 1000.0));
    } else {
        rc |= buf_adds(b, done >= v->total ? ",\"eta_ms\":0" : ",\"eta_ms\":null");
    }
    rc |= buf_adds(b, ",\"request_id\":");
    rc |= jsonw_cstr(b, in->request_id);
    rc |= buf_printf(b, ",\"results\":\"/v1/batches/%s/results\"}", in->id);
    return rc;
}

/* V for INFO, a batch of the store, with what this process knows of it on top. */
static void view_stored(struct server *s, const struct store_info *info, struct batch_view *v)
{
    struct stored_live lv;
    memset(v, 0, sizeof *v);
    v->info = info;
    v->state = info->state;
    v->total = info->njobs;
    v->ok = info->nok;
    v->failed = info->nfailed;
    if (info->finished_ms > info->started_ms && info->started_ms > 0) {
        v->elapsed_s = (double)(info->finished_ms - info->started_ms) / 1000.0;
    }
    if (stored_live(s, info->id, &lv)) {
        v->ok = lv.ok;
        v->failed = lv.failed;
        v->running = lv.running;
        v->elapsed_s = lv.elapsed_s;
        /* An ended batch is done only once its end is committed, and the store answers:
         * until then its results lack lines and the summary. */
        v->state = lv.started || lv.ended ? STORE_RUNNING : STORE_QUEUED;
        if (lv.cancelling) {
            /* Its end is on its way: what is not answered yet fails with cancelled. */
            v->state = STORE_CANCELLED;
            v->failed = v->total - v->ok;
            v->running = 0;
        }
    }
}

/* V for a streamed batch that runs now (not stored); INFO is filled from it. */
static void view_streamed(struct request *sr, struct store_info *info, struct batch_view *v)
{
    struct stream_live lv;
    stream_live(sr, &lv);
    memset(info, 0, sizeof *info);
    memset(v, 0, sizeof *v);
    snprintf(info->id, sizeof info->id, "%s", sr->batch_id);
    snprintf(info->op, sizeof info->op, "%s", prepared_op_label(&sr->prep));
    snprintf(info->request_id, sizeof info->request_id, "%s", sr->id);
    info->created_ms = info->started_ms = store_id_time_ms(sr->batch_id);
    v->info = info;
    v->state = STORE_RUNNING;
    v->total = sr->prep.spec.njobs;
    v->ok = lv.ok;
    v->failed = lv.failed;
    v->running = lv.running;
    v->elapsed_s = lv.elapsed_s;
    if (sr->cancelled) {
        v->state = STORE_CANCELLED;
        v->failed = v->total - v->ok;
        v->running = 0;
    }
}

static enum MHD_Result reply_json_buf(struct request *r, int status, struct buf *b,
                                      const char *location)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(buf_len(b), (void *)buf_data(b), MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (location != NULL) {
        MHD_add_response_header(resp, "Location", location);
        MHD_add_response_header(resp, "Preference-Applied", "respond-async");
    }
    reply_add_common_headers(r, resp);
    r->status = status;
    enum MHD_Result mr = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return mr;
}

/* The refusal for a store lookup's outcome RC. */
static enum MHD_Result reply_lookup_error(struct request *r, int rc)
{
    if (rc == STORE_E_EXPIRED) {
        return reply_error(r, -BATCHD_E_EXPIRED, NULL, NULL);
    }
    if (rc == STORE_E_NOT_FOUND) {
        return reply_error(r, -BATCHD_E_BATCH_NOT_FOUND, NULL, NULL);
    }
    return reply_error(r, -BATCHD_E_STORE_UNAVAILABLE, store_err_message(rc), NULL);
}

/* Looks ID up for R: a streamed batch running here (*SR set), or one of the store (*INFO
 * filled). Returns 0 or a STORE_E_* code. */
static int batch_lookup(struct request *r, const char *id, struct request **sr,
                        struct store_info *info)
{
    *sr = stream_find(r->srv, id, r->owner, r->owner_len);
    if (*sr != NULL) {
        return 0;
    }
    if (r->srv->store == NULL) {
        return STORE_E_NOT_FOUND;
    }
    return store_batch_get(r->srv->store, r->owner, r->owner_len, id, info);
}

enum MHD_Result batches_reply_status(struct request *r, const char *id, int status)
{
    struct request *sr;
    struct store_info info, sinfo;
    struct batch_view v;
    int rc = batch_lookup(r, id, &sr, &info);
    if (rc != 0) {
        return reply_lookup_error(r, rc);
    }
    if (sr != NULL) {
        view_streamed(sr, &sinfo, &v);
    } else {
        view_stored(r->srv, &info, &v);
    }
    struct buf b;
    buf_init(&b, 1u << 20);
    char where[32 + STORE_ID_SIZE];
    snprintf(where, sizeof where, "/v1/batches/%s", id);
    enum MHD_Result mr = put_status(&b, &v) != 0
                             ? reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL)
                             : reply_json_buf(r, status, &b, status == 202 ? where : NULL);
    buf_cleanup(&b);
    return mr;
}

/* ---------------------------------------------------------------- the list */

static const char *query(struct request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* ?state= as a store state (STORE_ANY_STATE without one), or -2 when it names none. */
static int list_state(const char *q)
{
    static const int states[] = {STORE_QUEUED, STORE_RUNNING, STORE_DONE, STORE_CANCELLED};
    if (q == NULL || q[0] == '\0') {
        return STORE_ANY_STATE;
    }
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        if (strcmp(q, store_state_name(states[i])) == 0) {
            return states[i];
        }
    }
    return -2;
}

/* The streamed batches of R's owner that run now and match STATE, newest first (their ids
 * are the newest: they run now), into B. Returns how many. */
static size_t list_streamed(struct request *r, int state, const char *before, size_t max,
                            struct buf *b)
{
    size_t n = 0;
    for (struct request *sr = stream_find(r->srv, NULL, r->owner, r->owner_len);
         sr != NULL && n < max; sr = stream_find_next(sr, r->owner, r->owner_len)) {
        if ((state != STORE_ANY_STATE && state != STORE_RUNNING) ||
            (before != NULL && strcmp(sr->batch_id, before) >= 0)) {
            continue;
        }
        struct store_info info;
        struct batch_view v;
        view_streamed(sr, &info, &v);
        buf_adds(b, n++ > 0 ? "," : "");
        put_status(b, &v);
    }
    return n;
}

static enum MHD_Result batches_list(struct request *r)
{
    int state = list_state(query(r, "state"));
    const char *lim = query(r, "limit"), *before = query(r, "before");
    char *end = NULL;
    long limit = lim != NULL ? strtol(lim, &end, 10) : LIST_DEFAULT;
    if (state == -2 || (lim != NULL && (*end != '\0' || limit < 1 || limit > LIST_MAX)) ||
        (before != NULL && !store_id_valid(before))) {
        return reply_error(r, -BATCHD_E_BAD_REQUEST,
                           "state is queued, running, done or cancelled; limit 1 to 1000; "
                           "before a batch id",
                           NULL);
    }
    struct store_info *infos = calloc((size_t)limit, sizeof *infos);
    struct buf b;
    buf_init(&b, SIZE_MAX / 2);
    size_t n = 0, shown = 0;
    int rc = infos == NULL ? STORE_E_NOMEM : 0;
    buf_adds(&b, "{\"batches\":[");
    shown = rc == 0 ? list_streamed(r, state, before, (size_t)limit, &b) : 0;
    if (rc == 0 && r->srv->store != NULL) {
        rc = store_batch_list(r->srv->store, r->owner, r->owner_len, state, before, infos,
                              (size_t)limit - shown, &n);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct batch_view v;
        view_stored(r->srv, &infos[i], &v);
        buf_adds(&b, shown + i > 0 ? "," : "");
        put_status(&b, &v);
    }
    buf_adds(&b, "],\"next\":");
    if (n > 0 && shown + n == (size_t)limit) {
        buf_printf(&b, "\"/v1/batches?limit=%ld&before=%s%s%s\"}", limit, infos[n - 1].id,
                   state != STORE_ANY_STATE ? "&state=" : "",
                   state != STORE_ANY_STATE ? store_state_name(state) : "");
    } else {
        buf_adds(&b, "null}");
    }
    enum MHD_Result mr = rc != 0 ? reply_lookup_error(r, rc) : reply_json_buf(r, 200, &b, NULL);
    buf_cleanup(&b);
    free(infos);
    return mr;
}

enum MHD_Result batches_collection(struct request *r)
{
    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0) {
        return batches_list(r);
    }
    return body_start(r);
}

/* ---------------------------------------------------------------- one batch */

/* The forget of an ended batch committed (or failed): 204, or the refusal. */
static enum MHD_Result batches_forgotten(struct request *r)
{
    if (r->wait_rc == STORE_OK) {
        return reply_buffer(r, 204, "application/json", "", 0, NULL, 0);
    }
    return reply_lookup_error(r, r->wait_rc);
}

static void batches_forget_done(void *arg, int rc, struct store_batch *sb, const char *id)
{
    struct request **slot = arg, *r = *slot;
    (void)id;
    store_batch_release(sb);
    free(slot);
    if (r != NULL) {
        r->forget_slot = NULL;
        r->wait_rc = rc;
        r->resume_fn = batches_forgotten;
        MHD_resume_connection(r->conn);
        r->srv->resumed = 1;
    }
}

static enum MHD_Result batches_delete(struct request *r, const char *id)
{
    struct request *sr;
    struct store_info info;
    int rc = batch_lookup(r, id, &sr, &info);
    if (rc != 0) {
        return reply_lookup_error(r, rc);
    }
    if (sr != NULL) {
        stream_cancel(sr);
        return batches_reply_status(r, id, 200);
    }
    if (stored_cancel(r->srv, id) == 0) {
        return batches_reply_status(r, id, 200);
    }
    if (info.state != STORE_DONE && info.state != STORE_CANCELLED) {
        return reply_error(r, -BATCHD_E_STORE_UNAVAILABLE, "the batch is not running here", NULL);
    }
    /* Ended: forget it and its results; answered once that is committed. */
    struct request **slot = malloc(sizeof *slot);
    if (slot == NULL || store_batch_forget(r->srv->store, r->owner, r->owner_len, id,
                                           batches_forget_done, slot) != 0) {
        free(slot);
        return reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
    }
    *slot = r;
    r->forget_slot = slot;
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

/* What GET .../results asks for: FORMAT (0 NDJSON, 1 SSE, 2 JSON, 3 tar), or -1 when it
 * accepts none of them. */
static int results_format(const char *accept)
{
    static const char *const types[] = {"text/event-stream", "application/json",
                                        "application/x-tar"};
    if (accept == NULL || accept[0] == '\0') {
        return 0;
    }
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (strcasestr(accept, types[i]) != NULL) {
            return (int)i + 1;
        }
    }
    if (strcasestr(accept, "ndjson") != NULL || strcasestr(accept, "jsonl") != NULL ||
        strstr(accept, "*/*") != NULL || strstr(accept, "application/*") != NULL) {
        return 0;
    }
    return -1;
}

static enum MHD_Result batches_results(struct request *r, const char *id)
{
    struct request *sr;
    struct store_info info;
    int rc = batch_lookup(r, id, &sr, &info);
    if (rc != 0) {
        return reply_lookup_error(r, rc);
    }
    if (sr != NULL) {
        return reply_error(r, -BATCHD_E_BATCH_NOT_FOUND,
                           "a streamed batch's results go only to its own stream", NULL);
    }
    int fmt = results_format(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept"));
    int ended = info.state == STORE_DONE || info.state == STORE_CANCELLED;
    if (fmt < 0) {
        return reply_error(r, -BATCHD_E_NOT_ACCEPTABLE,
                           "Accept must allow application/x-ndjson, text/event-stream, "
                           "application/json or application/x-tar",
                           NULL);
    }
    if (fmt >= 2 && !ended) {
        return reply_error(r, -BATCHD_E_NOT_FINISHED, NULL, NULL);
    }
    const char *after_q = query(r, "after"), *follow_q = query(r, "follow");
    const char *lei = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    const char *from = lei != NULL ? lei : after_q;
    char *end = NULL;
    unsigned long long after = from != NULL ? strtoull(from, &end, 10) : 0;
    if (from != NULL && (end == from || *end != '\0')) {
        return reply_error(r, -BATCHD_E_BAD_REQUEST, "after and Last-Event-ID are a seq (integer)",
                           "after");
    }
    int follow = follow_q != NULL && (strcmp(follow_q, "true") == 0 || strcmp(follow_q, "1") == 0);
    return results_respond(r, id, after, follow, fmt == 1, fmt >= 2 ? fmt - 1 : 0);
}

enum MHD_Result batches_item(struct request *r)
{
    /* /v1/batches/{id} or /v1/batches/{id}/results */
    const char *rest = r->url + strlen("/v1/batches/");
    char id[STORE_ID_SIZE];
    size_t n = strcspn(rest, "/");
    int results = strcmp(rest + n, "/results") == 0;
    if (n != STORE_ID_LEN || (rest[n] != '\0' && !results)) {
        return reply_error(r, -BATCHD_E_NOT_FOUND_ROUTE, NULL, NULL);
    }
    memcpy(id, rest, n);
    id[n] = '\0';
    if (!store_id_valid(id)) {
        return reply_error(r, -BATCHD_E_BATCH_NOT_FOUND, NULL, NULL);
    }
    if (strcmp(r->method, "DELETE") == 0) {
        return results ? reply_error_allow(r, -BATCHD_E_METHOD_NOT_ALLOWED, NULL, NULL,
                                           "GET, HEAD, OPTIONS")
                       : batches_delete(r, id);
    }
    return results ? batches_results(r, id) : batches_reply_status(r, id, 200);
}

void batches_finish(struct request *r)
{
    if (r->forget_slot != NULL) {
        *r->forget_slot = NULL;
        r->forget_slot = NULL;
    }
}
