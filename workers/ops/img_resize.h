/* Resampling: separable convolution with Pillow's filters (nearest, bilinear, bicubic,
 * lanczos3) and fixed-point weights, integer box reduction, and the size rules of Pillow's
 * Image.thumbnail, ImageOps.contain and ImageOps.fit. Matching Pillow's arithmetic makes the
 * results comparable to it pixel for pixel; the speed comes from vectorised loops. */
#ifndef BATCHD_WORKERS_OPS_IMG_RESIZE_H
#define BATCHD_WORKERS_OPS_IMG_RESIZE_H

#include "img_image.h"

enum img_filter {
    IMG_FILTER_NEAREST,
    IMG_FILTER_BILINEAR,
    IMG_FILTER_BICUBIC,
    IMG_FILTER_LANCZOS3,
};

enum img_fit {
    IMG_FIT_FILL,    /* exactly width x height, aspect not kept */
    IMG_FIT_CONTAIN, /* inside width x height, aspect kept (ImageOps.contain) */
    IMG_FIT_COVER,   /* exactly width x height, aspect kept, the overflow cropped (ImageOps.fit) */
};

/* Pillow's Image.thumbnail size for a W x H image and a BW x BH box: returns 0 and leaves
 * *OW, *OH alone when the image already fits, else 1 with the size. */
int img_thumbnail_size(int w, int h, int bw, int bh, int *ow, int *oh);

/* The output size and source box of a resize of W x H to TW x TH (either may be 0: keep the
 * aspect) with FIT. BOX receives the source area (x0, y0, x1, y1) to resample. */
void img_resize_plan(int w, int h, int tw, int th, enum img_fit fit, int *ow, int *oh,
                     double box[4]);

/* Resamples the area BOX of IM (fractional pixel coordinates, as Pillow's resize(box=)) to
 * OW x OH with FILTER. Alpha must already be premultiplied. When GAP >= 1 and the filter is
 * not nearest, first box-reduces by integer factors while the rest still shrinks by at least
 * GAP (Pillow's reducing_gap); GAP 0 resamples in one step. PILLOW_ORDER 1 runs the
 * horizontal pass first as Pillow does (results identical to Pillow's); 0 picks the cheaper
 * order (the same up to the rounding of the intermediate image). Returns a new image or NULL
 * on OOM. */
struct img *img_resize(const struct img *im, const double box[4], int ow, int oh,
                       enum img_filter filter, double gap, int pillow_order);

/* Pillow's Image.reduce: the mean of each FX x FY block of the integer area BOX (x0, y0, x1,
 * y1); partial blocks at the far edges average what they hold. Returns a new image or NULL. */
struct img *img_reduce(const struct img *im, int fx, int fy, const int box[4]);

#endif
