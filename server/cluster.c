/* Cluster mode on the server side (SPEC §9): chunks of stored batches claimed by this
 * replica's idle workers. A chunk runs the jobs of its range that have no recorded result
 * yet (a chunk taken over from a dead replica skips what that one recorded); each result goes
 * to the store, whose gate keeps exactly one per job over the cluster. When a chunk is done,
 * the store says whether the batch is complete: the replica that sees it first records the
 * summary (the end is recorded once: a second end is a no-op), then acks the chunk. A batch's
 * spec and inputs are read once per replica and kept while its chunks come. */
#include "cluster.h"

#include "cluster_fetch.h"
#include "internal.h"
#include "log.h"
#include "observe.h"
#include "stored.h"

#include "../api/errors.h"
#include "../api/jsonw.h"
#include "../workers/ipc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLUSTER_KEEP_NS 5000000000ull /* a batch's parsed spec is kept this long unused */
#define CLUSTER_HIGH_ROWS 65536u      /* results not yet recorded over which chunks pause */
#define CLUSTER_LOW_ROWS 16384u

#define CLUSTER_FETCH_RETRY_NS 500000000ull /* after the store could not be read */

struct cbatch {
    struct cbatch *next;
    struct server *srv;
    char id[STORE_ID_SIZE];
    struct upload *upload;
    struct prepared prep;
    int ready;    /* read back (or bad) */
    int fetching; /* being read back: its chunks wait */
    uint64_t retry_ns;
    int bad; /* the spec could not be read back: its jobs fail */
    int cancel;
    unsigned refs;
    uint64_t last_ns;
};

struct cchunk {
    struct cchunk *next;
    struct server *srv;
    struct cbatch *cb;
    struct store_chunk c; /* bits not kept */
    uint64_t *todo;
    int64_t *ints;
    uint64_t ntodo;
    struct dispatch_batch *db; /* NULL: waiting for room, or done */
    struct writer writer;
    struct buf line;
    uint64_t busy_ns;
    int done; /* ran: finishing in the store */
    int paused;
    int started; /* its batch was read back: it ran, runs, or waits for room */
};

struct cluster {
    struct cbatch *batches;
    struct cchunk *chunks;
    unsigned nchunks;
    unsigned since_check;
};

