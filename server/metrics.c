/* Prometheus counters and histograms for GET /metrics: a fixed table of families, each a
 * small open-addressed hash of series keyed by label values, rendered in insertion order.
 * It knows nothing of HTTP or workers: the server calls metrics_add at the events it sees
 * and samples the gauges itself. */
#include "metrics.h"

#include <stddef.h>

#include "../api/jsonw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LABEL_MAX 64
#define HASH_SLOTS 1024 /* a power of two, twice METRICS_MAX_SERIES: probes stay short */

enum family_type { COUNTER, HISTOGRAM };

struct family_def {
    const char *name;
    enum family_type type;
    const char *label[2];
    const char *help;
};

static const struct family_def family_defs[METRICS_FAMILY_COUNT] = {
#define XX(e, n, t, l1, l2, h) [METRICS_##e] = {n, t, {l1, l2}, h},
    METRICS_MAP(XX)
#undef XX
};

/* Upper bounds of the job-duration buckets, in seconds; +Inf is implied. From a 0.1 ms
 * arithmetic job to the 60 s default job limit. */
static const double bucket_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
#define NBUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))

struct series {
    char label[2][LABEL_MAX];
    double value;               /* counter value, or histogram sum */
    uint64_t count;             /* histogram: observations */
    uint64_t buckets[NBUCKETS]; /* histogram: observations <= bucket_le[i] (not cumulative) */
};

struct family {
    struct series *series; /* in insertion order */
    size_t n, cap;
    int32_t slot[HASH_SLOTS]; /* index into series, or -1 */
};

struct metrics {
    struct family fam[METRICS_FAMILY_COUNT];
    double start_time; /* unix seconds, for process_start_time_seconds */
};

struct metrics *metrics_create(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    struct timespec ts;

    if (m == NULL) {
        return NULL;
    }
    for (size_t f = 0; f < METRICS_FAMILY_COUNT; f++) {
        for (size_t i = 0; i < HASH_SLOTS; i++) {
            m->fam[f].slot[i] = -1;
        }
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    return m;
}

void metrics_destroy(struct metrics *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t f = 0; f < METRICS_FAMILY_COUNT; f++) {
        free(m->fam[f].series);
    }
    free(m);
}

/* FNV-1a over both labels, with a separator so ("ab","c") and ("a","bc") differ. */
static uint32_t label_hash(const char *l1, const char *l2)
{
    uint32_t h = 2166136261u;
    const char *parts[2] = {l1 ? l1 : "", l2 ? l2 : ""};

    for (int p = 0; p < 2; p++) {
        for (const char *c = parts[p]; *c != '\0'; c++) {
            h = (h ^ (uint8_t)*c) * 16777619u;
        }
        h = (h ^ 0xffu) * 16777619u;
    }
    return h;
}

static int label_eq(const char stored[LABEL_MAX], const char *l)
{
    return strncmp(stored, l ? l : "", LABEL_MAX - 1) == 0;
}

/* The series FAMILY{L1,L2}: found, or created when CREATE. NULL when absent (and not
 * created), when the family is full, or out of memory. */
static struct series *series_get(struct family *fam, const char *l1, const char *l2, int create)
{
    uint32_t i = label_hash(l1, l2) & (HASH_SLOTS - 1);
    struct series *s = NULL;

    while (fam->slot[i] >= 0) {
        s = &fam->series[fam->slot[i]];
        if (label_eq(s->label[0], l1) && label_eq(s->label[1], l2)) {
            return s;
        }
        i = (i + 1) & (HASH_SLOTS - 1);
    }
    if (!create || fam->n >= METRICS_MAX_SERIES) {
        return NULL;
    }
    if (fam->n == fam->cap) {
        size_t cap = fam->cap ? fam->cap * 2 : 16;
        struct series *grown = realloc(fam->series, cap * sizeof(*grown));
        if (grown == NULL) {
            return NULL;
        }
        fam->series = grown;
        fam->cap = cap;
    }
    s = &fam->series[fam->n];
    memset(s, 0, sizeof(*s));
    snprintf(s->label[0], LABEL_MAX, "%s", l1 ? l1 : "");
    snprintf(s->label[1], LABEL_MAX, "%s", l2 ? l2 : "");
    fam->slot[i] = (int32_t)fam->n;
    fam->n++;
    return s;
}

