/* WebP in and out through libwebp: the size checked from the header (WebPGetFeatures) before
 * anything is decoded, animations refused, the ICC profile, EXIF and XMP chunks read (demux)
 * and written (mux); lossy (quality) or lossless, with alpha. */
#ifndef BATCHD_WORKERS_OPS_IMG_WEBP_H
#define BATCHD_WORKERS_OPS_IMG_WEBP_H

#include "../../api/buf.h"
#include "img_codec.h"
#include "img_image.h"

/* Decodes the WebP in DATA/LEN to RGB, or RGBA when it has alpha. Returns 0 with a new image
 * in *OUT (free with img_destroy) and the header in *HDR, or -BATCHD_E_TOO_LARGE,
 * -BATCHD_E_CORRUPT_IMAGE or -BATCHD_E_UNSUPPORTED_FORMAT (an animation) with MSG set. */
int img_webp_decode(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                    struct img_header *hdr, struct img **out, char *msg, size_t msglen);

/* Appends IM (not premultiplied; gray is widened to RGB) to OUT as a WebP: lossy at QUALITY
 * 1..100 (method 4), or LOSSLESS; with META's blocks (may be NULL: none) as ICCP, EXIF and
 * XMP chunks. Returns 0, or -BATCHD_E_TOO_LARGE (past OUT's cap, or a side over
 * IMG_WEBP_MAX_SIDE) or -BATCHD_E_INTERNAL with MSG set. */
int img_webp_encode(const struct img *im, int quality, int lossless, const struct img_meta *meta,
                    struct buf *out, char *msg, size_t msglen);

#endif
