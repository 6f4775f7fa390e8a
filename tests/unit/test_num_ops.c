/* Unit tests of the numeric ops (SPEC §5): every op against answers computed independently
 * (Python's math, statistics and fractions; values pasted in), with the edge cases of each:
 * 0, 1, negatives, type errors, overflow, pseudoprimes, float formatting. */
#include "../../api/errors.h"
#include "../../workers/ops/ops.h"
#include "../check.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

static char last[1 << 16];
static char last_message[256];

/* Runs OP on INPUT (JSON text) with PARAMS (JSON text or NULL). Returns the result's JSON text,
 * or "error:<code>" with the message kept in last_message. Borrowed: valid until the next
 * call. */
static const char *run(const char *op_name, const char *input, const char *params)
{
    const struct op *op = ops_find(op_name);
    if (op == NULL) {
        snprintf(last, sizeof last, "no op %s", op_name);
        return last;
    }
    json_t *in = json_loads(input, JSON_DECODE_ANY, NULL);
    json_t *pa = params != NULL ? json_loads(params, JSON_DECODE_ANY, NULL) : NULL;
    if (in == NULL || (params != NULL && pa == NULL)) {
        snprintf(last, sizeof last, "bad test JSON");
        json_decref(in);
        json_decref(pa);
        return last;
    }
    struct buf b;
    buf_init(&b, sizeof last - 1);
    struct job_output out;
    memset(&out, 0, sizeof out);
    out.json = &b;
    struct job_input ji;
    memset(&ji, 0, sizeof ji);
    ji.value = in;
    ji.params = pa;
    int rc = op->run(&ji, &out);
    last_message[0] = '\0';
    if (rc == 0) {
        snprintf(last, sizeof last, "%.*s", (int)buf_len(&b), buf_len(&b) ? buf_data(&b) : "");
    } else {
        snprintf(last, sizeof last, "error:%s", batchd_err_name(rc));
        snprintf(last_message, sizeof last_message, "%s", out.message);
        if (out.message[0] == '\0') {
            snprintf(last, sizeof last, "error without a message");
        }
    }
    buf_cleanup(&b);
    json_decref(in);
    json_decref(pa);
    return last;
}

#define CHECK_RUN(op, input, expected) CHECK_EQ_STR(run(op, input, NULL), expected)

/* The result of OP on INPUT as a double (for the results compared within a tolerance). */
static double run_double(const char *op, const char *input)
{
    return strtod(run(op, input, NULL), NULL);
}

