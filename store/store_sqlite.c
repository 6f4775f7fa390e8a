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
 * FULL costs one fsync per commit, and commits are grouped (below), so the cost is one
 * fsync per flush of up to flush_rows results, not per result.
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
 * batchd database or fails quick_check (files up to QUICK_CHECK_MAX), with a message. */
#include "internal.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define SQ_APP_ID 0x62617463 /* "batc": PRAGMA application_id of our files */
#define SQ_SCHEMA_VERSION 1
#define SQ_CHUNK (64u * 1024 * 1024) /* an uploaded file is stored in chunks of this size */
#define SQ_CHECKPOINT_MS 20
#define SQ_RETRY_MS 100
#define SQ_MIN_FREE (8u * 1024 * 1024) /* less free space than this at start: "full" */
#define QUICK_CHECK_MAX (256ll * 1024 * 1024)
#define SQ_EXPIRE_BATCHES 64 /* batches expired per transaction */

/* ------------------------------------------------------------------------------------- */
/* statements */

enum wst {
    W_FIND_KEY,
    W_INSERT_BATCH,
    W_INSERT_INPUT,
    W_INSERT_RESULT,
    W_ADD_COUNTS,
    W_START,
    W_CANCEL,
    W_END,
    W_FIND_OWNED,
    W_DELETE_RESULTS,
    W_DELETE_INPUTS,
    W_DELETE_BATCH,
    W_FIND_EXPIRED,
    W_TOMBSTONE,
    W_DROP_TOMBSTONES,
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_COUNT
};

/* clang-format off */
static const char *const wst_sql[W_COUNT] = {
    [W_FIND_KEY] = "SELECT id, fingerprint FROM batches WHERE owner = ?1 AND idem_key = ?2",
    [W_INSERT_BATCH] = "INSERT INTO batches (id, owner, idem_key, fingerprint, state, njobs, op,"
                       " request_id, created_ms, spec, bytes) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6,"
                       " ?7, ?8, ?9, ?10)",
    [W_INSERT_INPUT] = "INSERT INTO inputs (bno, idx, chunk, data) VALUES (?1, ?2, ?3, ?4)",
    [W_INSERT_RESULT] = "INSERT OR IGNORE INTO results (k, bno, idx, ok, line)"
                        " VALUES (?1, ?2, ?3, ?4, ?5)",
    [W_ADD_COUNTS] = "UPDATE batches SET nok = nok + ?2, nfailed = nfailed + ?3,"
                     " bytes = bytes + ?4, last_seq = ?5 WHERE bno = ?1",
    [W_START] = "UPDATE batches SET state = 1, started_ms = ?2 WHERE bno = ?1 AND state = 0",
    [W_CANCEL] = "UPDATE batches SET cancel_requested = 1 WHERE bno = ?1",
    [W_END] = "UPDATE batches SET state = ?2, summary = ?3, finished_ms = ?4, expires_ms = ?5,"
              " bytes = bytes + ?6 WHERE bno = ?1",
    [W_FIND_OWNED] = "SELECT bno, state, bytes FROM batches WHERE id = ?1 AND owner = ?2",
    [W_DELETE_RESULTS] = "DELETE FROM results WHERE k BETWEEN ?1 AND ?2",
    [W_DELETE_INPUTS] = "DELETE FROM inputs WHERE bno = ?1",
    [W_DELETE_BATCH] = "DELETE FROM batches WHERE bno = ?1",
    [W_FIND_EXPIRED] = "SELECT bno, bytes FROM batches WHERE expires_ms <= ?1 AND state IN (2, 3)"
                       " LIMIT ?2",
    [W_TOMBSTONE] = "UPDATE batches SET state = 4, spec = NULL, summary = NULL, idem_key = NULL,"
                    " fingerprint = NULL, bytes = 0 WHERE bno = ?1",
    [W_DROP_TOMBSTONES] = "DELETE FROM batches WHERE state = 4 AND expires_ms <= ?1",
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
};
/* clang-format on */

enum rst {
    R_GET,
    R_LIST,
    R_RESULTS,
    R_BY_INDEX,
    R_SPEC,
    R_SUMMARY,
    R_INPUT,
    R_UNFINISHED,
    R_OPEN,
    R_OPEN_IDX,
    R_OPEN_SEQ,
    R_COUNT
};

#define SQ_INFO_COLS                                                                               \
    "id, owner, state, cancel_requested, op, request_id, created_ms, started_ms, finished_ms,"     \
    " expires_ms, njobs, nok, nfailed, last_seq"

/* clang-format off */
static const char *const rst_sql[R_COUNT] = {
    [R_GET] = "SELECT " SQ_INFO_COLS ", bno FROM batches WHERE id = ?1",
    [R_LIST] = "SELECT " SQ_INFO_COLS " FROM batches WHERE owner = ?1 AND id < ?2 AND state <> 4"
               " AND (?3 < 0 OR state = ?3) ORDER BY id DESC LIMIT ?4",
    [R_RESULTS] = "SELECT k, idx, ok, line FROM results WHERE k > ?1 AND k <= ?2 ORDER BY k"
                  " LIMIT ?3",
    [R_BY_INDEX] = "SELECT k, idx, ok, line FROM results WHERE bno = ?1 AND idx >= ?2"
                   " ORDER BY idx LIMIT ?3",
    [R_SPEC] = "SELECT spec FROM batches WHERE id = ?1",
    [R_SUMMARY] = "SELECT summary FROM batches WHERE id = ?1",
    [R_INPUT] = "SELECT i.data FROM inputs i JOIN batches b ON b.bno = i.bno WHERE b.id = ?1"
                " AND i.idx = ?2 ORDER BY i.chunk",
    [R_UNFINISHED] = "SELECT id FROM batches WHERE state IN (0, 1) ORDER BY bno",
    [R_OPEN] = "SELECT bno, njobs, state FROM batches WHERE id = ?1",
    [R_OPEN_IDX] = "SELECT idx FROM results WHERE bno = ?1",
    [R_OPEN_SEQ] = "SELECT max(k) FROM results WHERE k BETWEEN ?1 AND ?2",
};

