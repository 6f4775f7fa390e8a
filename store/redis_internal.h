/* What the files of the Redis store (store_redis.c, redis_*.c) share: the store's struct, the
 * key names and the calls between the files. Private to them; the rest of store/ sees
 * internal.h only. The key schema (every key of a batch shares the hash tag {ID}):
 *   batchd:{ID}:meta   HASH  owner (hex) op rid njobs created started finished expires state
 *                            cancel nok nfailed seq busy_us chunk ninputs bytes queue local
 *                            summary key fp
 *   batchd:{ID}:spec   STRING the batch document
 *   batchd:{ID}:in     HASH  N -> uploaded input N
 *   batchd:{ID}:bits   STRING bit I = job I has a recorded result
 *   batchd:{ID}:res    HASH  I -> "<seq> <ok> <line>"
 *   batchd:{ID}:order  LIST  the indexes in seq order (element k: seq k+1)
 *   batchd:{ID}:q      STREAM chunks (f, t), group "w"
 *   batchd:{ID}:ran    SET   the replicas that claimed a chunk
 *   batchd:by:OWNER    ZSET  the owner's batch ids (score 0: lex order is time order)
 *   batchd:key:OWNER:K STRING the batch of idempotency key K
 *   batchd:active      LIST  unfinished batches in the queue (claims rotate over it)
 *   batchd:ended       ZSET  ended batches by expiry time
 *   batchd:bytes       STRING stored bytes;  batchd:states HASH state -> batches
 * OWNER is the hex of the owner hash, "-" for none.
 * Calls run one way: store_redis.c -> redis_write, redis_claim, redis_read -> redis_conn. */
#ifndef BATCHD_STORE_REDIS_INTERNAL_H
#define BATCHD_STORE_REDIS_INTERNAL_H

#include "internal.h"
#include "store.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define RS_OWNER_HEX (2 * STORE_OWNER_MAX + 1)
#define RS_KEY_MAX (64 + STORE_ID_LEN + 2 * STORE_OWNER_MAX + STORE_KEY_MAX)
#define RS_READ_TIMEOUT_MS 500 /* a read that takes longer: the store is unavailable */

struct rs_cmd;  /* a queued command (redis_conn.c) */
struct rs_rows; /* results waiting to be sent for one batch (redis_rows.c) */
struct rs_page; /* a page of results fetched ahead (redis_prefetch.c) */
struct rs_gen;

/* The Lua scripts (redis_scripts.c). */
enum {
    RS_S_CREATE,
    RS_S_RECORD,
    RS_S_FINISH,
    RS_S_END,
    RS_S_CANCEL,
    RS_S_START,
    RS_S_FORGET,
    RS_S_EXPIRE,
    RS_S_CLAIM,
    RS_S_TOUCH,
    RS_S_POLL,
    RS_S_ACK,
    RS_S_PAGE,
    RS_NSCRIPTS
};
extern const char *const rs_scripts[RS_NSCRIPTS];
struct rs_batch;

struct rstore {
    struct store base;
    struct store_config cfg;
    char url[1024];
    char replica[128];
    char consumer[160]; /* replica.bootid: the consumer name in the queues */
    /* where Redis is */
    char host[256];
    int port;
    char path[1024];
    int db;
    /* the loop's connection (async): its fd and a timer in one epoll set, store_fd() */
    int epfd;
    int timerfd;
    redisAsyncContext *ac;
    int ac_fd;
    unsigned ac_mask; /* EPOLLIN / EPOLLOUT hiredis wants */
    int connected;    /* AUTH/SELECT/SCRIPT LOAD done */
    int connecting;
    uint64_t retry_at_ns;
    struct rs_cmd *sent_head, *sent_tail; /* sent, waiting for their reply (FIFO) */
    struct rs_cmd *wait_head, *wait_tail; /* to send once connected */
    uint64_t nsent, nwait;
    /* reads: a blocking connection with RS_READ_TIMEOUT_MS timeouts */
    redisContext *sc;
    uint64_t sc_down_until_ns;              /* after a failure, reads fail fast for a moment */
    struct rs_cmd *retry_head, *retry_tail; /* lost with a connection: sent again first */
    int ac_registered;
    int reload; /* a script was missing (Redis restarted): reconnect to load them */
    int closing;
    char sha[RS_NSCRIPTS][41]; /* the scripts' digests, from SCRIPT LOAD */
    /* cluster */
    struct rs_batch *handles;   /* local handles (store_batch_open) */
    struct rs_rows *rows;       /* results waiting to be sent, per batch */
    struct rs_claimed *claimed; /* chunks this replica runs (heartbeats) */
    unsigned claim_want;        /* chunks the server would take now */
    int claim_inflight;
    int claim_empty; /* the last claim found nothing: wait for a tick */
    store_chunk_fn *claim_fn;
    void *claim_arg;
    int poll_inflight, touch_inflight;
    uint64_t ticks;
    struct rs_page *pages; /* reads fetched ahead (redis_prefetch.c) */
    struct rs_page *used;  /* the page read last: its status and summary come next */
    struct rs_gen *gens;   /* per batch: progress reports seen, while pages are out */
    size_t ngens;
    struct rs_watch *watch; /* what the last poll saw of each unfinished batch */
    size_t nwatch;
    /* stats */
    struct store_stats stats;
    struct store_cluster_stats cstats;
};