static void test_arith(void)
{
    CHECK_RUN("square", "0", "0");
    CHECK_RUN("square", "1", "1");
    CHECK_RUN("square", "-7", "49");
    CHECK_RUN("square", "12.5", "156.25");
    CHECK_RUN("square", "2.0", "4.0");
    CHECK_RUN("square", "3037000499", "9223372030926249001");
    CHECK_RUN("square", "3037000500", "error:overflow");
    CHECK_RUN("square", "-9223372036854775808", "error:overflow");
    CHECK_RUN("square", "1e154", "1e+308");
    CHECK_RUN("square", "1e155", "error:domain_error");
    CHECK_RUN("square", "true", "error:invalid_input");
    CHECK_RUN("square", "\"4\"", "error:invalid_input");
    CHECK_RUN("square", "null", "error:invalid_input");
    CHECK_RUN("square", "[2]", "error:invalid_input");
    CHECK_RUN("cube", "-3", "-27");
    CHECK_RUN("cube", "-1.5", "-3.375");
    CHECK_RUN("cube", "2097151", "9223358842721533951");
    CHECK_RUN("cube", "2097152", "error:overflow");
    CHECK_RUN("cube", "-2097152", "-9223372036854775808");
    CHECK_RUN("cube", "-2097153", "error:overflow");
    CHECK_RUN("cube", "false", "error:invalid_input");

    CHECK_RUN("sqrt", "2", "1.4142135623730951");
    CHECK_RUN("sqrt", "3", "1.7320508075688772");
    CHECK_RUN("sqrt", "4", "2.0");
    CHECK_RUN("sqrt", "0", "0.0");
    CHECK_RUN("sqrt", "0.5", "0.7071067811865476");
    CHECK_RUN("sqrt", "1000000000000000000", "1000000000.0");
    CHECK_RUN("sqrt", "9223372036854775807", "3037000499.97605");
    CHECK_RUN("sqrt", "-1", "error:domain_error");
    CHECK_EQ_STR(last_message, "sqrt of a negative number");
    CHECK_RUN("sqrt", "-0.25", "error:domain_error");
    CHECK_RUN("sqrt", "true", "error:invalid_input");

    CHECK_RUN("factorial", "0", "1");
    CHECK_RUN("factorial", "1", "1");
    CHECK_RUN("factorial", "5", "120");
    CHECK_RUN("factorial", "20", "2432902008176640000");
    CHECK_RUN("factorial", "21", "error:domain_error");
    CHECK_RUN("factorial", "-1", "error:domain_error");
    CHECK_RUN("factorial", "5.0", "error:invalid_input"); /* only JSON integers */
    CHECK_RUN("factorial", "5.5", "error:invalid_input");
    CHECK_RUN("factorial", "true", "error:invalid_input");

    CHECK_RUN("fibonacci", "0", "0");
    CHECK_RUN("fibonacci", "1", "1");
    CHECK_RUN("fibonacci", "2", "1");
    CHECK_RUN("fibonacci", "50", "12586269025");
    CHECK_RUN("fibonacci", "92", "7540113804746346429");
    CHECK_RUN("fibonacci", "93", "error:domain_error");
    CHECK_RUN("fibonacci", "-1", "error:domain_error");
    CHECK_RUN("fibonacci", "10.0", "error:invalid_input");
}