static const char sq_schema[] =
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS batches ("
    " bno INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner BLOB NOT NULL,"
    " idem_key TEXT, fingerprint BLOB, state INTEGER NOT NULL,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0, njobs INTEGER NOT NULL,"
    " nok INTEGER NOT NULL DEFAULT 0, nfailed INTEGER NOT NULL DEFAULT 0,"
    " last_seq INTEGER NOT NULL DEFAULT 0, op TEXT NOT NULL, request_id TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL DEFAULT 0,"
    " finished_ms INTEGER NOT NULL DEFAULT 0, expires_ms INTEGER,"
    " spec BLOB, summary BLOB, bytes INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS batches_key ON batches (owner, idem_key)"
    " WHERE idem_key IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, id);"
    "CREATE INDEX IF NOT EXISTS batches_expiry ON batches (expires_ms)"
    " WHERE expires_ms IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS inputs (bno INTEGER NOT NULL, idx INTEGER NOT NULL,"
    " chunk INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (bno, idx, chunk)) WITHOUT ROWID;"
    /* k = bno << 32 | seq: a batch's results are one range of the table, in seq order. */
    "CREATE TABLE IF NOT EXISTS results (k INTEGER PRIMARY KEY, bno INTEGER NOT NULL,"
    " idx INTEGER NOT NULL, ok INTEGER NOT NULL, line BLOB NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS results_job ON results (bno, idx);";
/* clang-format on */

/* ------------------------------------------------------------------------------------- */
/* types */

struct sq_store;

struct sq_batch {
    struct store_batch base;
    struct sq_store *sq;
    char id[STORE_ID_SIZE];
    int64_t bno;
    uint32_t njobs;
    struct sq_batch *next; /* loop: the store's list of handles */
    /* loop thread only */
    uint8_t *bits; /* jobs with a result, queued or committed */
    int ended;     /* an end was queued */
    int urefs;     /* handles given out and not released */
    uint64_t committed_seq;
    /* under sq->mu */
    unsigned w_ops;       /* writes queued or in flight for this batch */
    uint64_t w_committed; /* last committed seq, for the loop to pick up */
    int w_progress;       /* on sq->progress */
    struct sq_batch *w_pnext;
    /* writer thread only */
    uint64_t w_seq; /* last seq assigned */
    int64_t w_nok, w_nfailed, w_bytes;
    int w_touched;
    struct sq_batch *w_tnext;
};

enum wop_kind { OP_CREATE, OP_RESULT, OP_START, OP_CANCEL, OP_END, OP_FORGET, OP_EXPIRE };

struct wop {
    struct wop *next;
    int kind;
    struct sq_batch *sb;
    uint32_t index;
    int ok; /* OP_RESULT; OP_END: the state */
    int64_t now;
    /* OP_CREATE, OP_FORGET */
    store_done_fn *done;
    void *arg;
    int rc;
    char id[STORE_ID_SIZE];
    struct sq_batch *made; /* OP_CREATE: the new batch's handle */
    struct store_new_batch nb;
    struct store_blob *inputs;
    char *key;
    uint8_t owner[STORE_OWNER_MAX];
    size_t owner_len;
    uint64_t seq; /* OP_RESULT: assigned in the transaction */
    size_t len;
    unsigned char data[]; /* OP_RESULT: the line; OP_END: the summary */
};

struct sq_store {
    struct store base;
    struct store_config cfg;
    char path[4096];
    sqlite3 *wdb; /* writer thread */
    sqlite3 *rdb; /* loop thread */
    sqlite3_stmt *w[W_COUNT];
    sqlite3_stmt *r[R_COUNT];
    int efd;
    int lock_fd; /* state_dir/lock, flock'ed: one process per state dir */
    pthread_t thread;
    int thread_started;
    struct sq_batch *handles; /* loop */

    pthread_mutex_t mu;
    pthread_cond_t cv_work;            /* the writer waits for work */
    pthread_cond_t cv_done;            /* store_sync waits for the writer */
    struct wop *head, *tail;           /* queued writes */
    struct wop *done_head, *done_tail; /* finished creations and forgets */
    struct sq_batch *progress;
    uint64_t queued_rows;
    uint64_t urgent;      /* queued writes other than results */
    int64_t first_row_ns; /* when the oldest queued result was queued */
    uint64_t enq_count, fin_count, fail_gen;
    int stop;
    int last_rc;
    char last_err[4400];
    struct store_stats stats;
    int64_t total_bytes;
};

/* ------------------------------------------------------------------------------------- */
/* helpers */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t sq_now(const struct sq_store *sq)
{
    if (sq->cfg.now_ms != NULL) {
        return sq->cfg.now_ms();
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* SQLite's primary result codes as store codes; any other failure is STORE_E_IO. */
/* clang-format off */
static const struct { int sqlite; int store; } sq_codes[] = {
    {SQLITE_OK, STORE_OK},
    {SQLITE_DONE, STORE_OK},
    {SQLITE_ROW, STORE_OK},
    {SQLITE_FULL, STORE_E_FULL},
    {SQLITE_NOMEM, STORE_E_NOMEM},
    {SQLITE_CORRUPT, STORE_E_CORRUPT},
    {SQLITE_NOTADB, STORE_E_CORRUPT},
    {SQLITE_READONLY, STORE_E_UNWRITABLE},
    {SQLITE_CANTOPEN, STORE_E_UNWRITABLE},
    {SQLITE_PERM, STORE_E_UNWRITABLE},
};
/* clang-format on */

static int sq_rc(int rc)
{
    for (size_t i = 0; i < sizeof sq_codes / sizeof sq_codes[0]; i++) {
        if (sq_codes[i].sqlite == (rc & 0xff)) {
            return sq_codes[i].store;
        }
    }
    return STORE_E_IO;
}

static const uint8_t sq_empty[1];

static int bind_owner(sqlite3_stmt *s, int col, const uint8_t *owner, size_t len)
{
    return sqlite3_bind_blob(s, col, len > 0 ? (const void *)owner : (const void *)sq_empty,
                             (int)len, SQLITE_STATIC);
}

static int step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void finish(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static int64_t key_lo(int64_t bno)
{
    return (int64_t)((uint64_t)bno << 32);
}

static int64_t key_hi(int64_t bno)
{
    return (int64_t)(((uint64_t)bno << 32) | 0xffffffffu);
}

static void copy_text(char *dst, size_t cap, const unsigned char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? (const char *)src : "");
}

static int bit_get(const uint8_t *bits, uint32_t i)
{
    return (bits[i >> 3] >> (i & 7)) & 1;
}

static void bit_set(uint8_t *bits, uint32_t i)
{
    bits[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static struct sq_batch *batch_new(struct sq_store *sq, const char *id, int64_t bno, uint32_t njobs)
{
    struct sq_batch *sb = calloc(1, sizeof *sb);
    if (sb == NULL) {
        return NULL;
    }
    sb->bits = calloc((size_t)njobs / 8 + 1, 1);
    if (sb->bits == NULL) {
        free(sb);
        return NULL;
    }
    sb->base.st = &sq->base;
    sb->sq = sq;
    snprintf(sb->id, sizeof sb->id, "%s", id);
    sb->bno = bno;
    sb->njobs = njobs;
    return sb;
}

static void batch_free(struct sq_batch *sb)
{
    if (sb != NULL) {
        free(sb->bits);
        free(sb);
    }
}

static void wop_free(struct wop *op)
{
    if (op != NULL) {
        free(op->inputs);
        free(op->key);
        if (op->kind == OP_CREATE && op->made != NULL) {
            batch_free(op->made);
        }
        free(op);
    }
}

/* Appends OP to the write queue and wakes the writer when it has reason to run. */
static void enqueue(struct sq_store *sq, struct wop *op)
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
            sq->first_row_ns = mono_ns();
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

/* What one transaction did, applied to the store's figures once it commits. */
struct txn {
    uint64_t rows;            /* results written */
    uint64_t dups;            /* results the database refused (their job had one) */
    int64_t bytes;            /* change of the stored bytes */
    int vacuum;               /* batches were deleted: give the space back */
    struct sq_batch *touched; /* batches whose counters change */
};

static int w_create(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    sqlite3_stmt *s = NULL;
    int rc = SQLITE_OK;
    const struct store_new_batch *nb = &op->nb;

    if (op->key != NULL) {
        s = sq->w[W_FIND_KEY];
        bind_owner(s, 1, op->owner, op->owner_len);
        sqlite3_bind_text(s, 2, op->key, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            const void *fp = sqlite3_column_blob(s, 1);
            int same = sqlite3_column_bytes(s, 1) == 32 && fp != NULL &&
                       memcmp(fp, nb->fingerprint, 32) == 0;
            copy_text(op->id, sizeof op->id, sqlite3_column_text(s, 0));
            op->rc = same ? STORE_REPLAYED : STORE_E_KEY_REUSED;
            finish(s);
            return SQLITE_OK;
        }
        finish(s);
        if (rc != SQLITE_DONE) {
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
    bind_owner(s, 2, op->owner, op->owner_len);
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
    rc = step_done(s);
    if (rc != SQLITE_OK) {
        return rc;
    }
    int64_t bno = sqlite3_last_insert_rowid(sq->wdb);
    s = sq->w[W_INSERT_INPUT];
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
            rc = step_done(s);
            if (rc != SQLITE_OK) {
                return rc;
            }
            p += n;
            left -= n;
        } while (left > 0);
    }
    op->made = batch_new(sq, op->id, bno, nb->njobs);
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
    sqlite3_bind_int64(s, 1, key_lo(sb->bno) | (int64_t)seq);
    sqlite3_bind_int64(s, 2, sb->bno);
    sqlite3_bind_int64(s, 3, op->index);
    sqlite3_bind_int(s, 4, op->ok ? 1 : 0);
    sqlite3_bind_blob64(s, 5, op->len > 0 ? (const void *)op->data : (const void *)sq_empty,
                        op->len, SQLITE_STATIC);
    int rc = step_done(s);
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
    return step_done(s);
}

static int w_cancel(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    (void)tx;
    sqlite3_stmt *s = sq->w[W_CANCEL];
    sqlite3_bind_int64(s, 1, op->sb->bno);
    return step_done(s);
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
    return step_done(s);
}

/* Writes the counter changes of the batches this transaction touched so far into their rows
 * (and the stored bytes): before a deletion reads a row's bytes, and at the end. */
static int w_flush_counts(struct sq_store *sq, struct txn *tx)
{
    int rc = SQLITE_OK;
    for (struct sq_batch *sb = tx->touched; rc == SQLITE_OK && sb != NULL; sb = sb->w_tnext) {
        sqlite3_stmt *s = sq->w[W_ADD_COUNTS];
        sqlite3_bind_int64(s, 1, sb->bno);
        sqlite3_bind_int64(s, 2, sb->w_nok);
        sqlite3_bind_int64(s, 3, sb->w_nfailed);
        sqlite3_bind_int64(s, 4, sb->w_bytes);
        sqlite3_bind_int64(s, 5, (int64_t)sb->w_seq);
        rc = step_done(s);
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
    sqlite3_bind_int64(s, 1, key_lo(bno));
    sqlite3_bind_int64(s, 2, key_hi(bno));
    int rc = step_done(s);
    if (rc == SQLITE_OK) {
        s = sq->w[W_DELETE_INPUTS];
        sqlite3_bind_int64(s, 1, bno);
        rc = step_done(s);
    }
    if (rc == SQLITE_OK) {
        s = sq->w[whole ? W_DELETE_BATCH : W_TOMBSTONE];
        sqlite3_bind_int64(s, 1, bno);
        rc = step_done(s);
    }
    return rc;
}

static int w_forget(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    int frc = w_flush_counts(sq, tx);
    if (frc != SQLITE_OK) {
        return frc;
    }
    sqlite3_stmt *s = sq->w[W_FIND_OWNED];
    sqlite3_bind_text(s, 1, op->id, -1, SQLITE_STATIC);
    bind_owner(s, 2, op->owner, op->owner_len);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        finish(s);
        op->rc = STORE_E_NOT_FOUND;
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    int64_t bno = sqlite3_column_int64(s, 0);
    int state = sqlite3_column_int(s, 1);
    int64_t bytes = sqlite3_column_int64(s, 2);
    finish(s);
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

static int w_expire(struct sq_store *sq, struct wop *op, struct txn *tx)
{
    int64_t bnos[SQ_EXPIRE_BATCHES];
    int n = 0, rc = w_flush_counts(sq, tx);
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
        finish(s);
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
    return step_done(s);
}

/* clang-format off */
static int (*const w_kinds[])(struct sq_store *, struct wop *, struct txn *) = {
    [OP_CREATE] = w_create,
    [OP_RESULT] = w_result,
    [OP_START] = w_start,
    [OP_CANCEL] = w_cancel,
    [OP_END] = w_end,
    [OP_FORGET] = w_forget,
    [OP_EXPIRE] = w_expire,
};
/* clang-format on */

/* Applies the writes SEG in one transaction. Returns a SQLite code; on failure everything
 * is rolled back, the writer's seq counters and the new handles included. */
static int w_apply(struct sq_store *sq, struct wop *seg, struct txn *tx)
{
    int rc = step_done(sq->w[W_BEGIN]);
    struct wop *op = seg;
    for (; rc == SQLITE_OK && op != NULL; op = op->next) {
        rc = w_kinds[op->kind](sq, op, tx);
    }
    if (rc == SQLITE_OK) {
        rc = w_flush_counts(sq, tx);
    }
    if (rc == SQLITE_OK) {
        rc = step_done(sq->w[W_COMMIT]);
    }
    if (rc != SQLITE_OK) {
        /* A failed statement or COMMIT may leave the transaction open: roll it back. */
        if (!sqlite3_get_autocommit(sq->wdb)) {
            step_done(sq->w[W_ROLLBACK]);
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
                batch_free(op->made);
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
    *last_ns = mono_ns();
}

static void notify(struct sq_store *sq)
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
        sq->first_row_ns = mono_ns();
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
        sq->first_row_ns = mono_ns();
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

static void *writer_main(void *p)
{
    struct sq_store *sq = p;
    int64_t last_ckpt = mono_ns();
    int failures = 0;
    pthread_mutex_lock(&sq->mu);
    for (;;) {
        if (sq->head == NULL) {
            if (sq->stop) {
                break;
            }
            timed_wait(sq, 50 * 1000000ll);
            if (sq->head == NULL && mono_ns() - last_ckpt > SQ_CHECKPOINT_MS * 1000000ll) {
                pthread_mutex_unlock(&sq->mu);
                w_checkpoint(sq, &last_ckpt);
                pthread_mutex_lock(&sq->mu);
            }
            continue;
        }
        if (!sq->stop && sq->urgent == 0 && sq->queued_rows < sq->cfg.flush_rows) {
            int64_t wait = sq->first_row_ns + (int64_t)sq->cfg.flush_ms * 1000000 - mono_ns();
            if (wait > 0) {
                timed_wait(sq, wait);
                continue;
            }
        }
        struct wop *seg = take_segment(sq);
        pthread_mutex_unlock(&sq->mu);

        struct txn tx = {0};
        struct wop *garbage = NULL;
        int64_t t0 = mono_ns();
        int rc = w_apply(sq, seg, &tx);
        int64_t took = mono_ns() - t0;

        pthread_mutex_lock(&sq->mu);
        if (rc == SQLITE_OK) {
            failures = 0;
            sq->total_bytes += tx.bytes;
            sq->stats.bytes = (uint64_t)sq->total_bytes;
            sq->stats.rows += tx.rows - tx.dups;
            sq->stats.dup_ignored += tx.dups;
            sq->stats.flushes++;
            double ms = (double)took / 1e6;
            if (ms > sq->stats.flush_max_ms) {
                sq->stats.flush_max_ms = ms;
            }
            size_t k = 0;
            while (k + 1 < STORE_HIST_BUCKETS && exp2((double)k / 4.0) * 1000.0 <= (double)took) {
                k++;
            }
            sq->stats.flush_hist[k]++;
            sq->fin_count += committed(sq, seg, tx.touched, &garbage);
        } else {
            failures++;
            sq->last_rc = sq_rc(rc);
            snprintf(sq->last_err, sizeof sq->last_err, "%s: %s", sq->path,
                     sqlite3_errmsg(sq->wdb));
            sq->fail_gen++;
            /* At shutdown a write that keeps failing is given up after a few tries. */
            sq->fin_count += requeue(sq, seg, sq->last_rc, sq->stop && failures >= 3);
        }
        int err_rc = sq->last_rc;
        char err_msg[sizeof sq->last_err];
        memcpy(err_msg, sq->last_err, sizeof err_msg);
        pthread_cond_broadcast(&sq->cv_done);
        pthread_mutex_unlock(&sq->mu);
        notify(sq);
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
        if (mono_ns() - last_ckpt > SQ_CHECKPOINT_MS * 1000000ll) {
            w_checkpoint(sq, &last_ckpt);
        }
        pthread_mutex_lock(&sq->mu);
    }
    pthread_mutex_unlock(&sq->mu);
    w_checkpoint(sq, &last_ckpt);
    return NULL;
}

/* ------------------------------------------------------------------------------------- */
/* the loop side */

static struct sq_store *sq_of(const struct store *st)
{
    return (struct sq_store *)st;
}

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
        notify(sq);
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
        wop_free(op);
    }
    /* Handles given back and with no write left in flight are freed. */
    pthread_mutex_lock(&sq->mu);
    for (struct sq_batch **pp = &sq->handles; *pp != NULL;) {
        struct sq_batch *sb = *pp;
        if (sb->urefs == 0 && sb->w_ops == 0 && !sb->w_progress) {
            *pp = sb->next;
            batch_free(sb);
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
            wop_free(op);
            return STORE_E_NOMEM;
        }
        memcpy(op->inputs, nb->inputs, nb->ninputs * sizeof *op->inputs);
        op->nb.inputs = op->inputs;
    }
    if (nb->idem_key != NULL) {
        op->key = strdup(nb->idem_key);
        if (op->key == NULL) {
            wop_free(op);
            return STORE_E_NOMEM;
        }
    }
    enqueue(sq, op);
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
        finish(s);
        *rc = src == SQLITE_DONE ? STORE_E_NOT_FOUND : sq_rc(src);
        return NULL;
    }
    int64_t bno = sqlite3_column_int64(s, 0);
    uint32_t njobs = (uint32_t)sqlite3_column_int64(s, 1);
    int state = sqlite3_column_int(s, 2);
    finish(s);
    if (state != STORE_QUEUED && state != STORE_RUNNING) {
        *rc = STORE_E_ENDED;
        return NULL;
    }
    sb = batch_new(sq, id, bno, njobs);
    if (sb == NULL) {
        *rc = STORE_E_NOMEM;
        return NULL;
    }
    s = sq->r[R_OPEN_IDX];
    sqlite3_bind_int64(s, 1, bno);
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(s, 0);
        if (idx >= 0 && idx < (int64_t)njobs) {
            bit_set(sb->bits, (uint32_t)idx);
        }
    }
    finish(s);
    if (src == SQLITE_DONE) {
        s = sq->r[R_OPEN_SEQ];
        sqlite3_bind_int64(s, 1, key_lo(bno));
        sqlite3_bind_int64(s, 2, key_hi(bno));
        src = sqlite3_step(s);
        if (src == SQLITE_ROW) {
            sb->w_seq = sqlite3_column_type(s, 0) == SQLITE_NULL
                            ? 0
                            : (uint64_t)sqlite3_column_int64(s, 0) & 0xffffffffu;
            src = SQLITE_DONE;
        }
        finish(s);
    }
    if (src != SQLITE_DONE) {
        batch_free(sb);
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
    if (bit_get(sb->bits, index)) {
        return STORE_E_DUPLICATE;
    }
    struct wop *op = op_new(sb, OP_RESULT, line, len);
    if (op == NULL) {
        return STORE_E_NOMEM;
    }
    op->index = index;
    op->ok = ok;
    bit_set(sb->bits, index);
    enqueue(sb->sq, op);
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
        if (!bit_get(sb->bits, i)) {
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
    enqueue(sb->sq, op);
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
static int read_info(sqlite3_stmt *s, const uint8_t *owner, size_t owner_len,
                     struct store_info *out)
{
    memset(out, 0, sizeof *out);
    copy_text(out->id, sizeof out->id, sqlite3_column_text(s, 0));
    const void *o = sqlite3_column_blob(s, 1);
    size_t olen = (size_t)sqlite3_column_bytes(s, 1);
    out->state = sqlite3_column_int(s, 2);
    out->cancel_requested = sqlite3_column_int(s, 3);
    copy_text(out->op, sizeof out->op, sqlite3_column_text(s, 4));
    copy_text(out->request_id, sizeof out->request_id, sqlite3_column_text(s, 5));
    out->created_ms = sqlite3_column_int64(s, 6);
    out->started_ms = sqlite3_column_int64(s, 7);
    out->finished_ms = sqlite3_column_int64(s, 8);
    out->expires_ms = sqlite3_column_int64(s, 9);
    out->njobs = (uint64_t)sqlite3_column_int64(s, 10);
    out->nok = (uint64_t)sqlite3_column_int64(s, 11);
    out->nfailed = (uint64_t)sqlite3_column_int64(s, 12);
    out->last_seq = (uint64_t)sqlite3_column_int64(s, 13);
    return olen == owner_len && (olen == 0 || memcmp(o, owner, olen) == 0);
}

/* Looks batch ID up for OWNER: 0 and its bno, or NOT_FOUND / EXPIRED / IO. */
static int lookup(struct sq_store *sq, const uint8_t *owner, size_t owner_len, const char *id,
                  struct store_info *info, int64_t *bno)
{
    if (id == NULL || !store_id_valid(id) || owner_len > STORE_OWNER_MAX) {
        return STORE_E_NOT_FOUND;
    }
    sqlite3_stmt *s = sq->r[R_GET];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int src = sqlite3_step(s);
    if (src != SQLITE_ROW) {
        finish(s);
        return src == SQLITE_DONE ? STORE_E_NOT_FOUND : sq_rc(src);
    }
    int mine = read_info(s, owner, owner_len, info);
    if (bno != NULL) {
        *bno = sqlite3_column_int64(s, 14);
    }
    finish(s);
    if (!mine) {
        memset(info, 0, sizeof *info);
        return STORE_E_NOT_FOUND;
    }
    /* Past its ttl it is gone, whether or not the expiry timer has run yet. */
    if (info->state == STORE_EXPIRED ||
        ((info->state == STORE_DONE || info->state == STORE_CANCELLED) && info->expires_ms > 0 &&
         info->expires_ms <= sq_now(sq))) {
        info->state = STORE_EXPIRED;
        return STORE_E_EXPIRED;
    }
    return 0;
}

static int sq_get(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                  struct store_info *out)
{
    return lookup(sq_of(st), owner, owner_len, id, out, NULL);
}

static int sq_list(struct store *st, const uint8_t *owner, size_t owner_len, int state,
                   const char *before, struct store_info *out, size_t max, size_t *n)
{
    struct sq_store *sq = sq_of(st);
    *n = 0;
    if (owner_len > STORE_OWNER_MAX || (before != NULL && !store_id_valid(before))) {
        return STORE_E_INVALID;
    }
    int64_t now = sq_now(sq);
    sqlite3_stmt *s = sq->r[R_LIST];
    bind_owner(s, 1, owner, owner_len);
    sqlite3_bind_text(s, 2, before != NULL ? before : "c", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, state);
    /* A few more than MAX, for those past their ttl that the timer has not expired yet. */
    sqlite3_bind_int64(s, 4, (int64_t)max + 64);
    int src;
    while (*n < max && (src = sqlite3_step(s)) == SQLITE_ROW) {
        read_info(s, owner, owner_len, &out[*n]);
        if (out[*n].expires_ms > 0 && out[*n].expires_ms <= now) {
            continue;
        }
        (*n)++;
    }
    if (*n == max) {
        src = SQLITE_DONE;
    }
    finish(s);
    return src == SQLITE_DONE ? 0 : sq_rc(src);
}

static int sq_results_read(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                           uint64_t after, size_t max, store_row_fn *row, void *arg, uint64_t *last)
{
    struct sq_store *sq = sq_of(st);
    struct store_info info;
    int64_t bno = 0;
    *last = after;
    int rc = lookup(sq, owner, owner_len, id, &info, &bno);
    if (rc != 0) {
        return rc;
    }
    if (after > 0xffffffffu) {
        return 0;
    }
    sqlite3_stmt *s = sq->r[R_RESULTS];
    sqlite3_bind_int64(s, 1, key_lo(bno) | (int64_t)after);
    sqlite3_bind_int64(s, 2, key_hi(bno));
    sqlite3_bind_int64(s, 3, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    int src;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0) & 0xffffffffu;
        uint32_t idx = (uint32_t)sqlite3_column_int64(s, 1);
        int ok = sqlite3_column_int(s, 2);
        const void *line = sqlite3_column_blob(s, 3);
        size_t len = (size_t)sqlite3_column_bytes(s, 3);
        *last = seq;
        if (row(arg, seq, idx, ok, line != NULL ? line : sq_empty, len) != 0) {
            src = SQLITE_DONE;
            break;
        }
    }
    finish(s);
    return src == SQLITE_DONE ? 0 : sq_rc(src);
}

static int sq_by_index(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                       uint32_t from, size_t max, store_row_fn *row, void *arg, uint32_t *next)
{
    struct sq_store *sq = sq_of(st);
    struct store_info info;
    int64_t bno = 0;
    *next = from;
    int rc = lookup(sq, owner, owner_len, id, &info, &bno);
    if (rc != 0) {
        return rc;
    }
    sqlite3_stmt *s = sq->r[R_BY_INDEX];
    sqlite3_bind_int64(s, 1, bno);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    int src = sqlite3_step(s);
    while (src == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0) & 0xffffffffu;
        uint32_t idx = (uint32_t)sqlite3_column_int64(s, 1);
        const void *line = sqlite3_column_blob(s, 3);
        size_t len = (size_t)sqlite3_column_bytes(s, 3);
        *next = idx + 1;
        if (row(arg, seq, idx, sqlite3_column_int(s, 2), line != NULL ? line : sq_empty, len) !=
            0) {
            src = SQLITE_DONE;
            break;
        }
        src = sqlite3_step(s);
    }
    finish(s);
    return src == SQLITE_DONE ? 0 : sq_rc(src);
}

static int sq_blob(struct store *st, const char *id, int part, uint32_t index, void **data,
                   size_t *len)
{
    struct sq_store *sq = sq_of(st);
    static const int which[] = {
        [STORE_PART_SPEC] = R_SPEC, [STORE_PART_SUMMARY] = R_SUMMARY, [STORE_PART_INPUT] = R_INPUT};
    *data = NULL;
    *len = 0;
    if (part < 0 || part > STORE_PART_INPUT) {
        return STORE_E_INVALID;
    }
    sqlite3_stmt *s = sq->r[which[part]];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    if (part == STORE_PART_INPUT) {
        sqlite3_bind_int64(s, 2, index);
    }
    int src, found = 0, rc = 0;
    unsigned char *buf = NULL;
    size_t n = 0;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        if (sqlite3_column_type(s, 0) == SQLITE_NULL) {
            continue;
        }
        found = 1;
        size_t add = (size_t)sqlite3_column_bytes(s, 0);
        unsigned char *nbuf = realloc(buf, n + add + 1);
        if (nbuf == NULL) {
            rc = STORE_E_NOMEM;
            break;
        }
        buf = nbuf;
        if (add > 0) {
            memcpy(buf + n, sqlite3_column_blob(s, 0), add);
        }
        n += add;
    }
    finish(s);
    if (rc == 0 && src != SQLITE_DONE) {
        rc = sq_rc(src);
    }
    if (rc == 0 && !found) {
        rc = STORE_E_NOT_FOUND;
    }
    if (rc != 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0'; /* a NUL past the end, for text parts */
    *data = buf;
    *len = n;
    return 0;
}

static int sq_unfinished(struct store *st, void (*fn)(void *arg, const char *id), void *arg)
{
    struct sq_store *sq = sq_of(st);
    sqlite3_stmt *s = sq->r[R_UNFINISHED];
    int src;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        char id[STORE_ID_SIZE];
        copy_text(id, sizeof id, sqlite3_column_text(s, 0));
        fn(arg, id);
    }
    finish(s);
    return src == SQLITE_DONE ? 0 : sq_rc(src);
}

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
    enqueue(sq, op);
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
    enqueue(sq_of(st), op);
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
        wop_free(op);
    }
    while (sq->handles != NULL) {
        struct sq_batch *sb = sq->handles;
        sq->handles = sb->next;
        batch_free(sb);
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

/* Refuses a state dir that is missing and cannot be made, not a directory, not writable or
 * full, by writing (and removing) a probe file in it. */
static int check_dir(const char *dir, char *err, size_t errlen)
{
    struct stat sb;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        errf(err, errlen, "state dir %s cannot be created: %s", dir, strerror(e));
        return e == ENOSPC || e == EDQUOT ? STORE_E_FULL : STORE_E_UNWRITABLE;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        errf(err, errlen, "state dir %s is not a directory", dir);
        return STORE_E_UNWRITABLE;
    }
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.batchd-probe", dir);
    int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        errf(err, errlen, "state dir %s is not writable: %s", dir, strerror(e));
        return e == ENOSPC || e == EDQUOT ? STORE_E_FULL : STORE_E_UNWRITABLE;
    }
    static const char page[4096];
    size_t done = 0;
    int e = 0;
    while (done < sizeof page && e == 0) {
        ssize_t n = write(fd, page + done, sizeof page - done);
        if (n > 0) {
            done += (size_t)n;
        } else {
            e = n < 0 ? errno : ENOSPC;
        }
    }
    if (e == 0 && fsync(fd) != 0) {
        e = errno;
    }
    close(fd);
    unlink(probe);
    if (e != 0) {
        errf(err, errlen, "state dir %s cannot be written: %s", dir, strerror(e));
        return e == ENOSPC || e == EDQUOT || e == EFBIG ? STORE_E_FULL : STORE_E_UNWRITABLE;
    }
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < SQ_MIN_FREE) {
        errf(err, errlen, "state dir %s: its file system is full (%llu bytes free, %u needed)", dir,
             (unsigned long long)vfs.f_bavail * vfs.f_frsize, SQ_MIN_FREE);
        return STORE_E_FULL;
    }
    return 0;
}

/* One process per state dir: two writers would each believe their own counters. The lock
 * goes with the process, SIGKILL included. */
static int lock_dir(struct sq_store *sq, const char *dir, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/lock", dir);
    sq->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sq->lock_fd < 0) {
        errf(err, errlen, "state dir %s: cannot open %s: %s", dir, path, strerror(errno));
        return STORE_E_UNWRITABLE;
    }
    if (flock(sq->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        errf(err, errlen, "state dir %s is in use by another process (%s)", dir,
             e == EWOULDBLOCK ? "its lock file is held" : strerror(e));
        return e == EWOULDBLOCK ? STORE_E_BUSY : STORE_E_IO;
    }
    return 0;
}

static int exec_all(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static int open_fail(struct sq_store *sq, int rc, const char *what, char *err, size_t errlen)
{
    int code = sq_rc(rc);
    const char *msg = sq->wdb != NULL ? sqlite3_errmsg(sq->wdb) : sqlite3_errstr(rc);
    if (code == STORE_E_CORRUPT) {
        errf(err, errlen,
             "%s is not a batchd store or is damaged (%s: %s); refusing to start on it: move "
             "it away to start empty, or restore it",
             sq->path, what, msg);
    } else if (code == STORE_E_FULL) {
        errf(err, errlen, "%s: the disk is full (%s: %s)", sq->path, what, msg);
    } else {
        errf(err, errlen, "%s cannot be %s (%s)", sq->path, what, msg);
    }
    return code;
}

/* Sets the connection up and checks the file: ours, intact, writable. */
static int open_db(struct sq_store *sq, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_open_v2(
        sq->path, &sq->wdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "opened", err, errlen);
    }
    sqlite3_extended_result_codes(sq->wdb, 0);
    if (sqlite3_db_readonly(sq->wdb, "main") == 1) {
        errf(err, errlen, "%s is read-only; refusing to start on it", sq->path);
        return STORE_E_UNWRITABLE;
    }
    sqlite3_busy_timeout(sq->wdb, 5000);
    /* Reading the schema reads the header: a file that is not a database fails here. */
    int64_t tables = 0, app_id = 0;
    rc = sqlite3_prepare_v2(sq->wdb, "SELECT count(*) FROM sqlite_schema", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        tables = sqlite3_column_int64(s, 0);
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "read", err, errlen);
    }
    if (tables == 0) {
        /* A new file: auto_vacuum only takes before the first table is made. */
        char sql[128];
        snprintf(sql, sizeof sql, "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA application_id = %d",
                 SQ_APP_ID);
        rc = exec_all(sq->wdb, sql);
        if (rc != SQLITE_OK) {
            return open_fail(sq, rc, "set up", err, errlen);
        }
    } else {
        rc = sqlite3_prepare_v2(sq->wdb, "PRAGMA application_id", -1, &s, NULL);
        if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
            app_id = sqlite3_column_int64(s, 0);
        }
        sqlite3_finalize(s);
        s = NULL;
        if (app_id != SQ_APP_ID) {
            errf(err, errlen,
                 "%s is an SQLite database but not a batchd store; refusing to start on it",
                 sq->path);
            return STORE_E_CORRUPT;
        }
    }
    rc = sqlite3_prepare_v2(sq->wdb, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        const unsigned char *mode = sqlite3_column_text(s, 0);
        if (rc == SQLITE_ROW && (mode == NULL || strcmp((const char *)mode, "wal") != 0)) {
            sqlite3_finalize(s);
            errf(err, errlen, "%s: WAL mode cannot be set (file system without shared memory?)",
                 sq->path);
            return STORE_E_UNWRITABLE;
        }
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "put in WAL mode", err, errlen);
    }
    rc = exec_all(sq->wdb, "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 4194304;"
                           "PRAGMA secure_delete = OFF; PRAGMA foreign_keys = OFF;");
    if (rc == SQLITE_OK) {
        rc = sqlite3_wal_autocheckpoint(sq->wdb, 0);
    }
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "set up", err, errlen);
    }
    struct stat fst;
    if (tables > 0 && stat(sq->path, &fst) == 0 && fst.st_size <= QUICK_CHECK_MAX) {
        rc = sqlite3_prepare_v2(sq->wdb, "PRAGMA quick_check(1)", -1, &s, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(s);
            const unsigned char *res = sqlite3_column_text(s, 0);
            if (rc == SQLITE_ROW && (res == NULL || strcmp((const char *)res, "ok") != 0)) {
                errf(err, errlen,
                     "%s is damaged (quick_check: %s); refusing to start on it: move it away to "
                     "start empty, or restore it",
                     sq->path, res != NULL ? (const char *)res : "?");
                sqlite3_finalize(s);
                return STORE_E_CORRUPT;
            }
            rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
        }
        sqlite3_finalize(s);
        s = NULL;
        if (rc != SQLITE_OK) {
            return open_fail(sq, rc, "checked", err, errlen);
        }
    }
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE; INSERT OR REPLACE INTO meta VALUES ('schema', %d);"
             " INSERT OR REPLACE INTO meta VALUES ('opened_ms', %lld); COMMIT",
             SQ_SCHEMA_VERSION, (long long)sq_now(sq));
    rc = exec_all(sq->wdb, sq_schema);
    if (rc == SQLITE_OK) {
        /* The probe write: a store that cannot commit refuses to start. */
        rc = exec_all(sq->wdb, sql);
    }
    if (rc != SQLITE_OK) {
        int code = open_fail(sq, rc, "written", err, errlen);
        if (!sqlite3_get_autocommit(sq->wdb)) {
            exec_all(sq->wdb, "ROLLBACK");
        }
        return code;
    }
    rc = sqlite3_prepare_v2(sq->wdb, "SELECT coalesce(sum(bytes), 0) FROM batches", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        sq->total_bytes = sqlite3_column_int64(s, 0);
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) {
        return open_fail(sq, rc, "read", err, errlen);
    }
    for (int i = 0; i < W_COUNT; i++) {
        rc =
            sqlite3_prepare_v3(sq->wdb, wst_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sq->w[i], NULL);
        if (rc != SQLITE_OK) {
            return open_fail(sq, rc, "prepared", err, errlen);
        }
    }
    rc = sqlite3_open_v2(sq->path, &sq->rdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(sq->rdb, 0);
        /* A reader in WAL never waits for the writer; a short wait covers WAL recovery. */
        sqlite3_busy_timeout(sq->rdb, 100);
        rc = exec_all(sq->rdb, "PRAGMA query_only = ON");
    }
    for (int i = 0; rc == SQLITE_OK && i < R_COUNT; i++) {
        rc =
            sqlite3_prepare_v3(sq->rdb, rst_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sq->r[i], NULL);
    }
    if (rc != SQLITE_OK) {
        errf(err, errlen, "%s cannot be opened for reading (%s)", sq->path,
             sq->rdb != NULL ? sqlite3_errmsg(sq->rdb) : sqlite3_errstr(rc));
        return sq_rc(rc);
    }
    return 0;
}

