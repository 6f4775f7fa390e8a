/* The image op's params: their rows (declared once, for the server's generic check, for
 * /v1/ops and for the variants that repeat some of them) and the strict parse into struct
 * img_params, with the exact path of a bad field (e.g. "variants[0].pipeline[2].sigma").
 * Knows nothing of pixels: planning is img_plan.c, running img_pipeline.c. */
#ifndef BATCHD_WORKERS_OPS_IMG_PARAMS_H
#define BATCHD_WORKERS_OPS_IMG_PARAMS_H

#include "img_step.h"
#include "op_param.h"

#include <jansson.h>
#include <stddef.h>

#define IMG_MAX_STEPS 32
#define IMG_MAX_VARIANTS 16

enum img_format {
    IMG_FORMAT_SAME,
    IMG_FORMAT_JPEG,
    IMG_FORMAT_PNG,
    IMG_FORMAT_WEBP,
};

/* What becomes of an input's ICC profile (SPEC §6 "Colour"), in the order of the icc row's
 * choices. */
enum img_icc_mode {
    IMG_ICC_SRGB, /* pixels converted to sRGB, no profile in the output */
    IMG_ICC_KEEP, /* pixels untouched, the profile embedded in the output */
    IMG_ICC_STRIP /* pixels untouched, no profile */
};

struct img_output {
    enum img_format format;
    int quality;
    int progressive;
    int png_level;
    int lossless; /* WebP */
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
    enum img_icc_mode icc;
    int keep_metadata;
    struct img_variant variants[IMG_MAX_VARIANTS];
    int nvariants;
};

/* The image op's params (the op table's .params), ending at name == NULL. */
extern const struct op_param img_params_spec[];

/* Parses PARAMS (NULL = all defaults) into *P. Returns 0, or -BATCHD_E_INVALID_PARAM with
 * MSG and PATH (relative to params, e.g. "variants[0].pipeline[2].sigma") set. */
int img_params_parse(const json_t *params, struct img_params *p, char *msg, size_t msglen,
                     char *path, size_t pathlen);

#endif
