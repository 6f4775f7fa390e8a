/* Running a list of pipeline steps on a decoded image, through the steps' classes
 * (img_step.h), with the step-order optimiser's rule from img_plan.h. The params are
 * img_params.h, the plan img_plan.h, the picture's state img_state.h; this header brings them
 * together for the image op. Knows nothing of files, codecs' internals or the wire format of
 * results: img_input.c, img_op.c and img_output.c do those. */
#ifndef BATCHD_WORKERS_OPS_IMG_PIPELINE_H
#define BATCHD_WORKERS_OPS_IMG_PIPELINE_H

#include "img_codec.h"
#include "img_image.h"
#include "img_params.h"
#include "img_plan.h"
#include "img_resize.h"
#include "img_state.h"
#include "img_step.h"

#include <stddef.h>
#include <stdint.h>

/* Runs STEPS on ST. EXACT turns the step-order optimiser off (a blur right before a
 * downscale otherwise runs after it with sigma scaled by the shrink). At the end the image is
 * at its logical size (premultiplied when it has alpha). MAX_OUT_PIXELS bounds every
 * intermediate and the output. Returns 0, or -BATCHD_E_TOO_LARGE, -BATCHD_E_INVALID_INPUT
 * (e.g. a crop outside the image) or -BATCHD_E_INTERNAL with MSG set. */
int img_pipeline_run(struct img_state *st, const struct img_step *steps, int n, int exact,
                     uint64_t max_out_pixels, char *msg, size_t msglen);

#endif
