/* The batch resources of SPEC §8: GET /v1/batches (the list), GET and DELETE
 * /v1/batches/{id} (status, cancel or forget) and GET /v1/batches/{id}/results, and the POST
 * that submits a batch: streamed (stream.c) or stored (submit.c). Status documents are
 * status.c's. */
#include "batches.h"

#include "body.h"
#include "internal.h"
#include "reply.h"
#include "results.h"
#include "status.h"
#include "stored.h"
#include "stream.h"
#include "submit.h"

#include "../api/errors.h"
#include "../api/jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define LIST_DEFAULT 50
#define LIST_MAX 1000

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
                            struct buf *b, int *rc, char last[STORE_ID_SIZE])
{
    size_t n = 0;
    for (struct request *sr = stream_find(r->srv, NULL, r->owner, r->owner_len);
         sr != NULL && n < max; sr = stream_find_next(sr, r->owner, r->owner_len)) {
        if ((state != STORE_ANY_STATE && state != STORE_RUNNING) ||
            (before != NULL && strcmp(sr->batch_id, before) >= 0)) {
            continue;
        }
        *rc |= buf_adds(b, n++ > 0 ? "," : "");
        *rc |= status_put_streamed(sr, b);
        snprintf(last, STORE_ID_SIZE, "%s", sr->batch_id);
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
    char last[STORE_ID_SIZE] = ""; /* the oldest shown: where the next page starts */
    int rc = infos == NULL ? STORE_E_NOMEM : 0;
    int brc = buf_adds(&b, "{\"batches\":["); /* the document's bytes: all or a 500 */
    shown = rc == 0 ? list_streamed(r, state, before, (size_t)limit, &b, &brc, last) : 0;
    if (rc == 0 && r->srv->store != NULL) {
        rc = store_batch_list(r->srv->store, r->owner, r->owner_len, state, before, infos,
                              (size_t)limit - shown, &n);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        brc |= buf_adds(&b, shown + i > 0 ? "," : "");
        brc |= status_put_stored(r->srv, &infos[i], &b);
    }
    brc |= buf_adds(&b, "],\"next\":");
    if (n > 0) {
        snprintf(last, sizeof last, "%s", infos[n - 1].id);
    }
    /* A full page may have more behind it, streamed ones' too (they come first). */
    if (rc == 0 && last[0] != '\0' && shown + n == (size_t)limit) {
        brc |= buf_printf(&b, "\"/v1/batches?limit=%ld&before=%s%s%s\"}", limit, last,
                          state != STORE_ANY_STATE ? "&state=" : "",
                          state != STORE_ANY_STATE ? store_state_name(state) : "");
    } else {
        brc |= buf_adds(&b, "null}");
    }
    enum MHD_Result mr = rc != 0    ? status_reply_lookup_error(r, rc)
                         : brc != 0 ? reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL)
                                    : status_reply_json(r, 200, &b, NULL);
    buf_cleanup(&b);
    free(infos);
    return mr;
}

enum MHD_Result batches_post(struct request *r)
{
    struct batch_error e;
    if (prepared_build(&r->prep, r->upload, r->srv->cfg.max_jobs, &e) != 0) {
        return reply_error(r, e.err, e.message, e.path[0] ? e.path : NULL);
    }
    if (submit_wanted(r)) {
        return submit_stored(r); /* SPEC §8: async or keyed */
    }
    return stream_start(r);
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
    return status_reply_lookup_error(r, r->wait_rc);
}

/* The store answered the write that R (in SLOT; NULL once R went away) waits for: R wakes
 * and answers with FN. */
static void batches_wake(struct request **slot, int rc, struct store_batch *sb, results_wake_fn fn)
{
    struct request *r = *slot;
    store_batch_release(sb);
    free(slot);
    if (r != NULL) {
        r->forget_slot = NULL;
        r->wait_rc = rc;
        r->resume_fn = fn;
        MHD_resume_connection(r->conn);
        r->srv->resumed = 1;
    }
}

static void batches_forget_done(void *arg, int rc, struct store_batch *sb, const char *id)
{
    (void)id;
    batches_wake(arg, rc, sb, batches_forgotten);
}

/* A cancelled stored batch: its final status once its end is committed, else sleep on. */
static enum MHD_Result batches_cancelled(struct request *r)
{
    struct store_info info;
    int rc = store_batch_get(r->srv->store, r->owner, r->owner_len, r->res.id, &info);
    if (rc != 0) {
        /* Not "running" as if that were the final status (out of memory, say). */
        return status_reply_lookup_error(r, rc);
    }
    if (info.state != STORE_DONE && info.state != STORE_CANCELLED && !r->srv->closing) {
        results_sleep(r, r->res.id, batches_cancelled);
        return MHD_YES;
    }
    return status_reply(r, r->res.id, 200);
}

/* Cluster: the cancel is recorded in the store; every replica stops its chunks of it. The
 * answer is the final status, once the end is recorded (by whichever replica ends it). */
static enum MHD_Result batches_cancel_recorded(struct request *r)
{
    if (r->wait_rc == STORE_OK || r->wait_rc == STORE_E_ENDED) {
        return batches_cancelled(r);
    }
    return status_reply_lookup_error(r, r->wait_rc);
}

static void batches_cancel_done(void *arg, int rc, struct store_batch *sb, const char *id)
{
    (void)id;
    batches_wake(arg, rc, sb, batches_cancel_recorded);
}