/* redis_conn.c --------------------------------------------------------------------------- */

/* Parses rs->url into host/port/path/db. Returns 0 or -1 with a sentence in ERR. */
int rs_parse_url(struct rstore *rs, char *err, size_t errlen);

/* Connects the async connection (again); called by the timer after a failure. */
void rs_connect(struct rstore *rs);

/* A reply's handler. REPLY is NULL when the connection was lost before it came (then the
 * command is sent again if it was queued with RS_RETRY, else the handler sees NULL once). */
typedef void rs_reply_fn(struct rstore *rs, redisReply *reply, void *arg);

enum { RS_ONCE = 0, RS_RETRY = 1 };

/* Queues a command (argv copied) on the async connection; FN (may be NULL) gets its reply.
 * With RS_RETRY it is sent again after a reconnect until it gets a reply (scripts that are
 * idempotent: the result, end, ack). Returns 0 or STORE_E_NOMEM. */
int rs_send(struct rstore *rs, int flags, rs_reply_fn *fn, void *arg, int argc, const char **argv,
            const size_t *lens);

/* The same for script SCRIPT (RS_S_*): ARGV is its arguments (no keys: the scripts name
 * their keys from the batch id). */
int rs_eval(struct rstore *rs, int flags, int script, rs_reply_fn *fn, void *arg, int argc,
            const char **argv, const size_t *lens);

/* A blocking command on the read connection (timeouts RS_READ_TIMEOUT_MS). Returns the reply
 * (freeReplyObject) or NULL when Redis cannot be reached (then STORE_E_IO). */
redisReply *rs_sync(struct rstore *rs, int argc, const char **argv, const size_t *lens);

/* The same with a printf-like format (hiredis' redisCommand). */
redisReply *rs_syncf(struct rstore *rs, const char *fmt, ...);

/* Script SCRIPT on the read connection (EVAL with its text), blocking. */
redisReply *rs_sync_script(struct rstore *rs, int script, int argc, const char **argv,
                           const size_t *lens);

/* Sets up the epoll set and the timer and starts connecting. 0 or STORE_E_IO with ERR. */
int rs_conn_open(struct rstore *rs, char *err, size_t errlen);

/* Runs what is ready on the async connection; returns 1 when the timer ticked (store_dispatch). */
int rs_conn_dispatch(struct rstore *rs);

/* Blocks until every queued command has its reply, or 2 s: 0 or STORE_E_IO. */
int rs_conn_sync(struct rstore *rs);

/* Closes both connections; queued commands' handlers see NULL. */
void rs_conn_close(struct rstore *rs);

/* The hex of OWNER into OUT ("-" for none). */
void rs_owner_hex(const uint8_t *owner, size_t owner_len, char out[RS_OWNER_HEX]);

/* The key batchd:{ID}:SUFFIX into OUT. */
void rs_key(char *out, size_t size, const char *id, const char *suffix);

/* Wall clock (the config's, or CLOCK_REALTIME) in ms. */
int64_t rs_now_ms(const struct rstore *rs);

/* The handle of a batch run on this replica only (store_batch_open). */
struct rs_batch {
    struct store_batch base;
    struct rstore *rs;
    struct rs_batch *next;
    char id[STORE_ID_SIZE];
    uint32_t njobs;
    uint8_t *bits; /* LSB-first: bit I = job I has a result (queued or recorded) */
    uint64_t committed_seq;
    int ended;
};

/* RS if ST is the Redis store, else NULL (redis_conn.c). */
struct rstore *rs_of(struct store *st);

