/* An ended image batch's tar, from its stored result lines (results_tar.c). Private to
 * server/. */
#ifndef BATCHD_SERVER_RESULTS_TAR_H
#define BATCHD_SERVER_RESULTS_TAR_H

#include "../api/buf.h"

#include <stddef.h>
#include <stdint.h>

struct writer;

/* Writes job INDEX's stored LINE ({"index":..,"result":..} or {"index":..,"error":..}) to
 * OUT through tar writer W: its images as members, an error into errors.ndjson. Returns 0 or
 * -1 (out of memory). */
int results_tar_line(struct writer *w, struct buf *out, uint32_t index, const char *line,
                     size_t len);

#endif
