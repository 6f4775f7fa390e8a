/* The dispatcher's round robin, timers and public API. A batch's jobs are cut into chunks
 * (auto size from the cost model, cost.c) and sent to idle workers, taking batches in turn,
 * so a small batch behind a huge one waits for at most one chunk per worker. The parts:
 * batch_window.c holds each batch's jobs and results (ordering window, deadline answers),
 * slot.c each worker's chunk, I/O and failures, frames.c the RUN/RESULTS codec. */
#include "dispatch.h"

#include "../api/errors.h"
#include "dispatch_internal.h"

#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define DISPATCH_MAX_WORKERS 1024

/* ---------------------------------------------------------------- round robin */

static void dispatch_feed(struct dispatch *d)
{
    if (d->ring == NULL) {
        return;
    }
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state != SLOT_IDLE) {
            continue;
        }
        /* Round robin: start after the batch served last. */
        struct dispatch_batch *start = d->ring->next, *b = start, *pick = NULL;
        do {
            if (batch_has_work(b)) {
                pick = b;
                break;
            }
            b = b->next;
        } while (b != start);
        if (pick == NULL) {
            return;
        }
        d->ring = pick;
        slot_send_chunk(d, i, pick);
    }
}

/* ---------------------------------------------------------------- timers */

/* B ends before its jobs do: its running jobs fail with ERR (their workers are stopped),
 * the others are cancelled. */
static void dispatch_end_batch(struct dispatch *d, struct dispatch_batch *b, int err,
                               const char *why)
{
    b->ending = 1;
    /* Pinned (in_pump) while its chunks fail: the pump after each one could finish and
     * free it under this loop. The one pump below does it all. */
    b->in_pump = 1;
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].batch == b && d->slots[i].state == SLOT_BUSY) {
            slot_fail(d, i, err, why);
        }
    }
    b->in_pump = 0;
    batch_pump(b);
}

static void dispatch_check_time(struct dispatch *d)
{
    uint64_t now = ipc_now_ns();
    /* Per-job timeouts and stalls: the control page says which job runs and since when. */
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state == SLOT_BUSY) {
            slot_check_time(d, i, now);
        }
    }
    struct dispatch_batch *b = d->ring;
    if (b == NULL) {
        return;
    }
    int n = d->nbatches;
    for (int k = 0; k < n && d->ring != NULL; k++) {
        struct dispatch_batch *next = b->next;
        if (!b->ending && b->deadline_ns != 0 && now >= b->deadline_ns) {
            dispatch_end_batch(d, b, -BATCHD_E_TIMEOUT,
                               "the batch deadline passed while this job ran");
            /* b may be gone now; continue from the saved next only if the ring survives. */
            if (d->ring == NULL) {
                break;
            }
        }
        b = next;
    }
}

/* Writes the next cancelled answers of deadline-ended batches: batch_pump writes a bounded
 * number at a time, so that a huge batch cannot flood its owner's buffers in one go, and
 * this carries on where it stopped. */
static void dispatch_pump_ending(struct dispatch *d)
{
    struct dispatch_batch *b = d->ring;
    int n = d->nbatches;
    for (int k = 0; k < n && d->ring != NULL && b != NULL; k++) {
        struct dispatch_batch *next = b->next;
        int last = next == b;
        if (batch_synth_left(b)) {
            batch_pump(b); /* may finish and free b; NEXT stays valid */
        }
        if (last) {
            break;
        }
        b = next;
    }
}

int dispatch_timeout_ms(const struct dispatch *d)
{
    if (d->ring != NULL) {
        const struct dispatch_batch *b = d->ring;
        do {
            if (batch_synth_left(b)) {
                return 0;
            }
            b = b->next;
        } while (b != d->ring);
    }
    int need = 0;
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state == SLOT_EMPTY && !d->draining) {
            return 50;
        }
        if (d->slots[i].state == SLOT_BUSY) {
            need = 1;
        }
    }
    if (d->ring != NULL) {
        need = 1;
    }
    return need ? 10 : -1;
}

/* ---------------------------------------------------------------- public */

struct dispatch *dispatch_create(const struct dispatch_config *cfg)
{
    if (cfg->workers < 1 || cfg->workers > DISPATCH_MAX_WORKERS) {
        return NULL;
    }
    struct dispatch *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return NULL;
    }
    d->cfg = *cfg;
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->pool = pool_create(cfg->workers, &cfg->worker);
    d->slots = calloc((size_t)cfg->workers, sizeof *d->slots);
    d->cost = cost_create();
    if (d->epfd < 0 || d->pool == NULL || d->slots == NULL || d->cost == NULL) {
        dispatch_destroy(d);
        return NULL;
    }
    for (int i = 0; i < cfg->workers; i++) {
        slot_init(&d->slots[i]);
        slot_spawn(d, i);
        if (d->slots[i].state != SLOT_IDLE) {
            dispatch_destroy(d);
            return NULL;
        }
    }
    return d;
}

void dispatch_destroy(struct dispatch *d)
{
    if (d == NULL) {
        return;
    }
    pool_destroy(d->pool);
    /* Cancelled batches wait out of the ring for their running chunks; the workers are
     * gone now, so free each of them once (several slots may hold the same one). This
     * runs before the ring's batches are freed, because slots may point at those too. */
    for (int i = 0; d->slots != NULL && i < d->cfg.workers; i++) {
        struct dispatch_batch *b = d->slots[i].batch;
        if (b == NULL || !b->cancelled) {
            continue;
        }
        for (int j = i; j < d->cfg.workers; j++) {
            if (d->slots[j].batch == b) {
                d->slots[j].batch = NULL;
            }
        }
        batch_free(b);
    }
    while (d->ring != NULL) {
        struct dispatch_batch *b = d->ring;
        batch_ring_remove(d, b);
        batch_free(b);
    }
    if (d->slots != NULL) {
        for (int i = 0; i < d->cfg.workers; i++) {
            slot_cleanup(&d->slots[i]);
        }
    }
    free(d->slots);
    cost_destroy(d->cost);
    if (d->epfd >= 0) {
        close(d->epfd);
    }
    free(d);
}

