/* JSON text writer: numbers, strings, error objects. Floats print as Python's repr does:
 * the shortest digits that read back, positional between 1e-4 and 1e16, exponent form
 * outside. Found in exact 128-bit integer arithmetic where that fits (most results), else by
 * "%.*e" and strtod (no own float parsing). */
#include "jsonw.h"

#include "errors.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The P-significant-digit decimal that reads back as D (> 0), if there is one: the nearest
 * one (what "%.*e" prints) or, when D is a power of two, the one above it. A power of two's
 * rounding interval is narrower below than above, so the nearest decimal can fall out below
 * while the next one up is in; for every other double the interval is symmetric and the
 * nearest is the only candidate. Stores the digits (without trailing zeros) in DIGITS and the
 * decimal exponent of the first one in *EXP10. Returns 1 if found. */
static int digits_at(double d, int p, int pow2, char digits[24], int *exp10)
{
    char s[48];
    snprintf(s, sizeof s, "%.*e", p - 1, d);
    uint64_t m = 0;
    const char *q = s;
    for (; *q != 'e'; q++) {
        if (*q != '.') {
            m = m * 10 + (uint64_t)(*q - '0');
        }
    }
    int e = (int)strtol(q + 1, NULL, 10) - (p - 1); /* the value is m * 10^e */
    for (int k = 0; k < 1 + pow2; k++) {
        uint64_t c = m + (uint64_t)k;
        char t[48];
        snprintf(t, sizeof t, "%" PRIu64 "e%d", c, e);
        /* 17 digits always read back (DBL_DECIMAL_DIG), so that check can be skipped. */
        if (p == 17 || strtod(t, NULL) == d) {
            int n = snprintf(digits, 24, "%" PRIu64, c);
            *exp10 = e + n - 1;
            while (n > 1 && digits[n - 1] == '0') {
                digits[--n] = '\0';
            }
            return 1;
        }
    }
    return 0;
}

static int jsonw_format_double_impl(char out[32], double d, int fast);

/* 10^K as a 128-bit integer, K <= 38. */
static unsigned __int128 pow10_u128(int k)
{
    static const uint64_t p10[20] = {1ull,
                                     10ull,
                                     100ull,
                                     1000ull,
                                     10000ull,
                                     100000ull,
                                     1000000ull,
                                     10000000ull,
                                     100000000ull,
                                     1000000000ull,
                                     10000000000ull,
                                     100000000000ull,
                                     1000000000000ull,
                                     10000000000000ull,
                                     100000000000000ull,
                                     1000000000000000ull,
                                     10000000000000000ull,
                                     100000000000000000ull,
                                     1000000000000000000ull,
                                     10000000000000000000ull};
    return k < 20 ? p10[k] : (unsigned __int128)p10[19] * p10[k - 19];
}

struct fast_double {
    uint64_t m; /* D = m * 2^-k */
    int k;
    int f; /* floor(log10(D)), or an estimate one low until the first call fixes it */
};

/* Splits D (> 0) for digits_fast. Returns 0, or -1 when D is a power of two or outside
 * 2^-16 .. 2^53 (then digits_at does the work). */
static int fast_split(double d, struct fast_double *fd)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    int be = (int)((bits >> 52) & 0x7ff);
    uint64_t frac = bits & ((1ull << 52) - 1);
    if (be == 0 || frac == 0) {
        return -1; /* subnormal, zero, or a power of two */
    }
    int e = be - 1075; /* D = (2^52 + frac) * 2^e */
    if (e > 0 || e < -68) {
        return -1;
    }
    fd->m = (1ull << 52) | frac;
    fd->k = -e;
    /* D >= 2^(e+52): floor((e+52) log10 2) is floor(log10 D) or one less. 78913 / 2^18
     * is log10 2 from below; the shift of a negative floors as long as >> is arithmetic,
     * which gcc and clang guarantee. */
    fd->f = ((e + 52) * 78913) >> 18;
    return 0;
}

/* The fast twin of digits_at, in exact integer arithmetic (no printf, no strtod): D > 0 is
 * m * 2^-k; its nearest P-digit decimal N * 10^-s is rounded half-even as printf does, and it
 * reads back as D iff it lies in D's rounding interval (2m - 1, 2m + 1) * 2^(-k - 1), ends
 * included when m is even (strtod rounds ties to even). Every product stays under 2^127 for
 * 2^-16 < D < 2^53 (k in 0..68): that is where computed results mostly live. Returns 1
 * (found) or 0 (no P-digit decimal reads back), or -1 (ask digits_at). */
