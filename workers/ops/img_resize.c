/* Separable resampling as Pillow 9.4 does it (Resample.c, Reduce.c): per output pixel a
 * window of source pixels with filter weights scaled to the shrink factor, normalised, then
 * rounded to 22-bit fixed point; horizontal pass first over only the rows the vertical pass
 * needs, both passes on 8-bit data. Inner loops are written to vectorise: the vertical pass
 * runs along whole rows, the horizontal one is specialised per channel count. */
#include "img_resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

struct filter {
    double (*fn)(double x);
    double support;
};

static double f_bilinear(double x)
{
    if (x < 0.0) {
        x = -x;
    }
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double f_bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0) {
        x = -x;
    }
    if (x < 1.0) {
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    }
    if (x < 2.0) {
        return (((x - 5) * x + 8) * x - 4) * a;
    }
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0) {
        return 1.0;
    }
    x = x * M_PI;
    return sin(x) / x;
}

static double f_lanczos3(double x)
{
    if (-3.0 <= x && x < 3.0) {
        return sinc(x) * sinc(x / 3);
    }
    return 0.0;
}

static const struct filter filters[] = {
    [IMG_FILTER_NEAREST] = {NULL, 0.0},
    [IMG_FILTER_BILINEAR] = {f_bilinear, 1.0},
    [IMG_FILTER_BICUBIC] = {f_bicubic, 2.0},
    [IMG_FILTER_LANCZOS3] = {f_lanczos3, 3.0},
};

/* Python's round(): halves to even, which is what rint does in the default mode. */
static int pyround(double v)
{
    return (int)rint(v);
}

int img_thumbnail_size(int w, int h, int bw, int bh, int *ow, int *oh)
{
    int x = bw, y = bh;
    if (x >= w && y >= h) {
        return 0;
    }
    double aspect = (double)w / h;
    /* Pillow's round_aspect: of floor and ceil, the one whose aspect is closest (floor on a
     * tie), at least 1. */
    if ((double)x / y >= aspect) {
        double n = y * aspect, f = floor(n), c = ceil(n);
        x = fabs(aspect - f / y) <= fabs(aspect - c / y) ? (int)f : (int)c;
        x = x < 1 ? 1 : x;
    } else {
        double n = x / aspect, f = floor(n), c = ceil(n);
        double kf = f == 0 ? 0 : fabs(aspect - x / f), kc = c == 0 ? 0 : fabs(aspect - x / c);
        y = kf <= kc ? (int)f : (int)c;
        y = y < 1 ? 1 : y;
    }
    if (x == w && y == h) {
        return 0;
    }
    *ow = x;
    *oh = y;
    return 1;
}

void img_resize_plan(int w, int h, int tw, int th, enum img_fit fit, int *ow, int *oh,
                     double box[4])
{
    box[0] = 0;
    box[1] = 0;
    box[2] = w;
    box[3] = h;
    if (tw <= 0 || th <= 0) {
        if (tw <= 0) {
            tw = pyround((double)w * th / h);
        } else {
            th = pyround((double)h * tw / w);
        }
        *ow = tw < 1 ? 1 : tw;
        *oh = th < 1 ? 1 : th;
        return;
    }
    *ow = tw;
    *oh = th;
    double im_ratio = (double)w / h, dest_ratio = (double)tw / th;
    if (fit == IMG_FIT_CONTAIN && im_ratio != dest_ratio) {
        if (im_ratio > dest_ratio) {
            int nh = pyround((double)h / w * tw);
            *oh = nh < 1 ? 1 : nh;
        } else {
            int nw = pyround((double)w / h * th);
            *ow = nw < 1 ? 1 : nw;
        }
    } else if (fit == IMG_FIT_COVER && im_ratio != dest_ratio) {
        double cw = w, chh = h;
        if (im_ratio >= dest_ratio) {
            cw = dest_ratio * h;
        } else {
            chh = w / dest_ratio;
        }
        double left = (w - cw) * 0.5, top = (h - chh) * 0.5;
        box[0] = left;
        box[1] = top;
        box[2] = left + cw;
        box[3] = top + chh;
    }
}

/* Pillow's precompute_coeffs followed by normalize_coeffs_8bpc. The box edges arrive as
 * C floats in Pillow, so they are rounded to float here too. Returns the window size, or 0
 * on OOM; *BOUNDS gets (first, count) per output pixel, *KK ksize weights per output pixel. */
