/* Base64 codec. */
#include "base64.h"

#include <string.h>

int base64_encode(struct buf *out, const uint8_t *p, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t olen = (len + 2) / 3 * 4;
    char *d = buf_reserve(out, olen);
    if (d == NULL) {
        return -1;
    }
    size_t i = 0;
    char *o = d;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    buf_commit(out, olen);
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
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

int base64_decode_each(const char *s, size_t len,
                       int (*emit)(void *ud, const uint8_t *p, size_t n), void *ud)
{
    if (len > 5 && strncmp(s, "data:", 5) == 0) {
        const char *comma = memchr(s, ',', len);
        if (comma == NULL) {
            return -1;
        }
        len -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    uint8_t piece[3072];
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
        if (v < 0 || pad > 0) {
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            piece[n++] = (uint8_t)(acc >> bits);
            if (n == sizeof piece) {
                int rc = emit(ud, piece, n);
                if (rc != 0) {
                    return rc;
                }
                n = 0;
            }
        }
    }
    /* Leftover bits must be padding zeros, and at most 4 of them (2 or 4 per RFC 4648). */
    if (bits >= 6 || pad > 2 || (acc & ((1u << bits) - 1)) != 0) {
        return -1;
    }
    return n > 0 ? emit(ud, piece, n) : 0;
}

static int emit_buf(void *ud, const uint8_t *p, size_t n)
{
    return buf_add(ud, p, n) == 0 ? 0 : -2;
}

int base64_decode(struct buf *out, const char *s, size_t len)
{
    return base64_decode_each(s, len, emit_buf, out);
}
