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

struct rs_cmd; /* a queued command (redis_conn.c) */
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
    unsigned ac_mask;   /* EPOLLIN / EPOLLOUT hiredis wants */
    int connected;      /* AUTH/SELECT/SCRIPT LOAD done */
    int connecting;
    uint64_t retry_at_ns;
    struct rs_cmd *sent_head, *sent_tail; /* sent, waiting for their reply (FIFO) */
    struct rs_cmd *wait_head, *wait_tail; /* to send once connected */
    uint64_t nsent, nwait;
    /* reads: a blocking connection with RS_READ_TIMEOUT_MS timeouts */
    redisContext *sc;
    uint64_t sc_down_until_ns; /* after a failure, reads fail fast for a moment */
    /* script digests */
    char sha_create[41], sha_record[41], sha_finish[41], sha_end[41], sha_cancel[41],
        sha_start[41], sha_forget[41], sha_expire[41], sha_claim[41], sha_touch[41],
        sha_poll[41];
    /* cluster */
    struct rs_batch *handles;  /* local handles (store_batch_open) */
    struct rs_claimed *claimed; /* chunks this replica runs */
    unsigned claims_pending;
    store_chunk_fn *claim_fn;
    void *claim_arg;
    uint64_t next_poll_ns, next_touch_ns, next_claim_ns;
    struct rs_watch *watched; /* batches whose progress is reported (unfinished ones) */
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

/* A blocking command on the read connection (timeouts RS_READ_TIMEOUT_MS). Returns the reply
 * (freeReplyObject) or NULL when Redis cannot be reached (then STORE_E_IO). */
redisReply *rs_sync(struct rstore *rs, int argc, const char **argv, const size_t *lens);

/* The same with a printf-like format (hiredis' redisCommand). */
redisReply *rs_syncf(struct rstore *rs, const char *fmt, ...);

/* Runs what is ready on the async connection and the timer (store_dispatch). */
void rs_conn_dispatch(struct rstore *rs);

/* Closes both connections; queued commands' handlers see NULL. */
void rs_conn_close(struct rstore *rs);

/* The hex of OWNER into OUT ("-" for none). */
void rs_owner_hex(const uint8_t *owner, size_t owner_len, char out[RS_OWNER_HEX]);

/* The key batchd:{ID}:SUFFIX into OUT. */
void rs_key(char *out, size_t size, const char *id, const char *suffix);

/* Wall clock (the config's, or CLOCK_REALTIME) in ms. */
int64_t rs_now_ms(const struct rstore *rs);

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

/* Fills *OUT from a HGETALL reply of a batch's meta (and its id); 0 or STORE_E_NOT_FOUND.
 * Expired (expires <= NOW_MS and ended, or state expired) gives STORE_E_EXPIRED. */
int rs_info_from_meta(const redisReply *meta, const char *id, int64_t now_ms,
                      struct store_info *out);

#endif
