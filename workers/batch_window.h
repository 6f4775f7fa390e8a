/* The dispatcher's batches: the ring of live batches, the jobs each still has to send (never
 * sent, or to send again), the ordering window that holds results until their turn, the
 * "cancelled" answers past a deadline, and a batch's end. It knows nothing of workers:
 * slot.c hands it results, dispatch.c picks batches and watches the clock. Private to the
 * dispatcher (dispatch.c, slot.c); callers use dispatch.h. */
#ifndef BATCHD_WORKERS_BATCH_WINDOW_H
#define BATCHD_WORKERS_BATCH_WINDOW_H

#include "dispatch.h"

#include <stddef.h>
#include <stdint.h>

struct dispatch;

/* A result waiting for its turn (input order). */
struct held {
    int ready;
    uint64_t count; /* > 0: a block of COUNT results from this index (text = its lines) */
    int err;
    int worker;
    char *text;
    size_t text_len;
    struct result_blob *blobs;
    size_t nblobs;
    size_t bytes; /* text and blob bytes, counted in the batch's held_bytes */
    uint64_t start_ns, end_ns;
};

struct dispatch_batch {
    struct dispatch *d;
    struct dispatch_batch_desc desc;
    struct dispatch_batch *prev, *next; /* ring of live batches */
    uint64_t next_job;                  /* first index never sent */
    uint64_t *retry;                    /* indices to send again (their worker died) */
    size_t nretry, retry_cap;
    uint64_t delivered;
    size_t held_bytes; /* sum of the ring's held results' bytes */
    uint64_t base;     /* input order: next index to deliver */
    struct held *ring;
    size_t window;
    uint64_t inflight_jobs;
    int inflight_chunks;
    size_t chunksize;
    int paused, cancelled, ending, in_pump;
    int stopped; /* ending because its owner cancelled it (not its deadline) */
    uint64_t started_ns, deadline_ns;
    uint64_t ok, failed, busy_ns;
    uint64_t serial; /* unique in the process's life: workers key per-batch state on it */
};

/* A new batch of D for DESC, running with chunks of CHUNKSIZE (resolved, > 0), in D's ring
 * and counts. Returns it (owned by D) or NULL. */
struct dispatch_batch *batch_create(struct dispatch *d, const struct dispatch_batch_desc *desc,
                                    size_t chunksize);

/* Frees B at once (D's counts are not touched: the dispatcher is going away). */
void batch_free(struct dispatch_batch *b);

/* Frees B if it is cancelled and nothing of it is out or pinned. */
void batch_maybe_free(struct dispatch_batch *b);

/* Takes B out of its dispatcher's ring (no-op when it is not in it). */
void batch_ring_remove(struct dispatch *d, struct dispatch_batch *b);

/* 1 when B may send jobs now (not paused, ended or past its window). */
int batch_has_work(const struct dispatch_batch *b);

/* Takes up to WANT indices of B to send (those to send again first, then new ones inside
 * the window) into OUT. Returns how many. */
size_t batch_take_jobs(struct dispatch_batch *b, uint64_t *out, size_t want);

/* INDEX must be sent again (its worker died, or its chunk was cut short). Returns 0 or -1. */
int batch_retry_push(struct dispatch_batch *b, uint64_t index);

/* A job's outcome: delivered now, or held until its turn (copied). */
void batch_take_result(struct dispatch_batch *b, const struct job_result *r);

/* A block of COUNT successful results from INDEX (NDJSON lines TEXT/LEN). */
void batch_take_block(struct dispatch_batch *b, uint64_t index, uint64_t count, const char *text,
                      size_t len, uint64_t busy_ns);

/* Answers job INDEX with error ERR and message MSG (borrowed), run by WORKER or -1. */
void batch_fail_job(struct dispatch_batch *b, uint64_t index, int err, const char *msg, int worker);

/* Delivers what is ready and finishes B when every job is answered. B may be freed on
 * return. */
void batch_pump(struct dispatch_batch *b);

/* INDEX of B was sent but never started (its worker died before): answered "cancelled"
 * past the deadline, sent again otherwise (nothing, once B is cancelled). */
void batch_requeue(struct dispatch_batch *b, uint64_t index);

/* 1 if B's deadline passed and some of its jobs still wait for their "cancelled" answer. */
int batch_synth_left(const struct dispatch_batch *b);

#endif