static void emit_digits(uint64_t x, int len, int s, char digits[24], int *exp10);

static int digits_fast(struct fast_double *fd, int p, char digits[24], int *exp10)
{
    const uint64_t m = fd->m;
    const int k = fd->k;
    int f = fd->f;
    unsigned __int128 lo = pow10_u128(p - 1), hi = lo * 10;
    unsigned __int128 n = 0, trunc = 0;
    int s = 0;
    for (int tries = 0;; tries++) {
        if (tries == 3) {
            return -1;
        }
        s = p - 1 - f;
        if (s >= 0) {
            if (s > 21) {
                return -1;
            }
            unsigned __int128 num = (unsigned __int128)m * pow10_u128(s);
            n = num >> k;
            trunc = n;
            if (k > 0) {
                unsigned __int128 rem = num - (n << k), half = (unsigned __int128)1 << (k - 1);
                if (rem > half || (rem == half && (n & 1))) {
                    n++;
                }
            }
        } else {
            unsigned __int128 den = pow10_u128(-s) << k;
            n = m / den;
            trunc = n;
            unsigned __int128 rem2 = (m % den) * 2;
            if (rem2 > den || (rem2 == den && (n & 1))) {
                n++;
            }
        }
        /* Judged before rounding: D * 10^s must lie in [10^(p-1), 10^p); rounding may then
         * carry it up to 10^p, which is right, but never decides the exponent. */
        if (trunc < lo) {
            f--; /* the estimate was one too many digits left of the point */
        } else if (trunc >= hi) {
            f++;
        } else {
            break;
        }
    }
    fd->f = f; /* exact now, for the next P */
    /* Compare N * 10^-s with (2m -+ 1) * 2^(e-1), both sides times 2^(1-e) (and 10^s). */
    unsigned __int128 v, blo = 2 * (unsigned __int128)m - 1, bhi = 2 * (unsigned __int128)m + 1;
    if (s >= 0) {
        v = n << (k + 1);
        unsigned __int128 t = pow10_u128(s);
        blo *= t;
        bhi *= t;
    } else {
        v = (n * pow10_u128(-s)) << (k + 1);
    }
    int in = (m & 1) == 0 ? (v >= blo && v <= bhi) : (v > blo && v < bhi);
    if (!in) {
        return 0;
    }
    emit_digits((uint64_t)n, n == hi ? p + 1 : p, s, digits, exp10);
    return 1;
}

/* N (>= 1) has LEN digits (P, or P + 1 when rounding carried) and stands for N * 10^-S:
 * stores its digits without trailing zeros and the exponent of the first one. */
static void emit_digits(uint64_t x, int len, int s, char digits[24], int *exp10)
{
    *exp10 = len - 1 - s;
    while (x % 10 == 0) { /* trailing zeros go: N >= 1, so this stops */
        x /= 10;
        len--;
    }
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324"
                                   "25262728293031323334353637383940414243444546474849"
                                   "50515253545556575859606162636465666768697071727374"
                                   "75767778798081828384858687888990919293949596979899";
    int i = len;
    while (i >= 2) {
        unsigned r = (unsigned)(x % 100);
        x /= 100;
        digits[--i] = pairs[2 * r + 1];
        digits[--i] = pairs[2 * r];
    }
    if (i == 1) {
        digits[0] = (char)('0' + x);
    }
    digits[len] = '\0';
}

/* digits_fast for P = 15, 16 and 17 at once: D * 10^s17 is worked out once (truncated T plus
 * the remainder REM in units of 2^-k), the 15- and 16-digit roundings come from T's last
 * digits and REM, and each candidate is checked against the same interval bounds. Returns the
 * smallest P of the three whose nearest decimal reads back (its digits stored), 0 when the
 * 17-digit one does not either (never expected), or -1 (ask digits_try). */
