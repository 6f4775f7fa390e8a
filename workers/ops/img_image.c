/* Image buffers and the steps that move or recombine pixels without filtering them.
 * Rounding follows Pillow 9.4 where Pillow has the same operation, so that tests can
 * compare against it pixel for pixel. */
#include "img_image.h"

#include <stdlib.h>
#include <string.h>

struct img *img_create(int w, int h, int ch)
{
    if (w <= 0 || h <= 0 || w > IMG_MAX_SIDE || h > IMG_MAX_SIDE || ch < 1 || ch > 4) {
        return NULL;
    }
    struct img *im = malloc(sizeof *im);
    if (im == NULL) {
        return NULL;
    }
    im->width = w;
    im->height = h;
    im->channels = ch;
    im->premultiplied = 0;
    im->stride = (size_t)w * (size_t)ch;
    /* Rows are padded by nothing; the extra 32 bytes let vector loops overread safely. */
    im->px = malloc(im->stride * (size_t)h + 32);
    if (im->px == NULL) {
        free(im);
        return NULL;
    }
    return im;
}

void img_destroy(struct img *im)
{
    if (im == NULL) {
        return;
    }
    free(im->px);
    free(im);
}

/* Pillow's MULDIV255: a * b / 255, rounded. */
static inline unsigned muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

void img_premultiply(struct img *im)
{
    if (!img_has_alpha(im) || im->premultiplied) {
        return;
    }
    int ch = im->channels;
    size_t n = (size_t)im->width * (size_t)im->height;
    uint8_t *p = im->px;
    for (size_t i = 0; i < n; i++, p += ch) {
        unsigned a = p[ch - 1];
        if (a == 255) {
            continue;
        }
        for (int c = 0; c < ch - 1; c++) {
            p[c] = (uint8_t)muldiv255(p[c], a);
        }
    }
    im->premultiplied = 1;
}

