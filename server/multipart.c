/* Streaming multipart/form-data: a state machine over single bytes (with a fast path over
 * plain data), so that where the reads of the body end changes nothing. The delimiter
 * "\r\n--BOUNDARY" is matched with a KMP table; bytes of a partial match are held only as a
 * length (they are a prefix of the delimiter) and given back as data when the match fails.
 * Not a MIME library: no nested multiparts, no header folding, no transfer decodings. */
#include "multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum mp_state {
    MP_PREAMBLE, /* before the first delimiter: ignored */
    MP_AFTER,    /* just after a delimiter: "--" (the end), or optional blanks and CRLF */
    MP_AFTER_DASH,
    MP_AFTER_BLANK,
    MP_AFTER_CR,
    MP_HEADERS,  /* a part's header block, up to its empty line */
    MP_DATA,     /* a part's data, up to the next delimiter */
    MP_EPILOGUE, /* after the closing delimiter: ignored */
    MP_ERROR,
};

struct multipart {
    multipart_fn fn;
    void *ud;
    enum mp_state state;
    int err;
    char delim[MULTIPART_MAX_BOUNDARY + 4]; /* "\r\n--" BOUNDARY */
    size_t dlen;
    size_t fail[MULTIPART_MAX_BOUNDARY + 4]; /* KMP: longest proper prefix-suffix of delim[0..i] */
    size_t match;                            /* delimiter bytes matched so far */
    char head[MULTIPART_MAX_HEADERS];
    size_t hlen;
    char vals[MULTIPART_MAX_HEADERS + 3]; /* the part's decoded name, filename, content type */
    struct multipart_part part;
    char message[160];
};

static int mp_fail(struct multipart *m, int err, const char *msg)
{
    if (m->state != MP_ERROR) {
        m->state = MP_ERROR;
        m->err = err;
        snprintf(m->message, sizeof m->message, "%s", msg);
    }
    return m->err;
}

static int mp_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Finds parameter KEY in header value V (N bytes) of the form `type; k=v; k="quoted"` and
 * copies its value, unquoted, to OUT (CAP bytes, NUL-terminated). Returns the value's
 * length, -1 when absent, -2 when malformed or too long. */
static long mp_param(const char *v, size_t n, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    const char *semi = memchr(v, ';', n);
    size_t i = semi != NULL ? (size_t)(semi - v) : n;
    while (i < n) {
        while (i < n && (v[i] == ';' || mp_blank(v[i]))) {
            i++;
        }
        size_t ns = i;
        while (i < n && v[i] != '=' && v[i] != ';') {
            i++;
        }
        size_t ne = i;
        while (ne > ns && mp_blank(v[ne - 1])) {
            ne--;
        }
        if (i >= n || v[i] == ';') {
            continue; /* a parameter without a value: skip it */
        }
        i++; /* '=' */
        while (i < n && mp_blank(v[i])) {
            i++;
        }
        int want = ne - ns == klen && strncasecmp(v + ns, key, klen) == 0;
        size_t olen = 0;
        if (i < n && v[i] == '"') {
            i++;
            while (i < n && v[i] != '"') {
                if (v[i] == '\\' && i + 1 < n) {
                    i++;
                }
                if (want) {
                    if (olen + 1 >= cap) {
                        return -2;
                    }
                    out[olen++] = v[i];
                }
                i++;
            }
            if (i >= n) {
                return -2; /* an unterminated quoted string */
            }
            i++;
        } else {
            size_t vs = i;
            while (i < n && v[i] != ';') {
                i++;
            }
            size_t ve = i;
            while (ve > vs && mp_blank(v[ve - 1])) {
                ve--;
            }
            if (want) {
                if (ve - vs >= cap) {
                    return -2;
                }
                memcpy(out, v + vs, ve - vs);
                olen = ve - vs;
            }
        }
        if (want) {
            out[olen] = '\0';
            return (long)olen;
        }
    }
    return -1;
}

int multipart_boundary(const char *content_type, char *out, size_t cap)
{
    if (content_type == NULL || cap == 0) {
        return -1;
    }
    char b[MULTIPART_MAX_BOUNDARY + 2];
    long n = mp_param(content_type, strlen(content_type), "boundary", b, sizeof b);
    if (n < 1 || n > MULTIPART_MAX_BOUNDARY || (size_t)n >= cap || b[n - 1] == ' ') {
        return -1;
    }
    for (long i = 0; i < n; i++) {
        if ((unsigned char)b[i] < 0x20 || (unsigned char)b[i] > 0x7e) {
            return -1;
        }
    }
    memcpy(out, b, (size_t)n + 1);
    return (int)n;
}

