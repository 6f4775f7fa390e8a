/* The "resize" step: scale to width x height, one of them left out to keep the aspect, with
 * a fit (fill, contain, cover) and a filter. */
#include "img_step.h"

static const char *const fits[] = {"fill", "contain", "cover", NULL};
static const char *const filters[] = {"lanczos3", "bilinear", "nearest", NULL};
static const char *const one_of[] = {"width", "height", NULL};

static const struct op_param params[] = {
    {.name = "width",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = IMG_MAX_PARAM_SIDE,
     .help = "output width in pixels"},
    {.name = "height",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = IMG_MAX_PARAM_SIDE,
     .help = "output height in pixels"},
    {.name = "fit",
     .type = OP_PARAM_STRING,
     .choices = fits,
     .def = "\"fill\"",
     .help = "fill: exactly width x height, aspect not kept; contain: inside the box, aspect "
             "kept; cover: exactly width x height, aspect kept, the overflow cropped"},
    {.name = "filter",
     .type = OP_PARAM_STRING,
     .choices = filters,
     .def = "\"lanczos3\"",
     .help = "resampling filter"},
    {.name = NULL},
};

static void store(struct img_step *s, const double *v)
{
    /* In the order of the choices above. */
    static const enum img_fit fit[] = {IMG_FIT_FILL, IMG_FIT_CONTAIN, IMG_FIT_COVER};
    static const enum img_filter filter[] = {IMG_FILTER_LANCZOS3, IMG_FILTER_BILINEAR,
                                             IMG_FILTER_NEAREST};
    s->width = (int)v[0];
    s->height = (int)v[1];
    s->fit = fit[(int)v[2]];
    s->filter = filter[(int)v[3]];
}

static int scale(const struct img_step *s, int w, int h, struct img_scale *sc)
{
    img_resize_plan(w, h, s->width, s->height, s->fit, &sc->ow, &sc->oh, sc->box);
    sc->filter = s->filter;
    sc->gap = IMG_GAP_RESIZE;
    sc->gap_always = 0;
    sc->crops = s->fit == IMG_FIT_COVER;
    return 1;
}

const struct img_step_class img_step_resize = {
    .op = "resize",
    .help = "scale to width x height; one may be left out to keep the aspect",
    .params = params,
    .one_of = one_of,
    .store = store,
    .scale = scale,
};
