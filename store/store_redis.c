/* The cluster store (SPEC §9): Redis, shared by every replica, behind store.h.
 *
 * Durability is Redis' own: with appendonly yes and appendfsync always (docker/compose.yaml)
 * a write that Redis answered survives a kill -9 or power cut of Redis, as a commit of the
 * SQLite store does. A creation is announced (202) only once its script's reply came.
 *
 * Never stalling the loop. Writes go over hiredis' async API (redis_conn.c): results are
 * grouped per batch (a group is sent when the previous one of that batch is answered, so a
 * lone result goes at once and a flood goes in groups of up to RS_GROUP), every write that
 * must be atomic is one Lua script (redis_scripts.c). Reads block on a second connection
 * with a 500 ms timeout (redis_read.c): one round trip on a healthy Redis, and they fail fast
 * for a second after a failure. Not done: reads behind callbacks (see the README).
 *
 * Exactly once. A job's result is recorded by one script that first sets the job's bit; a
 * second result of that job (a chunk run twice: its replica was presumed dead) finds the bit
 * set and records nothing. Sends that were lost with a connection are sent again after the
 * reconnect, which the same gate makes harmless.
 *
 * This file: the ops table, open and close, handles of batches run on this replica only (an
 * upload past --cluster-max-upload), creation, forget, expiry, and result groups. The chunk
 * queue is redis_cluster.c's. */
#include "redis_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct rstore *rs_from(struct store *st)
{
    return (struct rstore *)st;
}

/* ---------------------------------------------------------------- creation */

struct rs_create {
    store_done_fn *done;
    void *arg;
    char id[STORE_ID_SIZE];
    uint32_t njobs;
    int queue;
};

static int handle_make(struct rstore *rs, const char *id, uint32_t njobs, const uint8_t *bits,
                       size_t bits_len, struct rs_batch **out)
{
    struct rs_batch *b = calloc(1, sizeof *b);
    uint8_t *map = calloc((size_t)njobs / 8 + 1, 1);
    if (b == NULL || map == NULL) {
        free(b);
        free(map);
        return STORE_E_NOMEM;
    }
    for (uint32_t i = 0; bits != NULL && i < njobs && i / 8 < bits_len; i++) {
        if (bits[i / 8] & (0x80u >> (i % 8))) { /* Redis' bit order: MSB first */
            map[i / 8] |= (uint8_t)(1u << (i % 8));
        }
    }
    b->base.st = &rs->base;
    b->rs = rs;
    snprintf(b->id, sizeof b->id, "%s", id);
    b->njobs = njobs;
    b->bits = map;
    b->next = rs->handles;
    rs->handles = b;
    *out = b;
    return 0;
}

static void on_created(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rs_create *c = arg;
    int rc = STORE_E_IO;
    const char *id = "";
    struct rs_batch *b = NULL;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        long long code = reply->element[0]->integer;
        id = reply->element[1]->type == REDIS_REPLY_STRING ? reply->element[1]->str : "";
        rc = code == 0    ? STORE_OK
             : code == 1  ? STORE_REPLAYED
             : code == -1 ? STORE_E_KEY_REUSED
             : code == -2 ? STORE_E_FULL
                          : STORE_E_IO;
        if (rc == STORE_OK && !c->queue && handle_make(rs, c->id, c->njobs, NULL, 0, &b) != 0) {
            b = NULL; /* it stays unfinished in Redis: found by the next rescan or start */
        }
    } else if (reply != NULL && reply->type == REDIS_REPLY_ERROR && rs->cfg.on_error != NULL) {
        rs->cfg.on_error(rs->cfg.arg, STORE_E_IO, reply->str);
    }
    if (rc != STORE_OK && rc != STORE_REPLAYED) {
        id = "";
    }
    c->done(c->arg, rc, b != NULL ? &b->base : NULL, id);
    free(c);
}

