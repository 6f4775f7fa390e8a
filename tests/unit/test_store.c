/* The store (store/store.h) on SQLite: every call, idempotency, exactly-once recording,
 * paging by seq, expiry, the size cap, owners, the refusals at start, and a benchmark of the
 * writer (insert rate, flush p99). The crash test is test_store_crash.c. */
#include "../../store/store.h"
#include "../check.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const uint8_t owner_a[32] = {1, 2, 3};
static const uint8_t owner_b[32] = {9, 9, 9};

static _Atomic int64_t fake_ms = 1700000000000;

static int64_t fake_now(void)
{
    return atomic_load(&fake_ms);
}

static void rmrf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", dir);
    }
}

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/test_store.XXXXXX";
    char *d = mkdtemp(tmpl);
    if (d == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    return strdup(d);
}

static uint64_t progress_seen;

static void on_progress(void *arg, const char *id, uint64_t seq)
{
    (void)arg;
    (void)id;
    progress_seen = seq;
}

static struct store *open_at(const char *dir, uint64_t max_bytes)
{
    struct store_config cfg = {
        .state_dir = dir,
        .max_bytes = max_bytes,
        .result_ttl_ms = 60000,
        .now_ms = fake_now,
        .on_progress = on_progress,
    };
    struct store *st = NULL;
    char err[512];
    int rc = store_open(&cfg, &st, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "store_open(%s): %s: %s\n", dir, store_err_name(rc), err);
    }
    CHECK_EQ_INT(rc, 0);
    return st;
}

struct made {
    int calls;
    int rc;
    char id[STORE_ID_SIZE];
    struct store_batch *sb;
};

static void on_made(void *arg, int rc, struct store_batch *sb, const char *id)
{
    struct made *m = arg;
    m->calls++;
    m->rc = rc;
    snprintf(m->id, sizeof m->id, "%s", id);
    m->sb = sb;
}

