/* Unit tests of workers/cost.c, the dispatcher's one cost model: it starts from the op's
 * hint, single results and blocks of results update it the same way, every sample is capped
 * at 4x the estimate, and the automatic chunk size follows the estimate within its bounds. */
#include "../../workers/cost.h"
#include "../check.h"

#include <math.h>

static int near(double a, double b)
{
    return fabs(a - b) < 1e-6 * (fabs(b) + 1);
}

static void test_starts_from_the_hint(void)
{
    struct cost *c = cost_create();
    const struct op *op = ops_find("sqrt");
    CHECK(c != NULL && op != NULL);
    CHECK(near(cost_estimate(c, op), (double)op->cost_hint_ns));
    cost_add(c, op, 0, 12345); /* no jobs: no sample */
    CHECK(near(cost_estimate(c, op), (double)op->cost_hint_ns));
    cost_destroy(c);
    cost_destroy(NULL);
}

/* A sample moves the estimate a tenth of the way; one past 4x counts as 4x. */
static void test_one_update_with_a_cap(void)
{
    const struct op *op = ops_find("sqrt");
    double hint = (double)op->cost_hint_ns;
    struct cost *single = cost_create(), *block = cost_create();
    cost_add(single, op, 1, (uint64_t)(2 * hint));
    CHECK(near(cost_estimate(single, op), 0.9 * hint + 0.1 * 2 * hint));
    /* The same mean from a block of 100 results gives the same estimate. */
    cost_add(block, op, 100, (uint64_t)(100 * 2 * hint));
    CHECK(near(cost_estimate(block, op), cost_estimate(single, op)));
    /* A stalled sample (1000x) is taken as 4x, from a single result or a block alike. */
    double est = cost_estimate(single, op);
    cost_add(single, op, 1, (uint64_t)(1000 * est));
    cost_add(block, op, 10, (uint64_t)(10 * 1000 * est));
    CHECK(near(cost_estimate(single, op), 0.9 * est + 0.1 * 4 * est));
    CHECK(near(cost_estimate(block, op), cost_estimate(single, op)));
    cost_destroy(single);
    cost_destroy(block);
}

static void test_chunksize(void)
{
    struct cost *c = cost_create();
    const struct op *op = ops_find("sqrt");
    CHECK_EQ_INT(cost_chunksize(c, op, 0, 2, 0), 1);
    /* A batch cheaper than one chunk's target goes whole. */
    CHECK_EQ_INT(cost_chunksize(c, op, 10, 2, 0), 10);
    /* A big batch: target / (cost + overhead), at most a quarter of a worker's share. */
    size_t n = cost_chunksize(c, op, 1000000, 2, 0);
    double per = cost_estimate(c, op) + 150;
    CHECK_EQ_INT(n, (size_t)(2000000.0 / per));
    CHECK_EQ_INT(cost_chunksize(c, op, 800000, 2, 100000000u), 100000);
    /* A slow op: one job a chunk. */
    const struct op *img = ops_find("image");
    CHECK(img != NULL);
    CHECK_EQ_INT(cost_chunksize(c, img, 100, 2, 0), 1);
    /* The estimate steers it: a costlier op gets smaller chunks. */
    for (int k = 0; k < 50; k++) {
        cost_add(c, op, 1, 20000);
    }
    CHECK(cost_chunksize(c, op, 1000000, 2, 0) < n);
    cost_destroy(c);
}

/* An op whose cost depends on its params (op lua): sized from its hint, never from what
 * other batches measured, and a small batch is spread over the workers. */
static void test_cost_varies(void)
{
    struct cost *c = cost_create();
    const struct op *lua = ops_find("lua");
    CHECK(lua != NULL && (lua->flags & OP_COST_VARIES));
    CHECK_EQ_INT(cost_chunksize(c, lua, 8, 2, 0), 1);
    size_t big = cost_chunksize(c, lua, 1000000, 2, 0);
    CHECK(big > 100);
    for (int k = 0; k < 50; k++) {
        cost_add(c, lua, 1, 100000000);
    }
    CHECK_EQ_INT(cost_chunksize(c, lua, 1000000, 2, 0), big);
    cost_destroy(c);
}

int main(void)
{
    test_starts_from_the_hint();
    test_one_update_with_a_cap();
    test_chunksize();
    test_cost_varies();
    return check_report("test_cost");
}
