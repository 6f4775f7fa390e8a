/* Reads of the SQLite store on the loop thread's read-only connection: a batch's status,
 * the list of an owner's batches, results paged by seq or by index, stored blobs, the
 * unfinished batches, the count of batches by state. In WAL they see the last commit and
 * never wait for the writer. */
#include "sq_internal.h"

#include <stdlib.h>
#include <string.h>

static int read_info(sqlite3_stmt *s, const uint8_t *owner, size_t owner_len,
                     struct store_info *out)
{
    memset(out, 0, sizeof *out);
    sq_copy_text(out->id, sizeof out->id, sqlite3_column_text(s, 0));
    const void *o = sqlite3_column_blob(s, 1);
    size_t olen = (size_t)sqlite3_column_bytes(s, 1);
    out->state = sqlite3_column_int(s, 2);
    out->cancel_requested = sqlite3_column_int(s, 3);
    sq_copy_text(out->op, sizeof out->op, sqlite3_column_text(s, 4));
    sq_copy_text(out->request_id, sizeof out->request_id, sqlite3_column_text(s, 5));
    out->created_ms = sqlite3_column_int64(s, 6);
    out->started_ms = sqlite3_column_int64(s, 7);
    out->finished_ms = sqlite3_column_int64(s, 8);
    out->expires_ms = sqlite3_column_int64(s, 9);
    out->njobs = (uint64_t)sqlite3_column_int64(s, 10);
    out->nok = (uint64_t)sqlite3_column_int64(s, 11);
    out->nfailed = (uint64_t)sqlite3_column_int64(s, 12);
    out->last_seq = (uint64_t)sqlite3_column_int64(s, 13);
    out->queue = -1;
    return owner_len == STORE_ANY_OWNER ||
           (olen == owner_len && (olen == 0 || memcmp(o, owner, olen) == 0));
}

/* Looks batch ID up for OWNER: 0 and its bno, or NOT_FOUND / EXPIRED / IO. */
static int lookup(struct sq_store *sq, const uint8_t *owner, size_t owner_len, const char *id,
                  struct store_info *info, int64_t *bno)
{
    if (id == NULL || !store_id_valid(id) ||
        (owner_len > STORE_OWNER_MAX && owner_len != STORE_ANY_OWNER)) {
        return STORE_E_NOT_FOUND;
    }
    sqlite3_stmt *s = sq->r[R_GET];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int src = sqlite3_step(s);
    if (src != SQLITE_ROW) {
        sq_finish(s);
        return src == SQLITE_DONE ? STORE_E_NOT_FOUND : sq_rc(src);
    }
    int mine = read_info(s, owner, owner_len, info);
    if (bno != NULL) {
        *bno = sqlite3_column_int64(s, 14);
    }
    sq_finish(s);
    if (!mine) {
        memset(info, 0, sizeof *info);
        return STORE_E_NOT_FOUND;
    }
    /* Past its ttl it is gone, whether or not the expiry timer has run yet. */
    if (info->state == STORE_EXPIRED ||
        ((info->state == STORE_DONE || info->state == STORE_CANCELLED) && info->expires_ms > 0 &&
         info->expires_ms <= sq_now(sq))) {
        info->state = STORE_EXPIRED;
        return STORE_E_EXPIRED;
    }
    return 0;
}

int sq_read_get(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                struct store_info *out)
{
    return lookup(sq_of(st), owner, owner_len, id, out, NULL);
}

int sq_read_list(struct store *st, const uint8_t *owner, size_t owner_len, int state,
                 const char *before, struct store_info *out, size_t max, size_t *n)
{
    struct sq_store *sq = sq_of(st);
    *n = 0;
    if (owner_len > STORE_OWNER_MAX || (before != NULL && !store_id_valid(before))) {
        return STORE_E_INVALID;
    }
    int64_t now = sq_now(sq);
    sqlite3_stmt *s = sq->r[R_LIST];
    sq_bind_owner(s, 1, owner, owner_len);
    sqlite3_bind_text(s, 2, before != NULL ? before : "c", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, state);
    /* A few more than MAX, for those past their ttl that the timer has not expired yet. */
    sqlite3_bind_int64(s, 4, (int64_t)max + 64);
    int src;
    while (*n < max && (src = sqlite3_step(s)) == SQLITE_ROW) {
        read_info(s, owner, owner_len, &out[*n]);
        if (out[*n].expires_ms > 0 && out[*n].expires_ms <= now) {
            continue;
        }
        (*n)++;
    }
    if (*n == max) {
        src = SQLITE_DONE;
    }
    sq_finish(s);
    return src == SQLITE_DONE ? 0 : sq_rc(src);
}

/* Steps S (columns: seq key, index, ok, line) and hands each row to ROW until it returns
 * non-zero; *LAST gets the last seq given, *NEXT the index after the last one (either may be
 * NULL). Finishes S. Returns 0 or a store code. */
