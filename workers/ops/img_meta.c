/* Metadata blocks and the EXIF orientation tag (img_meta.h). */
#include "img_meta.h"

#include <stdlib.h>
#include <string.h>

void img_meta_cleanup(struct img_meta *m)
{
    if (m == NULL) {
        return;
    }
    free(m->icc);
    free(m->exif);
    free(m->xmp);
    memset(m, 0, sizeof *m);
}

int img_meta_set(uint8_t **dst, size_t *dst_len, const void *p, size_t n)
{
    free(*dst);
    *dst = NULL;
    *dst_len = 0;
    if (n == 0) {
        return 0;
    }
    *dst = malloc(n + 1);
    if (*dst == NULL) {
        return -1;
    }
    memcpy(*dst, p, n);
    (*dst)[n] = 0; /* XMP goes to libpng as a C string */
    *dst_len = n;
    return 0;
}

int img_meta_copy(struct img_meta *dst, const struct img_meta *src)
{
    memset(dst, 0, sizeof *dst);
    if (img_meta_set(&dst->icc, &dst->icc_len, src->icc, src->icc_len) != 0 ||
        img_meta_set(&dst->exif, &dst->exif_len, src->exif, src->exif_len) != 0 ||
        img_meta_set(&dst->xmp, &dst->xmp_len, src->xmp, src->xmp_len) != 0) {
        img_meta_cleanup(dst);
        return -1;
    }
    return 0;
}

static uint32_t rd16(const uint8_t *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : (uint32_t)p[0] << 8 | p[1];
}

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? rd16(p, 1) | rd16(p + 2, 1) << 16 : rd16(p, 0) << 16 | rd16(p + 2, 0);
}

/* The offset in P of IFD0's orientation entry (12 bytes), with *LE set, or 0 when there is
 * none (0 is never an entry's offset: the TIFF header is there). */
static size_t orientation_entry(const uint8_t *p, size_t n, int *le)
{
    if (n < 8) {
        return 0;
    }
    if (p[0] == 'I' && p[1] == 'I') {
        *le = 1;
    } else if (p[0] == 'M' && p[1] == 'M') {
        *le = 0;
    } else {
        return 0;
    }
    if (rd16(p + 2, *le) != 42) {
        return 0;
    }
    uint32_t ifd = rd32(p + 4, *le);
    if (ifd > n || n - ifd < 2) {
        return 0;
    }
    uint32_t count = rd16(p + ifd, *le);
    for (uint32_t i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) {
            break;
        }
        if (rd16(p + e, *le) == 0x0112) {
            return e;
        }
    }
    return 0;
}

int img_exif_orientation(const uint8_t *p, size_t n)
{
    int le = 0;
    size_t e = orientation_entry(p, n, &le);
    if (e == 0) {
        return 1;
    }
    uint32_t type = rd16(p + e + 2, le);
    uint32_t v = type == 3 ? rd16(p + e + 8, le) : type == 4 ? rd32(p + e + 8, le) : 0;
    return v >= 1 && v <= 8 ? (int)v : 1;
}

void img_exif_reset_orientation(uint8_t *p, size_t n)
{
    int le = 0;
    size_t e = orientation_entry(p, n, &le);
    if (e == 0) {
        return;
    }
    /* SHORT (3) or LONG (4), count 1: the value sits in the entry's last four bytes. */
    uint32_t type = rd16(p + e + 2, le);
    if (type != 3 && type != 4) {
        return; /* read as 1 already */
    }
    uint8_t *v = p + e + 8;
    memset(v, 0, 4);
    if (type == 4) {
        v[le ? 0 : 3] = 1;
    } else {
        v[le ? 0 : 1] = 1;
    }
}