static struct made create(struct store *st, const uint8_t *owner, const char *key, char fp,
                          const char *spec, uint32_t njobs)
{
    struct made m = {0};
    struct store_new_batch nb = {
        .owner = owner,
        .owner_len = owner != NULL ? 32 : 0,
        .idem_key = key,
        .op = "sqrt",
        .request_id = "req-1",
        .spec = spec,
        .spec_len = strlen(spec),
        .njobs = njobs,
    };
    memset(nb.fingerprint, fp, sizeof nb.fingerprint);
    CHECK_EQ_INT(store_batch_create(st, &nb, on_made, &m), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(m.calls, 1);
    return m;
}

static void add(struct store_batch *sb, uint32_t idx)
{
    char line[64];
    int n = snprintf(line, sizeof line, "{\"index\":%u,\"result\":%u}", idx, idx * 2);
    CHECK_EQ_INT(store_result_add(sb, idx, idx % 3 != 0, line, (size_t)n), 0);
}

struct rows {
    uint64_t n;
    uint64_t first, last;
    int in_order;
    uint64_t prev;
    int lines_ok;
};

static int on_row(void *arg, uint64_t seq, uint32_t index, int ok, const void *line, size_t len)
{
    struct rows *r = arg;
    char want[64];
    int n = snprintf(want, sizeof want, "{\"index\":%u,\"result\":%u}", index, index * 2);
    if ((size_t)n != len || memcmp(want, line, len) != 0 || ok != (index % 3 != 0)) {
        r->lines_ok = 0;
    }
    if (r->n == 0) {
        r->first = seq;
    } else if (seq != r->prev + 1) {
        r->in_order = 0;
    }
    r->prev = seq;
    r->last = seq;
    r->n++;
    return 0;
}

static struct rows read_rows(struct store *st, const uint8_t *owner, const char *id, uint64_t after,
                             size_t max, int *rc)
{
    struct rows r = {.in_order = 1, .lines_ok = 1};
    uint64_t last = 0;
    *rc = store_results_read(st, owner, owner != NULL ? 32 : 0, id, after, max, on_row, &r, &last);
    CHECK_EQ_INT(last, r.n > 0 ? r.last : after);
    return r;
}

struct idlist {
    int n;
    char id[8][STORE_ID_SIZE];
};

static void collect_id(void *arg, const char *id)
{
    struct idlist *u = arg;
    if (u->n < 8) {
        snprintf(u->id[u->n], STORE_ID_SIZE, "%s", id);
    }
    u->n++;
}

static int on_count(void *arg, uint64_t seq, uint32_t index, int ok, const void *l, size_t len)
{
    (void)seq;
    (void)index;
    (void)ok;
    (void)l;
    (void)len;
    ((struct rows *)arg)->n++;
    return 0;
}

struct byidx {
    uint32_t n;
    int in_order; /* 1 until an index comes out of order */
    int started;
};

static int on_index(void *arg, uint64_t seq, uint32_t index, int ok, const void *line, size_t len)
{
    struct byidx *b = arg;
    char want[64];
    int n = snprintf(want, sizeof want, "{\"index\":%u,\"result\":%u}", index, index * 2);
    if (!b->started) {
        b->in_order = 1;
        b->started = 1;
    }
    if (index != b->n || seq == 0 || (size_t)n != len || memcmp(want, line, len) != 0 ||
        ok != (index % 3 != 0)) {
        b->in_order = 0;
    }
    b->n++;
    return 0;
}

/* ------------------------------------------------------------------------------------- */

static void test_ids(void)
{
    char a[STORE_ID_SIZE], b[STORE_ID_SIZE], c[STORE_ID_SIZE];
    store_id_make(1700000000000, a);
    store_id_make(1700000000000, b);
    store_id_make(1700000000001, c);
    CHECK_EQ_INT(strlen(a), 28);
    CHECK(strncmp(a, "b_", 2) == 0);
    CHECK(store_id_valid(a) && store_id_valid(b) && store_id_valid(c));
    CHECK(strcmp(a, b) < 0); /* same millisecond: still increasing */
    CHECK(strcmp(b, c) < 0);
    CHECK(strncmp(a, c, 2 + 9) == 0); /* the time part leads */
    CHECK(strncmp(a + 2, "01HF7YAT00", 10) == 0); /* 1700000000000 as a ULID's time */
    /* A new millisecond draws new random bytes, past the end of the pool they come from. */
    char prev[STORE_ID_SIZE];
    memcpy(prev, c, sizeof prev);
    for (int i = 2; i < 100; i++) {
        char d[STORE_ID_SIZE];
        store_id_make(1700000000000 + i, d);
        CHECK(store_id_valid(d) && strcmp(prev, d) < 0);
        CHECK(strcmp(prev + 12, d + 12) != 0);
        memcpy(prev, d, sizeof prev);
    }
    CHECK(!store_id_valid("b_0123"));
    CHECK(!store_id_valid("x_01HZZZZZZZZZZZZZZZZZZZZZZZ"));
    CHECK(!store_id_valid("b_01HZZZZZZZZZZZZZZZZZZZZZZU")); /* U is not Crockford */
    CHECK(!store_id_valid(NULL));
    CHECK_EQ_STR(store_err_name(STORE_E_KEY_REUSED), "key_reused");
    CHECK_EQ_STR(store_err_name(STORE_E_FULL), "full");
    CHECK_EQ_STR(store_err_name(STORE_REPLAYED), "replayed");
    CHECK_EQ_STR(store_state_name(STORE_CANCELLED), "cancelled");
}

static void test_pragmas(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    store_close(st);
    char path[600];
    snprintf(path, sizeof path, "%s/batchd.db", dir);
    sqlite3 *db = NULL;
    CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *s = NULL;
    const char *q[] = {"PRAGMA auto_vacuum", "PRAGMA journal_mode", "PRAGMA application_id"};
    const char *want[] = {"2", "wal", "1650553955"};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(sqlite3_prepare_v2(db, q[i], -1, &s, NULL), SQLITE_OK);
        CHECK_EQ_INT(sqlite3_step(s), SQLITE_ROW);
        CHECK_EQ_STR((const char *)sqlite3_column_text(s, 0), want[i]);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    rmrf(dir);
    free(dir);
}

static void test_create_get_blobs(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    static unsigned char big[3 * 1024 * 1024];
    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (unsigned char)(i * 7);
    }
    struct store_blob inputs[] = {{"abc", 3}, {"", 0}, {big, sizeof big}};
    struct made m = {0};
    struct store_new_batch nb = {
        .owner = owner_a,
        .owner_len = 32,
        .op = "blur",
        .request_id = "r42",
        .spec = "{\"op\":\"blur\"}",
        .spec_len = 13,
        .inputs = inputs,
        .ninputs = 3,
        .njobs = 3,
    };
    CHECK_EQ_INT(store_batch_create(st, &nb, on_made, &m), 0);
    CHECK_EQ_INT(m.calls, 0); /* only after the commit */
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(m.calls, 1);
    CHECK_EQ_INT(m.rc, STORE_OK);
    CHECK(m.sb != NULL && store_id_valid(m.id));
    CHECK_EQ_STR(store_batch_id(m.sb), m.id);

    struct store_info info;
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, m.id, &info), 0);
    CHECK_EQ_STR(info.id, m.id);
    CHECK_EQ_INT(info.state, STORE_QUEUED);
    CHECK_EQ_STR(info.op, "blur");
    CHECK_EQ_STR(info.request_id, "r42");
    CHECK_EQ_INT(info.njobs, 3);
    CHECK_EQ_INT(info.created_ms, fake_now());
    CHECK_EQ_INT(info.started_ms, 0);

    void *data = NULL;
    size_t len = 0;
    CHECK_EQ_INT(store_batch_blob(st, m.id, STORE_PART_SPEC, 0, &data, &len), 0);
    CHECK(len == 13 && memcmp(data, "{\"op\":\"blur\"}", 13) == 0);
    free(data);
    CHECK_EQ_INT(store_batch_blob(st, m.id, STORE_PART_INPUT, 0, &data, &len), 0);
    CHECK(len == 3 && memcmp(data, "abc", 3) == 0);
    free(data);
    CHECK_EQ_INT(store_batch_blob(st, m.id, STORE_PART_INPUT, 1, &data, &len), 0);
    CHECK_EQ_INT(len, 0);
    free(data);
    CHECK_EQ_INT(store_batch_blob(st, m.id, STORE_PART_INPUT, 2, &data, &len), 0);
    CHECK(len == sizeof big && memcmp(data, big, len) == 0);
    free(data);
    CHECK_EQ_INT(store_batch_blob(st, m.id, STORE_PART_INPUT, 3, &data, &len), STORE_E_NOT_FOUND);
    CHECK_EQ_INT(store_batch_blob(st, m.id, STORE_PART_SUMMARY, 0, &data, &len), STORE_E_NOT_FOUND);
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, "b_7ZZZZZZZZZZZZZZZZZZZZZZZZZ", &info),
                 STORE_E_NOT_FOUND);
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, "nonsense", &info), STORE_E_NOT_FOUND);

    struct store_stats stats;
    store_stats_get(st, &stats);
    CHECK_EQ_INT(stats.bytes, 13 + 3 + sizeof big);
    store_batch_release(m.sb);
    store_close(st);
    rmrf(dir);
    free(dir);
}

