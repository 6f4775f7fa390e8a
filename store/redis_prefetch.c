/* Results streams read without blocking the loop (cluster mode). Before a page of a batch's
 * results is read, the server asks for it (store_prefetch_results): one script fetches the
 * page with the batch's status and summary over the loop's async connection, and once it is
 * there the store's on_progress wakes the stream, whose reads of that page, that status and
 * that summary are then answered from memory. A read nobody fetched ahead goes the blocking
 * way (redis_read.c).
 *
 * A page is used once. A page with no rows says "nothing new yet": it is stale as soon as
 * the batch makes progress after it was fetched (then it is fetched again), and its arrival
 * wakes nobody, so that caught-up followers do not wake each other in a loop. */
#include "redis_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RS_PAGE_BYTES (4u << 20)        /* a page's lines, at most (then fewer rows) */
#define RS_PAGE_STALE_NS 10000000000ull /* an unanswered or unused page is dropped after */
#define RS_INFO_FRESH_NS 200000000ull   /* a status read ahead answers this long after */
#define RS_KIND_INFO 2                  /* a page of the status only (store_prefetch_info) */

struct rs_row {
    uint64_t seq;
    uint32_t index;
    int ok;
    size_t off, len; /* the line in text */
};

struct rs_page {
    struct rs_page *next;
    char id[STORE_ID_SIZE];
    char owner[RS_OWNER_HEX + 1]; /* its hex, "*": any */
    uint8_t owner_bytes[STORE_OWNER_MAX];
    size_t owner_len; /* STORE_ANY_OWNER: any */
    int by_index;
    uint64_t from;
    size_t max;
    uint64_t born_ns;
    uint64_t gen; /* the batch's progress count when it was answered */
    int ready;
    int rc;
    int info_used;
    int wake; /* a reader that does not follow waits for it: report it even when empty */
    struct store_info info;
    char *summary; /* the summary line, when ended */
    size_t summary_len;
    struct rs_row *rows;
    size_t nrows;
    char *text;
};

struct rs_gen {
    char id[STORE_ID_SIZE];
    uint64_t gen;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void owner_key(const uint8_t *owner, size_t owner_len, char out[RS_OWNER_HEX + 1])
{
    if (owner_len == STORE_ANY_OWNER) {
        snprintf(out, RS_OWNER_HEX + 1, "*");
    } else {
        rs_owner_hex(owner, owner_len, out);
    }
}

static void page_free(struct rs_page *p)
{
    if (p != NULL) {
        free(p->summary);
        free(p->rows);
        free(p->text);
        free(p);
    }
}

static void page_unlink(struct rstore *rs, struct rs_page *p)
{
    for (struct rs_page **pp = &rs->pages; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            return;
        }
    }
}

/* ---------------------------------------------------------------- progress counts */

static uint64_t *gen_slot(struct rstore *rs, const char *id, int make)
{
    struct rs_gen *g = rs->gens;
    for (size_t i = 0; i < rs->ngens; i++) {
        if (strcmp(g[i].id, id) == 0) {
            return &g[i].gen;
        }
    }
    if (!make) {
        return NULL;
    }
    struct rs_gen *grown = realloc(rs->gens, (rs->ngens + 1) * sizeof *grown);
    if (grown == NULL) {
        return NULL;
    }
    rs->gens = grown;
    memset(&grown[rs->ngens], 0, sizeof grown[rs->ngens]);
    snprintf(grown[rs->ngens].id, sizeof grown[rs->ngens].id, "%s", id);
    return &grown[rs->ngens++].gen;
}

void rs_progress(struct rstore *rs, const char *id, uint64_t seq)
{
    uint64_t *g = gen_slot(rs, id, rs->pages != NULL);
    if (g != NULL) {
        ++*g;
    }
    if (rs->cfg.on_progress != NULL) {
        rs->cfg.on_progress(rs->cfg.arg, id, seq);
    }
}

static uint64_t gen_of(struct rstore *rs, const char *id)
{
    uint64_t *g = gen_slot(rs, id, 0);
    return g != NULL ? *g : 0;
}

/* ---------------------------------------------------------------- fetching */

