/* The pipeline state (img_state.h): the shrunk-on-load box and the moves that keep it in
 * step with the pixels. */
#include "img_state.h"

#include "../../api/errors.h"
#include "img_resize.h"

#include <stdio.h>
#include <string.h>

void img_state_cleanup(struct img_state *st)
{
    img_destroy(st->im);
    st->im = NULL;
}

int img_state_copy(struct img_state *dst, const struct img_state *src)
{
    *dst = *src;
    dst->im = img_convert(src->im, src->im->channels);
    if (dst->im == NULL) {
        return -1;
    }
    dst->im->premultiplied = src->im->premultiplied;
    return 0;
}

int img_state_oom(char *msg, size_t msglen)
{
    snprintf(msg, msglen, "out of memory");
    return -BATCHD_E_TOO_LARGE;
}

void img_state_replace_take(struct img_state *st, struct img *im)
{
    img_destroy(st->im);
    st->im = im;
}

void img_state_flip(struct img_state *st, int horizontal)
{
    img_flip(st->im, horizontal);
    double *b = st->box;
    if (horizontal) {
        double x0 = st->im->width - b[2], x1 = st->im->width - b[0];
        b[0] = x0;
        b[2] = x1;
    } else {
        double y0 = st->im->height - b[3], y1 = st->im->height - b[1];
        b[1] = y0;
        b[3] = y1;
    }
}

int img_state_rotate(struct img_state *st, int degrees, char *msg, size_t msglen)
{
    int w = st->im->width, h = st->im->height;
    struct img *r = img_rotate(st->im, degrees);
    if (r == NULL) {
        return img_state_oom(msg, msglen);
    }
    img_state_replace_take(st, r);
    double *b = st->box, nb[4];
    if (degrees == 90) { /* (x, y) -> (h - y, x) */
        nb[0] = h - b[3];
        nb[1] = b[0];
        nb[2] = h - b[1];
        nb[3] = b[2];
    } else if (degrees == 270) { /* (x, y) -> (y, w - x) */
        nb[0] = b[1];
        nb[1] = w - b[2];
        nb[2] = b[3];
        nb[3] = w - b[0];
    } else {
        nb[0] = w - b[2];
        nb[1] = h - b[3];
        nb[2] = w - b[0];
        nb[3] = h - b[1];
    }
    memcpy(b, nb, sizeof nb);
    if (degrees != 180) {
        int t = st->lw;
        st->lw = st->lh;
        st->lh = t;
    }
    return 0;
}

int img_state_init_take(struct img_state *st, struct img *im, int w, int h, int denom,
                        int orientation, char *msg, size_t msglen)
{
    st->im = im;
    st->lw = w;
    st->lh = h;
    st->box[0] = 0;
    st->box[1] = 0;
    /* A decode at 1/DENOM is ceil(w / denom) wide: its last column stands for less than
     * a whole block, so the logical image ends at w / denom (Pillow's draft box). */
    st->box[2] = (double)w / denom;
    st->box[3] = (double)h / denom;
    st->reduced = im->width != w || im->height != h;
    /* EXIF orientation as a rotation then a mirror: 0 none, 1 left-right, 2 top-bottom. */
    static const struct {
        int degrees, flip;
    } orient[9] = {[2] = {0, 1},  [3] = {180, 0}, [4] = {0, 2},  [5] = {90, 1},
                   [6] = {90, 0}, [7] = {270, 1}, [8] = {270, 0}};
    if (orientation < 2 || orientation > 8) {
        return 0;
    }
    int rc = 0;
    if (orient[orientation].degrees != 0) {
        rc = img_state_rotate(st, orient[orientation].degrees, msg, msglen);
    }
    if (rc == 0 && orient[orientation].flip != 0) {
        img_state_flip(st, orient[orientation].flip == 1);
    }
    return rc;
}

int img_state_unreduce(struct img_state *st, char *msg, size_t msglen)
{
    if (!st->reduced) {
        return 0;
    }
    img_premultiply(st->im);
    struct img *r = img_resize(st->im, st->box, st->lw, st->lh, IMG_FILTER_BICUBIC, 0, 0);
    if (r == NULL) {
        return img_state_oom(msg, msglen);
    }
    img_state_replace_take(st, r);
    st->reduced = 0;
    st->box[0] = st->box[1] = 0;
    st->box[2] = st->lw;
    st->box[3] = st->lh;
    return 0;
}