static int digits_fast_15_17(struct fast_double *fd, char digits[24], int *exp10)
{
    const uint64_t m = fd->m;
    const int k = fd->k;
    int f = fd->f;
    const unsigned __int128 lo = pow10_u128(16), hi = lo * 10;
    unsigned __int128 num = 0, t = 0, p10s = 0;
    int s = 0;
    for (int tries = 0;; tries++) {
        if (tries == 3) {
            return -1;
        }
        s = 16 - f;
        if (s < 0 || s > 21) {
            return -1;
        }
        p10s = pow10_u128(s);
        num = (unsigned __int128)m * p10s;
        t = num >> k;
        if (t < lo) {
            f--;
        } else if (t >= hi) {
            f++;
        } else {
            break;
        }
    }
    fd->f = f;
    const unsigned __int128 rem = num - (t << k); /* < 2^k */
    /* In units of 2^-(k+1) at scale 10^s17, D is 2 * num = (T << (k + 1)) + 2 * REM and its
     * interval reaches P10S either side; a candidate C lies (C - T) * 2^(k+1) - 2 * REM off,
     * |C - T| <= 100, so the distance fits a signed 128-bit integer. */
    const __int128 unit = (__int128)1 << (k + 1), rem2 = 2 * (__int128)rem;
    const int even = (m & 1) == 0;
    for (int j = 2; j >= 0; j--) { /* P = 17 - j */
        const uint64_t pj = j == 2 ? 100 : j == 1 ? 10 : 1;
        const uint64_t t64 = (uint64_t)t; /* < 10^17 */
        unsigned __int128 n = t64 / pj, r = t64 % pj;
        /* The fraction dropped is (r + rem / 2^k) / pj; compare it with one half. */
        unsigned __int128 twice = ((r << k) + rem) * 2, whole = (unsigned __int128)pj << k;
        if (twice > whole || (twice == whole && (n & 1))) {
            n++;
        }
        __int128 dist = ((__int128)(n * pj) - (__int128)t64) * unit - rem2;
        unsigned __int128 ad = (unsigned __int128)(dist < 0 ? -dist : dist);
        int in = even ? ad <= p10s : ad < p10s;
        if (in) {
            int p = 17 - j;
            emit_digits((uint64_t)n, n == (uint64_t)hi / pj ? p + 1 : p, s - j, digits, exp10);
            return p;
        }
    }
    return 0;
}

static int digits_try(double d, struct fast_double *fd, int p, int pow2, char digits[24],
                      int *exp10)
{
    int rc = fd != NULL ? digits_fast(fd, p, digits, exp10) : -1;
    return rc >= 0 ? rc : digits_at(d, p, pow2, digits, exp10);
}

int jsonw_format_double_ref(char out[32], double d)
{
    return jsonw_format_double_impl(out, d, 0);
}

int jsonw_format_double(char out[32], double d)
{
    return jsonw_format_double_impl(out, d, 1);
}

static int jsonw_format_double_impl(char out[32], double d, int fast)
{
    if (!isfinite(d)) {
        return -1;
    }
    int n = 0;
    if (signbit(d)) {
        out[n++] = '-';
        d = -d;
    }
    if (d == 0) {
        memcpy(out + n, "0.0", 4);
        return n + 3;
    }
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    int pow2 = (bits & ((1ull << 52) - 1)) == 0; /* d > 0 here: a power of two (or subnormal
                                                  * with no fraction bits, which is too) */
    /* Whether some P-digit decimal reads back as D is monotone in P (the P-digit decimals are
     * among the P+1-digit ones) and true at 17. Computed results mostly need 15 to 17 digits,
     * so try 15 first: up from there when it fails, else bisect 1..K, K the digits left of the
     * 15 once trailing zeros are gone (short inputs like 0.5 come back in two or three tries). */
    char best[24];
    int best_exp = 0;
    struct fast_double fdv, *fd = fast && fast_split(d, &fdv) == 0 ? &fdv : NULL;
    int top = fd != NULL ? digits_fast_15_17(fd, best, &best_exp) : -1;
    if (top > 15) {
        /* 16 or 17 digits: done */
    } else if (top < 15 && !digits_try(d, fd, 15, pow2, best, &best_exp)) {
        if (!digits_try(d, fd, 16, pow2, best, &best_exp)) {
            digits_try(d, fd, 17, pow2, best, &best_exp);
        }
    } else {
        char digits[24];
        int exp10 = 0, lo = 1, hi = (int)strlen(best);
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (digits_try(d, fd, mid, pow2, digits, &exp10)) {
                hi = mid;
                memcpy(best, digits, sizeof best);
                best_exp = exp10;
            } else {
                lo = mid + 1;
            }
        }
    }
    /* Laid out as Python's repr: positional for 1e-4 <= |d| < 1e16, else d.ddde+XX. */
    int nd = (int)strlen(best);
    char *o = out + n;
    if (best_exp >= -4 && best_exp < 16) {
        if (best_exp < 0) {
            *o++ = '0';
            *o++ = '.';
            for (int k = 0; k < -best_exp - 1; k++) {
                *o++ = '0';
            }
            memcpy(o, best, (size_t)nd);
            o += nd;
        } else {
            for (int k = 0; k <= best_exp; k++) {
                *o++ = k < nd ? best[k] : '0';
            }
            *o++ = '.';
            if (nd > best_exp + 1) {
                memcpy(o, best + best_exp + 1, (size_t)(nd - best_exp - 1));
                o += nd - best_exp - 1;
            } else {
                *o++ = '0';
            }
        }
        *o = '\0';
    } else {
        o += snprintf(o, (size_t)(32 - n), "%c%s%se%c%02d", best[0], nd > 1 ? "." : "", best + 1,
                      best_exp < 0 ? '-' : '+', abs(best_exp));
    }
    return (int)(o - out);
}