static void test_is_prime(void)
{
    CHECK_RUN("is_prime", "0", "false");
    CHECK_RUN("is_prime", "1", "false");
    CHECK_RUN("is_prime", "2", "true");
    CHECK_RUN("is_prime", "3", "true");
    CHECK_RUN("is_prime", "4", "false");
    CHECK_RUN("is_prime", "37", "true");
    CHECK_RUN("is_prime", "1681", "false"); /* 41^2 */
    CHECK_RUN("is_prime", "1693", "true");
    /* Carmichael numbers fool Fermat, not Miller-Rabin. */
    CHECK_RUN("is_prime", "561", "false");
    CHECK_RUN("is_prime", "1105", "false");
    CHECK_RUN("is_prime", "41041", "false");
    CHECK_RUN("is_prime", "825265", "false");
    /* Strong pseudoprimes to the bases 2..7 and 2..37 respectively. */
    CHECK_RUN("is_prime", "3215031751", "false");
    CHECK_RUN("is_prime", "3825123056546413051", "false");
    CHECK_RUN("is_prime", "2147483647", "true");
    CHECK_RUN("is_prime", "2305843009213693951", "true");  /* M61 */
    CHECK_RUN("is_prime", "9223372036854775807", "false"); /* 7^2*73*127*337*92737*649657 */
    CHECK_RUN("is_prime", "9223372036854775783", "true");  /* the largest prime below 2^63 */
    CHECK_RUN("is_prime", "9223371873002223329", "false"); /* 3037000453 * 3037000493 */
    CHECK_RUN("is_prime", "4611686014132420609", "false"); /* (2^31-1)^2 */
    CHECK_RUN("is_prime", "-7", "error:domain_error");
    CHECK_RUN("is_prime", "7.0", "error:invalid_input");
    CHECK_RUN("is_prime", "\"7\"", "error:invalid_input");

    /* Against trial division for every n below 20000. */
    int bad = 0;
    for (int n = 0; n < 20000; n++) {
        int prime = n >= 2;
        for (int d = 2; d * d <= n && prime; d++) {
            prime = n % d != 0;
        }
        char in[16];
        snprintf(in, sizeof in, "%d", n);
        bad += strcmp(run("is_prime", in, NULL), prime ? "true" : "false") != 0;
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_prime_factors(void)
{
    CHECK_RUN("prime_factors", "2", "[2]");
    CHECK_RUN("prime_factors", "360", "[2,2,2,3,3,5]");
    CHECK_RUN("prime_factors", "997", "[997]");
    CHECK_RUN("prime_factors", "994009", "[997,997]");
    CHECK_RUN("prime_factors", "1018081", "[1009,1009]");
    CHECK_RUN("prime_factors", "1048576", "[2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2]");
    CHECK_RUN("prime_factors", "561", "[3,11,17]");
    CHECK_RUN("prime_factors", "3215031751", "[151,751,28351]");
    CHECK_RUN("prime_factors", "3825123056546413051", "[149491,747451,34233211]");
    CHECK_RUN("prime_factors", "9223372036854775807", "[7,7,73,127,337,92737,649657]");
    CHECK_RUN("prime_factors", "9223372036854775783", "[9223372036854775783]");
    CHECK_RUN("prime_factors", "2305843009213693951", "[2305843009213693951]");
    CHECK_RUN("prime_factors", "4611686014132420609", "[2147483647,2147483647]");
    CHECK_RUN("prime_factors", "9223371873002223329", "[3037000453,3037000493]");
    CHECK_RUN("prime_factors", "9223253290108583207", "[2097143,2097143,2097143]");
    CHECK_RUN("prime_factors", "4611686018427387904",
              "[2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,"
              "2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2]");
    CHECK_RUN("prime_factors", "1", "error:domain_error");
    CHECK_RUN("prime_factors", "0", "error:domain_error");
    CHECK_RUN("prime_factors", "-12", "error:domain_error");
    CHECK_RUN("prime_factors", "12.0", "error:invalid_input");

    /* Fast on the hardest 63-bit inputs: semiprimes of two 31.5-bit primes. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int k = 0; k < 20; k++) {
        run("prime_factors", "9223371873002223329", NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    fprintf(stderr, "prime_factors of a 63-bit semiprime: %.2f ms each\n", ms / 20);
    CHECK(ms / 20 < 500);

    /* Every factorisation multiplies back to n, ascending, each factor prime. */
    uint64_t x = 0x243f6a8885a308d3u;
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t n = (int64_t)(x >> (1 + k % 40));
        if (n < 2) {
            continue;
        }
        char in[32];
        snprintf(in, sizeof in, "%" PRId64, n);
        json_t *arr = json_loads(run("prime_factors", in, NULL), 0, NULL);
        __int128 prod = 1;
        int64_t prev = 0;
        size_t i;
        json_t *f;
        json_array_foreach(arr, i, f)
        {
            int64_t p = (int64_t)json_integer_value(f);
            char pin[32];
            snprintf(pin, sizeof pin, "%" PRId64, p);
            bad += p < prev || strcmp(run("is_prime", pin, NULL), "true") != 0;
            prev = p;
            prod *= p;
        }
        bad += arr == NULL || prod != n;
        json_decref(arr);
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_collatz(void)
{
    CHECK_RUN("collatz_steps", "1", "0");
    CHECK_RUN("collatz_steps", "2", "1");
    CHECK_RUN("collatz_steps", "27", "111");
    CHECK_RUN("collatz_steps", "97", "118");
    CHECK_RUN("collatz_steps", "837799", "524");
    CHECK_RUN("collatz_steps", "63728127", "949");
    CHECK_RUN("collatz_steps", "4611686018427387904", "62");
    CHECK_RUN("collatz_steps", "9223372036854775807", "error:overflow");
    CHECK_RUN("collatz_steps", "3074457345618258601", "error:overflow"); /* after 5 steps */
    CHECK_RUN("collatz_steps", "0", "error:domain_error");
    CHECK_RUN("collatz_steps", "-5", "error:domain_error");
    CHECK_RUN("collatz_steps", "27.0", "error:invalid_input");
}

static void test_sum_mean(void)
{
    CHECK_RUN("sum", "[]", "0");
    CHECK_RUN("sum", "[1, 2, 3]", "6");
    CHECK_RUN("sum", "[1, 2, 3.5]", "6.5");
    CHECK_RUN("sum", "[1.0]", "1.0");
    CHECK_RUN("sum", "[0.1, 0.2]", "0.30000000000000004");
    CHECK_RUN("sum", "[0.1, 0.2, -0.3]", "2.7755575615628914e-17"); /* math.fsum */
    CHECK_RUN("sum", "[1e100, 1.0, -1e100]", "1.0");                /* math.fsum */
    CHECK_RUN("sum", "[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]", "1.0");
    CHECK_RUN("sum", "[9223372036854775807, 1, -1]", "9223372036854775807");
    CHECK_RUN("sum", "[9223372036854775807, 1]", "error:overflow");
    CHECK_RUN("sum", "[-9223372036854775808, -1]", "error:overflow");
    CHECK_RUN("sum", "[9007199254740993, 0.0]", "9007199254740992.0");
    CHECK_RUN("sum", "[1.7976931348623157e308, 1.7976931348623157e308]", "error:domain_error");
    CHECK_RUN("sum", "[1, true]", "error:invalid_input");
    CHECK_RUN("sum", "[1, \"2\"]", "error:invalid_input");
    CHECK_RUN("sum", "[1, null]", "error:invalid_input");
    CHECK_RUN("sum", "[[1]]", "error:invalid_input");
    CHECK_RUN("sum", "5", "error:invalid_input");
    CHECK_RUN("sum", "{\"a\": 1}", "error:invalid_input");

    CHECK_RUN("mean", "[1, 2, 3, 4]", "2.5");
    CHECK_RUN("mean", "[1, 2.5]", "1.75");
    CHECK_RUN("mean", "[7]", "7.0");
    CHECK_RUN("mean", "[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]", "0.1");
    CHECK_RUN("mean", "[9223372036854775807, 9223372036854775807]", "9.223372036854776e+18");
    CHECK_RUN("mean", "[1e308, 1e308, -1e308, 5e307]", "3.75e+307"); /* exact: fractions */
    CHECK_RUN("mean", "[]", "error:domain_error");
    CHECK_RUN("mean", "[false]", "error:invalid_input");
    CHECK_RUN("mean", "3", "error:invalid_input");
}

/* Relative difference, for results whose last bit depends on the order of operations. */
static int close_to(double got, double want)
{
    return fabs(got - want) <= 1e-14 * fabs(want) || got == want;
}

static double stats_field(const char *input, const char *key)
{
    json_t *o = json_loads(run("stats", input, NULL), 0, NULL);
    double v = json_number_value(json_object_get(o, key));
    json_decref(o);
    return v;
}

static void test_stats(void)
{
    CHECK_RUN("stats", "[2, 4, 4, 4, 5, 5, 7, 9]",
              "{\"count\":8,\"min\":2,\"max\":9,\"mean\":5.0,\"stddev\":2.0}");
    CHECK_RUN("stats", "[3, 3, 3]",
              "{\"count\":3,\"min\":3,\"max\":3,\"mean\":3.0,\"stddev\":0.0}");
    CHECK_RUN("stats", "[7]", "{\"count\":1,\"min\":7,\"max\":7,\"mean\":7.0,\"stddev\":0.0}");
    CHECK(close_to(stats_field("[1, 2.5, -1.0]", "stddev"), 1.4337208778404378));
    CHECK(close_to(stats_field("[1, 2.5, -1.0]", "mean"), 0.8333333333333334));
    CHECK_EQ_STR(
        strstr(run("stats", "[1, 2.5, -1.0]", NULL), "\"min\""),
        "\"min\":-1.0,\"max\":2.5,\"mean\":0.8333333333333334,\"stddev\":1.4337208778404378}");
    CHECK_RUN("stats", "[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]",
              "{\"count\":10,\"min\":0.1,\"max\":0.1,\"mean\":0.1,\"stddev\":0.0}");
    /* statistics.pstdev values (exact rational arithmetic, then rounded). */
    CHECK(close_to(stats_field("[1, 2, 3, 4]", "stddev"), 1.118033988749895));
    CHECK(close_to(stats_field("[1.5, 2.25, -3.125, 1e3, 7]", "stddev"), 399.25041014380935));
    CHECK(close_to(stats_field("[1.5, 2.25, -3.125, 1e3, 7]", "mean"), 201.525));
    CHECK(
        close_to(stats_field("[1000000001, 1000000002, 1000000003]", "stddev"), 0.816496580927726));
    CHECK(close_to(stats_field("[1e308, 1e308, -1e308, 5e307]", "stddev"), 8.196798155377501e+307));
    CHECK(close_to(stats_field("[1e-300, 3e-300]", "stddev"), 1.0000000000000002e-300));
    CHECK(close_to(stats_field("[5e-324, 1e-323, 0.0]", "stddev"), 5e-324));
    /* min and max are exact across int/float: 2^53+1 is above 9007199254740992.0. */
    CHECK_EQ_STR(run("stats", "[9007199254740992.0, 9007199254740993]", NULL),
                 "{\"count\":2,\"min\":9007199254740992.0,\"max\":9007199254740993,"
                 "\"mean\":9007199254740992.0,\"stddev\":0.0}");
    CHECK_RUN("stats", "[]", "error:domain_error");
    CHECK_RUN("stats", "[1, \"x\"]", "error:invalid_input");
    CHECK_RUN("stats", "{}", "error:invalid_input");
}

static void test_sort(void)
{
    CHECK_RUN("sort", "[]", "[]");
    CHECK_RUN("sort", "[3, 1, 2]", "[1,2,3]");
    CHECK_RUN("sort", "[3, 1.5, -2, 1]", "[-2,1,1.5,3]");
    CHECK_RUN("sort", "[2.0, 1, 1.0, 2]", "[1,1.0,2.0,2]"); /* stable: equal keep input order */
    CHECK_RUN("sort", "[0.1, 1e-300, -1e300, 0]", "[-1e+300,0,1e-300,0.1]");
    CHECK_RUN("sort", "[9007199254740993, 9007199254740992.0, 9007199254740992]",
              "[9007199254740992.0,9007199254740992,9007199254740993]");
    CHECK_RUN("sort", "[-9223372036854775808, 9223372036854775807, -9.3e18, 9.3e18]",
              "[-9.3e+18,-9223372036854775808,9223372036854775807,9.3e+18]");
    CHECK_EQ_STR(run("sort", "[3, 1.5, -2, 1]", "{\"reverse\": true}"), "[3,1.5,1,-2]");
    CHECK_EQ_STR(run("sort", "[2.0, 1, 1.0, 2]", "{\"reverse\": true}"), "[2.0,2,1,1.0]");
    CHECK_EQ_STR(run("sort", "[3, 1, 2]", "{\"reverse\": false}"), "[1,2,3]");
    CHECK_EQ_STR(run("sort", "[3, 1, 2]", "{}"), "[1,2,3]");
    CHECK_EQ_STR(run("sort", "[3, 1, 2]", "{\"reverse\": 1}"), "error:invalid_input");
    CHECK_RUN("sort", "[1, true]", "error:invalid_input");
    CHECK_RUN("sort", "\"abc\"", "error:invalid_input");

    /* A larger shuffled array comes back in order. */
    char *big = malloc(200000);
    size_t len = 0;
    big[len++] = '[';
    for (int k = 0; k < 10000; k++) {
        len += (size_t)snprintf(big + len, 200000 - len, "%s%d", k ? "," : "", (k * 7919) % 10000);
    }
    big[len++] = ']';
    big[len] = '\0';
    json_t *sorted = json_loads(run("sort", big, NULL), 0, NULL);
    int bad = json_array_size(sorted) != 10000;
    for (size_t k = 0; k < json_array_size(sorted); k++) {
        bad += json_integer_value(json_array_get(sorted, k)) != (json_int_t)k;
    }
    CHECK_EQ_INT(bad, 0);
    json_decref(sorted);
    free(big);
}

static void test_cpu(void)
{
    CHECK_RUN("cpu_loop", "{\"n\": 0, \"x\": 5}", "0");
    CHECK_RUN("cpu_loop", "{\"n\": 1000, \"x\": 5}", "504500");
    CHECK_RUN("cpu_loop", "{\"n\": 1000}", "499500");
    CHECK_RUN("cpu_loop", "{\"n\": 1, \"x\": 9223372036854775807}", "9223372036854775807");
    CHECK_RUN("cpu_loop", "{\"n\": 2, \"x\": 9223372036854775807}", "error:overflow");
    CHECK_RUN("cpu_loop", "{\"n\": 3, \"x\": -3074457345618258604}", "error:overflow");
    CHECK_RUN("cpu_loop", "{\"n\": 3, \"x\": -3074457345618258603}", "-9223372036854775806");
    CHECK_RUN("cpu_loop", "{\"n\": 1000000001}", "error:domain_error");
    CHECK_RUN("cpu_loop", "{\"n\": -1}", "error:domain_error");
    CHECK_RUN("cpu_loop", "{\"n\": 10.0}", "error:invalid_input");
    CHECK_RUN("cpu_loop", "{\"x\": 1}", "error:invalid_input");
    CHECK_RUN("cpu_loop", "{\"n\": 1, \"y\": 1}", "error:invalid_input");
    CHECK_RUN("cpu_loop", "{\"n\": 1, \"x\": true}", "error:invalid_input");
    CHECK_RUN("cpu_loop", "100", "error:invalid_input");

    /* A real loop: 10^8 steps take time (not folded), about a nanosecond each or less. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_RUN("cpu_loop", "{\"n\": 100000000, \"x\": -7}", "4999999250000000");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "cpu_loop: %.3f ns per step\n", ns / 1e8);
    CHECK(ns / 1e8 > 0.05);
    CHECK(ns / 1e8 < 20);

    CHECK_RUN("sleep", "0", "0");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_RUN("sleep", "30", "30");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(ms >= 30 && ms < 1000);
    CHECK_RUN("sleep", "60001", "error:domain_error");
    CHECK_RUN("sleep", "-1", "error:domain_error");
    CHECK_RUN("sleep", "1.5", "error:invalid_input");
    CHECK_RUN("sleep", "\"10\"", "error:invalid_input");

    /* Same seed, same estimate; a different seed, (almost surely) another. */
    char a[64];
    snprintf(a, sizeof a, "%s",
             run("monte_carlo_pi", "{\"samples\": 1000000, \"seed\": 42}", NULL));
    CHECK_RUN("monte_carlo_pi", "{\"samples\": 1000000, \"seed\": 42}", a);
    CHECK(strcmp(run("monte_carlo_pi", "{\"samples\": 1000000, \"seed\": 43}", NULL), a) != 0);
    CHECK(fabs(strtod(a, NULL) - M_PI) < 0.01);
    CHECK(fabs(run_double("monte_carlo_pi", "{\"samples\": 10000000, \"seed\": -1}") - M_PI) <
          0.003);
    CHECK(run_double("monte_carlo_pi", "{\"samples\": 1}") == 4.0 ||
          run_double("monte_carlo_pi", "{\"samples\": 1}") == 0.0);
    CHECK(strchr(run("monte_carlo_pi", "{\"samples\": 1}", NULL), '.') != NULL);
    CHECK_RUN("monte_carlo_pi", "{\"samples\": 0}", "error:domain_error");
    CHECK_RUN("monte_carlo_pi", "{\"samples\": 1000000001}", "error:domain_error");
    CHECK_RUN("monte_carlo_pi", "{\"seed\": 1}", "error:invalid_input");
    CHECK_RUN("monte_carlo_pi", "{\"samples\": 10, \"seed\": 1.5}", "error:invalid_input");
    CHECK_RUN("monte_carlo_pi", "{\"samples\": 10, \"sed\": 1}", "error:invalid_input");
}

/* clang-format off */
static const struct check_case cases[] = {
    {"arith", test_arith},
    {"is_prime", test_is_prime},
    {"prime_factors", test_prime_factors},
    {"collatz", test_collatz},
    {"sum_mean", test_sum_mean},
    {"stats", test_stats},
    {"sort", test_sort},
    {"cpu", test_cpu},
};
/* clang-format on */

CHECK_MAIN("test_num_ops", cases)
