/* Base64 (RFC 4648, standard alphabet) for image bytes in JSON: inputs {"data": ...} and
 * inline results. */
#ifndef BATCHD_WORKERS_OPS_IMG_B64_H
#define BATCHD_WORKERS_OPS_IMG_B64_H

#include "../../api/buf.h"

#include <stddef.h>
#include <stdint.h>

/* Appends the base64 text of LEN bytes at P to OUT (no quotes, no line breaks). Returns 0,
 * or -1 past OUT's cap. */
int img_b64_encode(struct buf *out, const uint8_t *p, size_t len);

/* Decodes base64 text S (LEN chars; padding optional, ASCII whitespace ignored, a leading
 * "data:...;base64," prefix skipped) into OUT. Returns 0, or -1 on a bad character or
 * length, or -2 past OUT's cap. */
int img_b64_decode(struct buf *out, const char *s, size_t len);

#endif
