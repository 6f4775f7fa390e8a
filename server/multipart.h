/* A streaming multipart/form-data parser (RFC 7578 over RFC 2046): bytes in, in pieces of
 * any size (down to one byte), events out: a part begins (with its headers), a run of its
 * data, the part ends. It holds at most one part's headers (capped) and never a part's data.
 * It knows nothing of what the parts mean: server/upload.c does. */
#ifndef BATCHD_SERVER_MULTIPART_H
#define BATCHD_SERVER_MULTIPART_H

#include <stddef.h>

/* The largest header block of one part, and the longest boundary (RFC 2046: 70). */
#define MULTIPART_MAX_HEADERS 8192
#define MULTIPART_MAX_BOUNDARY 70

enum multipart_event { MULTIPART_PART_BEGIN, MULTIPART_PART_DATA, MULTIPART_PART_END };

/* The part being read. Strings are borrowed, valid until its MULTIPART_PART_END; NULL when
 * the header or parameter is absent. */
struct multipart_part {
    const char *name;         /* Content-Disposition's name */
    const char *filename;     /* Content-Disposition's filename */
    const char *content_type; /* the part's Content-Type */
};

/* Called for each event; DATA and N are set for MULTIPART_PART_DATA only (N > 0). Returns 0
 * to go on, or a negative code that stops the parser and is returned by multipart_feed. */
typedef int (*multipart_fn)(void *ud, enum multipart_event ev, const struct multipart_part *part,
                            const char *data, size_t n);

struct multipart;

/* Reads the boundary parameter of CONTENT_TYPE (quoted or not, other parameters allowed before
 * and after it) into OUT (CAP bytes, NUL-terminated). Returns its length, or -1 when there is
 * none or it is not a valid boundary (1 to 70 printable characters). */
int multipart_boundary(const char *content_type, char *out, size_t cap);

/* A parser for the body whose Content-Type is CONTENT_TYPE. Returns new (free with
 * multipart_destroy) or NULL when out of memory. A bad Content-Type gives a parser whose
 * first multipart_feed fails with the reason. */
struct multipart *multipart_create(const char *content_type, multipart_fn fn, void *ud);

/* Frees the parser. NULL is a no-op. */
void multipart_destroy(struct multipart *m);

/* Parses the next N bytes. Returns 0, -1 for a malformed body (see multipart_error), or the
 * negative code a callback returned. After an error every call returns the same code. */
int multipart_feed(struct multipart *m, const char *data, size_t n);

/* The body is over: returns 0 when it ended with its closing boundary, else as
 * multipart_feed. */
int multipart_finish(struct multipart *m);

/* Why the parser stopped (borrowed), "" if it did not. */
const char *multipart_error(const struct multipart *m);

#endif
