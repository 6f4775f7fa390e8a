/* Separable blurs. The Gaussian runs in one sweep down the image: each source row is
 * blurred horizontally into a ring of float rows, and each output row is the weighted sum
 * of 2r+1 ring rows, computed along the whole row so that it vectorises. Rows are padded at
 * both ends so no inner loop clamps. The box blur mirrors Pillow's BoxBlur.c arithmetic. */
#include "img_blur.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

/* A normalised Gaussian of standard deviation S and radius ceil(3 S); returns the radius
 * and a new array of 2r+1 weights in *W, or -1 on OOM. */
static int gauss_kernel(double s, float **w)
{
    int r = (int)ceil(3.0 * s);
    if (r < 1) {
        r = 1;
    }
    float *k = malloc(sizeof *k * (size_t)(2 * r + 1));
    if (k == NULL) {
        return -1;
    }
    double sum = 0;
    for (int i = -r; i <= r; i++) {
        sum += exp(-(double)i * i / (2.0 * s * s));
    }
    for (int i = -r; i <= r; i++) {
        k[i + r] = (float)(exp(-(double)i * i / (2.0 * s * s)) / sum);
    }
    *w = k;
    return r;
}

/* One row, horizontally: PAD holds the row as floats with R edge pixels on each side. */
HOT static void gauss_row(const float *pad, float *out, size_t n, int ch, const float *k, int r)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = 0.0f;
    }
    for (int t = 0; t <= 2 * r; t++) {
        const float *p = pad + (size_t)t * ch;
        float w = k[t];
        for (size_t i = 0; i < n; i++) {
            out[i] += w * p[i];
        }
    }
}

HOT static void widen_row(const uint8_t *src, float *dst, int w, int ch, int r)
{
    for (int x = 0; x < r; x++) {
        for (int c = 0; c < ch; c++) {
            dst[(size_t)x * ch + c] = src[c];
            dst[(size_t)(x + r + w) * ch + c] = src[(size_t)(w - 1) * ch + c];
        }
    }
    float *d = dst + (size_t)r * ch;
    size_t n = (size_t)w * ch;
    for (size_t i = 0; i < n; i++) {
        d[i] = src[i];
    }
}

HOT static void gauss_col(float *const *rows, uint8_t *out, size_t n, const float *k, int taps,
                          float *acc)
{
    for (size_t i = 0; i < n; i++) {
        acc[i] = 0.0f;
    }
    for (int t = 0; t < taps; t++) {
        const float *p = rows[t];
        float w = k[t];
        for (size_t i = 0; i < n; i++) {
            acc[i] += w * p[i];
        }
    }
    for (size_t i = 0; i < n; i++) {
        float v = acc[i] + 0.5f;
        out[i] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
    }
}

static int gauss_blur(struct img *im, double sx, double sy)
{
    int w = im->width, h = im->height, ch = im->channels;
    size_t n = im->stride;
    float *kx = NULL, *ky = NULL, *pad = NULL, *ring = NULL, *acc = NULL;
    float **rows = NULL;
    int rc = -1;
    int rx = sx > 0 ? gauss_kernel(sx, &kx) : 0;
    int ry = sy > 0 ? gauss_kernel(sy, &ky) : 0;
    if (rx < 0 || ry < 0) {
        goto out;
    }
    if (kx == NULL) { /* identity kernel */
        kx = malloc(sizeof *kx);
        if (kx == NULL) {
            goto out;
        }
        kx[0] = 1.0f;
    }
    if (ky == NULL) {
        ky = malloc(sizeof *ky);
        if (ky == NULL) {
            goto out;
        }
        ky[0] = 1.0f;
    }
    int taps = 2 * ry + 1;
    pad = malloc(sizeof *pad * ((size_t)(w + 2 * rx) * ch + 8));
    ring = malloc(sizeof *ring * (n + 8) * (size_t)taps);
    acc = malloc(sizeof *acc * (n + 8));
    rows = malloc(sizeof *rows * (size_t)taps);
    if (pad == NULL || ring == NULL || acc == NULL || rows == NULL) {
        goto out;
    }
    /* Row j lives in ring slot j % taps; output row y needs rows y-ry..y+ry (clamped), at
     * most taps distinct rows, so no slot is overwritten while still needed. Output row y
     * is written over source row y only after every source row it needs is in the ring. */
    int loaded = -1;
    for (int y = 0; y < h; y++) {
        int need = y + ry < h - 1 ? y + ry : h - 1;
        while (loaded < need) {
            loaded++;
            widen_row(im->px + (size_t)loaded * n, pad, w, ch, rx);
            gauss_row(pad, ring + (size_t)(loaded % taps) * (n + 8), n, ch, kx, rx);
        }
        for (int t = 0; t < taps; t++) {
            int j = y - ry + t;
            j = j < 0 ? 0 : j >= h ? h - 1 : j;
            rows[t] = ring + (size_t)(j % taps) * (n + 8);
        }
        gauss_col(rows, im->px + (size_t)y * n, n, ky, taps, acc);
    }
    rc = 0;
out:
    free(kx);
    free(ky);
    free(pad);
    free(ring);
    free(acc);
    free(rows);
    return rc;
}

