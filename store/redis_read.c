/* Reads of the Redis store on the blocking read connection: a batch's status, the list of an
 * owner's batches, results paged by seq or by index, stored blobs, the unfinished local
 * batches, the count of batches by state. The same answers as the SQLite backend (sq_read.c)
 * for every call. Loops run server-side in small Lua scripts, a bounded page per call, so
 * that neither Redis nor this process ever holds more than a page (never a whole batch).
 * Not the writes (redis_write.c) nor the claims (redis_claim.c). */
#include "redis_internal.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RR_PAGE 256            /* results per round trip */
#define RR_BYTES (4u << 20)    /* ... or fewer once their lines reach this many bytes */
#define RR_SCAN 2048           /* job indexes looked at per round trip (by index) */
#define RR_LIST_SCAN 256       /* batch ids looked at per round trip (list) */
#define RR_SEQ_MAX 0xffffffffu /* seqs are 32-bit, as in the SQLite store */

/* The scripts know the key schema of redis_internal.h: batchd:{ID}:SUFFIX (rs_key). They only
 * read, so a replay after a lost connection is harmless. */

/* KEYS meta, ran; ARGV with_ran. -> {meta as HGETALL, ran sorted ({} without with_ran)}. */
static const char rr_lua_info[] = "local m = redis.call('HGETALL', KEYS[1])\n"
                                  "local r = {}\n"
                                  "if #m > 0 and ARGV[1] == '1' then\n"
                                  "  r = redis.call('SMEMBERS', KEYS[2])\n"
                                  "  table.sort(r)\n"
                                  "end\n"
                                  "return {m, r}\n";

/* KEYS by:OWNER; ARGV max bound ("+" or "(ID"), state (-1 any), want, scan, now_ms.
 * Fetches up to SCAN ids older than the bound, newest first, looks at them in turn and returns
 * {the last id looked at ("" none), how many were fetched, {id, meta, ran sorted, ...}} for at
 * most WANT of them in that state, not expired (state 4, or expires set and <= now: as
 * sq_read_list), stopping at the WANTth. */
static const char rr_lua_list[] =
    "local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], '-', 'LIMIT', 0, "
    "tonumber(ARGV[4]))\n"
    "local want, st, now = tonumber(ARGV[3]), tonumber(ARGV[2]), tonumber(ARGV[5])\n"
    "local out, last, n = {}, '', 0\n"
    "for _, id in ipairs(ids) do\n"
    "  last = id\n"
    "  local m = redis.call('HGETALL', 'batchd:{' .. id .. '}:meta')\n"
    "  local h = {}\n"
    "  for i = 1, #m, 2 do h[m[i]] = m[i + 1] end\n"
    "  local s, e = tonumber(h.state), tonumber(h.expires) or 0\n"
    "  if s ~= nil and s ~= 4 and (st < 0 or s == st) and not (e > 0 and e <= now) then\n"
    "    local r = redis.call('SMEMBERS', 'batchd:{' .. id .. '}:ran')\n"
    "    table.sort(r)\n"
    "    out[#out + 1] = id\n"
    "    out[#out + 1] = m\n"
    "    out[#out + 1] = r\n"
    "    n = n + 1\n"
    "    if n >= want then break end\n"
    "  end\n"
    "end\n"
    "return {last, #ids, out}\n";

/* KEYS order, res; ARGV start, stop, bytes. -> {how many indexes order[start..stop] has, then
 * index, value (false: missing), ... for the first of them, until their bytes reach BYTES}. */
static const char rr_lua_results[] = "local ix = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])\n"
                                     "local out, bytes, budget = {#ix}, 0, tonumber(ARGV[3])\n"
                                     "if #ix == 0 then return out end\n"
                                     "local vs = redis.call('HMGET', KEYS[2], unpack(ix))\n"
                                     "for k, i in ipairs(ix) do\n"
                                     "  local v = vs[k]\n"
                                     "  out[#out + 1] = i\n"
                                     "  out[#out + 1] = v\n"
                                     "  if v then bytes = bytes + #v end\n"
                                     "  if bytes >= budget then break end\n"
                                     "end\n"
                                     "return out\n";

/* KEYS res; ARGV from, end, want, scan, bytes. Looks at indexes from..min(end, from+scan)-1
 * and returns {the index after the last one looked at, index, value, ...} for at most WANT
 * present ones, fewer once their bytes reach BYTES. */