static void hex32(const uint8_t in[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[64] = '\0';
}

static int rs_create(struct store *st, const struct store_new_batch *nb, store_done_fn *done,
                     void *arg)
{
    struct rstore *rs = rs_from(st);
    if (nb == NULL || done == NULL || nb->owner_len > STORE_OWNER_MAX ||
        (nb->idem_key != NULL && strlen(nb->idem_key) > STORE_KEY_MAX)) {
        return STORE_E_INVALID;
    }
    if (!rs->connected) {
        return STORE_E_IO; /* 503 store_unavailable now, not a request that hangs */
    }
    uint64_t upload = 0;
    for (size_t i = 0; i < nb->ninputs; i++) {
        upload += nb->inputs[i].len;
    }
    struct rs_create *c = calloc(1, sizeof *c);
    int argc = 14 + (int)nb->ninputs;
    const char **argv = calloc((size_t)argc, sizeof *argv);
    size_t *lens = calloc((size_t)argc, sizeof *lens);
    if (c == NULL || argv == NULL || lens == NULL) {
        free(c);
        free(argv);
        free(lens);
        return STORE_E_NOMEM;
    }
    c->done = done;
    c->arg = arg;
    c->njobs = nb->njobs;
    c->queue = upload <= rs->cfg.cluster_max_upload;
    store_id_make(rs_now_ms(rs), c->id);
    char owner[RS_OWNER_HEX], njobs[16], now[24], chunk[16], maxb[24], fp[65], nin[16];
    rs_owner_hex(nb->owner, nb->owner_len, owner);
    snprintf(njobs, sizeof njobs, "%u", nb->njobs);
    snprintf(now, sizeof now, "%lld", (long long)rs_now_ms(rs));
    uint32_t per = (nb->njobs + 63) / 64;
    snprintf(chunk, sizeof chunk, "%u", per < 1 ? 1 : per > 4096 ? 4096 : per);
    snprintf(maxb, sizeof maxb, "%llu", (unsigned long long)rs->cfg.max_bytes);
    snprintf(nin, sizeof nin, "%zu", nb->ninputs);
    if (nb->idem_key != NULL) {
        hex32(nb->fingerprint, fp);
    } else {
        fp[0] = '\0';
    }
    const char *vals[14] = {c->id,
                            owner,
                            nb->op != NULL ? nb->op : "",
                            nb->request_id != NULL ? nb->request_id : "",
                            njobs,
                            now,
                            chunk,
                            c->queue ? "1" : "0",
                            rs->replica,
                            nb->idem_key != NULL ? nb->idem_key : "",
                            fp,
                            maxb,
                            NULL,
                            nin};
    for (int i = 0; i < 14; i++) {
        argv[i] = vals[i];
        lens[i] = vals[i] != NULL ? strlen(vals[i]) : 0;
    }
    argv[12] = nb->spec != NULL ? nb->spec : "";
    lens[12] = nb->spec != NULL ? nb->spec_len : 0;
    for (size_t i = 0; i < nb->ninputs; i++) {
        argv[14 + i] = nb->inputs[i].data != NULL ? nb->inputs[i].data : "";
        lens[14 + i] = nb->inputs[i].len;
    }
    /* RS_RETRY: a create whose reply was lost may have run; sent again it says so (its id
     * exists) instead of a 503 for a batch that exists and runs. */
    int rc = rs_eval(rs, RS_RETRY, RS_S_CREATE, on_created, c, argc, argv, lens);
    free(argv);
    free(lens);
    if (rc != 0) {
        free(c);
    }
    return rc;
}

/* ---------------------------------------------------------------- handles (local batches) */

static int rs_open_batch(struct store *st, const char *id, struct store_batch **out)
{
    struct rstore *rs = rs_from(st);
    *out = NULL;
    if (!store_id_valid(id)) {
        return STORE_E_NOT_FOUND;
    }
    if (rs_handle_find(rs, id) != NULL) {
        return STORE_E_INVALID; /* one handle per batch */
    }
    char meta[RS_KEY_MAX], bits[RS_KEY_MAX];
    rs_key(meta, sizeof meta, id, "meta");
    rs_key(bits, sizeof bits, id, "bits");
    redisReply *m = rs_syncf(rs, "HMGET %s njobs state", meta);
    if (m == NULL || m->type != REDIS_REPLY_ARRAY || m->elements != 2) {
        freeReplyObject(m);
        return STORE_E_IO;
    }
    if (m->element[0]->type != REDIS_REPLY_STRING) {
        freeReplyObject(m);
        return STORE_E_NOT_FOUND;
    }
    uint32_t njobs = (uint32_t)strtoul(m->element[0]->str, NULL, 10);
    int state =
        m->element[1]->type == REDIS_REPLY_STRING ? (int)strtol(m->element[1]->str, NULL, 10) : 0;
    freeReplyObject(m);
    if (state >= STORE_DONE) {
        return STORE_E_ENDED;
    }
    redisReply *b = rs_syncf(rs, "GET %s", bits);
    if (b == NULL || (b->type != REDIS_REPLY_STRING && b->type != REDIS_REPLY_NIL)) {
        freeReplyObject(b);
        return STORE_E_IO;
    }
    struct rs_batch *h = NULL;
    int rc = handle_make(rs, id, njobs, b->type == REDIS_REPLY_STRING ? (uint8_t *)b->str : NULL,
                         b->type == REDIS_REPLY_STRING ? b->len : 0, &h);
    freeReplyObject(b);
    if (rc == 0) {
        *out = &h->base;
    }
    return rc;
}

static void rs_release(struct store_batch *sb)
{
    struct rs_batch *b = (struct rs_batch *)sb;
    struct rstore *rs = b->rs;
    rs_rows_flush_id(rs, b->id);
    struct rs_batch **pp = &rs->handles;
    while (*pp != NULL && *pp != b) {
        pp = &(*pp)->next;
    }
    if (*pp == b) {
        *pp = b->next;
    }
    free(b->bits);
    free(b);
}

static const char *rs_batch_id(const struct store_batch *sb)
{
    return ((const struct rs_batch *)sb)->id;
}

static int rs_result_add(struct store_batch *sb, uint32_t index, int ok, const void *line,
                         size_t len)
{
    struct rs_batch *b = (struct rs_batch *)sb;
    if (b->ended) {
        return STORE_E_ENDED;
    }
    if (index >= b->njobs) {
        return STORE_E_INVALID;
    }
    if (b->bits[index / 8] & (1u << (index % 8))) {
        return STORE_E_DUPLICATE;
    }
    int rc = rs_rows_add(b->rs, b->id, index, ok, line, len);
    if (rc == 0) {
        b->bits[index / 8] |= (uint8_t)(1u << (index % 8));
    }
    return rc;
}

static int64_t rs_next_missing(const struct store_batch *sb, uint32_t from)
{
    const struct rs_batch *b = (const struct rs_batch *)sb;
    for (uint32_t i = from; i < b->njobs; i++) {
        if (!(b->bits[i / 8] & (1u << (i % 8)))) {
            return i;
        }
    }
    return -1;
}

static uint64_t rs_committed_seq(const struct store_batch *sb)
{
    return ((const struct rs_batch *)sb)->committed_seq;
}

static int rs_simple(struct rstore *rs, int script, const char *id, const char *a2)
{
    const char *argv[] = {id, a2};
    return rs_eval(rs, RS_RETRY, script, NULL, NULL, 2, argv, NULL);
}

static int rs_start(struct store_batch *sb)
{
    struct rs_batch *b = (struct rs_batch *)sb;
    if (b->ended) {
        return STORE_E_ENDED;
    }
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)rs_now_ms(b->rs));
    return rs_simple(b->rs, RS_S_START, b->id, now);
}

