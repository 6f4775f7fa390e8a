/* The store of SPEC §8: stored batches (spec, uploaded inputs, owner, idempotency key), their
 * results with a seq, and their summaries, kept durably so that a batch outlives its
 * connection and the process. One interface, several backends: store_sqlite.c (the embedded
 * default, --state-dir) today, Redis (issue 11) later, behind the same calls.
 *
 * Threading: every store_* call comes from one thread (the server's loop). Writes are queued
 * and committed by the backend off that thread; their outcomes come back through store_fd()
 * and store_dispatch(). Reads answer at once from what is committed. Not HTTP-aware: the
 * server maps the STORE_E_* codes onto its own error list (api/errors.h). */
#ifndef BATCHD_STORE_STORE_H
#define BATCHD_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

/* A batch id: "b_" + 26 Crockford base32 characters (48-bit ms time, 80 random bits), so
 * that ids sort by creation time (ULID). STORE_ID_SIZE counts the NUL. */
#define STORE_ID_LEN 28
#define STORE_ID_SIZE (STORE_ID_LEN + 1)

/* The owner of a batch: a hash of its bearer token, at most this many bytes (none: 0). */
#define STORE_OWNER_MAX 32
/* As an owner length: any owner (store_batch_get, for the server's own use). */
#define STORE_ANY_OWNER ((size_t)-1)
/* An Idempotency-Key, at most this many bytes. */
#define STORE_KEY_MAX 255

/* XX(ENUM_SUFFIX, "name", "message"). Outcomes, not wire codes: the server maps
 * KEY_REUSED to 422 idempotency_key_reused, FULL to 507, NOT_FOUND to 404, EXPIRED to 410,
 * NOT_FINISHED to 409 (or to a cancel), the open errors to a refusal to start. */
#define STORE_ERRNO_MAP(XX)                                                                        \
    XX(KEY_REUSED, "key_reused", "the idempotency key was used with another body")                 \
    XX(FULL, "full", "the store holds --max-stored-bytes or its disk is full")                     \
    XX(NOT_FOUND, "not_found", "no such batch for this owner")                                     \
    XX(EXPIRED, "expired", "the batch ended longer ago than --result-ttl")                         \
    XX(DUPLICATE, "duplicate", "this job already has a recorded result")                           \
    XX(ENDED, "ended", "the batch has ended")                                                      \
    XX(NOT_FINISHED, "not_finished", "the batch has not ended")                                    \
    XX(INVALID, "invalid", "invalid argument")                                                     \
    XX(NOMEM, "nomem", "out of memory")                                                            \
    XX(IO, "io", "the store could not read or write")                                              \
    XX(UNWRITABLE, "unwritable", "the state dir cannot be written")                                \
    XX(CORRUPT, "corrupt", "the database file is not a batchd store or is damaged")                \
    XX(BUSY, "busy", "another process has the state dir open")                                     \
    XX(AGAIN, "again", "the answer is on its way: ask again when the store reports progress")

enum store_err {
    STORE_OK = 0,
    /* store_batch_create: the key and the fingerprint matched an existing batch. */
    STORE_REPLAYED = 1,
#define XX(e, name, msg) STORE_E_##e##_,
    STORE_E_FIRST_ = 1,
    STORE_ERRNO_MAP(XX)
#undef XX
};
#define XX(e, name, msg) STORE_E_##e = -STORE_E_##e##_,
enum store_err_neg { STORE_ERRNO_MAP(XX) };
#undef XX

/* The name ("key_reused") and message of a STORE_* code. Static strings. */
const char *store_err_name(int rc);
const char *store_err_message(int rc);

/* Batch states (SPEC §8); EXPIRED is the tombstone left after --result-ttl. */
enum store_state {
    STORE_QUEUED = 0,
    STORE_RUNNING = 1,
    STORE_DONE = 2,
    STORE_CANCELLED = 3,
    STORE_EXPIRED = 4,
};
#define STORE_ANY_STATE (-1)

/* "queued", "running", ...; "unknown" for anything else. Static. */
const char *store_state_name(int state);

struct store;
/* The handle of one batch that still gets results: there is at most one per batch. */
struct store_batch;

/* Outcome of a write, on the loop thread: store_dispatch calls it. RC is STORE_OK (created),
 * STORE_REPLAYED (ID is the existing batch of that key), or a STORE_E_* code (ID empty).
 * SB is the batch's handle when it still takes results (a reference the callee owns: give
 * it back with store_batch_release), NULL otherwise. */
