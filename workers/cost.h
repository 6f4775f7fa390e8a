/* The per-op cost model of the dispatcher: what a job of each op costs, learnt from the run
 * times the workers report, and the automatic chunk size derived from it. It knows nothing
 * of workers or batches; the dispatcher feeds it samples and asks it for sizes. */
#ifndef BATCHD_WORKERS_COST_H
#define BATCHD_WORKERS_COST_H

#include "ops/ops.h"

#include <stddef.h>
#include <stdint.h>

struct cost;

/* A model for every op of the ops table. Returns new (free with cost_destroy) or NULL. */
struct cost *cost_create(void);

/* Frees it; NULL is a no-op. */
void cost_destroy(struct cost *c);

/* The estimated ns of one job of OP: the measured average, or the op's hint before any. */
double cost_estimate(const struct cost *c, const struct op *op);

/* COUNT jobs of OP ran in TOTAL_NS together (COUNT 1: one job's run time; more: a block of
 * results that reports only their sum). */
void cost_add(struct cost *c, const struct op *op, uint64_t count, uint64_t total_ns);

/* The automatic chunk size for NJOBS jobs of OP on WORKERS workers, each chunk aiming at
 * TARGET_NS of work (0: the default of 2 ms). */
size_t cost_chunksize(const struct cost *c, const struct op *op, uint64_t njobs, int workers,
                      uint64_t target_ns);

#endif
