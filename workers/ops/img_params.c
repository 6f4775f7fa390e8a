/* Image params: the rows of the op's own params and the strict parse of them, pipeline
 * steps through their classes (img_step.h) and variants through the same rows as the
 * top-level output fields. Unknown step and variant fields are errors, so that a typo is not
 * silently ignored; every error names the exact path of the bad field. */
#include "img_params.h"

#include "../../api/errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const image_formats[] = {"jpeg", "png", "webp", "same", NULL};
static const char *const image_icc_modes[] = {"srgb", "keep", "strip", NULL};
static const char *const image_outputs[] = {"inline", "path", NULL};

const struct op_param img_params_spec[] = {
    {.name = "pipeline",
     .type = OP_PARAM_ARRAY,
     .min = 0,
     .max = -1,
     .def = "[]",
     .help = "up to 32 steps {\"op\": name, ...params}, applied in order; \"steps\" in this "
             "entry lists each step with its params, their ranges and defaults"},
    {.name = "variants",
     .type = OP_PARAM_ARRAY,
     .min = 0,
     .max = -1,
     .help = "up to 16 outputs from one decode, each {\"name\":[A-Za-z0-9_-]{1,32},"
             "\"pipeline\":[...],\"format\",\"quality\",\"progressive\",\"png_level\","
             "\"lossless\"} run after the shared pipeline; the result is then "
             "{\"variants\":{name:{...}}}"},
    {.name = "format",
     .type = OP_PARAM_STRING,
     .min = 0,
     .max = -1,
     .choices = image_formats,
     .def = "\"same\"",
     .help = "output format; same = the input's; JPEG output drops alpha over white"},
    {.name = "quality",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = 100,
     .def = "85",
     .help = "JPEG and lossy WebP quality"},
    {.name = "lossless",
     .type = OP_PARAM_BOOL,
     .min = 0,
     .max = -1,
     .def = "false",
     .help = "lossless WebP (quality is then ignored)"},
    {.name = "progressive",
     .type = OP_PARAM_BOOL,
     .min = 0,
     .max = -1,
     .def = "false",
     .help = "progressive JPEG"},
    {.name = "png_level",
     .type = OP_PARAM_INT,
     .min = 0,
     .max = 9,
     .def = "3",
     .help = "zlib level; 0-3 use the SUB filter only (fast), 4-9 pick a filter per row"},
    {.name = "output",
     .type = OP_PARAM_STRING,
     .min = 0,
     .max = -1,
     .choices = image_outputs,
     .def = "\"inline\"",
     .help = "inline: {format,width,height,bytes,data:base64} (binary in a tar stream); path: the "
             "file is written under the data dir's output folder and the result is "
             "{format,width,height,bytes,path}"},
    {.name = "auto_orient",
     .type = OP_PARAM_BOOL,
     .min = 0,
     .max = -1,
     .def = "true",
     .help = "apply the JPEG EXIF orientation"},
    {.name = "exact",
     .type = OP_PARAM_BOOL,
     .min = 0,
     .max = -1,
     .def = "false",
     .help = "run the steps as written: no blur moved after a downscale, no JPEG shrink-on-load"},
    {.name = "icc",
     .type = OP_PARAM_STRING,
     .min = 0,
     .max = -1,
     .choices = image_icc_modes,
     .def = "\"srgb\"",
     .help = "an embedded ICC profile: srgb = pixels converted to sRGB (lcms2, perceptual), keep "
             "= pixels untouched and the profile embedded in the output, strip = pixels "
             "untouched, no profile; a broken profile is ignored (sRGB); CMYK inputs always "
             "come out as sRGB through their profile"},
    {.name = "keep_metadata",
     .type = OP_PARAM_BOOL,
     .min = 0,
     .max = -1,
     .def = "false",
     .help = "copy EXIF (orientation reset to 1 when applied) and XMP into the output; by "
             "default EXIF (GPS included), XMP and comments are dropped"},
    {.name = NULL},
};

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

