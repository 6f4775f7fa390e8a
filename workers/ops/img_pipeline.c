/* Image params and pipeline execution. Parsing is strict (unknown step fields are errors,
 * so a typo is not silently ignored) and reports the exact path of the bad field. The
 * runner tracks a shrunk-on-load image as a box inside its logical full-size picture, so
 * that output sizes are computed from the logical size, as Pillow's draft() does. */
#include "img_pipeline.h"

#include "../../api/errors.h"
#include "img_blur.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- parsing */

struct perr {
    char *msg;
    size_t msglen;
    char *path;
    size_t pathlen;
};

__attribute__((format(printf, 3, 4))) static int fail(struct perr *e, const char *path,
                                                      const char *fmt, ...)
{
    snprintf(e->path, e->pathlen, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, e->msglen, fmt, ap);
    va_end(ap);
    return -BATCHD_E_INVALID_PARAM;
}

static void join(char *out, size_t n, const char *base, const char *key)
{
    snprintf(out, n, "%.180s%s%.40s", base, base[0] ? "." : "", key);
}

/* An integer field (a JSON integer, or a real with no fraction). Absent: *V unchanged and
 * returns 0 when !REQUIRED. */
static int get_int(const json_t *o, const char *key, const char *base, long lo, long hi,
                   int required, int *v, struct perr *e)
{
    char path[240];
    join(path, sizeof path, base, key);
    const json_t *j = json_object_get(o, key);
    if (j == NULL) {
        return required ? fail(e, path, "%s is required", key) : 0;
    }
    if (json_is_integer(j)) {
        json_int_t i = json_integer_value(j);
        if (i < lo || i > hi) {
            return fail(e, path, "%s must be between %ld and %ld", key, lo, hi);
        }
        *v = (int)i;
        return 0;
    }
    if (!json_is_real(j) || json_real_value(j) != floor(json_real_value(j))) {
        return fail(e, path, "%s must be an integer", key);
    }
    double d = json_real_value(j);
    if (d < (double)lo || d > (double)hi) {
        return fail(e, path, "%s must be between %ld and %ld", key, lo, hi);
    }
    *v = (int)d;
    return 0;
}

static int get_bool(const json_t *o, const char *key, const char *base, int *v, struct perr *e)
{
    char path[240];
    join(path, sizeof path, base, key);
    const json_t *j = json_object_get(o, key);
    if (j == NULL) {
        return 0;
    }
    if (!json_is_boolean(j)) {
        return fail(e, path, "%s must be true or false", key);
    }
    *v = json_is_true(j);
    return 0;
}

/* A string field that must be one of CHOICES ("a|b|c"); *V = its index. */
static int get_choice(const json_t *o, const char *key, const char *base, const char *choices,
                      int required, int *v, struct perr *e)
{
    char path[240];
    join(path, sizeof path, base, key);
    const json_t *j = json_object_get(o, key);
    if (j == NULL) {
        return required ? fail(e, path, "%s is required (one of %s)", key, choices) : 0;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        size_t sl = strlen(s);
        int i = 0;
        for (const char *c = choices;; i++) {
            const char *bar = strchr(c, '|');
            size_t cl = bar ? (size_t)(bar - c) : strlen(c);
            if (cl == sl && memcmp(c, s, sl) == 0) {
                *v = i;
                return 0;
            }
            if (bar == NULL) {
                break;
            }
            c = bar + 1;
        }
    }
    return fail(e, path, "%s must be one of %s", key, choices);
}

