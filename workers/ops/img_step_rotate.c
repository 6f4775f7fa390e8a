/* The "rotate" step: clockwise by a right angle. */
#include "img_step.h"

static const char *const angles[] = {"90", "180", "270", NULL};

static const struct op_param params[] = {
    {.name = "degrees",
     .type = OP_PARAM_INT,
     .min = 90,
     .max = 270,
     .choices = angles,
     .flags = OP_PARAM_REQUIRED,
     .help = "clockwise"},
    {.name = NULL},
};

static void store(struct img_step *s, const double *v)
{
    s->degrees = (int)v[0];
}

static int size(const struct img_step *s, int *w, int *h)
{
    if (s->degrees != 180) {
        int t = *w;
        *w = *h;
        *h = t;
    }
    return 0;
}

static int run(struct img_run *r, const struct img_step *s)
{
    return img_state_rotate(r->st, s->degrees, r->msg, r->msglen);
}

const struct img_step_class img_step_rotate = {
    .op = "rotate",
    .help = "rotate clockwise by a right angle",
    .params = params,
    .flags = IMG_STEP_SHRINK_SAFE,
    .store = store,
    .size = size,
    .run = run,
};