/* A batch without jobs never gets a result, and results are what end a batch: finish such
 * batches here, in dispatch_run, since no callback may run inside dispatch_submit. */
static void dispatch_finish_empty(struct dispatch *d)
{
    if (d->empty_pending == 0) {
        return;
    }
    d->empty_pending = 0;
    int again = 1;
    while (again && d->ring != NULL) {
        again = 0;
        struct dispatch_batch *b = d->ring;
        do {
            if (b->desc.njobs == 0 && !b->cancelled) {
                batch_pump(b); /* finishes and frees it: start the walk again */
                again = 1;
                break;
            }
            b = b->next;
        } while (b != d->ring);
    }
}

int dispatch_fd(const struct dispatch *d)
{
    return d->epfd;
}

void dispatch_run(struct dispatch *d)
{
    struct epoll_event evs[64];
    int n = epoll_wait(d->epfd, evs, 64, 0);
    for (int k = 0; k < n; k++) {
        int i = (int)evs[k].data.u32;
        if (i < 0 || i >= d->cfg.workers || d->slots[i].state == SLOT_EMPTY) {
            continue;
        }
        if (evs[k].events & EPOLLOUT) {
            slot_flush(d, i);
        }
        if (d->slots[i].state != SLOT_EMPTY && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP |
                                                                 EPOLLRDHUP))) {
            slot_read(d, i);
        }
    }
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state == SLOT_EMPTY) {
            slot_spawn(d, i);
        }
    }
    dispatch_check_time(d);
    dispatch_finish_empty(d);
    dispatch_pump_ending(d);
    dispatch_feed(d);
    if (d->draining && d->ring == NULL) {
        dispatch_drain(d); /* the last batch is over: let idle workers go */
    }
}

struct dispatch_batch *dispatch_submit(struct dispatch *d, const struct dispatch_batch_desc *desc,
                                       int *err)
{
    if (d->nbatches >= d->cfg.max_batches ||
        d->queued_jobs + desc->njobs > d->cfg.max_queued_jobs) {
        *err = -BATCHD_E_OVERLOADED;
        return NULL;
    }
    size_t chunksize = desc->chunksize;
    if (chunksize == 0) {
        /* Auto: sized from the first job's op (a mixed batch is sized by its first kind). */
        struct dispatch_job job = {0};
        if (desc->njobs > 0) {
            desc->job_at(desc->ud, 0, &job);
        }
        chunksize = job.op != NULL ? cost_chunksize(d->cost, job.op, desc->njobs, d->cfg.workers,
                                                    d->cfg.chunk_target_ns)
                                   : 1;
    }
    struct dispatch_batch *b = batch_create(d, desc, chunksize);
    if (b == NULL) {
        *err = -BATCHD_E_INTERNAL;
    }
    return b;
}

void dispatch_batch_cancel(struct dispatch_batch *b)
{
    if (b == NULL) {
        return;
    }
    batch_ring_remove(b->d, b);
    b->cancelled = 1;
    batch_maybe_free(b);
}

void dispatch_batch_stop(struct dispatch_batch *b)
{
    if (b != NULL && !b->ending && !b->cancelled) {
        b->stopped = 1;
        dispatch_end_batch(b->d, b, -BATCHD_E_CANCELLED,
                           "the batch was cancelled while this job ran");
    }
}

int dispatch_batch_running(const struct dispatch_batch *b)
{
    int n = 0;
    for (int i = 0; i < b->d->cfg.workers; i++) {
        n += b->d->slots[i].batch == b && b->d->slots[i].state == SLOT_BUSY;
    }
    return n;
}

void dispatch_batch_set_paused(struct dispatch_batch *b, int paused)
{
    int was = b->paused;
    b->paused = paused;
    if (was && !paused) {
        batch_pump(b);
    }
}

size_t dispatch_batch_chunksize(const struct dispatch_batch *b)
{
    return b->chunksize;
}

int dispatch_workers_up(const struct dispatch *d)
{
    int up = 0;
    for (int i = 0; i < d->cfg.workers; i++) {
        up += d->slots[i].state != SLOT_EMPTY;
    }
    return up;
}

int dispatch_workers(const struct dispatch *d)
{
    return d->cfg.workers;
}

uint64_t dispatch_queued_jobs(const struct dispatch *d)
{
    return d->queued_jobs;
}

int dispatch_batches(const struct dispatch *d)
{
    return d->nbatches;
}

void dispatch_get_stats(const struct dispatch *d, struct dispatch_stats *s)
{
    *s = d->stats;
    s->busy_workers = 0;
    for (int i = 0; i < d->cfg.workers; i++) {
        s->busy_workers += d->slots[i].state == SLOT_BUSY;
    }
}

void dispatch_drain(struct dispatch *d)
{
    d->draining = 1;
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state == SLOT_IDLE && d->ring == NULL && d->slots[i].batch == NULL) {
            d->slots[i].state = SLOT_RETIRING;
            pool_quit(d->pool, i);
        }
    }
}
