/* The status document of SPEC §8 for one batch: read from the store for the request's owner
 * (another owner's is 404, as one never issued), with what only this process knows laid
 * over it (counts not yet committed, jobs running now); or, for a streamed batch that is not
 * stored, from its stream while it runs. */
#include "status.h"

#include "internal.h"
#include "reply.h"
#include "stored.h"
#include "stream.h"

#include "../api/errors.h"
#include "../api/jsonw.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* What a status document shows of one batch. */
struct batch_view {
    const struct store_info *info; /* as committed (the id, times, request id) */
    int state;
    uint64_t total, running, ok, failed;
    double elapsed_s;     /* time it has run, for the rate */
    uint64_t done_before; /* jobs answered before that time (a restart) */
    int64_t started_ms;   /* the store's, or this process's while the store has none yet */
    int streamed;         /* not stored: its results go only to its own stream */
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
    double rate = v->elapsed_s > 0 && done >= v->done_before
                      ? (double)(done - v->done_before) / v->elapsed_s
                      : 0.0;
    int rc = buf_adds(b, "{\"id\":");
    rc |= jsonw_cstr(b, in->id);
    rc |= buf_adds(b, ",\"state\":");
    rc |= jsonw_cstr(b, store_state_name(v->state));
    rc |= buf_adds(b, ",\"op\":");
    rc |= jsonw_cstr(b, in->op);
    rc |= put_time(b, "created_at", in->created_ms);
    rc |= put_time(b, "started_at", v->started_ms);
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
    if (!v->streamed && in->queue >= 0) {
        /* Cluster (SPEC §9): where it runs, and which replicas ran chunks of it. */
        rc |= buf_printf(b, ",\"cluster\":{\"queue\":%s,\"replicas\":[",
                         in->queue ? "true" : "false");
        const char *p = in->replicas;
        for (int first = 1; *p != '\0'; first = 0) {
            const char *comma = strchr(p, ',');
            size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
            rc |= buf_adds(b, first ? "" : ",");
            rc |= jsonw_string(b, p, n);
            p += n + (comma != NULL);
        }
        rc |= buf_adds(b, "]}");
    }
    if (v->streamed) {
        rc |= buf_adds(b, ",\"results\":null,\"stored\":false}"); /* its results: its stream */
    } else {
        rc |= buf_printf(b, ",\"results\":\"/v1/batches/%s/results\",\"stored\":true}", in->id);
    }
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
    v->started_ms = info->started_ms;
    if (info->finished_ms > info->started_ms && info->started_ms > 0) {
        v->elapsed_s = (double)(info->finished_ms - info->started_ms) / 1000.0;
    }
    int ended = info->state == STORE_DONE || info->state == STORE_CANCELLED;
    if (!ended && info->started_ms > 0 && info->queue >= 0) {
        /* Cluster: its counts are the store's (every replica records into it). */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        v->elapsed_s = now > info->started_ms ? (double)(now - info->started_ms) / 1000.0 : 0.0;
    }
    if (!ended && stored_live(s, info->id, &lv)) {
        /* (Once the store has the end, it answers: the live batch may linger a moment.) */
        v->ok = lv.ok;
        v->failed = lv.failed;
        v->running = lv.running;
        v->elapsed_s = lv.elapsed_s;
        v->done_before = lv.done_before;
        v->started_ms = v->started_ms > 0 ? v->started_ms : lv.started_ms;
        /* Done or cancelled only once the store says so: then every result is readable. */
        v->state = lv.started || lv.ended ? STORE_RUNNING : STORE_QUEUED;
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
    v->started_ms = info->started_ms;
    v->streamed = 1;
    v->state = STORE_RUNNING;
    v->total = sr->prep.spec.njobs;
    v->ok = lv.ok;
    v->failed = lv.failed;
    v->running = lv.running;
    v->elapsed_s = lv.elapsed_s;
    if (sr->done) {
        v->state = sr->cancelled ? STORE_CANCELLED : STORE_DONE;
    } else if (sr->cancelled) {
        v->state = STORE_CANCELLED;
        v->failed = v->total - v->ok;
        v->running = 0;
    }
}

enum MHD_Result status_reply_json(struct request *r, int status, struct buf *b,
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
    r->bytes_out += buf_len(b);
    enum MHD_Result mr = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return mr;
}

/* The refusal for a store lookup's outcome RC. */
enum MHD_Result status_reply_lookup_error(struct request *r, int rc)
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
int status_lookup(struct request *r, const char *id, struct request **sr, struct store_info *info)
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

enum MHD_Result status_reply(struct request *r, const char *id, int status)
{
    struct request *sr;
    struct store_info info, sinfo;
    struct batch_view v;
    int rc = status_lookup(r, id, &sr, &info);
    if (rc != 0) {
        return status_reply_lookup_error(r, rc);
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
                             : status_reply_json(r, status, &b, status == 202 ? where : NULL);
    buf_cleanup(&b);
    return mr;
}

int status_put_stored(struct server *s, const struct store_info *info, struct buf *b)
{
    struct batch_view v;
    view_stored(s, info, &v);
    return put_status(b, &v);
}

int status_put_streamed(struct request *sr, struct buf *b)
{
    struct store_info info;
    struct batch_view v;
    view_streamed(sr, &info, &v);
    return put_status(b, &v);
}
