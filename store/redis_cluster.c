/* The cluster queue (SPEC §9): chunks of stored batches in one Redis stream per batch with one
 * consumer group, claimed by the replicas with free workers. A claim takes one chunk per
 * batch per turn over the active batches (fair over the whole cluster), first one whose
 * replica stopped touching it for --claim-timeout (XPENDING IDLE + XCLAIM), else a new one
 * (XREADGROUP >). A replica touches its chunks every claim-timeout/4 (at most 250 ms apart),
 * which also tells it of cancels; a poll every 100 ms reports every unfinished batch's
 * progress (followers on any replica) and cancels. */
#include "redis_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RS_POLL_TICKS 2 /* 100 ms */

struct rs_claimed {
    struct rs_claimed *next;
    char id[STORE_ID_SIZE];
    char entry[48];
};

struct rs_watch {
    char id[STORE_ID_SIZE];
    uint64_t seq;
    int state;
    int cancel;
    int seen;
};

/* ---------------------------------------------------------------- claims */

static void claim_send(struct rstore *rs);

static void chunk_from_reply(const redisReply *e, struct store_chunk *c, uint8_t **bits)
{
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", e->element[0]->str);
    snprintf(c->entry, sizeof c->entry, "%s", e->element[1]->str);
    c->from = (uint32_t)e->element[2]->integer;
    c->to = (uint32_t)e->element[3]->integer;
    c->reclaimed = e->element[4]->integer != 0;
    c->cancel = e->element[5]->integer != 0;
    c->njobs = (uint32_t)e->element[6]->integer;
    c->created_ms = (int64_t)e->element[8]->integer;
    const redisReply *b = e->element[7];
    uint32_t n = c->to > c->from ? c->to - c->from : 0;
    *bits = calloc((size_t)n / 8 + 1, 1);
    if (*bits == NULL) {
        return;
    }
    /* Redis' bits are MSB first from byte floor(from/8); ours LSB first from FROM. */
    for (uint32_t k = 0; k < n && b->type == REDIS_REPLY_STRING; k++) {
        uint32_t i = c->from + k;
        size_t byte = i / 8 - c->from / 8;
        if (byte < b->len && ((uint8_t)b->str[byte] & (0x80u >> (i % 8)))) {
            (*bits)[k / 8] |= (uint8_t)(1u << (k % 8));
        }
    }
    c->bits = *bits;
}

static int claimed_add(struct rstore *rs, const char *id, const char *entry)
{
    struct rs_claimed *k = calloc(1, sizeof *k);
    if (k == NULL) {
        return -1;
    }
    snprintf(k->id, sizeof k->id, "%s", id);
    snprintf(k->entry, sizeof k->entry, "%s", entry);
    k->next = rs->claimed;
    rs->claimed = k;
    return 0;
}

static void claimed_remove(struct rstore *rs, const char *id, const char *entry)
{
    for (struct rs_claimed **pp = &rs->claimed; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0 && strcmp((*pp)->entry, entry) == 0) {
            struct rs_claimed *k = *pp;
            *pp = k->next;
            free(k);
            return;
        }
    }
}

static int chunk_reply_ok(const redisReply *e)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements == 9 &&
           e->element[8]->type == REDIS_REPLY_INTEGER &&
           e->element[0]->type == REDIS_REPLY_STRING && e->element[1]->type == REDIS_REPLY_STRING &&
           e->element[2]->type == REDIS_REPLY_INTEGER &&
           e->element[3]->type == REDIS_REPLY_INTEGER &&
           e->element[4]->type == REDIS_REPLY_INTEGER &&
           e->element[5]->type == REDIS_REPLY_INTEGER && e->element[6]->type == REDIS_REPLY_INTEGER;
}

static void on_claimed(struct rstore *rs, redisReply *reply, void *arg)
{
    (void)arg;
    rs->claim_inflight = 0;
    size_t got = 0;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            if (!chunk_reply_ok(e)) {
                continue;
            }
            struct store_chunk c;
            uint8_t *bits = NULL;
            chunk_from_reply(e, &c, &bits);
            if (bits == NULL || claimed_add(rs, c.id, c.entry) != 0) {
                free(bits); /* not taken: another replica claims it after the timeout */
                continue;
            }
            got++;
            if (c.reclaimed) {
                rs->cstats.reclaimed++;
            } else {
                rs->cstats.claimed++;
            }
            rs->claim_want = rs->claim_want > 0 ? rs->claim_want - 1 : 0;
            if (rs->claim_fn != NULL) {
                rs->claim_fn(rs->claim_arg, &c);
            }
            free(bits);
        }
    }
    rs->claim_empty = got == 0;
    if (!rs->claim_empty && rs->claim_want > 0) {
        claim_send(rs); /* there was work: more may wait */
    }
}

