/* JSON text writer: numbers, strings, error objects. */
#include "jsonw.h"

#include "errors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int jsonw_format_double(char out[32], double d)
{
    if (!isfinite(d)) {
        return -1;
    }
    int n = 0;
    /* 17 significant digits always round-trip; try fewer first and keep the first that
     * reads back exactly: that is the shortest correct form for every double. */
    for (int prec = 1; prec <= 17; prec++) {
        n = snprintf(out, 32, "%.*g", prec, d);
        if (strtod(out, NULL) == d) {
            break;
        }
    }
    if (strpbrk(out, ".eEn") == NULL) {
        out[n++] = '.';
        out[n++] = '0';
        out[n] = '\0';
    }
    return n;
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