int metrics_add(struct metrics *m, enum metrics_family family, const char *l1, const char *l2,
                double v)
{
    struct series *s = NULL;

    if (family >= METRICS_FAMILY_COUNT || family_defs[family].type != COUNTER || !(v >= 0)) {
        return -1;
    }
    s = series_get(&m->fam[family], l1, l2, 1);
    if (s == NULL) {
        return m->fam[family].n >= METRICS_MAX_SERIES ? 0 : -1;
    }
    s->value += v;
    return 0;
}

int metrics_set(struct metrics *m, enum metrics_family family, const char *l1, const char *l2,
                double v)
{
    struct series *s = NULL;

    if (family >= METRICS_FAMILY_COUNT || family_defs[family].type != COUNTER || !(v >= 0)) {
        return -1;
    }
    s = series_get(&m->fam[family], l1, l2, 1);
    if (s == NULL) {
        return m->fam[family].n >= METRICS_MAX_SERIES ? 0 : -1;
    }
    if (v > s->value) {
        s->value = v;
    }
    return 0;
}

int metrics_observe(struct metrics *m, enum metrics_family family, const char *l1, double seconds)
{
    return metrics_observe_n(m, family, l1, seconds, 1);
}

int metrics_observe_n(struct metrics *m, enum metrics_family family, const char *l1, double seconds,
                      uint64_t n)
{
    struct series *s = NULL;

    if (family >= METRICS_FAMILY_COUNT || family_defs[family].type != HISTOGRAM) {
        return -1;
    }
    if (!(seconds >= 0) || isinf(seconds)) {
        seconds = 0; /* a clock step backwards: count the job, not a nonsense duration */
    }
    s = series_get(&m->fam[family], l1, NULL, 1);
    if (s == NULL) {
        return m->fam[family].n >= METRICS_MAX_SERIES ? 0 : -1;
    }
    s->count += n;
    s->value += seconds * (double)n;
    for (size_t b = 0; b < NBUCKETS; b++) {
        if (seconds <= bucket_le[b]) {
            s->buckets[b] += n;
            break;
        }
    }
    return 0;
}

double metrics_get(const struct metrics *m, enum metrics_family family, const char *l1,
                   const char *l2)
{
    struct series *s = NULL;

    if (family >= METRICS_FAMILY_COUNT) {
        return 0;
    }
    /* series_get does not modify the family when create is 0. */
    s = series_get((struct family *)&m->fam[family], l1, l2, 0);
    if (s == NULL) {
        return 0;
    }
    return family_defs[family].type == HISTOGRAM ? (double)s->count : s->value;
}

/* Appends a label value with the exposition format's escapes (\\, \", \n). */
static int put_label_value(struct buf *out, const char *v)
{
    for (const char *c = v; *c != '\0'; c++) {
        int rc = 0;
        if (*c == '\\') {
            rc = buf_adds(out, "\\\\");
        } else if (*c == '"') {
            rc = buf_adds(out, "\\\"");
        } else if (*c == '\n') {
            rc = buf_adds(out, "\\n");
        } else {
            rc = buf_add(out, c, 1);
        }
        if (rc != 0) {
            return -1;
        }
    }
    return 0;
}

/* Appends `{l1="v1",l2="v2"` (no closing brace, so a caller can add `,le=...`); nothing
 * when the family has no labels. Returns 1 if a brace was opened, 0 if not, -1 when full. */
static int put_labels(struct buf *out, const struct family_def *def, const struct series *s)
{
    int opened = 0;

    for (int l = 0; l < 2; l++) {
        if (def->label[l] == NULL) {
            continue;
        }
        if (buf_printf(out, "%s%s=\"", opened ? "," : "{", def->label[l]) != 0 ||
            put_label_value(out, s->label[l]) != 0 || buf_adds(out, "\"") != 0) {
            return -1;
        }
        opened = 1;
    }
    return opened;
}

/* Appends a sample value: integers without a fraction, others in shortest form. */
static int put_value(struct buf *out, double v)
{
    char num[32];

    if (v >= 0 && v < 9007199254740992.0 && v == floor(v)) {
        return buf_printf(out, " %.0f\n", v);
    }
    if (jsonw_format_double(num, v) < 0) {
        return buf_adds(out, " NaN\n");
    }
    return buf_printf(out, " %s\n", num);
}

static int render_counter(struct buf *out, const struct family_def *def, const struct series *s)
{
    int opened = 0;

    if (buf_adds(out, def->name) != 0) {
        return -1;
    }
    opened = put_labels(out, def, s);
    if (opened < 0 || (opened && buf_adds(out, "}") != 0)) {
        return -1;
    }
    return put_value(out, s->value);
}

