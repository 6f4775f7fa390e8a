/* The store survives SIGKILL at any moment: a child process creates batches and records
 * their results through the store (and, on each start, carries on the batches it finds
 * unfinished), and tells the parent on a pipe what the store confirmed (a batch accepted, a
 * batch's results committed up to a seq). The parent kills it at random moments (at least
 * 50 times), reopens the state dir and checks: no accepted batch lost, no committed result
 * lost, no job recorded twice, every result line intact, the jobs the store says are missing
 * are exactly those without a result, and integrity_check is ok. A last child finishes
 * everything; then every job of every batch has exactly one result. */
#include "../../store/store.h"
#include "../check.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCHES 20000
#define MIN_KILLS 50
#define TIME_BUDGET_S 20

/* ------------------------------------------------------------------------------------- */
/* the child: a server's use of the store, reduced to its writes */

static int child_pipe = -1;

static void tell(const char *fmt, const char *id, uint64_t n)
{
    char line[128];
    int len = snprintf(line, sizeof line, fmt, id, (unsigned long long)n);
    /* Shorter than PIPE_BUF: one write is one whole line for the parent. */
    if (write(child_pipe, line, (size_t)len) != len) {
        _exit(4);
    }
}

static void on_progress(void *arg, const char *id, uint64_t seq)
{
    (void)arg;
    tell("C %s %llu\n", id, seq);
}

static int line_of(uint32_t idx, char *buf, size_t cap)
{
    return snprintf(buf, cap, "{\"index\":%u,\"result\":%u}", idx, idx * 3 + 1);
}

static int ok_of(uint32_t idx)
{
    return idx % 5 != 0;
}

struct made {
    int calls, rc;
    char id[STORE_ID_SIZE];
    struct store_batch *sb;
};

static void on_made(void *arg, int rc, struct store_batch *sb, const char *id)
{
    struct made *m = arg;
    m->calls++;
    m->rc = rc;
    m->sb = sb;
    snprintf(m->id, sizeof m->id, "%s", id);
}

/* Waits for the store's outcomes as a loop would: poll its fd, then dispatch. */
static void pump(struct store *st, int ms)
{
    struct pollfd p = {.fd = store_fd(st), .events = POLLIN};
    if (poll(&p, 1, ms) > 0) {
        store_dispatch(st);
    }
}

static void record_all(struct store *st, struct store_batch *sb, unsigned *seed, int cancelled)
{
    char line[64];
    int64_t i = store_batch_next_missing(sb, 0);
    while (i >= 0) {
        int len = line_of((uint32_t)i, line, sizeof line);
        int ok = cancelled ? 0 : ok_of((uint32_t)i);
        if (store_result_add(sb, (uint32_t)i, ok, line, (size_t)len) != 0) {
            _exit(5);
        }
        if (store_result_add(sb, (uint32_t)i, ok, line, (size_t)len) != STORE_E_DUPLICATE) {
            _exit(6);
        }
        if (rand_r(seed) % 16 == 0) {
            pump(st, 0);
        }
        i = store_batch_next_missing(sb, (uint32_t)i + 1);
    }
}

static void resume(void *arg, const char *id)
{
    struct store *st = arg;
    struct store_batch *sb = NULL;
    struct store_info info;
    unsigned seed = (unsigned)getpid();
    if (store_batch_get(st, NULL, 0, id, &info) != 0 || store_batch_open(st, id, &sb) != 0) {
        _exit(7);
    }
    record_all(st, sb, &seed, info.cancel_requested);
    store_batch_end(sb, info.cancel_requested ? STORE_CANCELLED : STORE_DONE, "{\"summary\":1}",
                    13);
    store_batch_release(sb);
}