/* Pillow's box radius for a Gaussian of SIGMA made of PASSES box passes. */
static float box_radius(float sigma, int passes)
{
    float sigma2 = sigma * sigma / passes;
    float L = sqrtf(12.0f * sigma2 + 1.0f);
    float l = floorf((L - 1.0f) / 2.0f);
    float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
    a /= 6 * (sigma2 - (l + 1) * (l + 1));
    return l + a;
}

struct box {
    int r;       /* integer radius */
    uint32_t ww; /* weight of the 2r+1 inner taps, 24-bit fixed point */
    uint32_t fw; /* weight of the two taps at distance r+1 */
};

static struct box box_of(float radius)
{
    struct box b;
    b.r = (int)radius;
    b.ww = (uint32_t)((float)(1 << 24) / (radius * 2 + 1));
    b.fw = ((1u << 24) - (uint32_t)(b.r * 2 + 1) * b.ww) / 2;
    return b;
}

/* One box pass over a row of N pixels of CH channels. PAD holds the row with r+1 edge
 * pixels on each side; OUT may be the row itself. */
static inline __attribute__((always_inline)) void box_line(const uint8_t *pad, uint8_t *out, int nx,
                                                           const int ch, const struct box *b)
{
    uint32_t acc[4] = {0, 0, 0, 0};
    int r = b->r;
    /* acc for output x covers pad[x .. x+2r] (pad index = x + r + 1 - r - 1 + ...). */
    for (int i = 1; i <= 2 * r; i++) {
        for (int c = 0; c < ch; c++) {
            acc[c] += pad[(size_t)i * ch + c];
        }
    }
    for (int x = 0; x < nx; x++) {
        const uint8_t *p = pad + (size_t)x * ch; /* p[0] is the far-left tap */
        for (int c = 0; c < ch; c++) {
            acc[c] += p[(size_t)(2 * r + 1) * ch + c];
            uint32_t bulk =
                acc[c] * b->ww + (uint32_t)(p[c] + p[(size_t)(2 * r + 2) * ch + c]) * b->fw;
            out[(size_t)x * ch + c] = (uint8_t)((bulk + (1u << 23)) >> 24);
            acc[c] -= p[(size_t)ch + c];
        }
    }
}

static void pad_line(const uint8_t *src, uint8_t *pad, int nx, int ch, int e)
{
    for (int x = 0; x < e; x++) {
        memcpy(pad + (size_t)x * ch, src, (size_t)ch);
        memcpy(pad + (size_t)(e + nx + x) * ch, src + (size_t)(nx - 1) * ch, (size_t)ch);
    }
    memcpy(pad + (size_t)e * ch, src, (size_t)nx * ch);
}

HOT static void box_rows(struct img *im, const struct box *b, int passes, uint8_t *pad)
{
    int ch = im->channels, e = b->r + 1;
    for (int y = 0; y < im->height; y++) {
        uint8_t *row = im->px + (size_t)y * im->stride;
        for (int p = 0; p < passes; p++) {
            pad_line(row, pad, im->width, ch, e);
            switch (ch) {
            case 1:
                box_line(pad, row, im->width, 1, b);
                break;
            case 2:
                box_line(pad, row, im->width, 2, b);
                break;
            case 3:
                box_line(pad, row, im->width, 3, b);
                break;
            default:
                box_line(pad, row, im->width, 4, b);
                break;
            }
        }
    }
}