static void test_idempotency(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    struct made a = create(st, owner_a, "k1", 'x', "{}", 2);
    CHECK_EQ_INT(a.rc, STORE_OK);
    struct made again = create(st, owner_a, "k1", 'x', "{}", 2);
    CHECK_EQ_INT(again.rc, STORE_REPLAYED);
    CHECK_EQ_STR(again.id, a.id);
    CHECK(again.sb == a.sb); /* one handle per batch */
    struct made other = create(st, owner_a, "k1", 'y', "{}", 2);
    CHECK_EQ_INT(other.rc, STORE_E_KEY_REUSED);
    CHECK(other.sb == NULL);
    CHECK_EQ_STR(other.id, "");
    /* Keys are scoped to their owner. */
    struct made b = create(st, owner_b, "k1", 'y', "{}", 2);
    CHECK_EQ_INT(b.rc, STORE_OK);
    CHECK(strcmp(b.id, a.id) != 0);
    /* Two creations with one key queued before either commits: one batch. */
    struct made c1 = {0}, c2 = {0};
    struct store_new_batch nb = {.owner = owner_a,
                                 .owner_len = 32,
                                 .idem_key = "k2",
                                 .spec = "{}",
                                 .spec_len = 2,
                                 .njobs = 1};
    memset(nb.fingerprint, 'z', 32);
    CHECK_EQ_INT(store_batch_create(st, &nb, on_made, &c1), 0);
    CHECK_EQ_INT(store_batch_create(st, &nb, on_made, &c2), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(c1.rc, STORE_OK);
    CHECK_EQ_INT(c2.rc, STORE_REPLAYED);
    CHECK_EQ_STR(c1.id, c2.id);
    size_t n = 0;
    struct store_info list[10];
    CHECK_EQ_INT(store_batch_list(st, owner_a, 32, STORE_ANY_STATE, NULL, list, 10, &n), 0);
    CHECK_EQ_INT(n, 2);
    /* An ended batch replays too, without a handle: the caller reads its results. */
    CHECK_EQ_INT(store_batch_end(a.sb, STORE_DONE, "{}", 2), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    struct made late = create(st, owner_a, "k1", 'x', "{}", 2);
    CHECK_EQ_INT(late.rc, STORE_REPLAYED);
    CHECK_EQ_STR(late.id, a.id);
    CHECK(late.sb == NULL);
    store_batch_release(a.sb);
    store_batch_release(again.sb);
    store_batch_release(b.sb);
    store_batch_release(c1.sb);
    store_batch_release(c2.sb);
    store_close(st);
    rmrf(dir);
    free(dir);
}

static void test_exactly_once(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    struct made m = create(st, NULL, NULL, 0, "{}", 10);
    struct store_batch *sb = m.sb;
    add(sb, 3);
    CHECK_EQ_INT(store_result_add(sb, 3, 1, "x", 1), STORE_E_DUPLICATE); /* queued */
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(store_result_add(sb, 3, 1, "x", 1), STORE_E_DUPLICATE); /* committed */
    CHECK_EQ_INT(store_result_add(sb, 10, 1, "x", 1), STORE_E_INVALID);
    add(sb, 0);
    add(sb, 9);
    CHECK_EQ_INT(store_batch_next_missing(sb, 0), 1);
    CHECK_EQ_INT(store_batch_next_missing(sb, 3), 4);
    CHECK_EQ_INT(store_batch_next_missing(sb, 9), -1);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(store_batch_committed_seq(sb), 3);
    CHECK_EQ_INT(progress_seen, 3);
    /* Reopened after a restart: the recorded jobs are still refused, the rest accepted. */
    store_batch_release(sb);
    store_close(st);
    st = open_at(dir, 0);
    CHECK_EQ_INT(store_batch_open(st, m.id, &sb), 0);
    CHECK_EQ_INT(store_batch_committed_seq(sb), 3);
    CHECK_EQ_INT(store_result_add(sb, 0, 1, "x", 1), STORE_E_DUPLICATE);
    CHECK_EQ_INT(store_result_add(sb, 9, 1, "x", 1), STORE_E_DUPLICATE);
    struct store_batch *again = NULL;
    CHECK_EQ_INT(store_batch_open(st, m.id, &again), 0);
    CHECK(again == sb);
    store_batch_release(again);
    for (int64_t i = store_batch_next_missing(sb, 0); i >= 0;
         i = store_batch_next_missing(sb, (uint32_t)i + 1)) {
        add(sb, (uint32_t)i);
    }
    CHECK_EQ_INT(store_batch_end(sb, STORE_DONE, "{\"summary\":{}}", 14), 0);
    CHECK_EQ_INT(store_result_add(sb, 1, 1, "x", 1), STORE_E_ENDED);
    CHECK_EQ_INT(store_batch_end(sb, STORE_DONE, "{}", 2), STORE_E_ENDED);
    CHECK_EQ_INT(store_sync(st), 0);
    int rc = 0;
    struct rows r = read_rows(st, NULL, m.id, 0, 100, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(r.n, 10);
    CHECK(r.in_order && r.lines_ok && r.first == 1 && r.last == 10);
    struct store_info info;
    CHECK_EQ_INT(store_batch_get(st, NULL, 0, m.id, &info), 0);
    CHECK_EQ_INT(info.state, STORE_DONE);
    CHECK_EQ_INT(info.nok + info.nfailed, 10);
    CHECK_EQ_INT(info.nfailed, 4); /* 0, 3, 6, 9 */
    CHECK_EQ_INT(info.last_seq, 10);
    CHECK_EQ_INT(store_batch_open(st, m.id, &again), STORE_E_ENDED);
    /* The database's own guard, under the handles: a second row of a job is not written. */
    char path[600];
    snprintf(path, sizeof path, "%s/batchd.db", dir);
    sqlite3 *db = NULL;
    sqlite3_open(path, &db);
    CHECK(sqlite3_exec(db,
                       "INSERT INTO results (k, bno, idx, ok, line) SELECT k + 100, bno, idx,"
                       " ok, line FROM results LIMIT 1",
                       NULL, NULL, NULL) == SQLITE_CONSTRAINT);
    sqlite3_close(db);
    store_batch_release(sb);
    store_close(st);
    rmrf(dir);
    free(dir);
}

static void test_paging(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    struct made m = create(st, owner_a, NULL, 0, "{}", 2500);
    /* Recorded out of index order, as with order=completed: seq follows the recording. */
    for (uint32_t i = 0; i < 2500; i++) {
        add(m.sb, (i * 7) % 2500);
    }
    int rc = 0;
    struct rows r;
    CHECK_EQ_INT(store_sync(st), 0);
    uint64_t after = 0, total = 0;
    int pages = 0;
    for (;;) {
        r = read_rows(st, owner_a, m.id, after, 1000, &rc);
        CHECK_EQ_INT(rc, 0);
        if (r.n == 0) {
            break;
        }
        CHECK(r.in_order && r.lines_ok);
        CHECK_EQ_INT(r.first, after + 1);
        total += r.n;
        after = r.last;
        pages++;
    }
    CHECK_EQ_INT(total, 2500);
    CHECK_EQ_INT(pages, 3);
    r = read_rows(st, owner_a, m.id, 2499, 1000, &rc);
    CHECK_EQ_INT(r.n, 1);
    /* By index, for the JSON document: 0, 1, 2, ... whatever the recording order. */
    struct byidx b = {0};
    uint32_t next = 0;
    int pages_i = 0;
    do {
        uint32_t from = next;
        CHECK_EQ_INT(store_results_by_index(st, owner_a, 32, m.id, from, 700, on_index, &b, &next),
                     0);
        if (next == from) {
            break;
        }
        pages_i++;
    } while (pages_i < 10);
    CHECK_EQ_INT(b.n, 2500);
    CHECK(b.in_order);
    CHECK_EQ_INT(pages_i, 4);
    CHECK_EQ_INT(store_results_by_index(st, owner_b, 32, m.id, 0, 10, on_index, &b, &next),
                 STORE_E_NOT_FOUND);
    r = read_rows(st, owner_a, m.id, 1ull << 40, 1000, &rc);
    CHECK_EQ_INT(r.n, 0);
    store_batch_release(m.sb);
    store_close(st);
    rmrf(dir);
    free(dir);
}

static void test_status_list_owners(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    struct made a[5];
    for (int i = 0; i < 5; i++) {
        atomic_fetch_add(&fake_ms, 1);
        a[i] = create(st, i < 4 ? owner_a : owner_b, NULL, 0, "{}", 3);
    }
    CHECK_EQ_INT(store_batch_start(a[1].sb), 0);
    add(a[1].sb, 0);
    add(a[1].sb, 1);
    CHECK_EQ_INT(store_batch_cancel(a[2].sb), 0);
    CHECK_EQ_INT(store_batch_end(a[2].sb, STORE_CANCELLED, "{}", 2), 0);
    CHECK_EQ_INT(store_batch_start(a[2].sb), STORE_E_ENDED);
    CHECK_EQ_INT(store_sync(st), 0);

    struct store_info info;
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, a[1].id, &info), 0);
    CHECK_EQ_INT(info.state, STORE_RUNNING);
    CHECK_EQ_INT(info.started_ms, fake_now());
    CHECK_EQ_INT(info.nok, 1);
    CHECK_EQ_INT(info.nfailed, 1);
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, a[2].id, &info), 0);
    CHECK_EQ_INT(info.state, STORE_CANCELLED);
    CHECK_EQ_INT(info.cancel_requested, 1);
    CHECK_EQ_INT(info.expires_ms, info.finished_ms + 60000);

    /* Owners: another token sees nothing of these. */
    CHECK_EQ_INT(store_batch_get(st, owner_b, 32, a[1].id, &info), STORE_E_NOT_FOUND);
    CHECK_EQ_INT(store_batch_get(st, NULL, 0, a[1].id, &info), STORE_E_NOT_FOUND);
    int rc = 0;
    read_rows(st, owner_b, a[1].id, 0, 10, &rc);
    CHECK_EQ_INT(rc, STORE_E_NOT_FOUND);
    struct made f = {0};
    CHECK_EQ_INT(store_batch_forget(st, owner_b, 32, a[2].id, on_made, &f), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(f.rc, STORE_E_NOT_FOUND);

    struct store_info list[10];
    size_t n = 0;
    CHECK_EQ_INT(store_batch_list(st, owner_a, 32, STORE_ANY_STATE, NULL, list, 10, &n), 0);
    CHECK_EQ_INT(n, 4);
    CHECK_EQ_STR(list[0].id, a[3].id); /* newest first */
    CHECK_EQ_STR(list[3].id, a[0].id);
    CHECK_EQ_INT(store_batch_list(st, owner_a, 32, STORE_ANY_STATE, NULL, list, 2, &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(store_batch_list(st, owner_a, 32, STORE_ANY_STATE, list[1].id, list, 10, &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_STR(list[0].id, a[1].id);
    CHECK_EQ_INT(store_batch_list(st, owner_a, 32, STORE_RUNNING, NULL, list, 10, &n), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(list[0].id, a[1].id);
    CHECK_EQ_INT(store_batch_list(st, owner_b, 32, STORE_ANY_STATE, NULL, list, 10, &n), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(list[0].id, a[4].id);
    CHECK_EQ_INT(store_batch_list(st, NULL, 0, STORE_ANY_STATE, NULL, list, 10, &n), 0);
    CHECK_EQ_INT(n, 0);

    /* Unfinished, oldest first: all but the cancelled one. */
    store_close(st); /* frees the handles */
    st = open_at(dir, 0);
    struct idlist u = {0};
    CHECK_EQ_INT(store_unfinished(st, collect_id, &u), 0);
    CHECK_EQ_INT(u.n, 4);
    CHECK_EQ_STR(u.id[0], a[0].id);
    CHECK_EQ_STR(u.id[1], a[1].id);
    CHECK_EQ_STR(u.id[2], a[3].id);
    struct store_batch *sb = NULL;
    CHECK_EQ_INT(store_batch_open(st, a[1].id, &sb), 0);
    CHECK_EQ_INT(store_batch_next_missing(sb, 0), 2);
    store_batch_release(sb);
    store_close(st);
    rmrf(dir);
    free(dir);
}

static void test_forget_expire_cap(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 2000);
    char spec[801];
    memset(spec, 's', 800);
    spec[800] = '\0';
    struct made a = create(st, owner_a, "ka", 'a', spec, 4);
    CHECK_EQ_INT(a.rc, STORE_OK);
    struct made b = create(st, owner_a, NULL, 0, spec, 4);
    CHECK_EQ_INT(b.rc, STORE_OK);
    struct made c = create(st, owner_a, NULL, 0, spec, 4);
    CHECK_EQ_INT(c.rc, STORE_E_FULL);
    CHECK(c.sb == NULL);
    /* Results of accepted batches are never refused, past the cap too. */
    for (uint32_t i = 0; i < 4; i++) {
        add(a.sb, i);
        add(b.sb, i);
    }
    CHECK_EQ_INT(store_sync(st), 0);
    struct store_stats stats;
    store_stats_get(st, &stats);
    CHECK(stats.bytes > 1600);

    struct made f = {0};
    CHECK_EQ_INT(store_batch_forget(st, owner_a, 32, b.id, on_made, &f), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(f.rc, STORE_E_NOT_FINISHED);
    CHECK_EQ_INT(store_batch_end(b.sb, STORE_DONE, "{}", 2), 0);
    memset(&f, 0, sizeof f);
    CHECK_EQ_INT(store_batch_forget(st, owner_a, 32, b.id, on_made, &f), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(f.rc, STORE_OK);
    struct store_info info;
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, b.id, &info), STORE_E_NOT_FOUND);
    c = create(st, owner_a, NULL, 0, spec, 4);
    CHECK_EQ_INT(c.rc, STORE_OK); /* room again */

    /* Expiry: 410 from the ttl on, whether the timer ran or not; then the rows go. */
    CHECK_EQ_INT(store_batch_end(a.sb, STORE_DONE, "{\"summary\":1}", 13), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, a.id, &info), 0);
    int64_t t_end = fake_now();
    atomic_store(&fake_ms, t_end + 60000);
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, a.id, &info), STORE_E_EXPIRED);
    CHECK_EQ_INT(info.state, STORE_EXPIRED);
    size_t n = 0;
    struct store_info list[4];
    CHECK_EQ_INT(store_batch_list(st, owner_a, 32, STORE_ANY_STATE, NULL, list, 4, &n), 0);
    CHECK_EQ_INT(n, 1); /* c only */
    CHECK_EQ_INT(store_expire(st, fake_now()), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, a.id, &info), STORE_E_EXPIRED);
    int rc = 0;
    read_rows(st, owner_a, a.id, 0, 10, &rc);
    CHECK_EQ_INT(rc, STORE_E_EXPIRED);
    void *data = NULL;
    size_t len = 0;
    CHECK_EQ_INT(store_batch_blob(st, a.id, STORE_PART_SPEC, 0, &data, &len), STORE_E_NOT_FOUND);
    /* Its key is free again once the batch expired. */
    struct made k = create(st, owner_a, "ka", 'b', "{}", 1);
    CHECK_EQ_INT(k.rc, STORE_OK);
    store_stats_get(st, &stats);
    CHECK_EQ_INT(stats.bytes, 800 + 2); /* c's spec and k's */
    /* The tombstone goes another ttl later: 404. */
    atomic_store(&fake_ms, t_end + 120001);
    CHECK_EQ_INT(store_expire(st, fake_now()), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(store_batch_get(st, owner_a, 32, a.id, &info), STORE_E_NOT_FOUND);
    store_batch_release(a.sb);
    store_batch_release(b.sb);
    store_batch_release(c.sb);
    store_batch_release(k.sb);
    store_close(st);
    /* The counters survive a restart. */
    st = open_at(dir, 2000);
    store_stats_get(st, &stats);
    CHECK_EQ_INT(stats.bytes, 802);
    store_close(st);
    rmrf(dir);
    free(dir);
}

/* Batches counted by state as they are created, started, ended and expired (the metrics'
 * batchd_stored_batches); the commit figures add up. */
static void test_counts_by_state(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    uint64_t n[STORE_NSTATES];
    CHECK_EQ_INT(store_batch_counts(st, n), 0);
    for (int i = 0; i < STORE_NSTATES; i++) {
        CHECK_EQ_INT(n[i], 0);
    }
    struct made a = create(st, owner_a, NULL, 0, "{}", 2);
    struct made b = create(st, owner_a, NULL, 0, "{}", 2);
    struct made c = create(st, owner_b, NULL, 0, "{}", 2);
    struct made d = create(st, owner_b, NULL, 0, "{}", 2);
    CHECK_EQ_INT(store_batch_counts(st, n), 0);
    CHECK_EQ_INT(n[STORE_QUEUED], 4);
    CHECK_EQ_INT(store_batch_start(b.sb), 0);
    CHECK_EQ_INT(store_batch_start(c.sb), 0);
    CHECK_EQ_INT(store_batch_start(d.sb), 0);
    add(c.sb, 0);
    add(c.sb, 1);
    CHECK_EQ_INT(store_batch_end(c.sb, STORE_DONE, "{}", 2), 0);
    CHECK_EQ_INT(store_batch_cancel(d.sb), 0);
    CHECK_EQ_INT(store_batch_end(d.sb, STORE_CANCELLED, "{}", 2), 0);
    /* Only what is committed counts. */
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(store_batch_counts(st, n), 0);
    CHECK_EQ_INT(n[STORE_QUEUED], 1);
    CHECK_EQ_INT(n[STORE_RUNNING], 1);
    CHECK_EQ_INT(n[STORE_DONE], 1);
    CHECK_EQ_INT(n[STORE_CANCELLED], 1);
    CHECK_EQ_INT(n[STORE_EXPIRED], 0);
    atomic_store(&fake_ms, fake_now() + 60000);
    CHECK_EQ_INT(store_expire(st, fake_now()), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    CHECK_EQ_INT(store_batch_counts(st, n), 0);
    CHECK_EQ_INT(n[STORE_DONE] + n[STORE_CANCELLED], 0);
    CHECK_EQ_INT(n[STORE_EXPIRED], 2);
    CHECK_EQ_INT(n[STORE_QUEUED] + n[STORE_RUNNING], 2);
    struct store_stats stats;
    store_stats_get(st, &stats);
    CHECK_EQ_INT(stats.rows, 2);
    CHECK_EQ_INT(stats.write_error, 0);
    CHECK(stats.flushes >= 1);
    CHECK(stats.flush_total_ms > 0 && stats.flush_total_ms >= stats.flush_max_ms);
    /* An expiry tick with nothing due writes nothing: it is no commit in the figures. */
    uint64_t commits = stats.flushes;
    CHECK_EQ_INT(store_expire(st, fake_now()), 0);
    CHECK_EQ_INT(store_sync(st), 0);
    store_stats_get(st, &stats);
    CHECK_EQ_INT(stats.flushes, commits);
    store_batch_release(a.sb);
    store_batch_release(b.sb);
    store_batch_release(c.sb);
    store_batch_release(d.sb);
    store_close(st);
    /* The counts are the database's: the same after a restart. */
    st = open_at(dir, 0);
    CHECK_EQ_INT(store_batch_counts(st, n), 0);
    CHECK_EQ_INT(n[STORE_QUEUED], 1);
    CHECK_EQ_INT(n[STORE_RUNNING], 1);
    CHECK_EQ_INT(n[STORE_EXPIRED], 2);
    store_close(st);
    rmrf(dir);
    free(dir);
}

/* A batch forgotten in the same transaction as its last results, and a batch created right
 * after it: the new one starts with its own counters (the rowid of a deleted batch was once
 * given again, and the old batch's counts landed on the new row), the bytes add up. */
static void test_forget_then_create(void)
{
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    for (int round = 0; round < 30; round++) {
        struct made a = create(st, NULL, NULL, 0, "{}", 50);
        for (uint32_t i = 0; i < 50; i++) {
            add(a.sb, i);
        }
        /* All queued at once, so that the writer mostly takes them in one transaction. */
        struct made f = {0}, b = {0};
        struct store_new_batch nb = {.spec = "{}", .spec_len = 2, .njobs = 5};
        CHECK_EQ_INT(store_batch_end(a.sb, STORE_DONE, "{}", 2), 0);
        CHECK_EQ_INT(store_batch_forget(st, NULL, 0, a.id, on_made, &f), 0);
        CHECK_EQ_INT(store_batch_create(st, &nb, on_made, &b), 0);
        CHECK_EQ_INT(store_sync(st), 0);
        CHECK_EQ_INT(f.rc, STORE_OK);
        CHECK_EQ_INT(b.rc, STORE_OK);
        struct store_info info;
        CHECK_EQ_INT(store_batch_get(st, NULL, 0, b.id, &info), 0);
        CHECK_EQ_INT(info.nok + info.nfailed, 0);
        CHECK_EQ_INT(info.last_seq, 0);
        CHECK_EQ_INT(store_batch_end(b.sb, STORE_DONE, "{}", 2), 0);
        CHECK_EQ_INT(store_batch_forget(st, NULL, 0, b.id, on_made, &f), 0);
        CHECK_EQ_INT(store_sync(st), 0);
        struct store_stats stats;
        store_stats_get(st, &stats);
        CHECK_EQ_INT(stats.bytes, 0);
        store_batch_release(a.sb);
        store_batch_release(b.sb);
    }
    store_close(st);
    rmrf(dir);
    free(dir);
}

/* ------------------------------------------------------------------------------------- */
/* refusals at start */

static int open_rc(const char *dir, char *err, size_t errlen)
{
    struct store_config cfg = {.state_dir = dir, .now_ms = fake_now};
    struct store *st = NULL;
    int rc = store_open(&cfg, &st, err, errlen);
    store_close(st);
    return rc;
}

static void write_file(const char *path, const void *data, size_t len, off_t at)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, data, len, at) == (ssize_t)len);
    close(fd);
}