static int rs_cancel(struct store_batch *sb)
{
    struct rs_batch *b = (struct rs_batch *)sb;
    if (b->ended) {
        return STORE_E_ENDED;
    }
    return rs_simple(b->rs, RS_S_CANCEL, b->id, "*");
}

static int rs_end(struct store_batch *sb, int state, const void *summary, size_t len)
{
    struct rs_batch *b = (struct rs_batch *)sb;
    if (b->ended) {
        return STORE_E_ENDED;
    }
    int rc = rs_end_id(b->rs, b->id, state, summary, len);
    if (rc == 0) {
        b->ended = 1;
    }
    return rc;
}

/* ---------------------------------------------------------------- reads without waiting */

struct rs_blob_wait {
    store_blob_fn *fn;
    void *arg;
    int part;
};

static void on_blob(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rs_blob_wait *w = arg;
    (void)rs;
    const redisReply *v = reply;
    if (reply != NULL && w->part == STORE_PART_SUMMARY) {
        /* HMGET state summary: none once expired (a tombstone) or before the end */
        int ok = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                 reply->element[0]->type == REDIS_REPLY_STRING &&
                 strcmp(reply->element[0]->str, "4") != 0;
        v = ok ? reply->element[1] : NULL;
        if (!ok) {
            w->fn(w->arg, reply->type == REDIS_REPLY_ARRAY ? STORE_E_NOT_FOUND : STORE_E_IO, NULL,
                  0);
            free(w);
            return;
        }
    }
    if (v == NULL) {
        w->fn(w->arg, STORE_E_IO, NULL, 0);
    } else if (v->type == REDIS_REPLY_STRING && (w->part != STORE_PART_SUMMARY || v->len > 0)) {
        w->fn(w->arg, 0, v->str, v->len);
    } else if (v->type == REDIS_REPLY_NIL || v->type == REDIS_REPLY_STRING) {
        w->fn(w->arg, STORE_E_NOT_FOUND, NULL, 0);
    } else {
        w->fn(w->arg, STORE_E_IO, NULL, 0);
    }
    free(w);
}

