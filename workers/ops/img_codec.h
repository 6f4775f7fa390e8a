/* What the image codecs share: the header a decoder reports before any pixel is decoded, the
 * options a caller gives it (limits, and a hook that picks a reduced decode size from the
 * header), and the metadata a decoder reads and an encoder writes (ICC profile, EXIF, XMP).
 * The codecs are img_jpeg.c, img_png.c and img_webp.c; the metadata's helpers img_meta.c. */
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

/* Metadata of an image, each block malloc'd and owned by the struct (NULL/0 when absent).
 * ICC: the profile of the decoded pixels (a CMYK JPEG's profile is used by its decoder and
 * not reported: its pixels come out RGB). EXIF: the TIFF structure ("II*\0" or "MM\0*"),
 * without JPEG's "Exif\0\0" prefix. XMP: the packet. */
struct img_meta {
    uint8_t *icc;
    size_t icc_len;
    uint8_t *exif;
    size_t exif_len;
    uint8_t *xmp;
    size_t xmp_len;
};

/* What a decoder reads into opts->meta besides the pixels. */
enum img_want {
    IMG_WANT_ICC = 1 << 0,  /* the ICC profile */
    IMG_WANT_META = 1 << 1, /* EXIF and XMP */
};

/* ICC profiles larger than this are ignored (treated as sRGB): real ones are a few KB to a
 * few hundred KB; the bound keeps a hostile one cheap to parse. */
#define IMG_ICC_MAX_BYTES (4u * 1024 * 1024)
/* EXIF or XMP blocks larger than this are not kept (a JPEG APP1 marker holds at most 64 KB;
 * PNG and WebP chunks are bounded by the decoders' chunk limits). */
#define IMG_META_MAX_BYTES (1u * 1024 * 1024)

/* The longest side of a WebP image (libwebp's limit). */
#define IMG_WEBP_MAX_SIDE 16383

struct img_decode_opts {
    uint64_t max_pixels;     /* width * height above this: -BATCHD_E_TOO_LARGE before decoding */
    size_t max_memory;       /* decoder working memory (progressive JPEG coefficients, ...) */
    int max_scans;           /* progressive JPEG scans above this: corrupt (scan bombs) */
    img_scale_fn pick_scale; /* may be NULL: full size */
    void *ctx;
    struct img_meta *meta; /* may be NULL: no metadata read; else filled as WANT says */
    unsigned want;         /* enum img_want */
};

#endif
