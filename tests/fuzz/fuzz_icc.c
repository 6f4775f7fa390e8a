/* Fuzz target: the ICC profile path (workers/ops/img_icc.c) on arbitrary bytes taken as an
 * embedded profile: opened, checked and, when usable, turned into transforms for gray, RGB,
 * RGBA and CMYK pixels that then run. Any input must be used or ignored, never crash, leak
 * or take long (SPEC §6: a broken profile is treated as sRGB). The cache of transforms is
 * flushed every few inputs so that both its hits and its evictions are exercised. */
#include "workers/ops/img_icc.h"
#include "workers/ops/img_image.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned runs;
    for (int ch = 1; ch <= 4; ch++) {
        struct img *im = img_create(7, 3, ch);
        if (im == NULL) {
            return 0;
        }
        for (size_t i = 0; i < im->stride * (size_t)im->height; i++) {
            im->px[i] = (uint8_t)(i * 37);
        }
        (void)img_icc_fits(data, size, ch);
        (void)img_icc_to_srgb(im, data, size);
        img_destroy(im);
    }
    uint8_t cmyk[7 * 4], rgb[7 * 3];
    for (size_t i = 0; i < sizeof cmyk; i++) {
        cmyk[i] = (uint8_t)(i * 41);
    }
    for (int inverted = 0; inverted <= 1; inverted++) {
        int oom;
        const struct img_icc_xform *x = img_icc_cmyk_open(data, size, inverted, &oom);
        if (x != NULL) {
            img_icc_cmyk_row(x, cmyk, rgb, 7);
        }
    }
    if (++runs % 64 == 0) {
        img_icc_flush();
    }
    return 0;
}
