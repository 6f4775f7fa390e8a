/* store.h's calls, dispatched to the backend's ops table, and the code and state names.
 * Which backend a config opens is decided here (today always SQLite). */
#include "store.h"

#include "internal.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct store_err_row {
    const char *name;
    const char *message;
};

/* clang-format off */
static const struct store_err_row store_errs[] = {
#define XX(e, n, m) [STORE_E_##e##_] = {n, m},
    STORE_ERRNO_MAP(XX)
#undef XX
};

static const char *const store_states[] = {
    [STORE_QUEUED] = "queued",
    [STORE_RUNNING] = "running",
    [STORE_DONE] = "done",
    [STORE_CANCELLED] = "cancelled",
    [STORE_EXPIRED] = "expired",
};
/* clang-format on */

static const struct store_err_row *err_row(int rc)
{
    static const struct store_err_row ok = {"ok", "ok"};
    static const struct store_err_row replayed = {"replayed", "an existing batch answered"};
    size_t i = rc < 0 ? (size_t)-rc : 0;
    if (rc == STORE_OK) {
        return &ok;
    }
    if (rc == STORE_REPLAYED) {
        return &replayed;
    }
    if (i < sizeof store_errs / sizeof store_errs[0] && store_errs[i].name != NULL) {
        return &store_errs[i];
    }
    return &store_errs[STORE_E_IO_];
}

const char *store_err_name(int rc)
{
    return err_row(rc)->name;
}

const char *store_err_message(int rc)
{
    return err_row(rc)->message;
}

const char *store_state_name(int state)
{
    if (state < 0 || (size_t)state >= sizeof store_states / sizeof store_states[0]) {
        return "unknown";
    }
    return store_states[state];
}

int store_open(const struct store_config *cfg, struct store **out, char *err, size_t errlen)
{
    if (cfg != NULL && cfg->redis_url != NULL && cfg->redis_url[0] != '\0') {
        return store_redis_open(cfg, out, err, errlen);
    }
    return store_sqlite_open(cfg, out, err, errlen);
}

int store_is_cluster(const struct store *st)
{
    return st != NULL && strcmp(st->ops->name, "redis") == 0;
}

void store_close(struct store *st)
{
    if (st != NULL) {
        st->ops->close(st);
    }
}

int store_fd(const struct store *st)
{
    return st->ops->fd(st);
}

void store_dispatch(struct store *st)
{
    st->ops->dispatch(st);
}

int store_sync(struct store *st)
{
    return st->ops->sync(st);
}

int store_batch_create(struct store *st, const struct store_new_batch *nb, store_done_fn *done,
                       void *arg)
{
    return st->ops->batch_create(st, nb, done, arg);
}

int store_batch_open(struct store *st, const char *id, struct store_batch **out)
{
    return st->ops->batch_open(st, id, out);
}

void store_batch_release(struct store_batch *sb)
{
    if (sb != NULL) {
        sb->st->ops->batch_release(sb);
    }
}

const char *store_batch_id(const struct store_batch *sb)
{
    return sb->st->ops->batch_id(sb);
}

int store_result_add(struct store_batch *sb, uint32_t index, int ok, const void *line, size_t len)
{
    return sb->st->ops->result_add(sb, index, ok, line, len);
}

int64_t store_batch_next_missing(const struct store_batch *sb, uint32_t from)
{
    return sb->st->ops->next_missing(sb, from);
}

uint64_t store_batch_committed_seq(const struct store_batch *sb)
{
    return sb->st->ops->committed_seq(sb);
}

int store_batch_start(struct store_batch *sb)
{
    return sb->st->ops->batch_start(sb);
}

int store_batch_cancel(struct store_batch *sb)
{
    return sb->st->ops->batch_cancel(sb);
}

int store_batch_end(struct store_batch *sb, int state, const void *summary, size_t len)
{
    return sb->st->ops->batch_end(sb, state, summary, len);
}

int store_batch_get(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                    struct store_info *out)
{
    return st->ops->batch_get(st, owner, owner_len, id, out);
}

int store_batch_list(struct store *st, const uint8_t *owner, size_t owner_len, int state,
                     const char *before, struct store_info *out, size_t max, size_t *n)
{
    return st->ops->batch_list(st, owner, owner_len, state, before, out, max, n);
}

int store_results_read(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                       uint64_t after, size_t max, store_row_fn *row, void *arg, uint64_t *last)
{
    return st->ops->results_read(st, owner, owner_len, id, after, max, row, arg, last);
}

int store_results_by_index(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                           uint32_t from, size_t max, store_row_fn *row, void *arg, uint32_t *next)
{
    return st->ops->results_by_index(st, owner, owner_len, id, from, max, row, arg, next);
}

int store_batch_blob(struct store *st, const char *id, int part, uint32_t index, void **data,
                     size_t *len)
{
    return st->ops->batch_blob(st, id, part, index, data, len);
}

int store_batch_blob_async(struct store *st, const char *id, int part, uint32_t index,
                           store_blob_fn *fn, void *arg)
{
    if (st->ops->batch_blob_async != NULL) {
        return st->ops->batch_blob_async(st, id, part, index, fn, arg);
    }
    void *data = NULL;
    size_t len = 0;
    int rc = st->ops->batch_blob(st, id, part, index, &data, &len);
    fn(arg, rc, data, len);
    free(data);
    return 0;
}

int store_unfinished(struct store *st, void (*fn)(void *arg, const char *id), void *arg)
{
    return st->ops->unfinished(st, fn, arg);
}

int store_batch_forget(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                       store_done_fn *done, void *arg)
{
    return st->ops->batch_forget(st, owner, owner_len, id, done, arg);
}

int store_expire(struct store *st, int64_t now_ms)
{
    return st->ops->expire(st, now_ms);
}

int store_batch_counts(struct store *st, uint64_t out[STORE_NSTATES])
{
    return st->ops->batch_counts(st, out);
}

void store_stats_get(struct store *st, struct store_stats *out)
{
    st->ops->stats(st, out);
}

double store_stats_quantile_ms(const struct store_stats *s, double p)
{
    uint64_t total = 0;
    size_t n = sizeof s->flush_hist / sizeof s->flush_hist[0];
    for (size_t k = 0; k < n; k++) {
        total += s->flush_hist[k];
    }
    if (total == 0) {
        return 0.0;
    }
    uint64_t want = (uint64_t)((double)total * p + 0.999999);
    uint64_t seen = 0;
    for (size_t k = 0; k < n; k++) {
        seen += s->flush_hist[k];
        if (seen >= want) {
            /* The upper edge of bucket k: under 2^(k/4) microseconds. */
            return exp2((double)k / 4.0) / 1000.0;
        }
    }
    return s->flush_max_ms;
}