static int precompute(int in_size, float in0, float in1, int out_size, const struct filter *f,
                      int **boundsp, int32_t **kkp)
{
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int *bounds = malloc(sizeof *bounds * (size_t)out_size * 2);
    int32_t *kk = malloc(sizeof *kk * (size_t)out_size * (size_t)ksize);
    double *k = malloc(sizeof *k * (size_t)ksize);
    if (bounds == NULL || kk == NULL || k == NULL) {
        free(bounds);
        free(kk);
        free(k);
        return 0;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) {
            xmin = 0;
        }
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) {
            xmax = in_size;
        }
        xmax -= xmin;
        if (xmax < 0) {
            xmax = 0;
        }
        for (int x = 0; x < xmax; x++) {
            double w = f->fn((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        int32_t *kr = kk + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
            kr[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                          : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    free(k);
    *boundsp = bounds;
    *kkp = kk;
    return ksize;
}

static inline uint8_t clip8(int32_t v)
{
    if (v >= (1 << PRECISION_BITS) << 8) {
        return 255;
    }
    if (v <= 0) {
        return 0;
    }
    return (uint8_t)(v >> PRECISION_BITS);
}

static inline __attribute__((always_inline)) void hpass_rows(const struct img *in, struct img *out,
                                                             int y0, int ksize, const int *bounds,
                                                             const int32_t *kk, const int ch)
{
    for (int yy = 0; yy < out->height; yy++) {
        const uint8_t *src = in->px + (size_t)(yy + y0) * in->stride;
        uint8_t *dst = out->px + (size_t)yy * out->stride;
        for (int xx = 0; xx < out->width; xx++) {
            const int32_t *k = kk + (size_t)xx * ksize;
            int xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
            int32_t ss[4] = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1),
                             1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1)};
            const uint8_t *s = src + (size_t)xmin * ch;
            for (int x = 0; x < xmax; x++, s += ch) {
                for (int c = 0; c < ch; c++) {
                    ss[c] += s[c] * k[x];
                }
            }
            for (int c = 0; c < ch; c++) {
                dst[(size_t)xx * ch + c] = clip8(ss[c]);
            }
        }
    }
}

HOT static void hpass(const struct img *in, struct img *out, int y0, int ksize, const int *bounds,
                      const int32_t *kk)
{
    switch (in->channels) {
    case 1:
        hpass_rows(in, out, y0, ksize, bounds, kk, 1);
        break;
    case 2:
        hpass_rows(in, out, y0, ksize, bounds, kk, 2);
        break;
    case 3:
        hpass_rows(in, out, y0, ksize, bounds, kk, 3);
        break;
    default:
        hpass_rows(in, out, y0, ksize, bounds, kk, 4);
        break;
    }
}

