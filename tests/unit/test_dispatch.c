/* Unit tests of the dispatcher with real worker processes: this binary is its own worker
 * (the pool posix_spawns /proc/self/exe --worker). Batches are JSON arrays of inputs; the
 * callbacks record what arrives, so each test checks ordering, chunking, fairness,
 * cancellation, pausing, overload, timeouts and deadlines from the owner's side. Run it under
 * ASan to check that cancelled and destroyed batches free everything. */
#include "../../api/errors.h"
#include "../../workers/dispatch.h"
#include "../../workers/ipc.h"
#include "../../workers/ops/ops.h"
#include "../../workers/worker.h"
#include "../check.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>

/* What one batch's owner saw. */
struct tb {
    const char *name;
    const struct op *op;
    json_t *inputs; /* owned */
    uint64_t n;
    unsigned *seen;   /* results per index */
    uint64_t *order;  /* indices in delivery order */
    int *err;         /* per index */
    long long *value; /* integer results, per index */
    int *worker;      /* per index */
    uint64_t delivered;
    int done, calls_after_done, bad_index;
    uint64_t first_ns, done_ns;
    struct dispatch_summary sum;
    struct dispatch_batch *b;
};

static int sanitized(void)
{
    const char *s = getenv("BATCHD_SANITIZED");
    return s != NULL && (strcmp(s, "1") == 0 || strcmp(s, "ON") == 0);
}

static void tb_job_at(void *ud, uint64_t i, struct dispatch_job *job)
{
    struct tb *t = ud;
    job->op = t->op;
    job->value = json_array_get(t->inputs, (size_t)i);
}

static void tb_on_result(void *ud, const struct job_result *r)
{
    struct tb *t = ud;
    if (t->done) {
        t->calls_after_done++;
        return;
    }
    if (r->index >= t->n) {
        t->bad_index++;
        return;
    }
    if (t->delivered == 0) {
        t->first_ns = ipc_now_ns();
    }
    t->seen[r->index]++;
    t->order[t->delivered++] = r->index;
    t->err[r->index] = r->err;
    t->worker[r->index] = r->worker;
    if (r->err == 0) {
        char tmp[64];
        size_t n = r->text_len < sizeof tmp - 1 ? r->text_len : sizeof tmp - 1;
        memcpy(tmp, r->text, n);
        tmp[n] = '\0';
        char *end = NULL;
        t->value[r->index] = strtoll(tmp, &end, 10);
        if (end == tmp || *end != '\0') {
            t->value[r->index] = -999; /* not an integer */
        }
    }
}

static void tb_on_done(void *ud, const struct dispatch_summary *s)
{
    struct tb *t = ud;
    if (t->done) {
        t->calls_after_done++;
    }
    t->done = 1;
    t->done_ns = ipc_now_ns();
    t->sum = *s;
    t->b = NULL;
}

/* A batch of N jobs of OP whose inputs are made by INPUT(i). */
static struct tb *tb_new(const char *name, const char *op, uint64_t n, json_t *(*input)(uint64_t))
{
    struct tb *t = calloc(1, sizeof *t);
    t->name = name;
    t->op = ops_find(op);
    t->n = n;
    t->inputs = json_array();
    for (uint64_t i = 0; i < n; i++) {
        json_array_append_new(t->inputs, input(i));
    }
    t->seen = calloc(n + 1, sizeof *t->seen);
    t->order = calloc(n + 1, sizeof *t->order);
    t->err = calloc(n + 1, sizeof *t->err);
    t->value = calloc(n + 1, sizeof *t->value);
    t->worker = calloc(n + 1, sizeof *t->worker);
    return t;
}

static void tb_free(struct tb *t)
{
    if (t == NULL) {
        return;
    }
    json_decref(t->inputs);
    free(t->seen);
    free(t->order);
    free(t->err);
    free(t->value);
    free(t->worker);
    free(t);
}

static struct dispatch_batch *tb_submit(struct dispatch *d, struct tb *t, size_t chunksize,
                                        enum dispatch_order order, uint64_t timeout_ms,
                                        uint64_t deadline_ms, int *err)
{
    struct dispatch_batch_desc desc = {
        .njobs = t->n,
        .chunksize = chunksize,
        .order = order,
        .timeout_ms = timeout_ms,
        .deadline_ms = deadline_ms,
        .blob_fd = -1,
        .job_at = tb_job_at,
        .on_result = tb_on_result,
        .on_done = tb_on_done,
        .ud = t,
    };
    int e = 0;
    t->b = dispatch_submit(d, &desc, &e);
    if (err != NULL) {
        *err = e;
    }
    return t->b;
}