static int render_histogram(struct buf *out, const struct family_def *def, const struct series *s)
{
    uint64_t cumulative = 0;
    int opened = 0;

    for (size_t b = 0; b <= NBUCKETS; b++) {
        char le[32] = "+Inf";
        if (b < NBUCKETS) {
            cumulative += s->buckets[b];
            snprintf(le, sizeof(le), "%g", bucket_le[b]);
        } else {
            cumulative = s->count;
        }
        if (buf_printf(out, "%s_bucket", def->name) != 0) {
            return -1;
        }
        opened = put_labels(out, def, s);
        if (opened < 0 || buf_printf(out, "%sle=\"%s\"} %llu\n", opened ? "," : "{", le,
                                     (unsigned long long)cumulative) != 0) {
            return -1;
        }
    }
    for (int part = 0; part < 2; part++) {
        if (buf_printf(out, "%s_%s", def->name, part == 0 ? "sum" : "count") != 0) {
            return -1;
        }
        opened = put_labels(out, def, s);
        if (opened < 0 || (opened && buf_adds(out, "}") != 0) ||
            put_value(out, part == 0 ? s->value : (double)s->count) != 0) {
            return -1;
        }
    }
    return 0;
}

static int render_gauge(struct buf *out, const char *name, const char *help, const char *type,
                        double v)
{
    if (buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s", name, help, name, type, name) != 0) {
        return -1;
    }
    return put_value(out, v);
}

/* The store's figures: size, queue, commits (a summary: its quantiles come from the
 * store's own histogram) and its batches by state. */