static void child_main(const char *dir, int fd, unsigned seed, int finish)
{
    child_pipe = fd;
    struct store_config cfg = {
        .state_dir = dir,
        .result_ttl_ms = 3600000,
        .flush_rows = 20 + rand_r(&seed) % 200,
        .flush_ms = 1 + rand_r(&seed) % 8,
        .on_progress = on_progress,
    };
    struct store *st = NULL;
    char err[512];
    int rc = store_open(&cfg, &st, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "child: store_open: %s\n", err);
        _exit(3);
    }
    /* Carry on what the last run left: exactly the jobs without a result. */
    if (store_unfinished(st, resume, st) != 0) {
        _exit(8);
    }
    char prev_key[64] = "";
    uint8_t prev_fp[32];
    char prev_id[STORE_ID_SIZE] = "";
    for (int n = 0; !finish || n < 3; n++) {
        struct made m = {0};
        char key[64];
        snprintf(key, sizeof key, "k-%d-%d", (int)getpid(), n);
        struct store_new_batch nb = {
            .idem_key = key,
            .op = "sqrt",
            .spec = "{\"op\":\"sqrt\"}",
            .spec_len = 13,
            .njobs = 1 + rand_r(&seed) % 300,
        };
        for (int i = 0; i < 32; i++) {
            nb.fingerprint[i] = (uint8_t)rand_r(&seed);
        }
        /* Now and then the same key and body again: the same batch, never a second one. */
        int replay = prev_key[0] != '\0' && rand_r(&seed) % 8 == 0;
        if (replay) {
            nb.idem_key = prev_key;
            memcpy(nb.fingerprint, prev_fp, 32);
        }
        if (store_batch_create(st, &nb, on_made, &m) != 0) {
            _exit(9);
        }
        while (m.calls == 0) {
            pump(st, 100);
        }
        if (replay) {
            if (m.rc != STORE_REPLAYED || strcmp(m.id, prev_id) != 0) {
                _exit(10);
            }
            store_batch_release(m.sb);
            continue;
        }
        if (m.rc != STORE_OK) {
            _exit(11);
        }
        tell("A %s %llu\n", m.id, nb.njobs);
        snprintf(prev_key, sizeof prev_key, "%s", key);
        memcpy(prev_fp, nb.fingerprint, 32);
        snprintf(prev_id, sizeof prev_id, "%s", m.id);
        store_batch_start(m.sb);
        int cancel = rand_r(&seed) % 10 == 0;
        /* Results in an order of their own (as order=completed), some batches cut short. */
        uint32_t done_part = cancel ? nb.njobs / 2 : nb.njobs;
        char line[64];
        for (uint32_t k = 0; k < done_part; k++) {
            uint32_t idx = (uint32_t)(((uint64_t)k * 7919u) % nb.njobs);
            while (store_batch_next_missing(m.sb, idx) != idx) {
                idx = (idx + 1) % nb.njobs;
            }
            int len = line_of(idx, line, sizeof line);
            if (store_result_add(m.sb, idx, ok_of(idx), line, (size_t)len) != 0) {
                _exit(12);
            }
            if (rand_r(&seed) % 32 == 0) {
                pump(st, 0);
            }
        }
        if (cancel) {
            store_batch_cancel(m.sb);
            if (rand_r(&seed) % 2 == 0) {
                pump(st, 5); /* sometimes killed between the cancel and its end */
            }
            record_all(st, m.sb, &seed, 1);
            store_batch_end(m.sb, STORE_CANCELLED, "{\"summary\":1}", 13);
        } else {
            store_batch_end(m.sb, STORE_DONE, "{\"summary\":1}", 13);
        }
        store_batch_release(m.sb);
        /* Now and then forget the batch just ended, or expire every ended one: deletions
         * are cut by the kill too, and must be whole or not at all. */
        if (rand_r(&seed) % 6 == 0) {
            tell("F %s %llu\n", m.id, 0);
            store_batch_forget(st, NULL, 0, m.id, NULL, NULL);
            prev_key[0] = '\0'; /* a key lives as long as its batch */
        } else if (rand_r(&seed) % 100 == 0) {
            tell("X %s %llu\n", "all", 0);
            prev_key[0] = '\0';
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            /* The batches that ended over a second ago (ttl 1 h), not their tombstones. */
            store_expire(st, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 3599000);
        }
        pump(st, 0);
    }
    if (store_sync(st) != 0) {
        _exit(13);
    }
    store_close(st);
    _exit(0);
}

