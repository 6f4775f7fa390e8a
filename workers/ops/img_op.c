/* The "image" op (SPEC §6): its descriptor, params validation and catalogue entry, and the
 * run: decode the input once (shrunk on load when the pipeline allows), run the shared
 * pipeline and each variant, and hand each image to img_output.c. Reading the input is
 * img_input.c's; encoding and writing files img_output.c's. */
#include "internal.h"

#include "../../api/errors.h"
#include "../../api/jsonw.h"
#include "../../api/outname.h"
#include "img_icc.h"
#include "img_input.h"
#include "img_jpeg.h"
#include "img_meta.h"
#include "img_output.h"
#include "img_pipeline.h"
#include "img_png.h"
#include "img_webp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMG_DEFAULT_MAX_PIXELS 100000000ull
#define IMG_DECODER_MEMORY (1024ull * 1024 * 1024)
#define IMG_MAX_SCANS 100

/* The job's limits (job_input.limits), 0 or none meaning the default. */
struct img_limits {
    uint64_t max_input_pixels;
    uint64_t max_output_pixels;
};

static uint64_t limit_or_default(uint64_t v)
{
    return v != 0 ? v : IMG_DEFAULT_MAX_PIXELS;
}

static void limits_of(const struct job_input *in, struct img_limits *l)
{
    const struct job_limits *j = in->limits;
    l->max_input_pixels = limit_or_default(j != NULL ? j->max_input_pixels : 0);
    l->max_output_pixels = limit_or_default(j != NULL ? j->max_output_pixels : 0);
}

/* ---------------------------------------------------------------- run */

struct pick_ctx {
    const struct img_params *p;
    enum img_format src;
    int denom;
};

/* The plan, once the header is known: refuse outputs that cannot be made, before any pixel
 * is, and pick the shrink-on-load factor. */
static int pick_scale(void *ctx, const struct img_header *h, char *msg, size_t msglen)
{
    struct pick_ctx *c = ctx;
    int rc = img_params_check_outputs(c->p, h, c->src, msg, msglen);
    if (rc != 0) {
        return rc;
    }
    c->denom = img_params_shrink(c->p, h);
    return c->denom;
}

typedef int (*decode_fn)(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                         struct img_header *hdr, struct img **out, char *msg, size_t msglen);

static const decode_fn decoders[] = {[IMG_FORMAT_JPEG] = img_jpeg_decode,
                                     [IMG_FORMAT_PNG] = img_png_decode,
                                     [IMG_FORMAT_WEBP] = img_webp_decode};

/* 1 when a step of P's shared pipeline or of a variant needs the colours in sRGB before it
 * runs: grayscale (a gray image has no RGB profile any more), and blur and sharpen, which mix
 * pixels far enough apart that filtering in a strongly non-linear space (an HLG or ProPhoto
 * profile) and converting afterwards shows (a blur(15) of hdr_room.png: 38 dB). Resampling,
 * crops, rotations and flips commute with the conversion within the quality bar. */
static int needs_srgb_first(const struct img_params *p)
{
    int g = 0;
    for (int v = -1; v < p->nvariants; v++) {
        const struct img_step *steps = v < 0 ? p->steps : p->variants[v].steps;
        int n = v < 0 ? p->nsteps : p->variants[v].nsteps;
        for (int i = 0; i < n; i++) {
            enum img_step_kind k = steps[i].kind;
            g |= k == IMG_STEP_GRAYSCALE || k == IMG_STEP_BLUR || k == IMG_STEP_SHARPEN;
        }
    }
    return g;
}

/* Parses the params into P; an output "path" needs an output dir. */
static int image_parse(const struct job_input *in, struct img_params *p, char *msg, size_t msglen)
{
    char pathbuf[128];
    int rc = img_params_parse(in->params, p, msg, msglen, pathbuf, sizeof pathbuf);
    if (rc != 0) {
        char m[256]; /* a copy of MSG (job_output.message) */
        snprintf(m, sizeof m, "%s", msg);
        snprintf(msg, msglen, "params.%.100s: %.140s", pathbuf, m);
        return -BATCHD_E_INVALID_INPUT;
    }
    if (p->output_path && in->output_dir == NULL) {
        snprintf(msg, msglen, "output \"path\" needs the server's --data-dir");
        return -BATCHD_E_INVALID_INPUT;
    }
    return 0;
}

