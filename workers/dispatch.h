/* The dispatcher: queues the jobs of every batch, cuts them into chunks, hands chunks to idle
 * workers round-robin between batches (fairness), collects results, puts them back in input
 * order when asked (in a bounded window), enforces per-job timeouts and batch deadlines, and
 * heals the pool when a worker dies. One thread runs it (the server's event loop); it knows
 * nothing of HTTP: the batch owner gives callbacks. */
#ifndef BATCHD_WORKERS_DISPATCH_H
#define BATCHD_WORKERS_DISPATCH_H

#include "../api/job.h"
#include "ops/ops.h"
#include "worker.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct dispatch;
struct dispatch_batch;

/* A worker started or exited, for the owner's logs. Borrowed for the call. */
struct dispatch_worker_event {
    int slot;
    long pid;
    const char *event;         /* "start", "exit" or "chunk" (a chunk of jobs sent to it) */
    const char *cause;         /* exit: "crash", "timeout", "recycle" or "drain"; else NULL */
    const char *status;        /* exit: how it ended ("exit status 0", "SIGKILL"); else NULL */
    uint64_t first_job, njobs; /* chunk: the index of its first job, and its job count */
};

struct dispatch_config {
    int workers;
    uint64_t recycle_after;      /* jobs per worker before it is replaced; 0 = never */
    uint64_t max_queued_jobs;    /* over all batches, not yet finished */
    int max_batches;             /* batches at once */
    uint64_t chunk_target_ns;    /* auto chunks aim at this much work (0 = 2 ms) */
    struct worker_config worker; /* every worker's limits and folders (all 0: none) */
    /* Called when a worker starts or exits (may be NULL), with UD. */
    void (*on_worker)(void *ud, const struct dispatch_worker_event *ev);
    void *ud;
};

/* One job, as the batch owner describes it. Everything is borrowed until the batch ends. */
struct dispatch_job {
    const struct op *op;
    const json_t *value;  /* the input (encoded as JSON for the worker); may be NULL */
    int has_int;          /* instead of value: the input is the integer ival */
    int64_t ival;
    const json_t *params; /* the job's own params, or NULL for the batch's */
    const char *name;     /* output "path" stem (api/outname.h), or NULL */
    uint64_t blob_off, blob_len; /* bytes in the batch's blob fd */
};

struct dispatch_summary {
    uint64_t jobs, ok, failed;
    size_t chunksize;
    int workers;
    uint64_t elapsed_ns, busy_ns;
    int deadline_hit;
};

enum dispatch_order { DISPATCH_ORDER_INPUT, DISPATCH_ORDER_COMPLETED };

struct dispatch_batch_desc {
    uint64_t njobs;
    const json_t *params;  /* shared params, borrowed; may be NULL */
    size_t chunksize;      /* 0 = auto */
    enum dispatch_order order;
    uint64_t timeout_ms;   /* per job; 0 = none */
    uint64_t deadline_ms;  /* whole batch; 0 = none */
    int want_binary;       /* image results as blobs (tar output) */
    int blob_fd;           /* memfd holding input bytes, borrowed; -1 = none */
    /* Describes job I. Called when the job is cut into a chunk (maybe more than once). */
    void (*job_at)(void *ud, uint64_t i, struct dispatch_job *job);
    /* Optional: every job is the integer INTS[i] for op INTS_OP, without params of its own
     * or blobs; chunks then go to the workers as 16 bytes a job, without job_at. */
    const int64_t *ints;
    const struct op *ints_op;
    /* One result, in the batch's order. Exactly once per job. */
    void (*on_result)(void *ud, const struct job_result *r);
    /* Optional: COUNT consecutive successful results from INDEX at once, as NDJSON lines
     * ({"index":I,"result":R}\n each, TEXT/LEN), BUSY_NS their summed run time. When set,
     * workers may answer tiny jobs this way (the server writes NDJSON without timing). */
    void (*on_block)(void *ud, uint64_t index, uint64_t count, const char *text, size_t len,
                     uint64_t busy_ns);
    /* After the last result. The batch is freed on return: drop every pointer to it. */
    void (*on_done)(void *ud, const struct dispatch_summary *s);
    void *ud;
};

/* Starts the pool: workers are this very binary run with --worker (see pool.c).
 * Returns new (free with dispatch_destroy) or NULL. */
struct dispatch *dispatch_create(const struct dispatch_config *cfg);

/* Kills the workers and frees everything; live batches get no more callbacks. */
void dispatch_destroy(struct dispatch *d);

/* The fd to poll for readability (an epoll set of the worker sockets). */
int dispatch_fd(const struct dispatch *d);

/* Does every pending piece of work: reads results, spawns missing workers, enforces
 * timeouts and deadlines, feeds idle workers. Never blocks. Call when dispatch_fd is
 * readable or dispatch_timeout_ms has passed. */
void dispatch_run(struct dispatch *d);

/* Milliseconds until dispatch_run must be called again even without fd activity; -1 for
 * none. */
int dispatch_timeout_ms(const struct dispatch *d);

/* Queues a batch. Returns it (owned by the dispatcher, freed after on_done or after
 * cancellation), or NULL with *ERR = -BATCHD_E_OVERLOADED (queue or batch limit) or
 * -BATCHD_E_INTERNAL. No callback runs before dispatch_run. */
struct dispatch_batch *dispatch_submit(struct dispatch *d, const struct dispatch_batch_desc *desc,
                                       int *err);

/* The client is gone: drop the batch's queued jobs; no callback will run again. Jobs
 * already running finish in their workers and their results are thrown away. */
void dispatch_batch_cancel(struct dispatch_batch *b);

/* The owner cancels the batch but still wants its answers: running jobs are stopped (their
 * workers killed and replaced) and fail with cancelled, queued ones fail cancelled, then
 * on_done runs with the summary. Callbacks go on as usual until then. */
void dispatch_batch_stop(struct dispatch_batch *b);

/* Jobs of B running in a worker right now. */
int dispatch_batch_running(const struct dispatch_batch *b);

/* The owner's output is backed up (PAUSED = 1): send no more of this batch's jobs to
 * workers; 0 resumes. */
void dispatch_batch_set_paused(struct dispatch_batch *b, int paused);

/* The chunk size the batch runs with (auto resolved). */
size_t dispatch_batch_chunksize(const struct dispatch_batch *b);

/* Workers currently up, and the configured count. */
int dispatch_workers_up(const struct dispatch *d);
int dispatch_workers(const struct dispatch *d);

/* Jobs queued or running over all batches; live batches. */
uint64_t dispatch_queued_jobs(const struct dispatch *d);
int dispatch_batches(const struct dispatch *d);

/* Counters for metrics and logs. */
struct dispatch_stats {
    uint64_t restarts_crash, restarts_timeout, restarts_recycle;
    int busy_workers;
};
void dispatch_get_stats(const struct dispatch *d, struct dispatch_stats *s);

/* Stops spawning workers and asks idle ones to exit (graceful drain). */
void dispatch_drain(struct dispatch *d);

#endif
