/* The runner (img_pipeline.h): each step through its class's run hook, except that a blur
 * right before a plain downscale runs after it, on the small image, with its sigma scaled by
 * the shrink (blur then shrink ~= shrink then blur with sigma / shrink, at a fraction of the
 * cost). */
#include "img_pipeline.h"

int img_pipeline_run(struct img_state *st, const struct img_step *steps, int n, int exact,
                     uint64_t max, char *msg, size_t msglen)
{
    struct img_run r = {
        .st = st, .exact = exact, .max_out_pixels = max, .msg = msg, .msglen = msglen};
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const struct img_step *s = &steps[i];
        r.fx = r.fy = 1.0;
        if (!exact && img_plan_moves_blur(steps, i, n, st->lw, st->lh)) {
            rc = img_step_run_scale(&r, &steps[i + 1]); /* leaves r.fx, r.fy at its factors */
            i++;
            if (rc != 0) {
                break;
            }
        }
        const struct img_step_class *c = img_step_class_of(s->kind);
        rc = c->run != NULL ? c->run(&r, s) : img_step_run_scale(&r, s);
    }
    return rc;
}