struct multipart *multipart_create(const char *content_type, multipart_fn fn, void *ud)
{
    struct multipart *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->fn = fn;
    m->ud = ud;
    char b[MULTIPART_MAX_BOUNDARY + 1];
    int blen = multipart_boundary(content_type, b, sizeof b);
    if (blen < 0) {
        mp_fail(m, -1, "multipart/form-data needs a boundary parameter of 1 to 70 characters");
        return m;
    }
    memcpy(m->delim, "\r\n--", 4);
    memcpy(m->delim + 4, b, (size_t)blen);
    m->dlen = 4 + (size_t)blen;
    m->fail[0] = 0;
    for (size_t i = 1, k = 0; i < m->dlen; i++) {
        while (k > 0 && m->delim[i] != m->delim[k]) {
            k = m->fail[k - 1];
        }
        if (m->delim[i] == m->delim[k]) {
            k++;
        }
        m->fail[i] = k;
    }
    /* The body's first delimiter has no CRLF before it: start as if one had been read. */
    m->state = MP_PREAMBLE;
    m->match = 2;
    return m;
}

void multipart_destroy(struct multipart *m)
{
    free(m);
}

const char *multipart_error(const struct multipart *m)
{
    return m->state == MP_ERROR ? m->message : "";
}

/* Emits N data bytes of the current part (none outside a part). */
static int mp_data(struct multipart *m, const char *p, size_t n)
{
    if (n == 0 || m->state != MP_DATA) {
        return 0;
    }
    int rc = m->fn(m->ud, MULTIPART_PART_DATA, &m->part, p, n);
    return rc != 0 ? mp_fail(m, rc, "stopped by the receiver") : 0;
}

/* Copies header value V (N bytes) into the part's value store at *AT. */
static const char *mp_keep(struct multipart *m, size_t *at, const char *v, size_t n)
{
    char *dst = m->vals + *at;
    memcpy(dst, v, n);
    dst[n] = '\0';
    *at += n + 1;
    return dst;
}

/* The header block (m->head, ending with an empty line) is complete: read the part's name,
 * filename and Content-Type, and announce the part. */
static int mp_begin_part(struct multipart *m)
{
    memset(&m->part, 0, sizeof m->part);
    size_t at = 0, i = 0, end = m->hlen - 2; /* without the empty line's CRLF */
    int have_disposition = 0;
    while (i < end) {
        const char *line = m->head + i;
        const char *crlf = memchr(line, '\r', end - i);
        size_t llen = crlf != NULL ? (size_t)(crlf - line) : end - i;
        i += llen + 2;
        if (llen == 0 || mp_blank(line[0])) {
            return mp_fail(m, -1, "a part's headers are folded or malformed");
        }
        const char *colon = memchr(line, ':', llen);
        if (colon == NULL) {
            return mp_fail(m, -1, "a part's header line has no colon");
        }
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vlen = llen - nlen - 1;
        while (vlen > 0 && mp_blank(v[0])) {
            v++;
            vlen--;
        }
        while (vlen > 0 && mp_blank(v[vlen - 1])) {
            vlen--;
        }
        if (nlen == 19 && strncasecmp(line, "Content-Disposition", 19) == 0) {
            if (have_disposition) {
                return mp_fail(m, -1, "a part has two Content-Disposition headers");
            }
            have_disposition = 1;
            if (vlen < 9 || strncasecmp(v, "form-data", 9) != 0 ||
                (vlen > 9 && v[9] != ';' && !mp_blank(v[9]))) {
                return mp_fail(m, -1, "a part's Content-Disposition is not form-data");
            }
            /* Decoded values are never longer than the header block, so vals has room for
             * all three. */
            long n = mp_param(v, vlen, "name", m->vals + at, sizeof m->vals - at);
            if (n == -2) {
                return mp_fail(m, -1, "a part's name parameter is malformed");
            }
            if (n >= 0) {
                m->part.name = m->vals + at;
                at += (size_t)n + 1;
            }
            n = mp_param(v, vlen, "filename", m->vals + at, sizeof m->vals - at);
            if (n == -2) {
                return mp_fail(m, -1, "a part's filename parameter is malformed");
            }
            if (n >= 0) {
                m->part.filename = m->vals + at;
                at += (size_t)n + 1;
            }
        } else if (nlen == 12 && strncasecmp(line, "Content-Type", 12) == 0) {
            if (vlen + 1 > sizeof m->vals - at) {
                return mp_fail(m, -1, "a part's headers are too large");
            }
            m->part.content_type = mp_keep(m, &at, v, vlen);
        }
    }
    if (!have_disposition) {
        return mp_fail(m, -1, "a part has no Content-Disposition header");
    }
    int rc = m->fn(m->ud, MULTIPART_PART_BEGIN, &m->part, NULL, 0);
    return rc != 0 ? mp_fail(m, rc, "stopped by the receiver") : 0;
}

