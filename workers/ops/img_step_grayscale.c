/* The "grayscale" step: to one channel (ITU-R 601 luma), alpha kept. */
#include "img_step.h"

static const struct op_param params[] = {
    {.name = NULL},
};

static void store(struct img_step *s, const double *v)
{
    (void)s;
    (void)v;
}

static int run(struct img_run *r, const struct img_step *s)
{
    (void)s;
    struct img *g = img_grayscale(r->st->im);
    if (g == NULL) {
        return img_state_oom(r->msg, r->msglen);
    }
    g->premultiplied = r->st->im->premultiplied && img_has_alpha(g);
    img_state_replace_take(r->st, g);
    return 0;
}

const struct img_step_class img_step_grayscale = {
    .op = "grayscale",
    .help = "to one channel (ITU-R 601 luma), alpha kept",
    .params = params,
    .flags = IMG_STEP_SHRINK_SAFE,
    .store = store,
    .run = run,
};