/* ------------------------------------------------------------------------------------- */
/* the parent: what was confirmed, and the checks */

struct known {
    char id[STORE_ID_SIZE];
    uint32_t njobs;
    uint64_t committed; /* the highest seq the child was told is committed */
    int seen_this_round;
    int may_be_forgotten; /* the child asked to forget it: gone (404) or whole */
    int may_be_expired;   /* an expiry was asked for after it was accepted: 410 or whole */
};

static struct known *known;
static size_t nknown;

static struct known *find_known(const char *id)
{
    for (size_t i = nknown; i > 0; i--) {
        if (strcmp(known[i - 1].id, id) == 0) {
            return &known[i - 1];
        }
    }
    return NULL;
}

static char pending[8192];
static size_t npending;

/* Reads what the child said so far (everything it wrote before it died is in the pipe). */
static void drain(int fd)
{
    for (;;) {
        ssize_t n = read(fd, pending + npending, sizeof pending - npending);
        if (n <= 0) {
            return;
        }
        npending += (size_t)n;
        char *start = pending, *nl;
        while ((nl = memchr(start, '\n', npending - (size_t)(start - pending))) != NULL) {
            *nl = '\0';
            char kind = start[0];
            char id[STORE_ID_SIZE] = "";
            unsigned long long v = 0;
            if (kind == 'X') {
                for (size_t i = 0; i < nknown; i++) {
                    known[i].may_be_expired = 1;
                }
            } else if (sscanf(start + 2, "%28s %llu", id, &v) == 2) {
                struct known *k = find_known(id);
                if (kind == 'F' && k != NULL) {
                    k->may_be_forgotten = 1;
                }
                if (kind == 'A' && k == NULL && nknown < MAX_BATCHES) {
                    k = &known[nknown++];
                    snprintf(k->id, sizeof k->id, "%s", id);
                    k->njobs = (uint32_t)v;
                }
                if (kind == 'C' && k != NULL && v > k->committed) {
                    k->committed = v;
                }
                if (k != NULL) {
                    k->seen_this_round = 1;
                }
            }
            start = nl + 1;
        }
        npending -= (size_t)(start - pending);
        memmove(pending, start, npending);
    }
}

struct seen {
    uint8_t *bits;
    uint32_t njobs;
    uint64_t rows, prev;
    int bad;
};

static int on_row(void *arg, uint64_t seq, uint32_t index, int ok, const void *line, size_t len)
{
    struct seen *s = arg;
    char want[64];
    int n = line_of(index, want, sizeof want);
    if (index >= s->njobs || (s->bits[index >> 3] >> (index & 7)) & 1) {
        s->bad |= 1; /* a job out of range, or twice */
    } else {
        s->bits[index >> 3] |= (uint8_t)(1u << (index & 7));
    }
    if ((size_t)n != len || memcmp(line, want, len) != 0) {
        s->bad |= 2;
    }
    if (seq != s->prev + 1) {
        s->bad |= 4; /* a gap in the seqs */
    }
    (void)ok;
    s->prev = seq;
    s->rows++;
    return 0;
}