/* Reads field ROW->name of O against ROW into *V (op_param_read: an absent field takes the
 * row's default). */
static int read_field(const json_t *o, const char *base, const struct op_param *row, double *v,
                      struct perr *e)
{
    const json_t *j = json_object_get(o, row->name);
    int rc = op_param_read(row, j, OP_PARAM_LENIENT, v, e->msg, e->msglen);
    if (rc != 0) {
        join(e->path, e->pathlen, base, row->name);
    }
    return rc;
}

/* Reads field KEY of O, when present, as the image op's own row of that name. Absent, *V is
 * left alone: a variant inherits the shared output's values, not the defaults. */
static int read_own(const json_t *o, const char *base, const char *key, double *v, struct perr *e)
{
    if (json_object_get(o, key) == NULL) {
        return 0;
    }
    return read_field(o, base, op_param_find(img_params_spec, key), v, e);
}

static int check_keys(const json_t *o, const char *base, const char *const *allowed, struct perr *e)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v)
    {
        if (op_param_choice_index(allowed, key) < 0) {
            char path[240];
            join(path, sizeof path, base, key);
            return fail(e, path, "unknown parameter %s", key);
        }
    }
    return 0;
}

/* The class of step J, or NULL after failing with the step's "op" path. */
static const struct img_step_class *step_class(const json_t *j, const char *base,
                                               enum img_step_kind *kind, struct perr *e)
{
    const json_t *op = json_object_get(j, "op");
    const struct img_step_class *c =
        json_is_string(op) ? img_step_find(json_string_value(op), kind) : NULL;
    if (c == NULL) {
        char path[240], names[200];
        join(path, sizeof path, base, "op");
        op_param_join(img_step_names(), names, sizeof names);
        fail(e, path, op == NULL ? "op is required (one of %s)" : "op must be one of %s", names);
    }
    return c;
}

static int parse_step(const json_t *j, const char *base, struct img_step *s, struct perr *e)
{
    if (!json_is_object(j)) {
        return fail(e, base, "a pipeline step must be an object with an \"op\"");
    }
    enum img_step_kind kind;
    const struct img_step_class *c = step_class(j, base, &kind, e);
    if (c == NULL) {
        return -BATCHD_E_INVALID_PARAM;
    }
    /* Unknown fields are errors: a typo must not be ignored. */
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)j, key, val)
    {
        if (strcmp(key, "op") != 0 && op_param_find(c->params, key) == NULL) {
            char path[240];
            join(path, sizeof path, base, key);
            return fail(e, path, "unknown parameter %s", key);
        }
    }
    double v[IMG_STEP_MAX_PARAMS] = {0};
    for (int i = 0; c->params[i].name != NULL; i++) {
        int rc = read_field(j, base, &c->params[i], &v[i], e);
        if (rc != 0) {
            return rc;
        }
    }
    if (c->one_of != NULL) {
        int given = 0;
        for (int i = 0; c->one_of[i] != NULL; i++) {
            given |= json_object_get(j, c->one_of[i]) != NULL;
        }
        if (!given) {
            char path[240], names[200];
            join(path, sizeof path, base, c->one_of[0]);
            return fail(e, path, "%s needs at least one of %s", c->op,
                        op_param_join(c->one_of, names, sizeof names));
        }
    }
    memset(s, 0, sizeof *s);
    s->kind = kind;
    c->store(s, v);
    return 0;
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
    /* In the order of the format row's choices. */
    static const enum img_format fmap[] = {IMG_FORMAT_JPEG, IMG_FORMAT_PNG, IMG_FORMAT_WEBP,
                                           IMG_FORMAT_SAME};
    double fmt = 3;
    for (int i = 0; i < 4; i++) {
        fmt = fmap[i] == out->format ? i : fmt;
    }
    double q = out->quality, prog = out->progressive, level = out->png_level;
    double lossless = out->lossless;
    int rc = read_own(o, base, "format", &fmt, e);
    rc = rc != 0 ? rc : read_own(o, base, "quality", &q, e);
    rc = rc != 0 ? rc : read_own(o, base, "progressive", &prog, e);
    rc = rc != 0 ? rc : read_own(o, base, "png_level", &level, e);
    rc = rc != 0 ? rc : read_own(o, base, "lossless", &lossless, e);
    if (rc != 0) {
        return rc;
    }
    out->format = fmap[(int)fmt];
    out->quality = (int)q;
    out->progressive = (int)prog;
    out->png_level = (int)level;
    out->lossless = (int)lossless;
    return 0;
}

