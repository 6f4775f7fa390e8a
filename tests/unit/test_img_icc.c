/* Unit tests of the ICC colour module (workers/ops/img_icc.c): a wide-gamut profile converts,
 * an sRGB one is the identity, broken ones are ignored, a gray image ignores an RGB profile;
 * and, in a BATCHD_TORTURE build, running out of memory fails the conversion (-1) instead of
 * silently leaving the colours wrong, and is not remembered: the next call converts. */
#include "../../api/torture.h"
#include "../../workers/ops/img_icc.h"
#include "../../workers/ops/img_image.h"
#include "../check.h"

#include <lcms2.h>
#include <stdlib.h>
#include <string.h>

/* An Adobe RGB (1998)-like profile (its primaries, D65, gamma 2.2), saved to memory by lcms2;
 * *N its size. Free with free(). */
static uint8_t *adobe_rgb(size_t *n)
{
    cmsCIExyY white = {0.3127, 0.3290, 1.0};
    cmsCIExyYTRIPLE prim = {{0.64, 0.33, 1.0}, {0.21, 0.71, 1.0}, {0.15, 0.06, 1.0}};
    cmsToneCurve *g = cmsBuildGamma(NULL, 2.19921875);
    cmsToneCurve *curves[3] = {g, g, g};
    cmsHPROFILE h = cmsCreateRGBProfile(&white, &prim, curves);
    cmsUInt32Number len = 0;
    uint8_t *p = NULL;
    if (h != NULL && cmsSaveProfileToMem(h, NULL, &len) && len > 0) {
        p = malloc(len);
        if (p != NULL && !cmsSaveProfileToMem(h, p, &len)) {
            free(p);
            p = NULL;
        }
    }
    cmsCloseProfile(h);
    cmsFreeToneCurve(g);
    *n = len;
    return p;
}

static uint8_t *srgb(size_t *n)
{
    cmsHPROFILE h = cmsCreate_sRGBProfile();
    cmsUInt32Number len = 0;
    uint8_t *p = NULL;
    if (cmsSaveProfileToMem(h, NULL, &len) && len > 0) {
        p = malloc(len);
        if (p != NULL && !cmsSaveProfileToMem(h, p, &len)) {
            free(p);
            p = NULL;
        }
    }
    cmsCloseProfile(h);
    *n = len;
    return p;
}

static struct img *sample(int ch)
{
    struct img *im = img_create(9, 5, ch);
    if (im != NULL) {
        for (size_t i = 0; i < im->stride * (size_t)im->height; i++) {
            im->px[i] = (uint8_t)(40 + (i * 53) % 180);
        }
    }
    return im;
}

static int same(const struct img *a, const struct img *b)
{
    return memcmp(a->px, b->px, a->stride * (size_t)a->height) == 0;
}

static void test_convert_and_identity(void)
{
    size_t an = 0, sn = 0;
    uint8_t *a = adobe_rgb(&an), *s = srgb(&sn);
    struct img *im = sample(3), *ref = sample(3);
    CHECK(a != NULL && s != NULL && im != NULL && ref != NULL);
    if (a == NULL || s == NULL || im == NULL || ref == NULL) {
        goto out;
    }
    CHECK_EQ_INT(img_icc_to_srgb(im, a, an), 1);
    CHECK(!same(im, ref));
    CHECK_EQ_INT(img_icc_fits(a, an, 3), 1);
    CHECK_EQ_INT(img_icc_fits(a, an, 4), 1);
    CHECK_EQ_INT(img_icc_fits(a, an, 1), 0); /* gray pixels, an RGB profile */
    img_destroy(im);
    im = sample(3);
    CHECK_EQ_INT(img_icc_to_srgb(im, s, sn), 0); /* the identity: left alone */
    CHECK(same(im, ref));
    /* Cut in half, its size field lying, its signature gone: ignored, pixels untouched. */
    CHECK_EQ_INT(img_icc_to_srgb(im, a, an / 2), 0);
    a[0] ^= 0x40;
    CHECK_EQ_INT(img_icc_to_srgb(im, a, an), 0);
    a[0] ^= 0x40;
    memcpy(a + 36, "xxxx", 4);
    CHECK_EQ_INT(img_icc_to_srgb(im, a, an), 0);
    CHECK(same(im, ref));
out:
    img_destroy(im);
    img_destroy(ref);
    free(a);
    free(s);
    img_icc_flush();
}

/* Only batchd's own allocation is failed here (the copy of the profile that the cache
 * keeps, the first allocation of a miss): lcms2 2.14 itself does not survive a failed small
 * allocation everywhere (its optimiser dereferences one), so failures deeper in are not
 * tried; a worker that runs out there dies and is replaced (worker_crashed). */
static void test_out_of_memory_fails_and_is_forgotten(void)
{
#ifdef BATCHD_TORTURE
    size_t an = 0;
    uint8_t *a = adobe_rgb(&an);
    struct img *im = sample(4);
    CHECK(a != NULL && im != NULL);
    if (a != NULL && im != NULL) {
        img_icc_flush();
        torture_arm(1);
        int rc = img_icc_to_srgb(im, a, an);
        torture_arm(0);
        CHECK_EQ_INT(rc, -1); /* never 0: that would be colours silently wrong */
        CHECK_EQ_INT(img_icc_to_srgb(im, a, an), 1); /* not cached as "ignore" */
    }
    img_destroy(im);
    free(a);
    img_icc_flush();
#endif
}

static const struct check_case cases[] = {
    {"convert_and_identity", test_convert_and_identity},
    {"out_of_memory_fails_and_is_forgotten", test_out_of_memory_fails_and_is_forgotten},
};
CHECK_MAIN("test_img_icc", cases)
