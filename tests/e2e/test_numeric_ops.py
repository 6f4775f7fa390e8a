"""End-to-end: every numeric op of SPEC §5 through the real server, checked against Python
(math, statistics, and a Miller-Rabin written here), never against batchd's own output.
Also SPEC §4's number rules: integers stay integers, floats are shortest round-trip (the raw
text is compared with Python's repr), overflow is an error, NaN/inf are never written, and a
bad input fails alone."""
import math
import os
import random
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402
from client import by_index, known_bug, ndjson, post, loads  # noqa: E402

S = None
I64_MAX = 2**63 - 1
I64_MIN = -2**63
RNG = random.Random(20240611)


def fits(v):
    return I64_MIN <= v <= I64_MAX


def is_int(v):
    return type(v) is int  # bool is a subclass of int: excluded on purpose


def is_float(v):
    return type(v) is float


def run(op, inputs, **extra):
    """Runs one batch of OP over INPUTS; returns (raw lines, {index: parsed line})."""
    batch = {"op": op, "inputs": inputs}
    batch.update(extra)
    raw, lines, _ = ndjson(S, batch)
    return raw, by_index(lines, len(inputs))


def raw_result(raw_line):
    """The exact text of the result value in a raw NDJSON line."""
    m = re.fullmatch(r'\{"index":\d+,"result":(.*)\}', raw_line)
    check(m is not None, "unexpected line layout: %s" % raw_line)
    return m.group(1)


def expect_error(line, codes, what=""):
    codes = (codes,) if isinstance(codes, str) else codes
    check("error" in line, "%s: expected an error %s, got %r" % (what, codes, line))
    e = line["error"]
    check(e["code"] in codes, "%s: expected %s, got %r" % (what, codes, e))
    check(isinstance(e.get("message"), str) and e["message"], "%s: no message: %r" % (what, e))


def expect_int(line, want, what=""):
    check("result" in line, "%s: expected %r, got %r" % (what, want, line))
    got = line["result"]
    check(is_int(got) and got == want, "%s: expected int %r, got %r" % (what, want, got))


# ------------------------------------------------------------------ Python references

MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)  # exact for n < 3.3e24


def py_is_prime(n):
    if n < 2:
        return False
    for p in MR_BASES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def trial_is_prime(n):
    if n < 2:
        return False
    for p in range(2, math.isqrt(n) + 1):
        if n % p == 0:
            return False
    return True


def py_collatz(n):
    """Steps to 1, or None when a value passes 2^63 - 1."""
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        if n > I64_MAX:
            return None
        steps += 1
    return steps


def py_fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def close(a, b, rel=1e-12, abs_=0.0):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# ------------------------------------------------------------------ single-number ops

def test_square_cube_integers():
    edges = [0, 1, -1, 2, -2, 3037000499, -3037000499, 3037000500, -3037000500, 2097151,
             -2097151, 2097152, -2097152, 2097153, I64_MAX, I64_MIN, 2**31, -2**31]
    ints = edges + [RNG.randint(-10**6, 10**6) for _ in range(300)] + \
        [RNG.randint(-4 * 10**9, 4 * 10**9) for _ in range(200)] + \
        [RNG.randint(I64_MIN, I64_MAX) for _ in range(50)]
    for op, k in (("square", 2), ("cube", 3)):
        _, res = run(op, ints)
        for i, x in enumerate(ints):
            want = x ** k
            what = "%s(%d)" % (op, x)
            if fits(want):
                expect_int(res[i], want, what)
            else:
                expect_error(res[i], "overflow", what)
    # Sanity of the edges themselves: (-2^21)^3 = -2^63 fits, 2^21 cubed does not.
    _, res = run("cube", [-2097152, 2097152])
    expect_int(res[0], I64_MIN, "cube(-2^21)")
    expect_error(res[1], "overflow", "cube(2^21)")


