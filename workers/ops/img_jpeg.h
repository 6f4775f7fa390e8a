/* JPEG in and out through the libjpeg API of libjpeg-turbo: limits checked from the header,
 * EXIF orientation read (not applied: the pipeline applies it), CMYK/YCCK turned into RGB
 * (through the embedded CMYK profile when there is one), ICC/EXIF/XMP read and written,
 * DCT-domain shrink on load. Errors never leave the decoder by exit() or a stray longjmp. */
#ifndef BATCHD_WORKERS_OPS_IMG_JPEG_H
#define BATCHD_WORKERS_OPS_IMG_JPEG_H

#include "../../api/buf.h"
#include "img_codec.h"
#include "img_image.h"

/* Decodes the JPEG in DATA/LEN. On success returns 0, stores a new image in *OUT (free with
 * img_destroy; 1 channel for grayscale files, else 3) and the header in *HDR. On failure
 * returns -BATCHD_E_TOO_LARGE, -BATCHD_E_CORRUPT_IMAGE or -BATCHD_E_UNSUPPORTED_FORMAT with
 * MSG set, and *OUT is NULL. */
int img_jpeg_decode(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                    struct img_header *hdr, struct img **out, char *msg, size_t msglen);

/* Appends IM (1 or 3 channels, no alpha) as a baseline or progressive JPEG of QUALITY
 * (1..100), 4:2:0 chroma, to OUT, with META's blocks (may be NULL: none) in APP1 (EXIF, XMP;
 * one that does not fit in a marker is left out) and APP2 (the ICC profile, split as
 * needed). Returns 0, or -BATCHD_E_TOO_LARGE when OUT's cap is reached, or
 * -BATCHD_E_INTERNAL, with MSG set; OUT may then hold a partial encoding. */
int img_jpeg_encode(const struct img *im, int quality, int progressive, const struct img_meta *meta,
                    struct buf *out, char *msg, size_t msglen);

#endif