static void claim_send(struct rstore *rs)
{
    if (rs->claim_inflight || rs->claim_want == 0 || !rs->connected) {
        return;
    }
    char idle[24], max[16];
    snprintf(idle, sizeof idle, "%llu", (unsigned long long)rs->cfg.claim_timeout_ms);
    snprintf(max, sizeof max, "%u", rs->claim_want > 16 ? 16 : rs->claim_want);
    const char *argv[] = {rs->consumer, rs->replica, idle, max};
    if (rs_eval(rs, RS_ONCE, RS_S_CLAIM, on_claimed, NULL, 4, argv, NULL) == 0) {
        rs->claim_inflight = 1;
    }
}

int store_claim(struct store *st, unsigned max, store_chunk_fn *fn, void *arg)
{
    struct rstore *rs = rs_of(st);
    if (rs == NULL) {
        return STORE_E_INVALID;
    }
    rs->claim_fn = fn;
    rs->claim_arg = arg;
    rs->claim_want = max;
    if (!rs->connected) {
        return STORE_E_IO;
    }
    if (!rs->claim_empty) {
        claim_send(rs); /* else at the next tick: nothing was there a moment ago */
    }
    return 0;
}

/* ---------------------------------------------------------------- a chunk's results */

int store_chunk_result(struct store *st, const struct store_chunk *c, uint32_t index, int ok,
                       const void *line, size_t len)
{
    struct rstore *rs = rs_of(st);
    if (rs == NULL || index >= c->njobs) {
        return STORE_E_INVALID;
    }
    return rs_rows_add(rs, c->id, index, ok, line, len);
}

struct rs_finish {
    store_chunk_end_fn *done;
    void *arg;
};

static uint64_t reply_u64(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        return (uint64_t)r->integer;
    }
    return r->type == REDIS_REPLY_STRING ? strtoull(r->str, NULL, 10) : 0;
}

static void on_finished(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rs_finish *f = arg;
    (void)rs;
    struct store_chunk_end e;
    memset(&e, 0, sizeof e);
    int ok = reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 8;
    if (ok) {
        e.njobs = reply_u64(reply->element[0]);
        e.nok = reply_u64(reply->element[1]);
        e.nfailed = reply_u64(reply->element[2]);
        int state = (int)reply_u64(reply->element[3]);
        e.ended = state >= STORE_DONE;
        e.cancel = reply_u64(reply->element[4]) != 0;
        e.created_ms = (int64_t)reply_u64(reply->element[5]);
        if (reply->element[6]->type == REDIS_REPLY_STRING) {
            snprintf(e.request_id, sizeof e.request_id, "%s", reply->element[6]->str);
        }
        e.busy_ms = (double)reply_u64(reply->element[7]) / 1000.0;
        e.complete = e.nok + e.nfailed >= e.njobs;
    } else if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 0) {
        e.ended = 1; /* forgotten or expired: nothing more to do */
        ok = 1;
    }
    f->done(f->arg, ok ? &e : NULL);
    free(f);
}

int store_chunk_finish(struct store *st, const struct store_chunk *c, double busy_ms,
                       store_chunk_end_fn *done, void *arg)
{
    struct rstore *rs = rs_of(st);
    if (rs == NULL) {
        return STORE_E_INVALID;
    }
    rs_rows_flush_id(rs, c->id); /* its results go first on the same connection */
    struct rs_finish *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return STORE_E_NOMEM;
    }
    f->done = done;
    f->arg = arg;
    char busy[32];
    snprintf(busy, sizeof busy, "%llu", (unsigned long long)(busy_ms * 1000.0));
    const char *argv[] = {c->id, busy};
    int rc = rs_eval(rs, RS_RETRY, RS_S_FINISH, on_finished, f, 2, argv, NULL);
    if (rc != 0) {
        free(f);
    }
    return rc;
}

int store_chunk_end_batch(struct store *st, const char *id, int state, const void *summary,
                          size_t len)
{
    struct rstore *rs = rs_of(st);
    return rs == NULL ? STORE_E_INVALID : rs_end_id(rs, id, state, summary, len);
}

