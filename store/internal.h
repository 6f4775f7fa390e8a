/* What a store backend implements (store_sqlite.c; Redis later): the ops table behind
 * store.h's calls, and the two base structs a backend's own structs start with. Private to
 * store/. */
#ifndef BATCHD_STORE_INTERNAL_H
#define BATCHD_STORE_INTERNAL_H

#include "store.h"

struct store_ops {
    const char *name;
    void (*close)(struct store *st);
    int (*fd)(const struct store *st);
    void (*dispatch)(struct store *st);
    int (*sync)(struct store *st);
    int (*batch_create)(struct store *st, const struct store_new_batch *nb, store_done_fn *done,
                        void *arg);
    int (*batch_open)(struct store *st, const char *id, struct store_batch **out);
    void (*batch_release)(struct store_batch *sb);
    const char *(*batch_id)(const struct store_batch *sb);
    int (*result_add)(struct store_batch *sb, uint32_t index, int ok, const void *line, size_t len);
    int64_t (*next_missing)(const struct store_batch *sb, uint32_t from);
    uint64_t (*committed_seq)(const struct store_batch *sb);
    int (*batch_start)(struct store_batch *sb);
    int (*batch_cancel)(struct store_batch *sb);
    int (*batch_end)(struct store_batch *sb, int state, const void *summary, size_t len);
    int (*batch_get)(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                     struct store_info *out);
    int (*batch_list)(struct store *st, const uint8_t *owner, size_t owner_len, int state,
                      const char *before, struct store_info *out, size_t max, size_t *n);
    int (*results_read)(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                        uint64_t after, size_t max, store_row_fn *row, void *arg, uint64_t *last);
    int (*results_by_index)(struct store *st, const uint8_t *owner, size_t owner_len,
                            const char *id, uint32_t from, size_t max, store_row_fn *row, void *arg,
                            uint32_t *next);
    int (*batch_blob)(struct store *st, const char *id, int part, uint32_t index, void **data,
                      size_t *len);
    /* NULL: store_batch_blob_async calls batch_blob and answers at once. */
    int (*batch_blob_async)(struct store *st, const char *id, int part, uint32_t index,
                            store_blob_fn *fn, void *arg);
    int (*unfinished)(struct store *st, void (*fn)(void *arg, const char *id), void *arg);
    int (*batch_forget)(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                        store_done_fn *done, void *arg);
    int (*expire)(struct store *st, int64_t now_ms);
    void (*stats)(struct store *st, struct store_stats *out);
    int (*batch_counts)(struct store *st, uint64_t out[STORE_NSTATES]);
};

/* Every backend's store and batch handle begin with these. */
struct store {
    const struct store_ops *ops;
};
struct store_batch {
    struct store *st;
};

/* Counts one write transaction (a commit, a Redis round trip) of NS nanoseconds in S: its
 * count, total, maximum and histogram bucket (store.c). */
void store_stats_add_flush(struct store_stats *s, uint64_t ns);

/* The SQLite backend (store_sqlite.c). Returns as store_open. */
int store_sqlite_open(const struct store_config *cfg, struct store **out, char *err, size_t errlen);

/* The Redis backend (store_redis.c), with cfg->redis_url. Returns as store_open; an
 * unreachable Redis is not an error (the store is then unavailable until it answers). */
int store_redis_open(const struct store_config *cfg, struct store **out, char *err, size_t errlen);

#endif