static const char rr_lua_index[] =
    "local i, want, budget = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[5])\n"
    "local stop = math.min(tonumber(ARGV[2]), i + tonumber(ARGV[4]))\n"
    "local out, n, bytes = {0}, 0, 0\n"
    "while i < stop and n < want and bytes < budget do\n"
    "  local v = redis.call('HGET', KEYS[1], tostring(i))\n"
    "  if v then\n"
    "    out[#out + 1] = i\n"
    "    out[#out + 1] = v\n"
    "    n = n + 1\n"
    "    bytes = bytes + #v\n"
    "  end\n"
    "  i = i + 1\n"
    "end\n"
    "out[1] = i\n"
    "return out\n";

/* KEYS local:REPLICA; ARGV replica. -> the ids of the set, sorted (oldest first), whose meta
 * says unfinished (state 0 or 1), not in the queue, run by REPLICA. */
static const char rr_lua_unfinished[] =
    "local ids = redis.call('SMEMBERS', KEYS[1])\n"
    "table.sort(ids)\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local m = redis.call('HMGET', 'batchd:{' .. id .. '}:meta', 'state', 'queue', 'local')\n"
    "  if (m[1] == '0' or m[1] == '1') and m[2] == '0' and m[3] == ARGV[1] then\n"
    "    out[#out + 1] = id\n"
    "  end\n"
    "end\n"
    "return out\n";

static struct rstore *rr_of(struct store *st)
{
    return (struct rstore *)st;
}

/* 1 when R is no answer (unreachable) or an error reply. */
static int rr_bad(const redisReply *r)
{
    return r == NULL || r->type == REDIS_REPLY_ERROR;
}

/* 1 when R is an array of at least N elements. */
static int rr_array(const redisReply *r, size_t n)
{
    return r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= n;
}

/* Runs SCRIPT with NKEYS keys then the rest of ARGS (NARGS in all, at most 8). Returns 0 and
 * *OUT (new: freeReplyObject), or STORE_E_IO (unreachable, error reply). */
static int rr_eval(struct rstore *rs, const char *script, int nkeys, const char **args, int nargs,
                   redisReply **out)
{
    const char *argv[11];
    size_t lens[11];
    char nk[16];
    *out = NULL;
    if (nargs > 8) {
        return STORE_E_INVALID;
    }
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = nk;
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
    }
    for (int i = 0; i < 3 + nargs; i++) {
        lens[i] = strlen(argv[i]);
    }
    redisReply *r = rs_sync(rs, 3 + nargs, argv, lens);
    if (rr_bad(r)) {
        if (r != NULL) {
            freeReplyObject(r);
        }
        return STORE_E_IO;
    }
    *out = r;
    return 0;
}

/* A reply element as a number (an integer, or a string of digits): 0 and *OUT, or -1. */
static int rr_num(const redisReply *r, long long *out)
{
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return 0;
    }
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len == 0) {
        return -1;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(r->str, &end, 10); /* hiredis ends every string with a NUL */
    if (errno != 0 || end != r->str + r->len) {
        return -1;
    }
    *out = v;
    return 0;
}

/* Field NAME of META (a HGETALL reply: name, value, ...): borrowed, or NULL if absent. */
static const redisReply *rr_field(const redisReply *meta, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i + 1 < meta->elements; i += 2) {
        const redisReply *k = meta->element[i];
        if (k->type == REDIS_REPLY_STRING && k->len == nlen && memcmp(k->str, name, nlen) == 0) {
            return meta->element[i + 1];
        }
    }
    return NULL;
}

/* 1 when META (not empty) belongs to OWNER. Both spellings of "no owner" ("" in the meta,
 * "-" from rs_owner_hex) are the same owner. */
int rs_owner_ok(const redisReply *meta, const uint8_t *owner, size_t owner_len)
{
    if (owner_len == STORE_ANY_OWNER) {
        return 1;
    }
    char hex[RS_OWNER_HEX];
    rs_owner_hex(owner, owner_len, hex);
    const char *want = strcmp(hex, "-") == 0 ? "" : hex;
    const redisReply *v = rr_field(meta, "owner");
    const char *have = "";
    size_t have_len = 0;
    if (v != NULL && v->type == REDIS_REPLY_STRING) {
        have = v->str;
        have_len = v->len;
    }
    if (have_len == 1 && have[0] == '-') {
        have_len = 0;
    }
    return have_len == strlen(want) && memcmp(have, want, have_len) == 0;
}

