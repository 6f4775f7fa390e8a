/* The embedded store: SQLite (Debian's 3.40) in --state-dir/batchd.db, behind store.h.
 *
 * Durability. WAL with synchronous=FULL: every commit is fsynced before its outcome is
 * reported, so
 *   - a process crash (SIGKILL, abort) loses nothing that was committed: a created batch
 *     whose store_done_fn ran (the server's 202) and every result up to a batch's committed
 *     seq stay; what was only queued is lost, and the server runs those jobs again;
 *   - a power cut or an OS crash loses nothing committed either (each COMMIT waited for the
 *     fsync of the WAL), provided the disk honours flushes. WAL+NORMAL would roll back to
 *     the last checkpoint there: cheaper per commit, but an accepted batch could vanish.
 * FULL costs one fsync per commit, and commits are grouped (below; sq_writer.c), so the cost
 * is one fsync per flush of up to flush_rows results, not per result.
 *
 * Never stalling the loop. Every write goes through a queue to one writer thread that owns
 * the write connection: results wait until flush_rows are queued or the oldest has waited
 * flush_ms, then everything queued commits in one BEGIN IMMEDIATE transaction (group
 * commit, creations and ends included). The loop only copies a line and appends to the
 * queue under a mutex. wal_autocheckpoint is off (a commit that crosses the automatic
 * checkpoint stalls for ms, TECH-NOTES); the writer runs a PASSIVE checkpoint itself at
 * most every 20 ms after commits or when idle, and journal_size_limit keeps the WAL from
 * staying large. Reads run on the loop thread on a second, read-only connection: in WAL
 * they see the last commit and never wait for the writer.
 *
 * Exactly once. Each open batch has a handle with a bitmap of the job indexes that have a
 * result (queued or committed), rebuilt from the database when a batch is opened again after
 * a restart; a second result of a job is refused there. UNIQUE(bno, idx) in the database is
 * the backstop (INSERT OR IGNORE, counted in dup_ignored). A result's seq is assigned by the
 * writer inside the commit, so seqs are dense and in commit order.
 *
 * Also: auto_vacuum=INCREMENTAL set before the first table (expiry gives space back),
 * secure_delete off (no zeroing of freed pages), prepared statements kept for the life of
 * the store. Start-up refuses an unwritable or full state dir and a file that is not a
 * batchd database or fails quick_check (files up to QUICK_CHECK_MAX), with a message.
 *
 * This file: the ops table, store_sqlite_open and close, and the loop side (handles, the
 * queueing of writes, dispatch of finished ones). Not here: opening and its refusals
 * (sq_open.c), the writer thread (sq_writer.c), reads (sq_read.c), forget and expiry
 * (sq_expire.c), shared helpers (sq_util.c); sq_internal.h holds what they share. */
#include "sq_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------- */
/* the loop side */

static int sq_fd(const struct store *st)
{
    return sq_of(st)->efd;
}

static struct sq_batch *find_handle(struct sq_store *sq, const char *id)
{
    for (struct sq_batch *sb = sq->handles; sb != NULL; sb = sb->next) {
        if (strcmp(sb->id, id) == 0) {
            return sb;
        }
    }
    return NULL;
}

static struct sq_batch *load_handle(struct sq_store *sq, const char *id, int *rc);