/* A whole delimiter was read. */
static int mp_delimiter(struct multipart *m)
{
    m->match = 0;
    if (m->state == MP_DATA) {
        int rc = m->fn(m->ud, MULTIPART_PART_END, &m->part, NULL, 0);
        if (rc != 0) {
            return mp_fail(m, rc, "stopped by the receiver");
        }
    }
    m->state = MP_AFTER;
    return 0;
}

/* Scans P[0..N) for the delimiter in MP_PREAMBLE or MP_DATA; emits data as it goes, in one
 * run per piece (a write per '\r' would cost a syscall per 256 bytes of binary data).
 * Returns the bytes consumed (up to and including a delimiter), or -1 after an error. */
static long mp_scan(struct multipart *m, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (m->match == 0) {
            /* Fast path: plain data up to the next CR. */
            const char *cr = memchr(p + i, '\r', n - i);
            if (cr == NULL) {
                i = n;
                break;
            }
            i = (size_t)(cr - p);
        }
        char c = p[i];
        while (m->match > 0 && c != m->delim[m->match]) {
            /* The held bytes delim[0..match) are not a delimiter: all but their longest
             * prefix-suffix are data. Those that came in earlier pieces are emitted now
             * (nothing of this piece has been yet); those of this piece join its run. */
            size_t k = m->fail[m->match - 1];
            size_t drop = m->match - k;
            if (m->match > i) {
                size_t carried = m->match - i;
                if (mp_data(m, m->delim, drop < carried ? drop : carried) != 0) {
                    return -1;
                }
            }
            m->match = k;
        }
        if (c == m->delim[m->match]) {
            m->match++;
        }
        i++;
        if (m->match == m->dlen) {
            size_t dend = i >= m->dlen ? i - m->dlen : 0;
            if (mp_data(m, p, dend) != 0) {
                return -1;
            }
            return mp_delimiter(m) != 0 ? -1 : (long)i;
        }
    }
    /* What may still be a delimiter is held back. */
    size_t dend = i >= m->match ? i - m->match : 0;
    if (mp_data(m, p, dend) != 0) {
        return -1;
    }
    return (long)i;
}

/* One byte of the line after a delimiter or of a header block. */
static int mp_byte(struct multipart *m, char c)
{
    switch (m->state) {
    case MP_AFTER:
        if (c == '-') {
            m->state = MP_AFTER_DASH;
        } else if (mp_blank(c)) {
            m->state = MP_AFTER_BLANK;
        } else if (c == '\r') {
            m->state = MP_AFTER_CR;
        } else {
            return mp_fail(m, -1, "a boundary line is followed by something else than CRLF");
        }
        return 0;
    case MP_AFTER_DASH:
        if (c != '-') {
            return mp_fail(m, -1, "a boundary line is followed by something else than CRLF");
        }
        m->state = MP_EPILOGUE;
        return 0;
    case MP_AFTER_BLANK:
        if (c == '\r') {
            m->state = MP_AFTER_CR;
        } else if (!mp_blank(c)) {
            return mp_fail(m, -1, "a boundary line is followed by something else than CRLF");
        }
        return 0;
    case MP_AFTER_CR:
        if (c != '\n') {
            return mp_fail(m, -1, "a boundary line is followed by something else than CRLF");
        }
        m->state = MP_HEADERS;
        m->hlen = 0;
        return 0;
    case MP_HEADERS:
        if (m->hlen == sizeof m->head) {
            return mp_fail(m, -1, "a part's headers are larger than 8 KiB");
        }
        m->head[m->hlen++] = c;
        if ((m->hlen == 2 && memcmp(m->head, "\r\n", 2) == 0) ||
            (m->hlen >= 4 && memcmp(m->head + m->hlen - 4, "\r\n\r\n", 4) == 0)) {
            if (mp_begin_part(m) != 0) {
                return m->err;
            }
            m->state = MP_DATA;
            m->match = 0;
        }
        return 0;
    default:
        return 0;
    }
}

int multipart_feed(struct multipart *m, const char *data, size_t n)
{
    size_t i = 0;
    while (i < n && m->state != MP_ERROR) {
        if (m->state == MP_PREAMBLE || m->state == MP_DATA) {
            long used = mp_scan(m, data + i, n - i);
            if (used < 0) {
                break;
            }
            i += (size_t)used;
        } else if (m->state == MP_EPILOGUE) {
            i = n;
        } else {
            mp_byte(m, data[i]);
            i++;
        }
    }
    return m->state == MP_ERROR ? m->err : 0;
}

int multipart_finish(struct multipart *m)
{
    if (m->state == MP_ERROR) {
        return m->err;
    }
    if (m->state != MP_EPILOGUE) {
        return mp_fail(m, -1, "the multipart body ends before its closing boundary");
    }
    return 0;
}
