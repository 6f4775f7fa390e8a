/* Unit tests of the image steps on small synthetic images with known answers: a blurred
 * impulse is the Gaussian kernel, a resized constant image stays constant, rotate / flip /
 * crop move pixels exactly, grayscale uses the 601 weights; plus the size rules, the param
 * parser's error paths, the codecs' round trips and their limits. */
#include "../../api/errors.h"
#include "../../workers/ops/img_blur.h"
#include "../../workers/ops/img_jpeg.h"
#include "../../workers/ops/img_pipeline.h"
#include "../../workers/ops/img_png.h"
#include "../../workers/ops/img_resize.h"
#include "../check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static struct img *filled(int w, int h, int ch, uint8_t v)
{
    struct img *im = img_create(w, h, ch);
    memset(im->px, v, im->stride * (size_t)h);
    return im;
}

static uint8_t *px(struct img *im, int x, int y)
{
    return im->px + (size_t)y * im->stride + (size_t)x * im->channels;
}

/* A vertical line of 255 blurred horizontally: each row is 255 * the 1-D kernel. Both
 * methods (kernel below IMG_BLUR_BOX_SIGMA, box passes above) must match the Gaussian. */
static void test_blur_impulse(void)
{
    const double sigmas[] = {0.8, 1.5, 3.0, 6.0, 10.0};
    for (size_t k = 0; k < sizeof sigmas / sizeof sigmas[0]; k++) {
        double s = sigmas[k];
        int w = 201, c = 100;
        struct img *im = filled(w, 3, 1, 0);
        for (int y = 0; y < 3; y++) {
            *px(im, c, y) = 255;
        }
        CHECK_EQ_INT(img_blur(im, s, 0), 0);
        double maxerr = 0, sum = 0;
        for (int x = 0; x < w; x++) {
            double g = 255.0 / (sqrt(2 * M_PI) * s) * exp(-(x - c) * (x - c) / (2 * s * s));
            double e = fabs(*px(im, x, 1) - g);
            maxerr = e > maxerr ? e : maxerr;
            sum += *px(im, x, 1);
        }
        if (maxerr > 2.0 || fabs(sum - 255) > 12) {
            fprintf(stderr, "sigma %g: max error %.2f, sum %.1f\n", s, maxerr, sum);
        }
        CHECK(maxerr <= 2.0);
        CHECK(fabs(sum - 255) <= 12);
        /* Symmetric. */
        for (int d = 1; d < 50; d++) {
            CHECK_EQ_INT(*px(im, c - d, 1), *px(im, c + d, 1));
        }
        img_destroy(im);
    }
    /* Vertical direction, 2-D impulse with the kernel method: the peak is 255 g(0)^2. */
    struct img *im = filled(61, 61, 1, 0);
    *px(im, 30, 30) = 255;
    CHECK_EQ_INT(img_blur(im, 1.0, 1.0), 0);
    double peak = 255.0 / (2 * M_PI);
    CHECK(fabs(*px(im, 30, 30) - peak) <= 1.0);
    CHECK(fabs(*px(im, 31, 30) - peak * exp(-0.5)) <= 1.0);
    CHECK(fabs(*px(im, 30, 31) - peak * exp(-0.5)) <= 1.0);
    img_destroy(im);
}

static void test_blur_constant(void)
{
    const double sigmas[] = {0.5, 2.0, 4.0, 15.0, 250.0};
    for (size_t k = 0; k < sizeof sigmas / sizeof sigmas[0]; k++) {
        for (int ch = 1; ch <= 4; ch++) {
            struct img *im = filled(37, 23, ch, 77);
            CHECK_EQ_INT(img_blur(im, sigmas[k], sigmas[k]), 0);
            int bad = 0;
            for (size_t i = 0; i < im->stride * 23; i++) {
                bad += im->px[i] != 77;
            }
            CHECK_EQ_INT(bad, 0);
            CHECK_EQ_INT(img_sharpen(im, sigmas[k], 2.0), 0);
            for (size_t i = 0; i < im->stride * 23; i++) {
                bad += im->px[i] != 77;
            }
            CHECK_EQ_INT(bad, 0);
            img_destroy(im);
        }
    }
}

