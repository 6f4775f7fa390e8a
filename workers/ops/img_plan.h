/* The plan of an image job, from its params and the image's header alone, before any pixel
 * is decoded: the JPEG shrink-on-load factor (with the step-order optimiser's rule that a
 * blur right before a downscale runs after it), and the refusal of outputs that cannot be
 * made. The runner (img_pipeline.c) applies the same rule through img_plan_moves_blur. */
#ifndef BATCHD_WORKERS_OPS_IMG_PLAN_H
#define BATCHD_WORKERS_OPS_IMG_PLAN_H

#include "img_codec.h"
#include "img_params.h"

#include <stddef.h>

/* A blur of at least this sigma (in output pixels) moved after a downscale lets the decode
 * shrink down to the output size (gap 1). */
#define IMG_BLUR_HIDES_SIGMA 1.0

/* The longest side a JPEG can have (libjpeg's JPEG_MAX_DIMENSION); a WebP's is in
 * img_codec.h. */
#define IMG_JPEG_MAX_SIDE 65500

/* The JPEG DCT scale denominator (1, 2, 4, 8) for an image of header H run through P:
 * the smallest decode whose size still covers what the first downscale needs, or 1 when
 * any step before that downscale cannot run on a reduced image, or P->exact. */
int img_params_shrink(const struct img_params *p, const struct img_header *h);

/* Checks, from the header H alone and before any pixel is decoded, that every output of P
 * (the shared pipeline's, or each variant's) fits its format: a JPEG output is at most
 * IMG_JPEG_MAX_SIDE pixels on a side, a WebP IMG_WEBP_MAX_SIDE. SRC is the format "same"
 * stands for (the input's). Returns 0 or -BATCHD_E_TOO_LARGE with MSG set. */
int img_params_check_outputs(const struct img_params *p, const struct img_header *h,
                             enum img_format src, char *msg, size_t msglen);

/* 1 when the runner, not exact, moves the blur STEPS[I] after the downscale STEPS[I + 1] of a
 * logical LW x LH image (a plain one: not a cover cut), running it with its sigma scaled. */
int img_plan_moves_blur(const struct img_step *steps, int i, int n, int lw, int lh);

#endif