/* redis_rows.c -------------------------------------------------------------------------- */

/* This replica's handle of batch ID, or NULL. */
struct rs_batch *rs_handle_find(struct rstore *rs, const char *id);

/* Sends every batch's queued results now (store_sync, close). */
void rs_rows_flush_all(struct rstore *rs);

/* Frees every group (at close). */
void rs_rows_free_all(struct rstore *rs);

/* Queues the result of job INDEX of batch ID (sent in groups). 0 or STORE_E_NOMEM. */
int rs_rows_add(struct rstore *rs, const char *id, uint32_t index, int ok, const void *line,
                size_t len);

/* Sends batch ID's queued results now (before a command that must come after them). */
void rs_rows_flush_id(struct rstore *rs, const char *id);

/* Queues the end of batch ID (after its results), unless it is recorded already. */
int rs_end_id(struct rstore *rs, const char *id, int state, const void *summary, size_t len);

/* redis_cluster.c ------------------------------------------------------------------------- */

/* The timer's turn: claims, heartbeats of the chunks run here, the poll of progress and
 * cancels, the stored bytes. */
void rs_cluster_tick(struct rstore *rs);

/* Frees the cluster state (at close). */
void rs_cluster_free(struct rstore *rs);

/* redis_read.c (sync, on the read connection) --------------------------------------------- */

int rs_batch_get(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                 struct store_info *out);
int rs_batch_list(struct store *st, const uint8_t *owner, size_t owner_len, int state,
                  const char *before, struct store_info *out, size_t max, size_t *n);
int rs_results_read(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                    uint64_t after, size_t max, store_row_fn *row, void *arg, uint64_t *last);
int rs_results_by_index(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                        uint32_t from, size_t max, store_row_fn *row, void *arg, uint32_t *next);
int rs_batch_blob(struct store *st, const char *id, int part, uint32_t index, void **data,
                  size_t *len);
int rs_unfinished(struct store *st, void (*fn)(void *arg, const char *id), void *arg);
int rs_batch_counts(struct store *st, uint64_t out[STORE_NSTATES]);

/* 1 when META (a HGETALL reply) belongs to OWNER (STORE_ANY_OWNER: anyone). */
int rs_owner_ok(const redisReply *meta, const uint8_t *owner, size_t owner_len);

/* The replica names of RAN (a sorted array reply) into OUT->replicas, comma-separated. */
void rs_replicas_into(const redisReply *ran, struct store_info *out);

/* Parses a result value "<seq> <ok> <line>" (LINE borrowed from V). 0 or -1. */
int rs_parse_row(const redisReply *v, uint64_t *seq, int *ok, const char **line, size_t *len);

/* redis_prefetch.c (reads fetched ahead without blocking, answered from memory) -------- */

/* The cached page for store_results_read (BY_INDEX 0) or store_results_by_index (1) of ID
 * from FROM, if one is there: ROW gets its rows (as those calls would), *LAST / *NEXT set,
 * and 1 is returned with *RC; 0 when there is none (read it the blocking way). */
int rs_cache_rows(struct rstore *rs, const uint8_t *owner, size_t owner_len, const char *id,
                  int by_index, uint64_t from, size_t max, store_row_fn *row, void *arg,
                  uint64_t *last, uint32_t *next, int *rc);

/* The status of ID as the last prefetch saw it, if fresh: 1 and *OUT / *RC, else 0. */
int rs_cache_info(struct rstore *rs, const uint8_t *owner, size_t owner_len, const char *id,
                  struct store_info *out, int *rc);

/* Its summary line (new: free()), if a fresh prefetch saw the batch ended: 1, else 0. */
int rs_cache_summary(struct rstore *rs, const char *id, void **data, size_t *len);

/* Reports progress of batch ID (on_progress), and marks the pages fetched before as stale
 * if they said "nothing new". Every progress report of the Redis store goes through it. */
void rs_progress(struct rstore *rs, const char *id, uint64_t seq);

/* Drops stale cache entries (the timer). */
void rs_cache_tick(struct rstore *rs);

/* Frees the cache (at close). */
void rs_cache_free(struct rstore *rs);

/* Fills *OUT from a HGETALL reply of a batch's meta (and its id); 0 or STORE_E_NOT_FOUND.
 * Expired (expires <= NOW_MS and ended, or state expired) gives STORE_E_EXPIRED. */
int rs_info_from_meta(const redisReply *meta, const char *id, int64_t now_ms,
                      struct store_info *out);

#endif
