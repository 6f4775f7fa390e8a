/* A picture on its way through a pipeline, and the moves every step shares: replace the
 * image, bring a shrunk-on-load image to its logical size, rotate and flip with the box that
 * tracks the logical picture. Knows nothing of steps' params or of codecs. */
#ifndef BATCHD_WORKERS_OPS_IMG_STATE_H
#define BATCHD_WORKERS_OPS_IMG_STATE_H

#include "img_image.h"

#include <stddef.h>

/* When the decoder shrank the picture on load, the image stands for a larger "logical" one
 * (the full-size decode): BOX is where the logical image lies in IM's pixels, until the first
 * resampling step consumes it. */
struct img_state {
    struct img *im; /* owned */
    int lw, lh;     /* logical size */
    double box[4];  /* x0, y0, x1, y1 in im's pixels */
    int reduced;
};

/* Starts STATE on IM (taken) decoded at 1/DENOM of the logical size W x H (as stored), and
 * applies EXIF orientation O when non-1. Returns 0 or -BATCHD_E_TOO_LARGE (OOM). */
int img_state_init_take(struct img_state *st, struct img *im, int w, int h, int denom,
                        int orientation, char *msg, size_t msglen);

/* Frees the state's image. */
void img_state_cleanup(struct img_state *st);

/* A deep copy of SRC into DST. Returns 0 or -1 (OOM). */
int img_state_copy(struct img_state *dst, const struct img_state *src);

/* Brings a reduced state to its logical size (used before steps that need it). Returns 0 or
 * -BATCHD_E_TOO_LARGE (OOM) with MSG set. */
int img_state_unreduce(struct img_state *st, char *msg, size_t msglen);

/* Replaces the state's image by IM (taken); the old one is freed. */
void img_state_replace_take(struct img_state *st, struct img *im);

/* Sets MSG to "out of memory" and returns -BATCHD_E_TOO_LARGE, the code of a failed
 * allocation of pixels. */
int img_state_oom(char *msg, size_t msglen);

/* Rotates the state clockwise by DEGREES (90, 180, 270), box and logical size with it.
 * Returns 0 or -BATCHD_E_TOO_LARGE (OOM). */
int img_state_rotate(struct img_state *st, int degrees, char *msg, size_t msglen);

/* Mirrors the state left-right (HORIZONTAL) or top-bottom, box with it. */
void img_state_flip(struct img_state *st, int horizontal);

#endif