/* The names of RAN (a sorted array of replica names) into OUT->replicas, comma-separated;
 * the names that would not fit whole are left out. */
void rs_replicas_into(const redisReply *ran, struct store_info *out)
{
    size_t used = 0;
    out->replicas[0] = '\0';
    for (size_t i = 0; ran != NULL && i < ran->elements; i++) {
        const redisReply *e = ran->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len == 0) {
            continue;
        }
        size_t need = (used > 0 ? 1 : 0) + e->len;
        if (used + need >= sizeof out->replicas) {
            break;
        }
        if (used > 0) {
            out->replicas[used++] = ',';
        }
        memcpy(out->replicas + used, e->str, e->len);
        used += e->len;
        out->replicas[used] = '\0';
    }
}

/* How a meta field lands in struct store_info. */
enum rr_kind { RR_TEXT, RR_INT, RR_I64, RR_U64 };
struct rr_meta_field {
    const char *name;
    enum rr_kind kind;
    size_t off;
    size_t size;
};
#define RR_F(name, kind, member)                                                                   \
    {                                                                                              \
        name, kind, offsetof(struct store_info, member), sizeof(((struct store_info *)0)->member)  \
    }
static const struct rr_meta_field rr_meta_fields[] = {
    RR_F("op", RR_TEXT, op),
    RR_F("rid", RR_TEXT, request_id),
    RR_F("state", RR_INT, state),
    RR_F("cancel", RR_INT, cancel_requested),
    RR_F("queue", RR_INT, queue),
    RR_F("created", RR_I64, created_ms),
    RR_F("started", RR_I64, started_ms),
    RR_F("finished", RR_I64, finished_ms),
    RR_F("expires", RR_I64, expires_ms),
    RR_F("njobs", RR_U64, njobs),
    RR_F("nok", RR_U64, nok),
    RR_F("nfailed", RR_U64, nfailed),
    RR_F("seq", RR_U64, last_seq),
};
#undef RR_F

/* Stores value V of field F into OUT. A number that does not parse counts as 0. */
static void rr_meta_set(const struct rr_meta_field *f, const redisReply *v, struct store_info *out)
{
    char *p = (char *)out + f->off;
    if (f->kind == RR_TEXT) {
        size_t n = v->type == REDIS_REPLY_STRING ? v->len : 0;
        n = n < f->size - 1 ? n : f->size - 1;
        if (n > 0) {
            memcpy(p, v->str, n);
        }
        p[n] = '\0';
        return;
    }
    long long x = 0;
    if (rr_num(v, &x) != 0) {
        x = 0;
    }
    if (f->kind == RR_INT) {
        int i = x < INT_MIN ? INT_MIN : x > INT_MAX ? INT_MAX : (int)x;
        memcpy(p, &i, sizeof i);
    } else if (f->kind == RR_I64) {
        int64_t i = (int64_t)x;
        memcpy(p, &i, sizeof i);
    } else {
        uint64_t u = x < 0 ? 0 : (uint64_t)x;
        memcpy(p, &u, sizeof u);
    }
}

int rs_info_from_meta(const redisReply *meta, const char *id, int64_t now_ms,
                      struct store_info *out)
{
    memset(out, 0, sizeof *out);
    if (meta == NULL || meta->type != REDIS_REPLY_ARRAY || meta->elements < 2 || id == NULL) {
        return STORE_E_NOT_FOUND;
    }
    snprintf(out->id, sizeof out->id, "%s", id);
    out->state = -1;
    out->queue = 1; /* a batch whose meta does not say is in the queue, the usual case */
    for (size_t i = 0; i + 1 < meta->elements; i += 2) {
        const redisReply *k = meta->element[i];
        if (k->type != REDIS_REPLY_STRING) {
            continue;
        }
        for (size_t j = 0; j < sizeof rr_meta_fields / sizeof rr_meta_fields[0]; j++) {
            const struct rr_meta_field *f = &rr_meta_fields[j];
            if (strlen(f->name) == k->len && memcmp(f->name, k->str, k->len) == 0) {
                rr_meta_set(f, meta->element[i + 1], out);
                break;
            }
        }
    }
    /* A hash without a state is no batch (the create script always writes one). */
    if (out->state < 0) {
        memset(out, 0, sizeof *out);
        return STORE_E_NOT_FOUND;
    }
    /* Past its ttl it is gone, whether or not the expiry has run yet (as sq_read.c). */
    if (out->state == STORE_EXPIRED ||
        ((out->state == STORE_DONE || out->state == STORE_CANCELLED) && out->expires_ms > 0 &&
         out->expires_ms <= now_ms)) {
        out->state = STORE_EXPIRED;
        return STORE_E_EXPIRED;
    }
    return 0;
}

