/* Results on their way to Redis, grouped per batch: a group is sent when the previous one of
 * that batch is answered, so a lone result goes at once and a flood goes in groups of up to
 * RS_GROUP (one record script each: the exactly-once gate). The end of a batch is queued
 * behind its results on the same connection. */
#include "redis_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RS_GROUP 512  /* results in one record script at most */
#define RS_INFLIGHT 2 /* record scripts of one batch in flight at most */

struct rs_rows {
    struct rs_rows *next;
    struct rstore *rs;
    char id[STORE_ID_SIZE];
    size_t n, cap;
    uint32_t *idx;
    uint8_t *ok;
    char **line;
    size_t *len;
    unsigned inflight; /* record scripts sent, not yet answered */
};

/* ---------------------------------------------------------------- result groups */

static struct rs_rows *rows_find(struct rstore *rs, const char *id, int make)
{
    for (struct rs_rows *r = rs->rows; r != NULL; r = r->next) {
        if (strcmp(r->id, id) == 0) {
            return r;
        }
    }
    if (!make) {
        return NULL;
    }
    struct rs_rows *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    r->rs = rs;
    snprintf(r->id, sizeof r->id, "%s", id);
    r->next = rs->rows;
    rs->rows = r;
    return r;
}

static void rows_clear(struct rs_rows *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->line[i]);
    }
    r->n = 0;
}

static void rows_drop(struct rstore *rs, struct rs_rows *r)
{
    struct rs_rows **pp = &rs->rows;
    while (*pp != NULL && *pp != r) {
        pp = &(*pp)->next;
    }
    if (*pp == r) {
        *pp = r->next;
    }
    rows_clear(r);
    free(r->idx);
    free(r->ok);
    free(r->line);
    free(r->len);
    free(r);
}

struct rs_batch *rs_handle_find(struct rstore *rs, const char *id)
{
    for (struct rs_batch *b = rs->handles; b != NULL; b = b->next) {
        if (strcmp(b->id, id) == 0) {
            return b;
        }
    }
    return NULL;
}

struct rows_sent {
    struct rs_rows *rows;
    size_t n;
};

static void rows_flush(struct rstore *rs, struct rs_rows *r);

static void on_recorded(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rows_sent *sent = arg;
    struct rs_rows *r = sent->rows;
    r->inflight--;
    rs->stats.pending_rows -= sent->n;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 4) {
        uint64_t rec = (uint64_t)reply->element[0]->integer;
        uint64_t dup = (uint64_t)reply->element[1]->integer;
        uint64_t seq = (uint64_t)reply->element[2]->integer;
        rs->stats.rows += rec;
        rs->stats.dup_ignored += dup;
        rs->cstats.recorded += rec;
        rs->cstats.duplicates += dup;
        struct rs_batch *b = rs_handle_find(rs, r->id);
        if (b != NULL && seq > b->committed_seq) {
            b->committed_seq = seq;
        }
        if (rec > 0) {
            rs_progress(rs, r->id, seq);
        }
    } else if (reply != NULL && rs->cfg.on_error != NULL) {
        rs->cfg.on_error(rs->cfg.arg, STORE_E_IO,
                         reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply to a record");
    }
    free(sent);
    if (r->n > 0) {
        rows_flush(rs, r);
    } else if (r->inflight == 0) {
        rows_drop(rs, r);
    }
}

/* Sends R's waiting results as one record script (RS_RETRY: exactly once makes it safe). */
static void rows_flush(struct rstore *rs, struct rs_rows *r)
{
    if (r->n == 0) {
        return;
    }
    size_t n = r->n > RS_GROUP ? RS_GROUP : r->n;
    int argc = 2 + 3 * (int)n;
    const char **argv = malloc((size_t)argc * sizeof *argv);
    size_t *lens = malloc((size_t)argc * sizeof *lens);
    char *nums = malloc(n * 16 + 32);
    struct rows_sent *sent = malloc(sizeof *sent);
    if (argv == NULL || lens == NULL || nums == NULL || sent == NULL) {
        free(argv);
        free(lens);
        free(nums);
        free(sent);
        return; /* tried again with the next result or finish */
    }
    char *np = nums;
    argv[0] = r->id;
    lens[0] = strlen(r->id);
    argv[1] = np;
    lens[1] = (size_t)snprintf(np, 24, "%lld", (long long)rs_now_ms(rs));
    np += 24;
    for (size_t i = 0; i < n; i++) {
        argv[2 + 3 * i] = np;
        lens[2 + 3 * i] = (size_t)snprintf(np, 16, "%u", r->idx[i]);
        np += 16;
        argv[3 + 3 * i] = r->ok[i] ? "1" : "0";
        lens[3 + 3 * i] = 1;
        argv[4 + 3 * i] = r->line[i];
        lens[4 + 3 * i] = r->len[i];
    }
    sent->rows = r;
    sent->n = n;
    if (rs_eval(rs, RS_RETRY, RS_S_RECORD, on_recorded, sent, argc, argv, lens) != 0) {
        free(sent);
    } else {
        r->inflight++;
        for (size_t i = 0; i < n; i++) {
            free(r->line[i]);
        }
        memmove(r->idx, r->idx + n, (r->n - n) * sizeof *r->idx);
        memmove(r->ok, r->ok + n, (r->n - n) * sizeof *r->ok);
        memmove(r->line, r->line + n, (r->n - n) * sizeof *r->line);
        memmove(r->len, r->len + n, (r->n - n) * sizeof *r->len);
        r->n -= n;
    }
    free(argv);
    free(lens);
    free(nums);
}

