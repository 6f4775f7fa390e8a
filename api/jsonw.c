/* JSON text writer: numbers, strings, error objects. Floats print as Python's repr does:
 * the shortest digits that read back (found by "%.*e" and strtod, no own float parsing),
 * positional between 1e-4 and 1e16, exponent form outside. */
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

int jsonw_format_double(char out[32], double d)
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
    int e2 = 0;
    int pow2 = frexp(d, &e2) == 0.5;
    /* Whether some P-digit decimal reads back as D is monotone in P (the P-digit decimals are
     * among the P+1-digit ones) and true at 17. Computed results mostly need 15 to 17 digits,
     * so try 15 first: up from there when it fails, else bisect 1..K, K the digits left of the
     * 15 once trailing zeros are gone (short inputs like 0.5 come back in two or three tries). */
    char best[24];
    int best_exp = 0;
    if (!digits_at(d, 15, pow2, best, &best_exp)) {
        if (!digits_at(d, 16, pow2, best, &best_exp)) {
            digits_at(d, 17, pow2, best, &best_exp);
        }
    } else {
        char digits[24];
        int exp10 = 0, lo = 1, hi = (int)strlen(best);
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (digits_at(d, mid, pow2, digits, &exp10)) {
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
