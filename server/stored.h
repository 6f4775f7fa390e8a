/* Stored batches on the server side (SPEC §8): batches that outlive their connection. It runs
 * the batches of the store (async or keyed ones, and the unfinished ones found at start) on
 * the dispatcher and records their results in the store; results.c's streams read them back.
 * server.c opens the store and calls the first four; submit.c and batches.c the others.
 * Private to server/. */
#ifndef BATCHD_SERVER_STORED_H
#define BATCHD_SERVER_STORED_H

#include <stdint.h>

struct server;
struct store;
struct store_batch;
struct upload;

/* The store committed writes of batch ID (its on_progress): a batch whose end is now
 * committed is no longer live here. */
void stored_on_progress(struct server *s, const char *id);

/* After the store and the dispatcher exist: carries on every unfinished batch of the store
 * (jobs without a recorded result run again; a batch whose cancel was recorded ends as
 * cancelled). Returns 0, or -1 when the store cannot be read. */
int stored_resume(struct server *s);

/* The server stops: the dispatcher batches of stored batches are dropped without recording
 * anything (their jobs without results run again on the next start) and their handles are
 * given back. Call before store_close. */
void stored_stop_all(struct server *s);

/* Stored batches live in this process (a drain waits for none of them: they carry on after
 * a restart). */
int stored_running(const struct server *s);

/* The creation of batch ID committed: it starts now, with SB (its handle, taken over). */
void stored_started(struct server *s, const char *id, struct store_batch *sb);

/* Batches waiting for room in the dispatcher get it if there is some now (each loop turn). */
void stored_pump(struct server *s);

/* What the store does not know yet of a live batch: counts not yet committed, and jobs
 * running now. */
struct stored_live {
    uint64_t njobs, ok, failed, running;
    uint64_t done_before; /* jobs answered before this process took it on (for the rate) */
    int started;          /* on the dispatcher (else waiting for room) */
    int64_t started_ms;   /* when, wall clock (0: not yet) */
    int cancelling;       /* a cancel was asked; the summary is coming */
    int ended;            /* its summary is queued, not yet committed */
    uint64_t progress_ms; /* the batch's "progress_ms" */
    double elapsed_s;     /* since it started running in this process */
};

/* Fills *OUT and returns 1 if batch ID runs in this process, else 0 (no owner check: the
 * caller has read the batch from the store for its owner first). */
int stored_live(const struct server *s, const char *id, struct stored_live *out);

/* Cancels live batch ID (SPEC §8 DELETE): the cancel is recorded, queued jobs fail with
 * cancelled, running ones are stopped, then the summary is recorded. Returns 0, or -1 when
 * ID is not live here. */
int stored_cancel(struct server *s, const char *id);

/* Rebuilds the upload of stored batch ID from the store: its batch JSON, and for a form its
 * files, whose names are in input 0 (a JSON array). Returns the upload, or NULL with *IO set
 * when the store could not be read now (else the batch cannot be rebuilt). */
struct upload *stored_read_upload(struct store *st, const char *id, int *io);

#endif
