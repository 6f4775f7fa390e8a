/* The PNG fast path (img_png_idat.h): the chunks walked in the memory buffer, the IDAT run
 * inflated in one libdeflate call (it checks the Adler-32), each chunk it reads checked
 * against its CRC-32 (libdeflate's, folded with PCLMUL), and the rows unfiltered in place:
 * the inflated rows are one filter byte longer than the image's, so row y is unfiltered
 * from y + 1 bytes further on into its final place and the buffer is the image. Where it
 * goes, libpng spent 45% of a large RGBA decode in zlib's inflate and Adler-32 and 30% in
 * its byte-at-a-time Paeth filter (Debian's libpng has no SIMD filters on x86). */
#include "img_png_idat.h"

#include "../../api/errors.h"

#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* One PNG filter: OUT = the unfiltered row of RB bytes, from SRC (the filtered bytes) and
 * PRIOR (the previous unfiltered row, zeros for the first), BPP bytes a pixel. OUT may lie
 * before SRC in the same buffer (never after): each byte of SRC is read before OUT's write
 * reaches it, so nothing here is restrict. */
typedef void (*unfilter_fn)(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb,
                            size_t bpp);

static void un_none(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb, size_t bpp)
{
    (void)prior;
    (void)bpp;
    memmove(out, src, rb);
}

static void un_sub(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb, size_t bpp)
{
    (void)prior;
    for (size_t i = 0; i < rb; i++) {
        out[i] = (uint8_t)(src[i] + (i >= bpp ? out[i - bpp] : 0));
    }
}

static void un_up(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb, size_t bpp)
{
    (void)bpp;
    for (size_t i = 0; i < rb; i++) {
        out[i] = (uint8_t)(src[i] + prior[i]);
    }
}

static void un_avg(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb, size_t bpp)
{
    for (size_t i = 0; i < rb; i++) {
        unsigned a = i >= bpp ? out[i - bpp] : 0;
        out[i] = (uint8_t)(src[i] + ((a + prior[i]) >> 1));
    }
}

static uint8_t paeth(int a, int b, int c)
{
    int pa = abs(b - c);
    int pb = abs(a - c);
    int pc = abs(a + b - 2 * c);
    if (pa <= pb && pa <= pc) {
        return (uint8_t)a;
    }
    return (uint8_t)(pb <= pc ? b : c);
}

static void un_paeth(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb, size_t bpp)
{
    for (size_t i = 0; i < rb; i++) {
        int a = i >= bpp ? out[i - bpp] : 0;
        int c = i >= bpp ? prior[i - bpp] : 0;
        out[i] = (uint8_t)(src[i] + paeth(a, prior[i], c));
    }
}

static const unfilter_fn unfilters[5] = {un_none, un_sub, un_up, un_avg, un_paeth};

#if defined(__SSE2__)
/* Sub, Avg and Paeth carry from pixel to pixel, so the lanes are the 3 or 4 bytes of one
 * pixel (in 16 bits for Avg and Paeth), as libpng's own SSE2 filters do. */
/* A pixel is moved in 4 bytes even when it has 3: a 3-byte copy is two moves the CPU cannot
 * forward to the next load, and makes the loop twice slower. The byte after a 3-byte pixel
 * is always inside the buffer (the row after, or the 32 spare bytes of img_create, or the
 * zero row's second half); its load is discarded lane data, and its store lands on the next
 * pixel's first byte, written next, or past the row on bytes already read (the in-place
 * output trails its source by y + 1 bytes, see unfilter_8). */
static __m128i load_px(const uint8_t *p)
{
    uint32_t v = 0;
    memcpy(&v, p, 4);
    return _mm_cvtsi32_si128((int)v);
}

static void store_px(uint8_t *p, __m128i x)
{
    uint32_t v = (uint32_t)_mm_cvtsi128_si32(x);
    memcpy(p, &v, 4);
}

static void un_sub_px(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb, size_t bpp)
{
    (void)prior;
    __m128i a = _mm_setzero_si128();
    for (size_t i = 0; i + bpp <= rb; i += bpp) {
        a = _mm_add_epi8(load_px(src + i), a);
        store_px(out + i, a);
    }
}

static void un_avg_px(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb, size_t bpp)
{
    const __m128i zero = _mm_setzero_si128();
    __m128i a = zero;
    for (size_t i = 0; i + bpp <= rb; i += bpp) {
        __m128i b = _mm_unpacklo_epi8(load_px(prior + i), zero);
        __m128i avg = _mm_srli_epi16(_mm_add_epi16(a, b), 1);
        a = _mm_and_si128(_mm_add_epi16(_mm_unpacklo_epi8(load_px(src + i), zero), avg),
                          _mm_set1_epi16(0xff));
        store_px(out + i, _mm_packus_epi16(a, a));
    }
}