/* Looks batch ID up for OWNER into *INFO (with its replicas when WITH_RAN): 0, NOT_FOUND,
 * EXPIRED (INFO has the id and state) or IO. */
static int rr_lookup(struct rstore *rs, const uint8_t *owner, size_t owner_len, const char *id,
                     int with_ran, struct store_info *info)
{
    memset(info, 0, sizeof *info);
    if (id == NULL || !store_id_valid(id) ||
        (owner_len > STORE_OWNER_MAX && owner_len != STORE_ANY_OWNER)) {
        return STORE_E_NOT_FOUND;
    }
    char kmeta[RS_KEY_MAX], kran[RS_KEY_MAX];
    rs_key(kmeta, sizeof kmeta, id, "meta");
    rs_key(kran, sizeof kran, id, "ran");
    const char *args[] = {kmeta, kran, with_ran ? "1" : "0"};
    redisReply *r = NULL;
    int rc = rr_eval(rs, rr_lua_info, 2, args, 3, &r);
    if (rc != 0) {
        goto out;
    }
    if (!rr_array(r, 2) || r->element[0]->type != REDIS_REPLY_ARRAY ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        rc = STORE_E_IO;
        goto out;
    }
    const redisReply *meta = r->element[0];
    if (meta->elements == 0 || !rs_owner_ok(meta, owner, owner_len)) {
        rc = STORE_E_NOT_FOUND;
        goto out;
    }
    rc = rs_info_from_meta(meta, id, rs_now_ms(rs), info);
    if (rc != STORE_E_NOT_FOUND) {
        rs_replicas_into(r->element[1], info);
    }
out:
    if (r != NULL) {
        freeReplyObject(r);
    }
    return rc;
}

int rs_batch_get(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                 struct store_info *out)
{
    return rr_lookup(rr_of(st), owner, owner_len, id, 1, out);
}

int rs_batch_list(struct store *st, const uint8_t *owner, size_t owner_len, int state,
                  const char *before, struct store_info *out, size_t max, size_t *n)
{
    struct rstore *rs = rr_of(st);
    *n = 0;
    if (owner_len > STORE_OWNER_MAX || (before != NULL && !store_id_valid(before))) {
        return STORE_E_INVALID;
    }
    char hex[RS_OWNER_HEX], key[RS_KEY_MAX], bound[STORE_ID_SIZE + 1];
    char sstate[16], swant[32], sscan[16], snow[32];
    rs_owner_hex(owner, owner_len, hex);
    snprintf(key, sizeof key, "batchd:by:%s", hex);
    snprintf(bound, sizeof bound, "%s%s", before != NULL ? "(" : "+", before != NULL ? before : "");
    int64_t now = rs_now_ms(rs);
    snprintf(sstate, sizeof sstate, "%d", state);
    snprintf(sscan, sizeof sscan, "%d", RR_LIST_SCAN);
    snprintf(snow, sizeof snow, "%lld", (long long)now);
    redisReply *r = NULL;
    int rc = 0;
    /* A page of ids per round trip, until MAX are found or the owner's ids run out: the
     * state filter may skip many, and so may those past their ttl. */
    while (*n < max) {
        snprintf(swant, sizeof swant, "%zu", max - *n);
        const char *args[] = {key, bound, sstate, swant, sscan, snow};
        rc = rr_eval(rs, rr_lua_list, 1, args, 6, &r);
        if (rc != 0) {
            goto out;
        }
        long long fetched = 0;
        if (!rr_array(r, 3) || r->element[0]->type != REDIS_REPLY_STRING ||
            rr_num(r->element[1], &fetched) != 0 || r->element[2]->type != REDIS_REPLY_ARRAY) {
            rc = STORE_E_IO;
            goto out;
        }
        const redisReply *found = r->element[2];
        for (size_t i = 0; i + 2 < found->elements && *n < max; i += 3) {
            const redisReply *rid = found->element[i], *meta = found->element[i + 1];
            if (rid->type != REDIS_REPLY_STRING || rid->len != STORE_ID_LEN ||
                !store_id_valid(rid->str) || meta->type != REDIS_REPLY_ARRAY ||
                !rs_owner_ok(meta, owner, owner_len)) {
                continue;
            }
            /* The script has filtered already; this skips what the clock moved past since. */
            if (rs_info_from_meta(meta, rid->str, now, &out[*n]) != 0) {
                continue;
            }
            rs_replicas_into(found->element[i + 2], &out[*n]);
            (*n)++;
        }
        const redisReply *last = r->element[0];
        if (fetched < RR_LIST_SCAN || last->len != STORE_ID_LEN) {
            break; /* the owner has no older ids */
        }
        snprintf(bound, sizeof bound, "(%.*s", (int)last->len, last->str);
        freeReplyObject(r);
        r = NULL;
    }
out:
    if (r != NULL) {
        freeReplyObject(r);
    }
    return rc;
}