static const struct store_ops sq_ops;

int store_sqlite_open(const struct store_config *cfg, struct store **out, char *err, size_t errlen)
{
    *out = NULL;
    errf(err, errlen, "%s", "");
    if (cfg == NULL || cfg->state_dir == NULL || cfg->state_dir[0] == '\0') {
        errf(err, errlen, "no state dir given");
        return STORE_E_INVALID;
    }
    int rc = check_dir(cfg->state_dir, err, errlen);
    if (rc != 0) {
        return rc;
    }
    struct sq_store *sq = calloc(1, sizeof *sq);
    if (sq == NULL) {
        errf(err, errlen, "out of memory");
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
        errf(err, errlen, "state dir path too long");
        rc = STORE_E_INVALID;
        goto out;
    }
    rc = lock_dir(sq, cfg->state_dir, err, errlen);
    if (rc != 0) {
        goto out;
    }
    rc = open_db(sq, err, errlen);
    if (rc != 0) {
        goto out;
    }
    sq->stats.bytes = (uint64_t)sq->total_bytes;
    sq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sq->efd < 0) {
        errf(err, errlen, "eventfd: %s", strerror(errno));
        rc = STORE_E_IO;
        goto out;
    }
    if (pthread_create(&sq->thread, NULL, writer_main, sq) != 0) {
        errf(err, errlen, "cannot start the store's writer thread");
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
    .batch_get = sq_get,
    .batch_list = sq_list,
    .results_read = sq_results_read,
    .results_by_index = sq_by_index,
    .batch_blob = sq_blob,
    .unfinished = sq_unfinished,
    .batch_forget = sq_forget,
    .expire = sq_expire,
    .stats = sq_stats,
};
/* clang-format on */
