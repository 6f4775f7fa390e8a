/* Fuzz target: the image op's params (any JSON value) through what the server and a worker
 * do with them short of a codec: the server's check (ops_check_params), the worker's parse
 * (img_params_parse, which must accept whatever the server let through), the shrink-on-load
 * plan for a header made up from the input, then the shared pipeline and every variant run
 * on a small synthetic image decoded at that plan's scale, and each output encoded. Steps
 * may fail alone (too_large, invalid_input); nothing may crash, leak, or fail as internal. */
#include "api/buf.h"
#include "api/errors.h"
#include "workers/ops/img_jpeg.h"
#include "workers/ops/img_pipeline.h"
#include "workers/ops/img_png.h"
#include "workers/ops/ops.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken promise of the code under test: say which, then abort (libFuzzer saves the input). */
static void fail(const char *why, int rc, const char *msg)
{
    fprintf(stderr, "%s: %s (code %d: %s)\n", __FILE__, why, rc, msg);
    abort();
}

/* Keeps each input at a few milliseconds under ASan: a 65536-pixel output still reaches
 * every side limit (65535 x 1). */
#define FUZZ_PARAMS_MAX_OUT (64u * 1024)
#define FUZZ_PARAMS_MAX_SIDE 160

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

/* Encodes ST's image as O asks (the input being a JPEG when SRC_JPEG), as img_op.c does. */
static int encode(struct img_state *st, const struct img_output *o, int src_jpeg, char *msg,
                  size_t msglen)
{
    struct buf out;
    buf_init(&out, 64u * 1024 * 1024);
    int rc;
    int jpeg = o->format == IMG_FORMAT_JPEG || (o->format == IMG_FORMAT_SAME && src_jpeg);
    if (jpeg) {
        if (img_has_alpha(st->im)) {
            struct img *flat = img_flatten_white(st->im);
            if (flat == NULL) {
                fail("out of memory flattening a small image", 0, "");
            }
            img_destroy(st->im);
            st->im = flat;
        }
        rc = img_jpeg_encode(st->im, o->quality, o->progressive, NULL, &out, msg, msglen);
    } else {
        img_unpremultiply(st->im);
        rc = img_png_encode(st->im, o->png_level, NULL, &out, msg, msglen);
    }
    buf_cleanup(&out);
    return rc;
}

/* A step's or an encode's failure: too_large and invalid_input are a job's answer; anything
 * else (internal) means the pipeline accepted work it cannot finish. */
static void job_failed(int rc, const char *msg)
{
    if (rc != -BATCHD_E_TOO_LARGE && rc != -BATCHD_E_INVALID_INPUT) {
        fail("accepted params led to an error that is not the job's own", rc, msg);
    }
}

static void run_outputs(const struct img_params *p, struct img_state *st, int src_jpeg)
{
    char msg[256] = "";
    int rc =
        img_pipeline_run(st, p->steps, p->nsteps, p->exact, FUZZ_PARAMS_MAX_OUT, msg, sizeof msg);
    if (rc != 0) {
        job_failed(rc, msg);
        return;
    }
    if (p->nvariants == 0) {
        rc = img_state_unreduce(st, msg, sizeof msg);
        if (rc == 0) {
            rc = encode(st, &p->out, src_jpeg, msg, sizeof msg);
        }
        if (rc != 0) {
            job_failed(rc, msg);
        }
        return;
    }
    for (int v = 0; v < p->nvariants; v++) {
        struct img_state vst;
        if (img_state_copy(&vst, st) != 0) {
            fail("out of memory copying a small image", 0, "");
        }
        const struct img_variant *var = &p->variants[v];
        rc = img_pipeline_run(&vst, var->steps, var->nsteps, p->exact, FUZZ_PARAMS_MAX_OUT, msg,
                              sizeof msg);
        if (rc == 0) {
            rc = img_state_unreduce(&vst, msg, sizeof msg);
        }
        if (rc == 0) {
            rc = encode(&vst, &var->out, src_jpeg, msg, sizeof msg);
        }
        if (rc != 0) {
            job_failed(rc, msg);
        }
        img_state_cleanup(&vst);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *params = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (params == NULL) {
        return 0;
    }
    const struct op *op = ops_find("image");
    struct img_params *p = malloc(sizeof *p);
    if (op == NULL || p == NULL) {
        fail("no image op, or out of memory", 0, "");
    }
    char msg[256], path[128];
    int server = ops_check_params(op, params, msg, sizeof msg, path, sizeof path);
    int worker = img_params_parse(params, p, msg, sizeof msg, path, sizeof path);
    if (server == 0 && worker != 0) {
        fail("the server let through params that every job then refuses", worker, msg);
    }
    if (server != 0 || worker != 0) {
        goto out;
    }
    /* A made-up input: its stored size, channels, EXIF orientation and format. */
    uint32_t h = fnv1a(data, size);
    struct img_header hdr = {
        .width = 1 + (int)(h % FUZZ_PARAMS_MAX_SIDE),
        .height = 1 + (int)((h >> 8) % FUZZ_PARAMS_MAX_SIDE),
        .channels = 1 + (int)((h >> 16) % 4),
        .orientation = 1 + (int)((h >> 20) % 8),
    };
    int src_jpeg = (h >> 24) & 1;
    int denom = img_params_shrink(p, &hdr);
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        fail("the shrink-on-load plan is not 1, 2, 4 or 8", denom, "");
    }
    if (!src_jpeg) {
        denom = 1; /* only the JPEG decoder shrinks on load */
    }
    struct img *im =
        img_create((hdr.width + denom - 1) / denom, (hdr.height + denom - 1) / denom, hdr.channels);
    if (im == NULL) {
        fail("out of memory for a small image", 0, "");
    }
    for (size_t i = 0; i < (size_t)im->height * im->stride; i++) {
        im->px[i] = data[i % size] ^ (uint8_t)(i * 37);
    }
    struct img_state st = {0};
    int rc = img_state_init_take(&st, im, hdr.width, hdr.height, denom,
                                 p->auto_orient ? hdr.orientation : 1, msg, sizeof msg);
    if (rc == 0) {
        run_outputs(p, &st, src_jpeg);
    } else {
        job_failed(rc, msg);
    }
    img_state_cleanup(&st);
out:
    free(p);
    json_decref(params);
    return 0;
}
