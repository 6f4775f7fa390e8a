/* The image op's parameters and their pipeline: parsing and checking them (with the exact
 * path of a bad field, e.g. "pipeline[1].sigma"), choosing the JPEG shrink-on-load factor,
 * and running the steps on a decoded image, with the step-order optimiser. Knows nothing of
 * files, codecs' internals or the wire format of results: img_op.c does those. */
#ifndef BATCHD_WORKERS_OPS_IMG_PIPELINE_H
#define BATCHD_WORKERS_OPS_IMG_PIPELINE_H

#include "img_codec.h"
#include "img_image.h"
#include "img_resize.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define IMG_MAX_STEPS 32
#define IMG_MAX_VARIANTS 16
#define IMG_MAX_PARAM_SIDE 65535

enum img_step_kind {
    IMG_STEP_RESIZE,
    IMG_STEP_THUMBNAIL,
    IMG_STEP_CROP,
    IMG_STEP_BLUR,
    IMG_STEP_SHARPEN,
    IMG_STEP_GRAYSCALE,
    IMG_STEP_ROTATE,
    IMG_STEP_FLIP,
};

struct img_step {
    enum img_step_kind kind;
    int width, height; /* resize (0 = keep the aspect), thumbnail, crop */
    int x, y;          /* crop */
    enum img_fit fit;
    enum img_filter filter;
    double sigma, amount; /* blur, sharpen */
    int degrees;          /* rotate: clockwise */
    int horizontal;       /* flip */
};

enum img_format {
    IMG_FORMAT_SAME,
    IMG_FORMAT_JPEG,
    IMG_FORMAT_PNG,
};

struct img_output {
    enum img_format format;
    int quality;
    int progressive;
    int png_level;
};

struct img_variant {
    char name[33];
    struct img_step steps[IMG_MAX_STEPS];
    int nsteps;
    struct img_output out;
};

struct img_params {
    struct img_step steps[IMG_MAX_STEPS];
    int nsteps;
    struct img_output out;
    int output_path; /* output: "path" */
    int auto_orient;
    int exact;
    struct img_variant variants[IMG_MAX_VARIANTS];
    int nvariants;
};

/* JPEG decode scale factors and resampling shortcuts keep at least this much room: the
 * shrunk image is still >= GAP times the output size. 2.0 is Pillow's thumbnail
 * (draft + reducing_gap); Lanczos resizes, compared with Pillow's single-step resize, need
 * more room to stay above 40 dB. */
#define IMG_GAP_THUMBNAIL 2.0
#define IMG_GAP_RESIZE 3.0
/* A blur of at least this sigma (in output pixels) moved after a downscale lets the decode
 * shrink down to the output size (gap 1). */
#define IMG_BLUR_HIDES_SIGMA 1.0

/* Parses PARAMS (NULL = all defaults) into *P. Returns 0, or -BATCHD_E_INVALID_PARAM with
 * MSG and PATH (relative to params, e.g. "variants[0].pipeline[2].sigma") set. */
int img_params_parse(const json_t *params, struct img_params *p, char *msg, size_t msglen,
                     char *path, size_t pathlen);

/* The pipeline steps for /v1/ops, from the table the parser checks steps against:
 * [{op, help, required_one_of, params: [{name, type, required, help, min, max, exclusive_min,
 * choices, default}]}], each field only where it applies. Returns a new reference, or NULL (OOM).
 */
json_t *img_steps_describe(void);

/* The JPEG DCT scale denominator (1, 2, 4, 8) for an image of header H run through P:
 * the smallest decode whose size still covers what the first downscale needs, or 1 when
 * any step before that downscale cannot run on a reduced image, or P->exact. */
int img_params_shrink(const struct img_params *p, const struct img_header *h);

/* The longest side a JPEG can have (libjpeg's JPEG_MAX_DIMENSION). */
#define IMG_JPEG_MAX_SIDE 65500

/* Checks, from the header H alone and before any pixel is decoded, that every output of P
 * (the shared pipeline's, or each variant's) fits its format: a JPEG output is at most
 * IMG_JPEG_MAX_SIDE pixels on a side. SRC_JPEG says what format "same" stands for. Returns 0
 * or -BATCHD_E_TOO_LARGE with MSG set. */
int img_params_check_outputs(const struct img_params *p, const struct img_header *h, int src_jpeg,
                             char *msg, size_t msglen);

/* A picture on its way through a pipeline. When the decoder shrank it on load, the image
 * stands for a larger "logical" one (the full-size decode): BOX is where the logical image
 * lies in IM's pixels, until the first resampling step consumes it. */
struct img_state {
    struct img *im; /* owned */
    int lw, lh;     /* logical size */
    double box[4];  /* x0, y0, x1, y1 in im's pixels */
    int reduced;
};

/* Starts STATE on IM (taken) decoded at 1/DENOM of the logical size W x H (as stored), and
 * applies EXIF orientation O when non-1. Returns 0 or -BATCHD_E_TOO_LARGE (OOM). */
int img_state_init_take(struct img_state *st, struct img *im, int w, int h, int denom,
                        int orientation, char *msg, size_t msglen);

/* Frees the state's image. */
void img_state_cleanup(struct img_state *st);

/* A deep copy of SRC into DST. Returns 0 or -1 (OOM). */
int img_state_copy(struct img_state *dst, const struct img_state *src);

/* Runs STEPS on ST. EXACT turns the step-order optimiser off (a blur right before a
 * downscale otherwise runs after it with sigma scaled by the shrink). At the end the image is
 * at its logical size (premultiplied when it has alpha). MAX_OUT_PIXELS bounds every
 * intermediate and the output. Returns 0, or -BATCHD_E_TOO_LARGE, -BATCHD_E_INVALID_INPUT
 * (e.g. a crop outside the image) or -BATCHD_E_INTERNAL with MSG set. */
int img_pipeline_run(struct img_state *st, const struct img_step *steps, int n, int exact,
                     uint64_t max_out_pixels, char *msg, size_t msglen);

/* Brings a reduced state to its logical size (used before steps that need it). */
int img_state_unreduce(struct img_state *st, char *msg, size_t msglen);

#endif
