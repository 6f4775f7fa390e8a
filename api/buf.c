/* struct buf: growable bytes with a hard cap. */
#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void buf_cleanup(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->cap > BUF_KEEP_MAX) {
        /* Big enough to be a mapping of its own (the server sets M_MMAP_THRESHOLD): the
         * free gives it back to the system. */
        buf_cleanup(b);
    }
}

static int buf_grow(struct buf *b, size_t need)
{
    if (need > b->max || need < b->len) {
        errno = EMSGSIZE; /* the cap, not memory: callers tell the two apart */
        return -1;
    }
    if (need + 1 <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need + 1) {
        cap = cap * 2;
    }
    if (cap > b->max + 1) {
        cap = b->max + 1;
    }
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        errno = ENOMEM;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

char *buf_reserve(struct buf *b, size_t n)
{
    if (n > b->max - b->len) {
        errno = EMSGSIZE;
        return NULL;
    }
    if (buf_grow(b, b->len + n) != 0) {
        return NULL;
    }
    return b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
    b->len += n;
    b->data[b->len] = '\0';
}

int buf_add(struct buf *b, const void *p, size_t len)
{
    if (len == 0) {
        return 0; /* P may be NULL then */
    }
    if (len < b->cap - b->len && len <= b->max - b->len) {
        /* Room already there (the usual case): no calls but the copy. */
        memcpy(b->data + b->len, p, len);
        b->len += len;
        b->data[b->len] = '\0';
        return 0;
    }
    char *dst = buf_reserve(b, len);
    if (dst == NULL) {
        return -1;
    }
    memcpy(dst, p, len);
    buf_commit(b, len);
    return 0;
}

int buf_adds(struct buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -1;
    }
    if ((size_t)n < sizeof small) {
        return buf_add(b, small, (size_t)n);
    }
    char *dst = buf_reserve(b, (size_t)n + 1);
    if (dst == NULL) {
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_commit(b, (size_t)n);
    return 0;
}

void buf_truncate(struct buf *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *buf_take(struct buf *b, size_t *len)
{
    char *p = b->data;
    *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