/* Splits a res value "<seq> <ok> <line>" into its parts (LINE borrowed from V). 0 or -1. */
int rs_parse_row(const redisReply *v, uint64_t *seq, int *ok, const char **line, size_t *len)
{
    if (v->type != REDIS_REPLY_STRING) {
        return -1;
    }
    const char *p = v->str, *e = v->str + v->len;
    uint64_t s = 0;
    const char *d = p;
    while (p < e && *p >= '0' && *p <= '9' && s <= RR_SEQ_MAX) {
        s = s * 10 + (uint64_t)(*p++ - '0');
    }
    if (p == d || s > RR_SEQ_MAX || p == e || *p != ' ') {
        return -1;
    }
    p++;
    if (p == e || (*p != '0' && *p != '1')) {
        return -1;
    }
    *ok = *p++ == '1';
    if (p < e && *p != ' ') {
        return -1;
    }
    p += p < e; /* the space before the line ("<seq> <ok>" alone: an empty line) */
    *seq = s;
    *line = p;
    *len = (size_t)(e - p);
    return 0;
}

/* Hands the pair IDX, V of a script's reply to ROW (as sq_read.c's step_rows: *LAST and
 * *NEXT, either may be NULL, count the row even when ROW then stops). Returns 1 if it was a
 * row, 0 if V is missing (no result), -1 if the pair is not what the scripts return; *STOP
 * is set when ROW returns non-zero. */
static int rr_give(const redisReply *idx, const redisReply *v, store_row_fn *row, void *arg,
                   uint64_t *last, uint32_t *next, int *stop)
{
    long long i = 0;
    if (rr_num(idx, &i) != 0 || i < 0 || i > (long long)UINT32_MAX) {
        return -1;
    }
    if (v->type == REDIS_REPLY_NIL) {
        return 0;
    }
    uint64_t seq = 0;
    int ok = 0;
    const char *line = NULL;
    size_t len = 0;
    if (rs_parse_row(v, &seq, &ok, &line, &len) != 0) {
        return -1;
    }
    if (last != NULL) {
        *last = seq;
    }
    if (next != NULL) {
        *next = (uint32_t)i + 1;
    }
    if (row(arg, seq, (uint32_t)i, ok, line, len) != 0) {
        *stop = 1;
    }
    return 1;
}