typedef void store_done_fn(void *arg, int rc, struct store_batch *sb, const char *id);
/* Results of batch ID are committed up to COMMITTED_SEQ (on the loop thread). */
typedef void store_progress_fn(void *arg, const char *id, uint64_t committed_seq);
/* A write failed in the background (ROWS rows not yet committed; retried). */
typedef void store_error_fn(void *arg, int rc, const char *message);

struct store_config {
    const char *state_dir; /* created if missing (0700) */
    uint64_t max_bytes;    /* --max-stored-bytes: new batches past it get STORE_E_FULL */
    int64_t result_ttl_ms; /* --result-ttl: kept this long after the batch ends (0: 24 h) */
    unsigned flush_rows;   /* commit when this many results wait (0: 1000) */
    unsigned flush_ms;     /* ... or when the oldest has waited this long (0: 10) */
    /* Wall clock in ms since the epoch (NULL: CLOCK_REALTIME); called from any thread. */
    int64_t (*now_ms)(void);
    store_progress_fn *on_progress; /* may be NULL */
    store_error_fn *on_error;       /* may be NULL */
    void *arg;                      /* for the callbacks */
    /* Cluster mode (SPEC §9): with REDIS_URL the store is Redis, shared by every replica. */
    const char *redis_url;        /* NULL or "": the SQLite store in state_dir */
    const char *replica;          /* this replica's name (logs, consumer, status) */
    uint64_t claim_timeout_ms;    /* a chunk untouched this long is claimed by another replica */
    uint64_t cluster_max_upload;  /* a batch uploading more bytes runs where it was received */
    store_progress_fn *on_cancel; /* cluster: batch ID got a cancel (from any replica) */
};

/* Opens the store of CFG (today: SQLite in CFG->state_dir). Returns 0 and *OUT (new: free
 * with store_close), or STORE_E_UNWRITABLE, STORE_E_CORRUPT, STORE_E_FULL (disk full),
 * STORE_E_BUSY (another process holds the state dir), STORE_E_IO, STORE_E_NOMEM, with a
 * sentence for a human in ERR. Never opens an empty store
 * over one it cannot read. */
int store_open(const struct store_config *cfg, struct store **out, char *err, size_t errlen);

/* Commits everything queued, stops the writer and frees the store. NULL: no-op. Handles
 * still held are freed with it. A write that keeps failing (disk full) is given up after
 * three tries: those results were never recorded, so their jobs run again on the next start;
 * creations not committed get their error through store_done_fn. */
void store_close(struct store *st);

/* A descriptor that turns readable when outcomes wait for store_dispatch (level-triggered). */
int store_fd(const struct store *st);

/* Runs the outcomes that wait (store_done_fn, store_progress_fn); never blocks. */
void store_dispatch(struct store *st);

/* Blocks until everything queued so far is committed (or failed), then dispatches. For tests
 * and shutdown, not for the loop. Returns 0 or the first background error's code. */
int store_sync(struct store *st);

/* A batch to create. Every pointer is borrowed until the store_done_fn runs. */
struct store_blob {
    const void *data;
    size_t len;
};
struct store_new_batch {
    const uint8_t *owner; /* token hash, OWNER_LEN <= STORE_OWNER_MAX bytes */
    size_t owner_len;
    const char *idem_key;    /* NULL: none */
    uint8_t fingerprint[32]; /* SHA-256 of the request body (with a key) */
    const char *op;          /* for the status document ("mixed", ...); NULL: "" */
    const char *request_id;  /* NULL: "" */
    const void *spec;        /* the batch document (JSON) as submitted */
    size_t spec_len;
    const struct store_blob *inputs; /* uploaded files, in order (multipart) */
    size_t ninputs;
    uint32_t njobs;
};

/* Queues the creation of batch NB, atomic with its idempotency key: with a key already used
 * by this owner, the same fingerprint answers STORE_REPLAYED with that batch, another one
 * STORE_E_KEY_REUSED; past max_bytes STORE_E_FULL. DONE runs once, from store_dispatch,
 * after the commit: only then may the batch be announced (202). Returns 0 (DONE will run)
 * or STORE_E_INVALID / STORE_E_NOMEM (DONE will not). */
int store_batch_create(struct store *st, const struct store_new_batch *nb, store_done_fn *done,
                       void *arg);

