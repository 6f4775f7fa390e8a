/* Stored batches on the server side (SPEC §8). A stored batch runs from what the store holds,
 * never from the request that sent it: a new batch is read back from the store once its
 * creation commits, exactly as an unfinished one is after a restart, so both take one path.
 * Its results go to the store (the store gives them their seq); the streams that follow it
 * read them back from there when the store says they are committed. */
#include "stored.h"

#include "internal.h"
#include "log.h"
#include "observe.h"

#include "../api/errors.h"
#include "../api/jsonw.h"
#include "../workers/ipc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Results queued in the store and not yet committed, over which the stored batches get no
 * more jobs, and under which they go on: the workers answer much faster than the store
 * commits (1M sqrt: about a second against tens), and what waits is held in memory. */
#define STORED_HIGH_ROWS 65536u
#define STORED_LOW_ROWS 16384u
/* Per-job results recorded between two looks at the store's queue. */
#define STORED_CHECK_EVERY 64u

struct sbatch {
    struct server *srv;
    struct sbatch *next;
    char id[STORE_ID_SIZE];
    char request_id[128];
    struct store_batch *sb; /* the store's handle while results go in */
    struct upload *upload;  /* rebuilt from the store */
    struct prepared prep;
    uint64_t *todo; /* the job indexes this run covers (a restart), or NULL: all */
    int64_t *ints;  /* their integer inputs, for the dispatcher's fast path */
    uint64_t ntodo;
    struct dispatch_batch *db; /* NULL: waiting for room in the dispatcher, or ended */
    struct writer writer;      /* formats one result line */
    struct buf line;
    uint64_t njobs, ok, failed;
    uint64_t done_before; /* answered before this process took the batch on (a restart) */
    int64_t created_ms, started_ms; /* wall clock */
    uint64_t started_ns;
    int cancel; /* a cancel was asked (DELETE, or recorded before a restart) */
    int ended;  /* its end is queued in the store, not yet committed: it stays listed until
                 * then, so that its status never goes back to running */
    int paused; /* held back while the store's queue is long (stored_throttle) */
    unsigned since_check;
    uint64_t lost;  /* results the store could not take (out of memory) */
    int end_queued; /* the end reached the store's queue (else stored_pump tries again) */
    int recheck;    /* whether the end is committed could not be read: stored_pump asks */
    int has_sum;
    struct dispatch_summary sum; /* the dispatcher's, for the summary */
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sbatch_free(struct sbatch *b)
{
    struct sbatch **pp = &b->srv->stored_list;
    while (*pp != NULL && *pp != b) {
        pp = &(*pp)->next;
    }
    if (*pp == b) {
        *pp = b->next;
    }
    store_batch_release(b->sb);
    prepared_cleanup(&b->prep);
    upload_destroy(b->upload);
    writer_cleanup(&b->writer);
    buf_cleanup(&b->line);
    free(b->todo);
    free(b->ints);
    free(b);
}

static struct sbatch *sbatch_find(const struct server *s, const char *id)
{
    for (struct sbatch *b = s->stored_list; b != NULL; b = b->next) {
        if (strcmp(b->id, id) == 0) {
            return b;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- results into the store */

/* Holds back the stored batches while the store's queue of uncommitted results is over
 * STORED_HIGH_ROWS, and lets them go on once it is under STORED_LOW_ROWS: memory stays
 * bounded whatever a batch's size. Called as results come and after each commit. */
static void stored_throttle(struct server *s)
{
    struct store_stats ss;
    store_stats_get(s->store, &ss);
    for (struct sbatch *b = s->stored_list; b != NULL; b = b->next) {
        b->since_check = 0;
        if (b->db == NULL) {
            continue;
        }
        int hold = ss.pending_rows > (b->paused ? STORED_LOW_ROWS : STORED_HIGH_ROWS);
        if (hold != b->paused) {
            b->paused = hold;
            dispatch_batch_set_paused(b->db, hold);
        }
    }
}

/* Queues the line in b->line (without its newline) as job INDEX's result. */
static void sbatch_record(struct sbatch *b, uint64_t index, int ok, const char *line, size_t len)
{
    int rc = store_result_add(b->sb, (uint32_t)index, ok, line, len);
    if (rc == STORE_E_DUPLICATE) {
        return; /* recorded before: the store keeps the first (it cannot happen twice here) */
    }
    if (rc != 0) {
        log_event("error", "store", "batch", b->id, "message", store_err_message(rc), NULL);
        b->lost += rc == STORE_E_NOMEM; /* sbatch_end records an error for it instead */
        return;
    }
    b->ok += ok ? 1 : 0;
    b->failed += ok ? 0 : 1;
}

static void sbatch_on_result(void *ud, const struct job_result *res)
{
    struct sbatch *b = ud;
    struct job_result r = *res;
    r.index = b->todo != NULL ? b->todo[res->index] : res->index;
    observe_job(b->srv, &b->prep, &r);
    buf_reset(&b->line);
    if (writer_result(&b->writer, &b->line, &r) != 0 || buf_len(&b->line) == 0) {
        log_event("error", "store", "batch", b->id, "message", "out of memory", NULL);
        return;
    }
    sbatch_record(b, r.index, r.err == 0, buf_data(&b->line), buf_len(&b->line) - 1);
    if (++b->since_check >= STORED_CHECK_EVERY) {
        stored_throttle(b->srv);
    }
}

/* Ready-made lines {"index":I,"result":R}\n of jobs INDEX.. (only when todo is NULL, so
 * that their indexes are the batch's own). */
static void sbatch_on_block(void *ud, uint64_t index, uint64_t count, const char *text, size_t len,
                            uint64_t busy_ns)
{
    struct sbatch *b = ud;
    observe_block(b->srv, &b->prep, index, count, busy_ns);
    const char *p = text, *end = text + len;
    for (uint64_t k = 0; k < count && p < end; k++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        sbatch_record(b, index + k, 1, p, n);
        p += n + 1;
    }
    stored_throttle(b->srv);
}

/* The summary line of B ({"summary":{...}}, SPEC §4) into b->line. */
static int sbatch_summary(struct sbatch *b, const struct dispatch_summary *sum)
{
    struct buf *o = &b->line;
    buf_reset(o);
    int rc = buf_printf(o,
                        "{\"summary\":{\"jobs\":%llu,\"ok\":%llu,\"failed\":%llu,"
                        "\"order\":\"completed\",\"chunksize\":%zu,\"workers\":%d,\"elapsed_ms\":",
                        (unsigned long long)b->njobs, (unsigned long long)b->ok,
                        (unsigned long long)b->failed, sum != NULL ? sum->chunksize : 0,
                        sum != NULL ? sum->workers : 0);
    rc |= jsonw_double(o, (double)(wall_ms() - b->created_ms));
    rc |= buf_adds(o, ",\"busy_ms\":");
    rc |= jsonw_double(o, sum != NULL ? (double)(sum->busy_ns / 1000) / 1000.0 : 0.0);
    if (b->cancel) {
        rc |= buf_adds(o, ",\"cancelled\":true");
    }
    if (sum != NULL && sum->deadline_hit) {
        rc |= buf_adds(o, ",\"deadline_exceeded\":true");
    }
    rc |= buf_adds(o, ",\"batch\":");
    rc |= jsonw_cstr(o, b->id);
    rc |= buf_adds(o, ",\"request_id\":");
    rc |= jsonw_cstr(o, b->request_id);
    rc |= buf_adds(o, "}}");
    return rc;
}

/* Queues the end of ended batch B (its summary after its results). Out of memory, B keeps
 * its handle and stored_pump tries again: a batch whose end never reached the store would
 * stay running for ever. */
static void sbatch_end_queue(struct sbatch *b)
{
    int rc = sbatch_summary(b, b->has_sum ? &b->sum : NULL) != 0
                 ? STORE_E_NOMEM
                 : store_batch_end(b->sb, b->cancel ? STORE_CANCELLED : STORE_DONE,
                                   buf_data(&b->line), buf_len(&b->line));
    if (rc == STORE_E_NOMEM) {
        return;
    }
    log_event("info", "batch_stored_end", "batch", b->id, "state", b->cancel ? "cancelled" : "done",
              NULL);
    b->end_queued = 1;
    store_batch_release(b->sb);
    b->sb = NULL;
}

/* B is over: its summary is queued after its results; B goes once that is committed. */
static void sbatch_end(struct sbatch *b, const struct dispatch_summary *sum)
{
    b->db = NULL;
    b->has_sum = sum != NULL;
    if (sum != NULL) {
        b->sum = *sum;
    }
    b->ended = 1;
    prepared_cleanup(&b->prep);
    upload_destroy(b->upload);
    b->upload = NULL;
    sbatch_end_queue(b);
}

static void sbatch_fail_missing(struct sbatch *b, int err, const char *message);

static void sbatch_on_done(void *ud, const struct dispatch_summary *sum)
{
    struct sbatch *b = ud;
    if (b->lost > 0) {
        /* Every job answered (SPEC §8): those whose result the store could not take fail. */
        b->lost = 0;
        sbatch_fail_missing(b, -BATCHD_E_INTERNAL, "out of memory recording the result");
    }
    sbatch_end(b, sum);
}

/* The jobs of B without a result fail with ERR and MESSAGE. */
static void sbatch_fail_missing(struct sbatch *b, int err, const char *message)
{
    for (int64_t i = store_batch_next_missing(b->sb, 0); i >= 0;
         i = store_batch_next_missing(b->sb, (uint32_t)i + 1)) {
        struct job_result r = {.index = (uint64_t)i, .err = err};
        r.text = message;
        r.text_len = strlen(message);
        buf_reset(&b->line);
        if (writer_result(&b->writer, &b->line, &r) == 0 && buf_len(&b->line) > 0) {
            sbatch_record(b, r.index, 0, buf_data(&b->line), buf_len(&b->line) - 1);
        }
        if ((uint64_t)i + 1 >= b->njobs) {
            break;
        }
    }
}

/* The jobs of B without a result fail with ERR and MESSAGE (a cancel before they ran, or a
 * batch that can no longer be read), and B ends. */
static void sbatch_fail_rest(struct sbatch *b, int err, const char *message)
{
    sbatch_fail_missing(b, err, message);
    sbatch_end(b, NULL);
}

/* ---------------------------------------------------------------- onto the dispatcher */

static void sbatch_job_at(void *ud, uint64_t i, struct dispatch_job *job)
{
    struct sbatch *b = ud;
    prepared_job_at(&b->prep, b->todo != NULL ? b->todo[i] : i, job);
}

/* Hands B to the dispatcher. Returns 0, or -1 when it has no room now (B waits). */
static int sbatch_submit(struct sbatch *b)
{
    struct server *s = b->srv;
    const struct batch_spec *sp = &b->prep.spec;
    int ints = prepared_all_ints(&b->prep);
    struct dispatch_batch_desc desc = {
        .njobs = b->todo != NULL ? b->ntodo : b->njobs,
        .params = sp->params,
        .chunksize = (size_t)sp->chunksize,
        .order = DISPATCH_ORDER_COMPLETED, /* results are recorded as they come */
        .timeout_ms = sp->timeout_ms >= 0 ? (uint64_t)sp->timeout_ms : s->cfg.job_timeout_ms,
        .deadline_ms = sp->deadline_ms,
        .blob_fd = upload_fd(b->upload),
        .job_at = sbatch_job_at,
        .ints = ints ? (b->todo != NULL ? b->ints : sp->ints) : NULL,
        .ints_op = b->prep.op,
        .on_result = sbatch_on_result,
        .on_block = b->todo == NULL && !sp->timing ? sbatch_on_block : NULL,
        .on_done = sbatch_on_done,
        .ud = b,
    };
    int err = 0;
    b->db = dispatch_submit(s->dispatch, &desc, &err);
    if (b->db == NULL) {
        return -1;
    }
    b->started_ns = ipc_now_ns();
    b->started_ms = wall_ms();
    b->paused = 0;
    store_batch_start(b->sb);
    stored_throttle(s);
    return 0;
}

/* The jobs of B still without a result, when some have one (a restart). Returns 0 or -1. */
static int sbatch_find_todo(struct sbatch *b)
{
    uint64_t n = 0;
    for (int64_t i = store_batch_next_missing(b->sb, 0); i >= 0 && (uint64_t)i < b->njobs;
         i = store_batch_next_missing(b->sb, (uint32_t)i + 1)) {
        n++;
        if ((uint64_t)i + 1 >= b->njobs) {
            break;
        }
    }
    b->ntodo = n;
    b->todo = malloc((n ? n : 1) * sizeof *b->todo);
    b->ints = prepared_all_ints(&b->prep) ? malloc((n ? n : 1) * sizeof *b->ints) : NULL;
    if (b->todo == NULL || (prepared_all_ints(&b->prep) && b->ints == NULL)) {
        return -1;
    }
    n = 0;
    for (int64_t i = store_batch_next_missing(b->sb, 0); i >= 0 && n < b->ntodo;
         i = store_batch_next_missing(b->sb, (uint32_t)i + 1)) {
        b->todo[n] = (uint64_t)i;
        if (b->ints != NULL) {
            b->ints[n] = b->prep.spec.ints[i];
        }
        n++;
    }
    return 0;
}

/* ---------------------------------------------------------------- from the store */

struct upload *stored_read_upload(struct store *st, const char *id, int *io)
{
    void *spec = NULL, *names_text = NULL;
    size_t spec_len = 0, names_len = 0;
    int rc = store_batch_blob(st, id, STORE_PART_SPEC, 0, &spec, &spec_len);
    *io = rc == STORE_E_IO || rc == STORE_E_NOMEM;
    if (rc != 0) {
        return NULL;
    }
    rc = store_batch_blob(st, id, STORE_PART_INPUT, 0, &names_text, &names_len);
    int form = rc == 0;
    if (rc == STORE_E_IO || rc == STORE_E_NOMEM) {
        *io = 1;
        free(spec);
        return NULL;
    }
    struct upload *u = upload_restored(form, UINT64_MAX / 4);
    json_t *names = form ? json_loadb(names_text, names_len, 0, NULL) : NULL;
    int bad =
        u == NULL || upload_restore_json(u, spec, spec_len) != 0 || (form && !json_is_array(names));
    for (size_t i = 0; !bad && form && i < json_array_size(names); i++) {
        void *data = NULL;
        size_t len = 0;
        int brc = store_batch_blob(st, id, STORE_PART_INPUT, (uint32_t)i + 1, &data, &len);
        *io |= brc == STORE_E_IO || brc == STORE_E_NOMEM;
        bad = brc != 0 ||
              upload_restore_file(u, json_string_value(json_array_get(names, i)), data, len) != 0;
        free(data);
    }
    json_decref(names);
    free(spec);
    free(names_text);
    if (bad) {
        upload_destroy(u);
        return NULL;
    }
    return u;
}

/* Starts batch ID of the store with its handle SB (taken over), or carries it on. */
static void stored_begin(struct server *s, const char *id, struct store_batch *sb)
{
    struct store_info info;
    if (sbatch_find(s, id) != NULL) {
        store_batch_release(sb); /* taken on already (stored_rescan found it first) */
        return;
    }
    struct sbatch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        store_batch_release(sb);
        s->stored_rescan = 1; /* it stays unfinished in the store: stored_pump finds it */
        return;
    }
    b->srv = s;
    b->sb = sb;
    snprintf(b->id, sizeof b->id, "%s", id);
    buf_init(&b->line, SIZE_MAX / 2);
    struct sbatch **tail = &s->stored_list; /* oldest first: the order they get room in */
    while (*tail != NULL) {
        tail = &(*tail)->next;
    }
    *tail = b;
    int grc = store_batch_get(s->store, NULL, STORE_ANY_OWNER, id, &info);
    if (grc != 0) {
        log_event("error", "store", "batch", id, "message", "cannot read the batch", NULL);
        sbatch_free(b);
        s->stored_rescan = grc == STORE_E_NOMEM || grc == STORE_E_IO;
        return;
    }
    snprintf(b->request_id, sizeof b->request_id, "%s", info.request_id);
    b->njobs = info.njobs;
    b->ok = info.nok;
    b->failed = info.nfailed;
    b->done_before = info.nok + info.nfailed;
    b->created_ms = info.created_ms;
    b->cancel = info.cancel_requested;
    struct batch_error e = {0};
    int io = 0;
    b->upload = stored_read_upload(s->store, id, &io);
    int rc = b->upload == NULL ? -1 : prepared_build(&b->prep, b->upload, UINT64_MAX, &e);
    writer_init(&b->writer, WRITER_NDJSON, b->prep.spec.timing, ipc_now_ns());
    if (rc != 0) {
        sbatch_fail_rest(b, -BATCHD_E_INTERNAL, "the stored batch can no longer be read");
        return;
    }
    if (b->cancel) {
        sbatch_fail_rest(b, -BATCHD_E_CANCELLED, batchd_err_message(-BATCHD_E_CANCELLED));
        return;
    }
    if (b->ok + b->failed > 0 && sbatch_find_todo(b) != 0) {
        sbatch_fail_rest(b, -BATCHD_E_INTERNAL, "out of memory");
        return;
    }
    if (b->ok + b->failed >= b->njobs) {
        sbatch_end(b, NULL); /* every job was answered before the restart */
        return;
    }
    sbatch_submit(b); /* else it waits for room: stored_pump */
}

static void stored_resume_one(void *arg, const char *id)
{
    struct server *s = arg;
    struct store_batch *sb = NULL;
    if (sbatch_find(s, id) != NULL) {
        return; /* live here (a rescan) */
    }
    int rc = store_batch_open(s->store, id, &sb);
    if (rc != 0) {
        log_event("error", "store", "batch", id, "message", store_err_message(rc), NULL);
        s->stored_rescan |= rc == STORE_E_NOMEM;
        return;
    }
    log_event("info", "batch_resumed", "batch", id, NULL);
    stored_begin(s, id, sb);
}

int stored_resume(struct server *s)
{
    if (s->store == NULL) {
        return 0;
    }
    int rc = store_unfinished(s->store, stored_resume_one, s);
    if (rc != 0 && store_is_cluster(s->store)) {
        s->stored_rescan = 1; /* Redis is not there yet: stored_pump asks again */
        return 0;
    }
    return rc == 0 ? 0 : -1;
}

/* Whether ended batch B's end is committed: then it goes (the store answers for it). Sets
 * b->recheck when that could not be read. */
static void sbatch_check_end(struct server *s, struct sbatch *b)
{
    struct store_info info;
    int rc = store_batch_get(s->store, NULL, STORE_ANY_OWNER, b->id, &info);
    b->recheck = rc == STORE_E_NOMEM || rc == STORE_E_IO;
    if (rc == 0 && (info.state == STORE_DONE || info.state == STORE_CANCELLED)) {
        sbatch_free(b); /* its end is committed: the store answers for it from now on */
    }
}

void stored_pump(struct server *s)
{
    if (s->stored_rescan && s->store != NULL) {
        s->stored_rescan = 0; /* a batch that could not be taken on: it is unfinished there */
        s->stored_rescan = store_unfinished(s->store, stored_resume_one, s) != 0;
    }
    for (struct sbatch *b = s->stored_list, *next; b != NULL; b = next) {
        next = b->next;
        if (b->ended && !b->end_queued) {
            sbatch_end_queue(b);
        } else if (b->recheck) {
            sbatch_check_end(s, b);
        }
    }
    for (struct sbatch *b = s->stored_list; b != NULL; b = b->next) {
        if (!b->ended && b->db == NULL && sbatch_submit(b) != 0) {
            return; /* still no room: the oldest waiting goes first */
        }
    }
}

void stored_started(struct server *s, const char *id, struct store_batch *sb)
{
    stored_begin(s, id, sb);
}

void stored_stop_all(struct server *s)
{
    while (s->stored_list != NULL) {
        struct sbatch *b = s->stored_list;
        /* Not a cancel: nothing is recorded, and the next start carries the batch on. */
        dispatch_batch_cancel(b->db);
        b->db = NULL;
        sbatch_free(b);
    }
}

int stored_running(const struct server *s)
{
    int n = 0;
    for (const struct sbatch *b = s->stored_list; b != NULL; b = b->next) {
        n += !b->ended;
    }
    return n;
}

/* ---------------------------------------------------------------- the routes' questions */

int stored_live(const struct server *s, const char *id, struct stored_live *out)
{
    const struct sbatch *b = sbatch_find(s, id);
    if (b == NULL) {
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->njobs = b->njobs;
    out->ok = b->ok;
    out->failed = b->failed;
    out->done_before = b->done_before;
    out->running = b->db != NULL ? (uint64_t)dispatch_batch_running(b->db) : 0;
    out->started = b->db != NULL;
    out->started_ms = b->started_ms;
    out->cancelling = b->cancel;
    out->ended = b->ended;
    out->progress_ms = b->prep.spec.progress_ms;
    double secs = b->started_ns != 0 ? (double)(ipc_now_ns() - b->started_ns) / 1e9 : 0.0;
    out->elapsed_s = secs;
    return 1;
}

int stored_cancel(struct server *s, const char *id)
{
    struct sbatch *b = sbatch_find(s, id);
    if (b == NULL) {
        return -1;
    }
    if (b->cancel || b->ended) {
        return 0;
    }
    b->cancel = 1;
    store_batch_cancel(b->sb); /* survives a restart: the batch then ends as cancelled */
    if (b->db != NULL) {
        dispatch_batch_stop(b->db); /* its answers come as results; on_done ends it */
    } else {
        sbatch_fail_rest(b, -BATCHD_E_CANCELLED, batchd_err_message(-BATCHD_E_CANCELLED));
    }
    return 0;
}

void stored_on_progress(struct server *s, const char *id)
{
    stored_throttle(s);
    struct sbatch *b = sbatch_find(s, id);
    if (b != NULL && b->ended && b->end_queued) {
        sbatch_check_end(s, b);
    }
}