static void test_refuse_corrupt(void)
{
    char err[512];
    char *dir = tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/batchd.db", dir);
    /* Garbage where the database should be. */
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) {
        junk[i] = (char)(i * 31 + 7);
    }
    write_file(path, junk, sizeof junk, 0);
    CHECK_EQ_INT(open_rc(dir, err, sizeof err), STORE_E_CORRUPT);
    CHECK(strstr(err, "not a batchd store") != NULL && strstr(err, path) != NULL);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size == (off_t)sizeof junk); /* left as it was */
    unlink(path);

    /* Someone else's SQLite database. */
    sqlite3 *db = NULL;
    sqlite3_open(path, &db);
    sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK_EQ_INT(open_rc(dir, err, sizeof err), STORE_E_CORRUPT);
    CHECK(strstr(err, "not a batchd store") != NULL);
    unlink(path);

    /* Ours, with pages past the header overwritten. */
    struct store *st = open_at(dir, 0);
    for (int i = 0; i < 20; i++) {
        struct made m = create(st, NULL, NULL, 0, "{}", 200);
        for (uint32_t j = 0; j < 200; j++) {
            add(m.sb, j);
        }
        store_batch_end(m.sb, STORE_DONE, "{}", 2);
        store_batch_release(m.sb);
    }
    store_close(st); /* checkpointed: the rows are in the main file */
    CHECK(stat(path, &sb) == 0 && sb.st_size > 8 * 4096);
    write_file(path, junk, sizeof junk, 4 * 4096);
    CHECK_EQ_INT(open_rc(dir, err, sizeof err), STORE_E_CORRUPT);
    CHECK(strstr(err, "damaged") != NULL);
    rmrf(dir);
    free(dir);
}