static int step_rows(sqlite3_stmt *s, store_row_fn *row, void *arg, uint64_t *last, uint32_t *next)
{
    int src;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0) & 0xffffffffu;
        uint32_t idx = (uint32_t)sqlite3_column_int64(s, 1);
        int ok = sqlite3_column_int(s, 2);
        const void *line = sqlite3_column_blob(s, 3);
        size_t len = (size_t)sqlite3_column_bytes(s, 3);
        if (last != NULL) {
            *last = seq;
        }
        if (next != NULL) {
            *next = idx + 1;
        }
        if (row(arg, seq, idx, ok, line != NULL ? line : sq_empty, len) != 0) {
            src = SQLITE_DONE;
            break;
        }
    }
    sq_finish(s);
    return src == SQLITE_DONE ? 0 : sq_rc(src);
}

int sq_read_results(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                    uint64_t after, size_t max, store_row_fn *row, void *arg, uint64_t *last)
{
    struct sq_store *sq = sq_of(st);
    struct store_info info;
    int64_t bno = 0;
    *last = after;
    int rc = lookup(sq, owner, owner_len, id, &info, &bno);
    if (rc != 0) {
        return rc;
    }
    if (after > 0xffffffffu) {
        return 0;
    }
    sqlite3_stmt *s = sq->r[R_RESULTS];
    sqlite3_bind_int64(s, 1, sq_key_lo(bno) | (int64_t)after);
    sqlite3_bind_int64(s, 2, sq_key_hi(bno));
    sqlite3_bind_int64(s, 3, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    return step_rows(s, row, arg, last, NULL);
}

int sq_read_by_index(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                     uint32_t from, size_t max, store_row_fn *row, void *arg, uint32_t *next)
{
    struct sq_store *sq = sq_of(st);
    struct store_info info;
    int64_t bno = 0;
    *next = from;
    int rc = lookup(sq, owner, owner_len, id, &info, &bno);
    if (rc != 0) {
        return rc;
    }
    sqlite3_stmt *s = sq->r[R_BY_INDEX];
    sqlite3_bind_int64(s, 1, bno);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    return step_rows(s, row, arg, NULL, next);
}

int sq_read_blob(struct store *st, const char *id, int part, uint32_t index, void **data,
                 size_t *len)
{
    struct sq_store *sq = sq_of(st);
    static const int which[] = {
        [STORE_PART_SPEC] = R_SPEC, [STORE_PART_SUMMARY] = R_SUMMARY, [STORE_PART_INPUT] = R_INPUT};
    *data = NULL;
    *len = 0;
    if (part < 0 || part > STORE_PART_INPUT) {
        return STORE_E_INVALID;
    }
    sqlite3_stmt *s = sq->r[which[part]];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    if (part == STORE_PART_INPUT) {
        sqlite3_bind_int64(s, 2, index);
    }
    int src, found = 0, rc = 0;
    unsigned char *buf = NULL;
    size_t n = 0;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        if (sqlite3_column_type(s, 0) == SQLITE_NULL) {
            continue;
        }
        found = 1;
        size_t add = (size_t)sqlite3_column_bytes(s, 0);
        unsigned char *nbuf = realloc(buf, n + add + 1);
        if (nbuf == NULL) {
            rc = STORE_E_NOMEM;
            break;
        }
        buf = nbuf;
        if (add > 0) {
            memcpy(buf + n, sqlite3_column_blob(s, 0), add);
        }
        n += add;
    }
    sq_finish(s);
    if (rc == 0 && src != SQLITE_DONE) {
        rc = sq_rc(src);
    }
    if (rc == 0 && !found) {
        rc = STORE_E_NOT_FOUND;
    }
    if (rc != 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0'; /* a NUL past the end, for text parts */
    *data = buf;
    *len = n;
    return 0;
}

int sq_read_counts(struct store *st, uint64_t out[STORE_NSTATES])
{
    struct sq_store *sq = sq_of(st);
    sqlite3_stmt *s = sq->r[R_STATES];
    memset(out, 0, STORE_NSTATES * sizeof out[0]);
    int src;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        int state = sqlite3_column_int(s, 0);
        if (state >= 0 && state < STORE_NSTATES) {
            out[state] = (uint64_t)sqlite3_column_int64(s, 1);
        }
    }
    sq_finish(s);
    if (src != SQLITE_DONE) {
        memset(out, 0, STORE_NSTATES * sizeof out[0]);
        return sq_rc(src);
    }
    return 0;
}

int sq_read_unfinished(struct store *st, void (*fn)(void *arg, const char *id), void *arg)
{
    struct sq_store *sq = sq_of(st);
    sqlite3_stmt *s = sq->r[R_UNFINISHED];
    int src;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        char id[STORE_ID_SIZE];
        sq_copy_text(id, sizeof id, sqlite3_column_text(s, 0));
        fn(arg, id);
    }
    sq_finish(s);
    return src == SQLITE_DONE ? 0 : sq_rc(src);
}
