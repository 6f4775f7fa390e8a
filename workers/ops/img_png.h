/* PNG in and out through libpng: limits set before the header is read, every colour type,
 * bit depth and interlacing decoded to 8-bit G, GA, RGB or RGBA, errors caught; the ICC
 * profile (iCCP), EXIF (eXIf) and XMP (iTXt) read and written. An sRGB chunk, gAMA and cHRM
 * are not read: without iCCP the pixels are taken as sRGB, as Pillow and libvips take them. */
#ifndef BATCHD_WORKERS_OPS_IMG_PNG_H
#define BATCHD_WORKERS_OPS_IMG_PNG_H

#include "../../api/buf.h"
#include "img_codec.h"
#include "img_image.h"

/* Decodes the PNG in DATA/LEN to 8 bits per channel: gray stays gray (1 channel), palette
 * becomes RGB, a tRNS chunk becomes an alpha channel, 16-bit samples keep their high byte
 * (as Pillow and libvips do). Returns 0 with a new image in *OUT (free with img_destroy)
 * and the header in *HDR, or -BATCHD_E_TOO_LARGE / -BATCHD_E_CORRUPT_IMAGE with MSG set. */
int img_png_decode(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                   struct img_header *hdr, struct img **out, char *msg, size_t msglen);

/* img_png_decode with libpng alone, without the fast path of img_png_idat.c (which must
 * give the same result): for tests and the fuzz target. */
int img_png_decode_libpng(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                          struct img_header *hdr, struct img **out, char *msg, size_t msglen);

/* Appends IM (not premultiplied) to OUT as a PNG at zlib LEVEL 0..9, with META's blocks (may
 * be NULL: none) as iCCP, eXIf and an iTXt "XML:com.adobe.xmp". Levels 0-3 use the SUB
 * filter only (fast: level 3 + SUB is ~3x faster than libpng's default and ~10% larger),
 * 4-9 let libpng pick a filter per row. Returns 0, or -BATCHD_E_TOO_LARGE past OUT's cap
 * or -BATCHD_E_INTERNAL with MSG set; OUT may then hold a partial encoding. */
int img_png_encode(const struct img *im, int level, const struct img_meta *meta, struct buf *out,
                   char *msg, size_t msglen);

#endif