static __m128i abs16(__m128i x)
{
    return _mm_max_epi16(x, _mm_sub_epi16(_mm_setzero_si128(), x));
}

static __m128i pick16(__m128i mask, __m128i yes, __m128i no)
{
    return _mm_or_si128(_mm_and_si128(mask, yes), _mm_andnot_si128(mask, no));
}

static void un_paeth_px(uint8_t *out, const uint8_t *src, const uint8_t *prior, size_t rb,
                        size_t bpp)
{
    const __m128i zero = _mm_setzero_si128();
    __m128i a = zero, c = zero;
    for (size_t i = 0; i + bpp <= rb; i += bpp) {
        __m128i b = _mm_unpacklo_epi8(load_px(prior + i), zero);
        __m128i x = _mm_unpacklo_epi8(load_px(src + i), zero);
        /* p = a + b - c: |p - a| = |b - c|, |p - b| = |a - c|, |p - c| = |a + b - 2c| */
        __m128i pa = _mm_sub_epi16(b, c);
        __m128i pb = _mm_sub_epi16(a, c);
        __m128i pc = abs16(_mm_add_epi16(pa, pb));
        pa = abs16(pa);
        pb = abs16(pb);
        __m128i least = _mm_min_epi16(pc, _mm_min_epi16(pa, pb));
        __m128i pred =
            pick16(_mm_cmpeq_epi16(least, pa), a, pick16(_mm_cmpeq_epi16(least, pb), b, c));
        a = _mm_and_si128(_mm_add_epi16(x, pred), _mm_set1_epi16(0xff));
        c = b;
        store_px(out + i, _mm_packus_epi16(a, a));
    }
}

static const unfilter_fn unfilters_px[5] = {un_none, un_sub_px, un_up, un_avg_px, un_paeth_px};
#endif

