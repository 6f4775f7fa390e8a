/* Fuzz target: the PNG decoder alone (workers/ops/img_png.c), then, for images small enough
 * to be cheap, an encode of what it decoded and a second decode that must give back the same
 * pixels (a lossless round trip). Any input must decode or fail with a per-job code, and
 * the fast path must give what libpng alone gives (img_png_decode_libpng). */
#include "api/buf.h"
#include "api/errors.h"
#include "workers/ops/img_png.h"

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

/* Small enough to keep every input fast under ASan, large enough for the PngSuite. */
#define FUZZ_PNG_MAX_PIXELS (4u * 1024 * 1024)
#define FUZZ_PNG_ROUNDTRIP_PIXELS (64u * 1024)

static void roundtrip(const struct img *im, int level)
{
    struct buf enc;
    buf_init(&enc, 64u * 1024 * 1024);
    char msg[256] = "";
    struct img *back = NULL;
    int rc = img_png_encode(im, level, NULL, &enc, msg, sizeof msg);
    if (rc != 0) {
        fail("a decoded image does not encode", rc, msg);
    }
    struct img_decode_opts opts = {.max_pixels = FUZZ_PNG_MAX_PIXELS};
    struct img_header hdr;
    msg[0] = '\0';
    rc = img_png_decode((const uint8_t *)buf_data(&enc), buf_len(&enc), &opts, &hdr, &back, msg,
                        sizeof msg);
    if (rc != 0) {
        fail("our own encoding does not decode", rc, msg);
    }
    if (back->width != im->width || back->height != im->height || back->channels != im->channels ||
        memcmp(back->px, im->px, (size_t)im->height * im->stride) != 0) {
        fail("PNG is lossless, yet other pixels came back", 0, "");
    }
    img_destroy(back);
    buf_cleanup(&enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct img_decode_opts opts = {
        .max_pixels = FUZZ_PNG_MAX_PIXELS, .max_memory = 256u * 1024 * 1024, .max_scans = 100};
    struct img_header hdr;
    struct img *im = NULL;
    char msg[256] = "";
    int rc = img_png_decode(data, size, &opts, &hdr, &im, msg, sizeof msg);
    if (rc == 0) {
        if (im == NULL || im->width != hdr.width || im->height != hdr.height ||
            im->channels != hdr.channels || hdr.channels < 1 || hdr.channels > 4) {
            fail("the decoded image is not the one its header describes", rc, msg);
        }
        if ((uint64_t)im->width * (uint64_t)im->height <= FUZZ_PNG_ROUNDTRIP_PIXELS) {
            roundtrip(im, (int)(size % 10));
        }
    } else if ((rc != -BATCHD_E_TOO_LARGE && rc != -BATCHD_E_CORRUPT_IMAGE) || im != NULL ||
               msg[0] == '\0') {
        fail("a failure must be too_large or corrupt_image, with a message and no image", rc, msg);
    }
    /* The fast path (img_png_idat.c) must agree with libpng alone, on every input. */
    struct img_header rhdr;
    struct img *ref = NULL;
    char rmsg[256] = "";
    int rrc = img_png_decode_libpng(data, size, &opts, &rhdr, &ref, rmsg, sizeof rmsg);
    if (rrc != rc) {
        fail("the fast path and libpng disagree on the outcome", rc, rmsg);
    }
    if (rc == 0 &&
        (ref->width != im->width || ref->height != im->height || ref->channels != im->channels ||
         memcmp(ref->px, im->px, (size_t)im->height * im->stride) != 0)) {
        fail("the fast path and libpng decode other pixels", 0, "");
    }
    img_destroy(ref);
    img_destroy(im);
    return 0;
}
