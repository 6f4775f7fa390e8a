/* Number-theory ops (SPEC §5): is_prime (deterministic Miller-Rabin, exact for all of
 * 0..2^63-1), prime_factors (trial division by small primes, then Pollard-Brent rho with
 * Miller-Rabin, fast for 63-bit semiprimes) and collatz_steps. 64-bit integers only. */
#include "internal.h"

#include <stdlib.h>

typedef unsigned __int128 u128;

static uint64_t mulmod(uint64_t a, uint64_t b, uint64_t m)
{
    return (uint64_t)((u128)a * b % m);
}

static uint64_t powmod(uint64_t a, uint64_t e, uint64_t m)
{
    uint64_t r = 1 % m;
    a %= m;
    while (e != 0) {
        if (e & 1) {
            r = mulmod(r, a, m);
        }
        a = mulmod(a, a, m);
        e >>= 1;
    }
    return r;
}

static const uint64_t small_primes[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};

/* Miller-Rabin with the seven bases of Jim Sinclair, which are deterministic for every n
 * below 2^64 (no strong pseudoprime to all of them exists there). */
static int is_prime_u64(uint64_t n)
{
    static const uint64_t bases[] = {2, 325, 9375, 28178, 450775, 9780504, 1795265022};
    if (n < 2) {
        return 0;
    }
    for (size_t k = 0; k < sizeof small_primes / sizeof small_primes[0]; k++) {
        if (n % small_primes[k] == 0) {
            return n == small_primes[k];
        }
    }
    if (n < 41 * 41) {
        return 1;
    }
    uint64_t d = n - 1;
    int s = 0;
    while ((d & 1) == 0) {
        d >>= 1;
        s++;
    }
    for (size_t k = 0; k < sizeof bases / sizeof bases[0]; k++) {
        uint64_t a = bases[k] % n;
        if (a == 0) {
            continue; /* a multiple of n says nothing about n */
        }
        uint64_t x = powmod(a, d, n);
        if (x == 1 || x == n - 1) {
            continue;
        }
        int witness = 1;
        for (int r = 1; r < s; r++) {
            x = mulmod(x, x, n);
            if (x == n - 1) {
                witness = 0;
                break;
            }
        }
        if (witness) {
            return 0;
        }
    }
    return 1;
}

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
    while (b != 0) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static uint64_t absdiff(uint64_t a, uint64_t b)
{
    return a > b ? a - b : b - a;
}

/* Brent's variant of Pollard's rho with f(x) = x^2 + c: products of |x - y| are batched M at a
 * time so that one gcd serves many steps, with a step-by-step replay when a batch overshoots.
 * N is odd, composite and not a perfect square. Returns a factor of N, or N on failure (try
 * another C). */
static uint64_t rho_brent(uint64_t n, uint64_t c)
{
    const uint64_t m = 128;
    uint64_t y = 2, x = 2, ys = 2, q = 1, g = 1;
    for (uint64_t r = 1; g == 1; r *= 2) {
        x = y;
        for (uint64_t i = 0; i < r; i++) {
            y = (mulmod(y, y, n) + c) % n;
        }
        for (uint64_t k = 0; k < r && g == 1; k += m) {
            ys = y;
            uint64_t steps = m < r - k ? m : r - k;
            for (uint64_t i = 0; i < steps; i++) {
                y = (mulmod(y, y, n) + c) % n;
                q = mulmod(q, absdiff(x, y), n);
            }
            g = gcd_u64(q, n);
        }
    }
    if (g == n) {
        /* The batch passed the factor (or hit x == y): replay it one step at a time. */
        do {
            ys = (mulmod(ys, ys, n) + c) % n;
            g = gcd_u64(absdiff(x, ys), n);
        } while (g == 1);
    }
    return g;
}

static uint64_t isqrt_u64(uint64_t n)
{
    uint64_t r = 0;
    for (int bit = 31; bit >= 0; bit--) {
        uint64_t t = r | (uint64_t)1 << bit;
        if (t * t <= n) {
            r = t;
        }
    }
    return r;
}

/* Appends the prime factors of N (odd, > 1, free of primes below 1000) to F[*NF]. A 63-bit
 * number has at most 63 prime factors, so F holds 64. */
