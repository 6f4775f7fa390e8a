/* The cost model: one moving average per op, started from the op's hint. Samples from single
 * results and from blocks of results (their mean) go through the same update, each capped at
 * 4x the current estimate: one job that stalled (a worker preempted on a busy machine) must
 * not make a tiny op look slow and send the next big batch out one job per message. */
#include "cost.h"

#include <stdlib.h>

#define COST_DEFAULT_TARGET_NS 2000000u
/* What a job costs beyond its own run time: framing, the control page, the result's trip. */
#define COST_PER_JOB_OVERHEAD_NS 150u
#define COST_SAMPLE_CAP 4.0
#define COST_WEIGHT 0.1 /* of a new sample in the average */

struct cost {
    size_t nops;
    double ns[]; /* per op index: the measured average, 0 before the first sample */
};

struct cost *cost_create(void)
{
    size_t n = ops_count() + 1;
    struct cost *c = calloc(1, sizeof *c + n * sizeof c->ns[0]);
    if (c != NULL) {
        c->nops = n;
    }
    return c;
}

void cost_destroy(struct cost *c)
{
    free(c);
}

double cost_estimate(const struct cost *c, const struct op *op)
{
    size_t i = ops_index(op);
    if (i < c->nops && c->ns[i] > 0) {
        return c->ns[i];
    }
    return (double)op->cost_hint_ns;
}

void cost_add(struct cost *c, const struct op *op, uint64_t count, uint64_t total_ns)
{
    size_t i = ops_index(op);
    if (count == 0 || i >= c->nops) {
        return;
    }
    double est = cost_estimate(c, op);
    double x = (double)total_ns / (double)count;
    if (est > 0 && x > COST_SAMPLE_CAP * est) {
        x = COST_SAMPLE_CAP * est;
    }
    c->ns[i] = est > 0 ? est * (1 - COST_WEIGHT) + x * COST_WEIGHT : x;
}

size_t cost_chunksize(const struct cost *c, const struct op *op, uint64_t njobs, int workers,
                      uint64_t target_ns)
{
    if (njobs == 0) {
        return 1;
    }
    /* An op whose cost depends on its params (op lua) learns nothing from other batches. */
    const int varies = (op->flags & OP_COST_VARIES) != 0;
    double cost =
        (varies ? (double)op->cost_hint_ns : cost_estimate(c, op)) + COST_PER_JOB_OVERHEAD_NS;
    double target = (double)(target_ns ? target_ns : COST_DEFAULT_TARGET_NS);
    /* A whole batch cheaper than one chunk's target goes in one message (unless its cost
     * is not known: then it is spread over the workers). */
    if (!varies && (double)njobs * cost <= target) {
        return (size_t)njobs;
    }
    double by_cost = target / cost;
    uint64_t spread = (njobs + 4 * (uint64_t)workers - 1) / (4 * (uint64_t)workers);
    uint64_t n = by_cost < 1 ? 1 : (uint64_t)by_cost;
    if (n > spread) {
        n = spread;
    }
    return n < 1 ? 1 : (size_t)n;
}