static int page_fill(struct rstore *rs, struct rs_page *p, const redisReply *r)
{
    if (r == NULL) {
        return STORE_E_IO;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY) {
        return STORE_E_IO;
    }
    const redisReply *meta = r->element[0];
    if (meta->elements == 0) {
        return STORE_E_NOT_FOUND;
    }
    if (r->elements < 3 || (r->elements - 3) % 2 != 0 || r->element[1]->type != REDIS_REPLY_ARRAY) {
        return STORE_E_IO;
    }
    if (!rs_owner_ok(meta, p->owner_bytes, p->owner_len)) {
        return STORE_E_NOT_FOUND;
    }
    int rc = rs_info_from_meta(meta, p->id, rs_now_ms(rs), &p->info);
    if (rc == STORE_E_NOT_FOUND) {
        return rc;
    }
    rs_replicas_into(r->element[1], &p->info);
    for (size_t i = 0; i + 1 < meta->elements; i += 2) {
        const redisReply *k = meta->element[i], *v = meta->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, "summary") == 0 &&
            v->type == REDIS_REPLY_STRING && v->len > 0 && p->info.state != STORE_EXPIRED) {
            p->summary = malloc(v->len);
            if (p->summary == NULL) {
                return STORE_E_NOMEM;
            }
            memcpy(p->summary, v->str, v->len);
            p->summary_len = v->len;
        }
    }
    size_t n = (r->elements - 3) / 2, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *v = r->element[4 + 2 * i];
        bytes += v->type == REDIS_REPLY_STRING ? v->len : 0;
    }
    p->rows = calloc(n ? n : 1, sizeof *p->rows);
    p->text = malloc(bytes ? bytes : 1);
    if (p->rows == NULL || p->text == NULL) {
        return STORE_E_NOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *ix = r->element[3 + 2 * i], *v = r->element[4 + 2 * i];
        struct rs_row *row = &p->rows[p->nrows];
        const char *line = NULL;
        if (ix->type != REDIS_REPLY_STRING ||
            rs_parse_row(v, &row->seq, &row->ok, &line, &row->len) != 0) {
            return STORE_E_IO;
        }
        row->index = (uint32_t)strtoul(ix->str, NULL, 10);
        memcpy(p->text + off, line, row->len);
        row->off = off;
        off += row->len;
        p->nrows++;
    }
    return rc; /* 0, or STORE_E_EXPIRED */
}

static void on_page(struct rstore *rs, redisReply *reply, void *arg)
{
    struct rs_page *p = arg;
    p->rc = page_fill(rs, p, reply);
    p->ready = 1;
    p->born_ns = mono_ns(); /* from now on: answered this long ago */
    p->gen = gen_of(rs, p->id);
    int ended = p->info.state == STORE_DONE || p->info.state == STORE_CANCELLED;
    if (rs->closing) {
        return;
    }
    /* Wake its stream, unless it only says "nothing new" (see the top). */
    if ((p->wake || p->rc != 0 || p->nrows > 0 || ended) && rs->cfg.on_progress != NULL) {
        rs->cfg.on_progress(rs->cfg.arg, p->id, p->info.last_seq);
    }
}

static struct rs_page *page_find(struct rstore *rs, const char *okey, const char *id, int by_index,
                                 uint64_t from)
{
    for (struct rs_page *p = rs->pages; p != NULL; p = p->next) {
        if (p->by_index == by_index && p->from == from && strcmp(p->id, id) == 0 &&
            strcmp(p->owner, okey) == 0) {
            return p;
        }
    }
    return NULL;
}

int store_prefetch_results(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                           int by_index, uint64_t from, size_t max, int follow)
{
    struct rstore *rs = rs_of(st);
    if (rs == NULL || !store_id_valid(id) || from > UINT32_MAX || !rs->connected) {
        return 0; /* read the blocking way (which fails at once when Redis is away) */
    }
    char okey[RS_OWNER_HEX + 1];
    owner_key(owner, owner_len, okey);
    struct rs_page *p = page_find(rs, okey, id, by_index, from);
    if (p != NULL && !p->ready) {
        p->wake |= !follow;
        return STORE_E_AGAIN;
    }
    if (p != NULL && (p->nrows > 0 || p->rc != 0 || p->gen == gen_of(rs, id))) {
        return 0;
    }
    if (p != NULL) {
        page_unlink(rs, p); /* "nothing new", but the batch moved on since: fetch again */
        page_free(p);
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        return 0;
    }
    snprintf(p->id, sizeof p->id, "%s", id);
    snprintf(p->owner, sizeof p->owner, "%s", okey);
    p->owner_len = owner_len;
    if (owner_len != STORE_ANY_OWNER && owner_len <= STORE_OWNER_MAX && owner_len > 0) {
        memcpy(p->owner_bytes, owner, owner_len);
    } else if (owner_len != STORE_ANY_OWNER) {
        p->owner_len = 0;
    }
    p->by_index = by_index;
    p->wake = !follow;
    p->from = from;
    p->max = max;
    p->born_ns = mono_ns();
    char sfrom[24], smax[24], sbytes[24];
    snprintf(sfrom, sizeof sfrom, "%llu", (unsigned long long)from);
    snprintf(smax, sizeof smax, "%zu", max > 0 ? max : 1);
    snprintf(sbytes, sizeof sbytes, "%u", RS_PAGE_BYTES);
    const char *argv[] = {id,
                          by_index == RS_KIND_INFO ? "n"
                          : by_index               ? "i"
                                                   : "s",
                          sfrom, smax, sbytes};
    if (gen_slot(rs, id, 1) == NULL ||
        rs_eval(rs, RS_ONCE, RS_S_PAGE, on_page, p, 5, argv, NULL) != 0) {
        page_free(p);
        return 0;
    }
    p->next = rs->pages;
    rs->pages = p;
    return STORE_E_AGAIN;
}