static void factor_rec(uint64_t n, uint64_t *f, int *nf)
{
    if (n == 1) {
        return;
    }
    if (is_prime_u64(n)) {
        f[(*nf)++] = n;
        return;
    }
    /* rho finds p in p^2 only slowly through the gcd replay; a square root is cheaper. */
    uint64_t r = isqrt_u64(n);
    if (r * r == n) {
        factor_rec(r, f, nf);
        factor_rec(r, f, nf);
        return;
    }
    uint64_t d = n;
    for (uint64_t c = 1; d == n; c++) {
        d = rho_brent(n, c);
    }
    factor_rec(d, f, nf);
    factor_rec(n / d, f, nf);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int run_is_prime(const struct job_input *in, struct job_output *out)
{
    int64_t n;
    int rc = num_want_int(in->value, "the input", &n, out);
    if (rc != 0) {
        return rc;
    }
    if (n < 0) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "is_prime takes 0..2^63-1, got %lld",
                        (long long)n);
    }
    return num_put_bool(out, is_prime_u64((uint64_t)n));
}

static int run_prime_factors(const struct job_input *in, struct job_output *out)
{
    int64_t v;
    int rc = num_want_int(in->value, "the input", &v, out);
    if (rc != 0) {
        return rc;
    }
    if (v < 2) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "prime_factors takes 2..2^63-1, got %lld",
                        (long long)v);
    }
    uint64_t n = (uint64_t)v;
    uint64_t f[64];
    int nf = 0;
    for (uint64_t p = 2; p < 1000 && p * p <= n; p += p == 2 ? 1 : 2) {
        while (n % p == 0) {
            f[nf++] = p;
            n /= p;
        }
    }
    if (n > 1 && n < 1000 * 1000) {
        f[nf++] = n; /* no factor below 1000, so below 10^6 it is prime */
    } else {
        factor_rec(n, f, &nf);
    }
    qsort(f, (size_t)nf, sizeof f[0], cmp_u64);
    int err = buf_adds(out->json, "[");
    for (int k = 0; k < nf && err == 0; k++) {
        if (k > 0) {
            err = buf_adds(out->json, ",");
        }
        if (err == 0) {
            err = num_put_int(out, (int64_t)f[k]);
        }
    }
    if (err == 0) {
        err = buf_adds(out->json, "]");
    }
    return err == 0 ? 0 : num_too_large(out);
}

static int run_collatz_steps(const struct job_input *in, struct job_output *out)
{
    int64_t v;
    int rc = num_want_int(in->value, "the input", &v, out);
    if (rc != 0) {
        return rc;
    }
    if (v < 1) {
        return num_fail(out, -BATCHD_E_DOMAIN_ERROR, "collatz_steps takes n >= 1, got %lld",
                        (long long)v);
    }
    int64_t n = v, steps = 0;
    while (n != 1) {
        if ((n & 1) == 0) {
            n >>= 1;
        } else if (n > (INT64_MAX - 1) / 3) {
            return num_fail(out, -BATCHD_E_OVERFLOW,
                            "3n+1 passes 2^63-1 after %lld steps from %lld (n = %lld)",
                            (long long)steps, (long long)v, (long long)n);
        } else {
            n = 3 * n + 1;
        }
        steps++;
    }
    return num_put_int(out, steps);
}

const struct op op_is_prime = {
    .name = "is_prime",
    .summary = "exact primality test (deterministic Miller-Rabin)",
    .input = "integer 0..2^63-1",
    .result = "boolean",
    .example = "2305843009213693951",
    .cost_hint_ns = 2000,
    .run = run_is_prime,
};

const struct op op_prime_factors = {
    .name = "prime_factors",
    .summary = "prime factorisation, ascending with multiplicity (Pollard-Brent rho)",
    .input = "integer 2..2^63-1",
    .result = "array of integers, ascending, with multiplicity",
    .example = "360",
    .cost_hint_ns = 20000,
    .run = run_prime_factors,
};

const struct op op_collatz_steps = {
    .name = "collatz_steps",
    .summary = "steps of n -> n/2 or 3n+1 until n reaches 1 (overflow past 2^63-1 is an error)",
    .input = "integer >= 1",
    .result = "integer",
    .example = "27",
    .cost_hint_ns = 500,
    .run = run_collatz_steps,
};
