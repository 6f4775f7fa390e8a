/* Fuzz target: the JPEG decoder alone (workers/ops/img_jpeg.c), at every DCT scale (the input
 * size picks 1, 2, 4 or 8, as the pipeline's shrink-on-load would), then, for small images,
 * an encode of the result (baseline or progressive) that must decode again at its size. Any
 * input must decode or fail with a per-job code. */
#include "api/buf.h"
#include "api/errors.h"
#include "workers/ops/img_jpeg.h"

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

#define FUZZ_JPEG_MAX_PIXELS (16u * 1024 * 1024)
#define FUZZ_JPEG_ROUNDTRIP_PIXELS (64u * 1024)

struct scale_ctx {
    int denom;
    int called;
};

static int pick(void *ctx, const struct img_header *h, char *msg, size_t msglen)
{
    struct scale_ctx *c = ctx;
    (void)h;
    (void)msg;
    (void)msglen;
    c->called++;
    return c->denom;
}

static int scaled(int side, int denom)
{
    return (side + denom - 1) / denom;
}

static void roundtrip(const struct img *im, int quality, int progressive)
{
    struct buf enc;
    buf_init(&enc, 64u * 1024 * 1024);
    char msg[256] = "";
    struct img *back = NULL;
    int rc = img_jpeg_encode(im, quality, progressive, NULL, &enc, msg, sizeof msg);
    if (rc != 0) {
        fail("a decoded image does not encode", rc, msg);
    }
    struct img_decode_opts opts = {
        .max_pixels = FUZZ_JPEG_MAX_PIXELS, .max_memory = 256u * 1024 * 1024, .max_scans = 100};
    struct img_header hdr;
    msg[0] = '\0';
    rc = img_jpeg_decode((const uint8_t *)buf_data(&enc), buf_len(&enc), &opts, &hdr, &back, msg,
                         sizeof msg);
    if (rc != 0) {
        fail("our own encoding does not decode", rc, msg);
    }
    if (back->width != im->width || back->height != im->height || back->channels != im->channels) {
        fail("our own encoding decodes to another size or layout", 0, "");
    }
    img_destroy(back);
    buf_cleanup(&enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct scale_ctx sc = {.denom = 1 << (size % 4)};
    struct img_decode_opts opts = {.max_pixels = FUZZ_JPEG_MAX_PIXELS,
                                   .max_memory = 256u * 1024 * 1024,
                                   .max_scans = 100,
                                   .pick_scale = pick,
                                   .ctx = &sc};
    struct img_header hdr;
    struct img *im = NULL;
    char msg[256] = "";
    int rc = img_jpeg_decode(data, size, &opts, &hdr, &im, msg, sizeof msg);
    if (rc == 0) {
        if (im == NULL || sc.called != 1 || (im->channels != 1 && im->channels != 3) ||
            hdr.orientation < 1 || hdr.orientation > 8 ||
            im->width != scaled(hdr.width, sc.denom) ||
            im->height != scaled(hdr.height, sc.denom)) {
            fail("the decoded image is not its header's at the scale asked for", rc, msg);
        }
        if ((uint64_t)im->width * (uint64_t)im->height <= FUZZ_JPEG_ROUNDTRIP_PIXELS) {
            roundtrip(im, 1 + (int)(size % 100), (int)(size / 4 % 2));
        }
    } else if ((rc != -BATCHD_E_TOO_LARGE && rc != -BATCHD_E_CORRUPT_IMAGE &&
                rc != -BATCHD_E_UNSUPPORTED_FORMAT) ||
               im != NULL || msg[0] == '\0') {
        fail("a failure must be too_large, corrupt_image or unsupported_format, with a message "
             "and no image",
             rc, msg);
    }
    img_destroy(im);
    return 0;
}