static void sq_dispatch(struct store *st)
{
    struct sq_store *sq = sq_of(st);
    uint64_t cnt;
    ssize_t n = read(sq->efd, &cnt, sizeof cnt);
    (void)n;

    /* The handles stay on the progress list (w_progress set) while the callbacks run, so
     * that the writer leaves w_pnext alone; one that advanced meanwhile goes back on it. */
    pthread_mutex_lock(&sq->mu);
    struct sq_batch *prog = sq->progress;
    sq->progress = NULL;
    for (struct sq_batch *sb = prog; sb != NULL; sb = sb->w_pnext) {
        sb->committed_seq = sb->w_committed;
    }
    struct wop *done = sq->done_head;
    sq->done_head = sq->done_tail = NULL;
    pthread_mutex_unlock(&sq->mu);

    for (struct sq_batch *sb = prog; sb != NULL; sb = sb->w_pnext) {
        if (sq->cfg.on_progress != NULL) {
            sq->cfg.on_progress(sq->cfg.arg, sb->id, sb->committed_seq);
        }
    }
    int again = 0;
    pthread_mutex_lock(&sq->mu);
    for (struct sq_batch *sb = prog; sb != NULL;) {
        struct sq_batch *next = sb->w_pnext;
        if (sb->w_committed != sb->committed_seq) {
            sb->w_pnext = sq->progress;
            sq->progress = sb;
            again = 1;
        } else {
            sb->w_progress = 0;
        }
        sb = next;
    }
    pthread_mutex_unlock(&sq->mu);
    if (again) {
        sq_writer_notify(sq);
    }
    while (done != NULL) {
        struct wop *op = done;
        done = done->next;
        struct sq_batch *sb = NULL;
        if (op->kind == OP_CREATE && op->rc == STORE_OK && op->made != NULL) {
            sb = op->made;
            op->made = NULL;
            sb->urefs = 1;
            sb->next = sq->handles;
            sq->handles = sb;
        } else if (op->kind == OP_CREATE && op->rc == STORE_REPLAYED) {
            int lrc = 0;
            sb = load_handle(sq, op->id, &lrc); /* NULL once ended: read results instead */
        }
        if (op->done != NULL) {
            op->done(op->arg, op->rc, sb != NULL ? &sb->base : NULL, op->rc >= 0 ? op->id : "");
        }
        sq_wop_free(op);
    }
    /* Handles given back and with no write left in flight are freed. */
    pthread_mutex_lock(&sq->mu);
    for (struct sq_batch **pp = &sq->handles; *pp != NULL;) {
        struct sq_batch *sb = *pp;
        if (sb->urefs == 0 && sb->w_ops == 0 && !sb->w_progress) {
            *pp = sb->next;
            sq_batch_free(sb);
        } else {
            pp = &sb->next;
        }
    }
    pthread_mutex_unlock(&sq->mu);
}

static int sq_sync(struct store *st)
{
    struct sq_store *sq = sq_of(st);
    pthread_mutex_lock(&sq->mu);
    uint64_t target = sq->enq_count, gen = sq->fail_gen;
    pthread_cond_signal(&sq->cv_work);
    int rc = 0;
    while (sq->fin_count < target) {
        if (sq->fail_gen != gen) {
            rc = sq->last_rc;
            break;
        }
        /* Results wait for flush_ms unless something urgent is queued: tell the writer. */
        sq->urgent++;
        pthread_cond_signal(&sq->cv_work);
        pthread_cond_wait(&sq->cv_done, &sq->mu);
        sq->urgent--;
    }
    pthread_mutex_unlock(&sq->mu);
    sq_dispatch(st);
    return rc;
}

static int sq_create(struct store *st, const struct store_new_batch *nb, store_done_fn *done,
                     void *arg)
{
    struct sq_store *sq = sq_of(st);
    if (nb == NULL || nb->owner_len > STORE_OWNER_MAX || (nb->ninputs > 0 && nb->inputs == NULL) ||
        (nb->idem_key != NULL && strlen(nb->idem_key) > STORE_KEY_MAX)) {
        return STORE_E_INVALID;
    }
    struct wop *op = calloc(1, sizeof *op);
    if (op == NULL) {
        return STORE_E_NOMEM;
    }
    op->kind = OP_CREATE;
    op->nb = *nb;
    op->done = done;
    op->arg = arg;
    op->now = sq_now(sq);
    memcpy(op->owner, nb->owner != NULL ? nb->owner : sq_empty, nb->owner_len);
    op->owner_len = nb->owner_len;
    if (nb->ninputs > 0) {
        op->inputs = malloc(nb->ninputs * sizeof *op->inputs);
        if (op->inputs == NULL) {
            sq_wop_free(op);
            return STORE_E_NOMEM;
        }
        memcpy(op->inputs, nb->inputs, nb->ninputs * sizeof *op->inputs);
        op->nb.inputs = op->inputs;
    }
    if (nb->idem_key != NULL) {
        op->key = strdup(nb->idem_key);
        if (op->key == NULL) {
            sq_wop_free(op);
            return STORE_E_NOMEM;
        }
    }
    sq_writer_enqueue(sq, op);
    return 0;
}