/* ---------------------------------------------------------------- answering from it */

int rs_cache_rows(struct rstore *rs, const uint8_t *owner, size_t owner_len, const char *id,
                  int by_index, uint64_t from, size_t max, store_row_fn *row, void *arg,
                  uint64_t *last, uint32_t *next, int *rc)
{
    char okey[RS_OWNER_HEX + 1];
    owner_key(owner, owner_len, okey);
    struct rs_page *p = page_find(rs, okey, id, by_index, from);
    if (p == NULL || !p->ready) {
        return 0;
    }
    page_unlink(rs, p);
    page_free(rs->used); /* the page before: its status was for the read before */
    rs->used = p;
    *rc = p->rc;
    if (p->rc != 0) {
        return 1;
    }
    for (size_t i = 0; i < p->nrows && i < max; i++) {
        const struct rs_row *w = &p->rows[i];
        if (last != NULL) {
            *last = w->seq;
        }
        if (next != NULL) {
            *next = w->index + 1;
        }
        if (row(arg, w->seq, w->index, w->ok, p->text + w->off, w->len) != 0) {
            break;
        }
    }
    return 1;
}

int store_prefetch_info(struct store *st, const uint8_t *owner, size_t owner_len, const char *id)
{
    struct rstore *rs = rs_of(st);
    if (rs == NULL) {
        return 0;
    }
    char okey[RS_OWNER_HEX + 1];
    owner_key(owner, owner_len, okey);
    struct rs_page *p = page_find(rs, okey, id, RS_KIND_INFO, 0);
    if (p != NULL && p->ready && mono_ns() - p->born_ns > RS_INFO_FRESH_NS) {
        page_unlink(rs, p); /* answered too long ago: ask again */
        page_free(p);
    }
    return store_prefetch_results(st, owner, owner_len, id, RS_KIND_INFO, 0, 0, 0);
}

int rs_cache_info(struct rstore *rs, const uint8_t *owner, size_t owner_len, const char *id,
                  struct store_info *out, int *rc)
{
    char okey[RS_OWNER_HEX + 1];
    owner_key(owner, owner_len, okey);
    struct rs_page *q = page_find(rs, okey, id, RS_KIND_INFO, 0);
    if (q != NULL && q->ready) {
        page_unlink(rs, q); /* a status read ahead: used once, if still fresh */
        int fresh = mono_ns() - q->born_ns <= RS_INFO_FRESH_NS;
        if (fresh) {
            *out = q->info;
            *rc = q->rc;
        }
        page_free(q);
        if (fresh) {
            return 1;
        }
    }
    struct rs_page *p = rs->used;
    /* Only right after its rows were read (the same turn of the stream), and only once. */
    if (p == NULL || p->nrows > 0 || strcmp(p->id, id) != 0 || strcmp(p->owner, okey) != 0 ||
        p->info_used) {
        return 0;
    }
    p->info_used = 1;
    *out = p->info;
    *rc = p->rc;
    return 1;
}

int rs_cache_summary(struct rstore *rs, const char *id, void **data, size_t *len)
{
    struct rs_page *p = rs->used;
    if (p == NULL || p->summary == NULL || strcmp(p->id, id) != 0) {
        return 0;
    }
    *data = p->summary;
    *len = p->summary_len;
    p->summary = NULL;
    return 1;
}

void rs_cache_tick(struct rstore *rs)
{
    uint64_t now = mono_ns();
    for (struct rs_page **pp = &rs->pages; *pp != NULL;) {
        struct rs_page *p = *pp;
        if (p->ready && now - p->born_ns > RS_PAGE_STALE_NS) {
            *pp = p->next; /* fetched, and nobody came for it */
            page_free(p);
        } else {
            pp = &p->next;
        }
    }
    if (rs->pages == NULL && rs->ngens > 0) {
        free(rs->gens); /* nothing fetched ahead: no counts to compare with */
        rs->gens = NULL;
        rs->ngens = 0;
    }
}

void rs_cache_free(struct rstore *rs)
{
    /* After the connection closed: every page's reply handler has run. */
    while (rs->pages != NULL) {
        struct rs_page *p = rs->pages;
        rs->pages = p->next;
        page_free(p);
    }
    page_free(rs->used);
    rs->used = NULL;
    free(rs->gens);
    rs->gens = NULL;
    rs->ngens = 0;
}
