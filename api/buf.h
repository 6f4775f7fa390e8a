/* A growable byte buffer with a hard cap set at init (curl's dynbuf idea). Callers embed
 * struct buf; its fields are private: use the functions. Not thread-safe. */
#ifndef BATCHD_API_BUF_H
#define BATCHD_API_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data; /* private */
    size_t len; /* private */
    size_t cap; /* private: allocated bytes */
    size_t max; /* private: hard cap on len */
};

/* Initialises an empty buffer that refuses to grow past MAX bytes. Allocates nothing. */
void buf_init(struct buf *b, size_t max);

/* Frees the buffer's memory; the buffer is then empty and may be reused. */
void buf_cleanup(struct buf *b);

/* Memory an emptied buffer keeps for reuse; past it, emptying frees the memory. A buffer
 * that once held one huge result (a 60 MB image) would otherwise hold that much for as long
 * as it lives (a worker's frame buffer, the dispatcher's slot buffers: for ever). */
#define BUF_KEEP_MAX (4u * 1024 * 1024)

/* Empties the buffer, keeping its memory up to BUF_KEEP_MAX bytes (more is freed). */
void buf_reset(struct buf *b);

/* Appends LEN bytes. Returns 0, or -1 if the cap would be passed (errno EMSGSIZE) or memory
 * ran out (errno ENOMEM); the buffer is then unchanged. Every call that grows the buffer
 * fails the same way. */
int buf_add(struct buf *b, const void *p, size_t len);

/* Appends a NUL-terminated string (without the NUL). Returns as buf_add. */
int buf_adds(struct buf *b, const char *s);

/* Appends formatted text. Returns as buf_add. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes room for N more bytes and returns a pointer to them (borrowed, valid until the next
 * call that changes the buffer), or NULL past the cap or out of memory (errno as buf_add);
 * commit with buf_commit. */
char *buf_reserve(struct buf *b, size_t n);

/* Adds N bytes written into the space buf_reserve returned. */
void buf_commit(struct buf *b, size_t n);

/* Shortens the buffer to LEN bytes (LEN <= length). */
void buf_truncate(struct buf *b, size_t len);

/* Drops the first N bytes (N <= length); all of them empties it as buf_reset does. */
void buf_consume(struct buf *b, size_t n);

/* Borrowed pointer to the bytes (may be NULL when empty) and their count. */
static inline const char *buf_data(const struct buf *b)
{
    return b->data;
}
static inline size_t buf_len(const struct buf *b)
{
    return b->len;
}

/* Takes the buffer's memory: returns it (new, free with free(); may be NULL when empty),
 * stores its length in *LEN and leaves the buffer empty. */
char *buf_take(struct buf *b, size_t *len);

#endif
