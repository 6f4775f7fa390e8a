/* Separable blurs. The Gaussian runs in one sweep down the image: each source row is
 * blurred horizontally into a ring of float rows, and each output row is the weighted sum
 * of 2r+1 ring rows, computed along the whole row so that it vectorises. Rows are padded at
 * both ends so no inner loop clamps. The box blur mirrors Pillow's BoxBlur.c arithmetic; its
 * passes run across many lines at once so that they vectorise too: the horizontal ones on
 * strips of rows transposed in cache, the vertical ones in one sweep down the image. */
#include "img_blur.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
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

/* One box pass along the first axis of a LEN x N array of bytes, from SRC to DST (distinct
 * arrays, lines SS and DS bytes apart): DST line y is the box of SRC lines y-r-1 .. y+r+1,
 * edge lines repeated, computed across the N bytes of each line so that it vectorises. This
 * is Pillow's BoxBlur.c arithmetic exactly. ACC holds N counters. */
static inline __attribute__((always_inline)) void box_run_body(const uint8_t *src, size_t ss,
                                                               uint8_t *dst, size_t ds, int len,
                                                               const size_t n, const struct box *b,
                                                               uint32_t *acc)
{
    int r = b->r;
    uint32_t ww = b->ww, fw = b->fw;
#define LINE(j) (src + (size_t)((j) < 0 ? 0 : (j) >= len ? len - 1 : (j)) * ss)
    memset(acc, 0, n * sizeof *acc);
    for (int j = -r - 1; j <= r - 1; j++) {
        const uint8_t *s = LINE(j);
        for (size_t i = 0; i < n; i++) {
            acc[i] += s[i];
        }
    }
    for (int y = 0; y < len; y++) {
        const uint8_t *add = LINE(y + r), *sub = LINE(y - r - 1), *far = LINE(y + r + 1);
        uint8_t *d = dst + (size_t)y * ds;
        for (size_t i = 0; i < n; i++) {
            uint32_t a = acc[i] + add[i] - sub[i];
            acc[i] = a;
            uint32_t bulk = a * ww + (uint32_t)(sub[i] + far[i]) * fw;
            d[i] = (uint8_t)((bulk + (1u << 23)) >> 24);
        }
    }
#undef LINE
}

HOT static void box_run(const uint8_t *src, size_t ss, uint8_t *dst, size_t ds, int len, size_t n,
                        const struct box *b, uint32_t *acc)
{
    box_run_body(src, ss, dst, ds, len, n, b, acc);
}

/* Rows per strip of the horizontal passes: a strip is transposed so that its pixels at one
 * x are contiguous, and the passes then run down x across the whole strip at once. */
#define BOX_STRIP 32

/* Copies ROWS rows of W pixels of CH bytes from PX (rows S bytes apart) into T, which holds,
 * for each x, the ROWS pixels at that x one after another; with BACK set, the other way. */
static inline __attribute__((always_inline)) void
strip_move(uint8_t *px, size_t s, uint8_t *t, int w, int rows, const int ch, int back)
{
    size_t n = (size_t)rows * ch;
    if (back) {
        for (int x = 0; x < w; x++) {
            const uint8_t *col = t + (size_t)x * n;
            uint8_t *p = px + (size_t)x * ch;
            for (int k = 0; k < rows; k++) {
                memcpy(p + (size_t)k * s, col + (size_t)k * ch, (size_t)ch);
            }
        }
    } else {
        for (int x = 0; x < w; x++) {
            uint8_t *col = t + (size_t)x * n;
            const uint8_t *p = px + (size_t)x * ch;
            for (int k = 0; k < rows; k++) {
                memcpy(col + (size_t)k * ch, p + (size_t)k * s, (size_t)ch);
            }
        }
    }
}

HOT static void strip_copy(uint8_t *px, size_t s, uint8_t *t, int w, int rows, int ch, int back)
{
    switch (ch) {
    case 1:
        strip_move(px, s, t, w, rows, 1, back);
        break;
    case 2:
        strip_move(px, s, t, w, rows, 2, back);
        break;
    case 3:
        strip_move(px, s, t, w, rows, 3, back);
        break;
    default:
        strip_move(px, s, t, w, rows, 4, back);
        break;
    }
}

/* box_run over a full strip of BOX_STRIP rows of CH channels: with the line length known,
 * the counters can stay in registers. */
HOT static void box_run_strip(const uint8_t *src, uint8_t *dst, int len, int ch,
                              const struct box *b)
{
    uint32_t acc[4 * BOX_STRIP];
    switch (ch) {
    case 1:
        box_run_body(src, BOX_STRIP, dst, BOX_STRIP, len, BOX_STRIP, b, acc);
        break;
    case 2:
        box_run_body(src, 2 * BOX_STRIP, dst, 2 * BOX_STRIP, len, 2 * BOX_STRIP, b, acc);
        break;
    case 3:
        box_run_body(src, 3 * BOX_STRIP, dst, 3 * BOX_STRIP, len, 3 * BOX_STRIP, b, acc);
        break;
    default:
        box_run_body(src, 4 * BOX_STRIP, dst, 4 * BOX_STRIP, len, 4 * BOX_STRIP, b, acc);
        break;
    }
}

/* PASSES horizontal box passes over every row. T and U hold BOX_STRIP * stride bytes each,
 * ACC BOX_STRIP * channels counters. */
