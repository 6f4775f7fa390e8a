/* The counters and histograms behind GET /metrics, and their Prometheus text exposition
 * (format 0.0.4). Families are one table (METRICS_MAP); a series is a family plus up to two
 * label values, created on first use. Gauges that describe the present (queue depth, busy
 * workers, batches in flight) are not stored here: the caller samples them at scrape time
 * and passes them to metrics_render. Not thread-safe: the server's one thread owns it. */
#ifndef BATCHD_SERVER_METRICS_H
#define BATCHD_SERVER_METRICS_H

#include "../api/buf.h"

#include <stdint.h>

/* XX(ENUM, "name", type, "label1", "label2", "help"); a NULL label is no label. */
#define METRICS_MAP(XX)                                                                            \
    XX(BATCHES, "batchd_batches_total", COUNTER, "op", "outcome",                                  \
       "Batches ended, by op (\"mixed\" for a jobs list) and outcome: completed (summary "         \
       "written), refused (4xx/5xx before any job ran), cancelled (client went away), "            \
       "cut (stream ended without a summary)")                                                     \
    XX(JOBS, "batchd_jobs_total", COUNTER, "op", "outcome",                                        \
       "Jobs ended, by op and outcome: ok, or the per-job error code")                             \
    XX(JOB_SECONDS, "batchd_job_duration_seconds", HISTOGRAM, "op", NULL,                          \
       "Time a job ran on a worker, by op")                                                        \
    XX(WORKER_RESTARTS, "batchd_worker_restarts_total", COUNTER, "cause", NULL,                    \
       "Workers replaced, by cause: crash, timeout (killed for a job over its limit), "            \
       "recycle (job count limit reached)")                                                        \
    XX(HTTP_REQUESTS, "batchd_http_requests_total", COUNTER, "route", "status",                    \
       "HTTP requests answered, by route and status")                                              \
    XX(HTTP_IN, "batchd_http_request_bytes_total", COUNTER, "route", NULL,                         \
       "Request body bytes received, by route")                                                    \
    XX(HTTP_OUT, "batchd_http_response_bytes_total", COUNTER, "route", NULL,                       \
       "Response body bytes sent, by route")

enum metrics_family {
#define XX(e, name, type, l1, l2, help) METRICS_##e,
    METRICS_MAP(XX)
#undef XX
        METRICS_FAMILY_COUNT
};

/* The present state, sampled by the caller at scrape time. */
struct metrics_gauges {
    uint64_t queue_depth;       /* jobs accepted and not yet finished (queued or running) */
    uint64_t workers_busy;      /* workers running a job */
    uint64_t workers_idle;      /* workers up and waiting */
    uint64_t batches_in_flight; /* batches accepted and not yet ended */
    int draining;               /* 1 once SIGTERM started the drain */
    uint64_t upload_bytes_held; /* request body bytes reserved (--max-upload-memory) */
    /* The store (SPEC §8), from store_stats_get and store_batch_counts. */
    uint64_t store_bytes;        /* held, as counted against --max-stored-bytes */
    uint64_t store_pending_rows; /* results queued, not yet committed */
    uint64_t store_rows;         /* results committed since start */
    uint64_t store_commits;      /* write transactions committed since start */
    double store_commit_p50_s;   /* commit time quantiles, since start */
    double store_commit_p99_s;   /* ... */
    double store_commit_sum_s;   /* every commit's time, summed */
    uint64_t stored_batches[4];  /* by state: queued, running, done, cancelled */
    /* Cluster mode (SPEC §9), from store_cluster_stats_get; REPLICA "" without --redis. */
    const char *replica;
    int redis_up;
    uint64_t chunks_claimed, chunks_reclaimed, chunks_lost, chunks_running;
    uint64_t results_recorded, results_duplicate;
};

struct metrics;

/* A new, empty registry (free with metrics_destroy), or NULL when out of memory. */
struct metrics *metrics_create(void);

/* Frees M. metrics_destroy(NULL) is a no-op. */
void metrics_destroy(struct metrics *m);

/* Adds V (>= 0) to the counter FAMILY{L1, L2}. Label values are copied (and cut at 63
 * bytes); pass NULL for a label the family does not have. A family holds at most
 * METRICS_MAX_SERIES series: past that the sample is dropped and 0 is still returned, so a
 * flood of distinct labels cannot grow the server's memory. Returns 0, or -1 for a family
 * that is not a counter or out of memory. */
int metrics_add(struct metrics *m, enum metrics_family family, const char *l1, const char *l2,
                double v);

/* Sets the counter FAMILY{L1, L2} to V, for counters kept elsewhere (the dispatcher's
 * restart counts) and mirrored here at scrape time. V must not go down. Returns as
 * metrics_add. */
int metrics_set(struct metrics *m, enum metrics_family family, const char *l1, const char *l2,
                double v);

/* Records one observation of SECONDS in the histogram FAMILY{L1}. Returns as metrics_add. */
int metrics_observe(struct metrics *m, enum metrics_family family, const char *l1, double seconds);
/* N observations of SECONDS each (a block of jobs, timed as a whole). */
int metrics_observe_n(struct metrics *m, enum metrics_family family, const char *l1,
                      double seconds, uint64_t n);

/* The value of a counter series, or the count of a histogram series; 0 when it does not
 * exist. For tests. */
double metrics_get(const struct metrics *m, enum metrics_family family, const char *l1,
                   const char *l2);

/* Appends the whole exposition to OUT: every family of the table with HELP and TYPE (a
 * family with no series yet shows only those), then the gauges G. Returns 0, or -1 when OUT
 * is full (OUT then holds a prefix; answer 500). */
int metrics_render(const struct metrics *m, const struct metrics_gauges *g, struct buf *out);

/* The Content-Type of metrics_render's output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#define METRICS_MAX_SERIES 512

#endif
