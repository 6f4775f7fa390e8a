/* Base64 (RFC 4648, standard alphabet) for image bytes carried in JSON: inputs
 * {"data": ...} and inline results. */
#ifndef BATCHD_API_BASE64_H
#define BATCHD_API_BASE64_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>

/* Appends the base64 text of LEN bytes at P to OUT (no quotes, no line breaks). Returns 0,
 * or -1 past OUT's cap. */
int base64_encode(struct buf *out, const uint8_t *p, size_t len);

/* Decodes base64 text S (LEN chars; padding optional, ASCII whitespace ignored, a leading
 * "data:...;base64," prefix skipped) calling EMIT with decoded pieces of up to 3 KiB.
 * Returns 0, -1 on a bad character or length, or the first nonzero EMIT return. */
int base64_decode_each(const char *s, size_t len,
                       int (*emit)(void *ud, const uint8_t *p, size_t n), void *ud);

/* Decodes into OUT. Returns 0, -1 on a bad character or length, -2 past OUT's cap. */
int base64_decode(struct buf *out, const char *s, size_t len);

#endif