void img_unpremultiply(struct img *im)
{
    if (!img_has_alpha(im) || !im->premultiplied) {
        return;
    }
    int ch = im->channels;
    size_t n = (size_t)im->width * (size_t)im->height;
    uint8_t *p = im->px;
    for (size_t i = 0; i < n; i++, p += ch) {
        unsigned a = p[ch - 1];
        if (a == 255 || a == 0) {
            continue;
        }
        for (int c = 0; c < ch - 1; c++) {
            unsigned v = 255u * p[c] / a;
            p[c] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
    im->premultiplied = 0;
}

struct img *img_convert(const struct img *im, int ch)
{
    struct img *out = img_create(im->width, im->height, ch);
    if (out == NULL) {
        return NULL;
    }
    out->premultiplied = im->premultiplied && ch % 2 == 0;
    int ich = im->channels;
    size_t n = (size_t)im->width * (size_t)im->height;
    if (ich == ch) {
        memcpy(out->px, im->px, n * (size_t)ch);
        return out;
    }
    const uint8_t *s = im->px;
    uint8_t *d = out->px;
    for (size_t i = 0; i < n; i++, s += ich, d += ch) {
        uint8_t r, g, b;
        if (ich >= 3) {
            r = s[0];
            g = s[1];
            b = s[2];
        } else {
            r = g = b = s[0];
        }
        uint8_t a = img_has_alpha(im) ? s[ich - 1] : 255;
        if (ch >= 3) {
            d[0] = r;
            d[1] = g;
            d[2] = b;
        } else {
            d[0] = (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
        }
        if (ch == 2 || ch == 4) {
            d[ch - 1] = a;
        }
    }
    return out;
}

struct img *img_flatten_white(const struct img *im)
{
    if (!img_has_alpha(im)) {
        return img_convert(im, im->channels);
    }
    int ich = im->channels, och = ich - 1;
    struct img *out = img_create(im->width, im->height, och);
    if (out == NULL) {
        return NULL;
    }
    size_t n = (size_t)im->width * (size_t)im->height;
    const uint8_t *s = im->px;
    uint8_t *d = out->px;
    for (size_t i = 0; i < n; i++, s += ich, d += och) {
        unsigned a = s[ich - 1];
        for (int c = 0; c < och; c++) {
            /* Over white: c*a + 255*(1-a); premultiplied colour already holds c*a. */
            unsigned v = im->premultiplied ? s[c] + (255 - a) : muldiv255(s[c], a) + (255 - a);
            d[c] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
    return out;
}

struct img *img_grayscale(const struct img *im)
{
    if (im->channels <= 2) {
        return img_convert(im, im->channels);
    }
    /* Luma of premultiplied colour is the premultiplied luma: the weights are linear. */
    return img_convert(im, im->channels == 4 ? 2 : 1);
}

struct img *img_crop(const struct img *im, int x, int y, int w, int h, int *empty)
{
    *empty = 0;
    long x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    long x1 = (long)x + w, y1 = (long)y + h;
    if (x1 > im->width) {
        x1 = im->width;
    }
    if (y1 > im->height) {
        y1 = im->height;
    }
    if (x1 <= x0 || y1 <= y0) {
        *empty = 1;
        return NULL;
    }
    struct img *out = img_create((int)(x1 - x0), (int)(y1 - y0), im->channels);
    if (out == NULL) {
        return NULL;
    }
    out->premultiplied = im->premultiplied;
    for (long r = y0; r < y1; r++) {
        memcpy(out->px + (size_t)(r - y0) * out->stride,
               im->px + (size_t)r * im->stride + (size_t)x0 * (size_t)im->channels, out->stride);
    }
    return out;
}

struct img *img_rotate(const struct img *im, int degrees)
{
    int w = im->width, h = im->height, ch = im->channels;
    int ow = degrees == 180 ? w : h, oh = degrees == 180 ? h : w;
    struct img *out = img_create(ow, oh, ch);
    if (out == NULL) {
        return NULL;
    }
    out->premultiplied = im->premultiplied;
    /* Walk the destination in row order, reading the source column-wise in tiles so that
     * both sides stay in cache for large images. */
    enum { T = 64 };
    for (int ty = 0; ty < oh; ty += T) {
        for (int tx = 0; tx < ow; tx += T) {
            int ey = ty + T < oh ? ty + T : oh, ex = tx + T < ow ? tx + T : ow;
            for (int y = ty; y < ey; y++) {
                uint8_t *d = out->px + (size_t)y * out->stride + (size_t)tx * ch;
                for (int x = tx; x < ex; x++, d += ch) {
                    int sx, sy;
                    if (degrees == 90) { /* dest (x,y) <- src (y, h-1-x) */
                        sx = y;
                        sy = h - 1 - x;
                    } else if (degrees == 270) {
                        sx = w - 1 - y;
                        sy = x;
                    } else {
                        sx = w - 1 - x;
                        sy = h - 1 - y;
                    }
                    memcpy(d, im->px + (size_t)sy * im->stride + (size_t)sx * ch, (size_t)ch);
                }
            }
        }
    }
    return out;
}

void img_flip(struct img *im, int horizontal)
{
    int ch = im->channels;
    if (horizontal) {
        for (int y = 0; y < im->height; y++) {
            uint8_t *l = im->px + (size_t)y * im->stride;
            uint8_t *r = l + (size_t)(im->width - 1) * ch;
            for (; l < r; l += ch, r -= ch) {
                uint8_t t[4];
                memcpy(t, l, (size_t)ch);
                memcpy(l, r, (size_t)ch);
                memcpy(r, t, (size_t)ch);
            }
        }
        return;
    }
    for (int y = 0; y < im->height / 2; y++) {
        uint8_t *a = im->px + (size_t)y * im->stride;
        uint8_t *b = im->px + (size_t)(im->height - 1 - y) * im->stride;
        for (size_t i = 0; i < im->stride; i++) {
            uint8_t t = a[i];
            a[i] = b[i];
            b[i] = t;
        }
    }
}
