/* What the image decoders share: the header they report before any pixel is decoded, and
 * the options a caller gives them (limits, and a hook that picks a reduced decode size from
 * the header). Only types: the decoders are img_jpeg.c and img_png.c. */
#ifndef BATCHD_WORKERS_OPS_IMG_CODEC_H
#define BATCHD_WORKERS_OPS_IMG_CODEC_H

#include <stddef.h>
#include <stdint.h>

struct img_header {
    int width, height; /* as stored, before EXIF orientation */
    int channels;      /* of the decoded image: 1..4 */
    int orientation;   /* EXIF orientation 1..8 (1 when absent) */
};

/* Called once the header is known and within limits, before any pixel is decoded: returns
 * the JPEG DCT scale denominator to decode at (1, 2, 4 or 8; other decoders ignore it), or a
 * negative per-job error code with MSG set, which the decoder returns at once (the caller's
 * plan refuses the image, e.g. an output JPEG cannot hold). */
typedef int (*img_scale_fn)(void *ctx, const struct img_header *h, char *msg, size_t msglen);

struct img_decode_opts {
    uint64_t max_pixels;     /* width * height above this: -BATCHD_E_TOO_LARGE before decoding */
    size_t max_memory;       /* decoder working memory (progressive JPEG coefficients, ...) */
    int max_scans;           /* progressive JPEG scans above this: corrupt (scan bombs) */
    img_scale_fn pick_scale; /* may be NULL: full size */
    void *ctx;
};

#endif