/* One vertical box pass from SRC to DST (same size), along whole rows. */
HOT static void box_cols(const struct img *src, struct img *dst, const struct box *b, uint32_t *acc)
{
    size_t n = src->stride;
    int h = src->height, r = b->r;
#define ROW(j) (src->px + (size_t)((j) < 0 ? 0 : (j) >= h ? h - 1 : (j)) * n)
    memset(acc, 0, n * sizeof *acc);
    for (int j = -r - 1; j <= r - 1; j++) {
        const uint8_t *s = ROW(j);
        for (size_t i = 0; i < n; i++) {
            acc[i] += s[i];
        }
    }
    for (int y = 0; y < h; y++) {
        const uint8_t *add = ROW(y + r), *sub = ROW(y - r - 1), *far = ROW(y + r + 1);
        uint8_t *d = dst->px + (size_t)y * n;
        for (size_t i = 0; i < n; i++) {
            uint32_t a = acc[i] + add[i] - sub[i];
            acc[i] = a;
            uint32_t bulk = a * b->ww + (uint32_t)(sub[i] + far[i]) * b->fw;
            d[i] = (uint8_t)((bulk + (1u << 23)) >> 24);
        }
    }
#undef ROW
}

static int box_blur(struct img *im, double sx, double sy)
{
    const int passes = 3;
    if (sx > 0) {
        struct box b = box_of(box_radius((float)sx, passes));
        uint8_t *pad = malloc((size_t)(im->width + 2 * (b.r + 1)) * im->channels + 32);
        if (pad == NULL) {
            return -1;
        }
        box_rows(im, &b, passes, pad);
        free(pad);
    }
    if (sy > 0) {
        struct box b = box_of(box_radius((float)sy, passes));
        struct img *tmp = img_create(im->width, im->height, im->channels);
        uint32_t *acc = malloc(sizeof *acc * (im->stride + 8));
        if (tmp == NULL || acc == NULL) {
            img_destroy(tmp);
            free(acc);
            return -1;
        }
        box_cols(im, tmp, &b, acc);
        box_cols(tmp, im, &b, acc);
        box_cols(im, tmp, &b, acc);
        uint8_t *t = im->px;
        im->px = tmp->px;
        tmp->px = t;
        img_destroy(tmp);
        free(acc);
    }
    return 0;
}

int img_blur(struct img *im, double sx, double sy)
{
    /* Each direction picks its own method; the Gaussian sweep does both at once. */
    int bx = sx > IMG_BLUR_BOX_SIGMA, by = sy > IMG_BLUR_BOX_SIGMA;
    if (bx && by) {
        return box_blur(im, sx, sy);
    }
    if (!bx && !by) {
        return gauss_blur(im, sx, sy);
    }
    if (bx) {
        return box_blur(im, sx, 0) != 0 ? -1 : gauss_blur(im, 0, sy);
    }
    return box_blur(im, 0, sy) != 0 ? -1 : gauss_blur(im, sx, 0);
}

int img_sharpen(struct img *im, double sigma, double amount)
{
    struct img *b = img_convert(im, im->channels);
    if (b == NULL) {
        return -1;
    }
    b->premultiplied = im->premultiplied;
    if (img_blur(b, sigma, sigma) != 0) {
        img_destroy(b);
        return -1;
    }
    size_t n = im->stride * (size_t)im->height;
    float a = (float)amount;
    for (size_t i = 0; i < n; i++) {
        float v = im->px[i] + a * ((float)im->px[i] - b->px[i]) + 0.5f;
        im->px[i] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
    }
    if (im->premultiplied && img_has_alpha(im)) {
        /* Premultiplied colour may not exceed its alpha. */
        int ch = im->channels;
        for (size_t i = 0; i < n; i += (size_t)ch) {
            for (int c = 0; c < ch - 1; c++) {
                if (im->px[i + c] > im->px[i + ch - 1]) {
                    im->px[i + c] = im->px[i + ch - 1];
                }
            }
        }
    }
    img_destroy(b);
    return 0;
}