static int rs_blob_async(struct store *st, const char *id, int part, uint32_t index,
                         store_blob_fn *fn, void *arg)
{
    struct rstore *rs = rs_from(st);
    if (!rs->connected) {
        return STORE_E_IO;
    }
    if (!store_id_valid(id) || part < STORE_PART_SPEC || part > STORE_PART_INPUT) {
        fn(arg, !store_id_valid(id) ? STORE_E_NOT_FOUND : STORE_E_INVALID, NULL, 0);
        return 0;
    }
    struct rs_blob_wait *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return STORE_E_NOMEM;
    }
    w->fn = fn;
    w->arg = arg;
    w->part = part;
    char key[RS_KEY_MAX], field[16];
    static const char *const suffix[] = {"spec", "meta", "in"};
    rs_key(key, sizeof key, id, suffix[part]);
    snprintf(field, sizeof field, "%u", index);
    const char *get[] = {"GET", key};
    const char *hmget[] = {"HMGET", key, "state", "summary"};
    const char *hget[] = {"HGET", key, field};
    const char **argv = part == STORE_PART_SPEC ? get : part == STORE_PART_SUMMARY ? hmget : hget;
    int argc = part == STORE_PART_SPEC ? 2 : part == STORE_PART_SUMMARY ? 4 : 3;
    int rc = rs_send(rs, RS_ONCE, on_blob, w, argc, argv, NULL);
    if (rc != 0) {
        free(w);
    }
    return rc;
}

/* ---------------------------------------------------------------- forget, expiry */

struct rs_forget {
    store_done_fn *done;
    void *arg;
    char id[STORE_ID_SIZE];
};

static void on_forgotten(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rs_forget *f = arg;
    (void)rs;
    int rc = STORE_E_IO;
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        rc = reply->integer == 1    ? STORE_OK
             : reply->integer == -2 ? STORE_E_NOT_FINISHED
                                    : STORE_E_NOT_FOUND;
    }
    f->done(f->arg, rc, NULL, rc == STORE_OK ? f->id : "");
    free(f);
}

static int rs_forget(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                     store_done_fn *done, void *arg)
{
    struct rstore *rs = rs_from(st);
    if (!rs->connected) {
        return STORE_E_IO;
    }
    struct rs_forget *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return STORE_E_NOMEM;
    }
    f->done = done;
    f->arg = arg;
    snprintf(f->id, sizeof f->id, "%s", id);
    char hex[RS_OWNER_HEX];
    rs_owner_hex(owner, owner_len, hex);
    const char *argv[] = {id, owner_len == STORE_ANY_OWNER ? "*" : hex};
    int rc = rs_eval(rs, RS_ONCE, RS_S_FORGET, on_forgotten, f, 2, argv, NULL);
    if (rc != 0) {
        free(f);
    }
    return rc;
}

static int rs_expire(struct store *st, int64_t now_ms)
{
    struct rstore *rs = rs_from(st);
    if (!rs->connected) {
        return 0; /* next time */
    }
    char now[24], ttl[24];
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    snprintf(ttl, sizeof ttl, "%lld", (long long)rs->cfg.result_ttl_ms);
    const char *argv[] = {now, ttl};
    return rs_eval(rs, RS_ONCE, RS_S_EXPIRE, NULL, NULL, 2, argv, NULL);
}

/* ---------------------------------------------------------------- reads, from what was read ahead
 */

static int rs_results_read_ahead(struct store *st, const uint8_t *owner, size_t owner_len,
                                 const char *id, uint64_t after, size_t max, store_row_fn *row,
                                 void *arg, uint64_t *last)
{
    int rc = 0;
    *last = after;
    if (rs_cache_rows(rs_from(st), owner, owner_len, id, 0, after, max, row, arg, last, NULL,
                      &rc)) {
        return rc;
    }
    return rs_results_read(st, owner, owner_len, id, after, max, row, arg, last);
}

static int rs_results_by_index_ahead(struct store *st, const uint8_t *owner, size_t owner_len,
                                     const char *id, uint32_t from, size_t max, store_row_fn *row,
                                     void *arg, uint32_t *next)
{
    int rc = 0;
    *next = from;
    if (rs_cache_rows(rs_from(st), owner, owner_len, id, 1, from, max, row, arg, NULL, next, &rc)) {
        return rc;
    }
    return rs_results_by_index(st, owner, owner_len, id, from, max, row, arg, next);
}

