/* A request body on its way in: a JSON batch buffered whole (capped), or a multipart form
 * whose "batch" part is buffered and whose "file" parts are written straight into one
 * shared-memory file (memfd) as they arrive, never held twice. The same memfd takes image
 * bytes decoded from base64 JSON inputs; workers map it read-only. */
#ifndef BATCHD_SERVER_UPLOAD_H
#define BATCHD_SERVER_UPLOAD_H

#include "../api/buf.h"

#include <stddef.h>
#include <stdint.h>

struct upload;

struct upload_file {
    uint64_t off, len; /* in the memfd */
    char *name;        /* the part's filename, or NULL */
};

/* Starts an upload. MULTIPART: parse a multipart/form-data body whose Content-Type (with its
 * boundary) is CONTENT_TYPE (borrowed, used only here). MAX_BYTES caps the whole body (and so
 * the memfd). Returns new (free with upload_destroy) or NULL when out of memory. */
struct upload *upload_create(const char *content_type, int multipart, uint64_t max_bytes);

/* Frees the upload, its buffers and its memfd. NULL is a no-op. */
void upload_destroy(struct upload *u);

/* Takes one piece of the body. Returns 0, -BATCHD_E_BODY_TOO_LARGE past the cap (the rest is
 * then discarded), or -BATCHD_E_BAD_REQUEST for a malformed form (with upload_error()). */
int upload_feed(struct upload *u, const char *data, size_t n);

/* The body is complete: returns 0, or the first error (a multipart body must end with its
 * closing boundary). */
int upload_finish(struct upload *u);

/* The first error upload_feed met (0 if none) and its message (borrowed). */
int upload_error(const struct upload *u, const char **message);

/* The batch JSON: the whole body, or the multipart "batch" part. Borrowed. */
const struct buf *upload_json(const struct upload *u);

/* 1 for a multipart upload. */
int upload_is_multipart(const struct upload *u);

/* The uploaded files, in order. Borrowed, valid until upload_destroy. */
size_t upload_nfiles(const struct upload *u);
const struct upload_file *upload_file_at(const struct upload *u, size_t i);

/* Adds the bytes that base64 text S (LEN chars) decodes to, to the memfd. Returns 0 with
 * *OFF and *OUTLEN set, -1 when the text is not base64, -2 past the cap or on I/O errors. */
int upload_add_base64(struct upload *u, const char *s, size_t len, uint64_t *off,
                      uint64_t *outlen);

/* An upload rebuilt from the store (a stored batch carried on after a restart): MULTIPART
 * as the original was, its parts added whole with the two calls below, nothing to parse.
 * Returns new (free with upload_destroy) or NULL. */
struct upload *upload_restored(int multipart, uint64_t max_bytes);
/* Sets the batch JSON of a restored upload. Returns 0 or -1 (out of memory, past the cap). */
int upload_restore_json(struct upload *u, const void *data, size_t len);
/* Adds a file (NAME may be NULL) to a restored upload. Returns 0 or -1. */
int upload_restore_file(struct upload *u, const char *name, const void *data, size_t len);

/* The memfd holding the files (borrowed), or -1 when nothing was stored. */
int upload_fd(const struct upload *u);

/* Bytes received. */
uint64_t upload_bytes(const struct upload *u);

#endif