/* Reads and decodes the input into ST (initialised here), its metadata into META, and sets
 * OC for the outputs. *REL_PATH: as img_input_load. The input's bytes are freed before it
 * returns, so before the pipeline's big buffers. */
static int image_decode(const struct job_input *in, const struct img_params *p,
                        const struct img_limits *lim, struct img_meta *meta, struct img_state *st,
                        struct img_output_ctx *oc, const char **rel_path, char *msg, size_t msglen)
{
    struct buf data;
    struct img *im = NULL;
    const uint8_t *bytes;
    size_t nbytes;
    enum img_format src;
    buf_init(&data, IMG_MAX_FILE_BYTES);
    int rc = img_input_load(in, &data, &bytes, &nbytes, rel_path, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    rc = img_input_sniff(bytes, nbytes, &src, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    struct pick_ctx pc = {p, src, 1};
    struct img_decode_opts opts = {
        .max_pixels = lim->max_input_pixels,
        .max_memory = IMG_DECODER_MEMORY,
        .max_scans = IMG_MAX_SCANS,
        .pick_scale = pick_scale,
        .ctx = &pc,
        .meta = meta,
        .want =
            (p->icc != IMG_ICC_STRIP ? IMG_WANT_ICC : 0) | (p->keep_metadata ? IMG_WANT_META : 0),
    };
    struct img_header hdr = {0};
    rc = decoders[src](bytes, nbytes, &opts, &hdr, &im, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    buf_cleanup(&data);
    int orientation = p->auto_orient ? hdr.orientation : 1;
    if (orientation != 1 && meta->exif != NULL) {
        img_exif_reset_orientation(meta->exif, meta->exif_len); /* applied below */
    }
    /* To sRGB: at each output's size (cheaper; within the quality bar, as the tests show)
     * unless the steps must run as written or one needs the colours first. */
    *oc = (struct img_output_ctx){p, src, meta, 0};
    if (p->icc == IMG_ICC_SRGB && meta->icc != NULL) {
        if (p->exact || needs_srgb_first(p)) {
            if (img_icc_to_srgb(im, meta->icc, meta->icc_len) < 0) {
                rc = img_state_oom(msg, msglen);
                goto out;
            }
        } else {
            oc->to_srgb = 1;
        }
    }
    rc = img_state_init_take(st, im, hdr.width, hdr.height, src == IMG_FORMAT_JPEG ? pc.denom : 1,
                             orientation, msg, msglen);
    im = NULL;
out:
    img_destroy(im);
    buf_cleanup(&data);
    return rc;
}

/* The stem of the output files: the batch's name for this job (unique in the batch), or,
 * when the job comes without one, a name from its input. Empty without output "path". */
static int image_stem(const struct job_input *in, const struct img_params *p, const char *rel_path,
                      char *stem, size_t n, char *msg, size_t msglen)
{
    stem[0] = '\0';
    if (p->output_path && in->name != NULL) {
        if (!outname_stem_ok(in->name)) {
            snprintf(msg, msglen, "the output name \"%.100s\" is not one batchd makes", in->name);
            return -BATCHD_E_INVALID_INPUT;
        }
        snprintf(stem, n, "%s", in->name);
    } else if (p->output_path) {
        outname_stem(rel_path, NULL, in->index, stem, n);
    }
    return 0;
}

/* Runs each variant's steps on (a copy of) ST, the shared pipeline's result, and emits its
 * output into {"variants":{name:{...}}}. ST's image is consumed by the last variant. */
static int image_variants(const struct job_input *in, struct job_output *out,
                          const struct img_params *p, const struct img_limits *lim,
                          struct img_state *st, const struct img_output_ctx *oc, const char *stem)
{
    char *msg = out->message;
    size_t msglen = sizeof out->message;
    struct img_state vst = {0};
    int rc = 0;
    if (buf_adds(out->json, "{\"variants\":{") != 0) {
        return -BATCHD_E_TOO_LARGE;
    }
    for (int v = 0; v < p->nvariants && rc == 0; v++) {
        const struct img_variant *var = &p->variants[v];
        /* The last variant may consume the shared image; the others work on copies. */
        if (v + 1 == p->nvariants) {
            vst = *st;
            st->im = NULL;
        } else if (img_state_copy(&vst, st) != 0) {
            snprintf(msg, msglen, "out of memory");
            rc = -BATCHD_E_TOO_LARGE;
            break;
        }
        rc = img_pipeline_run(&vst, var->steps, var->nsteps, p->exact, lim->max_output_pixels, msg,
                              msglen);
        if (rc == 0) {
            rc = img_state_unreduce(&vst, msg, msglen);
        }
        if (rc == 0) {
            int w = 0;
            w |= v > 0 ? buf_adds(out->json, ",") : 0;
            w |= jsonw_cstr(out->json, var->name);
            w |= buf_adds(out->json, ":");
            rc = w != 0
                     ? -BATCHD_E_TOO_LARGE
                     : img_output_emit(in, out, &vst, &var->out, oc, var->name, stem, msg, msglen);
        }
        img_state_cleanup(&vst);
    }
    if (rc == 0 && buf_adds(out->json, "}}") != 0) {
        rc = -BATCHD_E_TOO_LARGE;
    }
    img_state_cleanup(&vst);
    return rc;
}

/* A failed job returns no partial result and no blobs. */
static void image_fail(struct job_output *out, int rc)
{
    buf_reset(out->json);
    for (int i = 0; i < out->nblobs; i++) {
        buf_cleanup(&out->blobs[i].bytes);
    }
    out->nblobs = 0;
    out->err = rc;
    if (out->message[0] == '\0') {
        snprintf(out->message, sizeof out->message, "%s", batchd_err_message(rc));
    }
}

static int image_run(const struct job_input *in, struct job_output *out)
{
    char *msg = out->message;
    size_t msglen = sizeof out->message;
    struct img_limits lim;
    struct img_params *p = malloc(sizeof *p);
    struct img_state st = {0};
    struct img_meta meta = {0};
    struct img_output_ctx oc;
    const char *rel_path = NULL;
    char stem[OUTNAME_MAX + 1];
    int rc;
    limits_of(in, &lim);
    if (p == NULL) {
        snprintf(msg, msglen, "out of memory");
        rc = -BATCHD_E_INTERNAL;
        goto out;
    }
    rc = image_parse(in, p, msg, msglen);
    if (rc == 0) {
        rc = image_decode(in, p, &lim, &meta, &st, &oc, &rel_path, msg, msglen);
    }
    if (rc == 0) {
        rc = img_pipeline_run(&st, p->steps, p->nsteps, p->exact, lim.max_output_pixels, msg,
                              msglen);
    }
    if (rc == 0) {
        rc = image_stem(in, p, rel_path, stem, sizeof stem, msg, msglen);
    }
    if (rc == 0 && p->nvariants > 0) {
        rc = image_variants(in, out, p, &lim, &st, &oc, stem);
    } else if (rc == 0) {
        rc = img_state_unreduce(&st, msg, msglen);
        if (rc == 0) {
            rc = img_output_emit(in, out, &st, &p->out, &oc, NULL, stem, msg, msglen);
        }
    }
out:
    if (rc != 0) {
        image_fail(out, rc);
    }
    img_state_cleanup(&st);
    img_meta_cleanup(&meta);
    free(p);
    return rc;
}

static int image_validate(const json_t *params, char *msg, size_t msglen, char *path,
                          size_t pathlen)
{
    struct img_params *p = malloc(sizeof *p);
    if (p == NULL) {
        snprintf(msg, msglen, "out of memory");
        path[0] = '\0';
        return -BATCHD_E_INTERNAL;
    }
    int rc = img_params_parse(params, p, msg, msglen, path, pathlen);
    free(p);
    return rc;
}

/* The catalogue's "steps": the pipeline steps from the table their parser checks. */
static json_t *image_describe(void)
{
    json_t *steps = img_steps_describe();
    return steps != NULL ? json_pack("{s:o}", "steps", steps) : NULL;
}

const struct op op_image = {
    .name = "image",
    .summary = "decode a JPEG, PNG or WebP, run a pipeline of steps, encode (SPEC §6)",
    .input = "{\"path\": \"rel/path\"} under --data-dir, {\"data\": \"<base64>\"}, or an uploaded "
             "file (multipart part \"file\")",
    .result = "{\"format\",\"width\",\"height\",\"bytes\",\"data\"|\"path\"}, or "
              "{\"variants\":{name:{...}}}",
    .example = "{\"path\": \"photos/a.jpg\"}",
    .params = img_params_spec,
    .flags = OP_IMAGE | OP_SLOW,
    .cost_hint_ns = 200000000u,
    .validate_params = image_validate,
    .describe = image_describe,
    .run = image_run,
};