static void test_refuse_unwritable(void)
{
    char err[512];
    char *dir = tmpdir();
    char path[600];
    /* The state dir is a file. */
    snprintf(path, sizeof path, "%s/file", dir);
    write_file(path, "x", 1, 0);
    CHECK_EQ_INT(open_rc(path, err, sizeof err), STORE_E_UNWRITABLE);
    CHECK(strstr(err, path) != NULL);
    /* Below a file: cannot be made. */
    snprintf(path, sizeof path, "%s/file/sub", dir);
    CHECK_EQ_INT(open_rc(path, err, sizeof err), STORE_E_UNWRITABLE);
    CHECK(strstr(err, "cannot be created") != NULL);
    /* A directory this user may not write (root writes anywhere: the child drops to nobody). */
    snprintf(path, sizeof path, "%s/ro", dir);
    chmod(dir, 0755);
    mkdir(path, 0755);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (getuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) {
            _exit(3);
        }
        chmod(path, 0555); /* as the owner when not root */
        int rc = open_rc(path, err, sizeof err);
        if (rc != STORE_E_UNWRITABLE || strstr(err, "not writable") == NULL) {
            fprintf(stderr, "  unwritable: %s: %s\n", store_err_name(rc), err);
            _exit(1);
        }
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* A second process on the same state dir. */
    snprintf(path, sizeof path, "%s/busy", dir);
    struct store *st = open_at(path, 0);
    CHECK_EQ_INT(open_rc(path, err, sizeof err), STORE_E_BUSY);
    CHECK(strstr(err, "in use") != NULL);
    store_close(st);
    CHECK_EQ_INT(open_rc(path, err, sizeof err), 0);
    rmrf(dir);
    free(dir);
}