def test_square_cube_floats():
    floats = [0.0, -0.0, 1.5, -2.5, 0.1, 1e-200, 1e100, 1e103, 1e154, 1e155, -1e155, 2.0,
              1e300, 5e-324] + [RNG.uniform(-1e6, 1e6) for _ in range(200)] + \
        [RNG.choice([-1, 1]) * math.ldexp(RNG.random(), RNG.randint(-1000, 1000))
         for _ in range(200)]
    for op in ("square", "cube"):
        raw, res = run(op, floats)
        for i, x in enumerate(floats):
            want = x * x if op == "square" else x * x * x
            what = "%s(%r)" % (op, x)
            if math.isinf(want):
                expect_error(res[i], "domain_error", what)
                continue
            check("result" in res[i], "%s: %r" % (what, res[i]))
            got = res[i]["result"]
            check(is_float(got), "%s: a float input gave %r" % (what, got))
            check(got == want and math.copysign(1, got) == math.copysign(1, want),
                  "%s: %r != %r" % (what, got, want))
            check(raw_result(raw[i]) == repr(want), "%s: text %s, Python repr %s" %
                  (what, raw_result(raw[i]), repr(want)))


def test_sqrt_matches_python_repr():
    xs = [0, 1, 2, 3, 4, 9, 10, 16, 2**52, 2**53 + 1, I64_MAX, 0.0, -0.0, 0.25, 0.1, 2.0,
          1e-300, 5e-324, 1.7976931348623157e308, 1e16, 1e32, 123456789.123] + \
        [RNG.randint(0, 10**6) for _ in range(300)] + \
        [RNG.randint(0, I64_MAX) for _ in range(100)] + \
        [RNG.uniform(0, 1e6) for _ in range(200)] + \
        [math.ldexp(RNG.random(), RNG.randint(-1070, 1020)) for _ in range(200)]
    raw, res = run("sqrt", xs)
    for i, x in enumerate(xs):
        want = math.sqrt(x)
        what = "sqrt(%r)" % (x,)
        check("result" in res[i], "%s: %r" % (what, res[i]))
        got = res[i]["result"]
        check(is_float(got), "%s: not a float: %r" % (what, got))
        # The exact text: shortest round-trip, as Python's repr (2.0, 0.1, 1e+16, ...).
        check(raw_result(raw[i]) == repr(want), "%s: text %s, Python repr %s" %
              (what, raw_result(raw[i]), repr(want)))
    # Perfect squares give exact floats; isqrt agrees.
    sq = [RNG.randint(0, 2**26) ** 2 for _ in range(100)]
    _, res = run("sqrt", sq)
    for i, x in enumerate(sq):
        check(res[i]["result"] == float(math.isqrt(x)), (x, res[i]))


def test_sqrt_domain_and_type_errors_fail_alone():
    xs = [4, -1, "nine", 9, -0.5, None, [4], {"x": 4}, True, 16, I64_MIN, 25]
    _, res = run("sqrt", xs)
    for i, x in enumerate(xs):
        what = "sqrt(%r)" % (x,)
        if is_int(x) and x >= 0:
            check(res[i].get("result") == math.sqrt(x), (what, res[i]))
        elif is_int(x) or is_float(x):
            expect_error(res[i], "domain_error", what)
        else:
            expect_error(res[i], "invalid_input", what)


def test_factorial():
    xs = list(range(0, 21))
    _, res = run("factorial", xs + [21, 25, -1, I64_MAX, 5.0, "5", None])
    for i in range(21):
        expect_int(res[i], math.factorial(i), "factorial(%d)" % i)
    for i in range(21, 25):
        # Outside 0..20 (21! passes 2^63): refused per job, never a wrapped number.
        expect_error(res[i], ("domain_error", "overflow"), "factorial(%r)" % xs[i - 21:])
    for i in range(25, 28):
        expect_error(res[i], "invalid_input", "factorial of a non-integer")
    check(math.factorial(20) <= I64_MAX < math.factorial(21))


def test_fibonacci():
    xs = list(range(0, 93))
    _, res = run("fibonacci", xs + [93, 100, -1, 1.0, "x"])
    for n in xs:
        expect_int(res[n], py_fib(n), "fibonacci(%d)" % n)
    check(py_fib(92) <= I64_MAX < py_fib(93))
    for i in (93, 94, 95):
        expect_error(res[i], ("domain_error", "overflow"), "fibonacci out of range")
    for i in (96, 97):
        expect_error(res[i], "invalid_input", "fibonacci of a non-integer")