int rs_results_read(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                    uint64_t after, size_t max, store_row_fn *row, void *arg, uint64_t *last)
{
    struct rstore *rs = rr_of(st);
    struct store_info info;
    *last = after;
    int rc = rr_lookup(rs, owner, owner_len, id, 0, &info);
    if (rc != 0) {
        return rc;
    }
    if (after > RR_SEQ_MAX) {
        return 0;
    }
    char korder[RS_KEY_MAX], kres[RS_KEY_MAX], sstart[32], sstop[32], sbytes[32];
    rs_key(korder, sizeof korder, id, "order");
    rs_key(kres, sizeof kres, id, "res");
    snprintf(sbytes, sizeof sbytes, "%u", RR_BYTES);
    redisReply *r = NULL;
    /* Element K of the order list is the index of seq K+1: seqs after AFTER start at K = AFTER. */
    uint64_t k = after;
    size_t left = max;
    int stop = 0;
    while (left > 0 && !stop) {
        size_t want = left < RR_PAGE ? left : RR_PAGE;
        snprintf(sstart, sizeof sstart, "%llu", (unsigned long long)k);
        snprintf(sstop, sizeof sstop, "%llu", (unsigned long long)(k + want - 1));
        const char *args[] = {korder, kres, sstart, sstop, sbytes};
        rc = rr_eval(rs, rr_lua_results, 2, args, 5, &r);
        if (rc != 0) {
            goto out;
        }
        long long nix = 0;
        if (!rr_array(r, 1) || rr_num(r->element[0], &nix) != 0 || nix < 0 || (size_t)nix > want ||
            (r->elements - 1) % 2 != 0 || (r->elements - 1) / 2 > (size_t)nix) {
            rc = STORE_E_IO;
            goto out;
        }
        size_t got = (r->elements - 1) / 2;
        for (size_t i = 0; i < got && !stop && left > 0; i++) {
            int g =
                rr_give(r->element[1 + 2 * i], r->element[2 + 2 * i], row, arg, last, NULL, &stop);
            if (g < 0) {
                rc = STORE_E_IO;
                goto out;
            }
            k++;
            left -= (size_t)g;
        }
        /* Fewer indexes than asked for, all looked at: the list ends here. */
        if (got == (size_t)nix && (size_t)nix < want) {
            stop = 1;
        }
        freeReplyObject(r);
        r = NULL;
    }
out:
    if (r != NULL) {
        freeReplyObject(r);
    }
    return rc;
}

int rs_results_by_index(struct store *st, const uint8_t *owner, size_t owner_len, const char *id,
                        uint32_t from, size_t max, store_row_fn *row, void *arg, uint32_t *next)
{
    struct rstore *rs = rr_of(st);
    struct store_info info;
    *next = from;
    int rc = rr_lookup(rs, owner, owner_len, id, 0, &info);
    if (rc != 0) {
        return rc;
    }
    char kres[RS_KEY_MAX], sfrom[32], send[32], swant[32], sscan[16], sbytes[32];
    rs_key(kres, sizeof kres, id, "res");
    snprintf(send, sizeof send, "%llu", (unsigned long long)info.njobs);
    snprintf(sscan, sizeof sscan, "%d", RR_SCAN);
    snprintf(sbytes, sizeof sbytes, "%u", RR_BYTES);
    redisReply *r = NULL;
    /* Indexes without a result are skipped, a window of RR_SCAN per round trip, until MAX
     * rows are given or the batch's jobs run out (as SQL's idx >= FROM ORDER BY idx LIMIT). */
    uint64_t i = from;
    size_t left = max;
    int stop = 0;
    while (left > 0 && !stop && i < info.njobs) {
        size_t want = left < RR_PAGE ? left : RR_PAGE;
        snprintf(sfrom, sizeof sfrom, "%llu", (unsigned long long)i);
        snprintf(swant, sizeof swant, "%zu", want);
        const char *args[] = {kres, sfrom, send, swant, sscan, sbytes};
        rc = rr_eval(rs, rr_lua_index, 1, args, 6, &r);
        if (rc != 0) {
            goto out;
        }
        long long end = 0;
        if (!rr_array(r, 1) || rr_num(r->element[0], &end) != 0 || end < 0 || (uint64_t)end <= i ||
            (r->elements - 1) % 2 != 0) {
            rc = STORE_E_IO;
            goto out;
        }
        size_t got = (r->elements - 1) / 2;
        for (size_t j = 0; j < got && !stop && left > 0; j++) {
            int g =
                rr_give(r->element[1 + 2 * j], r->element[2 + 2 * j], row, arg, NULL, next, &stop);
            if (g < 0) {
                rc = STORE_E_IO;
                goto out;
            }
            left -= (size_t)g;
        }
        i = (uint64_t)end;
        freeReplyObject(r);
        r = NULL;
    }
out:
    if (r != NULL) {
        freeReplyObject(r);
    }
    return rc;
}

