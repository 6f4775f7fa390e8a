/* Base64 encode and decode, table-driven. */
#include "img_b64.h"

#include <string.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int img_b64_encode(struct buf *out, const uint8_t *p, size_t len)
{
    size_t n = (len + 2) / 3 * 4;
    char *d = buf_reserve(out, n);
    if (d == NULL) {
        return -1;
    }
    size_t i = 0;
    char *o = d;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        o[0] = alphabet[v >> 18];
        o[1] = alphabet[(v >> 12) & 63];
        o[2] = alphabet[(v >> 6) & 63];
        o[3] = alphabet[v & 63];
        o += 4;
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        o[0] = alphabet[v >> 18];
        o[1] = alphabet[(v >> 12) & 63];
        o[2] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        o[3] = '=';
    }
    buf_commit(out, n);
    return 0;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+' || c == '-') { /* the URL-safe alphabet too */
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

int img_b64_decode(struct buf *out, const char *s, size_t len)
{
    if (len > 5 && memcmp(s, "data:", 5) == 0) {
        const char *comma = memchr(s, ',', len);
        if (comma == NULL) {
            return -1;
        }
        len -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    char *d = buf_reserve(out, len / 4 * 3 + 3);
    if (d == NULL) {
        return -2;
    }
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
            continue;
        }
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (pad != 0 || v < 0) {
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[n++] = (char)(acc >> bits);
        }
    }
    if (bits >= 6 || pad > 2) {
        return -1;
    }
    buf_commit(out, n);
    return 0;
}