def test_is_prime():
    special = [0, 1, 2, 3, 4, 5, 9, 25, 49, 97, 98, 561, 1105, 1729, 2047, 3215031751,
               2152302898747, 3474749660383, 341550071728321, 3825123056546413051,
               318665857834031151167461 % 2**63, 2**31 - 1, 2**61 - 1, 2305843009213693951,
               I64_MAX, 9223372036854775783, 4611686014132420609,  # (2^31-1)^2
               (2**31 - 1) * (2**31 - 19), 1000000007 * 998244353, 2**62, 2**62 + 1]
    small = list(range(0, 3000))
    rand = [RNG.randint(2, I64_MAX) | 1 for _ in range(400)]
    xs = special + small + rand
    _, res = run("is_prime", xs)
    for i, x in enumerate(xs):
        want = py_is_prime(x)
        got = res[i].get("result")
        check(got is want, "is_prime(%d): %r, Python says %r" % (x, res[i], want))
    # The Python Miller-Rabin agrees with plain trial division where that is affordable.
    for x in small:
        check(py_is_prime(x) == trial_is_prime(x), x)
    _, res = run("is_prime", [-1, -97, I64_MIN, 2.0, "7", None])
    for i in range(3):
        expect_error(res[i], "domain_error", "is_prime of a negative")
    for i in range(3, 6):
        expect_error(res[i], "invalid_input", "is_prime of a non-integer")


def test_prime_factors():
    xs = [2, 3, 4, 8, 12, 97, 360, 1024, 2**62, I64_MAX, 9223372036854775783,
          4611686014132420609, (2**31 - 1) * (2**31 - 19), 1000000007 * 998244353,
          2**61 - 1, 3 * (2**61 - 1), 600851475143, 2 * 3 * 5 * 7 * 11 * 13 * 17 * 19 * 23 * 29,
          3825123056546413051] + [RNG.randint(2, 10**6) for _ in range(300)] + \
        [RNG.randint(2, I64_MAX) for _ in range(60)]
    _, res = run("prime_factors", xs, timeout_ms=60000)
    for i, x in enumerate(xs):
        what = "prime_factors(%d)" % x
        check("result" in res[i], "%s: %r" % (what, res[i]))
        f = res[i]["result"]
        check(isinstance(f, list) and f and all(is_int(p) for p in f), (what, f))
        check(f == sorted(f), "%s: not ascending: %r" % (what, f))
        check(math.prod(f) == x, "%s: product %d" % (what, math.prod(f)))
        check(all(py_is_prime(p) for p in f), "%s: a factor is not prime: %r" % (what, f))
    _, res = run("prime_factors", [1, 0, -12, 12.0, "12"])
    for i in range(3):
        expect_error(res[i], "domain_error", "prime_factors below 2")
    for i in range(3, 5):
        expect_error(res[i], "invalid_input", "prime_factors of a non-integer")


def test_collatz_steps():
    xs = [1, 2, 3, 6, 7, 27, 97, 871, 77031, 837799, 8400511, 63728127, 670617279,
          9780657630, 75128138247, 2**62 + 1, I64_MAX, 2**62, 2**40] + \
        [RNG.randint(1, 10**7) for _ in range(300)] + \
        [RNG.randint(1, 2**40) for _ in range(100)]
    _, res = run("collatz_steps", xs)
    for i, x in enumerate(xs):
        want = py_collatz(x)
        what = "collatz_steps(%d)" % x
        if want is None:
            expect_error(res[i], "overflow", what)
        else:
            expect_int(res[i], want, what)
    _, res = run("collatz_steps", [0, -5, 1.0, "3"])
    for i in range(2):
        expect_error(res[i], "domain_error", "collatz_steps below 1")
    for i in range(2, 4):
        expect_error(res[i], "invalid_input", "collatz_steps of a non-integer")


# ------------------------------------------------------------------ array ops