/* Variant I of the list VS into P->variants[I] (after the shared params are parsed). */
static int parse_variant(const json_t *vs, size_t i, struct img_params *p, struct perr *e)
{
    static const char *const keys[] = {"name",        "pipeline",  "format",   "quality",
                                       "progressive", "png_level", "lossless", NULL};
    const json_t *v = json_array_get(vs, i);
    struct img_variant *var = &p->variants[i];
    char base[64], np[80];
    snprintf(base, sizeof base, "variants[%zu]", i);
    snprintf(np, sizeof np, "%s.name", base);
    if (!json_is_object(v)) {
        return fail(e, base, "a variant must be an object");
    }
    int rc = check_keys(v, base, keys, e);
    if (rc != 0) {
        return rc;
    }
    const json_t *name = json_object_get(v, "name");
    const char *s = json_is_string(name) ? json_string_value(name) : NULL;
    size_t sl = s ? strlen(s) : 0;
    if (s == NULL || sl == 0 || sl >= sizeof var->name ||
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != sl) {
        return fail(e, np, "name must be 1 to 32 characters of A-Z a-z 0-9 _ -");
    }
    for (size_t k = 0; k < i; k++) {
        if (strcmp(p->variants[k].name, s) == 0) {
            return fail(e, np, "variant name \"%s\" is used twice", s);
        }
    }
    memcpy(var->name, s, sl + 1);
    var->out = p->out;
    rc = parse_pipeline(v, base, var->steps, &var->nsteps, e);
    return rc != 0 ? rc : parse_output(v, base, &var->out, e);
}

static int parse_variants(const json_t *params, struct img_params *p, struct perr *e)
{
    const json_t *vs = json_object_get(params, "variants");
    if (vs == NULL) {
        return 0;
    }
    if (!json_is_array(vs) || json_array_size(vs) == 0) {
        return fail(e, "variants", "variants must be a non-empty array of objects");
    }
    if (json_array_size(vs) > IMG_MAX_VARIANTS) {
        return fail(e, "variants", "at most %d variants", IMG_MAX_VARIANTS);
    }
    for (size_t i = 0; i < json_array_size(vs); i++) {
        int rc = parse_variant(vs, i, p, e);
        if (rc != 0) {
            return rc;
        }
    }
    p->nvariants = (int)json_array_size(vs);
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
    double output = 0, orient = 1, exact = 0, icc = IMG_ICC_SRGB, keep_meta = 0;
    int rc = parse_pipeline(params, "", p->steps, &p->nsteps, &e);
    rc = rc != 0 ? rc : parse_output(params, "", &p->out, &e);
    rc = rc != 0 ? rc : read_own(params, "", "output", &output, &e);
    rc = rc != 0 ? rc : read_own(params, "", "auto_orient", &orient, &e);
    rc = rc != 0 ? rc : read_own(params, "", "exact", &exact, &e);
    rc = rc != 0 ? rc : read_own(params, "", "icc", &icc, &e);
    rc = rc != 0 ? rc : read_own(params, "", "keep_metadata", &keep_meta, &e);
    if (rc != 0) {
        return rc;
    }
    p->icc = (enum img_icc_mode)(int)icc;
    p->keep_metadata = (int)keep_meta;
    p->output_path = output == 1;
    p->auto_orient = (int)orient;
    p->exact = (int)exact;
    return parse_variants(params, p, &e);
}
