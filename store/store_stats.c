/* The write statistics both backends keep alike (store_stats): one place for the commit
 * histogram's buckets, so that /metrics reads SQLite's commits and Redis' round trips the
 * same way. */
#include "internal.h"

#include <math.h>

void store_stats_add_flush(struct store_stats *s, uint64_t ns)
{
    s->flushes++;
    double ms = (double)ns / 1e6;
    s->flush_total_ms += ms;
    if (ms > s->flush_max_ms) {
        s->flush_max_ms = ms;
    }
    size_t k = 0;
    while (k + 1 < STORE_HIST_BUCKETS && exp2((double)k / 4.0) * 1000.0 <= (double)ns) {
        k++;
    }
    s->flush_hist[k]++;
}