def random_array(kind, n):
    if kind == "int":
        return [RNG.randint(-10**9, 10**9) for _ in range(n)]
    if kind == "bigint":
        return [RNG.randint(I64_MIN // 4, I64_MAX // 4) for _ in range(n)]
    if kind == "float":
        return [RNG.uniform(-1e3, 1e3) for _ in range(n)]
    if kind == "wide":
        return [RNG.choice([-1, 1]) * math.ldexp(RNG.random(), RNG.randint(-60, 60))
                for _ in range(n)]
    return [RNG.randint(-100, 100) if RNG.random() < 0.5 else RNG.uniform(-100, 100)
            for _ in range(n)]


ARRAYS = [[1], [0], [1, 2, 3, 4], [0.1, 0.2, 0.3], [0.1, 0.2, -0.3], [1e308, -1e308, 5.0],
          [I64_MAX, 1, -1], [2**62, 2**62, -2**62], [-5, 5.5], [1e-300, 1e-300], [3, 3, 3],
          [1e16, 1.0, -1e16]] + \
    [random_array(k, n) for k in ("int", "bigint", "float", "wide", "mixed")
     for n in (1, 2, 7, 100, 1000)]


def test_sum():
    arrays = ARRAYS + [[I64_MAX, 1], [I64_MIN, -1], [2**62, 2**62], [1e308, 1e308], []]
    raw, res = run("sum", arrays)
    for i, a in enumerate(arrays):
        what = "sum of array %d (%d numbers)" % (i, len(a))
        if all(is_int(x) for x in a):
            want = sum(a)
            if fits(want):
                expect_int(res[i], want, what)
            else:
                expect_error(res[i], "overflow", what)
            continue
        try:
            want = math.fsum(a)
        except OverflowError:  # the exact sum leaves the doubles
            expect_error(res[i], "domain_error", what)
            continue
        check("result" in res[i], "%s: %r" % (what, res[i]))
        got = res[i]["result"]
        check(is_float(got), "%s: a sum with floats gave %r" % (what, got))
        scale = max(abs(x) for x in a) * len(a)
        check(abs(got - want) <= 1e-15 * scale + 1e-300,
              "%s: %r, math.fsum says %r" % (what, got, want))


def test_mean():
    arrays = ARRAYS + [[1e308, 1e308], [-1e308, -1e308, -1e308], [I64_MAX, I64_MAX]]
    _, res = run("mean", arrays + [[]])
    for i, a in enumerate(arrays):
        what = "mean of array %d" % i
        check("result" in res[i], "%s: %r" % (what, res[i]))
        got = res[i]["result"]
        check(is_float(got), "%s: the mean is always a float, got %r" % (what, got))
        want = statistics.fmean(a) if not any(abs(x) > 1e300 for x in a) else \
            math.fsum(x / len(a) for x in a)
        scale = max(abs(x) for x in a)
        check(abs(got - want) <= 1e-14 * scale + 1e-300,
              "%s: %r, Python says %r" % (what, got, want))
    expect_error(res[len(arrays)], "domain_error", "mean of []")


def test_stats():
    arrays = ARRAYS + [[1e300, -1e300], [1e-300, 3e-300]]
    _, res = run("stats", arrays + [[]])
    for i, a in enumerate(arrays):
        what = "stats of array %d" % i
        check("result" in res[i], "%s: %r" % (what, res[i]))
        st = res[i]["result"]
        check(set(st) == {"count", "min", "max", "mean", "stddev"}, (what, st))
        check(is_int(st["count"]) and st["count"] == len(a), (what, st))
        check(st["min"] == min(a) and st["max"] == max(a), (what, st, min(a), max(a)))
        check(is_float(st["mean"]) and is_float(st["stddev"]), (what, st))
        scale = max(abs(x) for x in a)
        mean = math.fsum(x / len(a) for x in a)
        check(abs(st["mean"] - mean) <= 1e-14 * scale + 1e-300, (what, st["mean"], mean))
        # statistics.pstdev is exact (fractions) on floats; ints may overflow a float there.
        want_sd = statistics.pstdev([float(x) for x in a]) if scale < 1e150 else \
            statistics.pstdev([x / scale for x in a]) * scale
        check(st["stddev"] >= 0 and abs(st["stddev"] - want_sd) <= 1e-9 * (want_sd + scale * 1e-6),
              "%s: stddev %r, statistics.pstdev %r" % (what, st["stddev"], want_sd))
    expect_error(res[len(arrays)], "domain_error", "stats of []")


def test_sort():
    arrays = [a for a in ARRAYS if len(set(a)) == len(a)] + [[], [5], [3, 1, 2], [2.5, -1, 2]]
    for reverse in (False, True):
        extra = {"params": {"reverse": True}} if reverse else {}
        _, res = run("sort", arrays, **extra)
        for i, a in enumerate(arrays):
            what = "sort%s of array %d" % (" reverse" if reverse else "", i)
            want = sorted(a, reverse=reverse)
            got = res[i].get("result")
            check(got == want, "%s: %r != %r" % (what, got, want))
            check([type(x) for x in got] == [type(x) for x in want],
                  "%s: types changed" % what)


def test_array_ops_refuse_non_arrays():
    bad = [5, "abc", None, {"a": 1}, [1, "2"], [1, None], [[1]], [True, 2]]
    for op in ("sum", "mean", "stats", "sort"):
        _, res = run(op, bad + [[1, 2]])
        for i, x in enumerate(bad):
            expect_error(res[i], "invalid_input", "%s(%r)" % (op, x))
        check("result" in res[len(bad)], (op, res[len(bad)]))


# ------------------------------------------------------------------ the stand-ins

def test_cpu_loop():
    cases = [{"n": 0, "x": 0}, {"n": 0, "x": 5}, {"n": 1, "x": 7}, {"n": 10, "x": 5},
             {"n": 1000, "x": -3}, {"n": 123457, "x": 10**9}, {"n": 5 * 10**6, "x": -10**12},
             {"n": 10}, {"n": 4, "x": I64_MAX - 2}, {"n": 2, "x": I64_MAX},
             {"n": 3, "x": I64_MIN}, {"n": 2, "x": I64_MIN}] + \
        [{"n": RNG.randint(0, 20000), "x": RNG.randint(-10**15, 10**15)} for _ in range(50)]
    _, res = run("cpu_loop", cases)
    for i, c in enumerate(cases):
        n, x = c["n"], c.get("x", 0)
        want = n * x + n * (n - 1) // 2
        what = "cpu_loop(%r)" % c
        if fits(want):
            expect_int(res[i], want, what)
        else:
            expect_error(res[i], "overflow", what)
    bad = [5, {"x": 1}, {"n": -1}, {"n": 10**9 + 1}, {"n": 1.5}, {"n": 1, "y": 2}, "n"]
    _, res = run("cpu_loop", bad)
    for i, c in enumerate(bad):
        expect_error(res[i], ("invalid_input", "domain_error"), "cpu_loop(%r)" % (c,))


def test_cpu_loop_cost_grows_with_n():
    """A real loop: 40x the steps takes clearly longer (not a folded closed form)."""
    def timed(n):
        t0 = time.monotonic()
        _, res = run("cpu_loop", [{"n": n, "x": 1}])
        expect_int(res[0], n + n * (n - 1) // 2)
        return time.monotonic() - t0
    small = min(timed(5 * 10**6) for _ in range(3))
    big = timed(200 * 10**6)
    check(big > small * 5 and big > 0.03, "cpu_loop n=2e8 took %.3fs, n=5e6 %.3fs" % (big, small))


def test_sleep():
    xs = [0, 1, 30, 120]
    t0 = time.monotonic()
    _, res = run("sleep", xs, order="completed")
    took = time.monotonic() - t0
    for i, x in enumerate(xs):
        expect_int(res[i], x, "sleep(%d)" % x)
    check(took >= 0.12, "a 120 ms sleep answered after %.3fs" % took)
    _, res = run("sleep", [-1, 60001, 1.5, "10"])
    for i in range(2):
        expect_error(res[i], "domain_error", "sleep out of range")
    for i in range(2, 4):
        expect_error(res[i], "invalid_input", "sleep of a non-integer")


def test_monte_carlo_pi():
    cases = [{"samples": 1, "seed": 0}, {"samples": 1000, "seed": 1},
             {"samples": 200000, "seed": 42}, {"samples": 200000, "seed": 42},
             {"samples": 200000, "seed": 43}, {"samples": 200000, "seed": -7},
             {"samples": 200000}, {"samples": 200000, "seed": 0}]
    _, res = run("monte_carlo_pi", cases)
    vals = []
    for i, c in enumerate(cases):
        what = "monte_carlo_pi(%r)" % c
        check("result" in res[i], (what, res[i]))
        v = res[i]["result"]
        check(is_float(v), (what, v))
        # An estimate is 4 * inside / samples, for a whole number of points inside.
        inside = v * c["samples"] / 4
        check(abs(inside - round(inside)) < 1e-6 and 0 <= inside <= c["samples"], (what, v))
        if c["samples"] >= 200000:
            # 5 sigma of a binomial estimate: sd = 4 * sqrt(p(1-p)/n) ~ 0.0037.
            check(abs(v - math.pi) < 0.02, "%s: %r is far from pi" % (what, v))
        vals.append(v)
    check(vals[2] == vals[3], "the same seed must give the same estimate")
    check(vals[6] == vals[7], "seed defaults to 0")
    check(len({vals[2], vals[4], vals[5]}) == 3, "different seeds gave equal estimates")
    # The same seed again in a later batch, on whichever worker: the same estimate.
    _, res = run("monte_carlo_pi", [cases[2]] * 4, chunksize=1)
    check(all(res[i]["result"] == vals[2] for i in range(4)), res)
    _, res = run("monte_carlo_pi", [{"samples": 0}, {"seed": 1}, 5, {"samples": 1.5}])
    for i in range(4):
        expect_error(res[i], ("invalid_input", "domain_error"), "monte_carlo_pi bad input")


# ------------------------------------------------------------------ batches

def reference(op, x, params=None):
    """('ok', value) or ('err', codes) as SPEC §5 says, computed in Python."""
    params = params or {}
    if op == "square":
        v = x * x
        return ("ok", v) if fits(v) else ("err", ("overflow",))
    if op == "sqrt":
        return ("ok", math.sqrt(x)) if x >= 0 else ("err", ("domain_error",))
    if op == "factorial":
        return ("ok", math.factorial(x)) if 0 <= x <= 20 else ("err", ("domain_error", "overflow"))
    if op == "is_prime":
        return ("ok", py_is_prime(x))
    if op == "sort":
        return ("ok", sorted(x, reverse=bool(params.get("reverse"))))
    if op == "sum":
        return ("ok", sum(x))
    raise KeyError(op)


def test_mixed_jobs_batch():
    jobs = []
    for k in range(600):
        op = RNG.choice(["square", "sqrt", "factorial", "is_prime", "sort", "sum"])
        if op == "square":
            x = RNG.randint(-4 * 10**9, 4 * 10**9)
        elif op == "sqrt":
            x = RNG.randint(-10, 10**6)
        elif op == "factorial":
            x = RNG.randint(-2, 23)
        elif op == "is_prime":
            x = RNG.randint(0, 10**12)
        else:
            x = [RNG.randint(-99, 99) for _ in range(RNG.randint(0, 8))]
        job = {"op": op, "input": x}
        if op == "sort" and RNG.random() < 0.5:
            job["params"] = {"reverse": True}
        jobs.append(job)
    jobs.insert(17, {"op": "sqrt", "input": "not a number"})
    for order in ("input", "completed"):
        raw, lines, _ = ndjson(S, {"jobs": jobs, "order": order, "chunksize": 5})
        res = by_index(lines, len(jobs))
        for i, j in enumerate(jobs):
            what = "jobs[%d] %r" % (i, j)
            if i == 17:
                expect_error(res[i], "invalid_input", what)
                continue
            kind, want = reference(j["op"], j["input"], j.get("params"))
            if kind == "err":
                expect_error(res[i], want, what)
            else:
                got = res[i].get("result")
                check(got == want and type(got) is type(want), "%s: %r != %r" % (what, got, want))
        if order == "input":
            check([l["index"] for l in lines[:-1]] == list(range(len(jobs))))


def test_params_batch_and_per_job():
    """Batch params apply to every job; a job's own params override them key by key."""
    batch = {"jobs": [{"op": "sort", "input": [2, 3, 1]},
                      {"op": "sort", "input": [2, 3, 1], "params": {"reverse": False}},
                      {"op": "sort", "input": [2, 3, 1], "params": {"reverse": True}}],
             "params": {"reverse": True}}
    _, lines, _ = ndjson(S, batch)
    res = by_index(lines, 3)
    check(res[0]["result"] == [3, 2, 1], res[0])
    check(res[1]["result"] == [1, 2, 3], res[1])
    check(res[2]["result"] == [3, 2, 1], res[2])
    jobs = batch["jobs"] + [{"op": "square", "input": 4}]
    _, lines, _ = ndjson(S, {"jobs": jobs})
    res = by_index(lines, 4)
    check([res[i]["result"] for i in range(4)] == [[1, 2, 3], [1, 2, 3], [3, 2, 1], 16], res)
    # op + inputs with shared params.
    _, lines, _ = ndjson(S, {"op": "sort", "inputs": [[1, 3, 2], [0.5, -1]],
                             "params": {"reverse": True}})
    res = by_index(lines, 2)
    check(res[0]["result"] == [3, 2, 1] and res[1]["result"] == [0.5, -1], res)


def test_never_nan_or_infinity():
    """Inputs whose results would be inf or NaN fail with domain_error; the body never holds
    NaN/Infinity (client.loads refuses them)."""
    jobs = [{"op": "square", "input": 1e200}, {"op": "cube", "input": -1e103},
            {"op": "sum", "input": [1e308, 1e308]}, {"op": "sum", "input": [-1e308, -1e308]},
            {"op": "stats", "input": [1e308, -1e308, 1e308]},
            {"op": "mean", "input": [1.7976931348623157e308] * 3},
            {"op": "sqrt", "input": 1.7976931348623157e308}]
    status, _, data = post(S, {"jobs": jobs})
    check(status == 200, status)
    for token in (b"NaN", b"Infinity", b"nan", b"inf"):
        check(token not in data.replace(b"infinity", b""), "%r in %r" % (token, data))
    lines = [loads(l) for l in data.decode().splitlines()]
    res = by_index(lines, len(jobs))
    for i in range(4):
        expect_error(res[i], "domain_error", jobs[i])
    for i in range(4, len(jobs)):
        check("error" in res[i] and res[i]["error"]["code"] == "domain_error" or
              ("result" in res[i] and all(math.isfinite(v) for v in _numbers(res[i]["result"]))),
              (jobs[i], res[i]))
    check(res[5]["result"] == 1.7976931348623157e308, res[5])


def _numbers(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _numbers(x)
    elif isinstance(v, list):
        for x in v:
            yield from _numbers(x)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        yield float(v)


def test_integer_types_survive_every_path():
    """Integral floats stay floats (2.0), integers stay integers, in both orders and in the
    one-document form."""
    batch = {"jobs": [{"op": "square", "input": 2}, {"op": "square", "input": 2.0},
                      {"op": "sum", "input": [1, 2]}, {"op": "sum", "input": [1, 2.0]},
                      {"op": "sqrt", "input": 4}, {"op": "cube", "input": -3}]}
    want = [(4, int), (4.0, float), (3, int), (3.0, float), (2.0, float), (-27, int)]
    for order in ("input", "completed"):
        raw, lines, _ = ndjson(S, dict(batch, order=order))
        res = by_index(lines, 6)
        for i, (v, t) in enumerate(want):
            check(res[i]["result"] == v and type(res[i]["result"]) is t, (order, i, res[i]))
        texts = {l["index"]: r for r, l in zip(raw, lines) if "index" in l}
        check(raw_result(texts[1]) == "4.0" and raw_result(texts[0]) == "4", texts)
    status, _, data = post(S, batch, accept="application/json")
    check(status == 200, status)
    doc = loads(data)
    for i, (v, t) in enumerate(want):
        r = doc["results"][i]["result"]
        check(r == v and type(r) is t, (i, r))


def test_integer_input_past_64_bits_fails_alone():
    body = '{"op": "square", "inputs": [3, 18446744073709551616, 4]}'
    status, _, data = post(S, body)
    check(status == 200, "status %d: %s" % (status, data[:200]))
    lines = [loads(l) for l in data.decode().splitlines()]
    res = by_index(lines, 3)
    expect_int(res[0], 9)
    expect_error(res[1], ("overflow",), "square(2^64)")
    expect_int(res[2], 16)
    # Inside arrays and objects, negative, and next to strings that look like numbers.
    body = ('{"jobs": [{"op": "sum", "input": [1, -99999999999999999999]},'
            ' {"op": "sort", "input": [9223372036854775807, -9223372036854775808]},'
            ' {"op": "cpu_loop", "input": {"n": 3, "x": 123456789012345678901234567890}},'
            ' {"op": "sqrt", "input": "99999999999999999999"}]}')
    status, _, data = post(S, body)
    check(status == 200, "status %d: %s" % (status, data[:200]))
    res = by_index([loads(l) for l in data.decode().splitlines()], 4)
    expect_error(res[0], ("overflow",), "sum with -10^20")
    check(res[1].get("result") == [-9223372036854775808, 9223372036854775807], res[1])
    expect_error(res[2], ("overflow",), "cpu_loop x=1.2e29")
    expect_error(res[3], ("invalid_input",), "sqrt of a string")


if __name__ == "__main__":
    with Server(workers=2) as S:
        code = Suite("numeric_ops").run(globals())
    sys.exit(code)