int store_chunk_ack(struct store *st, const struct store_chunk *c)
{
    struct rstore *rs = rs_of(st);
    if (rs == NULL) {
        return STORE_E_INVALID;
    }
    claimed_remove(rs, c->id, c->entry);
    const char *argv[] = {c->id, c->entry};
    return rs_eval(rs, RS_RETRY, RS_S_ACK, NULL, NULL, 2, argv, NULL);
}

void store_chunk_drop(struct store *st, const struct store_chunk *c)
{
    struct rstore *rs = rs_of(st);
    if (rs != NULL) {
        claimed_remove(rs, c->id, c->entry); /* no more heartbeats: another replica takes it */
    }
}

/* ---------------------------------------------------------------- cancel from any replica */

struct rs_cancel_wait {
    store_done_fn *done;
    void *arg;
    char id[STORE_ID_SIZE];
};

static void on_cancel_recorded(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rs_cancel_wait *w = arg;
    int rc = STORE_E_IO;
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        rc = reply->integer == 1    ? STORE_OK
             : reply->integer == -2 ? STORE_E_ENDED
                                    : STORE_E_NOT_FOUND;
    }
    if (rc == STORE_OK && rs->cfg.on_cancel != NULL) {
        rs->cfg.on_cancel(rs->cfg.arg, w->id, 0); /* this replica's chunks stop at once */
    }
    if (w->done != NULL) {
        w->done(w->arg, rc, NULL, w->id);
    }
    free(w);
}

int store_cancel_id(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                    store_done_fn *done, void *arg)
{
    struct rstore *rs = rs_of(st);
    if (rs == NULL) {
        return STORE_E_INVALID;
    }
    if (!rs->connected) {
        return STORE_E_IO;
    }
    struct rs_cancel_wait *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return STORE_E_NOMEM;
    }
    w->done = done;
    w->arg = arg;
    snprintf(w->id, sizeof w->id, "%s", id);
    char hex[RS_OWNER_HEX];
    rs_owner_hex(owner, owner_len, hex);
    const char *argv[] = {id, owner_len == STORE_ANY_OWNER ? "*" : hex};
    int rc = rs_eval(rs, RS_ONCE, RS_S_CANCEL, on_cancel_recorded, w, 2, argv, NULL);
    if (rc != 0) {
        free(w);
    }
    return rc;
}

/* ---------------------------------------------------------------- heartbeats and the poll */

struct rs_touch {
    size_t n;
    char (*ids)[STORE_ID_SIZE];
    char (*entries)[48];
};

static void on_touched(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rs_touch *t = arg;
    rs->touch_inflight = 0;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 * t->n) {
        for (size_t i = 0; i < t->n; i++) {
            int lost = reply->element[2 * i]->integer != 0;
            int cancel = reply->element[2 * i + 1]->integer != 0;
            if (lost) {
                /* Another replica runs it now (this one was presumed dead): its results
                 * still go in, where the gate refuses those already recorded. */
                rs->cstats.lost++;
                claimed_remove(rs, t->ids[i], t->entries[i]);
            }
            if (cancel && rs->cfg.on_cancel != NULL) {
                rs->cfg.on_cancel(rs->cfg.arg, t->ids[i], 0);
            }
        }
    }
    free(t->ids);
    free(t->entries);
    free(t);
}

static void touch_send(struct rstore *rs)
{
    size_t n = 0;
    for (struct rs_claimed *k = rs->claimed; k != NULL; k = k->next) {
        n++;
    }
    if (n == 0 || rs->touch_inflight || !rs->connected) {
        return;
    }
    struct rs_touch *t = calloc(1, sizeof *t);
    const char **argv = calloc(1 + 2 * n, sizeof *argv);
    if (t == NULL || argv == NULL) {
        free(t);
        free(argv);
        return;
    }
    t->ids = calloc(n, sizeof *t->ids);
    t->entries = calloc(n, sizeof *t->entries);
    if (t->ids == NULL || t->entries == NULL) {
        free(t->ids);
        free(t->entries);
        free(t);
        free(argv);
        return;
    }
    argv[0] = rs->consumer;
    size_t i = 0;
    for (struct rs_claimed *k = rs->claimed; k != NULL; k = k->next, i++) {
        snprintf(t->ids[i], sizeof t->ids[i], "%s", k->id);
        snprintf(t->entries[i], sizeof t->entries[i], "%s", k->entry);
        argv[1 + 2 * i] = t->ids[i];
        argv[2 + 2 * i] = t->entries[i];
    }
    t->n = n;
    if (rs_eval(rs, RS_ONCE, RS_S_TOUCH, on_touched, t, (int)(1 + 2 * n), argv, NULL) == 0) {
        rs->touch_inflight = 1;
    } else {
        free(t->ids);
        free(t->entries);
        free(t);
    }
    free(argv);
}

