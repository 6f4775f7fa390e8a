/* What the files of the SQLite store (store_sqlite.c, sq_*.c) share: limits, statement ids,
 * the store's, a batch handle's and a queued write's structs, and the calls between the
 * files. Private to those files; the rest of store/ sees internal.h only. Calls run one way:
 * store_sqlite.c -> sq_open, sq_writer, sq_read; sq_writer -> sq_expire; all -> sq_util. */
#ifndef BATCHD_STORE_SQ_INTERNAL_H
#define BATCHD_STORE_SQ_INTERNAL_H

#include "internal.h"
#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

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
    R_STATES,
    R_COUNT
};

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

/* What one transaction did, applied to the store's figures once it commits. */
struct txn {
    uint64_t rows;            /* results written */
    uint64_t dups;            /* results the database refused (their job had one) */
    int64_t bytes;            /* change of the stored bytes */
    int vacuum;               /* batches were deleted: give the space back */
    int wrote;                /* it changed a row (else it is no commit for the figures) */
    struct sq_batch *touched; /* batches whose counters change */
};

static inline struct sq_store *sq_of(const struct store *st)
{
    return (struct sq_store *)st;
}

static inline int64_t sq_key_lo(int64_t bno)
{
    return (int64_t)((uint64_t)bno << 32);
}

static inline int64_t sq_key_hi(int64_t bno)
{
    return (int64_t)(((uint64_t)bno << 32) | 0xffffffffu);
}

static inline int sq_bit_get(const uint8_t *bits, uint32_t i)
{
    return (bits[i >> 3] >> (i & 7)) & 1;
}

static inline void sq_bit_set(uint8_t *bits, uint32_t i)
{
    bits[i >> 3] |= (uint8_t)(1u << (i & 7));
}

/* sq_util.c: clocks, messages, result codes, statement and handle helpers */
extern const uint8_t sq_empty[1];
int64_t sq_mono_ns(void);
int64_t sq_now(const struct sq_store *sq);
void sq_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int sq_rc(int rc);
int sq_bind_owner(sqlite3_stmt *s, int col, const uint8_t *owner, size_t len);
int sq_step_done(sqlite3_stmt *s);
void sq_finish(sqlite3_stmt *s);
void sq_copy_text(char *dst, size_t cap, const unsigned char *src);
struct sq_batch *sq_batch_new(struct sq_store *sq, const char *id, int64_t bno, uint32_t njobs);
void sq_batch_free(struct sq_batch *sb);
void sq_wop_free(struct wop *op);

/* sq_open.c: the state dir's checks and lock, the connections, pragmas and schema */
int sq_open_check_dir(const char *dir, char *err, size_t errlen);
int sq_open_lock_dir(struct sq_store *sq, const char *dir, char *err, size_t errlen);
int sq_open_db(struct sq_store *sq, char *err, size_t errlen);

/* sq_writer.c: the write queue and the writer thread */
void sq_writer_enqueue(struct sq_store *sq, struct wop *op);
void *sq_writer_main(void *p);
void sq_writer_notify(struct sq_store *sq);

/* sq_expire.c: forgetting and expiring batches, inside the writer's transaction */
int sq_expire_flush_counts(struct sq_store *sq, struct txn *tx);
int sq_expire_forget(struct sq_store *sq, struct wop *op, struct txn *tx);
int sq_expire_due(struct sq_store *sq, struct wop *op, struct txn *tx);

/* sq_read.c: reads on the loop thread's read-only connection */
int sq_read_get(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                struct store_info *out);
int sq_read_list(struct store *st, const uint8_t *owner, size_t owner_len, int state,
                 const char *before, struct store_info *out, size_t max, size_t *n);
int sq_read_results(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                    uint64_t after, size_t max, store_row_fn *row, void *arg, uint64_t *last);
int sq_read_by_index(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                     uint32_t from, size_t max, store_row_fn *row, void *arg, uint32_t *next);
int sq_read_blob(struct store *st, const char *id, int part, uint32_t index, void **data,
                 size_t *len);
int sq_read_unfinished(struct store *st, void (*fn)(void *arg, const char *id), void *arg);
int sq_read_counts(struct store *st, uint64_t out[STORE_NSTATES]);

#endif