static void test_refuse_full(void)
{
    char err[512];
    char *dir = tmpdir();
    char path[600];
    /* A tiny tmpfs when this process may mount one (root). */
    snprintf(path, sizeof path, "%s/tiny", dir);
    mkdir(path, 0700);
    if (mount("tmpfs", path, "tmpfs", 0, "size=1m") == 0) {
        CHECK_EQ_INT(open_rc(path, err, sizeof err), STORE_E_FULL);
        CHECK(strstr(err, "full") != NULL);
        printf("  full: tiny tmpfs: %s\n", err);
        umount(path);
    } else {
        printf("  full: no tmpfs (%s), RLIMIT_FSIZE only\n", strerror(errno));
    }
    /* A file size limit, in a child: writes fail with EFBIG. */
    snprintf(path, sizeof path, "%s/fsize", dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 2048, .rlim_max = 2048};
        setrlimit(RLIMIT_FSIZE, &rl);
        int rc = open_rc(path, err, sizeof err);
        fprintf(stderr, "  full: RLIMIT_FSIZE: %s: %s\n", store_err_name(rc), err);
        _exit(rc == STORE_E_FULL ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    rmrf(dir);
    free(dir);
}

static atomic_int errors_seen;
static atomic_int last_error_rc;

static void on_error(void *arg, int rc, const char *message)
{
    (void)arg;
    (void)message;
    errors_seen++; /* the writer thread: the test reads it after store_sync */
    last_error_rc = rc;
}

/* The disk fills up while the store runs: a creation fails (507), results wait in memory
 * and are retried, and once there is room again they all commit, each once. */
static void test_full_at_runtime(void)
{
    char *dir = tmpdir();
    char path[600], filler[700];
    snprintf(path, sizeof path, "%s/fs", dir);
    mkdir(path, 0700);
    if (mount("tmpfs", path, "tmpfs", 0, "size=12m") != 0) {
        printf("  skipped: cannot mount a tmpfs (%s)\n", strerror(errno));
        rmrf(dir);
        free(dir);
        return;
    }
    struct store_config cfg = {.state_dir = path, .now_ms = fake_now, .on_error = on_error};
    struct store *st = NULL;
    char err[512];
    CHECK_EQ_INT(store_open(&cfg, &st, err, sizeof err), 0);
    struct made a = create(st, NULL, NULL, 0, "{}", 2000);
    CHECK_EQ_INT(a.rc, STORE_OK);
    /* Fill what is left of the file system. */
    snprintf(filler, sizeof filler, "%s/filler", path);
    int fd = open(filler, O_WRONLY | O_CREAT, 0600);
    static char chunk[65536];
    while (write(fd, chunk, sizeof chunk) > 0) {
    }
    while (write(fd, chunk, 512) > 0) {
    }
    close(fd);
    for (uint32_t i = 0; i < 2000; i++) {
        add(a.sb, i);
    }
    CHECK(store_sync(st) != 0);
    /* on_error runs on the writer thread, just after store_sync has seen the failure. */
    for (int i = 0; i < 500 && atomic_load(&errors_seen) == 0; i++) {
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    CHECK(errors_seen > 0);
    CHECK_EQ_INT(last_error_rc, STORE_E_FULL);
    struct store_stats stats;
    store_stats_get(st, &stats);
    CHECK(stats.pending_rows > 0); /* kept, not dropped */
    CHECK_EQ_INT(stats.write_error, STORE_E_FULL); /* /readyz turns 503 */
    static unsigned char big[256 * 1024];
    struct store_blob in = {big, sizeof big};
    struct made b = {0};
    struct store_new_batch nb = {
        .spec = "{}", .spec_len = 2, .inputs = &in, .ninputs = 1, .njobs = 1};
    CHECK_EQ_INT(store_batch_create(st, &nb, on_made, &b), 0);
    while (b.calls == 0) {
        store_sync(st);
    }
    CHECK_EQ_INT(b.rc, STORE_E_FULL);
    CHECK(b.sb == NULL);
    /* Room again: the waiting results commit, once each. */
    unlink(filler);
    int tries = 0;
    while (store_sync(st) != 0 && tries++ < 50) {
    }
    store_stats_get(st, &stats);
    CHECK_EQ_INT(stats.pending_rows, 0);
    CHECK_EQ_INT(stats.write_error, 0); /* a commit went through: writable again */
    int rc = 0;
    struct rows r = read_rows(st, NULL, a.id, 0, 10000, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(r.n, 2000);
    CHECK(r.in_order && r.lines_ok && r.first == 1 && r.last == 2000);
    store_batch_release(a.sb);
    store_close(st);
    umount(path);
    rmrf(dir);
    free(dir);
}

/* ------------------------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The writer under load: the loop's cost per result (enqueue), the commit rate, and the
 * commit (flush) times. Printed for the report; checked only loosely. */
static void test_bench(void)
{
#if defined(__SANITIZE_ADDRESS__)
    const uint32_t n = 100000;
#else
    const uint32_t n = 500000;
#endif
    char *dir = tmpdir();
    struct store *st = open_at(dir, 0);
    struct made m = create(st, NULL, NULL, 0, "{}", n);
    char line[64];
    int64_t t0 = now_ns(), worst_add = 0;
    for (uint32_t i = 0; i < n; i++) {
        int len = snprintf(line, sizeof line, "{\"index\":%u,\"result\":%u.5}", i, i);
        int64_t a = now_ns();
        store_result_add(m.sb, i, 1, line, (size_t)len);
        int64_t d = now_ns() - a;
        if (d > worst_add) {
            worst_add = d;
        }
        if ((i & 1023) == 0) {
            store_dispatch(st);
        }
    }
    int64_t t1 = now_ns();
    /* The same loop without the store, for scale: on a loaded machine the thread itself is
     * descheduled for ms now and then, store or not. */
    int64_t worst_idle = 0;
    for (uint32_t i = 0; i < n; i++) {
        int64_t a = now_ns();
        int len = snprintf(line, sizeof line, "{\"index\":%u,\"result\":%u.5}", i, i);
        CHECK(len > 0 || i == 0);
        int64_t d = now_ns() - a;
        if (d > worst_idle) {
            worst_idle = d;
        }
    }
    CHECK_EQ_INT(store_sync(st), 0);
    int64_t t2 = now_ns();
    struct store_stats s;
    store_stats_get(st, &s);
    CHECK_EQ_INT(s.rows, n);
    double secs = (double)(t2 - t0) / 1e9;
    printf("  bench: the same loop without the store: worst step %.2f ms\n",
           (double)worst_idle / 1e6);
    printf("  bench: %u results of ~32 B: queued in %.0f ms (%.0f ns each, worst %.2f ms), "
           "committed at %.0f rows/s; %llu commits, flush p50 %.2f ms p99 %.2f ms max %.2f ms, "
           "%llu checkpoints\n",
           n, (double)(t1 - t0) / 1e6, (double)(t1 - t0) / n, (double)worst_add / 1e6, n / secs,
           (unsigned long long)s.flushes, store_stats_quantile_ms(&s, 0.5),
           store_stats_quantile_ms(&s, 0.99), s.flush_max_ms, (unsigned long long)s.checkpoints);
    CHECK(s.flushes >= n / 4000);
    /* Reading back, one page at a time. */
    int64_t t3 = now_ns();
    uint64_t after = 0, total = 0;
    for (;;) {
        int rc = 0;
        struct rows r = {.in_order = 1, .lines_ok = 1};
        uint64_t last = 0;
        rc = store_results_read(st, NULL, 0, m.id, after, 10000, on_count, &r, &last);
        CHECK_EQ_INT(rc, 0);
        if (last == after) {
            break;
        }
        total += r.n;
        after = last;
    }
    CHECK_EQ_INT(total, n);
    printf("  bench: read back at %.0f rows/s in pages of 10,000\n",
           (double)n / ((double)(now_ns() - t3) / 1e9));
    store_batch_release(m.sb);
    store_close(st);

    /* At a pace a server sees (results arriving over time, ~50k/s): commits per flush_ms. */
    st = open_at(dir, 0);
    const uint32_t paced = n / 5;
    m = create(st, NULL, NULL, 0, "{}", paced);
    t0 = now_ns();
    for (uint32_t i = 0; i < paced; i++) {
        int len = snprintf(line, sizeof line, "{\"index\":%u,\"result\":%u.5}", i, i);
        store_result_add(m.sb, i, 1, line, (size_t)len);
        if ((i & 255) == 255) {
            store_dispatch(st);
            while (now_ns() - t0 < (int64_t)i * 20000) {
                struct timespec pause = {0, 1000000};
                nanosleep(&pause, NULL);
            }
        }
    }
    CHECK_EQ_INT(store_sync(st), 0);
    store_stats_get(st, &s);
    CHECK_EQ_INT(s.rows, paced);
    printf("  bench: %u results paced at 50k/s: %llu commits, flush p50 %.2f ms p99 %.2f ms "
           "max %.2f ms\n",
           paced, (unsigned long long)s.flushes, store_stats_quantile_ms(&s, 0.5),
           store_stats_quantile_ms(&s, 0.99), s.flush_max_ms);
    store_batch_release(m.sb);
    store_close(st);
    rmrf(dir);
    free(dir);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"ids", test_ids},
    {"pragmas", test_pragmas},
    {"create_get_blobs", test_create_get_blobs},
    {"idempotency", test_idempotency},
    {"exactly_once", test_exactly_once},
    {"paging", test_paging},
    {"status_list_owners", test_status_list_owners},
    {"forget_expire_cap", test_forget_expire_cap},
    {"forget_then_create", test_forget_then_create},
    {"counts_by_state", test_counts_by_state},
    {"refuse_corrupt", test_refuse_corrupt},
    {"refuse_unwritable", test_refuse_unwritable},
    {"refuse_full", test_refuse_full},
    {"full_at_runtime", test_full_at_runtime},
    {"bench", test_bench},
};
/* clang-format on */

CHECK_MAIN("test_store", cases)
