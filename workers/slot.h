/* The dispatcher's worker slots: one per worker of the pool, with the chunk it runs, the RUN
 * frame on its way out, the RESULTS bytes on their way in, and what happens when its worker
 * dies, overruns a timeout or stops answering. It spawns and kills only through pool.c, and
 * does not choose which batch a slot serves (dispatch.c does). Private to the dispatcher. */
#ifndef BATCHD_WORKERS_SLOT_H
#define BATCHD_WORKERS_SLOT_H

#include "../api/buf.h"
#include "ops/ops.h"

#include <stddef.h>
#include <stdint.h>

struct dispatch;
struct dispatch_batch;

enum slot_state { SLOT_EMPTY, SLOT_IDLE, SLOT_BUSY, SLOT_RETIRING };

struct slot {
    enum slot_state state;
    struct buf in;  /* bytes read from the worker, not yet parsed */
    struct buf out; /* the RUN frame being sent */
    size_t out_off;
    int out_fd; /* blob fd to attach to the first byte of out, or -1 */
    struct dispatch_batch *batch;
    uint64_t *jobs;        /* the chunk's job indices */
    const struct op **ops; /* and their ops (for the cost model) */
    size_t njobs, ndone, jobs_cap;
    uint64_t jobs_done; /* over this worker's life, for recycling */
    uint64_t spawn_retry_ns;
    /* While busy: the last sign of life (see slot_check_time), the control page's job start
     * seen then, and whether the worker had announced its pid. */
    uint64_t alive_ns, seen_started_ns;
    int announced;
};

/* Sets up / frees the buffers of slot S (its worker is the pool's business). */
void slot_init(struct slot *s);
void slot_cleanup(struct slot *s);

/* Starts a worker in empty slot I unless draining or a failed spawn is being waited out. */
void slot_spawn(struct dispatch *d, int i);

/* Idle slot I takes the next chunk of B and starts sending it. Returns the jobs taken (0:
 * none, the slot stays idle). */
size_t slot_send_chunk(struct dispatch *d, int i, struct dispatch_batch *b);

/* Sends what is left of slot I's RUN frame (when its socket is writable). */
void slot_flush(struct dispatch *d, int i);

/* Reads and handles what slot I's worker sent (when its socket is readable). */
void slot_read(struct dispatch *d, int i);

/* Busy slot I: fails its worker when its job overran the batch's timeout or the worker
 * stopped answering. NOW is CLOCK_MONOTONIC ns. */
void slot_check_time(struct dispatch *d, int i, uint64_t now);

/* Kills (if needed) and reaps the worker of slot I, answers the job it was running with
 * CAUSE_ERR (message CAUSE, or the exit status when NULL), sends the rest of its chunk
 * again (or cancels it, past a deadline) and respawns. */
void slot_fail(struct dispatch *d, int i, int cause_err, const char *cause);

#endif
