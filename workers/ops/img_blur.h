/* Gaussian blur and unsharp mask. Small sigmas use a true separable Gaussian kernel of
 * radius ceil(3 sigma), streamed through a ring of rows; large ones use three box passes
 * with a fractional radius (Gwosdek et al., what Pillow's GaussianBlur does), whose cost does
 * not grow with sigma and which stays within ~0.1 of the Gaussian's shape at that size. */
#ifndef BATCHD_WORKERS_OPS_IMG_BLUR_H
#define BATCHD_WORKERS_OPS_IMG_BLUR_H

#include "img_image.h"

/* Above this sigma the blur is three box passes instead of a kernel. */
#define IMG_BLUR_BOX_SIGMA 4.0

/* Blurs IM in place with standard deviations SX (horizontal) and SY (vertical), in pixels;
 * a sigma <= 0 leaves that direction alone. Alpha must be premultiplied. Returns 0, or -1
 * when memory ran out (IM is then unchanged or partly blurred, but valid). */
int img_blur(struct img *im, double sx, double sy);

/* Unsharp mask in place: IM + AMOUNT * (IM - blur(IM, SIGMA)). Returns 0 or -1 (OOM). */
int img_sharpen(struct img *im, double sigma, double amount);

#endif