static int render_store(struct buf *out, const struct metrics_gauges *g)
{
    static const char *const states[] = {"queued", "running", "done", "cancelled"};
    if (render_gauge(out, "batchd_store_bytes",
                     "Bytes the store holds (batch documents, uploaded inputs, results, "
                     "summaries), as counted against --max-stored-bytes",
                     "gauge", (double)g->store_bytes) != 0 ||
        render_gauge(out, "batchd_store_pending_rows",
                     "Results queued for the store and not yet committed", "gauge",
                     (double)g->store_pending_rows) != 0 ||
        render_gauge(out, "batchd_store_rows_total", "Results committed to the store since start",
                     "counter", (double)g->store_rows) != 0 ||
        render_gauge(out, "batchd_store_commits_total",
                     "Write transactions the store committed since start (each one fsync)",
                     "counter", (double)g->store_commits) != 0 ||
        buf_printf(out, "# HELP batchd_store_commit_seconds Time a store write transaction took to "
                        "commit (fsync included), since start\n"
                        "# TYPE batchd_store_commit_seconds summary\n") != 0 ||
        buf_adds(out, "batchd_store_commit_seconds{quantile=\"0.5\"}") != 0 ||
        put_value(out, g->store_commit_p50_s) != 0 ||
        buf_adds(out, "batchd_store_commit_seconds{quantile=\"0.99\"}") != 0 ||
        put_value(out, g->store_commit_p99_s) != 0 ||
        buf_adds(out, "batchd_store_commit_seconds_sum") != 0 ||
        put_value(out, g->store_commit_sum_s) != 0 ||
        buf_adds(out, "batchd_store_commit_seconds_count") != 0 ||
        put_value(out, (double)g->store_commits) != 0 ||
        buf_printf(out, "# HELP batchd_stored_batches Stored batches (SPEC 8), by state\n"
                        "# TYPE batchd_stored_batches gauge\n") != 0) {
        return -1;
    }
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        if (buf_printf(out, "batchd_stored_batches{state=\"%s\"} %llu\n", states[i],
                       (unsigned long long)g->stored_batches[i]) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Cluster mode: this replica's share, each line labelled with its name (SPEC §9). The
 * latency of Redis is the store's commit summary above: a write's round trip. */
static int render_cluster(struct buf *out, const struct metrics_gauges *g)
{
    static const struct {
        const char *name, *help, *type;
        size_t off;
    } rows[] = {
        {"batchd_cluster_chunks_claimed_total", "Chunks this replica claimed first-hand", "counter",
         offsetof(struct metrics_gauges, chunks_claimed)},
        {"batchd_cluster_chunks_reclaimed_total",
         "Chunks this replica took over from a replica that stopped touching them", "counter",
         offsetof(struct metrics_gauges, chunks_reclaimed)},
        {"batchd_cluster_chunks_lost_total",
         "Chunks another replica took over while this one still ran them", "counter",
         offsetof(struct metrics_gauges, chunks_lost)},
        {"batchd_cluster_chunks_running", "Chunks running on this replica now", "gauge",
         offsetof(struct metrics_gauges, chunks_running)},
        {"batchd_cluster_results_recorded_total", "Results this replica recorded in Redis",
         "counter", offsetof(struct metrics_gauges, results_recorded)},
        {"batchd_cluster_duplicates_total",
         "Results refused as the second of their job (a chunk that ran twice)", "counter",
         offsetof(struct metrics_gauges, results_duplicate)},
    };
    if (g->replica == NULL || g->replica[0] == '\0') {
        return 0;
    }
    if (buf_printf(out,
                   "# HELP batchd_redis_up 1 while this replica's connection to Redis works\n"
                   "# TYPE batchd_redis_up gauge\nbatchd_redis_up{replica=\"%s\"} %d\n",
                   g->replica, g->redis_up ? 1 : 0) != 0) {
        return -1;
    }
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint64_t v;
        memcpy(&v, (const char *)g + rows[i].off, sizeof v);
        if (buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s{replica=\"%s\"} %llu\n", rows[i].name,
                       rows[i].help, rows[i].name, rows[i].type, rows[i].name, g->replica,
                       (unsigned long long)v) != 0) {
            return -1;
        }
    }
    return buf_printf(out,
                      "# HELP batchd_redis_latency_seconds Round trip of this replica's Redis "
                      "writes (scripts), since start\n# TYPE batchd_redis_latency_seconds summary\n"
                      "batchd_redis_latency_seconds{replica=\"%s\",quantile=\"0.5\"}",
                      g->replica) != 0 ||
                   put_value(out, g->store_commit_p50_s) != 0 ||
                   buf_printf(out, "batchd_redis_latency_seconds{replica=\"%s\",quantile=\"0.99\"}",
                              g->replica) != 0 ||
                   put_value(out, g->store_commit_p99_s) != 0 ||
                   buf_printf(out, "batchd_redis_latency_seconds_sum{replica=\"%s\"}",
                              g->replica) != 0 ||
                   put_value(out, g->store_commit_sum_s) != 0 ||
                   buf_printf(out, "batchd_redis_latency_seconds_count{replica=\"%s\"}",
                              g->replica) != 0 ||
                   put_value(out, (double)g->store_commits) != 0
               ? -1
               : 0;
}

int metrics_render(const struct metrics *m, const struct metrics_gauges *g, struct buf *out)
{
    for (size_t f = 0; f < METRICS_FAMILY_COUNT; f++) {
        const struct family_def *def = &family_defs[f];
        const struct family *fam = &m->fam[f];
        if (buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", def->name, def->help, def->name,
                       def->type == COUNTER ? "counter" : "histogram") != 0) {
            return -1;
        }
        for (size_t i = 0; i < fam->n; i++) {
            int rc = def->type == COUNTER ? render_counter(out, def, &fam->series[i])
                                          : render_histogram(out, def, &fam->series[i]);
            if (rc != 0) {
                return -1;
            }
        }
    }
    if (render_gauge(out, "batchd_queue_depth",
                     "Jobs accepted and not yet finished (queued or running)", "gauge",
                     (double)g->queue_depth) != 0 ||
        render_gauge(out, "batchd_batches_in_flight", "Batches accepted and not yet ended", "gauge",
                     (double)g->batches_in_flight) != 0 ||
        buf_printf(out,
                   "# HELP batchd_workers Worker processes, by state\n"
                   "# TYPE batchd_workers gauge\n"
                   "batchd_workers{state=\"busy\"} %llu\n"
                   "batchd_workers{state=\"idle\"} %llu\n",
                   (unsigned long long)g->workers_busy, (unsigned long long)g->workers_idle) != 0 ||
        render_gauge(out, "batchd_upload_bytes_held",
                     "Request body bytes held at once over all connections (JSON buffers and "
                     "uploaded files), as counted against --max-upload-memory",
                     "gauge", (double)g->upload_bytes_held) != 0 ||
        render_gauge(out, "batchd_draining", "1 while the server drains after SIGTERM", "gauge",
                     g->draining ? 1 : 0) != 0 ||
        render_store(out, g) != 0 || render_cluster(out, g) != 0 ||
        render_gauge(out, "process_start_time_seconds",
                     "Start time of the process since the Unix epoch in seconds", "gauge",
                     m->start_time) != 0) {
        return -1;
    }
    return 0;
}