static void test_resize_constant(void)
{
    const int sizes[][2] = {{1, 1}, {7, 3}, {50, 40}, {333, 17}, {12, 400}};
    const enum img_filter filters[] = {IMG_FILTER_NEAREST, IMG_FILTER_BILINEAR, IMG_FILTER_BICUBIC,
                                       IMG_FILTER_LANCZOS3};
    for (int ch = 1; ch <= 4; ch++) {
        struct img *im = filled(101, 67, ch, 200);
        double box[4] = {0, 0, 101, 67};
        for (size_t f = 0; f < 4; f++) {
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                for (int gap = 0; gap <= 2; gap += 2) {
                    struct img *r =
                        img_resize(im, box, sizes[s][0], sizes[s][1], filters[f], gap, gap == 0);
                    CHECK(r != NULL);
                    CHECK_EQ_INT(r->width, sizes[s][0]);
                    CHECK_EQ_INT(r->height, sizes[s][1]);
                    int bad = 0;
                    for (size_t i = 0; i < r->stride * (size_t)r->height; i++) {
                        bad += r->px[i] != 200;
                    }
                    CHECK_EQ_INT(bad, 0);
                    img_destroy(r);
                }
            }
        }
        /* A fractional box inside the image. */
        double sub[4] = {10.5, 3.25, 90.75, 60.5};
        struct img *r = img_resize(im, sub, 33, 21, IMG_FILTER_LANCZOS3, 0, 0);
        int bad = 0;
        for (size_t i = 0; i < r->stride * (size_t)r->height; i++) {
            bad += r->px[i] != 200;
        }
        CHECK_EQ_INT(bad, 0);
        img_destroy(r);
        int rb[4] = {0, 0, 101, 67};
        r = img_reduce(im, 4, 3, rb);
        CHECK_EQ_INT(r->width, 26);
        CHECK_EQ_INT(r->height, 23);
        bad = 0;
        for (size_t i = 0; i < r->stride * (size_t)r->height; i++) {
            bad += r->px[i] != 200;
        }
        CHECK_EQ_INT(bad, 0);
        img_destroy(r);
        img_destroy(im);
    }
}

static void test_reduce_mean(void)
{
    struct img *im = img_create(4, 2, 1);
    const uint8_t v[] = {0, 10, 20, 30, 40, 50, 61, 70};
    memcpy(im->px, v, 8);
    int box[4] = {0, 0, 4, 2};
    struct img *r = img_reduce(im, 2, 2, box);
    CHECK_EQ_INT(r->px[0], 25); /* (0+10+40+50)/4 */
    CHECK_EQ_INT(r->px[1], 45); /* (20+30+61+70+2)/4 = 45.75 -> 45 */
    img_destroy(r);
    img_destroy(im);
}

/* A W x H RGB image whose pixel (x, y) is (x, y, x ^ y). */
static struct img *coords(int w, int h)
{
    struct img *im = img_create(w, h, 3);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint8_t *p = px(im, x, y);
            p[0] = (uint8_t)x;
            p[1] = (uint8_t)y;
            p[2] = (uint8_t)(x ^ y);
        }
    }
    return im;
}

static int is_coord(struct img *im, int x, int y, int sx, int sy)
{
    uint8_t *p = px(im, x, y);
    return p[0] == sx && p[1] == sy && p[2] == (uint8_t)(sx ^ sy);
}

