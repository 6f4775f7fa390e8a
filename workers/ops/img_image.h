/* The image buffer of the image ops: 8-bit interleaved pixels with 1 to 4 channels (G, GA,
 * RGB, RGBA), and the pixel-wise and geometric steps that need no filtering: alpha
 * (un)premultiplication, flattening over white, grayscale, crop, rotate, flip.
 * Decoders, filters and encoders live in their own img_*.c files. */
#ifndef BATCHD_WORKERS_OPS_IMG_IMAGE_H
#define BATCHD_WORKERS_OPS_IMG_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Callers read the fields; only img_* functions change them. */
struct img {
    int width;
    int height;
    int channels;      /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    int premultiplied; /* colour channels are multiplied by alpha (filters need it) */
    size_t stride;     /* bytes per row: width * channels */
    uint8_t *px;       /* height * stride bytes */
};

/* The largest side any image may have: keeps every size computation inside int. */
#define IMG_MAX_SIDE 1000000

/* A new W x H image with CH channels, its pixels not initialised; NULL when a size is out of
 * range or memory ran out. Free with img_destroy. */
struct img *img_create(int w, int h, int ch);

/* Frees IMG; NULL is a no-op. */
void img_destroy(struct img *im);

/* 1 if the image has an alpha channel. */
static inline int img_has_alpha(const struct img *im)
{
    return im->channels == 2 || im->channels == 4;
}

/* Multiplies colour by alpha in place (Pillow's RGBA -> RGBa rounding); no-op without alpha
 * or when already premultiplied. */
void img_premultiply(struct img *im);

/* The inverse of img_premultiply (Pillow's RGBa -> RGBA). */
void img_unpremultiply(struct img *im);

/* Drops the alpha channel, compositing over white. Returns a new image (free with
 * img_destroy) or NULL on OOM; IM is not changed. Without alpha, returns a copy. */
struct img *img_flatten_white(const struct img *im);

/* To one channel (plus alpha): ITU-R 601 luma with Pillow's convert("L") weights. Returns a
 * new image or NULL on OOM. A gray image is copied. */
struct img *img_grayscale(const struct img *im);

/* The rectangle (x, y, w, h) clipped to the image. Returns a new image, or NULL when the
 * clipped rectangle is empty (*EMPTY = 1) or on OOM (*EMPTY = 0). */
struct img *img_crop(const struct img *im, int x, int y, int w, int h, int *empty);

/* Rotated clockwise by DEGREES (90, 180 or 270). Returns a new image or NULL on OOM. */
struct img *img_rotate(const struct img *im, int degrees);

/* Mirrors in place: HORIZONTAL 1 swaps left and right, 0 swaps top and bottom. */
void img_flip(struct img *im, int horizontal);

/* A copy of IM with CH channels (1..4), converting gray <-> RGB and adding opaque alpha or
 * dropping alpha (without compositing). Returns a new image or NULL on OOM. */
struct img *img_convert(const struct img *im, int ch);

#endif
