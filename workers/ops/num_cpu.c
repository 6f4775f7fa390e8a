/* Ops that stand in for real work (SPEC §5): cpu_loop (CPU-bound: a loop the compiler cannot
 * fold), sleep (I/O-bound: the worker waits) and monte_carlo_pi (CPU-bound, deterministic
 * for a seed). Each is flagged OP_SLOW: a job may run for seconds. */
#include "internal.h"

#include <errno.h>
#include <time.h>

#define CPU_LOOP_MAX_N 1000000000
#define SLEEP_MAX_MS 60000
#define MC_MAX_SAMPLES 1000000000

/* Sum of t for t = X .. X+N-1, a step at a time. Unsigned, so that a partial sum may wrap
 * without harm: when the total fits in int64, the result is exact. The empty asm makes acc
 * opaque at every step: the compiler can neither use the closed form nor vectorise, and each
 * step costs one dependent add (one cycle), as a plain C loop does. The term i + x runs as its
 * own counter t, so that clang cannot split it into two adds on acc (a two-cycle chain). The
 * function is aligned and kept apart so that the four-instruction loop never straddles a
 * 32-byte boundary, which costs 50% on Intel cores with the JCC-erratum microcode. */
__attribute__((noinline, aligned(64))) static uint64_t cpu_loop_sum(uint64_t x, uint64_t n)
{
    uint64_t acc = 0;
    const uint64_t end = x + n;
    for (uint64_t t = x; t != end; t++) {
        acc += t;
        __asm__ volatile("" : "+r"(acc));
    }
    return acc;
}

static int run_cpu_loop(const struct job_input *in, struct job_output *out)
{
    int64_t n, x;
    int rc = num_want_object(in->value, "n|x", out);
    if (rc == 0) {
        rc = num_member_int(in->value, "n", 0, 0, 0, CPU_LOOP_MAX_N, &n, out);
    }
    if (rc == 0) {
        rc = num_member_int(in->value, "x", 1, 0, INT64_MIN, INT64_MAX, &x, out);
    }
    if (rc != 0) {
        return rc;
    }
    /* Check the closed form n*x + n(n-1)/2 up front so that the loop carries no checks. */
    __int128 total = (__int128)n * x + (__int128)n * (n - 1) / 2;
    if (total > INT64_MAX || total < INT64_MIN) {
        return num_fail(out, -BATCHD_E_OVERFLOW,
                        "the sum of i + x for i < n does not fit in a 64-bit integer");
    }
    uint64_t acc = cpu_loop_sum((uint64_t)x, (uint64_t)n);
    return num_put_int(out, (int64_t)acc);
}

static int run_sleep(const struct job_input *in, struct job_output *out)
{
    int64_t ms;
    int rc = num_want_int(in->value, "the input (milliseconds)", &ms, out);
    if (rc != 0) {
        return rc;
    }
    if (ms < 0 || ms > SLEEP_MAX_MS) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "sleep takes 0..%d milliseconds, got %lld",
                        SLEEP_MAX_MS, (long long)ms);
    }
    /* An absolute deadline on the monotonic clock: a signal (EINTR) resumes toward the same
     * end, so interruptions neither shorten nor lengthen the sleep. */
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    do {
        rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &end, NULL);
    } while (rc == EINTR);
    return num_put_int(out, ms);
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna), seeded through splitmix64 as its authors advise. */
static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static int run_monte_carlo_pi(const struct job_input *in, struct job_output *out)
{
    int64_t samples, seed;
    int rc = num_want_object(in->value, "samples|seed", out);
    if (rc == 0) {
        rc = num_member_int(in->value, "samples", 0, 0, 1, MC_MAX_SAMPLES, &samples, out);
    }
    if (rc == 0) {
        rc = num_member_int(in->value, "seed", 1, 0, INT64_MIN, INT64_MAX, &seed, out);
    }
    if (rc != 0) {
        return rc;
    }
    uint64_t sm = (uint64_t)seed, s[4];
    for (int k = 0; k < 4; k++) {
        s[k] = splitmix64(&sm);
    }
    /* One draw gives a point (x, y) on a 2^32 x 2^32 grid; the test x^2 + y^2 < 2^64 is done
     * in integers, so the estimate is bit-for-bit the same on every machine and compiler. */
    uint64_t inside = 0;
    for (int64_t k = 0; k < samples; k++) {
        uint64_t r = xoshiro_next(s);
        uint64_t x = r >> 32, y = r & 0xffffffffu, sq;
        inside += !__builtin_add_overflow(x * x, y * y, &sq);
    }
    return num_put_double(out, 4.0 * (double)inside / (double)samples);
}

const struct op op_cpu_loop = {
    .name = "cpu_loop",
    .summary = "sum of i + x for i < n by a real loop of n steps, one dependent add each (as "
               "fast as a plain C loop, ~0.3 ns at 3 GHz): the CPU-bound task of the tutorials; "
               "x defaults to 0",
    .input = "{\"n\": integer 0..1e9, \"x\": integer}",
    .result = "integer",
    .example = "{\"n\": 10000000, \"x\": 1}",
    .flags = OP_SLOW,
    .cost_hint_ns = 1000000000u,
    .run = run_cpu_loop,
};

const struct op op_sleep = {
    .name = "sleep",
    .summary = "waits the given milliseconds without using the CPU: an I/O-bound stand-in",
    .input = "integer milliseconds 0..60000",
    .result = "integer: the milliseconds slept",
    .example = "100",
    .flags = OP_SLOW,
    .cost_hint_ns = 100000000u,
    .run = run_sleep,
};

const struct op op_monte_carlo_pi = {
    .name = "monte_carlo_pi",
    .summary = "estimate of pi from random points in the unit square (xoshiro256**): the same "
               "seed gives the same estimate; seed defaults to 0",
    .input = "{\"samples\": integer 1..1e9, \"seed\": integer}",
    .result = "float",
    .example = "{\"samples\": 1000000, \"seed\": 42}",
    .flags = OP_SLOW,
    .cost_hint_ns = 100000000u,
    .run = run_monte_carlo_pi,
};
