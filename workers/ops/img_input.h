/* The image op's input side: the bytes of a job's input (handed over, base64, or a file
 * under the data dir opened so that nothing can escape it) and the sniffing of their format.
 * Decodes nothing and writes nothing: img_op.c decodes, img_output.c writes. */
#ifndef BATCHD_WORKERS_OPS_IMG_INPUT_H
#define BATCHD_WORKERS_OPS_IMG_INPUT_H

#include "img_params.h"
#include "ops.h"

#include <stddef.h>
#include <stdint.h>

/* The largest input file read, and the cap of the buffer it is read or decoded into. */
#define IMG_MAX_FILE_BYTES (1024ull * 1024 * 1024)

/* Sets *F from the magic bytes of P (N bytes). Returns 0, or -BATCHD_E_UNSUPPORTED_FORMAT or
 * -BATCHD_E_CORRUPT_IMAGE (a damaged PNG signature) with MSG set. */
int img_input_sniff(const uint8_t *p, size_t n, enum img_format *f, char *msg, size_t msglen);

/* The input's bytes in *P, *N: borrowed from IN->blob, or read/decoded into DATA (the
 * caller's, initialised with a cap; borrowed until DATA is cleaned up). *REL_PATH: a
 * {"path"} input's relative path (borrowed from IN), else NULL. Returns 0 or a negative
 * code with MSG set. */
int img_input_load(const struct job_input *in, struct buf *data, const uint8_t **p, size_t *n,
                   const char **rel_path, char *msg, size_t msglen);

/* 1 when the canonical path P is DIR (canonical too) or lies beneath it. */
int img_input_path_within(const char *p, const char *dir);

#endif
