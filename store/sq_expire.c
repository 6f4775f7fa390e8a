/* Retention in the SQLite store: forgetting a batch and expiring finished ones past their
 * time, run by the writer thread inside its transaction. The size cap on creation is checked
 * in sq_writer.c; nothing here runs on the loop thread. */
#include "sq_internal.h"

/* Writes the counter changes of the batches this transaction touched so far into their rows
 * (and the stored bytes): before a deletion reads a row's bytes, and at the end. */
int sq_expire_flush_counts(struct sq_store *sq, struct txn *tx)
{
    int rc = SQLITE_OK;
    for (struct sq_batch *sb = tx->touched; rc == SQLITE_OK && sb != NULL; sb = sb->w_tnext) {
        sqlite3_stmt *s = sq->w[W_ADD_COUNTS];
        sqlite3_bind_int64(s, 1, sb->bno);
        sqlite3_bind_int64(s, 2, sb->w_nok);
        sqlite3_bind_int64(s, 3, sb->w_nfailed);
        sqlite3_bind_int64(s, 4, sb->w_bytes);
        sqlite3_bind_int64(s, 5, (int64_t)sb->w_seq);
        rc = sq_step_done(s);
        /* A row already deleted in this transaction is not there to update: its results
         * went with it, and so do their bytes. */
        if (rc == SQLITE_OK && sqlite3_changes(sq->wdb) > 0) {
            tx->bytes += sb->w_bytes;
        }
        sb->w_nok = sb->w_nfailed = sb->w_bytes = 0;
    }
    return rc;
}

/* Deletes batch BNO's results and inputs, and the batch row too when WHOLE (else it becomes
 * an expired tombstone). */
static int w_delete(struct sq_store *sq, int64_t bno, int whole)
{
    sqlite3_stmt *s = sq->w[W_DELETE_RESULTS];
    sqlite3_bind_int64(s, 1, sq_key_lo(bno));
    sqlite3_bind_int64(s, 2, sq_key_hi(bno));
    int rc = sq_step_done(s);
    if (rc == SQLITE_OK) {
        s = sq->w[W_DELETE_INPUTS];
        sqlite3_bind_int64(s, 1, bno);
        rc = sq_step_done(s);
    }
    if (rc == SQLITE_OK) {
        s = sq->w[whole ? W_DELETE_BATCH : W_TOMBSTONE];
        sqlite3_bind_int64(s, 1, bno);
        rc = sq_step_done(s);
    }
    return rc;
}

int sq_expire_forget(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    int frc = sq_expire_flush_counts(sq, tx);
    if (frc != SQLITE_OK) {
        return frc;
    }
    sqlite3_stmt *s = sq->w[W_FIND_OWNED];
    sqlite3_bind_text(s, 1, op->id, -1, SQLITE_STATIC);
    sq_bind_owner(s, 2, op->owner, op->owner_len);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sq_finish(s);
        op->rc = STORE_E_NOT_FOUND;
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    int64_t bno = sqlite3_column_int64(s, 0);
    int state = sqlite3_column_int(s, 1);
    int64_t bytes = sqlite3_column_int64(s, 2);
    sq_finish(s);
    if (state == STORE_QUEUED || state == STORE_RUNNING) {
        op->rc = STORE_E_NOT_FINISHED;
        return SQLITE_OK;
    }
    if (state == STORE_EXPIRED) {
        op->rc = STORE_E_EXPIRED;
        return SQLITE_OK;
    }
    rc = w_delete(sq, bno, 1);
    tx->bytes -= bytes;
    tx->vacuum = 1;
    op->rc = STORE_OK;
    return rc;
}

int sq_expire_due(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    int64_t bnos[SQ_EXPIRE_BATCHES];
    int n = 0, rc = sq_expire_flush_counts(sq, tx);
    if (rc != SQLITE_OK) {
        return rc;
    }
    do {
        sqlite3_stmt *s = sq->w[W_FIND_EXPIRED];
        sqlite3_bind_int64(s, 1, op->now);
        sqlite3_bind_int(s, 2, SQ_EXPIRE_BATCHES);
        n = 0;
        rc = sqlite3_step(s);
        while (rc == SQLITE_ROW) {
            bnos[n++] = sqlite3_column_int64(s, 0);
            tx->bytes -= sqlite3_column_int64(s, 1);
            rc = sqlite3_step(s);
        }
        sq_finish(s);
        if (rc != SQLITE_DONE) {
            return rc;
        }
        for (int i = 0; i < n; i++) {
            rc = w_delete(sq, bnos[i], 0);
            if (rc != SQLITE_OK) {
                return rc;
            }
        }
        if (n > 0) {
            tx->vacuum = 1;
        }
    } while (n == SQ_EXPIRE_BATCHES);
    /* A tombstone answers 410 for another ttl after the batch expired, then 404. */
    sqlite3_stmt *s = sq->w[W_DROP_TOMBSTONES];
    sqlite3_bind_int64(s, 1, op->now - sq->cfg.result_ttl_ms);
    return sq_step_done(s);
}

/* clang-format off */