static int integrity_ok(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/batchd.db", dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int ok = 0;
    if (access(path, F_OK) != 0) {
        return nknown == 0; /* killed before the store made its file: nothing was accepted */
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        ok = strcmp((const char *)sqlite3_column_text(s, 0), "ok") == 0;
        if (!ok) {
            fprintf(stderr, "integrity_check: %s\n", sqlite3_column_text(s, 0));
        }
    } else {
        fprintf(stderr, "integrity_check: %s\n", sqlite3_errmsg(db));
    }
    sqlite3_finalize(s);
    s = NULL;
    /* Deletions are whole: no result or input left of a batch that is gone or expired. */
    if (ok &&
        sqlite3_prepare_v2(db,
                           "SELECT (SELECT count(*) FROM results WHERE bno NOT IN (SELECT bno"
                           " FROM batches WHERE state <> 4)) + (SELECT count(*) FROM inputs"
                           " WHERE bno NOT IN (SELECT bno FROM batches WHERE state <> 4))",
                           -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        ok = sqlite3_column_int(s, 0) == 0;
        if (!ok) {
            fprintf(stderr, "rows left of deleted batches: %d\n", sqlite3_column_int(s, 0));
        }
    }
    sqlite3_finalize(s);
    s = NULL;
    /* No job twice, by the database's own count. */
    if (ok &&
        sqlite3_prepare_v2(db,
                           "SELECT count(*) FROM (SELECT bno, idx FROM results GROUP BY"
                           " bno, idx HAVING count(*) > 1)",
                           -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        ok = sqlite3_column_int(s, 0) == 0;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return ok;
}

/* Checks every batch the child confirmed (all of them when ALL, else those it spoke of this
 * round). Returns the number of failures. */
static size_t gone; /* batches checked and found forgotten or expired, as asked */

static int verify(const char *dir, int all, int final)
{
    int bad = 0;
    if (!integrity_ok(dir)) {
        fprintf(stderr, "integrity_check or the duplicate count failed\n");
        bad++;
    }
    struct store_config cfg = {.state_dir = dir, .result_ttl_ms = 3600000};
    struct store *st = NULL;
    char err[512];
    if (store_open(&cfg, &st, err, sizeof err) != 0) {
        fprintf(stderr, "reopen: %s\n", err);
        return bad + 1;
    }
    for (size_t i = 0; i < nknown; i++) {
        struct known *k = &known[i];
        if (!all && !k->seen_this_round) {
            continue;
        }
        k->seen_this_round = 0;
        struct store_info info;
        int rc = store_batch_get(st, NULL, 0, k->id, &info);
        if ((rc == STORE_E_NOT_FOUND && k->may_be_forgotten) ||
            (rc == STORE_E_EXPIRED && (k->may_be_expired || k->may_be_forgotten))) {
            gone++;
            continue;
        }
        if (rc != 0 || info.njobs != k->njobs) {
            fprintf(stderr, "accepted batch %s lost (%s)\n", k->id, store_err_name(rc));
            bad++;
            continue;
        }
        struct seen s = {.bits = calloc(k->njobs / 8 + 1, 1), .njobs = k->njobs};
        uint64_t last = 0;
        rc = store_results_read(st, NULL, 0, k->id, 0, SIZE_MAX, on_row, &s, &last);
        if (rc != 0 || s.bad != 0 || s.rows != info.last_seq || s.rows < k->committed ||
            info.nok + info.nfailed != s.rows) {
            fprintf(stderr,
                    "batch %s: rc %d, bad %d, %llu rows, last_seq %llu, committed %llu, ok+failed "
                    "%llu\n",
                    k->id, rc, s.bad, (unsigned long long)s.rows, (unsigned long long)info.last_seq,
                    (unsigned long long)k->committed,
                    (unsigned long long)(info.nok + info.nfailed));
            bad++;
        }
        int ended = info.state == STORE_DONE || info.state == STORE_CANCELLED;
        if (ended && s.rows != k->njobs) {
            fprintf(stderr, "batch %s ended with %llu of %u results\n", k->id,
                    (unsigned long long)s.rows, k->njobs);
            bad++;
        }
        if (final && !ended) {
            fprintf(stderr, "batch %s did not end\n", k->id);
            bad++;
        }
        if (!ended) {
            /* What the store would have run again: exactly the jobs without a result. */
            struct store_batch *sb = NULL;
            if (store_batch_open(st, k->id, &sb) != 0) {
                bad++;
            } else {
                for (uint32_t j = 0; j < k->njobs; j++) {
                    int has = (s.bits[j >> 3] >> (j & 7)) & 1;
                    int missing = store_batch_next_missing(sb, j) == (int64_t)j;
                    if (has == missing) {
                        fprintf(stderr, "batch %s job %u: result %d, missing %d\n", k->id, j, has,
                                missing);
                        bad++;
                        break;
                    }
                }
                store_batch_release(sb);
            }
        }
        free(s.bits);
    }
    store_close(st);
    return bad;
}

static void test_sigkill(void)
{
    char tmpl[] = "/tmp/test_store_crash.XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    known = calloc(MAX_BATCHES, sizeof *known);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("  seed %u, state dir %s\n", seed, dir);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int kills = 0, rounds = 0, failures = 0, early_exits = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed =
            (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if (kills >= MIN_KILLS && elapsed > 5.0) {
            break;
        }
        if (elapsed > TIME_BUDGET_S) {
            break;
        }
        int fds[2];
        CHECK(pipe2(fds, O_CLOEXEC) == 0);
        unsigned child_seed = (unsigned)rand_r(&seed);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            child_main(dir, fds[1], child_seed, 0);
        }
        close(fds[1]);
        fcntl(fds[0], F_SETFL, O_NONBLOCK);
        /* Anywhere from the open (the first ms) to deep in a batch. */
        long delay_us = 500 + rand_r(&seed) % 150000;
        struct timespec end;
        clock_gettime(CLOCK_MONOTONIC, &end);
        int64_t until = (int64_t)end.tv_sec * 1000000 + end.tv_nsec / 1000 + delay_us;
        int status = 0, exited = 0;
        for (;;) {
            drain(fds[0]);
            clock_gettime(CLOCK_MONOTONIC, &end);
            if ((int64_t)end.tv_sec * 1000000 + end.tv_nsec / 1000 >= until) {
                break;
            }
            if (waitpid(pid, &status, WNOHANG) == pid) {
                exited = 1;
                break;
            }
            struct timespec pause = {0, 200000};
            nanosleep(&pause, NULL);
        }
        if (!exited) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
                kills++;
            } else {
                exited = 1;
            }
        }
        if (exited) {
            early_exits++;
            fprintf(stderr, "child exited by itself: status %d\n", status);
            failures++;
        }
        drain(fds[0]);
        close(fds[0]);
        npending = 0; /* a line cut by the kill is not a confirmation */
        rounds++;
        failures += verify(dir, rounds % 10 == 0, 0);
        if (failures > 0) {
            break;
        }
    }
    /* A last run finishes everything that was left. */
    int fds[2];
    CHECK(pipe2(fds, O_CLOEXEC) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        child_main(dir, fds[1], 1, 1);
    }
    close(fds[1]);
    int status = 0;
    for (;;) {
        drain(fds[0]);
        if (waitpid(pid, &status, WNOHANG) == pid) {
            break;
        }
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    drain(fds[0]);
    close(fds[0]);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    gone = 0;
    failures += verify(dir, 1, 1);
    clock_gettime(CLOCK_MONOTONIC, &now);
    printf("  %d SIGKILLs in %.1f s, %zu batches accepted, %zu found forgotten or expired in "
           "the last check, %d failures\n",
           kills, (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9,
           nknown, gone, failures);
    CHECK(kills >= MIN_KILLS);
    CHECK_EQ_INT(failures, 0);
    CHECK_EQ_INT(early_exits, 0);
    if (failures == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "cannot remove %s\n", dir);
        }
    }
    free(known);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"sigkill", test_sigkill},
};
/* clang-format on */

CHECK_MAIN("test_store_crash", cases)