/* A handle for ID: the one in use, or a new one loaded from the database. */
static struct sq_batch *load_handle(struct sq_store *sq, const char *id, int *rc)
{
    struct sq_batch *sb = find_handle(sq, id);
    if (sb != NULL) {
        if (sb->ended) {
            *rc = STORE_E_ENDED;
            return NULL;
        }
        sb->urefs++;
        *rc = 0;
        return sb;
    }
    sqlite3_stmt *s = sq->r[R_OPEN];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int src = sqlite3_step(s);
    if (src != SQLITE_ROW) {
        sq_finish(s);
        *rc = src == SQLITE_DONE ? STORE_E_NOT_FOUND : sq_rc(src);
        return NULL;
    }
    int64_t bno = sqlite3_column_int64(s, 0);
    uint32_t njobs = (uint32_t)sqlite3_column_int64(s, 1);
    int state = sqlite3_column_int(s, 2);
    sq_finish(s);
    if (state != STORE_QUEUED && state != STORE_RUNNING) {
        *rc = STORE_E_ENDED;
        return NULL;
    }
    sb = sq_batch_new(sq, id, bno, njobs);
    if (sb == NULL) {
        *rc = STORE_E_NOMEM;
        return NULL;
    }
    s = sq->r[R_OPEN_IDX];
    sqlite3_bind_int64(s, 1, bno);
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(s, 0);
        if (idx >= 0 && idx < (int64_t)njobs) {
            sq_bit_set(sb->bits, (uint32_t)idx);
        }
    }
    sq_finish(s);
    if (src == SQLITE_DONE) {
        s = sq->r[R_OPEN_SEQ];
        sqlite3_bind_int64(s, 1, sq_key_lo(bno));
        sqlite3_bind_int64(s, 2, sq_key_hi(bno));
        src = sqlite3_step(s);
        if (src == SQLITE_ROW) {
            sb->w_seq = sqlite3_column_type(s, 0) == SQLITE_NULL
                            ? 0
                            : (uint64_t)sqlite3_column_int64(s, 0) & 0xffffffffu;
            src = SQLITE_DONE;
        }
        sq_finish(s);
    }
    if (src != SQLITE_DONE) {
        sq_batch_free(sb);
        *rc = sq_rc(src);
        return NULL;
    }
    sb->committed_seq = sb->w_seq;
    sb->w_committed = sb->w_seq;
    sb->urefs = 1;
    sb->next = sq->handles;
    sq->handles = sb;
    *rc = 0;
    return sb;
}

static int sq_open_batch(struct store *st, const char *id, struct store_batch **out)
{
    int rc = 0;
    struct sq_batch *sb = load_handle(sq_of(st), id, &rc);
    *out = sb != NULL ? &sb->base : NULL;
    return rc;
}

static void sq_release(struct store_batch *b)
{
    struct sq_batch *sb = (struct sq_batch *)b;
    if (sb->urefs > 0) {
        sb->urefs--;
    }
}

static const char *sq_batch_id(const struct store_batch *b)
{
    return ((const struct sq_batch *)b)->id;
}

static struct wop *op_new(struct sq_batch *sb, int kind, const void *data, size_t len)
{
    struct wop *op = malloc(sizeof *op + len);
    if (op == NULL) {
        return NULL;
    }
    /* Only the fields a result or an end uses are set: the rest stay unused. */
    op->next = NULL;
    op->kind = kind;
    op->sb = sb;
    op->seq = 0;
    op->len = len;
    op->now = 0;
    op->inputs = NULL;
    op->key = NULL;
    op->made = NULL;
    if (len > 0) {
        memcpy(op->data, data, len);
    }
    return op;
}

static int sq_result_add(struct store_batch *b, uint32_t index, int ok, const void *line,
                         size_t len)
{
    struct sq_batch *sb = (struct sq_batch *)b;
    if (sb->ended) {
        return STORE_E_ENDED;
    }
    if (index >= sb->njobs || (len > 0 && line == NULL)) {
        return STORE_E_INVALID;
    }
    if (sq_bit_get(sb->bits, index)) {
        return STORE_E_DUPLICATE;
    }
    struct wop *op = op_new(sb, OP_RESULT, line, len);
    if (op == NULL) {
        return STORE_E_NOMEM;
    }
    op->index = index;
    op->ok = ok;
    sq_bit_set(sb->bits, index);
    sq_writer_enqueue(sb->sq, op);
    return 0;
}