/* The handle of unfinished batch ID (found with store_unfinished, say), to record its
 * remaining results. Returns 0 and *OUT (release with store_batch_release), or
 * STORE_E_NOT_FOUND, STORE_E_ENDED, STORE_E_IO, STORE_E_NOMEM. */
int store_batch_open(struct store *st, const char *id, struct store_batch **out);

/* Gives a handle back; queued writes for it still commit. NULL: no-op. */
void store_batch_release(struct store_batch *sb);

/* The id of SB (borrowed, valid while SB is). */
const char *store_batch_id(const struct store_batch *sb);

/* Queues the result of job INDEX: LINE is the result line (without seq or newline), OK says
 * whether it is a result or an error. The store assigns its seq at the commit. Returns 0,
 * STORE_E_DUPLICATE (INDEX already has a result: nothing queued), STORE_E_ENDED,
 * STORE_E_INVALID (INDEX past njobs) or STORE_E_NOMEM. LINE is copied. */
int store_result_add(struct store_batch *sb, uint32_t index, int ok, const void *line, size_t len);

/* The next job index >= FROM without a result (queued or committed), or -1 if none: the
 * jobs to run again after a restart. */
int64_t store_batch_next_missing(const struct store_batch *sb, uint32_t from);

/* The seq up to which SB's results are committed. */
uint64_t store_batch_committed_seq(const struct store_batch *sb);

/* Queue: the first job started (state running, started_at). Returns 0 or STORE_E_ENDED. */
int store_batch_start(struct store_batch *sb);

/* Queue: a cancel was asked for; survives a restart (the batch then ends as cancelled
 * instead of running again). Returns 0 or STORE_E_ENDED. */
int store_batch_cancel(struct store_batch *sb);

/* Queue: the batch ended in STATE (STORE_DONE or STORE_CANCELLED) with SUMMARY (the summary
 * line, copied), after every result queued before. expires_at = now + result_ttl. Returns 0,
 * STORE_E_ENDED, STORE_E_INVALID or STORE_E_NOMEM. */
int store_batch_end(struct store_batch *sb, int state, const void *summary, size_t len);

/* A batch's status, as committed. */
struct store_info {
    char id[STORE_ID_SIZE];
    int state;
    int cancel_requested;
    char op[64];
    char request_id[128];
    int64_t created_ms, started_ms, finished_ms, expires_ms; /* 0: not yet */
    uint64_t njobs, nok, nfailed;
    uint64_t last_seq;
    /* Cluster (SPEC §9): 1 chunks in the cluster queue, 0 it runs on the replica that got it
     * (its upload was over --cluster-max-upload), -1 not a cluster. REPLICAS: the names of
     * the replicas that ran it, comma-separated ("" none yet). */
    int queue;
    char replicas[512];
};

/* Reads batch ID for OWNER into *OUT (OWNER_LEN STORE_ANY_OWNER: whoever owns it, for the
 * server's own use). Returns 0, STORE_E_NOT_FOUND (never issued, forgotten, or another
 * owner's), STORE_E_EXPIRED (past its ttl; *OUT has the id and state)
 * or STORE_E_IO. */
int store_batch_get(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                    struct store_info *out);

/* OWNER's batches in STATE (or STORE_ANY_STATE), newest first, older than BEFORE (NULL:
 * from the newest), at most MAX into OUT; *N gets the count. Expired ones are not listed.
 * Returns 0 or STORE_E_IO / STORE_E_INVALID. */
int store_batch_list(struct store *st, const uint8_t *owner, size_t owner_len, int state,
                     const char *before, struct store_info *out, size_t max, size_t *n);

/* One committed result: LINE is borrowed until the callback returns. Return 0 to go on,
 * non-zero to stop. */
typedef int store_row_fn(void *arg, uint64_t seq, uint32_t index, int ok, const void *line,
                         size_t len);

/* Calls ROW for OWNER's batch ID's results with seq > AFTER, in seq order, at most MAX rows
 * (bounded memory: one row at a time). *LAST gets the last seq passed (AFTER if none).
 * Returns 0, STORE_E_NOT_FOUND, STORE_E_EXPIRED or STORE_E_IO. */
int store_results_read(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                       uint64_t after, size_t max, store_row_fn *row, void *arg, uint64_t *last);

/* The same in job index order, for SPEC §4's JSON document of an ended batch: ROW is called
 * for the results with index >= FROM, at most MAX; *NEXT gets the index after the last one
 * passed (FROM if none), to go on from. Returns as store_results_read. */
int store_results_by_index(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                           uint32_t from, size_t max, store_row_fn *row, void *arg, uint32_t *next);

