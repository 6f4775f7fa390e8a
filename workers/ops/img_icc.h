/* Colour management with lcms2 (SPEC §6 "Colour"): pixels described by an embedded ICC
 * profile converted to sRGB, and a CMYK JPEG's profile used to make RGB. A profile that is
 * broken, too large, of another colour space than the pixels, or of a class that does not
 * describe an image (a device link, an abstract or named-colour profile) is ignored: the
 * pixels are then taken as sRGB, never an error. lcms2 reports problems through a logger,
 * not only through return values (a profile cut in half still opens): any logged error
 * counts as failure. Transforms are cached per process (a worker runs one job at a time),
 * keyed by the profile's bytes, so a batch of photos from one camera builds one. */
#ifndef BATCHD_WORKERS_OPS_IMG_ICC_H
#define BATCHD_WORKERS_OPS_IMG_ICC_H

#include "img_image.h"

#include <stddef.h>
#include <stdint.h>

/* Converts IM (not premultiplied; gray stays gray, with an sRGB tone curve) from the profile
 * P/N to sRGB in place, perceptual intent, alpha copied. Returns 1 when the pixels changed,
 * 0 when they were left as they are: no profile, a profile that is sRGB already (its
 * transform is the identity within one level), or one that is ignored; -1 when memory ran
 * out (the job fails: its colours would be wrong). */
int img_icc_to_srgb(struct img *im, const uint8_t *p, size_t n);

/* 1 when P/N is a profile img_icc_to_srgb would use for pixels of CH channels (1..4): the
 * test before a profile is embedded in an output; 0 when not; -1 when memory ran out. */
int img_icc_fits(const uint8_t *p, size_t n, int ch);

struct img_icc_xform;

/* The transform from CMYK (INVERTED as Adobe writes it) through the CMYK profile P/N to sRGB,
 * or NULL when the profile is ignored (the caller then converts without one) or memory ran
 * out (*OOM = 1). Borrowed from the cache: valid until the next img_icc_* call. */
const struct img_icc_xform *img_icc_cmyk_open(const uint8_t *p, size_t n, int inverted, int *oom);

/* Converts W pixels of CMYK (4 bytes each) at SRC to RGB at DST (3 bytes each) through X. */
void img_icc_cmyk_row(const struct img_icc_xform *x, const uint8_t *src, uint8_t *dst, int w);

/* Frees the cached transforms (tests and fuzzers that count leaks). */
void img_icc_flush(void);

#endif