/* Copies string reply V into *DATA (new: free(), a NUL past the end) and *LEN. */
static int rr_copy(const redisReply *v, void **data, size_t *len)
{
    char *buf = malloc(v->len + 1);
    if (buf == NULL) {
        return STORE_E_NOMEM;
    }
    if (v->len > 0) {
        memcpy(buf, v->str, v->len);
    }
    buf[v->len] = '\0';
    *data = buf;
    *len = v->len;
    return 0;
}

int rs_batch_blob(struct store *st, const char *id, int part, uint32_t index, void **data,
                  size_t *len)
{
    struct rstore *rs = rr_of(st);
    *data = NULL;
    *len = 0;
    if (part < STORE_PART_SPEC || part > STORE_PART_INPUT) {
        return STORE_E_INVALID;
    }
    if (id == NULL || !store_id_valid(id)) {
        return STORE_E_NOT_FOUND;
    }
    char key[RS_KEY_MAX];
    redisReply *r = NULL;
    const redisReply *v = NULL;
    int rc = 0;
    if (part == STORE_PART_SPEC) {
        rs_key(key, sizeof key, id, "spec");
        r = rs_syncf(rs, "GET %s", key);
    } else if (part == STORE_PART_INPUT) {
        rs_key(key, sizeof key, id, "in");
        r = rs_syncf(rs, "HGET %s %u", key, (unsigned)index);
    } else {
        rs_key(key, sizeof key, id, "meta");
        r = rs_syncf(rs, "HMGET %s state summary", key);
    }
    if (rr_bad(r)) {
        rc = STORE_E_IO;
        goto out;
    }
    v = r;
    if (part == STORE_PART_SUMMARY) {
        long long state = 0;
        if (!rr_array(r, 2)) {
            rc = STORE_E_IO;
            goto out;
        }
        /* No summary until it ends; none either once expired, whatever the meta kept. */
        v = r->element[1];
        if (rr_num(r->element[0], &state) != 0 || state == STORE_EXPIRED ||
            (v->type == REDIS_REPLY_STRING && v->len == 0)) {
            rc = STORE_E_NOT_FOUND;
            goto out;
        }
    }
    if (v->type == REDIS_REPLY_NIL) {
        rc = STORE_E_NOT_FOUND;
    } else if (v->type != REDIS_REPLY_STRING) {
        rc = STORE_E_IO;
    } else {
        rc = rr_copy(v, data, len);
    }
out:
    if (r != NULL) {
        freeReplyObject(r);
    }
    return rc;
}

int rs_unfinished(struct store *st, void (*fn)(void *arg, const char *id), void *arg)
{
    struct rstore *rs = rr_of(st);
    char key[RS_KEY_MAX];
    snprintf(key, sizeof key, "batchd:local:%s", rs->replica);
    const char *args[] = {key, rs->replica};
    redisReply *r = NULL;
    int rc = rr_eval(rs, rr_lua_unfinished, 1, args, 2, &r);
    if (rc != 0) {
        return rc;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_E_IO;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        char id[STORE_ID_SIZE];
        if (e->type != REDIS_REPLY_STRING || e->len != STORE_ID_LEN) {
            continue;
        }
        memcpy(id, e->str, STORE_ID_LEN);
        id[STORE_ID_LEN] = '\0';
        if (store_id_valid(id)) {
            fn(arg, id);
        }
    }
    freeReplyObject(r);
    return 0;
}

int rs_batch_counts(struct store *st, uint64_t out[STORE_NSTATES])
{
    struct rstore *rs = rr_of(st);
    memset(out, 0, STORE_NSTATES * sizeof out[0]);
    redisReply *r = rs_syncf(rs, "HGETALL batchd:states");
    if (rr_bad(r) || r->type != REDIS_REPLY_ARRAY) {
        if (r != NULL) {
            freeReplyObject(r);
        }
        return STORE_E_IO;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        long long state = -1, count = 0;
        if (rr_num(r->element[i], &state) != 0 || state < 0 || state >= STORE_NSTATES ||
            rr_num(r->element[i + 1], &count) != 0) {
            continue;
        }
        out[state] = count > 0 ? (uint64_t)count : 0;
    }
    freeReplyObject(r);
    return 0;
}
