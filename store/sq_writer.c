/* The writer thread of the SQLite store: the write queue, group commit of everything queued
 * in one transaction, retries after a failure, and the PASSIVE checkpoints. Reads and the
 * loop-side bookkeeping are elsewhere (sq_read.c, store_sqlite.c). */
#include "sq_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Appends OP to the write queue and wakes the writer when it has reason to run. */
void sq_writer_enqueue(struct sq_store *sq, struct wop *op)
{
    pthread_mutex_lock(&sq->mu);
    op->next = NULL;
    if (sq->tail != NULL) {
        sq->tail->next = op;
    } else {
        sq->head = op;
    }
    sq->tail = op;
    sq->enq_count++;
    if (op->sb != NULL) {
        op->sb->w_ops++;
    }
    if (op->kind == OP_RESULT) {
        if (sq->queued_rows == 0) {
            sq->first_row_ns = sq_mono_ns();
        }
        sq->queued_rows++;
        sq->stats.pending_rows = sq->queued_rows;
        if (sq->queued_rows == sq->cfg.flush_rows) {
            pthread_cond_signal(&sq->cv_work);
        } else if (sq->queued_rows == 1) {
            pthread_cond_signal(&sq->cv_work); /* starts its flush_ms clock */
        }
    } else {
        sq->urgent++;
        pthread_cond_signal(&sq->cv_work);
    }
    pthread_mutex_unlock(&sq->mu);
}

/* ------------------------------------------------------------------------------------- */
/* the writer thread */

/* Looks OP's idempotency key up: *FOUND when a batch has it (then OP's id and rc say which
 * batch, and whether this is a replay or a key reused for another request). */
