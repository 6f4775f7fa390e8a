/* The registry of pipeline steps (libvips style: one operation per file, its arguments
 * declared once). Each step is one const struct img_step_class in img_step_<name>.c: its
 * params (struct op_param rows, the engine every op uses), how it stores them, how it changes
 * the picture's size, and how it runs. IMG_STEP_LIST below is the one table. Parsing whole
 * params is img_params.c, planning img_plan.c, running a list of steps img_pipeline.c. */
#ifndef BATCHD_WORKERS_OPS_IMG_STEP_H
#define BATCHD_WORKERS_OPS_IMG_STEP_H

#include "img_resize.h"
#include "img_state.h"
#include "op_param.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Every step, in catalogue order, one line each: XX(ENUM_SUFFIX, name); the class
 * img_step_<name> is defined in img_step_<name>.c. Adding a step = that file + one line. */
#define IMG_STEP_LIST(XX)                                                                          \
    XX(RESIZE, resize)                                                                             \
    XX(THUMBNAIL, thumbnail)                                                                       \
    XX(CROP, crop)                                                                                 \
    XX(BLUR, blur)                                                                                 \
    XX(SHARPEN, sharpen)                                                                           \
    XX(GRAYSCALE, grayscale)                                                                       \
    XX(ROTATE, rotate)                                                                             \
    XX(FLIP, flip)

enum img_step_kind {
#define XX(e, name) IMG_STEP_##e,
    IMG_STEP_LIST(XX)
#undef XX
        IMG_STEP_COUNT
};

/* One parsed step: the fields its class's store() fills. */
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

/* JPEG decode scale factors and resampling shortcuts keep at least this much room: the
 * shrunk image is still >= GAP times the output size. 2.0 is Pillow's thumbnail
 * (draft + reducing_gap); Lanczos resizes, compared with Pillow's single-step resize, need
 * more room to stay above 40 dB. */
#define IMG_GAP_THUMBNAIL 2.0
#define IMG_GAP_RESIZE 3.0

#define IMG_STEP_MAX_PARAMS 4
#define IMG_MAX_PARAM_SIDE 65535

/* What a step is run with. FX, FY are 1, except for a step the optimiser moved after a
 * downscale: then the downscale's factors (logical input pixels per output pixel). */
struct img_run {
    struct img_state *st;
    int exact;
    uint64_t max_out_pixels;
    double fx, fy;
    char *msg;
    size_t msglen;
};

/* How a resampling step (resize, thumbnail) maps a logical W x H image. */
struct img_scale {
    int ow, oh;    /* the output size */
    double box[4]; /* the source area in logical pixels */
    enum img_filter filter;
    double gap;     /* the reducing gap when not exact (img_resize) */
    int gap_always; /* 1: GAP applies even when exact (thumbnail) */
    int crops;      /* 1: BOX is a cut of the image (resize with fit cover) */
};

enum img_step_flags {
    /* May run on an image shrunk on load (it neither reads nor moves pixels' positions in a way
     * the reduced decode would change), so the plan looks past it for a downscale. */
    IMG_STEP_SHRINK_SAFE = 1 << 0,
};

struct img_step_class {
    const char *op;
    const char *help;
    const struct op_param *params; /* ends at name == NULL; at most IMG_STEP_MAX_PARAMS rows */
    const char *const *one_of;     /* at least one of these params must be given, or NULL */
    unsigned flags;                /* enum img_step_flags */
    /* Stores V (one value per row of .params, read by op_param_read) into S. */
    void (*store)(struct img_step *s, const double *v);
    /* A resampling step: fills SC for a logical W x H image and returns 1, or returns 0 when
     * the step leaves the image as it is (a thumbnail that fits already). NULL otherwise. */
    int (*scale)(const struct img_step *s, int w, int h, struct img_scale *sc);
    /* Any other step that changes the logical size: W x H after it. Returns 0, or -1 when the
     * step cannot run on such an image (the run then says why). NULL: the size is kept. */
    int (*size)(const struct img_step *s, int *w, int *h);
    /* Runs the step. Returns 0 or a negative per-job code with R->msg set. NULL for a
     * resampling step: the runner gives those to img_step_run_scale, so that a step's file
     * never calls back into the table that lists it. */
    int (*run)(struct img_run *r, const struct img_step *s);
};

#define XX(e, name) extern const struct img_step_class img_step_##name;
IMG_STEP_LIST(XX)
#undef XX

/* The class of KIND. Returns a borrowed pointer into the static table. */
const struct img_step_class *img_step_class_of(enum img_step_kind kind);

/* The class named OP, or NULL; *KIND receives its kind. */
const struct img_step_class *img_step_find(const char *op, enum img_step_kind *kind);

/* The names of every step, NULL-terminated, in table order (for messages). */
const char *const *img_step_names(void);

/* The steps for /v1/ops: [{op, help, required_one_of, params: [...]}], each field only where
 * it applies. Returns a new reference, or NULL (OOM). */
json_t *img_steps_describe(void);

/* Runs a resampling step S (its class has .scale) on R->st, leaving R->fx, R->fy at its
 * factors. Shared by resize and thumbnail. Returns 0 or a negative per-job code. */
int img_step_run_scale(struct img_run *r, const struct img_step *s);

#endif