static struct rs_watch *watch_find(struct rstore *rs, const char *id)
{
    for (size_t i = 0; i < rs->nwatch; i++) {
        if (strcmp(rs->watch[i].id, id) == 0) {
            return &rs->watch[i];
        }
    }
    return NULL;
}

static void on_polled(struct rstore *rs, redisReply *reply, void *arg)
{
    (void)arg;
    rs->poll_inflight = 0;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return;
    }
    for (size_t i = 0; i < rs->nwatch; i++) {
        rs->watch[i].seen = 0;
    }
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 ||
            e->element[0]->type != REDIS_REPLY_STRING || !store_id_valid(e->element[0]->str)) {
            continue;
        }
        const char *id = e->element[0]->str;
        uint64_t seq = reply_u64(e->element[1]);
        int state = (int)reply_u64(e->element[2]);
        int cancel = reply_u64(e->element[3]) != 0;
        struct rs_watch *w = watch_find(rs, id);
        if (w == NULL) {
            struct rs_watch *grown = realloc(rs->watch, (rs->nwatch + 1) * sizeof *grown);
            if (grown == NULL) {
                continue;
            }
            rs->watch = grown;
            w = &rs->watch[rs->nwatch++];
            memset(w, 0, sizeof *w);
            snprintf(w->id, sizeof w->id, "%s", id);
            w->state = -1;
        }
        w->seen = 1;
        int changed = w->seq != seq || w->state != state;
        int cancelled = cancel && !w->cancel;
        w->seq = seq;
        w->state = state;
        w->cancel = cancel;
        if (cancelled && state < STORE_DONE && rs->cfg.on_cancel != NULL) {
            rs->cfg.on_cancel(rs->cfg.arg, id, seq);
        }
        if (changed) {
            rs_progress(rs, id, seq);
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < rs->nwatch; i++) {
        if (rs->watch[i].seen) {
            rs->watch[k++] = rs->watch[i];
        }
    }
    rs->nwatch = k;
}

static void on_bytes(struct rstore *rs, redisReply *reply, void *arg)
{
    (void)arg;
    if (reply != NULL && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_NIL)) {
        rs->stats.bytes = reply->type == REDIS_REPLY_STRING ? strtoull(reply->str, NULL, 10) : 0;
    }
}

void rs_cluster_tick(struct rstore *rs)
{
    rs->ticks++;
    if (!rs->connected) {
        return;
    }
    rs->claim_empty = 0;
    claim_send(rs);
    uint64_t touch_ticks = rs->cfg.claim_timeout_ms / 4 / 50;
    touch_ticks = touch_ticks < 1 ? 1 : touch_ticks > 5 ? 5 : touch_ticks;
    if (rs->ticks % touch_ticks == 0) {
        touch_send(rs);
    }
    if (rs->ticks % RS_POLL_TICKS == 0 && !rs->poll_inflight) {
        char now[24];
        snprintf(now, sizeof now, "%lld", (long long)rs_now_ms(rs));
        const char *argv[] = {now};
        rs->poll_inflight = rs_eval(rs, RS_ONCE, RS_S_POLL, on_polled, NULL, 1, argv, NULL) == 0;
    }
    if (rs->ticks % 20 == 0) {
        const char *argv[] = {"GET", "batchd:bytes"};
        rs_send(rs, RS_ONCE, on_bytes, NULL, 2, argv, NULL);
    }
}

void rs_cluster_free(struct rstore *rs)
{
    while (rs->claimed != NULL) {
        struct rs_claimed *k = rs->claimed;
        rs->claimed = k->next;
        free(k);
    }
    free(rs->watch);
    rs->watch = NULL;
    rs->nwatch = 0;
}

void store_cluster_stats_get(const struct store *st, struct store_cluster_stats *out)
{
    const struct rstore *rs = rs_of((struct store *)st);
    memset(out, 0, sizeof *out);
    if (rs != NULL) {
        *out = rs->cstats;
        out->up = rs->connected;
        for (const struct rs_claimed *k = rs->claimed; k != NULL; k = k->next) {
            out->running++;
        }
    }
}