static int w_create_key(struct sq_store *sq, struct wop *op, int *found)
{
    sqlite3_stmt *s = sq->w[W_FIND_KEY];
    const struct store_new_batch *nb = &op->nb;
    *found = 0;
    sq_bind_owner(s, 1, op->owner, op->owner_len);
    sqlite3_bind_text(s, 2, op->key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const void *fp = sqlite3_column_blob(s, 1);
        int same =
            sqlite3_column_bytes(s, 1) == 32 && fp != NULL && memcmp(fp, nb->fingerprint, 32) == 0;
        sq_copy_text(op->id, sizeof op->id, sqlite3_column_text(s, 0));
        op->rc = same ? STORE_REPLAYED : STORE_E_KEY_REUSED;
        *found = 1;
        sq_finish(s);
        return SQLITE_OK;
    }
    sq_finish(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Writes the uploaded files of batch BNO, each in chunks of at most SQ_CHUNK bytes. */
static int w_create_inputs(struct sq_store *sq, const struct store_new_batch *nb, int64_t bno)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *s = sq->w[W_INSERT_INPUT];
    for (size_t i = 0; i < nb->ninputs; i++) {
        const unsigned char *p = nb->inputs[i].data;
        size_t left = nb->inputs[i].len;
        int64_t chunk = 0;
        do {
            size_t n = left < SQ_CHUNK ? left : SQ_CHUNK;
            sqlite3_bind_int64(s, 1, bno);
            sqlite3_bind_int64(s, 2, (int64_t)i);
            sqlite3_bind_int64(s, 3, chunk++);
            sqlite3_bind_blob64(s, 4, n > 0 ? (const void *)p : (const void *)sq_empty, n,
                                SQLITE_STATIC);
            rc = sq_step_done(s);
            if (rc != SQLITE_OK) {
                return rc;
            }
            p += n;
            left -= n;
        } while (left > 0);
    }
    return rc;
}

static int w_create(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    sqlite3_stmt *s = NULL;
    int rc = SQLITE_OK;
    const struct store_new_batch *nb = &op->nb;

    if (op->key != NULL) {
        int found = 0;
        rc = w_create_key(sq, op, &found);
        if (rc != SQLITE_OK || found) {
            return rc;
        }
    }
    int64_t bytes = (int64_t)nb->spec_len;
    for (size_t i = 0; i < nb->ninputs; i++) {
        bytes += (int64_t)nb->inputs[i].len;
    }
    if (sq->cfg.max_bytes > 0 &&
        (uint64_t)(sq->total_bytes + tx->bytes + bytes) > sq->cfg.max_bytes) {
        op->rc = STORE_E_FULL;
        return SQLITE_OK;
    }
    store_id_make(op->now, op->id);
    s = sq->w[W_INSERT_BATCH];
    sqlite3_bind_text(s, 1, op->id, -1, SQLITE_STATIC);
    sq_bind_owner(s, 2, op->owner, op->owner_len);
    if (op->key != NULL) {
        sqlite3_bind_text(s, 3, op->key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 4, nb->fingerprint, 32, SQLITE_STATIC);
    }
    sqlite3_bind_int64(s, 5, nb->njobs);
    sqlite3_bind_text(s, 6, nb->op != NULL ? nb->op : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, nb->request_id != NULL ? nb->request_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, op->now);
    sqlite3_bind_blob64(s, 9, nb->spec_len > 0 ? nb->spec : (const void *)sq_empty, nb->spec_len,
                        SQLITE_STATIC);
    sqlite3_bind_int64(s, 10, bytes);
    rc = sq_step_done(s);
    if (rc != SQLITE_OK) {
        return rc;
    }
    int64_t bno = sqlite3_last_insert_rowid(sq->wdb);
    rc = w_create_inputs(sq, nb, bno);
    if (rc != SQLITE_OK) {
        return rc;
    }
    op->made = sq_batch_new(sq, op->id, bno, nb->njobs);
    if (op->made == NULL) {
        return SQLITE_NOMEM;
    }
    tx->bytes += bytes;
    op->rc = STORE_OK;
    return SQLITE_OK;
}

static void touch(struct txn *tx, struct sq_batch *sb)
{
    if (!sb->w_touched) {
        sb->w_touched = 1;
        sb->w_tnext = tx->touched;
        tx->touched = sb;
    }
}

static int w_result(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    struct sq_batch *sb = op->sb;
    sqlite3_stmt *s = sq->w[W_INSERT_RESULT];
    uint64_t seq = sb->w_seq + 1;
    tx->rows++;
    sqlite3_bind_int64(s, 1, sq_key_lo(sb->bno) | (int64_t)seq);
    sqlite3_bind_int64(s, 2, sb->bno);
    sqlite3_bind_int64(s, 3, op->index);
    sqlite3_bind_int(s, 4, op->ok ? 1 : 0);
    sqlite3_bind_blob64(s, 5, op->len > 0 ? (const void *)op->data : (const void *)sq_empty,
                        op->len, SQLITE_STATIC);
    int rc = sq_step_done(s);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (sqlite3_changes(sq->wdb) == 0) {
        tx->dups++; /* the job had a result already: the database keeps the first */
        op->seq = 0;
        return SQLITE_OK;
    }
    op->seq = seq;
    sb->w_seq = seq;
    sb->w_nok += op->ok ? 1 : 0;
    sb->w_nfailed += op->ok ? 0 : 1;
    sb->w_bytes += (int64_t)op->len;
    touch(tx, sb);
    return SQLITE_OK;
}

static int w_start(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    (void)tx;
    sqlite3_stmt *s = sq->w[W_START];
    sqlite3_bind_int64(s, 1, op->sb->bno);
    sqlite3_bind_int64(s, 2, op->now);
    return sq_step_done(s);
}

static int w_cancel(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    (void)tx;
    sqlite3_stmt *s = sq->w[W_CANCEL];
    sqlite3_bind_int64(s, 1, op->sb->bno);
    return sq_step_done(s);
}

static int w_end(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    sqlite3_stmt *s = sq->w[W_END];
    sqlite3_bind_int64(s, 1, op->sb->bno);
    sqlite3_bind_int(s, 2, op->ok);
    sqlite3_bind_blob64(s, 3, op->len > 0 ? (const void *)op->data : (const void *)sq_empty,
                        op->len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, op->now);
    sqlite3_bind_int64(s, 5, op->now + sq->cfg.result_ttl_ms);
    sqlite3_bind_int64(s, 6, (int64_t)op->len);
    touch(tx, op->sb);
    tx->bytes += (int64_t)op->len;
    return sq_step_done(s);
}

static int (*const w_kinds[])(struct sq_store *, struct wop *, struct txn *) = {
    [OP_CREATE] = w_create,      [OP_RESULT] = w_result, [OP_START] = w_start,
    [OP_CANCEL] = w_cancel,      [OP_END] = w_end,       [OP_FORGET] = sq_expire_forget,
    [OP_EXPIRE] = sq_expire_due,
};
/* clang-format on */

/* Applies the writes SEG in one transaction. Returns a SQLite code; on failure everything
 * is rolled back, the writer's seq counters and the new handles included. */
static int w_apply(struct sq_store *sq, struct wop *seg, struct txn *tx)
{
    int64_t changes = sqlite3_total_changes64(sq->wdb);
    int rc = sq_step_done(sq->w[W_BEGIN]);
    struct wop *op = seg;
    for (; rc == SQLITE_OK && op != NULL; op = op->next) {
        rc = w_kinds[op->kind](sq, op, tx);
    }
    if (rc == SQLITE_OK) {
        rc = sq_expire_flush_counts(sq, tx);
    }
    tx->wrote = sqlite3_total_changes64(sq->wdb) != changes;
    if (rc == SQLITE_OK) {
        rc = sq_step_done(sq->w[W_COMMIT]);
    }
    if (rc != SQLITE_OK) {
        /* A failed statement or COMMIT may leave the transaction open: roll it back. */
        if (!sqlite3_get_autocommit(sq->wdb)) {
            sq_step_done(sq->w[W_ROLLBACK]);
        }
        for (op = seg; op != NULL; op = op->next) {
            if (op->kind == OP_RESULT && op->seq != 0) {
                /* Seqs were given in order: the first one of a batch is where it restarts. */
                if (op->seq - 1 < op->sb->w_seq) {
                    op->sb->w_seq = op->seq - 1;
                }
                op->seq = 0;
            }
            if (op->kind == OP_CREATE && op->made != NULL) {
                sq_batch_free(op->made);
                op->made = NULL;
            }
        }
    }
    for (struct sq_batch *sb = tx->touched; sb != NULL; sb = sb->w_tnext) {
        sb->w_nok = sb->w_nfailed = sb->w_bytes = 0;
        sb->w_touched = 0;
    }
    return rc;
}

static void w_checkpoint(struct sq_store *sq, int64_t *last_ns)
{
    int log = 0, done = 0;
    if (sqlite3_wal_checkpoint_v2(sq->wdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) ==
        SQLITE_OK) {
        pthread_mutex_lock(&sq->mu);
        sq->stats.checkpoints++;
        pthread_mutex_unlock(&sq->mu);
    }
    *last_ns = sq_mono_ns();
}

void sq_writer_notify(struct sq_store *sq)
{
    uint64_t one = 1;
    ssize_t n = write(sq->efd, &one, sizeof one);
    (void)n; /* a full counter is still readable */
}

static void timed_wait(struct sq_store *sq, int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
    ts.tv_sec = t / 1000000000;
    ts.tv_nsec = t % 1000000000;
    pthread_cond_timedwait(&sq->cv_work, &sq->mu, &ts);
}

/* Takes the writes of the next transaction off the queue: everything queued, at most
 * 4 * flush_rows results. Called with mu held. */
static struct wop *take_segment(struct sq_store *sq)
{
    struct wop *seg = sq->head, *last = NULL, *op = sq->head;
    uint64_t rows = 0, other = 0;
    while (op != NULL && rows < 4ull * sq->cfg.flush_rows) {
        if (op->kind == OP_RESULT) {
            rows++;
        } else {
            other++;
        }
        last = op;
        op = op->next;
    }
    sq->head = op;
    if (op == NULL) {
        sq->tail = NULL;
    }
    if (last != NULL) {
        last->next = NULL;
    }
    sq->queued_rows -= rows;
    sq->urgent -= other;
    if (sq->queued_rows > 0) {
        sq->first_row_ns = sq_mono_ns();
    }
    sq->stats.pending_rows = sq->queued_rows;
    return seg;
}

/* Puts a failed segment's retryable writes back at the head of the queue. Creations and
 * forgets fail with RC instead (their callers answer, e.g. 507 or 500). mu held. */
static uint64_t requeue(struct sq_store *sq, struct wop *seg, int rc, int give_up)
{
    struct wop *keep = NULL, **kt = &keep;
    uint64_t finished = 0;
    while (seg != NULL) {
        struct wop *op = seg;
        seg = seg->next;
        op->next = NULL;
        if (op->kind == OP_CREATE || op->kind == OP_FORGET || op->kind == OP_EXPIRE || give_up) {
            op->rc = rc;
            if (op->kind == OP_CREATE || op->kind == OP_FORGET) {
                if (sq->done_tail != NULL) {
                    sq->done_tail->next = op;
                } else {
                    sq->done_head = op;
                }
                sq->done_tail = op;
            } else {
                if (op->sb != NULL) {
                    op->sb->w_ops--;
                }
                free(op);
            }
            finished++;
            continue;
        }
        if (op->kind == OP_RESULT) {
            sq->queued_rows++;
        } else {
            sq->urgent++;
        }
        *kt = op;
        kt = &op->next;
    }
    if (keep != NULL) {
        struct wop *last = keep;
        while (last->next != NULL) {
            last = last->next;
        }
        last->next = sq->head;
        if (sq->head == NULL) {
            sq->tail = last;
        }
        sq->head = keep;
        sq->first_row_ns = sq_mono_ns();
    }
    sq->stats.pending_rows = sq->queued_rows;
    return finished;
}

/* After a commit: outcomes to the done list, progress to the loop, the other writes onto
 * *GARBAGE, to be freed once mu is released (the loop waits on mu). mu held. */
static uint64_t committed(struct sq_store *sq, struct wop *seg, struct sq_batch *touched,
                          struct wop **garbage)
{
    uint64_t finished = 0;
    for (struct sq_batch *sb = touched; sb != NULL; sb = sb->w_tnext) {
        sb->w_committed = sb->w_seq;
        if (!sb->w_progress) {
            sb->w_progress = 1;
            sb->w_pnext = sq->progress;
            sq->progress = sb;
        }
    }
    while (seg != NULL) {
        struct wop *op = seg;
        seg = seg->next;
        op->next = NULL;
        finished++;
        if (op->kind == OP_CREATE || op->kind == OP_FORGET) {
            if (sq->done_tail != NULL) {
                sq->done_tail->next = op;
            } else {
                sq->done_head = op;
            }
            sq->done_tail = op;
            continue;
        }
        if (op->sb != NULL) {
            op->sb->w_ops--;
        }
        op->next = *garbage;
        *garbage = op;
    }
    return finished;
}

/* Waits, with sq->mu held, until a segment is due (flush_rows queued, flush_ms passed,
 * another write queued, or shutdown) and takes it; checkpoints while idle. NULL: stopped
 * with nothing queued. */
static struct wop *writer_wait(struct sq_store *sq, int64_t *last_ckpt)
{
    for (;;) {
        if (sq->head == NULL) {
            if (sq->stop) {
                return NULL;
            }
            timed_wait(sq, 50 * 1000000ll);
            if (sq->head == NULL && sq_mono_ns() - *last_ckpt > SQ_CHECKPOINT_MS * 1000000ll) {
                pthread_mutex_unlock(&sq->mu);
                w_checkpoint(sq, last_ckpt);
                pthread_mutex_lock(&sq->mu);
            }
            continue;
        }
        if (!sq->stop && sq->urgent == 0 && sq->queued_rows < sq->cfg.flush_rows) {
            int64_t wait = sq->first_row_ns + (int64_t)sq->cfg.flush_ms * 1000000 - sq_mono_ns();
            if (wait > 0) {
                timed_wait(sq, wait);
                continue;
            }
        }
        return take_segment(sq);
    }
}

/* Counts a committed transaction that took TOOK ns in the store's figures (under sq->mu).
 * One that changed nothing (an expiry tick with nothing due) wrote no page: it is not
 * counted as a commit, so that the timer does not flatten the commit figures. */
static void writer_count(struct sq_store *sq, const struct txn *tx, int64_t took)
{
    sq->total_bytes += tx->bytes;
    sq->stats.bytes = (uint64_t)sq->total_bytes;
    sq->stats.rows += tx->rows - tx->dups;
    sq->stats.dup_ignored += tx->dups;
    sq->stats.write_error = 0; /* an empty commit too: the writer can commit again */
    if (!tx->wrote) {
        return;
    }
    store_stats_add_flush(&sq->stats, (uint64_t)took);
}

/* Records a failed transaction (under sq->mu) and puts SEG back in the queue. */
static void writer_failed(struct sq_store *sq, struct wop *seg, int rc, int failures)
{
    sq->last_rc = sq_rc(rc);
    sq->stats.write_error = sq->last_rc != 0 ? sq->last_rc : STORE_E_IO;
    snprintf(sq->last_err, sizeof sq->last_err, "%s: %s", sq->path, sqlite3_errmsg(sq->wdb));
    sq->fail_gen++;
    /* At shutdown a write that keeps failing is given up after a few tries. */
    sq->fin_count += requeue(sq, seg, sq->last_rc, sq->stop && failures >= 3);
}

void *sq_writer_main(void *p)
{
    struct sq_store *sq = p;
    int64_t last_ckpt = sq_mono_ns();
    int failures = 0;
    pthread_mutex_lock(&sq->mu);
    for (;;) {
        struct wop *seg = writer_wait(sq, &last_ckpt);
        if (seg == NULL) {
            break;
        }
        pthread_mutex_unlock(&sq->mu);

        struct txn tx = {0};
        struct wop *garbage = NULL;
        int64_t t0 = sq_mono_ns();
        int rc = w_apply(sq, seg, &tx);
        int64_t took = sq_mono_ns() - t0;

        pthread_mutex_lock(&sq->mu);
        if (rc == SQLITE_OK) {
            failures = 0;
            writer_count(sq, &tx, took);
            sq->fin_count += committed(sq, seg, tx.touched, &garbage);
        } else {
            failures++;
            writer_failed(sq, seg, rc, failures);
        }
        int err_rc = sq->last_rc;
        char err_msg[sizeof sq->last_err];
        memcpy(err_msg, sq->last_err, sizeof err_msg);
        pthread_cond_broadcast(&sq->cv_done);
        pthread_mutex_unlock(&sq->mu);
        sq_writer_notify(sq);
        while (garbage != NULL) {
            struct wop *op = garbage;
            garbage = op->next;
            free(op);
        }
        if (rc != SQLITE_OK && sq->cfg.on_error != NULL) {
            /* Called on the writer thread: the callback must be thread-safe (a log line). */
            sq->cfg.on_error(sq->cfg.arg, err_rc, err_msg);
        }
        if (rc != SQLITE_OK) {
            pthread_mutex_lock(&sq->mu);
            if (!sq->stop || failures < 3) {
                timed_wait(sq, SQ_RETRY_MS * 1000000ll);
            }
            continue;
        }
        if (tx.vacuum) {
            sqlite3_exec(sq->wdb, "PRAGMA incremental_vacuum", NULL, NULL, NULL);
        }
        if (sq_mono_ns() - last_ckpt > SQ_CHECKPOINT_MS * 1000000ll) {
            w_checkpoint(sq, &last_ckpt);
        }
        pthread_mutex_lock(&sq->mu);
    }
    pthread_mutex_unlock(&sq->mu);
    w_checkpoint(sq, &last_ckpt);
    return NULL;
}