static int check_keys(const json_t *o, const char *base, const char *const *allowed, struct perr *e)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a != NULL; a++) {
            if (strcmp(*a, key) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            char path[240];
            join(path, sizeof path, base, key);
            return fail(e, path, "unknown parameter %s", key);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- the steps' table */

/* Pipeline steps and their params: the one table that parsing checks against and that
 * /v1/ops describes, so the two cannot drift. A param's value is read into V[i] (a choice as
 * its index), then the step's finish() stores V into struct img_step and checks what no
 * single param can (a resize needs a width or a height). */
enum step_ptype {
    SP_INT,    /* a JSON integer (or a real with no fraction) in [min, max], or in .choices */
    SP_NUMBER, /* a JSON number in [min, max], or (min, max] with .min_open */
    SP_CHOICE, /* one of .choices ("a|b|c"); V = its index */
};

#define STEP_MAX_PARAMS 4

struct step_param {
    const char *name;
    enum step_ptype type;
    double min, max;
    int min_open;
    const char *choices; /* SP_CHOICE: the names; SP_INT: the only values allowed, or NULL */
    int required;
    int has_def;
    double def; /* SP_CHOICE: the default's index */
    const char *help;
};

struct step_desc {
    const char *op;
    enum img_step_kind kind;
    const char *help;
    struct step_param params[STEP_MAX_PARAMS + 1]; /* ends at name == NULL */
    const char *one_of; /* "a|b": at least one of these optional params must be given */
    int (*finish)(struct img_step *s, const double *v, const char *base, struct perr *e);
};

static int finish_resize(struct img_step *s, const double *v, const char *base, struct perr *e)
{
    static const enum img_filter fmap[] = {IMG_FILTER_LANCZOS3, IMG_FILTER_BILINEAR,
                                           IMG_FILTER_NEAREST};
    s->width = (int)v[0];
    s->height = (int)v[1];
    s->fit = (enum img_fit)(int)v[2];
    s->filter = fmap[(int)v[3]];
    (void)base;
    (void)e;
    return 0;
}

static int finish_thumbnail(struct img_step *s, const double *v, const char *base, struct perr *e)
{
    (void)base;
    (void)e;
    s->width = (int)v[0];
    s->height = (int)v[1];
    return 0;
}

static int finish_crop(struct img_step *s, const double *v, const char *base, struct perr *e)
{
    (void)base;
    (void)e;
    s->x = (int)v[0];
    s->y = (int)v[1];
    s->width = (int)v[2];
    s->height = (int)v[3];
    return 0;
}

static int finish_sigma(struct img_step *s, const double *v, const char *base, struct perr *e)
{
    (void)base;
    (void)e;
    s->sigma = v[0];
    s->amount = v[1];
    return 0;
}

static int finish_none(struct img_step *s, const double *v, const char *base, struct perr *e)
{
    (void)s;
    (void)v;
    (void)base;
    (void)e;
    return 0;
}

static int finish_rotate(struct img_step *s, const double *v, const char *base, struct perr *e)
{
    (void)base;
    (void)e;
    s->degrees = (int)v[0];
    return 0;
}

static int finish_flip(struct img_step *s, const double *v, const char *base, struct perr *e)
{
    (void)base;
    (void)e;
    s->horizontal = v[0] == 0;
    return 0;
}

#define SIDE_MAX ((double)IMG_MAX_PARAM_SIDE)

/* clang-format off */
static const struct step_desc step_table[] = {
    {"resize", IMG_STEP_RESIZE, "scale to width x height; one may be left out to keep the aspect", {
        {"width", SP_INT, 1, SIDE_MAX, 0, NULL, 0, 0, 0, "output width in pixels"},
        {"height", SP_INT, 1, SIDE_MAX, 0, NULL, 0, 0, 0, "output height in pixels"},
        {"fit", SP_CHOICE, 0, 0, 0, "fill|contain|cover", 0, 1, 0,
         "fill: exactly width x height, aspect not kept; contain: inside the box, aspect kept; "
         "cover: exactly width x height, aspect kept, the overflow cropped"},
        {"filter", SP_CHOICE, 0, 0, 0, "lanczos3|bilinear|nearest", 0, 1, 0, "resampling filter"},
     }, "width|height", finish_resize},
    {"thumbnail", IMG_STEP_THUMBNAIL,
     "fit inside width x height, keep the aspect, never enlarge (Pillow's Image.thumbnail)", {
        {"width", SP_INT, 1, SIDE_MAX, 0, NULL, 1, 0, 0, "box width in pixels"},
        {"height", SP_INT, 1, SIDE_MAX, 0, NULL, 1, 0, 0, "box height in pixels"},
     }, NULL, finish_thumbnail},
    {"crop", IMG_STEP_CROP, "cut out a rectangle, clipped to the image", {
        {"x", SP_INT, 0, IMG_MAX_SIDE, 0, NULL, 0, 1, 0, "left edge"},
        {"y", SP_INT, 0, IMG_MAX_SIDE, 0, NULL, 0, 1, 0, "top edge"},
        {"width", SP_INT, 1, IMG_MAX_SIDE, 0, NULL, 1, 0, 0, "width in pixels"},
        {"height", SP_INT, 1, IMG_MAX_SIDE, 0, NULL, 1, 0, 0, "height in pixels"},
     }, NULL, finish_crop},
    {"blur", IMG_STEP_BLUR, "Gaussian blur (true Gaussian, separable)", {
        {"sigma", SP_NUMBER, 0, 250, 1, NULL, 1, 0, 0,
         "standard deviation in pixels, as Pillow's GaussianBlur(radius)"},
     }, NULL, finish_sigma},
    {"sharpen", IMG_STEP_SHARPEN, "unsharp mask: image + amount * (image - blur(sigma))", {
        {"sigma", SP_NUMBER, 0, 250, 1, NULL, 0, 1, 1.0, "the blur's standard deviation"},
        {"amount", SP_NUMBER, 0, 10, 0, NULL, 0, 1, 1.0, "strength"},
     }, NULL, finish_sigma},
    {"grayscale", IMG_STEP_GRAYSCALE, "to one channel (ITU-R 601 luma), alpha kept", {{0}},
     NULL, finish_none},
    {"rotate", IMG_STEP_ROTATE, "rotate clockwise by a right angle", {
        {"degrees", SP_INT, 90, 270, 0, "90|180|270", 1, 0, 0, "clockwise"},
     }, NULL, finish_rotate},
    {"flip", IMG_STEP_FLIP, "mirror the image", {
        {"direction", SP_CHOICE, 0, 0, 0, "horizontal|vertical", 1, 0, 0,
         "horizontal: left-right; vertical: top-bottom"},
     }, NULL, finish_flip},
};
/* clang-format on */

#define STEP_N (sizeof step_table / sizeof step_table[0])

/* The index of S in the "|"-separated CHOICES, or -1. */
static int choice_index(const char *s, const char *choices)
{
    size_t sl = strlen(s);
    int i = 0;
    for (const char *c = choices;; i++) {
        const char *bar = strchr(c, '|');
        size_t cl = bar ? (size_t)(bar - c) : strlen(c);
        if (cl == sl && memcmp(c, s, sl) == 0) {
            return i;
        }
        if (bar == NULL) {
            return -1;
        }
        c = bar + 1;
    }
}

/* Reads one param of a step into *V, checked against its row. */
static int get_step_param(const json_t *o, const char *base, const struct step_param *p, double *v,
                          struct perr *e)
{
    char path[240];
    join(path, sizeof path, base, p->name);
    const json_t *j = json_object_get(o, p->name);
    if (j == NULL) {
        if (p->required) {
            return p->type == SP_CHOICE || p->choices != NULL
                       ? fail(e, path, "%s is required (one of %s)", p->name, p->choices)
                       : fail(e, path, "%s is required", p->name);
        }
        *v = p->has_def ? p->def : 0;
        return 0;
    }
    if (p->type == SP_CHOICE) {
        int i = json_is_string(j) ? choice_index(json_string_value(j), p->choices) : -1;
        if (i < 0) {
            return fail(e, path, "%s must be one of %s", p->name, p->choices);
        }
        *v = i;
        return 0;
    }
    if (!json_is_number(j)) {
        return fail(e, path, "%s must be %s", p->name,
                    p->type == SP_INT ? "an integer" : "a number");
    }
    double d = json_number_value(j);
    if (p->type == SP_INT && d != floor(d)) {
        return fail(e, path, "%s must be an integer", p->name);
    }
    if (p->type == SP_INT && p->choices != NULL) {
        char num[32];
        snprintf(num, sizeof num, "%.0f", d);
        if (d < p->min || d > p->max || choice_index(num, p->choices) < 0) {
            return fail(e, path, "%s must be one of %s", p->name, p->choices);
        }
    } else if (p->type == SP_INT && !(d >= p->min && d <= p->max)) {
        return fail(e, path, "%s must be between %.0f and %.0f", p->name, p->min, p->max);
    } else if (!(p->min_open ? d > p->min : d >= p->min) || !(d <= p->max)) {
        return fail(e, path, "%s must be %s %g and at most %g", p->name,
                    p->min_open ? "above" : "at least", p->min, p->max);
    }
    *v = d;
    return 0;
}

static int parse_step(const json_t *j, const char *base, struct img_step *s, struct perr *e)
{
    if (!json_is_object(j)) {
        return fail(e, base, "a pipeline step must be an object with an \"op\"");
    }
    const json_t *op = json_object_get(j, "op");
    const struct step_desc *d = NULL;
    for (size_t i = 0; json_is_string(op) && i < STEP_N; i++) {
        if (strcmp(step_table[i].op, json_string_value(op)) == 0) {
            d = &step_table[i];
        }
    }
    if (d == NULL) {
        char path[240];
        join(path, sizeof path, base, "op");
        return fail(e, path, "%s",
                    op == NULL ? "op is required (one of resize|thumbnail|crop|blur|sharpen|"
                                 "grayscale|rotate|flip)"
                               : "op must be one of resize|thumbnail|crop|blur|sharpen|grayscale|"
                                 "rotate|flip");
    }
    /* Unknown fields are errors: a typo must not be ignored. */
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)j, key, val)
    {
        int known = strcmp(key, "op") == 0;
        for (const struct step_param *p = d->params; !known && p->name != NULL; p++) {
            known = strcmp(p->name, key) == 0;
        }
        if (!known) {
            char path[240];
            join(path, sizeof path, base, key);
            return fail(e, path, "unknown parameter %s", key);
        }
    }
    double v[STEP_MAX_PARAMS] = {0};
    for (int i = 0; d->params[i].name != NULL; i++) {
        int rc = get_step_param(j, base, &d->params[i], &v[i], e);
        if (rc != 0) {
            return rc;
        }
    }
    if (d->one_of != NULL) {
        int given = 0;
        for (const struct step_param *p = d->params; p->name != NULL; p++) {
            given |= choice_index(p->name, d->one_of) >= 0 && json_object_get(j, p->name) != NULL;
        }
        if (!given) {
            char path[240], first[32];
            snprintf(first, sizeof first, "%.*s", (int)strcspn(d->one_of, "|"), d->one_of);
            join(path, sizeof path, base, first);
            return fail(e, path, "%s needs at least one of %s", d->op, d->one_of);
        }
    }
    memset(s, 0, sizeof *s);
    s->kind = d->kind;
    return d->finish(s, v, base, e);
}