static int64_t sq_next_missing(const struct store_batch *b, uint32_t from)
{
    const struct sq_batch *sb = (const struct sq_batch *)b;
    for (uint32_t i = from; i < sb->njobs; i++) {
        if ((i & 7) == 0 && sb->bits[i >> 3] == 0xff && i + 8 <= sb->njobs) {
            i += 7;
            continue;
        }
        if (!sq_bit_get(sb->bits, i)) {
            return i;
        }
    }
    return -1;
}

static uint64_t sq_committed_seq(const struct store_batch *b)
{
    return ((const struct sq_batch *)b)->committed_seq;
}

static int queue_simple(struct store_batch *b, int kind, int state, const void *data, size_t len)
{
    struct sq_batch *sb = (struct sq_batch *)b;
    if (sb->ended) {
        return STORE_E_ENDED;
    }
    struct wop *op = op_new(sb, kind, data, len);
    if (op == NULL) {
        return STORE_E_NOMEM;
    }
    op->ok = state;
    op->now = sq_now(sb->sq);
    if (kind == OP_END) {
        sb->ended = 1;
    }
    sq_writer_enqueue(sb->sq, op);
    return 0;
}

static int sq_start(struct store_batch *b)
{
    return queue_simple(b, OP_START, 0, NULL, 0);
}

static int sq_cancel(struct store_batch *b)
{
    return queue_simple(b, OP_CANCEL, 0, NULL, 0);
}

static int sq_end(struct store_batch *b, int state, const void *summary, size_t len)
{
    if (state != STORE_DONE && state != STORE_CANCELLED) {
        return STORE_E_INVALID;
    }
    return queue_simple(b, OP_END, state, summary, len);
}

/* Fills OUT from a row of SQ_INFO_COLS; returns 1 if the row's owner is OWNER. */
static int sq_forget(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                     store_done_fn *done, void *arg)
{
    struct sq_store *sq = sq_of(st);
    if (id == NULL || !store_id_valid(id) || owner_len > STORE_OWNER_MAX) {
        return STORE_E_INVALID;
    }
    struct wop *op = calloc(1, sizeof *op);
    if (op == NULL) {
        return STORE_E_NOMEM;
    }
    op->kind = OP_FORGET;
    op->done = done;
    op->arg = arg;
    snprintf(op->id, sizeof op->id, "%s", id);
    memcpy(op->owner, owner != NULL ? owner : sq_empty, owner_len);
    op->owner_len = owner_len;
    sq_writer_enqueue(sq, op);
    return 0;
}

static int sq_expire(struct store *st, int64_t now_ms)
{
    struct wop *op = calloc(1, sizeof *op);
    if (op == NULL) {
        return STORE_E_NOMEM;
    }
    op->kind = OP_EXPIRE;
    op->now = now_ms;
    sq_writer_enqueue(sq_of(st), op);
    return 0;
}

static void sq_stats(struct store *st, struct store_stats *out)
{
    struct sq_store *sq = sq_of(st);
    pthread_mutex_lock(&sq->mu);
    *out = sq->stats;
    pthread_mutex_unlock(&sq->mu);
}

/* ------------------------------------------------------------------------------------- */
/* open and close */

static void sq_free(struct sq_store *sq)
{
    for (int i = 0; i < W_COUNT; i++) {
        sqlite3_finalize(sq->w[i]);
    }
    for (int i = 0; i < R_COUNT; i++) {
        sqlite3_finalize(sq->r[i]);
    }
    sqlite3_close(sq->wdb);
    sqlite3_close(sq->rdb);
    while (sq->head != NULL) {
        struct wop *op = sq->head;
        sq->head = op->next;
        sq_wop_free(op);
    }
    while (sq->handles != NULL) {
        struct sq_batch *sb = sq->handles;
        sq->handles = sb->next;
        sq_batch_free(sb);
    }
    if (sq->efd >= 0) {
        close(sq->efd);
    }
    if (sq->lock_fd >= 0) {
        close(sq->lock_fd);
    }
    pthread_mutex_destroy(&sq->mu);
    pthread_cond_destroy(&sq->cv_work);
    pthread_cond_destroy(&sq->cv_done);
    free(sq);
}

