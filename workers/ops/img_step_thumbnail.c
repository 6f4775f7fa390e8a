/* The "thumbnail" step: fit inside a box, keep the aspect, never enlarge (Pillow's
 * Image.thumbnail, its sizes and its bicubic filter). */
#include "img_step.h"

static const struct op_param params[] = {
    {.name = "width",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = IMG_MAX_PARAM_SIDE,
     .flags = OP_PARAM_REQUIRED,
     .help = "box width in pixels"},
    {.name = "height",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = IMG_MAX_PARAM_SIDE,
     .flags = OP_PARAM_REQUIRED,
     .help = "box height in pixels"},
    {.name = NULL},
};

static void store(struct img_step *s, const double *v)
{
    s->width = (int)v[0];
    s->height = (int)v[1];
}

static int scale(const struct img_step *s, int w, int h, struct img_scale *sc)
{
    sc->box[0] = 0;
    sc->box[1] = 0;
    sc->box[2] = w;
    sc->box[3] = h;
    sc->filter = IMG_FILTER_BICUBIC;
    sc->gap = IMG_GAP_THUMBNAIL;
    sc->gap_always = 1; /* Pillow's reducing gap, exact or not */
    sc->crops = 0;
    return img_thumbnail_size(w, h, s->width, s->height, &sc->ow, &sc->oh);
}

const struct img_step_class img_step_thumbnail = {
    .op = "thumbnail",
    .help = "fit inside width x height, keep the aspect, never enlarge (Pillow's Image.thumbnail)",
    .params = params,
    .store = store,
    .scale = scale,
};