static int rs_batch_get_ahead(struct store *st, const uint8_t *owner, size_t owner_len,
                              const char *id, struct store_info *out)
{
    int rc = 0;
    if (rs_cache_info(rs_from(st), owner, owner_len, id, out, &rc)) {
        return rc;
    }
    return rs_batch_get(st, owner, owner_len, id, out);
}

static int rs_batch_blob_ahead(struct store *st, const char *id, int part, uint32_t index,
                               void **data, size_t *len)
{
    if (part == STORE_PART_SUMMARY && rs_cache_summary(rs_from(st), id, data, len)) {
        return 0;
    }
    return rs_batch_blob(st, id, part, index, data, len);
}

/* ---------------------------------------------------------------- the rest of the table */

static int rs_fd(const struct store *st)
{
    return ((const struct rstore *)st)->epfd;
}

static void rs_dispatch(struct store *st)
{
    struct rstore *rs = rs_from(st);
    if (rs_conn_dispatch(rs)) {
        rs_cluster_tick(rs);
        rs_cache_tick(rs);
    }
}

static int rs_sync_all(struct store *st)
{
    struct rstore *rs = rs_from(st);
    rs_rows_flush_all(rs);
    return rs_conn_sync(rs);
}

static void rs_stats(struct store *st, struct store_stats *out)
{
    *out = rs_from(st)->stats;
}

static void rs_close(struct store *st)
{
    struct rstore *rs = rs_from(st);
    if (rs->connected) {
        rs_sync_all(st);
    }
    rs_conn_close(rs);
    rs_cache_free(rs); /* after the connection: every page's reply handler has run */
    while (rs->handles != NULL) {
        struct rs_batch *b = rs->handles;
        rs->handles = b->next;
        free(b->bits);
        free(b);
    }
    rs_rows_free_all(rs);
    rs_cluster_free(rs);
    free(rs);
}

static const struct store_ops rs_ops = {
    .name = "redis",
    .close = rs_close,
    .fd = rs_fd,
    .dispatch = rs_dispatch,
    .sync = rs_sync_all,
    .batch_create = rs_create,
    .batch_open = rs_open_batch,
    .batch_release = rs_release,
    .batch_id = rs_batch_id,
    .result_add = rs_result_add,
    .next_missing = rs_next_missing,
    .committed_seq = rs_committed_seq,
    .batch_start = rs_start,
    .batch_cancel = rs_cancel,
    .batch_end = rs_end,
    .batch_get = rs_batch_get_ahead,
    .batch_list = rs_batch_list,
    .results_read = rs_results_read_ahead,
    .results_by_index = rs_results_by_index_ahead,
    .batch_blob = rs_batch_blob_ahead,
    .batch_blob_async = rs_blob_async,
    .unfinished = rs_unfinished,
    .batch_forget = rs_forget,
    .expire = rs_expire,
    .stats = rs_stats,
    .batch_counts = rs_batch_counts,
};

int store_redis_open(const struct store_config *cfg, struct store **out, char *err, size_t errlen)
{
    *out = NULL;
    struct rstore *rs = calloc(1, sizeof *rs);
    if (rs == NULL) {
        snprintf(err, errlen, "out of memory");
        return STORE_E_NOMEM;
    }
    rs->base.ops = &rs_ops;
    rs->cfg = *cfg;
    rs->epfd = rs->timerfd = -1;
    snprintf(rs->url, sizeof rs->url, "%s", cfg->redis_url);
    snprintf(rs->replica, sizeof rs->replica, "%s",
             cfg->replica != NULL && cfg->replica[0] != '\0' ? cfg->replica : "batchd");
    rs->cfg.redis_url = rs->url;
    rs->cfg.replica = rs->replica;
    rs->cfg.state_dir = NULL;
    if (rs->cfg.result_ttl_ms <= 0) {
        rs->cfg.result_ttl_ms = 24ll * 3600 * 1000;
    }
    if (rs->cfg.claim_timeout_ms == 0) {
        rs->cfg.claim_timeout_ms = 30000;
    }
    /* A consumer per process: a restarted replica's old chunks are claimed like any dead
     * replica's, after the claim timeout, whoever claims them. */
    char boot[STORE_ID_SIZE];
    store_id_make(rs_now_ms(rs), boot);
    snprintf(rs->consumer, sizeof rs->consumer, "%s.%s", rs->replica, boot + 12);
    int rc = rs_parse_url(rs, err, errlen);
    if (rc == 0) {
        rc = rs_conn_open(rs, err, errlen);
    } else {
        rc = STORE_E_INVALID;
    }
    if (rc != 0) {
        rs_conn_close(rs);
        free(rs);
        return rc;
    }
    *out = &rs->base;
    return 0;
}
