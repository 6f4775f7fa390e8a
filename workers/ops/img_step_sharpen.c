/* The "sharpen" step: an unsharp mask. */
#include "img_step.h"

#include "img_blur.h"

static const struct op_param params[] = {
    {.name = "sigma",
     .type = OP_PARAM_NUMBER,
     .min = 0,
     .max = 250,
     .flags = OP_PARAM_EXCLUSIVE_MIN,
     .def = "1.0",
     .help = "the blur's standard deviation"},
    {.name = "amount",
     .type = OP_PARAM_NUMBER,
     .min = 0,
     .max = 10,
     .def = "1.0",
     .help = "strength"},
    {.name = NULL},
};

static void store(struct img_step *s, const double *v)
{
    s->sigma = v[0];
    s->amount = v[1];
}

static int run(struct img_run *r, const struct img_step *s)
{
    int rc = img_state_unreduce(r->st, r->msg, r->msglen);
    if (rc != 0) {
        return rc;
    }
    img_premultiply(r->st->im);
    if (img_sharpen(r->st->im, s->sigma, s->amount) != 0) {
        return img_state_oom(r->msg, r->msglen);
    }
    return 0;
}

const struct img_step_class img_step_sharpen = {
    .op = "sharpen",
    .help = "unsharp mask: image + amount * (image - blur(sigma))",
    .params = params,
    .store = store,
    .run = run,
};