/* Which piece of a batch store_batch_blob reads. */
enum store_part {
    STORE_PART_SPEC = 0,    /* the batch document */
    STORE_PART_SUMMARY = 1, /* the summary line (once ended) */
    STORE_PART_INPUT = 2,   /* uploaded file INDEX */
};

/* Reads PART of batch ID (no owner check: for the server's own use) into *DATA (new: free())
 * and *LEN. Returns 0, STORE_E_NOT_FOUND (no such batch or part), STORE_E_IO, STORE_E_NOMEM. */
int store_batch_blob(struct store *st, const char *id, int part, uint32_t index, void **data,
                     size_t *len);

/* The same without blocking: FN gets the outcome (RC as store_batch_blob; DATA borrowed
 * during the call) from store_dispatch, or at once for a store whose reads do not wait on a
 * network (SQLite). Returns 0 (FN will run) or STORE_E_NOMEM / STORE_E_IO (it will not). */
typedef void store_blob_fn(void *arg, int rc, const void *data, size_t len);
int store_batch_blob_async(struct store *st, const char *id, int part, uint32_t index,
                           store_blob_fn *fn, void *arg);

/* Calls FN with the id of every batch not ended (queued or running), oldest first: on start,
 * the batches to carry on. Returns 0 or STORE_E_IO. */
int store_unfinished(struct store *st, void (*fn)(void *arg, const char *id), void *arg);

/* Queues forgetting OWNER's ended batch ID (DELETE on an ended batch: it is then 404).
 * DONE gets STORE_OK, STORE_E_NOT_FOUND or STORE_E_NOT_FINISHED (cancel it instead). */
int store_batch_forget(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                       store_done_fn *done, void *arg);

/* Queues the expiry of every batch whose expires_at <= NOW_MS: results, inputs, spec,
 * summary and key are deleted, an expired tombstone stays (410) for another ttl. Call it
 * from a timer. Returns 0 or STORE_E_NOMEM. */
int store_expire(struct store *st, int64_t now_ms);

/* Figures for metrics and benchmarks. */
#define STORE_HIST_BUCKETS 97
struct store_stats {
    uint64_t bytes;        /* stored bytes (specs, inputs, results, summaries) */
    uint64_t pending_rows; /* results queued, not yet committed */
    uint64_t rows;         /* results committed since open */
    uint64_t flushes;      /* write transactions committed since open */
    uint64_t dup_ignored;  /* results the database refused as a second of their job */
    uint64_t checkpoints;  /* WAL checkpoints run */
    double flush_max_ms;   /* the slowest commit */
    double flush_total_ms; /* the time of every commit, summed */
    /* 0, or the STORE_E_* code of the last write transaction while it failed: it is set by
     * a failed commit and cleared by the next one that succeeds, an expiry that wrote
     * nothing included (for /readyz). */
    int write_error;
    /* commits by duration: [k] counts those under 2^(k/4) microseconds (16 s at most) */
    uint64_t flush_hist[STORE_HIST_BUCKETS];
};
void store_stats_get(struct store *st, struct store_stats *out);

/* The flush time under which P (0..1) of the commits took, in ms, from a stats histogram. */
double store_stats_quantile_ms(const struct store_stats *s, double p);

/* How many batches are in each state (STORE_QUEUED .. STORE_EXPIRED, the tombstones), as
 * committed, into OUT[state]; for metrics: one cheap query, fine per scrape. Returns 0 or
 * STORE_E_IO (OUT then all 0). */
#define STORE_NSTATES (STORE_EXPIRED + 1)
int store_batch_counts(struct store *st, uint64_t out[STORE_NSTATES]);

/* Reads ahead, without blocking, what store_results_read (BY_INDEX 0) or
 * store_results_by_index (1) of OWNER's batch ID from FROM (at most MAX rows), then
 * store_batch_get and its summary, will read next. Returns 0 when those calls can go on now
 * (answered from memory, or read the usual way), or STORE_E_AGAIN: the page is on its way,
 * and on_progress reports ID once it is there (ask again then; FOLLOW: a page with nothing
 * new is reported only once the batch moves on). For a store whose reads do not wait on a
 * network (SQLite): always 0. */
int store_prefetch_results(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                           int by_index, uint64_t from, size_t max, int follow);

/* The same for the next store_batch_get of OWNER's batch ID (a status, a lookup). */
int store_prefetch_info(struct store *st, const uint8_t *owner, size_t owner_len, const char *id);

