/* The table of pipeline steps (IMG_STEP_LIST in img_step.h), their lookup and catalogue, and
 * the run of a resampling step that resize and thumbnail share. */
#include "img_step.h"

#include "../../api/errors.h"

#include <stdio.h>
#include <string.h>

/* Indexed by enum img_step_kind: the X-macro keeps the two in the same order. */
static const struct img_step_class *const steps[] = {
#define XX(e, name) [IMG_STEP_##e] = &img_step_##name,
    IMG_STEP_LIST(XX)
#undef XX
};

static const char *const names[] = {
#define XX(e, name) #name,
    IMG_STEP_LIST(XX)
#undef XX
        NULL,
};

const struct img_step_class *img_step_class_of(enum img_step_kind kind)
{
    return steps[kind];
}

const struct img_step_class *img_step_find(const char *op, enum img_step_kind *kind)
{
    for (int i = 0; i < IMG_STEP_COUNT; i++) {
        if (strcmp(steps[i]->op, op) == 0) {
            *kind = (enum img_step_kind)i;
            return steps[i];
        }
    }
    return NULL;
}

const char *const *img_step_names(void)
{
    return names;
}

/* One step for the catalogue. Returns a new reference or NULL. */
static json_t *describe_step(const struct img_step_class *c)
{
    json_t *params = json_array();
    for (const struct op_param *p = c->params; params != NULL && p->name != NULL; p++) {
        if (json_array_append_new(params, op_param_describe(p, 1)) != 0) {
            json_decref(params);
            params = NULL;
        }
    }
    json_t *step =
        params ? json_pack("{s:s, s:s, s:o}", "op", c->op, "help", c->help, "params", params)
               : NULL;
    if (step != NULL && c->one_of != NULL) {
        json_t *list = json_array();
        int rc = list == NULL;
        for (int i = 0; rc == 0 && c->one_of[i] != NULL; i++) {
            rc = json_array_append_new(list, json_string(c->one_of[i]));
        }
        if (rc != 0 || json_object_set_new(step, "required_one_of", list) != 0) {
            json_decref(step);
            step = NULL;
        }
    }
    return step;
}

json_t *img_steps_describe(void)
{
    json_t *list = json_array();
    for (int i = 0; list != NULL && i < IMG_STEP_COUNT; i++) {
        if (json_array_append_new(list, describe_step(steps[i])) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return list;
}

static int check_out(int w, int h, uint64_t max, char *msg, size_t msglen)
{
    if ((uint64_t)w * (uint64_t)h > max) {
        snprintf(msg, msglen, "the output would be %dx%d pixels, more than the limit of %llu", w, h,
                 (unsigned long long)max);
        return -BATCHD_E_TOO_LARGE;
    }
    return 0;
}

int img_step_run_scale(struct img_run *r, const struct img_step *s)
{
    struct img_state *st = r->st;
    struct img_scale sc;
    r->fx = r->fy = 1.0;
    if (!img_step_class_of(s->kind)->scale(s, st->lw, st->lh, &sc)) {
        return img_state_unreduce(st, r->msg, r->msglen); /* fits already: Pillow keeps it */
    }
    int rc = check_out(sc.ow, sc.oh, r->max_out_pixels, r->msg, r->msglen);
    if (rc != 0) {
        return rc;
    }
    double gap = sc.gap_always || !r->exact ? sc.gap : 0;
    /* Logical coordinates to the (maybe shrunk) image's. */
    double kx = (st->box[2] - st->box[0]) / st->lw, ky = (st->box[3] - st->box[1]) / st->lh;
    double box[4] = {st->box[0] + sc.box[0] * kx, st->box[1] + sc.box[1] * ky,
                     st->box[0] + sc.box[2] * kx, st->box[1] + sc.box[3] * ky};
    img_premultiply(st->im);
    struct img *im = img_resize(st->im, box, sc.ow, sc.oh, sc.filter, gap, r->exact);
    if (im == NULL) {
        return img_state_oom(r->msg, r->msglen);
    }
    r->fx = (sc.box[2] - sc.box[0]) / sc.ow;
    r->fy = (sc.box[3] - sc.box[1]) / sc.oh;
    img_state_replace_take(st, im);
    st->reduced = 0;
    st->lw = sc.ow;
    st->lh = sc.oh;
    st->box[0] = st->box[1] = 0;
    st->box[2] = sc.ow;
    st->box[3] = sc.oh;
    return 0;
}
