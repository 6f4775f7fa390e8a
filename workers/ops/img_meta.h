/* The metadata blocks of struct img_meta (img_codec.h): owning copies, and the one EXIF
 * field batchd reads and writes, the orientation (tag 0x0112 of IFD0). Every offset into
 * EXIF is checked against its length: the bytes come from the user. */
#ifndef BATCHD_WORKERS_OPS_IMG_META_H
#define BATCHD_WORKERS_OPS_IMG_META_H

#include "img_codec.h"

#include <stddef.h>
#include <stdint.h>

/* Frees the blocks of M and zeroes it; NULL is a no-op. */
void img_meta_cleanup(struct img_meta *m);

/* Replaces *DST (freed) by a copy of the N bytes at P, followed by a NUL that *DST_LEN does
 * not count. Returns 0 or -1 (out of memory: *DST is then NULL). */
int img_meta_set(uint8_t **dst, size_t *dst_len, const void *p, size_t n);

/* A deep copy of SRC into DST (zeroed first). Returns 0 or -1 (OOM: DST is left empty). */
int img_meta_copy(struct img_meta *dst, const struct img_meta *src);

/* The EXIF orientation 1..8 in the TIFF structure P/N, or 1 when absent or unreadable. */
int img_exif_orientation(const uint8_t *p, size_t n);

/* Sets the orientation tag in P/N to 1 ("as stored") when there is one; nothing else. */
void img_exif_reset_orientation(uint8_t *p, size_t n);

#endif