static enum MHD_Result batches_suspend_on(struct request *r, struct request **slot)
{
    *slot = r;
    r->forget_slot = slot;
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

static enum MHD_Result batches_delete(struct request *r, const char *id)
{
    struct request *sr;
    struct store_info info;
    int rc = status_lookup(r, id, &sr, &info);
    if (rc != 0) {
        return status_reply_lookup_error(r, rc);
    }
    if (sr != NULL) {
        stream_cancel(sr);
        return status_reply(r, id, 200);
    }
    snprintf(r->res.id, sizeof r->res.id, "%s", id);
    if (stored_cancel(r->srv, id) == 0) {
        /* Answered with the final status: once the cancelled end is committed. */
        return batches_cancelled(r);
    }
    if (info.state != STORE_DONE && info.state != STORE_CANCELLED &&
        store_is_cluster(r->srv->store)) {
        if (r->srv->closing) {
            return reply_error(r, -BATCHD_E_DRAINING, NULL, NULL);
        }
        struct request **slot = malloc(sizeof *slot);
        int crc = slot == NULL ? STORE_E_NOMEM
                               : store_cancel_id(r->srv->store, r->owner, r->owner_len, id,
                                                 batches_cancel_done, slot);
        if (crc != 0) {
            free(slot);
            return crc == STORE_E_NOMEM ? reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL)
                                        : status_reply_lookup_error(r, crc);
        }
        return batches_suspend_on(r, slot);
    }
    if (info.state != STORE_DONE && info.state != STORE_CANCELLED) {
        return reply_error(r, -BATCHD_E_STORE_UNAVAILABLE, "the batch is not running here", NULL);
    }
    if (r->srv->closing) {
        return reply_error(r, -BATCHD_E_DRAINING, NULL, NULL); /* no sleeping at a stop */
    }
    /* Ended: forget it and its results; answered once that is committed. */
    struct request **slot = malloc(sizeof *slot);
    int frc = slot == NULL ? STORE_E_NOMEM
                           : store_batch_forget(r->srv->store, r->owner, r->owner_len, id,
                                                batches_forget_done, slot);
    if (frc != 0) {
        free(slot);
        return frc == STORE_E_IO ? status_reply_lookup_error(r, frc)
                                 : reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
    }
    return batches_suspend_on(r, slot);
}

/* 1 when media range parameters P (after the type, up to the next ',') hold q=0: "not
 * acceptable" (RFC 9110 §12.4.2). */
static int accept_q_zero(const char *p)
{
    for (; *p != '\0' && *p != ','; p++) {
        if (*p != ';') {
            continue;
        }
        p += strspn(p + 1, " \t") + 1;
        if ((p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            const char *v = p + 2;
            size_t zeros = v[0] == '0' ? 1 + (v[1] == '.' ? 1 + strspn(v + 2, "0") : 0) : 0;
            return zeros > 0 && strchr(",; \t", v[zeros]) != NULL;
        }
    }
    return 0;
}

/* What GET .../results asks for: FORMAT (0 NDJSON, 1 SSE, 2 JSON, 3 tar), or -1 when it
 * accepts none of them. As for a POST (stream.c): the first type we produce that the client
 * lists wins, one with q=0 excepted. */
static int results_format(const char *accept)
{
    static const struct {
        const char *type;
        int fmt;
    } types[] = {
        {"text/event-stream", 1},     {"application/json", 2},        {"application/x-tar", 3},
        {"application/x-ndjson", 0},  {"application/ndjson", 0},      {"application/jsonl", 0},
        {"application/jsonlines", 0}, {"application/x-jsonlines", 0}, {"*/*", 0},
        {"application/*", 0},
    };
    if (accept == NULL || accept[0] == '\0') {
        return 0;
    }
    for (const char *p = accept; p != NULL && *p != '\0'; p = strchr(p, ',')) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ",; \t");
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            if (strlen(types[i].type) == n && strncasecmp(p, types[i].type, n) == 0 &&
                !accept_q_zero(p + n)) {
                return types[i].fmt;
            }
        }
    }
    return -1;
}

static enum MHD_Result batches_results(struct request *r, const char *id)
{
    struct request *sr;
    struct store_info info;
    int rc = status_lookup(r, id, &sr, &info);
    if (rc != 0) {
        return status_reply_lookup_error(r, rc);
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
    uint64_t after = 0;
    if (from != NULL && results_parse_seq(from, &after) != 0) {
        return reply_error(r, -BATCHD_E_BAD_REQUEST, "after and Last-Event-ID are a seq (integer)",
                           "after");
    }
    if (fmt == 1 && lei != NULL && ended && after > info.last_seq) {
        /* Past the summary's own id: the client has it all. 204 tells an EventSource not to
         * reconnect again (the HTML standard's rule), so the summary never comes twice. */
        return reply_buffer(r, 204, "text/event-stream", "", 0, NULL, 0);
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
    if (!r->srv->closing && stream_find(r->srv, id, r->owner, r->owner_len) == NULL &&
        store_prefetch_info(r->srv->store, r->owner, r->owner_len, id) == STORE_E_AGAIN) {
        /* Cluster: its status is on its way from Redis; this request sleeps until it is
         * there, then starts again (answered from memory, the loop never waits). */
        results_sleep(r, id, batches_item);
        return MHD_YES;
    }
    if (strcmp(r->method, "DELETE") == 0) {
        return results ? reply_error_allow(r, -BATCHD_E_METHOD_NOT_ALLOWED, NULL, NULL,
                                           "GET, HEAD, OPTIONS")
                       : batches_delete(r, id);
    }
    return results ? batches_results(r, id) : status_reply(r, id, 200);
}

void batches_finish(struct request *r)
{
    if (r->forget_slot != NULL) {
        *r->forget_slot = NULL;
        r->forget_slot = NULL;
    }
}