static void sq_close(struct store *st)
{
    struct sq_store *sq = sq_of(st);
    if (sq->thread_started) {
        pthread_mutex_lock(&sq->mu);
        sq->stop = 1;
        pthread_cond_signal(&sq->cv_work);
        pthread_mutex_unlock(&sq->mu);
        pthread_join(sq->thread, NULL);
        sq_dispatch(st);
    }
    sq_free(sq);
}

static const struct store_ops sq_ops;

int store_sqlite_open(const struct store_config *cfg, struct store **out, char *err, size_t errlen)
{
    *out = NULL;
    sq_errf(err, errlen, "%s", "");
    if (cfg == NULL || cfg->state_dir == NULL || cfg->state_dir[0] == '\0') {
        sq_errf(err, errlen, "no state dir given");
        return STORE_E_INVALID;
    }
    int rc = sq_open_check_dir(cfg->state_dir, err, errlen);
    if (rc != 0) {
        return rc;
    }
    struct sq_store *sq = calloc(1, sizeof *sq);
    if (sq == NULL) {
        sq_errf(err, errlen, "out of memory");
        return STORE_E_NOMEM;
    }
    sq->base.ops = &sq_ops;
    sq->cfg = *cfg;
    sq->cfg.state_dir = NULL; /* not kept: the caller's string */
    if (sq->cfg.flush_rows == 0) {
        sq->cfg.flush_rows = 1000;
    }
    if (sq->cfg.flush_ms == 0) {
        sq->cfg.flush_ms = 10;
    }
    if (sq->cfg.result_ttl_ms <= 0) {
        sq->cfg.result_ttl_ms = 24ll * 3600 * 1000;
    }
    sq->efd = -1;
    sq->lock_fd = -1;
    pthread_mutex_init(&sq->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sq->cv_work, &ca);
    pthread_cond_init(&sq->cv_done, &ca);
    pthread_condattr_destroy(&ca);
    int n = snprintf(sq->path, sizeof sq->path, "%s/batchd.db", cfg->state_dir);
    if (n < 0 || (size_t)n >= sizeof sq->path) {
        sq_errf(err, errlen, "state dir path too long");
        rc = STORE_E_INVALID;
        goto out;
    }
    rc = sq_open_lock_dir(sq, cfg->state_dir, err, errlen);
    if (rc != 0) {
        goto out;
    }
    rc = sq_open_db(sq, err, errlen);
    if (rc != 0) {
        goto out;
    }
    sq->stats.bytes = (uint64_t)sq->total_bytes;
    sq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sq->efd < 0) {
        sq_errf(err, errlen, "eventfd: %s", strerror(errno));
        rc = STORE_E_IO;
        goto out;
    }
    if (pthread_create(&sq->thread, NULL, sq_writer_main, sq) != 0) {
        sq_errf(err, errlen, "cannot start the store's writer thread");
        rc = STORE_E_NOMEM;
        goto out;
    }
    sq->thread_started = 1;
    *out = &sq->base;
    return 0;
out:
    sq_free(sq);
    return rc;
}

/* clang-format off */
static const struct store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .fd = sq_fd,
    .dispatch = sq_dispatch,
    .sync = sq_sync,
    .batch_create = sq_create,
    .batch_open = sq_open_batch,
    .batch_release = sq_release,
    .batch_id = sq_batch_id,
    .result_add = sq_result_add,
    .next_missing = sq_next_missing,
    .committed_seq = sq_committed_seq,
    .batch_start = sq_start,
    .batch_cancel = sq_cancel,
    .batch_end = sq_end,
    .batch_get = sq_read_get,
    .batch_list = sq_read_list,
    .results_read = sq_read_results,
    .results_by_index = sq_read_by_index,
    .batch_blob = sq_read_blob,
    .unfinished = sq_read_unfinished,
    .batch_forget = sq_forget,
    .expire = sq_expire,
    .stats = sq_stats,
    .batch_counts = sq_read_counts,
};
/* clang-format on */