static void box_rows(struct img *im, const struct box *b, int passes, uint8_t *t, uint8_t *u,
                     uint32_t *acc)
{
    int ch = im->channels, w = im->width;
    for (int y = 0; y < im->height; y += BOX_STRIP) {
        int rows = im->height - y < BOX_STRIP ? im->height - y : BOX_STRIP;
        size_t n = (size_t)rows * ch;
        uint8_t *px = im->px + (size_t)y * im->stride;
        strip_copy(px, im->stride, t, w, rows, ch, 0);
        for (int p = 0; p < passes; p++) {
            if (rows == BOX_STRIP) {
                box_run_strip(p % 2 ? u : t, p % 2 ? t : u, w, ch, b);
            } else {
                box_run(p % 2 ? u : t, n, p % 2 ? t : u, n, w, n, b, acc);
            }
        }
        strip_copy(px, im->stride, passes % 2 ? u : t, w, rows, ch, 1);
    }
}

/* The vertical passes run down the image in one sweep, whole rows at a time: pass k's output
 * rows go to a ring of 2r+3 rows (all that pass k+1 needs at once), and the last pass writes
 * back into the image, over source rows the first pass no longer needs. */
#define BOX_PASSES 3
_Static_assert(BOX_PASSES >= 2, "the last pass writes over the first one's source");

HOT static void box_sum(uint32_t *acc, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        acc[i] += s[i];
    }
}

HOT static void box_step(uint32_t *acc, const uint8_t *add, const uint8_t *sub, const uint8_t *far,
                         uint8_t *d, size_t n, uint32_t ww, uint32_t fw)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t a = acc[i] + add[i] - sub[i];
        acc[i] = a;
        uint32_t bulk = a * ww + (uint32_t)(sub[i] + far[i]) * fw;
        d[i] = (uint8_t)((bulk + (1u << 23)) >> 24);
    }
}

struct vbox {
    struct img *im;
    const struct box *b;
    int slots;                     /* rows per ring */
    uint8_t *ring[BOX_PASSES];     /* ring[k]: pass k's output, 1 <= k < BOX_PASSES */
    uint32_t *acc[BOX_PASSES + 1]; /* acc[k]: pass k's counters, one per byte of a row */
    int made[BOX_PASSES + 1];      /* rows pass k has produced */
};

/* Row J (clamped to the image) of pass K's output; pass 0 is the image itself. */
static const uint8_t *vbox_row(const struct vbox *v, int k, int j)
{
    int h = v->im->height;
    j = j < 0 ? 0 : j >= h ? h - 1 : j;
    if (k == 0) {
        return v->im->px + (size_t)j * v->im->stride;
    }
    return v->ring[k] + (size_t)(j % v->slots) * v->im->stride;
}

/* Produces pass K's rows up to Y, first the rows of pass K-1 that they need. */
static void vbox_make(struct vbox *v, int k, int y)
{
    int h = v->im->height, r = v->b->r;
    size_t n = v->im->stride;
    while (v->made[k] <= y) {
        int j = v->made[k];
        if (k > 1) {
            vbox_make(v, k - 1, j + r + 1 < h - 1 ? j + r + 1 : h - 1);
        }
        if (j == 0) {
            memset(v->acc[k], 0, n * sizeof *v->acc[k]);
            for (int i = -r - 1; i <= r - 1; i++) {
                box_sum(v->acc[k], vbox_row(v, k - 1, i), n);
            }
        }
        uint8_t *d =
            k == BOX_PASSES ? v->im->px + (size_t)j * n : v->ring[k] + (size_t)(j % v->slots) * n;
        box_step(v->acc[k], vbox_row(v, k - 1, j + r), vbox_row(v, k - 1, j - r - 1),
                 vbox_row(v, k - 1, j + r + 1), d, n, v->b->ww, v->b->fw);
        v->made[k]++;
    }
}

/* BOX_PASSES vertical box passes over IM; returns 0 or -1 (OOM, IM unchanged). */
static int box_cols_sweep(struct img *im, const struct box *b)
{
    struct vbox v;
    memset(&v, 0, sizeof v);
    v.im = im;
    v.b = b;
    v.slots = 2 * b->r + 3 < im->height ? 2 * b->r + 3 : im->height;
    int rc = -1;
    for (int k = 1; k <= BOX_PASSES; k++) {
        v.acc[k] = malloc(sizeof *v.acc[k] * im->stride);
        if (v.acc[k] == NULL) {
            goto out;
        }
        if (k < BOX_PASSES) {
            v.ring[k] = malloc((size_t)v.slots * im->stride);
            if (v.ring[k] == NULL) {
                goto out;
            }
        }
    }
    vbox_make(&v, BOX_PASSES, im->height - 1);
    rc = 0;
out:
    for (int k = 1; k <= BOX_PASSES; k++) {
        free(v.acc[k]);
        if (k < BOX_PASSES) {
            free(v.ring[k]);
        }
    }
    return rc;
}

static int box_blur(struct img *im, double sx, double sy)
{
    const int passes = BOX_PASSES;
    if (sx > 0) {
        struct box b = box_of(box_radius((float)sx, passes));
        size_t sz = (size_t)BOX_STRIP * im->stride;
        uint8_t *t = malloc(sz), *u = malloc(sz);
        uint32_t *acc = malloc(sizeof *acc * (size_t)BOX_STRIP * (size_t)im->channels);
        if (t == NULL || u == NULL || acc == NULL) {
            free(t);
            free(u);
            free(acc);
            return -1;
        }
        box_rows(im, &b, passes, t, u, acc);
        free(t);
        free(u);
        free(acc);
    }
    if (sy > 0) {
        struct box b = box_of(box_radius((float)sy, passes));
        if (box_cols_sweep(im, &b) != 0) {
            return -1;
        }
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