/* ---------------------------------------------------------------- cluster (SPEC §9) */

/* 1 when ST is shared by replicas (Redis): stored batches are then cut into chunks that
 * store_claim hands out; store_batch_create's DONE then gets no handle for them. */
int store_is_cluster(const struct store *st);

/* A chunk of a batch claimed by this replica: jobs FROM..TO-1 of batch ID. */
struct store_chunk {
    char id[STORE_ID_SIZE];
    char entry[48]; /* its entry in the batch's queue */
    uint32_t from, to;
    uint32_t njobs;     /* of the batch */
    int reclaimed;      /* taken over from a replica that stopped touching it */
    int cancel;         /* the batch has a cancel recorded */
    int64_t created_ms; /* the batch's creation: its deadline counts from there */
    uint8_t *bits;      /* bit K (bits[K/8] >> K%8 & 1): job FROM+K has a recorded result */
};
/* A claimed chunk (borrowed: copy what you keep), from store_dispatch. */
typedef void store_chunk_fn(void *arg, const struct store_chunk *c);

/* Asks for up to MAX chunks; FN runs once per chunk claimed, later, from store_dispatch
 * (none when there is no work: ask again, store_claim_wanted says when it is worth it).
 * Returns 0, STORE_E_IO (Redis is not reachable) or STORE_E_INVALID (not a cluster). */
int store_claim(struct store *st, unsigned max, store_chunk_fn *fn, void *arg);

/* Records the result of job INDEX of batch ID (run from a claimed chunk): exactly once in
 * the cluster (a second is refused there and counted). LINE is copied. 0 or STORE_E_NOMEM. */
int store_chunk_result(struct store *st, const struct store_chunk *c, uint32_t index, int ok,
                       const void *line, size_t len);

/* What store_chunk_finish learnt of the batch once the chunk's results were recorded. */
struct store_chunk_end {
    uint64_t njobs, nok, nfailed;
    int complete; /* every job of the batch has a recorded result */
    int ended;    /* its end is recorded already */
    int cancel;
    int64_t created_ms;
    char request_id[128];
    double busy_ms; /* the batch's busy time over the cluster */
};
typedef void store_chunk_end_fn(void *arg, const struct store_chunk_end *e);

/* Chunk C ran (its results are queued): once they are recorded, DONE learns whether the batch
 * is complete; the caller then ends it (store_chunk_end_batch) and acks (store_chunk_ack).
 * BUSY_MS is the chunk's busy time. Returns 0 or STORE_E_NOMEM. */
int store_chunk_finish(struct store *st, const struct store_chunk *c, double busy_ms,
                       store_chunk_end_fn *done, void *arg);

/* Records batch ID's end (state, summary line) unless it is recorded already. */
int store_chunk_end_batch(struct store *st, const char *id, int state, const void *summary,
                          size_t len);

/* Acknowledges chunk C: no replica runs it again. */
int store_chunk_ack(struct store *st, const struct store_chunk *c);

/* Gives chunk C up without acking it (this replica stops: another one takes it over after
 * the claim timeout). */
void store_chunk_drop(struct store *st, const struct store_chunk *c);

/* Records a cancel of batch ID (any replica's): every replica stops its chunks (on_cancel).
 * Returns 0, STORE_E_NOT_FOUND, STORE_E_ENDED, STORE_E_IO. DONE gets the outcome. */
int store_cancel_id(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                    store_done_fn *done, void *arg);

/* Cluster figures for metrics. */
struct store_cluster_stats {
    int up;              /* connected to Redis */
    uint64_t claimed;    /* chunks claimed first-hand */
    uint64_t reclaimed;  /* chunks taken over from another replica */
    uint64_t recorded;   /* results recorded */
    uint64_t duplicates; /* results refused as a second of their job */
    uint64_t lost;       /* chunks another replica took while this one still ran them */
    uint64_t running;    /* chunks claimed here and not acked yet */
};
void store_cluster_stats_get(const struct store *st, struct store_cluster_stats *out);

/* Makes a new batch id into OUT (used by the backends; exposed for tests). NOW_MS is the
 * time part. Not thread-safe: one generator per thread. */
void store_id_make(int64_t now_ms, char out[STORE_ID_SIZE]);

/* 1 if S is a well-formed batch id. */
int store_id_valid(const char *s);

/* The creation time (ms since the epoch) that batch id ID carries, or 0 if ID is not one. */
int64_t store_id_time_ms(const char *id);

#endif
