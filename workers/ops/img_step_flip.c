/* The "flip" step: mirror left-right or top-bottom. */
#include "img_step.h"

static const char *const directions[] = {"horizontal", "vertical", NULL};

static const struct op_param params[] = {
    {.name = "direction",
     .type = OP_PARAM_STRING,
     .choices = directions,
     .flags = OP_PARAM_REQUIRED,
     .help = "horizontal: left-right; vertical: top-bottom"},
    {.name = NULL},
};

static void store(struct img_step *s, const double *v)
{
    s->horizontal = v[0] == 0;
}

static int run(struct img_run *r, const struct img_step *s)
{
    img_state_flip(r->st, s->horizontal);
    return 0;
}

const struct img_step_class img_step_flip = {
    .op = "flip",
    .help = "mirror the image",
    .params = params,
    .flags = IMG_STEP_SHRINK_SAFE,
    .store = store,
    .run = run,
};
