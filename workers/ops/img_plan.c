/* Planning (img_plan.h): the decode size and the outputs' sizes follow the steps through
 * their classes' scale and size hooks, as the runner will, without touching pixels. */
#include "img_plan.h"

#include "../../api/errors.h"

#include <stdio.h>

/* Whether the resampling step S shrinks a logical LW x LH image, and to what (*SC). */
static int step_downscale(const struct img_step *s, int lw, int lh, struct img_scale *sc)
{
    const struct img_step_class *c = img_step_class_of(s->kind);
    sc->crops = 0;
    if (c->scale == NULL || !c->scale(s, lw, lh, sc)) {
        return 0;
    }
    double bw = sc->box[2] - sc->box[0], bh = sc->box[3] - sc->box[1];
    return sc->ow <= bw && sc->oh <= bh && (sc->ow < bw || sc->oh < bh);
}

int img_plan_moves_blur(const struct img_step *steps, int i, int n, int lw, int lh)
{
    struct img_scale sc;
    return steps[i].kind == IMG_STEP_BLUR && i + 1 < n &&
           step_downscale(&steps[i + 1], lw, lh, &sc) && !sc.crops;
}

/* The plan may wait for a blur that the optimiser moves after the resampling step NEXT (any
 * but a cover cut, downscale or not: that step then decides). */
static int blur_can_wait(const struct img_step *next, int w, int h)
{
    const struct img_step_class *c = img_step_class_of(next->kind);
    struct img_scale sc = {.crops = 0};
    if (c->scale == NULL) {
        return 0;
    }
    c->scale(next, w, h, &sc);
    return !sc.crops;
}

/* The denominator the downscale S at index I allows from a logical W x H. */
static int downscale_denom(const struct img_step *steps, int i, int w, int h)
{
    struct img_scale sc;
    if (!step_downscale(&steps[i], w, h, &sc) || sc.filter == IMG_FILTER_NEAREST) {
        return 1;
    }
    double bw = sc.box[2] - sc.box[0], bh = sc.box[3] - sc.box[1];
    double gap = sc.gap;
    /* A blur moved after this step hides what a tighter decode loses (the DCT scaling's
     * softness and aliasing near Nyquist): a sigma of a pixel or more at the output size only
     * needs a decode as large as the output. */
    if (i > 0 && steps[i - 1].kind == IMG_STEP_BLUR &&
        steps[i - 1].sigma * sc.ow / bw >= IMG_BLUR_HIDES_SIGMA) {
        gap = 1.0;
    }
    double fx = bw / sc.ow / gap, fy = bh / sc.oh / gap;
    double f = fx < fy ? fx : fy;
    return f >= 8 ? 8 : f >= 4 ? 4 : f >= 2 ? 2 : 1;
}

/* The denominator a list of steps allows from a logical W x H: 0 when the list has no
 * downscale reachable through shrink-safe steps (the caller decides), else 1..8. */
static int steps_shrink(const struct img_step *steps, int n, int w, int h, int *reached)
{
    *reached = 0;
    for (int i = 0; i < n; i++) {
        const struct img_step_class *c = img_step_class_of(steps[i].kind);
        if (steps[i].kind == IMG_STEP_BLUR) {
            /* Only a blur the optimiser moves after the downscale can wait. */
            if (i + 1 < n && blur_can_wait(&steps[i + 1], w, h)) {
                continue;
            }
            return 1;
        }
        if (c->scale != NULL) {
            *reached = 1;
            return downscale_denom(steps, i, w, h);
        }
        if (!(c->flags & IMG_STEP_SHRINK_SAFE)) {
            return 1;
        }
        if (c->size != NULL) {
            c->size(&steps[i], &w, &h);
        }
    }
    return 0;
}

/* The logical size W x H after STEPS, as the runner will compute it. Returns 0, or -1 when
 * a step cannot run (a crop outside the image: the runner reports it). */
static int steps_size(const struct img_step *steps, int n, int *w, int *h)
{
    for (int i = 0; i < n; i++) {
        const struct img_step_class *c = img_step_class_of(steps[i].kind);
        struct img_scale sc;
        if (c->scale != NULL && c->scale(&steps[i], *w, *h, &sc)) {
            *w = sc.ow;
            *h = sc.oh;
        } else if (c->size != NULL && c->size(&steps[i], w, h) != 0) {
            return -1;
        }
    }
    return 0;
}

int img_params_shrink(const struct img_params *p, const struct img_header *h)
{
    if (p->exact) {
        return 1;
    }
    int w = h->width, hh = h->height;
    if (p->auto_orient && h->orientation >= 5) {
        w = h->height;
        hh = h->width;
    }
    int reached;
    int d = steps_shrink(p->steps, p->nsteps, w, hh, &reached);
    if (reached || d == 1) {
        return d < 1 ? 1 : d;
    }
    if (p->nvariants == 0) {
        return 1;
    }
    /* The shared pipeline keeps the size (it holds only shrink-safe steps): every variant must
     * allow the shrink, from the logical size the shared rotations leave. */
    steps_size(p->steps, p->nsteps, &w, &hh);
    int best = 8;
    for (int v = 0; v < p->nvariants; v++) {
        int dv = steps_shrink(p->variants[v].steps, p->variants[v].nsteps, w, hh, &reached);
        if (!reached || dv < 1) {
            return 1;
        }
        best = dv < best ? dv : best;
    }
    return best;
}

/* The largest side of each output format (libjpeg's JPEG_MAX_DIMENSION, libwebp's 16383);
 * PNG has none below the image limit. */
static int max_side(enum img_format f)
{
    return f == IMG_FORMAT_JPEG ? IMG_JPEG_MAX_SIDE : f == IMG_FORMAT_WEBP ? IMG_WEBP_MAX_SIDE : 0;
}

static int check_side(const struct img_output *o, enum img_format src, int w, int h,
                      const char *variant, char *msg, size_t msglen)
{
    enum img_format f = o->format == IMG_FORMAT_SAME ? src : o->format;
    int side = max_side(f);
    if (side == 0 || (w <= side && h <= side)) {
        return 0;
    }
    const char *name = f == IMG_FORMAT_JPEG ? "JPEG" : "WebP";
    snprintf(msg, msglen,
             "%s%.40s%sthe %s output would be %dx%d pixels; a %s is at most %d "
             "pixels on a side",
             variant ? "variant " : "", variant ? variant : "", variant ? ": " : "", name, w, h,
             name, side);
    return -BATCHD_E_TOO_LARGE;
}

int img_params_check_outputs(const struct img_params *p, const struct img_header *h,
                             enum img_format src, char *msg, size_t msglen)
{
    int w = h->width, hh = h->height;
    if (p->auto_orient && h->orientation >= 5) {
        w = h->height;
        hh = h->width;
    }
    if (steps_size(p->steps, p->nsteps, &w, &hh) != 0) {
        return 0;
    }
    if (p->nvariants == 0) {
        return check_side(&p->out, src, w, hh, NULL, msg, msglen);
    }
    for (int v = 0; v < p->nvariants; v++) {
        const struct img_variant *var = &p->variants[v];
        int vw = w, vh = hh;
        if (steps_size(var->steps, var->nsteps, &vw, &vh) != 0) {
            continue;
        }
        int rc = check_side(&var->out, src, vw, vh, var->name, msg, msglen);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}
