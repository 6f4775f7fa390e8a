/* The "blur" step: a true Gaussian blur. The optimiser (img_plan.c) may move it after the
 * downscale that follows it; it then runs with its sigma scaled by that downscale. */
#include "img_step.h"

#include "img_blur.h"

static const struct op_param params[] = {
    {.name = "sigma",
     .type = OP_PARAM_NUMBER,
     .min = 0,
     .max = 250,
     .flags = OP_PARAM_REQUIRED | OP_PARAM_EXCLUSIVE_MIN,
     .help = "standard deviation in pixels, as Pillow's GaussianBlur(radius)"},
    {.name = NULL},
};

static void store(struct img_step *s, const double *v)
{
    s->sigma = v[0];
}

static int run(struct img_run *r, const struct img_step *s)
{
    int rc = img_state_unreduce(r->st, r->msg, r->msglen);
    if (rc != 0) {
        return rc;
    }
    img_premultiply(r->st->im);
    if (img_blur(r->st->im, s->sigma / r->fx, s->sigma / r->fy) != 0) {
        return img_state_oom(r->msg, r->msglen);
    }
    return 0;
}

const struct img_step_class img_step_blur = {
    .op = "blur",
    .help = "Gaussian blur (true Gaussian, separable)",
    .params = params,
    .store = store,
    .run = run,
};
