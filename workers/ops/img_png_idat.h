/* The fast path of the PNG decoder for the plain case of large images: the IDAT chunks
 * inflated in one call by libdeflate and unfiltered by our own (SSE2) loops, straight into
 * the image. It decides nothing about broken files: anything not plainly valid is handed
 * back to libpng (img_png.c), whose verdict stays the only one. */
#ifndef BATCHD_WORKERS_OPS_IMG_PNG_IDAT_H
#define BATCHD_WORKERS_OPS_IMG_PNG_IDAT_H

#include "img_image.h"

#include <stddef.h>
#include <stdint.h>

/* Decodes the pixels of the PNG in DATA/LEN into IM, whose size and channels are the PNG's
 * (libpng read and checked the header: the caller guarantees bit DEPTH 8 or 16, no
 * interlacing, colour type gray, gray+alpha, RGB or RGBA, no tRNS); 16-bit samples keep
 * their high byte. IM->px may be reallocated (to hold the inflated rows, which are one byte
 * a row longer, and twice as long for 16 bits), and an IDAT run of several chunks is copied
 * into one buffer first: when that takes more than MAX_COPY bytes beyond the image (the
 * decoder's working memory), the file is left to libpng (1), which streams row by row.
 * Returns 0 when the pixels are decoded; 1 when the file is not plainly valid (a chunk out
 * of order or cut, a CRC or Adler-32 mismatch, a zlib stream that does not give exactly the
 * rows, a bad filter byte): IM's pixels are then garbage and the caller must decode with
 * libpng, which decides; -BATCHD_E_TOO_LARGE when memory ran out, with MSG set.
 * One leniency is libdeflate's: a few invalid DEFLATE codes that zlib stops at (the fixed
 * code's never-used symbols, some incomplete codes) are remapped, and when the rows and the
 * Adler-32 still come out right the image decodes where libpng calls it corrupt: it is the
 * checksummed data, never garbage. */
int img_png_idat_decode(const uint8_t *data, size_t len, int depth, size_t max_copy, struct img *im,
                        char *msg, size_t msglen);

#endif