int rs_rows_add(struct rstore *rs, const char *id, uint32_t index, int ok, const void *line,
                size_t len)
{
    struct rs_rows *r = rows_find(rs, id, 1);
    if (r == NULL) {
        return STORE_E_NOMEM;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        uint32_t *idx = realloc(r->idx, cap * sizeof *idx);
        if (idx != NULL) {
            r->idx = idx;
        }
        uint8_t *okv = realloc(r->ok, cap * sizeof *okv);
        if (okv != NULL) {
            r->ok = okv;
        }
        char **lv = realloc(r->line, cap * sizeof *lv);
        if (lv != NULL) {
            r->line = lv;
        }
        size_t *lens = realloc(r->len, cap * sizeof *lens);
        if (lens != NULL) {
            r->len = lens;
        }
        if (idx == NULL || okv == NULL || lv == NULL || lens == NULL) {
            return STORE_E_NOMEM;
        }
        r->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        return STORE_E_NOMEM;
    }
    memcpy(copy, line, len);
    copy[len] = '\0';
    r->idx[r->n] = index;
    r->ok[r->n] = ok != 0;
    r->line[r->n] = copy;
    r->len[r->n] = len;
    r->n++;
    rs->stats.pending_rows++;
    /* At most RS_INFLIGHT groups of a batch in flight: a deeper pipeline of scripts would
     * only queue in Redis, where every other client's command (the reads) waits behind it. */
    if (r->inflight == 0 || (r->n >= RS_GROUP && r->inflight < RS_INFLIGHT)) {
        rows_flush(rs, r);
    }
    return 0;
}

void rs_rows_flush_id(struct rstore *rs, const char *id)
{
    struct rs_rows *r = rows_find(rs, id, 0);
    while (r != NULL && r->n > 0) {
        size_t before = r->n;
        rows_flush(rs, r);
        if (r->n == before) {
            break; /* out of memory: left for the next call */
        }
    }
}

struct rs_end_wait {
    char id[STORE_ID_SIZE];
};

static void on_ended(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rs_end_wait *w = arg;
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        rs_progress(rs, w->id, 0); /* its end is recorded */
    }
    free(w);
}

int rs_end_id(struct rstore *rs, const char *id, int state, const void *summary, size_t len)
{
    if (state != STORE_DONE && state != STORE_CANCELLED) {
        return STORE_E_INVALID;
    }
    rs_rows_flush_id(rs, id); /* the results first, on the same connection */
    struct rs_end_wait *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return STORE_E_NOMEM;
    }
    snprintf(w->id, sizeof w->id, "%s", id);
    char st[4], now[24], ttl[24];
    snprintf(st, sizeof st, "%d", state);
    snprintf(now, sizeof now, "%lld", (long long)rs_now_ms(rs));
    snprintf(ttl, sizeof ttl, "%lld", (long long)rs->cfg.result_ttl_ms);
    const char *argv[] = {id, st, summary, now, ttl};
    size_t lens[] = {strlen(id), strlen(st), len, strlen(now), strlen(ttl)};
    int rc = rs_eval(rs, RS_RETRY, RS_S_END, on_ended, w, 5, argv, lens);
    if (rc != 0) {
        free(w);
    }
    return rc;
}

void rs_rows_flush_all(struct rstore *rs)
{
    for (struct rs_rows *r = rs->rows; r != NULL; r = r->next) {
        rs_rows_flush_id(rs, r->id);
    }
}

void rs_rows_free_all(struct rstore *rs)
{
    while (rs->rows != NULL) {
        rows_drop(rs, rs->rows);
    }
}