static struct cluster *cl(struct server *s)
{
    if (s->cluster == NULL) {
        s->cluster = calloc(1, sizeof *s->cluster);
    }
    return s->cluster;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- batches read back */

static struct cbatch *cbatch_find(struct cluster *c, const char *id)
{
    for (struct cbatch *b = c->batches; b != NULL; b = b->next) {
        if (strcmp(b->id, id) == 0) {
            return b;
        }
    }
    return NULL;
}

static void cbatch_free(struct cbatch *b)
{
    prepared_cleanup(&b->prep);
    upload_destroy(b->upload);
    free(b);
}

static void chunk_start(struct cchunk *k);

/* Batch B is read back: its waiting chunks start (or fail, when it cannot be rebuilt). */
static void cbatch_fetched(void *arg, struct upload *u, int io)
{
    struct cbatch *b = arg;
    b->fetching = 0;
    if (io) {
        b->retry_ns = ipc_now_ns() + CLUSTER_FETCH_RETRY_NS; /* cluster_pump asks again */
        return;
    }
    struct batch_error e = {0};
    b->upload = u;
    b->bad = u == NULL || prepared_build(&b->prep, u, UINT64_MAX, &e) != 0;
    b->ready = 1;
    struct cluster *c = b->srv->cluster;
    for (struct cchunk *k = c != NULL ? c->chunks : NULL, *next; k != NULL; k = next) {
        next = k->next;
        if (k->cb == b && !k->started) {
            chunk_start(k);
        }
    }
}

static void cbatch_fetch(struct cbatch *b)
{
    b->fetching = 1;
    if (cluster_fetch(b->srv->store, b->id, cbatch_fetched, b) != 0) {
        b->fetching = 0;
        b->retry_ns = ipc_now_ns() + CLUSTER_FETCH_RETRY_NS;
    }
}

/* Batch ID's spec and inputs, read from the store once per replica while its chunks come
 * (asynchronously: its chunks wait until it is there). NULL when out of memory. */
static struct cbatch *cbatch_get(struct server *s, struct cluster *c, const char *id)
{
    struct cbatch *b = cbatch_find(c, id);
    if (b != NULL) {
        return b;
    }
    b = calloc(1, sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    b->srv = s;
    snprintf(b->id, sizeof b->id, "%s", id);
    b->next = c->batches;
    c->batches = b;
    cbatch_fetch(b);
    return b;
}

/* ---------------------------------------------------------------- results */

static void chunk_throttle(struct server *s)
{
    struct store_stats ss;
    store_stats_get(s->store, &ss);
    for (struct cchunk *k = cl(s)->chunks; k != NULL; k = k->next) {
        if (k->db == NULL) {
            continue;
        }
        int hold = ss.pending_rows > (k->paused ? CLUSTER_LOW_ROWS : CLUSTER_HIGH_ROWS);
        if (hold != k->paused) {
            k->paused = hold;
            dispatch_batch_set_paused(k->db, hold);
        }
    }
}

static void chunk_record(struct cchunk *k, const struct job_result *r)
{
    buf_reset(&k->line);
    if (writer_result(&k->writer, &k->line, r) != 0 || buf_len(&k->line) == 0) {
        log_event("error", "cluster", "batch", k->c.id, "message", "out of memory", NULL);
        return;
    }
    if (store_chunk_result(k->srv->store, &k->c, (uint32_t)r->index, r->err == 0,
                           buf_data(&k->line), buf_len(&k->line) - 1) != 0) {
        log_event("error", "cluster", "batch", k->c.id, "message", "cannot queue a result", NULL);
    }
}

static void chunk_on_result(void *ud, const struct job_result *res)
{
    struct cchunk *k = ud;
    struct job_result r = *res;
    r.index = k->todo[res->index];
    observe_job(k->srv, &k->cb->prep, &r);
    chunk_record(k, &r);
    struct cluster *c = cl(k->srv);
    if (++c->since_check >= 64) {
        c->since_check = 0;
        chunk_throttle(k->srv);
    }
}

static void chunk_on_block(void *ud, uint64_t index, uint64_t count, const char *text, size_t len,
                           uint64_t busy_ns)
{
    struct cchunk *k = ud;
    observe_block(k->srv, &k->cb->prep, k->todo[index], count, busy_ns);
    const char *p = text, *end = text + len;
    for (uint64_t j = 0; j < count && p < end; j++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        /* The worker numbered the line in the chunk's own index space: renumber it. */
        static const char head[] = "{\"index\":";
        size_t hl = sizeof head - 1, d = hl;
        while (d < n && p[d] >= '0' && p[d] <= '9') {
            d++;
        }
        buf_reset(&k->line);
        if (n > hl && memcmp(p, head, hl) == 0 &&
            buf_printf(&k->line, "%s%llu", head, (unsigned long long)k->todo[index + j]) == 0 &&
            buf_add(&k->line, p + d, n - d) == 0) {
            store_chunk_result(k->srv->store, &k->c, (uint32_t)k->todo[index + j], 1,
                               buf_data(&k->line), buf_len(&k->line));
        }
        p += n + 1;
    }
    chunk_throttle(k->srv);
}

/* The summary line of a complete batch from what the store counted. */
static int chunk_summary(struct cchunk *k, const struct store_chunk_end *e, struct buf *o)
{
    buf_reset(o);
    int rc = buf_printf(
        o,
        "{\"summary\":{\"jobs\":%llu,\"ok\":%llu,\"failed\":%llu,"
        "\"order\":\"completed\",\"chunksize\":%llu,\"workers\":%d,\"elapsed_ms\":",
        (unsigned long long)e->njobs, (unsigned long long)e->nok, (unsigned long long)e->nfailed,
        (unsigned long long)(k->cb->bad ? 0 : k->cb->prep.spec.chunksize), k->srv->cfg.workers);
    rc |= jsonw_double(o, (double)(wall_ms() - e->created_ms));
    rc |= buf_adds(o, ",\"busy_ms\":");
    rc |= jsonw_double(o, e->busy_ms);
    if (e->cancel) {
        rc |= buf_adds(o, ",\"cancelled\":true");
    }
    rc |= buf_adds(o, ",\"batch\":");
    rc |= jsonw_cstr(o, k->c.id);
    rc |= buf_adds(o, ",\"request_id\":");
    rc |= jsonw_cstr(o, e->request_id);
    rc |= buf_adds(o, "}}");
    return rc;
}

static void chunk_free(struct cchunk *k)
{
    struct cluster *c = cl(k->srv);
    for (struct cchunk **pp = &c->chunks; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            c->nchunks--;
            break;
        }
    }
    if (k->cb != NULL) {
        k->cb->refs--;
        k->cb->last_ns = ipc_now_ns();
    }
    writer_cleanup(&k->writer);
    buf_cleanup(&k->line);
    free(k->todo);
    free(k->ints);
    free(k);
}

static void chunk_ended(void *arg, const struct store_chunk_end *e)
{
    struct cchunk *k = arg;
    struct server *s = k->srv;
    if (e == NULL) {
        /* The store is closing: the chunk stays unacked and runs again elsewhere. */
        chunk_free(k);
        return;
    }
    if (e->complete && !e->ended) {
        if (chunk_summary(k, e, &k->line) == 0) {
            store_chunk_end_batch(s->store, k->c.id, e->cancel ? STORE_CANCELLED : STORE_DONE,
                                  buf_data(&k->line), buf_len(&k->line));
            log_event("info", "batch_stored_end", "batch", k->c.id, "state",
                      e->cancel ? "cancelled" : "done", NULL);
        }
    }
    store_chunk_ack(s->store, &k->c); /* after the end, on the same connection */
    chunk_free(k);
}

/* K ran: its results are queued; once recorded, the store says if the batch is complete. */
static void chunk_finish(struct cchunk *k)
{
    k->db = NULL;
    k->done = 1;
    if (store_chunk_finish(k->srv->store, &k->c, (double)(k->busy_ns / 1000) / 1000.0, chunk_ended,
                           k) != 0) {
        store_chunk_drop(k->srv->store, &k->c);
        chunk_free(k);
    }
}

static void chunk_on_done(void *ud, const struct dispatch_summary *sum)
{
    struct cchunk *k = ud;
    k->busy_ns = sum != NULL ? sum->busy_ns : 0;
    chunk_finish(k);
}

/* Every job of K fails with ERR (a cancel before it ran, a batch that cannot be read). */
static void chunk_fail_all(struct cchunk *k, int err, const char *message)
{
    for (uint64_t i = 0; i < k->ntodo; i++) {
        struct job_result r = {.index = k->todo[i], .err = err, .worker = -1};
        r.text = message;
        r.text_len = strlen(message);
        chunk_record(k, &r);
    }
    chunk_finish(k);
}

/* ---------------------------------------------------------------- onto the dispatcher */

static void chunk_job_at(void *ud, uint64_t i, struct dispatch_job *job)
{
    struct cchunk *k = ud;
    prepared_job_at(&k->cb->prep, k->todo[i], job);
}

static int chunk_submit(struct cchunk *k)
{
    struct server *s = k->srv;
    const struct batch_spec *sp = &k->cb->prep.spec;
    /* A batch's deadline counts from its creation, whichever replica runs which chunk. */
    uint64_t deadline = sp->deadline_ms;
    if (deadline > 0) {
        int64_t spent = wall_ms() - k->c.created_ms;
        if (spent >= (int64_t)deadline) {
            chunk_fail_all(k, -BATCHD_E_TIMEOUT, "the batch deadline passed before this job ran");
            return 0;
        }
        deadline -= spent > 0 ? (uint64_t)spent : 0;
    }
    struct dispatch_batch_desc desc = {
        .njobs = k->ntodo,
        .params = sp->params,
        .chunksize = (size_t)sp->chunksize,
        .order = DISPATCH_ORDER_COMPLETED,
        .timeout_ms = sp->timeout_ms >= 0 ? (uint64_t)sp->timeout_ms : s->cfg.job_timeout_ms,
        .deadline_ms = deadline,
        .blob_fd = upload_fd(k->cb->upload),
        .job_at = chunk_job_at,
        .ints = k->ints,
        .ints_op = k->cb->prep.op,
        .on_result = chunk_on_result,
        .on_block = !sp->timing ? chunk_on_block : NULL,
        .on_done = chunk_on_done,
        .ud = k,
    };
    int err = 0;
    k->db = dispatch_submit(s->dispatch, &desc, &err);
    if (k->db == NULL) {
        return -1;
    }
    k->paused = 0;
    return 0;
}

/* A chunk claimed for this replica (from store_dispatch). */
static void cluster_on_chunk(void *arg, const struct store_chunk *sc)
{
    struct server *s = arg;
    struct cluster *c = cl(s);
    struct cchunk *k = c != NULL ? calloc(1, sizeof *k) : NULL;
    if (k == NULL) {
        store_chunk_drop(s->store, sc);
        return;
    }
    k->srv = s;
    k->c = *sc;
    k->c.bits = NULL;
    buf_init(&k->line, SIZE_MAX / 2);
    uint32_t n = sc->to > sc->from ? sc->to - sc->from : 0;
    k->todo = malloc((n ? n : 1) * sizeof *k->todo);
    k->cb = cbatch_get(s, c, sc->id);
    if (k->todo == NULL || k->cb == NULL) {
        store_chunk_drop(s->store, sc);
        buf_cleanup(&k->line);
        free(k->todo);
        free(k);
        return;
    }
    k->cb->refs++;
    k->next = c->chunks;
    c->chunks = k;
    c->nchunks++;
    for (uint32_t j = 0; j < n; j++) {
        if (!(sc->bits[j / 8] >> (j % 8) & 1)) {
            k->todo[k->ntodo++] = sc->from + j;
        }
    }
    log_event("debug", "chunk_claimed", "batch", sc->id, "entry", sc->entry, "reclaimed",
              sc->reclaimed ? "true" : "false", NULL);
    if (k->cb->ready || sc->cancel) {
        chunk_start(k); /* else once its batch is read back: cbatch_fetched */
    }
}

/* K's batch is read back (or K is cancelled): K runs, or fails at once. */
static void chunk_start(struct cchunk *k)
{
    struct cbatch *cb = k->cb;
    k->started = 1;
    writer_init(&k->writer, WRITER_NDJSON, cb->ready && !cb->bad ? cb->prep.spec.timing : 0,
                ipc_now_ns());
    if (k->c.cancel || cb->cancel) {
        cb->cancel = 1;
        chunk_fail_all(k, -BATCHD_E_CANCELLED, batchd_err_message(-BATCHD_E_CANCELLED));
        return;
    }
    if (cb->bad) {
        chunk_fail_all(k, -BATCHD_E_INTERNAL, "the stored batch can no longer be read");
        return;
    }
    if (k->ntodo == 0) {
        chunk_finish(k); /* everything was recorded by the replica it came from */
        return;
    }
    if (prepared_all_ints(&cb->prep)) {
        k->ints = malloc(k->ntodo * sizeof *k->ints);
        if (k->ints == NULL) {
            chunk_fail_all(k, -BATCHD_E_INTERNAL, "out of memory");
            return;
        }
        for (uint64_t i = 0; i < k->ntodo; i++) {
            k->ints[i] = cb->prep.spec.ints[k->todo[i]];
        }
    }
    chunk_submit(k); /* else it waits for room: cluster_pump */
}

/* ---------------------------------------------------------------- the loop's turn */

void cluster_pump(struct server *s)
{
    if (s->store == NULL || !store_is_cluster(s->store) || s->draining || s->closing) {
        return;
    }
    struct cluster *c = cl(s);
    if (c == NULL) {
        return;
    }
    unsigned waiting = 0;
    for (struct cchunk *k = c->chunks; k != NULL; k = k->next) {
        if (k->started && !k->done && k->db == NULL && chunk_submit(k) != 0) {
            waiting++;
        }
    }
    uint64_t now = ipc_now_ns();
    for (struct cbatch **pp = &c->batches; *pp != NULL;) {
        struct cbatch *b = *pp;
        if (!b->ready && !b->fetching && now >= b->retry_ns) {
            cbatch_fetch(b); /* the store could not be read a moment ago */
        }
        if (b->refs == 0 && !b->fetching && now - b->last_ns > CLUSTER_KEEP_NS) {
            *pp = b->next;
            cbatch_free(b);
        } else {
            pp = &b->next;
        }
    }
    /* As many chunks as workers: each keeps one busy, and the others are left to the other
     * replicas. Held back while results wait for Redis. */
    struct store_stats ss;
    store_stats_get(s->store, &ss);
    unsigned running = c->nchunks;
    unsigned want =
        waiting == 0 && ss.pending_rows < CLUSTER_HIGH_ROWS && running < (unsigned)s->cfg.workers
            ? (unsigned)s->cfg.workers - running
            : 0;
    store_claim(s->store, want, cluster_on_chunk, s);
}

void cluster_on_cancel(struct server *s, const char *id)
{
    struct cluster *c = s->cluster;
    stored_cancel(s, id); /* a batch that runs on this replica only */
    struct cbatch *b = c != NULL ? cbatch_find(c, id) : NULL;
    if (b == NULL || b->cancel) {
        return;
    }
    b->cancel = 1;
    log_event("info", "batch_cancel_seen", "batch", id, NULL);
    for (struct cchunk *k = c->chunks, *next; k != NULL; k = next) {
        next = k->next;
        if (k->cb != b || k->done) {
            continue;
        }
        if (k->db != NULL) {
            dispatch_batch_stop(k->db); /* its answers come as results; on_done finishes it */
        } else if (!k->started) {
            chunk_start(k); /* fails cancelled at once */
        } else {
            chunk_fail_all(k, -BATCHD_E_CANCELLED, batchd_err_message(-BATCHD_E_CANCELLED));
        }
    }
}

void cluster_stop_all(struct server *s)
{
    struct cluster *c = s->cluster;
    if (c == NULL) {
        return;
    }
    for (struct cchunk *k = c->chunks, *next; k != NULL; k = next) {
        next = k->next;
        if (k->done) {
            continue; /* finishing in the store: store_close answers it (chunk_ended) */
        }
        if (k->db != NULL) {
            dispatch_batch_cancel(k->db); /* nothing more recorded for it */
        }
        k->db = NULL;
        store_chunk_drop(s->store, &k->c);
        chunk_free(k);
    }
}

void cluster_free(struct server *s)
{
    struct cluster *c = s->cluster;
    if (c == NULL) {
        return;
    }
    while (c->chunks != NULL) {
        chunk_free(c->chunks);
    }
    while (c->batches != NULL) {
        struct cbatch *b = c->batches;
        c->batches = b->next;
        cbatch_free(b);
    }
    free(c);
    s->cluster = NULL;
}
