/* The image op's output side: encoding a processed image and answering with it, inline
 * (base64 or a binary blob) or as a file under the output dir that replaces no one else's
 * file. Runs no pipeline step and reads no input: img_op.c and img_input.c do. */
#ifndef BATCHD_WORKERS_OPS_IMG_OUTPUT_H
#define BATCHD_WORKERS_OPS_IMG_OUTPUT_H

#include "img_codec.h"
#include "img_meta.h"
#include "img_params.h"
#include "img_state.h"
#include "ops.h"

#include <stddef.h>

/* What every output of a job shares: the input's format ("same") and metadata, and whether
 * its pixels still wait for their conversion to sRGB. */
struct img_output_ctx {
    const struct img_params *p;
    enum img_format src;
    const struct img_meta *meta; /* the input's: profile, EXIF (orientation reset), XMP */
    int to_srgb;                 /* convert each output's pixels through meta->icc */
};

/* Encodes one output (ST's image, consumed: it may be changed in place) as O asks and
 * appends its result object to OUT->json; under a binary request its bytes become a new
 * blob of OUT, under output "path" a file STEM[-VARIANT].EXT. VARIANT: the variant's name,
 * or NULL for a job without variants. Returns 0 or a negative code with MSG set. */
int img_output_emit(const struct job_input *in, struct job_output *out, struct img_state *st,
                    const struct img_output *o, const struct img_output_ctx *oc,
                    const char *variant, const char *stem, char *msg, size_t msglen);

#endif