static void test_geometry(void)
{
    int w = 70, h = 45, bad = 0;
    struct img *im = coords(w, h);
    struct img *r90 = img_rotate(im, 90), *r180 = img_rotate(im, 180), *r270 = img_rotate(im, 270);
    CHECK_EQ_INT(r90->width, h);
    CHECK_EQ_INT(r90->height, w);
    CHECK_EQ_INT(r180->width, w);
    CHECK_EQ_INT(r270->height, w);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            /* Clockwise: the top-left corner goes to the top-right. */
            bad += !is_coord(r90, h - 1 - y, x, x, y);
            bad += !is_coord(r180, w - 1 - x, h - 1 - y, x, y);
            bad += !is_coord(r270, y, w - 1 - x, x, y);
        }
    }
    CHECK_EQ_INT(bad, 0);
    struct img *fh = coords(w, h), *fv = coords(w, h);
    img_flip(fh, 1);
    img_flip(fv, 0);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            bad += !is_coord(fh, w - 1 - x, y, x, y);
            bad += !is_coord(fv, x, h - 1 - y, x, y);
        }
    }
    CHECK_EQ_INT(bad, 0);
    int empty;
    struct img *c = img_crop(im, 60, 40, 50, 50, &empty); /* clipped to 10 x 5 */
    CHECK(c != NULL);
    CHECK_EQ_INT(c->width, 10);
    CHECK_EQ_INT(c->height, 5);
    for (int y = 0; y < 5; y++) {
        for (int x = 0; x < 10; x++) {
            bad += !is_coord(c, x, y, 60 + x, 40 + y);
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(img_crop(im, 70, 0, 5, 5, &empty) == NULL);
    CHECK_EQ_INT(empty, 1);
    img_destroy(c);
    img_destroy(fh);
    img_destroy(fv);
    img_destroy(r90);
    img_destroy(r180);
    img_destroy(r270);
    img_destroy(im);
}

static void test_grayscale_alpha(void)
{
    struct img *im = img_create(4, 1, 4);
    const uint8_t v[] = {255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 128, 255, 255, 255, 0};
    memcpy(im->px, v, sizeof v);
    struct img *g = img_grayscale(im);
    CHECK_EQ_INT(g->channels, 2);
    /* Pillow's convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. */
    CHECK_EQ_INT(g->px[0], 76);
    CHECK_EQ_INT(g->px[2], 150);
    CHECK_EQ_INT(g->px[4], 29);
    CHECK_EQ_INT(g->px[5], 128);
    CHECK_EQ_INT(g->px[6], 255);
    img_destroy(g);
    /* Premultiply / unpremultiply as Pillow's RGBa. */
    img_premultiply(im);
    CHECK_EQ_INT(im->px[10], 128); /* 255 * 128 / 255 */
    CHECK_EQ_INT(im->px[12], 0);
    img_unpremultiply(im);
    CHECK_EQ_INT(im->px[10], 255);
    struct img *flat = img_flatten_white(im);
    CHECK_EQ_INT(flat->channels, 3);
    CHECK_EQ_INT(flat->px[6], 127); /* blue at half alpha over white: R */
    CHECK_EQ_INT(flat->px[8], 255); /* B */
    CHECK_EQ_INT(flat->px[9], 255); /* transparent -> white */
    CHECK_EQ_INT(flat->px[10], 255);
    img_destroy(flat);
    img_destroy(im);
}

static void test_sizes(void)
{
    static const int cases[][6] = {
        {6028, 3391, 1200, 1200, 1200, 675},
        {2560, 3837, 1200, 1200, 801, 1200},
        {676, 449, 1200, 1200, 676, 449},
        {1000, 3, 10, 10, 10, 1},
        {3, 1000, 10, 10, 1, 10},
        {4096, 4096, 256, 256, 256, 256},
        {5120, 2880, 256, 256, 256, 144},
        {1001, 999, 500, 500, 500, 499},
        {333, 777, 100, 50, 21, 50},
        {100, 1000, 2000, 500, 50, 500},
    }; /* from Pillow 9.4's Image.thumbnail */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int ow = cases[i][0], oh = cases[i][1];
        img_thumbnail_size(cases[i][0], cases[i][1], cases[i][2], cases[i][3], &ow, &oh);
        CHECK_EQ_INT(ow, cases[i][4]);
        CHECK_EQ_INT(oh, cases[i][5]);
    }
    int ow, oh;
    double box[4];
    img_resize_plan(1000, 500, 300, 0, IMG_FIT_FILL, &ow, &oh, box);
    CHECK_EQ_INT(ow, 300);
    CHECK_EQ_INT(oh, 150);
    img_resize_plan(1000, 501, 0, 100, IMG_FIT_FILL, &ow, &oh, box);
    CHECK_EQ_INT(ow, 200); /* round(199.6) */
    img_resize_plan(1000, 500, 300, 300, IMG_FIT_CONTAIN, &ow, &oh, box);
    CHECK_EQ_INT(ow, 300);
    CHECK_EQ_INT(oh, 150);
    img_resize_plan(1000, 500, 300, 300, IMG_FIT_COVER, &ow, &oh, box);
    CHECK_EQ_INT(ow, 300);
    CHECK_EQ_INT(oh, 300);
    CHECK(box[0] == 250 && box[2] == 750 && box[1] == 0 && box[3] == 500);
}