/* Vertical pass along whole rows: ACC holds one output row of sums. */
HOT static void vpass(const struct img *in, struct img *out, int ksize, const int *bounds,
                      const int32_t *kk, int32_t *acc)
{
    size_t n = out->stride;
    for (int yy = 0; yy < out->height; yy++) {
        const int32_t *k = kk + (size_t)yy * ksize;
        int ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
        for (size_t i = 0; i < n; i++) {
            acc[i] = 1 << (PRECISION_BITS - 1);
        }
        for (int y = 0; y < ymax; y++) {
            const uint8_t *s = in->px + (size_t)(ymin + y) * in->stride;
            int32_t w = k[y];
            for (size_t i = 0; i < n; i++) {
                acc[i] += s[i] * w;
            }
        }
        uint8_t *d = out->px + (size_t)yy * out->stride;
        for (size_t i = 0; i < n; i++) {
            int32_t v = acc[i] >> PRECISION_BITS;
            d[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* Pillow's nearest-neighbour resize: source = (int)(x0 + scale * (x + 0.5)). */
static struct img *resize_nearest(const struct img *im, const double box[4], int ow, int oh)
{
    struct img *out = img_create(ow, oh, im->channels);
    int *xs = malloc(sizeof *xs * (size_t)ow);
    if (out == NULL || xs == NULL) {
        img_destroy(out);
        free(xs);
        return NULL;
    }
    out->premultiplied = im->premultiplied;
    int ch = im->channels;
    double ax = (double)((float)box[2] - (float)box[0]) / ow;
    double ay = (double)((float)box[3] - (float)box[1]) / oh;
    /* Pillow's ImagingScaleAffine steps the coordinate by adding the scale, not by
     * multiplying: the rounding at exact pixel borders follows the sum. */
    double xo = (float)box[0] + ax * 0.5, yo = (float)box[1] + ay * 0.5;
    for (int x = 0; x < ow; x++, xo += ax) {
        int sx = xo < 0 ? 0 : (int)xo;
        xs[x] = sx >= im->width ? im->width - 1 : sx;
    }
    for (int y = 0; y < oh; y++, yo += ay) {
        int sy = yo < 0 ? 0 : (int)yo;
        sy = sy >= im->height ? im->height - 1 : sy;
        const uint8_t *s = im->px + (size_t)sy * im->stride;
        uint8_t *d = out->px + (size_t)y * out->stride;
        for (int x = 0; x < ow; x++) {
            memcpy(d + (size_t)x * ch, s + (size_t)xs[x] * ch, (size_t)ch);
        }
    }
    free(xs);
    return out;
}

/* Pillow's ImagingResampleInner. */
static struct img *resample(const struct img *im, const double box[4], int ow, int oh,
                            enum img_filter filter, int pillow_order)
{
    const struct filter *f = &filters[filter];
    int *bh = NULL, *bv = NULL;
    int32_t *kh = NULL, *kv = NULL, *acc = NULL;
    struct img *tmp = NULL, *out = NULL;
    int need_h = ow != im->width || box[0] != 0 || box[2] != ow;
    int need_v = oh != im->height || box[1] != 0 || box[3] != oh;
    int ksh = precompute(im->width, (float)box[0], (float)box[2], ow, f, &bh, &kh);
    int ksv = precompute(im->height, (float)box[1], (float)box[3], oh, f, &bv, &kv);
    if (ksh == 0 || ksv == 0) {
        goto out;
    }
    int yfirst = bv[0], ylast = bv[oh * 2 - 2] + bv[oh * 2 - 1];
    const struct img *src = im;
    if (!pillow_order && need_h && need_v && oh < ylast - yfirst) {
        /* Shrinking vertically: the vectorised vertical pass first, so that the horizontal
         * one (a window per pixel, the costlier per tap) runs on OH rows instead of the
         * source's. Only the intermediate rounding differs from Pillow's order. */
        tmp = img_create(im->width, oh, im->channels);
        acc = malloc(sizeof *acc * (im->stride + 8));
        if (tmp == NULL || acc == NULL) {
            goto out;
        }
        vpass(im, tmp, ksv, bv, kv, acc);
        out = img_create(ow, oh, im->channels);
        if (out == NULL) {
            goto out;
        }
        hpass(tmp, out, 0, ksh, bh, kh);
        out->premultiplied = im->premultiplied;
        goto out;
    }
    if (need_h) {
        for (int i = 0; i < oh; i++) {
            bv[i * 2] -= yfirst;
        }
        tmp = img_create(ow, ylast - yfirst > 0 ? ylast - yfirst : 1, im->channels);
        if (tmp == NULL) {
            goto out;
        }
        tmp->height = ylast - yfirst;
        hpass(im, tmp, yfirst, ksh, bh, kh);
        src = tmp;
    }
    if (need_v) {
        out = img_create(src->width, oh, im->channels);
        acc = malloc(sizeof *acc * (src->stride + 8));
        if (out == NULL || acc == NULL) {
            img_destroy(out);
            out = NULL;
            goto out;
        }
        vpass(src, out, ksv, bv, kv, acc);
    } else if (tmp != NULL) {
        out = tmp;
        tmp = NULL;
    } else {
        out = img_convert(im, im->channels);
    }
    if (out != NULL) {
        out->premultiplied = im->premultiplied;
    }
out:
    free(bh);
    free(bv);
    free(kh);
    free(kv);
    free(acc);
    img_destroy(tmp);
    return out;
}

/* Pillow's division_UINT32(n, 8): 2^24 / n computed in single precision, truncated. */
static uint32_t reduce_multiplier(int n)
{
    float max_dividend = (float)(256u * (unsigned)n);
    float max_int = (float)(1u << 30) * 4.0f;
    return (uint32_t)(max_int / max_dividend);
}

/* Per output row: the FY source rows are summed column-wise along whole rows (vectorised),
 * then each FX-wide group of those column sums makes one output pixel. */
HOT static void reduce_rows(const struct img *im, struct img *out, int fx, int fy, const int box[4],
                            uint32_t *colsum)
{
    int ch = im->channels;
    int bw = box[2] - box[0], bh = box[3] - box[1];
    size_t n = (size_t)bw * ch;
    for (int oy = 0; oy < out->height; oy++) {
        int y0 = box[1] + oy * fy, y1 = y0 + fy;
        if (y1 > box[1] + bh) {
            y1 = box[1] + bh;
        }
        for (size_t i = 0; i < n; i++) {
            colsum[i] = 0;
        }
        for (int y = y0; y < y1; y++) {
            const uint8_t *s = im->px + (size_t)y * im->stride + (size_t)box[0] * ch;
            for (size_t i = 0; i < n; i++) {
                colsum[i] += s[i];
            }
        }
        uint8_t *d = out->px + (size_t)oy * out->stride;
        int rows = y1 - y0;
        uint32_t full = (uint32_t)(rows * fx);
        uint32_t mul = reduce_multiplier((int)full), amend = full / 2;
        for (int ox = 0; ox < out->width; ox++) {
            int cols = (ox + 1) * fx > bw ? bw - ox * fx : fx;
            uint32_t m = mul, am = amend;
            if (cols != fx) {
                m = reduce_multiplier(rows * cols);
                am = (uint32_t)(rows * cols) / 2;
            }
            const uint32_t *cs = colsum + (size_t)ox * fx * ch;
            for (int c = 0; c < ch; c++) {
                uint32_t sum = 0;
                for (int k = 0; k < cols; k++) {
                    sum += cs[k * ch + c];
                }
                d[(size_t)ox * ch + c] = (uint8_t)(((uint64_t)(sum + am) * m) >> 24);
            }
        }
    }
}

struct img *img_reduce(const struct img *im, int fx, int fy, const int box[4])
{
    int bw = box[2] - box[0], bh = box[3] - box[1];
    struct img *out = img_create((bw + fx - 1) / fx, (bh + fy - 1) / fy, im->channels);
    uint32_t *acc = out ? malloc(sizeof *acc * ((size_t)bw * im->channels + 8)) : NULL;
    if (acc == NULL) {
        img_destroy(out);
        return NULL;
    }
    out->premultiplied = im->premultiplied;
    reduce_rows(im, out, fx, fy, box, acc);
    free(acc);
    return out;
}

struct img *img_resize(const struct img *im, const double box_in[4], int ow, int oh,
                       enum img_filter filter, double gap, int pillow_order)
{
    double box[4] = {box_in[0], box_in[1], box_in[2], box_in[3]};
    if (filter == IMG_FILTER_NEAREST) {
        return resize_nearest(im, box, ow, oh);
    }
    struct img *reduced = NULL;
    if (gap >= 1.0) {
        int fx = (int)((box[2] - box[0]) / ow / gap), fy = (int)((box[3] - box[1]) / oh / gap);
        fx = fx < 1 ? 1 : fx;
        fy = fy < 1 ? 1 : fy;
        if (fx > 1 || fy > 1) {
            /* Pillow's _get_safe_box: the integer area the filter can reach. */
            double sup = filters[filter].support - 0.5;
            double sx = sup * (box[2] - box[0]) / ow, sy = sup * (box[3] - box[1]) / oh;
            int rb[4] = {(int)(box[0] - sx), (int)(box[1] - sy), (int)ceil(box[2] + sx),
                         (int)ceil(box[3] + sy)};
            rb[0] = rb[0] < 0 ? 0 : rb[0];
            rb[1] = rb[1] < 0 ? 0 : rb[1];
            rb[2] = rb[2] > im->width ? im->width : rb[2];
            rb[3] = rb[3] > im->height ? im->height : rb[3];
            reduced = img_reduce(im, fx, fy, rb);
            if (reduced == NULL) {
                return NULL;
            }
            box[0] = (box[0] - rb[0]) / fx;
            box[1] = (box[1] - rb[1]) / fy;
            box[2] = (box[2] - rb[0]) / fx;
            box[3] = (box[3] - rb[1]) / fy;
            im = reduced;
        }
    }
    struct img *out = NULL;
    if (ow == im->width && oh == im->height && box[0] == 0 && box[1] == 0 && box[2] == ow &&
        box[3] == oh) {
        out = img_convert(im, im->channels);
        if (out != NULL) {
            out->premultiplied = im->premultiplied;
        }
    } else {
        out = resample(im, box, ow, oh, filter, pillow_order);
    }
    img_destroy(reduced);
    return out;
}
