/* Unit test of server/metrics: counters add up per label set, histograms fill cumulative
 * buckets, label values are escaped, the series cap holds, and the exposition has the
 * exact lines Prometheus expects. tests/deploy/test_metrics.py parses a live server's
 * output with a strict parser. */
#include "../check.h"

#include "server/metrics.h"

#include <stdlib.h>
#include <string.h>

static int has_line(const struct buf *b, const char *line)
{
    size_t n = strlen(line);
    const char *p = buf_data(b);
    const char *end = p + buf_len(b);

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (len == n && memcmp(p, line, n) == 0) {
            return 1;
        }
        p += len + 1;
    }
    return 0;
}

static void test_counters(void)
{
    struct metrics *m = metrics_create();
    struct buf out;
    struct metrics_gauges g = {.queue_depth = 7, .workers_busy = 1, .workers_idle = 3};

    buf_init(&out, 1 << 20);
    CHECK(m != NULL);
    CHECK_EQ_INT(metrics_add(m, METRICS_JOBS, "sqrt", "ok", 2), 0);
    CHECK_EQ_INT(metrics_add(m, METRICS_JOBS, "sqrt", "ok", 1), 0);
    CHECK_EQ_INT(metrics_add(m, METRICS_JOBS, "sqrt", "domain_error", 1), 0);
    CHECK_EQ_INT(metrics_add(m, METRICS_JOBS, "sqr", "tok", 5), 0); /* no label-join clash */
    CHECK_EQ_INT(metrics_add(m, METRICS_JOBS, "sqrt", "ok", -1), -1);
    CHECK_EQ_INT(metrics_add(m, METRICS_JOB_SECONDS, "sqrt", NULL, 1), -1);
    CHECK_EQ_INT((int)metrics_get(m, METRICS_JOBS, "sqrt", "ok"), 3);
    CHECK_EQ_INT((int)metrics_get(m, METRICS_JOBS, "sqr", "tok"), 5);
    CHECK_EQ_INT((int)metrics_get(m, METRICS_JOBS, "nope", "ok"), 0);
    CHECK_EQ_INT(metrics_add(m, METRICS_HTTP_REQUESTS, "/v1/batches", "200", 1), 0);
    CHECK_EQ_INT(metrics_add(m, METRICS_WORKER_RESTARTS, "crash", NULL, 1), 0);
    CHECK_EQ_INT(metrics_add(m, METRICS_HTTP_IN, "odd\"route\\\n", NULL, 10), 0);

    CHECK_EQ_INT(metrics_render(m, &g, &out), 0);
    CHECK(has_line(&out, "# TYPE batchd_jobs_total counter"));
    CHECK(has_line(&out, "batchd_jobs_total{op=\"sqrt\",outcome=\"ok\"} 3"));
    CHECK(has_line(&out, "batchd_jobs_total{op=\"sqrt\",outcome=\"domain_error\"} 1"));
    CHECK(has_line(&out, "batchd_http_requests_total{route=\"/v1/batches\",status=\"200\"} 1"));
    CHECK(has_line(&out, "batchd_worker_restarts_total{cause=\"crash\"} 1"));
    CHECK(has_line(&out, "batchd_http_request_bytes_total{route=\"odd\\\"route\\\\\\n\"} 10"));
    CHECK(has_line(&out, "# TYPE batchd_batches_total counter")); /* empty family: header */
    CHECK(has_line(&out, "batchd_queue_depth 7"));
    CHECK(has_line(&out, "batchd_workers{state=\"busy\"} 1"));
    CHECK(has_line(&out, "batchd_workers{state=\"idle\"} 3"));
    CHECK(has_line(&out, "batchd_draining 0"));
    CHECK(buf_len(&out) > 0 && buf_data(&out)[buf_len(&out) - 1] == '\n');
    buf_cleanup(&out);
    metrics_destroy(m);
}