/* The filters for BPP bytes a pixel. */
static const unfilter_fn *unfilters_for(size_t bpp)
{
#if defined(__SSE2__)
    if (bpp == 3 || bpp == 4) {
        return unfilters_px;
    }
#endif
    (void)bpp;
    return unfilters;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The chunk at POS: its data length in *N, 0; or 1 if it is cut or its length is bad. */
static int chunk_at(const uint8_t *data, size_t len, size_t pos, size_t *n)
{
    if (len - pos < 12) {
        return 1;
    }
    uint32_t v = be32(data + pos);
    if (v > 0x7fffffffu || len - pos - 12 < v) {
        return 1;
    }
    *n = v;
    return 0;
}

/* 1 when the chunk at POS has a type libpng accepts: four ASCII letters (else it fails). */
static int chunk_name_ok(const uint8_t *data, size_t pos)
{
    for (int i = 0; i < 4; i++) {
        uint8_t c = data[pos + 4 + i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) {
            return 0;
        }
    }
    return 1;
}

static int chunk_is(const uint8_t *data, size_t pos, const char *type)
{
    return memcmp(data + pos + 4, type, 4) == 0;
}

static int crc_ok(const uint8_t *data, size_t pos, size_t n)
{
    return libdeflate_crc32(0, data + pos + 4, n + 4) == be32(data + pos + 8 + n);
}

/* Walks the chunks from the signature to IEND, in the order libpng accepts without a word:
 * one run of IDAT, after it only ancillary chunks (named with letters), then IEND; checks the CRC
 * of every IDAT and of IEND (libpng checked those before the first IDAT). *FIRST = the first IDAT's
 * offset, *ZLEN = the run's data bytes, *COUNT = its chunks. 0, or 1 (libpng decides). */
static int walk(const uint8_t *data, size_t len, size_t *first, size_t *zlen, size_t *count)
{
    size_t pos = 8;
    int state = 0; /* 0 before the IDAT run, 1 in it, 2 after it */
    *zlen = 0;
    *count = 0;
    for (;;) {
        size_t n = 0;
        if (chunk_at(data, len, pos, &n) != 0 || !chunk_name_ok(data, pos)) {
            return 1;
        }
        int idat = chunk_is(data, pos, "IDAT");
        int iend = chunk_is(data, pos, "IEND");
        if ((idat || iend) && !crc_ok(data, pos, n)) {
            return 1;
        }
        if (idat) {
            if (state == 2) {
                return 1;
            }
            if (state == 0) {
                *first = pos;
            }
            state = 1;
            *zlen += n;
            (*count)++;
        } else {
            if (iend) {
                return state == 0 ? 1 : 0;
            }
            if (state == 1) {
                state = 2;
            }
            if (state == 2 && (data[pos + 4] & 0x20) == 0) {
                return 1; /* a critical chunk after the pixels */
            }
        }
        pos += 12 + n;
    }
}

/* The zlib stream of the IDAT run: borrowed from DATA when it is one chunk, else copied
 * into a new *OWNED (free it). 0, or -BATCHD_E_TOO_LARGE on OOM. */
static int gather(const uint8_t *data, size_t first, size_t zlen, size_t count, const uint8_t **z,
                  uint8_t **owned)
{
    *owned = NULL;
    if (count == 1) {
        *z = data + first + 8;
        return 0;
    }
    *owned = malloc(zlen > 0 ? zlen : 1);
    if (*owned == NULL) {
        return -BATCHD_E_TOO_LARGE;
    }
    size_t pos = first, at = 0;
    for (size_t i = 0; i < count; i++) {
        size_t n = be32(data + pos);
        memcpy(*owned + at, data + pos + 8, n);
        at += n;
        pos += 12 + n;
    }
    *z = *owned;
    return 0;
}

/* Unfilters the H inflated rows in PX (each a filter byte and RB bytes) into PX's image
 * rows of RB bytes (8-bit samples), in place. 0, or 1 on a bad filter byte. */
static int unfilter_8(uint8_t *px, const uint8_t *zero, size_t rb, size_t bpp, int h)
{
    const unfilter_fn *fns = unfilters_for(bpp);
    for (size_t y = 0; y < (size_t)h; y++) {
        const uint8_t *src = px + y * (rb + 1);
        uint8_t *out = px + y * rb;
        if (src[0] > 4) {
            return 1;
        }
        fns[src[0]](out, src + 1, y > 0 ? out - rb : zero, rb, bpp);
    }
    return 0;
}

/* The same for 16-bit samples: each row is unfiltered into CUR (PREV holds the row before,
 * zeros at first; both RB bytes) and its high bytes go to the image row of RB / 2 bytes. */
static int unfilter_16(uint8_t *px, uint8_t *cur, uint8_t *prev, size_t rb, size_t bpp, int h)
{
    const unfilter_fn *fns = unfilters_for(bpp);
    size_t stride = rb / 2;
    for (size_t y = 0; y < (size_t)h; y++) {
        const uint8_t *src = px + y * (rb + 1);
        if (src[0] > 4) {
            return 1;
        }
        fns[src[0]](cur, src + 1, prev, rb, bpp);
        uint8_t *out = px + y * stride;
        for (size_t i = 0; i < stride; i++) {
            out[i] = cur[2 * i];
        }
        uint8_t *t = prev;
        prev = cur;
        cur = t;
    }
    return 0;
}

int img_png_idat_decode(const uint8_t *data, size_t len, int depth, size_t max_copy, struct img *im,
                        char *msg, size_t msglen)
{
    int rc = 1;
    uint8_t *owned = NULL, *rows = NULL;
    struct libdeflate_decompressor *d = NULL;
    size_t first = 0, zlen = 0, count = 0;
    const uint8_t *z = NULL;
    size_t bpp = (size_t)im->channels * (size_t)(depth / 8);
    size_t rb = (size_t)im->width * bpp;
    size_t need = (rb + 1) * (size_t)im->height;
    /* The working memory beyond the image: the filter bytes (and the 16-bit rows' low bytes)
     * until the rows are in place, and the copy of an IDAT run in several chunks. */
    if (len < 8 || walk(data, len, &first, &zlen, &count) != 0 ||
        need - im->stride * (size_t)im->height + (count > 1 ? zlen : 0) > max_copy) {
        goto out;
    }
    rc = gather(data, first, zlen, count, &z, &owned);
    if (rc != 0) {
        goto out;
    }
    rc = -BATCHD_E_TOO_LARGE;
    uint8_t *px = realloc(im->px, need + 32);
    if (px == NULL) {
        goto out;
    }
    im->px = px;
    memset(px + need, 0, 32); /* what the 4-byte pixel loads read past the last row */
    rows = calloc(2, rb);
    d = libdeflate_alloc_decompressor();
    if (rows == NULL || d == NULL) {
        goto out;
    }
    rc = 1;
    if (libdeflate_zlib_decompress(d, z, zlen, px, need, NULL) != LIBDEFLATE_SUCCESS) {
        goto out;
    }
    if (depth == 8) {
        rc = unfilter_8(px, rows, rb, bpp, im->height);
    } else {
        rc = unfilter_16(px, rows, rows + rb, rb, bpp, im->height);
    }
    if (rc == 0 && depth == 16) {
        /* Give back the half the 16-bit rows needed; a failed shrink keeps the block. */
        uint8_t *small = realloc(px, im->stride * (size_t)im->height + 32);
        if (small != NULL) {
            im->px = small;
        }
    }
out:
    if (rc == -BATCHD_E_TOO_LARGE) {
        snprintf(msg, msglen, "out of memory for %dx%d pixels", im->width, im->height);
    }
    libdeflate_free_decompressor(d);
    free(rows);
    free(owned);
    return rc;
}