static void check_param_error(const char *text, const char *want_path)
{
    json_t *j = json_loads(text, 0, NULL);
    struct img_params *p = malloc(sizeof *p);
    char msg[256] = "", path[128] = "";
    int rc = img_params_parse(j, p, msg, sizeof msg, path, sizeof path);
    CHECK_EQ_INT(rc, -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(path, want_path);
    free(p);
    json_decref(j);
}

static void test_params(void)
{
    json_t *j = json_loads("{\"pipeline\":[{\"op\":\"blur\",\"sigma\":15},{\"op\":\"thumbnail\","
                           "\"width\":1200,\"height\":1200}],\"format\":\"jpeg\",\"quality\":90,"
                           "\"variants\":[{\"name\":\"s\",\"pipeline\":[{\"op\":\"resize\","
                           "\"width\":100}],\"format\":\"png\"}]}",
                           0, NULL);
    struct img_params *p = malloc(sizeof *p);
    char msg[256] = "", path[128] = "";
    CHECK_EQ_INT(img_params_parse(j, p, msg, sizeof msg, path, sizeof path), 0);
    CHECK_EQ_INT(p->nsteps, 2);
    CHECK_EQ_INT(p->steps[0].kind, IMG_STEP_BLUR);
    CHECK_EQ_INT(p->out.quality, 90);
    CHECK_EQ_INT(p->nvariants, 1);
    CHECK_EQ_INT(p->variants[0].out.quality, 90); /* inherited */
    CHECK_EQ_INT(p->variants[0].out.format, IMG_FORMAT_PNG);
    CHECK_EQ_INT(p->variants[0].steps[0].filter, IMG_FILTER_LANCZOS3);
    /* Shrink-on-load: 6000x4000 -> 1200x800 behind a blur that hides it: 1/4. */
    struct img_header h = {6000, 4000, 3, 1};
    CHECK_EQ_INT(img_params_shrink(p, &h), 4);
    p->exact = 1;
    CHECK_EQ_INT(img_params_shrink(p, &h), 1);
    json_decref(j);
    free(p);
    check_param_error("{\"pipeline\":[{\"op\":\"grayscale\"},{\"op\":\"blur\",\"sigma\":0}]}",
                      "pipeline[1].sigma");
    check_param_error("{\"pipeline\":[{\"op\":\"blur\",\"sigma\":251}]}", "pipeline[0].sigma");
    check_param_error("{\"pipeline\":[{\"op\":\"blur\"}]}", "pipeline[0].sigma");
    check_param_error("{\"pipeline\":[{\"op\":\"spin\"}]}", "pipeline[0].op");
    check_param_error("{\"pipeline\":[{\"op\":\"rotate\",\"degrees\":45}]}", "pipeline[0].degrees");
    check_param_error("{\"pipeline\":[{\"op\":\"resize\",\"width\":10,\"fit\":\"x\"}]}",
                      "pipeline[0].fit");
    check_param_error("{\"pipeline\":[{\"op\":\"resize\",\"widht\":10}]}", "pipeline[0].widht");
    check_param_error("{\"quality\":0}", "quality");
    check_param_error("{\"png_level\":10}", "png_level");
    check_param_error("{\"format\":\"gif\"}", "format");
    check_param_error("{\"variants\":[{\"name\":\"a\"},{\"name\":\"a\"}]}", "variants[1].name");
    check_param_error("{\"variants\":[{\"name\":\"a\",\"pipeline\":[{\"op\":\"crop\"}]}]}",
                      "variants[0].pipeline[0].width");
}

static void test_codecs(void)
{
    struct img_decode_opts opts = {
        .max_pixels = 100000000, .max_memory = 1 << 28, .max_scans = 100};
    char msg[256];
    for (int ch = 1; ch <= 4; ch++) {
        struct img *im = coords(31, 17), *c = img_convert(im, ch);
        struct buf out;
        buf_init(&out, 1 << 24);
        CHECK_EQ_INT(img_png_encode(c, 6, NULL, &out, msg, sizeof msg), 0);
        struct img *d = NULL;
        struct img_header h;
        CHECK_EQ_INT(img_png_decode((const uint8_t *)buf_data(&out), buf_len(&out), &opts, &h, &d,
                                    msg, sizeof msg),
                     0);
        CHECK(d != NULL && d->channels == ch && d->width == 31 && d->height == 17);
        CHECK(d != NULL && memcmp(d->px, c->px, c->stride * 17) == 0);
        /* Truncated: corrupt_image, nothing leaked (ASAN checks). */
        img_destroy(d);
        d = NULL;
        CHECK_EQ_INT(img_png_decode((const uint8_t *)buf_data(&out), buf_len(&out) / 2, &opts, &h,
                                    &d, msg, sizeof msg),
                     -BATCHD_E_CORRUPT_IMAGE);
        CHECK(d == NULL);
        buf_cleanup(&out);
        img_destroy(c);
        img_destroy(im);
    }
    /* JPEG round trip of a constant image stays (nearly) constant. */
    struct img *g = filled(40, 30, 3, 90);
    struct buf out;
    buf_init(&out, 1 << 24);
    CHECK_EQ_INT(img_jpeg_encode(g, 95, 0, NULL, &out, msg, sizeof msg), 0);
    struct img *d = NULL;
    struct img_header h;
    CHECK_EQ_INT(img_jpeg_decode((const uint8_t *)buf_data(&out), buf_len(&out), &opts, &h, &d, msg,
                                 sizeof msg),
                 0);
    CHECK(d != NULL && abs(d->px[0] - 90) <= 1 && abs(d->px[d->stride * 29 + 5] - 90) <= 1);
    img_destroy(d);
    d = NULL;
    CHECK_EQ_INT(img_jpeg_decode((const uint8_t *)buf_data(&out), buf_len(&out) - 40, &opts, &h, &d,
                                 msg, sizeof msg),
                 -BATCHD_E_CORRUPT_IMAGE);
    /* A header claiming 10000 x 10000 pixels is refused before any pixel (too_large). */
    struct buf png;
    buf_init(&png, 1 << 24);
    CHECK_EQ_INT(img_png_encode(g, 1, NULL, &png, msg, sizeof msg), 0);
    uint8_t *p = (uint8_t *)buf_data(&png);
    /* IHDR data starts at byte 16; patch width and height (the CRC then fails, so fix it). */
    const uint8_t dims[8] = {0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10};
    memcpy(p + 16, dims, 8);
    uint32_t crc = 0xffffffffu;
    for (int i = 12; i < 29; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
        }
    }
    crc ^= 0xffffffffu;
    const uint8_t crcb[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8),
                             (uint8_t)crc};
    memcpy(p + 29, crcb, 4);
    opts.max_pixels = 50000000;
    CHECK_EQ_INT(img_png_decode(p, buf_len(&png), &opts, &h, &d, msg, sizeof msg),
                 -BATCHD_E_TOO_LARGE);
    opts.max_pixels = 100000000;
    /* Within the limit, the header passes and the missing pixels make it corrupt. */
    CHECK_EQ_INT(img_png_decode(p, buf_len(&png), &opts, &h, &d, msg, sizeof msg),
                 -BATCHD_E_CORRUPT_IMAGE);
    buf_cleanup(&png);
    buf_cleanup(&out);
    img_destroy(g);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"blur_impulse", test_blur_impulse},
    {"blur_constant", test_blur_constant},
    {"resize_constant", test_resize_constant},
    {"reduce_mean", test_reduce_mean},
    {"geometry", test_geometry},
    {"grayscale_alpha", test_grayscale_alpha},
    {"sizes", test_sizes},
    {"params", test_params},
    {"codecs", test_codecs},
};
/* clang-format on */

CHECK_MAIN("test_img_steps", cases)
