/* Unit tests of the image op's plan: what it decides from the header alone, before any
 * pixel is decoded. A JPEG output has at most 65,500 pixels on a side (libjpeg's
 * JPEG_MAX_DIMENSION), so a plan that would make a larger one fails as too_large at once,
 * shared pipeline or variant, while the same size as PNG is made. */
#include "../../api/errors.h"
#include "../../workers/ops/img_jpeg.h"
#include "../../workers/ops/img_png.h"
#include "../../workers/ops/ops.h"
#include "../check.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A small encoded image: PNG, or JPEG when JPEG is set. Returns its bytes in OUT. */
static void small_image(int jpeg, struct buf *out)
{
    char msg[256];
    struct img *im = img_create(2, 1, 3);
    memset(im->px, 120, im->stride);
    buf_init(out, 1 << 20);
    int rc = jpeg ? img_jpeg_encode(im, 90, 0, NULL, out, msg, sizeof msg)
                  : img_png_encode(im, 1, NULL, out, msg, sizeof msg);
    CHECK_EQ_INT(rc, 0);
    img_destroy(im);
}

/* Runs the image op on BYTES with PARAMS (JSON text). Returns its code; *WIDTH is the
 * result's width on success. The message is kept in MSG. */
static char msg[256];
static int run_image(const uint8_t *bytes, size_t n, const char *params, long *width)
{
    const struct op *op = ops_find("image");
    json_t *p = json_loads(params, 0, NULL);
    CHECK(p != NULL);
    struct buf b;
    buf_init(&b, 1 << 24);
    struct job_output out;
    memset(&out, 0, sizeof out);
    out.json = &b;
    struct job_input in;
    memset(&in, 0, sizeof in);
    in.params = p;
    in.blob = bytes;
    in.blob_len = n;
    in.want_binary = 1;
    static const struct job_limits limits = {.max_input_pixels = 100000000,
                                             .max_output_pixels = 100000000};
    in.limits = &limits;
    int rc = op->run(&in, &out);
    snprintf(msg, sizeof msg, "%s", out.message);
    *width = -1;
    if (rc == 0) {
        json_t *r = json_loadb(buf_data(&b), buf_len(&b), 0, NULL);
        json_t *w = json_object_get(r, "width");
        *width = json_is_integer(w) ? (long)json_integer_value(w) : -2;
        json_decref(r);
    }
    for (int i = 0; i < out.nblobs; i++) {
        buf_cleanup(&out.blobs[i].bytes);
    }
    buf_cleanup(&b);
    json_decref(p);
    return rc;
}

#define WIDE "{\"pipeline\":[{\"op\":\"resize\",\"width\":65501,\"height\":1,\"fit\":\"fill\"}]"

static void test_jpeg_side(void)
{
    struct buf png, jpg;
    long w;
    small_image(0, &png);
    small_image(1, &jpg);
    const uint8_t *pb = (const uint8_t *)buf_data(&png), *jb = (const uint8_t *)buf_data(&jpg);
    size_t pn = buf_len(&png), jn = buf_len(&jpg);

    CHECK_EQ_INT(run_image(pb, pn, WIDE ",\"format\":\"jpeg\"}", &w), -BATCHD_E_TOO_LARGE);
    CHECK(strstr(msg, "65501x1") != NULL && strstr(msg, "65500") != NULL);
    CHECK_EQ_INT(run_image(pb, pn, WIDE ",\"format\":\"png\"}", &w), 0);
    CHECK_EQ_INT(w, 65501);
    /* 65,500 itself is allowed. */
    CHECK_EQ_INT(run_image(pb, pn,
                           "{\"pipeline\":[{\"op\":\"resize\",\"width\":65500,\"height\":1,"
                           "\"fit\":\"fill\"}],\"format\":\"jpeg\"}",
                           &w),
                 0);
    CHECK_EQ_INT(w, 65500);
    /* "same" is JPEG for a JPEG input; a rotation makes the long side the height. */
    CHECK_EQ_INT(run_image(jb, jn, WIDE "}", &w), -BATCHD_E_TOO_LARGE);
    CHECK_EQ_INT(run_image(jb, jn, WIDE ",\"format\":\"png\"}", &w), 0);
    CHECK_EQ_INT(run_image(pb, pn,
                           "{\"pipeline\":[{\"op\":\"resize\",\"width\":65501,\"height\":1,"
                           "\"fit\":\"fill\"},{\"op\":\"rotate\",\"degrees\":90}],"
                           "\"format\":\"jpeg\"}",
                           &w),
                 -BATCHD_E_TOO_LARGE);
    CHECK(strstr(msg, "1x65501") != NULL);
    /* A variant's output counts too, and the message names it. */
    CHECK_EQ_INT(run_image(pb, pn,
                           "{\"format\":\"jpeg\",\"variants\":[{\"name\":\"small\"},"
                           "{\"name\":\"strip\",\"pipeline\":[{\"op\":\"resize\",\"width\":65501,"
                           "\"height\":1,\"fit\":\"fill\"}]}]}",
                           &w),
                 -BATCHD_E_TOO_LARGE);
    CHECK(strstr(msg, "strip") != NULL);
    CHECK_EQ_INT(run_image(pb, pn,
                           "{\"format\":\"jpeg\",\"variants\":[{\"name\":\"small\"},"
                           "{\"name\":\"strip\",\"format\":\"png\",\"pipeline\":[{\"op\":"
                           "\"resize\",\"width\":65501,\"height\":1,\"fit\":\"fill\"}]}]}",
                           &w),
                 0);

    /* Known from the header alone: with the pixel data cut off, the plan still refuses the
     * JPEG output (too_large) before the decoder meets the damage (corrupt_image). */
    size_t cut = pn - 20;
    CHECK_EQ_INT(run_image(pb, cut, WIDE ",\"format\":\"jpeg\"}", &w), -BATCHD_E_TOO_LARGE);
    CHECK_EQ_INT(run_image(pb, cut, WIDE ",\"format\":\"png\"}", &w), -BATCHD_E_CORRUPT_IMAGE);
    buf_cleanup(&png);
    buf_cleanup(&jpg);
}

/* The codec's own guard, for any caller that skips the plan. */
static void test_encoder_guard(void)
{
    struct img *im = img_create(65501, 1, 3);
    memset(im->px, 0, im->stride);
    struct buf out;
    buf_init(&out, 1 << 24);
    CHECK_EQ_INT(img_jpeg_encode(im, 85, 0, NULL, &out, msg, sizeof msg), -BATCHD_E_TOO_LARGE);
    buf_cleanup(&out);
    img_destroy(im);
}

int main(void)
{
    test_jpeg_side();
    test_encoder_guard();
    return check_report("test_img_plan");
}