/* One param of a step for the catalogue. Returns a new reference or NULL. */
static json_t *describe_step_param(const struct step_param *p)
{
    static const char *const types[] = {
        [SP_INT] = "integer", [SP_NUMBER] = "number", [SP_CHOICE] = "string"};
    json_t *o = json_pack("{s:s, s:s, s:b, s:s}", "name", p->name, "type", types[p->type],
                          "required", p->required, "help", p->help);
    if (o == NULL) {
        return NULL;
    }
    int rc = 0;
    if (p->type == SP_INT && p->choices == NULL) {
        rc |= json_object_set_new(o, "min", json_integer((json_int_t)p->min));
        rc |= json_object_set_new(o, "max", json_integer((json_int_t)p->max));
    } else if (p->type == SP_NUMBER) {
        rc |= json_object_set_new(o, "min", json_real(p->min));
        rc |= json_object_set_new(o, "max", json_real(p->max));
        if (p->min_open) {
            rc |= json_object_set_new(o, "exclusive_min", json_true());
        }
    }
    if (p->choices != NULL) {
        json_t *c = json_array();
        const char *s = p->choices;
        for (;;) {
            const char *bar = strchr(s, '|');
            size_t n = bar ? (size_t)(bar - s) : strlen(s);
            json_t *item = json_stringn(s, n);
            if (p->type == SP_INT) {
                json_decref(item);
                item = json_integer(strtoll(s, NULL, 10));
            }
            rc |= json_array_append_new(c, item);
            if (bar == NULL) {
                break;
            }
            s = bar + 1;
        }
        rc |= json_object_set_new(o, "choices", c);
    }
    if (p->has_def) {
        json_t *def = NULL;
        if (p->type == SP_INT) {
            def = json_integer((json_int_t)p->def);
        } else if (p->type == SP_NUMBER) {
            def = json_real(p->def);
        } else {
            const char *c = p->choices;
            for (int i = 0; i < (int)p->def && c != NULL; i++) {
                c = strchr(c, '|');
                c = c ? c + 1 : NULL;
            }
            const char *bar = c ? strchr(c, '|') : NULL;
            def = c ? json_stringn(c, bar ? (size_t)(bar - c) : strlen(c)) : json_null();
        }
        rc |= json_object_set_new(o, "default", def);
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *img_steps_describe(void)
{
    json_t *list = json_array();
    for (size_t i = 0; list != NULL && i < STEP_N; i++) {
        const struct step_desc *d = &step_table[i];
        json_t *params = json_array();
        for (const struct step_param *p = d->params; params != NULL && p->name != NULL; p++) {
            if (json_array_append_new(params, describe_step_param(p)) != 0) {
                json_decref(params);
                params = NULL;
            }
        }
        json_t *step =
            params ? json_pack("{s:s, s:s, s:o}", "op", d->op, "help", d->help, "params", params)
                   : NULL;
        if (step != NULL && d->one_of != NULL) {
            /* "width|height" -> ["width", "height"] */
            json_t *names = json_array();
            for (const char *c = d->one_of; c != NULL;) {
                size_t n = strcspn(c, "|");
                json_array_append_new(names, json_stringn(c, n));
                c = c[n] == '|' ? c + n + 1 : NULL;
            }
            json_object_set_new(step, "required_one_of", names);
        }
        if (json_array_append_new(list, step) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return list;
}

static int parse_pipeline(const json_t *o, const char *base, struct img_step *steps, int *n,
                          struct perr *e)
{
    char path[240];
    join(path, sizeof path, base, "pipeline");
    const json_t *a = json_object_get(o, "pipeline");
    *n = 0;
    if (a == NULL) {
        return 0;
    }
    if (!json_is_array(a)) {
        return fail(e, path, "pipeline must be an array of steps");
    }
    if (json_array_size(a) > IMG_MAX_STEPS) {
        return fail(e, path, "a pipeline has at most %d steps", IMG_MAX_STEPS);
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        char sp[200];
        snprintf(sp, sizeof sp, "%.170s[%zu]", path, i);
        int rc = parse_step(json_array_get(a, i), sp, &steps[i], e);
        if (rc != 0) {
            return rc;
        }
    }
    *n = (int)json_array_size(a);
    return 0;
}

static int parse_output(const json_t *o, const char *base, struct img_output *out, struct perr *e)
{
    int fmt = out->format == IMG_FORMAT_JPEG ? 0 : out->format == IMG_FORMAT_PNG ? 1 : 2, rc;
    if ((rc = get_choice(o, "format", base, "jpeg|png|same", 0, &fmt, e)) != 0 ||
        (rc = get_int(o, "quality", base, 1, 100, 0, &out->quality, e)) != 0 ||
        (rc = get_bool(o, "progressive", base, &out->progressive, e)) != 0 ||
        (rc = get_int(o, "png_level", base, 0, 9, 0, &out->png_level, e)) != 0) {
        return rc;
    }
    static const enum img_format fmap[] = {IMG_FORMAT_JPEG, IMG_FORMAT_PNG, IMG_FORMAT_SAME};
    out->format = fmap[fmt];
    return 0;
}

int img_params_parse(const json_t *params, struct img_params *p, char *msg, size_t msglen,
                     char *path, size_t pathlen)
{
    struct perr e = {msg, msglen, path, pathlen};
    memset(p, 0, sizeof *p);
    p->out.format = IMG_FORMAT_SAME;
    p->out.quality = 85;
    p->out.png_level = 3;
    p->auto_orient = 1;
    if (params == NULL || json_is_null(params)) {
        return 0;
    }
    if (!json_is_object(params)) {
        return fail(&e, "", "params must be an object");
    }
    int rc, output = 0;
    if ((rc = parse_pipeline(params, "", p->steps, &p->nsteps, &e)) != 0 ||
        (rc = parse_output(params, "", &p->out, &e)) != 0 ||
        (rc = get_choice(params, "output", "", "inline|path", 0, &output, &e)) != 0 ||
        (rc = get_bool(params, "auto_orient", "", &p->auto_orient, &e)) != 0 ||
        (rc = get_bool(params, "exact", "", &p->exact, &e)) != 0) {
        return rc;
    }
    p->output_path = output == 1;
    const json_t *vs = json_object_get(params, "variants");
    if (vs == NULL) {
        return 0;
    }
    if (!json_is_array(vs) || json_array_size(vs) == 0) {
        return fail(&e, "variants", "variants must be a non-empty array of objects");
    }
    if (json_array_size(vs) > IMG_MAX_VARIANTS) {
        return fail(&e, "variants", "at most %d variants", IMG_MAX_VARIANTS);
    }
    for (size_t i = 0; i < json_array_size(vs); i++) {
        const json_t *v = json_array_get(vs, i);
        struct img_variant *var = &p->variants[i];
        char base[64], np[80];
        snprintf(base, sizeof base, "variants[%zu]", i);
        snprintf(np, sizeof np, "%s.name", base);
        if (!json_is_object(v)) {
            return fail(&e, base, "a variant must be an object");
        }
        static const char *const k[] = {"name",        "pipeline",  "format", "quality",
                                        "progressive", "png_level", NULL};
        if ((rc = check_keys(v, base, k, &e)) != 0) {
            return rc;
        }
        const json_t *name = json_object_get(v, "name");
        const char *s = json_is_string(name) ? json_string_value(name) : NULL;
        size_t sl = s ? strlen(s) : 0;
        if (s == NULL || sl == 0 || sl >= sizeof var->name ||
            strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != sl) {
            return fail(&e, np, "name must be 1 to 32 characters of A-Z a-z 0-9 _ -");
        }
        for (size_t k2 = 0; k2 < i; k2++) {
            if (strcmp(p->variants[k2].name, s) == 0) {
                return fail(&e, np, "variant name \"%s\" is used twice", s);
            }
        }
        memcpy(var->name, s, sl + 1);
        var->out = p->out;
        if ((rc = parse_pipeline(v, base, var->steps, &var->nsteps, &e)) != 0 ||
            (rc = parse_output(v, base, &var->out, &e)) != 0) {
            return rc;
        }
    }
    p->nvariants = (int)json_array_size(vs);
    return 0;
}

/* ---------------------------------------------------------------- planning */

/* Whether a resize/thumbnail step shrinks an image of logical size LW x LH, and to what. */
static int step_downscale(const struct img_step *s, int lw, int lh, int *ow, int *oh, double box[4])
{
    if (s->kind == IMG_STEP_THUMBNAIL) {
        box[0] = 0;
        box[1] = 0;
        box[2] = lw;
        box[3] = lh;
        if (!img_thumbnail_size(lw, lh, s->width, s->height, ow, oh)) {
            return 0;
        }
    } else if (s->kind == IMG_STEP_RESIZE) {
        img_resize_plan(lw, lh, s->width, s->height, s->fit, ow, oh, box);
    } else {
        return 0;
    }
    return *ow <= box[2] - box[0] && *oh <= box[3] - box[1] &&
           (*ow < box[2] - box[0] || *oh < box[3] - box[1]);
}

/* The denominator a list of steps allows from a logical W x H: 0 when the list has no
 * downscale reachable through shrink-safe steps (the caller decides), else 1..8. */
static int steps_shrink(const struct img_step *steps, int n, int w, int h, int *reached)
{
    *reached = 0;
    for (int i = 0; i < n; i++) {
        const struct img_step *s = &steps[i];
        int ow, oh;
        double box[4];
        switch (s->kind) {
        case IMG_STEP_GRAYSCALE:
        case IMG_STEP_FLIP:
            continue;
        case IMG_STEP_ROTATE:
            if (s->degrees != 180) {
                int t = w;
                w = h;
                h = t;
            }
            continue;
        case IMG_STEP_BLUR:
            /* Only a blur the optimiser moves after the downscale can wait. */
            if (i + 1 < n &&
                (steps[i + 1].kind == IMG_STEP_THUMBNAIL ||
                 (steps[i + 1].kind == IMG_STEP_RESIZE && steps[i + 1].fit != IMG_FIT_COVER))) {
                continue;
            }
            return 1;
        case IMG_STEP_THUMBNAIL:
        case IMG_STEP_RESIZE: {
            *reached = 1;
            if (!step_downscale(s, w, h, &ow, &oh, box) ||
                (s->kind == IMG_STEP_RESIZE && s->filter == IMG_FILTER_NEAREST)) {
                return 1;
            }
            double gap = s->kind == IMG_STEP_THUMBNAIL ? IMG_GAP_THUMBNAIL : IMG_GAP_RESIZE;
            /* A blur moved after this step hides what a tighter decode loses (the DCT
             * scaling's softness and aliasing near Nyquist): a sigma of a pixel or more at
             * the output size only needs a decode as large as the output. */
            if (i > 0 && steps[i - 1].kind == IMG_STEP_BLUR &&
                steps[i - 1].sigma * ow / (box[2] - box[0]) >= IMG_BLUR_HIDES_SIGMA) {
                gap = 1.0;
            }
            double fx = (box[2] - box[0]) / ow / gap, fy = (box[3] - box[1]) / oh / gap;
            double f = fx < fy ? fx : fy;
            return f >= 8 ? 8 : f >= 4 ? 4 : f >= 2 ? 2 : 1;
        }
        default:
            return 1;
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
    /* The shared pipeline keeps the size: every variant must allow the shrink. Rotations in
     * the shared pipeline change the logical size the variants see. */
    for (int i = 0; i < p->nsteps; i++) {
        if (p->steps[i].kind == IMG_STEP_ROTATE && p->steps[i].degrees != 180) {
            int t = w;
            w = hh;
            hh = t;
        }
    }
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

/* The logical size W x H after STEPS, as the runner will compute it. Returns 0, or -1 when
 * a step cannot run (a crop outside the image: the runner reports it). */
static int steps_size(const struct img_step *steps, int n, int *w, int *h)
{
    for (int i = 0; i < n; i++) {
        const struct img_step *s = &steps[i];
        int ow = *w, oh = *h;
        double box[4];
        switch (s->kind) {
        case IMG_STEP_RESIZE:
            img_resize_plan(*w, *h, s->width, s->height, s->fit, &ow, &oh, box);
            break;
        case IMG_STEP_THUMBNAIL:
            img_thumbnail_size(*w, *h, s->width, s->height, &ow, &oh);
            break;
        case IMG_STEP_CROP: {
            long x0 = s->x, y0 = s->y;
            long x1 = (long)s->x + s->width, y1 = (long)s->y + s->height;
            x1 = x1 > *w ? *w : x1;
            y1 = y1 > *h ? *h : y1;
            if (x1 <= x0 || y1 <= y0) {
                return -1;
            }
            ow = (int)(x1 - x0);
            oh = (int)(y1 - y0);
            break;
        }
        case IMG_STEP_ROTATE:
            if (s->degrees != 180) {
                ow = *h;
                oh = *w;
            }
            break;
        default:
            break;
        }
        *w = ow;
        *h = oh;
    }
    return 0;
}

static int check_jpeg_side(const struct img_output *o, int src_jpeg, int w, int h,
                           const char *variant, char *msg, size_t msglen)
{
    int jpeg = o->format == IMG_FORMAT_JPEG || (o->format == IMG_FORMAT_SAME && src_jpeg);
    if (!jpeg || (w <= IMG_JPEG_MAX_SIDE && h <= IMG_JPEG_MAX_SIDE)) {
        return 0;
    }
    snprintf(msg, msglen,
             "%s%.40s%sthe JPEG output would be %dx%d pixels; a JPEG is at most %d "
             "pixels on a side",
             variant ? "variant " : "", variant ? variant : "", variant ? ": " : "", w, h,
             IMG_JPEG_MAX_SIDE);
    return -BATCHD_E_TOO_LARGE;
}

int img_params_check_outputs(const struct img_params *p, const struct img_header *h, int src_jpeg,
                             char *msg, size_t msglen)
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
        return check_jpeg_side(&p->out, src_jpeg, w, hh, NULL, msg, msglen);
    }
    for (int v = 0; v < p->nvariants; v++) {
        const struct img_variant *var = &p->variants[v];
        int vw = w, vh = hh;
        if (steps_size(var->steps, var->nsteps, &vw, &vh) != 0) {
            continue;
        }
        int rc = check_jpeg_side(&var->out, src_jpeg, vw, vh, var->name, msg, msglen);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- running */

void img_state_cleanup(struct img_state *st)
{
    img_destroy(st->im);
    st->im = NULL;
}

int img_state_copy(struct img_state *dst, const struct img_state *src)
{
    *dst = *src;
    dst->im = img_convert(src->im, src->im->channels);
    if (dst->im == NULL) {
        return -1;
    }
    dst->im->premultiplied = src->im->premultiplied;
    return 0;
}

static int oom(char *msg, size_t msglen)
{
    snprintf(msg, msglen, "out of memory");
    return -BATCHD_E_TOO_LARGE;
}

static void st_replace(struct img_state *st, struct img *im)
{
    img_destroy(st->im);
    st->im = im;
}

static int st_flip(struct img_state *st, int horizontal)
{
    img_flip(st->im, horizontal);
    double *b = st->box;
    if (horizontal) {
        double x0 = st->im->width - b[2], x1 = st->im->width - b[0];
        b[0] = x0;
        b[2] = x1;
    } else {
        double y0 = st->im->height - b[3], y1 = st->im->height - b[1];
        b[1] = y0;
        b[3] = y1;
    }
    return 0;
}

static int st_rotate(struct img_state *st, int degrees, char *msg, size_t msglen)
{
    int w = st->im->width, h = st->im->height;
    struct img *r = img_rotate(st->im, degrees);
    if (r == NULL) {
        return oom(msg, msglen);
    }
    st_replace(st, r);
    double *b = st->box, nb[4];
    if (degrees == 90) { /* (x, y) -> (h - y, x) */
        nb[0] = h - b[3];
        nb[1] = b[0];
        nb[2] = h - b[1];
        nb[3] = b[2];
    } else if (degrees == 270) { /* (x, y) -> (y, w - x) */
        nb[0] = b[1];
        nb[1] = w - b[2];
        nb[2] = b[3];
        nb[3] = w - b[0];
    } else {
        nb[0] = w - b[2];
        nb[1] = h - b[3];
        nb[2] = w - b[0];
        nb[3] = h - b[1];
    }
    memcpy(b, nb, sizeof nb);
    if (degrees != 180) {
        int t = st->lw;
        st->lw = st->lh;
        st->lh = t;
    }
    return 0;
}

int img_state_init_take(struct img_state *st, struct img *im, int w, int h, int denom,
                        int orientation, char *msg, size_t msglen)
{
    st->im = im;
    st->lw = w;
    st->lh = h;
    st->box[0] = 0;
    st->box[1] = 0;
    /* A decode at 1/DENOM is ceil(w / denom) wide: its last column stands for less than
     * a whole block, so the logical image ends at w / denom (Pillow's draft box). */
    st->box[2] = (double)w / denom;
    st->box[3] = (double)h / denom;
    st->reduced = im->width != w || im->height != h;
    int rc = 0;
    switch (orientation) {
    case 2:
        rc = st_flip(st, 1);
        break;
    case 3:
        rc = st_rotate(st, 180, msg, msglen);
        break;
    case 4:
        rc = st_flip(st, 0);
        break;
    case 5:
        if ((rc = st_rotate(st, 90, msg, msglen)) == 0) {
            rc = st_flip(st, 1);
        }
        break;
    case 6:
        rc = st_rotate(st, 90, msg, msglen);
        break;
    case 7:
        if ((rc = st_rotate(st, 270, msg, msglen)) == 0) {
            rc = st_flip(st, 1);
        }
        break;
    case 8:
        rc = st_rotate(st, 270, msg, msglen);
        break;
    default:
        break;
    }
    return rc;
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

int img_state_unreduce(struct img_state *st, char *msg, size_t msglen)
{
    if (!st->reduced) {
        return 0;
    }
    img_premultiply(st->im);
    struct img *r = img_resize(st->im, st->box, st->lw, st->lh, IMG_FILTER_BICUBIC, 0, 0);
    if (r == NULL) {
        return oom(msg, msglen);
    }
    st_replace(st, r);
    st->reduced = 0;
    st->box[0] = st->box[1] = 0;
    st->box[2] = st->lw;
    st->box[3] = st->lh;
    return 0;
}

/* Runs a resize or thumbnail step. Returns 0 (with *SX, *SY the shrink factors, output over
 * logical input, for a deferred blur) or an error. */
static int run_scale(struct img_state *st, const struct img_step *s, int exact, uint64_t max,
                     double *fx, double *fy, char *msg, size_t msglen)
{
    int ow, oh;
    double lbox[4];
    enum img_filter filter;
    double gap;
    *fx = *fy = 1.0;
    if (s->kind == IMG_STEP_THUMBNAIL) {
        lbox[0] = lbox[1] = 0;
        lbox[2] = st->lw;
        lbox[3] = st->lh;
        if (!img_thumbnail_size(st->lw, st->lh, s->width, s->height, &ow, &oh)) {
            return img_state_unreduce(st, msg, msglen); /* fits already: Pillow keeps it */
        }
        filter = IMG_FILTER_BICUBIC;
        gap = IMG_GAP_THUMBNAIL;
    } else {
        img_resize_plan(st->lw, st->lh, s->width, s->height, s->fit, &ow, &oh, lbox);
        filter = s->filter;
        gap = exact ? 0 : IMG_GAP_RESIZE;
    }
    int rc = check_out(ow, oh, max, msg, msglen);
    if (rc != 0) {
        return rc;
    }
    /* Logical coordinates to the (maybe shrunk) image's. */
    double kx = (st->box[2] - st->box[0]) / st->lw, ky = (st->box[3] - st->box[1]) / st->lh;
    double box[4] = {st->box[0] + lbox[0] * kx, st->box[1] + lbox[1] * ky,
                     st->box[0] + lbox[2] * kx, st->box[1] + lbox[3] * ky};
    img_premultiply(st->im);
    struct img *r = img_resize(st->im, box, ow, oh, filter, gap, exact);
    if (r == NULL) {
        return oom(msg, msglen);
    }
    *fx = (lbox[2] - lbox[0]) / ow;
    *fy = (lbox[3] - lbox[1]) / oh;
    st_replace(st, r);
    st->reduced = 0;
    st->lw = ow;
    st->lh = oh;
    st->box[0] = st->box[1] = 0;
    st->box[2] = ow;
    st->box[3] = oh;
    return 0;
}

static int is_plain_downscale(const struct img_state *st, const struct img_step *s)
{
    int ow, oh;
    double box[4];
    if (s->kind == IMG_STEP_RESIZE && s->fit == IMG_FIT_COVER) {
        return 0;
    }
    return step_downscale(s, st->lw, st->lh, &ow, &oh, box);
}

int img_pipeline_run(struct img_state *st, const struct img_step *steps, int n, int exact,
                     uint64_t max, char *msg, size_t msglen)
{
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const struct img_step *s = &steps[i];
        double fx, fy;
        struct img *r = NULL;
        switch (s->kind) {
        case IMG_STEP_THUMBNAIL:
        case IMG_STEP_RESIZE:
            rc = run_scale(st, s, exact, max, &fx, &fy, msg, msglen);
            break;
        case IMG_STEP_BLUR:
            if (!exact && i + 1 < n && is_plain_downscale(st, &steps[i + 1])) {
                /* Blur then shrink ~= shrink then blur with sigma / shrink, at a fraction of
                 * the cost: the blur runs on the small image. */
                rc = run_scale(st, &steps[i + 1], exact, max, &fx, &fy, msg, msglen);
                i++;
                if (rc == 0 && img_blur(st->im, s->sigma / fx, s->sigma / fy) != 0) {
                    rc = oom(msg, msglen);
                }
                break;
            }
            if ((rc = img_state_unreduce(st, msg, msglen)) != 0) {
                break;
            }
            img_premultiply(st->im);
            if (img_blur(st->im, s->sigma, s->sigma) != 0) {
                rc = oom(msg, msglen);
            }
            break;
        case IMG_STEP_SHARPEN:
            if ((rc = img_state_unreduce(st, msg, msglen)) != 0) {
                break;
            }
            img_premultiply(st->im);
            if (img_sharpen(st->im, s->sigma, s->amount) != 0) {
                rc = oom(msg, msglen);
            }
            break;
        case IMG_STEP_CROP: {
            if ((rc = img_state_unreduce(st, msg, msglen)) != 0) {
                break;
            }
            int empty;
            r = img_crop(st->im, s->x, s->y, s->width, s->height, &empty);
            if (r == NULL) {
                if (empty) {
                    snprintf(msg, msglen, "the crop at (%d,%d) lies outside the %dx%d image", s->x,
                             s->y, st->im->width, st->im->height);
                    rc = -BATCHD_E_INVALID_INPUT;
                } else {
                    rc = oom(msg, msglen);
                }
                break;
            }
            st_replace(st, r);
            st->lw = r->width;
            st->lh = r->height;
            st->box[2] = r->width;
            st->box[3] = r->height;
            break;
        }
        case IMG_STEP_GRAYSCALE:
            r = img_grayscale(st->im);
            if (r == NULL) {
                rc = oom(msg, msglen);
                break;
            }
            r->premultiplied = st->im->premultiplied && img_has_alpha(r);
            st_replace(st, r);
            break;
        case IMG_STEP_ROTATE:
            rc = st_rotate(st, s->degrees, msg, msglen);
            break;
        case IMG_STEP_FLIP:
            rc = st_flip(st, s->horizontal);
            break;
        }
    }
    return rc;
}
