/* What operators see of the server: it feeds the metrics registry (metrics.c) from the
 * events of requests, batches, jobs and workers, renders GET /metrics with the gauges
 * sampled from the dispatcher, and writes one log line per worker event. The request log
 * line itself is http.c's. */
#include "observe.h"

#include "../api/errors.h"
#include "../workers/ops/ops.h"
#include "internal.h"
#include "log.h"
#include "metrics.h"

#include <stdio.h>
#include <string.h>

int observe_start(struct server *s)
{
    s->metrics = metrics_create();
    return s->metrics != NULL ? 0 : -1;
}

void observe_stop(struct server *s)
{
    metrics_destroy(s->metrics);
    s->metrics = NULL;
}

void observe_job(struct server *s, const struct prepared *p, const struct job_result *res)
{
    struct metrics *m = s->metrics;
    if (m == NULL) {
        return;
    }
    const struct op *op = prepared_op_of(p, res->index);
    const char *name = op != NULL ? op->name : "none";
    metrics_add(m, METRICS_JOBS, name, res->err == 0 ? "ok" : batchd_err_name(res->err), 1);
    if (res->start_ns != 0 && res->end_ns >= res->start_ns) {
        metrics_observe(m, METRICS_JOB_SECONDS, name, (double)(res->end_ns - res->start_ns) / 1e9);
    }
}

void observe_block(struct server *s, const struct prepared *p, uint64_t index, uint64_t count,
                   uint64_t busy_ns)
{
    struct metrics *m = s->metrics;
    if (m == NULL || count == 0) {
        return;
    }
    const struct op *op = prepared_op_of(p, index); /* a block holds jobs of one op */
    const char *name = op != NULL ? op->name : "none";
    metrics_add(m, METRICS_JOBS, name, "ok", (double)count);
    /* Timed as a whole: each job counts with the block's mean duration. */
    metrics_observe_n(m, METRICS_JOB_SECONDS, name, (double)busy_ns / 1e9 / (double)count, count);
}

void observe_request_done(struct request *r)
{
    struct metrics *m = r->srv->metrics;
    /* The route label: the known path, or "other" (so that scanners cannot mint series). */
    const char *route = r->path != NULL ? r->path : "other";
    char status[16];

    if (m == NULL) {
        return;
    }
    snprintf(status, sizeof status, "%d", r->status);
    metrics_add(m, METRICS_HTTP_REQUESTS, route, status, 1);
    metrics_add(m, METRICS_HTTP_IN, route, NULL, (double)(r->upload ? upload_bytes(r->upload) : 0));
    metrics_add(m, METRICS_HTTP_OUT, route, NULL, (double)r->bytes_out);
    if (r->route == ROUTE_BATCHES && r->status != 0 && strcmp(r->method, "POST") == 0) {
        const char *outcome = "refused";
        if (r->status == 202 || (r->status == 200 && r->res.active)) {
            outcome = "stored"; /* SPEC §8: its jobs are counted as they run, not with this */
        } else if (r->status == 200) {
            outcome = r->done ? "completed" : (r->client_gone ? "cancelled" : "cut");
        }
        metrics_add(m, METRICS_BATCHES, prepared_op_label(&r->prep), outcome, 1);
    }
}

int observe_render(struct server *s, struct buf *out)
{
    struct dispatch_stats st;
    struct metrics_gauges g = {0};
    int up = 0;

    if (s->metrics == NULL) {
        return -1;
    }
    dispatch_get_stats(s->dispatch, &st);
    /* The dispatcher keeps the restart counters; mirror them into the registry. */
    metrics_set(s->metrics, METRICS_WORKER_RESTARTS, "crash", NULL, (double)st.restarts_crash);
    metrics_set(s->metrics, METRICS_WORKER_RESTARTS, "timeout", NULL, (double)st.restarts_timeout);
    metrics_set(s->metrics, METRICS_WORKER_RESTARTS, "recycle", NULL, (double)st.restarts_recycle);
    up = dispatch_workers_up(s->dispatch);
    g.queue_depth = dispatch_queued_jobs(s->dispatch);
    g.workers_busy = (uint64_t)st.busy_workers;
    g.workers_idle = up > st.busy_workers ? (uint64_t)(up - st.busy_workers) : 0;
    g.batches_in_flight = (uint64_t)dispatch_batches(s->dispatch);
    g.upload_bytes_held = s->upload_held;
    g.draining = s->draining;
    if (s->store != NULL) {
        struct store_stats ss;
        uint64_t by_state[STORE_NSTATES];
        store_stats_get(s->store, &ss);
        g.store_bytes = ss.bytes;
        g.store_pending_rows = ss.pending_rows;
        g.store_rows = ss.rows;
        g.store_commits = ss.flushes;
        g.store_commit_p50_s = store_stats_quantile_ms(&ss, 0.5) / 1000.0;
        g.store_commit_p99_s = store_stats_quantile_ms(&ss, 0.99) / 1000.0;
        g.store_commit_sum_s = ss.flush_total_ms / 1000.0;
        if (store_is_cluster(s->store)) {
            struct store_cluster_stats cs;
            store_cluster_stats_get(s->store, &cs);
            g.replica = s->cfg.replica_name;
            g.redis_up = cs.up;
            g.chunks_claimed = cs.claimed;
            g.chunks_reclaimed = cs.reclaimed;
            g.chunks_lost = cs.lost;
            g.chunks_running = cs.running;
            g.results_recorded = cs.recorded;
            g.results_duplicate = cs.duplicates;
        }
        if (store_batch_counts(s->store, by_state) == 0) {
            static const int shown[] = {STORE_QUEUED, STORE_RUNNING, STORE_DONE, STORE_CANCELLED};
            for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++) {
                g.stored_batches[i] = by_state[shown[i]];
            }
        }
    }
    return metrics_render(s->metrics, &g, out);
}

void observe_worker_event(void *ud, const struct dispatch_worker_event *ev)
{
    (void)ud;
    char slot[16], pid[24];
    int crash = ev->cause != NULL && strcmp(ev->cause, "crash") == 0;
    int chunk = strcmp(ev->event, "chunk") == 0;

    if (chunk && !log_enabled(LOG_DEBUG)) {
        return; /* one per chunk: cheap to skip, not to format */
    }
    snprintf(slot, sizeof slot, "%d", ev->slot);
    snprintf(pid, sizeof pid, "%ld", ev->pid);
    if (chunk) {
        char first[24], njobs[24];
        snprintf(first, sizeof first, "%llu", (unsigned long long)ev->first_job);
        snprintf(njobs, sizeof njobs, "%llu", (unsigned long long)ev->njobs);
        log_event("debug", "chunk_sent", "worker", slot, "pid", pid, "first_job", first, "jobs",
                  njobs, NULL);
        return;
    }
    log_event(crash ? "warn" : "info", ev->event[0] == 's' ? "worker_start" : "worker_exit",
              "worker", slot, "pid", pid, "cause", ev->cause, "status", ev->status, NULL);
}
