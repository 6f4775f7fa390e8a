/* The dispatcher's own state, shared by its parts: dispatch.c (round robin, timers, public
 * API), batch_window.c (batches) and slot.c (worker slots). Nothing outside these includes
 * it; callers use dispatch.h. */
#ifndef BATCHD_WORKERS_DISPATCH_INTERNAL_H
#define BATCHD_WORKERS_DISPATCH_INTERNAL_H

#include "batch_window.h"
#include "cost.h"
#include "dispatch.h"
#include "ipc.h"
#include "pool.h"
#include "slot.h"

struct dispatch {
    struct dispatch_config cfg;
    struct pool *pool;
    int epfd;
    struct slot *slots;
    struct dispatch_batch *ring; /* any live batch; the next to serve is ring->next */
    int nbatches;
    uint64_t queued_jobs;
    int draining;
    int empty_pending; /* batches without jobs submitted since the last dispatch_run */
    struct cost *cost;
    struct dispatch_stats stats;
};

#endif