int jsonw_double(struct buf *b, double d)
{
    char tmp[32];
    int n = jsonw_format_double(tmp, d);
    if (n < 0) {
        return -1;
    }
    return buf_add(b, tmp, (size_t)n);
}

int jsonw_int(struct buf *b, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) {
        *--p = '-';
    }
    return buf_add(b, p, (size_t)(tmp + sizeof tmp - p));
}

int jsonw_result_line(struct buf *b, uint64_t index, const char *result, size_t len)
{
    /* The hot line of numeric batches: one reservation, digits without snprintf. */
    static const char head[] = "{\"index\":", mid[] = ",\"result\":";
    char *dst = buf_reserve(b, (sizeof head - 1) + 20 + (sizeof mid - 1) + len + 2);
    if (dst == NULL) {
        return -1;
    }
    char *p = dst;
    memcpy(p, head, sizeof head - 1);
    p += sizeof head - 1;
    char digits[20];
    int nd = 0;
    do {
        digits[nd++] = (char)('0' + index % 10);
        index /= 10;
    } while (index > 0);
    while (nd > 0) {
        *p++ = digits[--nd];
    }
    memcpy(p, mid, sizeof mid - 1);
    p += sizeof mid - 1;
    memcpy(p, result, len);
    p += len;
    *p++ = '}';
    *p++ = '\n';
    buf_commit(b, (size_t)(p - dst));
    return 0;
}

int jsonw_string(struct buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *dst = buf_reserve(b, len * 6 + 2);
    if (dst == NULL) {
        return -1;
    }
    char *p = dst;
    *p++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        } else if (c == '\t') {
            *p++ = '\\';
            *p++ = 't';
        } else if (c == '\r') {
            *p++ = '\\';
            *p++ = 'r';
        } else if (c < 0x20 || c == 0x7f) {
            *p++ = '\\';
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    buf_commit(b, (size_t)(p - dst));
    return 0;
}

int jsonw_cstr(struct buf *b, const char *s)
{
    return jsonw_string(b, s, strlen(s));
}

int jsonw_error_object(struct buf *b, int err, const char *message, const char *path)
{
    int rc = 0;
    rc |= buf_adds(b, "{\"code\":");
    rc |= jsonw_cstr(b, batchd_err_name(err));
    rc |= buf_adds(b, ",\"message\":");
    rc |= jsonw_cstr(b, message != NULL && message[0] != '\0' ? message : batchd_err_message(err));
    if (path != NULL && path[0] != '\0') {
        rc |= buf_adds(b, ",\"path\":");
        rc |= jsonw_cstr(b, path);
    }
    rc |= buf_adds(b, "}");
    return rc ? -1 : 0;
}

int jsonw_progress(struct buf *b, uint64_t done, uint64_t total, uint64_t ok, uint64_t failed,
                   double rate_per_s)
{
    int rc = buf_printf(b,
                        "{\"progress\":{\"done\":%llu,\"total\":%llu,\"ok\":%llu,\"failed\":%llu,"
                        "\"rate_per_s\":",
                        (unsigned long long)done, (unsigned long long)total, (unsigned long long)ok,
                        (unsigned long long)failed);
    rc |= jsonw_double(b, rate_per_s);
    if (rate_per_s > 0 && total >= done) {
        rc |= buf_printf(b, ",\"eta_ms\":%lld}}",
                         (long long)((double)(total - done) / rate_per_s * 1000.0));
    } else {
        rc |= buf_adds(b, ",\"eta_ms\":null}}");
    }
    return rc;
}
