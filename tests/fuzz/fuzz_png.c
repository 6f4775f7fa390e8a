/* Fuzz target: the PNG decoder alone (workers/ops/img_png.c), then, for images small enough
 * to be cheap, an encode of what it decoded and a second decode that must give back the same
 * pixels (a lossless round trip). Any input must decode or fail with a per-job code, and
 * the fast path must give what libpng alone gives (img_png_decode_libpng). */
#include "api/buf.h"
#include "api/errors.h"
#include "workers/ops/img_png.h"

#include <libdeflate.h>
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

/* The fast path (img_png_idat.c) must agree with libpng alone: the same code, and on success
 * the same pixels. */
static void agree(const uint8_t *data, size_t size, const struct img_decode_opts *opts)
{
    struct img_header h1, h2;
    struct img *a = NULL, *b = NULL;
    char m1[256] = "", m2[256] = "";
    int r1 = img_png_decode(data, size, opts, &h1, &a, m1, sizeof m1);
    int r2 = img_png_decode_libpng(data, size, opts, &h2, &b, m2, sizeof m2);
    /* One difference is by design: libdeflate remaps a few invalid DEFLATE codes (the fixed
     * code's never-used symbols, some incomplete codes) where zlib stops with "invalid ...";
     * the fast path still asks for exactly the rows and the right Adler-32, so what it
     * returns is the checksummed data, never garbage. Every other outcome must be libpng's. */
    if (r1 == 0 && r2 == -BATCHD_E_CORRUPT_IMAGE && strstr(m2, "IDAT: invalid") != NULL) {
        img_destroy(a);
        return;
    }
    if (r1 != r2) {
        fail("the fast path and libpng disagree on the outcome", r1, m1[0] ? m1 : m2);
    }
    if (r1 == 0 && (a->width != b->width || a->height != b->height || a->channels != b->channels ||
                    memcmp(a->px, b->px, (size_t)a->height * a->stride) != 0)) {
        fail("the fast path and libpng decode other pixels", 0, "");
    }
    img_destroy(a);
    img_destroy(b);
}

/* DATA with every chunk's CRC made right (NULL when it is no PNG or out of memory; free it):
 * mutated inputs almost never keep their CRCs, and without this the fast path would hand
 * nearly all of them straight to libpng. */
static uint8_t *fix_crcs(const uint8_t *data, size_t size)
{
    if (size < 8 || memcmp(data, "\x89PNG\r\n\x1a\n", 8) != 0) {
        return NULL;
    }
    uint8_t *p = malloc(size);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, data, size);
    size_t pos = 8;
    while (size - pos >= 12) {
        uint32_t n = (uint32_t)p[pos] << 24 | (uint32_t)p[pos + 1] << 16 |
                     (uint32_t)p[pos + 2] << 8 | p[pos + 3];
        if (n > size - pos - 12) {
            break;
        }
        uint32_t crc = libdeflate_crc32(0, p + pos + 4, (size_t)n + 4);
        for (int i = 0; i < 4; i++) {
            p[pos + 8 + n + (size_t)i] = (uint8_t)(crc >> (24 - 8 * i));
        }
        pos += 12 + (size_t)n;
    }
    return p;
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
    agree(data, size, &opts);
    uint8_t *fixed = fix_crcs(data, size);
    if (fixed != NULL) {
        agree(fixed, size, &opts);
    }
    free(fixed);
    img_destroy(im);
    return 0;
}
