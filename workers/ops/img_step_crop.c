/* The "crop" step: cut out a rectangle, clipped to the image; one wholly outside is an
 * invalid input. */
#include "img_step.h"

#include "../../api/errors.h"

#include <stdio.h>

static const struct op_param params[] = {
    {.name = "x",
     .type = OP_PARAM_INT,
     .min = 0,
     .max = IMG_MAX_SIDE,
     .def = "0",
     .help = "left edge"},
    {.name = "y",
     .type = OP_PARAM_INT,
     .min = 0,
     .max = IMG_MAX_SIDE,
     .def = "0",
     .help = "top edge"},
    {.name = "width",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = IMG_MAX_SIDE,
     .flags = OP_PARAM_REQUIRED,
     .help = "width in pixels"},
    {.name = "height",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = IMG_MAX_SIDE,
     .flags = OP_PARAM_REQUIRED,
     .help = "height in pixels"},
    {.name = NULL},
};

static void store(struct img_step *s, const double *v)
{
    s->x = (int)v[0];
    s->y = (int)v[1];
    s->width = (int)v[2];
    s->height = (int)v[3];
}

/* As img_crop clips. */
static int size(const struct img_step *s, int *w, int *h)
{
    long x1 = (long)s->x + s->width, y1 = (long)s->y + s->height;
    x1 = x1 > *w ? *w : x1;
    y1 = y1 > *h ? *h : y1;
    if (x1 <= s->x || y1 <= s->y) {
        return -1;
    }
    *w = (int)(x1 - s->x);
    *h = (int)(y1 - s->y);
    return 0;
}

static int run(struct img_run *r, const struct img_step *s)
{
    struct img_state *st = r->st;
    int rc = img_state_unreduce(st, r->msg, r->msglen);
    if (rc != 0) {
        return rc;
    }
    int empty;
    struct img *c = img_crop(st->im, s->x, s->y, s->width, s->height, &empty);
    if (c == NULL && empty) {
        snprintf(r->msg, r->msglen, "the crop at (%d,%d) lies outside the %dx%d image", s->x, s->y,
                 st->im->width, st->im->height);
        return -BATCHD_E_INVALID_INPUT;
    }
    if (c == NULL) {
        return img_state_oom(r->msg, r->msglen);
    }
    img_state_replace_take(st, c);
    st->lw = c->width;
    st->lh = c->height;
    st->box[2] = c->width;
    st->box[3] = c->height;
    return 0;
}

const struct img_step_class img_step_crop = {
    .op = "crop",
    .help = "cut out a rectangle, clipped to the image",
    .params = params,
    .store = store,
    .size = size,
    .run = run,
};