static void test_histogram(void)
{
    struct metrics *m = metrics_create();
    struct buf out;
    struct metrics_gauges g = {0};

    buf_init(&out, 1 << 20);
    CHECK_EQ_INT(metrics_observe(m, METRICS_JOB_SECONDS, "sleep", 0.0001), 0);
    CHECK_EQ_INT(metrics_observe(m, METRICS_JOB_SECONDS, "sleep", 0.3), 0);
    CHECK_EQ_INT(metrics_observe(m, METRICS_JOB_SECONDS, "sleep", 1000), 0);
    CHECK_EQ_INT(metrics_observe(m, METRICS_JOB_SECONDS, "sleep", -5), 0); /* counted as 0 */
    CHECK_EQ_INT(metrics_observe(m, METRICS_JOBS, "sleep", 1), -1);
    CHECK_EQ_INT((int)metrics_get(m, METRICS_JOB_SECONDS, "sleep", NULL), 4);
    CHECK_EQ_INT(metrics_render(m, &g, &out), 0);
    CHECK(has_line(&out, "# TYPE batchd_job_duration_seconds histogram"));
    CHECK(has_line(&out, "batchd_job_duration_seconds_bucket{op=\"sleep\",le=\"0.0001\"} 2"));
    CHECK(has_line(&out, "batchd_job_duration_seconds_bucket{op=\"sleep\",le=\"0.25\"} 2"));
    CHECK(has_line(&out, "batchd_job_duration_seconds_bucket{op=\"sleep\",le=\"0.5\"} 3"));
    CHECK(has_line(&out, "batchd_job_duration_seconds_bucket{op=\"sleep\",le=\"60\"} 3"));
    CHECK(has_line(&out, "batchd_job_duration_seconds_bucket{op=\"sleep\",le=\"+Inf\"} 4"));
    CHECK(has_line(&out, "batchd_job_duration_seconds_count{op=\"sleep\"} 4"));
    CHECK(has_line(&out, "batchd_job_duration_seconds_sum{op=\"sleep\"} 1000.3001"));
    buf_cleanup(&out);
    metrics_destroy(m);
}

static void test_caps(void)
{
    struct metrics *m = metrics_create();
    struct buf small;
    struct metrics_gauges g = {0};
    char status[16];

    /* Distinct labels past the cap are dropped, not stored. */
    for (int i = 0; i < METRICS_MAX_SERIES + 100; i++) {
        snprintf(status, sizeof(status), "%d", i);
        CHECK_EQ_INT(metrics_add(m, METRICS_HTTP_REQUESTS, "/x", status, 1), 0);
    }
    CHECK_EQ_INT((int)metrics_get(m, METRICS_HTTP_REQUESTS, "/x", "0"), 1);
    snprintf(status, sizeof(status), "%d", METRICS_MAX_SERIES + 50);
    CHECK_EQ_INT((int)metrics_get(m, METRICS_HTTP_REQUESTS, "/x", status), 0);
    /* A full output buffer is an error, not a silent cut. */
    buf_init(&small, 64);
    CHECK_EQ_INT(metrics_render(m, &g, &small), -1);
    buf_cleanup(&small);
    metrics_destroy(m);
    metrics_destroy(NULL);
}

/* clang-format off */
/* The store's figures (sampled by observe.c from store_stats and store_batch_counts): the
 * gauges, the two counters and the commit summary with its quantiles, sum and count. */
static void test_store_figures(void)
{
    struct metrics *m = metrics_create();
    struct buf out;
    struct metrics_gauges g = {
        .store_bytes = 123456,
        .store_pending_rows = 17,
        .store_rows = 9000,
        .store_commits = 12,
        .store_commit_p50_s = 0.002,
        .store_commit_p99_s = 0.125,
        .store_commit_sum_s = 0.5,
        .stored_batches = {1, 2, 3, 4},
    };

    buf_init(&out, 1 << 20);
    CHECK(m != NULL);
    CHECK_EQ_INT(metrics_render(m, &g, &out), 0);
    CHECK(has_line(&out, "# TYPE batchd_store_bytes gauge"));
    CHECK(has_line(&out, "batchd_store_bytes 123456"));
    CHECK(has_line(&out, "batchd_store_pending_rows 17"));
    CHECK(has_line(&out, "# TYPE batchd_store_rows_total counter"));
    CHECK(has_line(&out, "batchd_store_rows_total 9000"));
    CHECK(has_line(&out, "# TYPE batchd_store_commits_total counter"));
    CHECK(has_line(&out, "batchd_store_commits_total 12"));
    CHECK(has_line(&out, "# TYPE batchd_store_commit_seconds summary"));
    CHECK(has_line(&out, "batchd_store_commit_seconds{quantile=\"0.5\"} 0.002"));
    CHECK(has_line(&out, "batchd_store_commit_seconds{quantile=\"0.99\"} 0.125"));
    CHECK(has_line(&out, "batchd_store_commit_seconds_sum 0.5"));
    CHECK(has_line(&out, "batchd_store_commit_seconds_count 12"));
    CHECK(has_line(&out, "# TYPE batchd_stored_batches gauge"));
    CHECK(has_line(&out, "batchd_stored_batches{state=\"queued\"} 1"));
    CHECK(has_line(&out, "batchd_stored_batches{state=\"running\"} 2"));
    CHECK(has_line(&out, "batchd_stored_batches{state=\"done\"} 3"));
    CHECK(has_line(&out, "batchd_stored_batches{state=\"cancelled\"} 4"));
    buf_cleanup(&out);
    metrics_destroy(m);
}

static const struct check_case cases[] = {
    {"counters", test_counters},
    {"store_figures", test_store_figures},
    {"histogram", test_histogram},
    {"caps", test_caps},
};
/* clang-format on */

CHECK_MAIN("test_metrics", cases)