/* Runs the dispatcher until DONE(arg) or MS milliseconds pass. Returns 1 if DONE. */
static int run_until(struct dispatch *d, int (*done)(void *), void *arg, int ms)
{
    uint64_t end = ipc_now_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        if (done != NULL && done(arg)) {
            return 1;
        }
        uint64_t now = ipc_now_ns();
        if (now >= end) {
            return 0;
        }
        int left = (int)((end - now) / 1000000u) + 1;
        int t = dispatch_timeout_ms(d);
        if (t < 0 || t > left) {
            t = left;
        }
        struct pollfd p = {.fd = dispatch_fd(d), .events = POLLIN};
        poll(&p, 1, t);
        dispatch_run(d);
    }
}

static int is_done(void *arg)
{
    return ((struct tb *)arg)->done;
}

static int has_results(void *arg)
{
    return ((struct tb *)arg)->delivered > 0;
}

static int workers_all_up(void *arg)
{
    struct dispatch *d = arg;
    return dispatch_workers_up(d) == dispatch_workers(d);
}

/* Every index answered exactly once, nothing after on_done. */
static void check_exactly_once(const struct tb *t)
{
    CHECK(t->done);
    CHECK_EQ_INT(t->delivered, t->n);
    CHECK_EQ_INT(t->bad_index, 0);
    CHECK_EQ_INT(t->calls_after_done, 0);
    uint64_t wrong = 0;
    for (uint64_t i = 0; i < t->n; i++) {
        wrong += t->seen[i] != 1;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(t->sum.jobs, t->n);
    CHECK_EQ_INT(t->sum.ok + t->sum.failed, t->n);
}

static json_t *in_index(uint64_t i)
{
    return json_integer((json_int_t)i);
}

static json_t *in_sleep_decreasing(uint64_t i)
{
    /* 200, 150, 100, 50, then zeros: later jobs finish first. */
    return json_integer(i < 4 ? (json_int_t)(200 - 50 * i) : 0);
}

static json_t *in_sleep_50(uint64_t i)
{
    (void)i;
    return json_integer(50);
}

static json_t *in_sleep_100(uint64_t i)
{
    (void)i;
    return json_integer(100);
}

static json_t *in_sleep_20(uint64_t i)
{
    (void)i;
    return json_integer(20);
}

static json_t *in_deadline(uint64_t i)
{
    (void)i;
    return json_integer(400);
}

static struct dispatch *make_dispatch(int workers, uint64_t max_queued, int max_batches)
{
    struct dispatch_config cfg = {
        .workers = workers,
        .max_queued_jobs = max_queued,
        .max_batches = max_batches,
    };
    struct dispatch *d = dispatch_create(&cfg);
    CHECK(d != NULL);
    return d;
}

/* The fixture of the cases that share one dispatcher (two workers, generous limits): made
 * on first use, checked empty and destroyed after the last case. */
static struct dispatch *shared;

static struct dispatch *shared_dispatch(void)
{
    if (shared == NULL) {
        shared = make_dispatch(2, 100000000, 64);
        if (shared == NULL) {
            exit(check_report("test_dispatch"));
        }
        CHECK_EQ_INT(dispatch_workers(shared), 2);
        CHECK(run_until(shared, workers_all_up, shared, 5000));
    }
    return shared;
}

static void shared_teardown(void)
{
    if (shared != NULL) {
        CHECK_EQ_INT(dispatch_batches(shared), 0);
        CHECK_EQ_INT(dispatch_queued_jobs(shared), 0);
        dispatch_destroy(shared);
        shared = NULL;
    }
}

/* ---------------------------------------------------------------- ordering */

static void test_input_order_despite_out_of_order_completion(void)
{
    struct dispatch *d = shared_dispatch();
    struct tb *t = tb_new("decreasing", "sleep", 8, in_sleep_decreasing);
    CHECK(tb_submit(d, t, 1, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    CHECK(run_until(d, is_done, t, 10000));
    check_exactly_once(t);
    for (uint64_t k = 0; k < t->n; k++) {
        CHECK_EQ_INT(t->order[k], k);
        CHECK_EQ_INT(t->err[k], 0);
    }
    CHECK_EQ_INT(t->value[0], 200);
    CHECK_EQ_INT(t->value[3], 50);
    tb_free(t);

    /* Completed order: the 150 ms job (index 1) ends before the 200 ms one (index 0). */
    t = tb_new("decreasing-completed", "sleep", 8, in_sleep_decreasing);
    CHECK(tb_submit(d, t, 1, DISPATCH_ORDER_COMPLETED, 0, 0, NULL) != NULL);
    CHECK(run_until(d, is_done, t, 10000));
    check_exactly_once(t);
    CHECK_EQ_INT(t->order[0], 1);
    CHECK_EQ_INT(t->order[1], 0);
    tb_free(t);
}

static void test_square_results_in_order(void)
{
    struct dispatch *d = shared_dispatch();
    const size_t sizes[] = {1, 7, 0};
    for (size_t k = 0; k < 3; k++) {
        for (int o = 0; o < 2; o++) {
            uint64_t n = 20000;
            struct tb *t = tb_new("squares", "square", n, in_index);
            CHECK(tb_submit(d, t, sizes[k], o ? DISPATCH_ORDER_COMPLETED : DISPATCH_ORDER_INPUT, 0,
                            0, NULL) != NULL);
            CHECK(run_until(d, is_done, t, 60000));
            check_exactly_once(t);
            uint64_t bad = 0, misplaced = 0;
            for (uint64_t i = 0; i < n; i++) {
                bad += t->err[i] != 0 || t->value[i] != (long long)(i * i);
                misplaced += o == 0 && t->order[i] != i;
            }
            CHECK_EQ_INT(bad, 0);
            CHECK_EQ_INT(misplaced, 0);
            CHECK_EQ_INT(t->sum.ok, n);
            tb_free(t);
        }
    }
}

/* ---------------------------------------------------------------- chunking */

static void test_chunking(void)
{
    struct dispatch *d = shared_dispatch();
    /* Explicit: the batch runs with it, and a chunk's jobs run on one worker. */
    struct tb *t = tb_new("chunks-of-7", "sleep", 28, in_sleep_20);
    CHECK(tb_submit(d, t, 7, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    CHECK_EQ_INT(dispatch_batch_chunksize(t->b), 7);
    CHECK(run_until(d, is_done, t, 10000));
    check_exactly_once(t);
    CHECK_EQ_INT(t->sum.chunksize, 7);
    int split = 0;
    for (uint64_t i = 0; i < t->n; i++) {
        split += t->worker[i] != t->worker[i - i % 7];
    }
    CHECK_EQ_INT(split, 0);
    /* Four chunks of 140 ms on two workers: both took some. */
    int used[2] = {0, 0};
    for (uint64_t i = 0; i < t->n; i++) {
        if (t->worker[i] >= 0 && t->worker[i] < 2) {
            used[t->worker[i]] = 1;
        }
    }
    CHECK(used[0] && used[1]);
    tb_free(t);

    /* Auto: many tiny jobs go many to a chunk. */
    t = tb_new("auto-tiny", "square", 100000, in_index);
    CHECK(tb_submit(d, t, 0, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    size_t cs = dispatch_batch_chunksize(t->b);
    CHECK(cs > 1);
    CHECK(run_until(d, is_done, t, 60000));
    check_exactly_once(t);
    CHECK(t->sum.chunksize > 1);
    tb_free(t);

    /* Auto: a few slow jobs go one to a chunk, so that they spread over the workers. */
    t = tb_new("auto-slow", "sleep", 8, in_sleep_50);
    CHECK(tb_submit(d, t, 0, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    CHECK_EQ_INT(dispatch_batch_chunksize(t->b), 1);
    CHECK(run_until(d, is_done, t, 10000));
    check_exactly_once(t);
    CHECK_EQ_INT(t->sum.chunksize, 1);
    tb_free(t);
}

/* ---------------------------------------------------------------- fairness */

static void test_fairness(void)
{
    struct dispatch *d = shared_dispatch();
    /* 40 x 50 ms on 2 workers is a second of work; a 1-job batch submitted after it waits
     * at most for one chunk per worker. */
    struct tb *big = tb_new("big-slow", "sleep", 40, in_sleep_50);
    struct tb *small = tb_new("small", "square", 1, in_index);
    CHECK(tb_submit(d, big, 1, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    run_until(d, NULL, NULL, 20);
    uint64_t t0 = ipc_now_ns();
    CHECK(tb_submit(d, small, 0, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    CHECK(run_until(d, is_done, small, 10000));
    uint64_t small_ns = ipc_now_ns() - t0;
    CHECK(!big->done);
    CHECK(small_ns < 300000000u);
    check_exactly_once(small);
    CHECK(run_until(d, is_done, big, 20000));
    check_exactly_once(big);
    CHECK(small->done_ns < big->done_ns);
    tb_free(big);
    tb_free(small);

    /* A million tiny jobs, then one: the one is done long before the million. */
    uint64_t n = sanitized() ? 200000 : 1000000;
    big = tb_new("big-tiny", "square", n, in_index);
    small = tb_new("small", "square", 1, in_index);
    CHECK(tb_submit(d, big, 0, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    run_until(d, NULL, NULL, 5);
    CHECK(tb_submit(d, small, 0, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    CHECK(run_until(d, is_done, small, 10000));
    CHECK(!big->done);
    CHECK(big->delivered < n / 2);
    CHECK(run_until(d, is_done, big, 120000));
    check_exactly_once(big);
    CHECK_EQ_INT(small->value[0], 0);
    tb_free(big);
    tb_free(small);
}

/* ---------------------------------------------------------------- cancellation */

static void test_cancel(void)
{
    struct dispatch *d = shared_dispatch();
    /* Mid-batch: after the first result, cancel; nothing more arrives, the queue empties. */
    struct tb *t = tb_new("cancel-mid", "sleep", 20, in_sleep_100);
    CHECK(tb_submit(d, t, 1, DISPATCH_ORDER_COMPLETED, 0, 0, NULL) != NULL);
    CHECK(run_until(d, has_results, t, 10000));
    uint64_t got = t->delivered;
    dispatch_batch_cancel(t->b);
    t->b = NULL;
    run_until(d, NULL, NULL, 400);
    CHECK_EQ_INT(t->delivered, got);
    CHECK(!t->done);
    CHECK_EQ_INT(dispatch_queued_jobs(d), 0);
    CHECK_EQ_INT(dispatch_batches(d), 0);
    struct dispatch_stats st;
    dispatch_get_stats(d, &st);
    CHECK_EQ_INT(st.busy_workers, 0);
    tb_free(t);

    /* Before any run: no callback ever. */
    t = tb_new("cancel-early", "square", 1000, in_index);
    CHECK(tb_submit(d, t, 7, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    dispatch_batch_cancel(t->b);
    t->b = NULL;
    run_until(d, NULL, NULL, 100);
    CHECK_EQ_INT(t->delivered, 0);
    CHECK(!t->done);
    CHECK_EQ_INT(dispatch_batches(d), 0);
    tb_free(t);

    /* In input order with results held in the window: cancelled, they are freed (ASan's
     * leak check at exit says so). */
    t = tb_new("cancel-held", "sleep", 8, in_sleep_decreasing);
    CHECK(tb_submit(d, t, 1, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    run_until(d, NULL, NULL, 170); /* index 1 (150 ms) is held, waiting for index 0 */
    CHECK_EQ_INT(t->delivered, 0);
    dispatch_batch_cancel(t->b);
    t->b = NULL;
    run_until(d, NULL, NULL, 300);
    CHECK_EQ_INT(t->delivered, 0);
    CHECK_EQ_INT(dispatch_batches(d), 0);
    CHECK_EQ_INT(dispatch_queued_jobs(d), 0);
    tb_free(t);

    /* The pool still works. */
    t = tb_new("after-cancel", "square", 100, in_index);
    CHECK(tb_submit(d, t, 0, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    CHECK(run_until(d, is_done, t, 10000));
    check_exactly_once(t);
    tb_free(t);
}

/* ---------------------------------------------------------------- pause */

static void test_pause(void)
{
    struct dispatch *d = shared_dispatch();
    struct tb *t = tb_new("paused", "sleep", 10, in_sleep_50);
    CHECK(tb_submit(d, t, 1, DISPATCH_ORDER_COMPLETED, 0, 0, NULL) != NULL);
    dispatch_batch_set_paused(t->b, 1);
    run_until(d, NULL, NULL, 300);
    CHECK_EQ_INT(t->delivered, 0);
    struct dispatch_stats st;
    dispatch_get_stats(d, &st);
    CHECK_EQ_INT(st.busy_workers, 0);

    dispatch_batch_set_paused(t->b, 0);
    CHECK(run_until(d, has_results, t, 5000));
    /* Paused mid-batch: the chunks out finish, no new ones go. */
    dispatch_batch_set_paused(t->b, 1);
    run_until(d, NULL, NULL, 200);
    uint64_t got = t->delivered;
    CHECK(got >= 1 && got <= 4);
    run_until(d, NULL, NULL, 250);
    CHECK_EQ_INT(t->delivered, got);
    dispatch_get_stats(d, &st);
    CHECK_EQ_INT(st.busy_workers, 0);
    CHECK(!t->done);

    dispatch_batch_set_paused(t->b, 0);
    CHECK(run_until(d, is_done, t, 10000));
    check_exactly_once(t);
    CHECK_EQ_INT(t->sum.ok, 10);
    tb_free(t);
}

/* ---------------------------------------------------------------- overload */

static void test_overload(void)
{
    struct dispatch *d = make_dispatch(1, 100, 3);
    if (d == NULL) {
        return;
    }
    struct tb *a = tb_new("a", "sleep", 60, in_sleep_20);
    struct tb *b = tb_new("b", "square", 50, in_index);
    struct tb *c = tb_new("c", "square", 40, in_index);
    struct tb *e = tb_new("e", "square", 1, in_index);
    int err = 0;
    CHECK(tb_submit(d, a, 1, DISPATCH_ORDER_INPUT, 0, 0, &err) != NULL);
    CHECK(tb_submit(d, b, 0, DISPATCH_ORDER_INPUT, 0, 0, &err) == NULL);
    CHECK_EQ_INT(err, -BATCHD_E_OVERLOADED);
    CHECK(!b->done && b->delivered == 0);
    err = 0;
    CHECK(tb_submit(d, c, 0, DISPATCH_ORDER_INPUT, 0, 0, &err) != NULL);
    CHECK_EQ_INT(err, 0);
    CHECK_EQ_INT(dispatch_queued_jobs(d), 100);
    /* The batch limit: a third fits, a fourth does not. */
    struct tb *f = tb_new("f", "square", 0, in_index);
    CHECK(tb_submit(d, f, 0, DISPATCH_ORDER_INPUT, 0, 0, &err) != NULL);
    CHECK(tb_submit(d, e, 0, DISPATCH_ORDER_INPUT, 0, 0, &err) == NULL);
    CHECK_EQ_INT(err, -BATCHD_E_OVERLOADED);
    CHECK(run_until(d, is_done, c, 10000));
    CHECK(run_until(d, is_done, f, 10000));
    check_exactly_once(c);
    check_exactly_once(f);
    CHECK(run_until(d, is_done, a, 20000));
    check_exactly_once(a);
    /* Everything answered: the whole queue is free again. */
    CHECK_EQ_INT(dispatch_queued_jobs(d), 0);
    struct tb *g = tb_new("g", "square", 100, in_index);
    CHECK(tb_submit(d, g, 0, DISPATCH_ORDER_INPUT, 0, 0, &err) != NULL);
    CHECK(run_until(d, is_done, g, 10000));
    check_exactly_once(g);
    tb_free(a);
    tb_free(b);
    tb_free(c);
    tb_free(e);
    tb_free(f);
    tb_free(g);
    dispatch_destroy(d);
}

/* ---------------------------------------------------------------- timeouts, deadlines */

static void test_timeout_and_deadline(void)
{
    struct dispatch *d = shared_dispatch();
    struct tb *t = tb_new("timeout", "sleep", 4, in_sleep_50);
    json_array_set_new(t->inputs, 1, json_integer(5000));
    CHECK(tb_submit(d, t, 4, DISPATCH_ORDER_INPUT, 300, 0, NULL) != NULL);
    uint64_t t0 = ipc_now_ns();
    CHECK(run_until(d, is_done, t, 10000));
    CHECK(ipc_now_ns() - t0 < 2000000000u);
    check_exactly_once(t);
    CHECK_EQ_INT(t->err[0], 0);
    CHECK_EQ_INT(t->err[1], -BATCHD_E_TIMEOUT);
    CHECK_EQ_INT(t->err[2], 0);
    CHECK_EQ_INT(t->err[3], 0);
    tb_free(t);
    CHECK(run_until(d, workers_all_up, d, 5000));

    /* 6 x 400 ms on 2 workers, deadline 600 ms: 2 ok, 2 timeout, 2 cancelled. */
    t = tb_new("deadline", "sleep", 6, in_deadline);
    CHECK(tb_submit(d, t, 1, DISPATCH_ORDER_INPUT, 0, 600, NULL) != NULL);
    t0 = ipc_now_ns();
    CHECK(run_until(d, is_done, t, 10000));
    CHECK(ipc_now_ns() - t0 < 1500000000u);
    check_exactly_once(t);
    CHECK_EQ_INT(t->err[0], 0);
    CHECK_EQ_INT(t->err[1], 0);
    CHECK_EQ_INT(t->err[2], -BATCHD_E_TIMEOUT);
    CHECK_EQ_INT(t->err[3], -BATCHD_E_TIMEOUT);
    CHECK_EQ_INT(t->err[4], -BATCHD_E_CANCELLED);
    CHECK_EQ_INT(t->err[5], -BATCHD_E_CANCELLED);
    CHECK(t->sum.deadline_hit);
    tb_free(t);
    CHECK(run_until(d, workers_all_up, d, 5000));

    /* A deadline on a big batch: far more "cancelled" answers than one pump writes. */
    for (int o = 0; o < 2; o++) {
        t = tb_new("deadline-big", "sleep", 30000, in_sleep_20);
        CHECK(tb_submit(d, t, 0, o ? DISPATCH_ORDER_COMPLETED : DISPATCH_ORDER_INPUT, 0, 200,
                        NULL) != NULL);
        t0 = ipc_now_ns();
        CHECK(run_until(d, is_done, t, 20000));
        CHECK(ipc_now_ns() - t0 < 5000000000u);
        check_exactly_once(t);
        uint64_t cancelled = 0, odd = 0;
        for (uint64_t i = 0; i < t->n; i++) {
            cancelled += t->err[i] == -BATCHD_E_CANCELLED;
            odd += t->err[i] != 0 && t->err[i] != -BATCHD_E_CANCELLED &&
                   t->err[i] != -BATCHD_E_TIMEOUT;
        }
        CHECK(cancelled >= t->n - 100);
        CHECK_EQ_INT(odd, 0);
        for (uint64_t i = 0; o == 0 && i < t->n; i++) {
            if (t->order[i] != i) {
                CHECK_EQ_INT(t->order[i], i);
                break;
            }
        }
        tb_free(t);
        CHECK(run_until(d, workers_all_up, d, 5000));
    }
}

/* ---------------------------------------------------------------- destroy with live work */

static void test_destroy_with_live_batches(void)
{
    struct dispatch *d = make_dispatch(2, 1000000, 16);
    if (d == NULL) {
        return;
    }
    struct tb *a = tb_new("live-a", "sleep", 10, in_sleep_100);
    struct tb *b = tb_new("live-b", "square", 5000, in_index);
    CHECK(tb_submit(d, a, 1, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    CHECK(tb_submit(d, b, 3, DISPATCH_ORDER_INPUT, 0, 0, NULL) != NULL);
    run_until(d, NULL, NULL, 150);
    uint64_t da = a->delivered;
    dispatch_destroy(d);
    CHECK_EQ_INT(a->delivered, da);
    CHECK(!a->done);
    tb_free(a);
    tb_free(b);
    dispatch_destroy(NULL);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"input_order_despite_out_of_order_completion", test_input_order_despite_out_of_order_completion},
    {"square_results_in_order", test_square_results_in_order},
    {"chunking", test_chunking},
    {"fairness", test_fairness},
    {"cancel", test_cancel},
    {"pause", test_pause},
    {"timeout_and_deadline", test_timeout_and_deadline},
    {"overload", test_overload},
    {"destroy_with_live_batches", test_destroy_with_live_batches},
};
/* clang-format on */

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--worker") == 0) {
        return worker_main(3, 4, argc >= 3 ? strtol(argv[2], NULL, 10) : 0);
    }
    static const struct check_fixture fx = {NULL, shared_teardown};
    return check_main_fixture("test_dispatch", cases, CHECK_NCASES(cases), &fx, argc, argv);
}
