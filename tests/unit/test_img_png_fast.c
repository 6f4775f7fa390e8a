/* Unit tests of the PNG fast path (workers/ops/img_png_idat.c) against libpng alone
 * (img_png_decode_libpng): PNGs made here with every filter type on every row layout (1 to 4
 * channels, 8 and 16 bits, odd widths, the zlib stream over several IDAT chunks) decode on
 * the fast path itself to libpng's pixels; cut, bit-flipped or misordered copies are handed
 * back to libpng (1) and end as libpng says; and every PNG of the shared data (PngSuite, the
 * broken files, the photos) gives the same code and the same pixels both ways. */
#include "../../api/errors.h"
#include "../../workers/ops/img_png.h"
#include "../../workers/ops/img_png_idat.h"
#include "../check.h"

#include <dirent.h>
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bytes {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct bytes *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            abort();
        }
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put32(struct bytes *b, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, be, 4);
}

static void chunk(struct bytes *b, const char *type, const uint8_t *data, size_t n)
{
    put32(b, (uint32_t)n);
    size_t at = b->n;
    put(b, type, 4);
    if (n > 0) {
        put(b, data, n);
    }
    put32(b, libdeflate_crc32(0, b->p + at, n + 4));
}

static uint32_t rnd_state = 12345;

static uint8_t rnd(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (uint8_t)(rnd_state >> 16);
}

/* A W x H PNG of colour type CTYPE and bit DEPTH whose rows use filter (y + SHIFT) % 5 over
 * random bytes (every filtered row is valid), the zlib stream cut into PARTS IDAT chunks. */
static struct bytes make_png(int w, int h, int ctype, int depth, int shift, int parts)
{
    static const int chans[7] = {1, 0, 3, 0, 2, 0, 4};
    size_t rb = (size_t)w * (size_t)chans[ctype] * (size_t)(depth / 8);
    size_t rawn = (rb + 1) * (size_t)h;
    uint8_t *raw = malloc(rawn);
    for (size_t y = 0; y < (size_t)h; y++) {
        raw[y * (rb + 1)] = (uint8_t)((y + (size_t)shift) % 5);
        for (size_t i = 0; i < rb; i++) {
            raw[y * (rb + 1) + 1 + i] = rnd();
        }
    }
    struct libdeflate_compressor *cz = libdeflate_alloc_compressor(6);
    size_t zcap = libdeflate_zlib_compress_bound(cz, rawn);
    uint8_t *z = malloc(zcap);
    size_t zn = libdeflate_zlib_compress(cz, raw, rawn, z, zcap);
    libdeflate_free_compressor(cz);
    struct bytes b = {0};
    put(&b, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {0};
    ihdr[0] = (uint8_t)(w >> 24);
    ihdr[1] = (uint8_t)(w >> 16);
    ihdr[2] = (uint8_t)(w >> 8);
    ihdr[3] = (uint8_t)w;
    ihdr[7] = (uint8_t)h; /* h < 256 here */
    ihdr[8] = (uint8_t)depth;
    ihdr[9] = (uint8_t)ctype;
    chunk(&b, "IHDR", ihdr, sizeof ihdr);
    size_t at = 0;
    for (int i = 0; i < parts; i++) {
        size_t n = i == parts - 1 ? zn - at : zn / (size_t)parts;
        chunk(&b, "IDAT", z + at, n);
        at += n;
    }
    chunk(&b, "tEXt", (const uint8_t *)"Comment\0after", 13);
    chunk(&b, "IEND", NULL, 0);
    free(z);
    free(raw);
    return b;
}

static const struct img_decode_opts opts = {
    .max_pixels = 64u * 1024 * 1024, .max_memory = 256u * 1024 * 1024, .max_scans = 100};

/* The two decoders agree on DATA: the same code, and on success the same image. Returns the
 * code. */
static int agree(const uint8_t *data, size_t len, const char *what)
{
    struct img_header h1, h2;
    struct img *a = NULL, *b = NULL;
    char m1[256] = "", m2[256] = "";
    int r1 = img_png_decode(data, len, &opts, &h1, &a, m1, sizeof m1);
    int r2 = img_png_decode_libpng(data, len, &opts, &h2, &b, m2, sizeof m2);
    if (r1 != r2) {
        fprintf(stderr, "%s: fast %d (%s), libpng %d (%s)\n", what, r1, m1, r2, m2);
    }
    CHECK_EQ_INT(r1, r2);
    if (r1 == 0 && r2 == 0) {
        CHECK_EQ_INT(a->width, b->width);
        CHECK_EQ_INT(a->height, b->height);
        CHECK_EQ_INT(a->channels, b->channels);
        int same =
            a->stride == b->stride && memcmp(a->px, b->px, a->stride * (size_t)a->height) == 0;
        if (!same) {
            fprintf(stderr, "%s: other pixels\n", what);
        }
        CHECK(same);
    }
    img_destroy(a);
    img_destroy(b);
    return r1;
}

/* The fast path itself decodes DATA (0) to libpng's pixels. */
static void fast_decodes(const struct bytes *png, const char *what)
{
    CHECK_EQ_INT(agree(png->p, png->n, what), 0);
    struct img_header hdr;
    struct img *ref = NULL;
    char msg[256] = "";
    CHECK_EQ_INT(img_png_decode_libpng(png->p, png->n, &opts, &hdr, &ref, msg, sizeof msg), 0);
    if (ref == NULL) {
        return;
    }
    struct img *im = img_create(ref->width, ref->height, ref->channels);
    int depth = png->p[8 + 8 + 8];
    int rc = img_png_idat_decode(png->p, png->n, depth, SIZE_MAX, im, msg, sizeof msg);
    if (rc != 0) {
        fprintf(stderr, "%s: the fast path refused it (%d)\n", what, rc);
    }
    CHECK_EQ_INT(rc, 0);
    CHECK(rc != 0 || memcmp(im->px, ref->px, ref->stride * (size_t)ref->height) == 0);
    img_destroy(im);
    img_destroy(ref);
}

/* The fast path refuses DATA (1: libpng decides) and both decoders agree. */
static void fast_refuses(const struct bytes *png, int w, int h, int ch, int depth, const char *what)
{
    struct img *im = img_create(w, h, ch);
    char msg[256] = "";
    int rc = img_png_idat_decode(png->p, png->n, depth, SIZE_MAX, im, msg, sizeof msg);
    if (rc != 1) {
        fprintf(stderr, "%s: the fast path gave %d, not 1\n", what, rc);
    }
    CHECK_EQ_INT(rc, 1);
    img_destroy(im);
    agree(png->p, png->n, what);
}

static void test_every_filter_and_layout(void)
{
    static const int ctypes[4] = {0, 4, 2, 6};
    static const int widths[4] = {1, 2, 7, 33};
    char what[96];
    for (int t = 0; t < 4; t++) {
        for (int depth = 8; depth <= 16; depth += 8) {
            for (int wi = 0; wi < 4; wi++) {
                for (int parts = 1; parts <= 3; parts += 2) {
                    struct bytes png = make_png(widths[wi], 11, ctypes[t], depth, wi, parts);
                    snprintf(what, sizeof what, "ctype %d depth %d width %d parts %d", ctypes[t],
                             depth, widths[wi], parts);
                    fast_decodes(&png, what);
                    free(png.p);
                }
            }
        }
    }
}

/* Offset of the first chunk of TYPE in PNG. */
static size_t find_chunk(const struct bytes *png, const char *type)
{
    size_t pos = 8;
    while (pos + 12 <= png->n) {
        size_t n = (size_t)png->p[pos] << 24 | (size_t)png->p[pos + 1] << 16 |
                   (size_t)png->p[pos + 2] << 8 | png->p[pos + 3];
        if (memcmp(png->p + pos + 4, type, 4) == 0) {
            return pos;
        }
        pos += 12 + n;
    }
    return 0;
}

static void test_broken_copies_go_to_libpng(void)
{
    struct bytes png = make_png(33, 11, 6, 8, 0, 3);
    char what[64];
    /* Every cut: the fast path never reads past the end and libpng's verdict stands. */
    for (size_t n = 8; n < png.n; n += 7) {
        struct bytes cut = {png.p, n, n};
        snprintf(what, sizeof what, "cut at %zu", n);
        fast_refuses(&cut, 33, 11, 4, 8, what);
    }
    /* A flipped bit in any IDAT or in IEND: a CRC mismatch, so libpng reads it (an error
     * for a critical chunk), never silently other pixels. */
    size_t idat = find_chunk(&png, "IDAT");
    size_t iend = find_chunk(&png, "IEND");
    size_t spots[3] = {idat + 8, idat + 20, iend + 9};
    for (int i = 0; i < 3; i++) {
        png.p[spots[i]] ^= 0x10;
        snprintf(what, sizeof what, "bit flipped at %zu", spots[i]);
        fast_refuses(&png, 33, 11, 4, 8, what);
        CHECK_EQ_INT(agree(png.p, png.n, what), -BATCHD_E_CORRUPT_IMAGE);
        png.p[spots[i]] ^= 0x10;
    }
    free(png.p);
}

/* PNGs whose chunk CRCs are right but whose content is wrong: a filter byte of 5, a zlib
 * stream one row short, an IDAT after another chunk, a critical chunk after the pixels
 * (unknown: an error; PLTE: a benign one for libpng, which decodes). The fast path hands
 * every one to libpng. */
static void test_valid_crcs_wrong_content(void)
{
    struct bytes b = make_png(7, 11, 2, 8, 0, 1);
    /* Rebuild with a bad filter byte: inflate, patch, deflate, re-chunk. */
    size_t idat = find_chunk(&b, "IDAT");
    size_t zn = (size_t)b.p[idat] << 24 | (size_t)b.p[idat + 1] << 16 | (size_t)b.p[idat + 2] << 8 |
                b.p[idat + 3];
    size_t rawn = (7 * 3 + 1) * 11;
    uint8_t *raw = malloc(rawn);
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    CHECK_EQ_INT(libdeflate_zlib_decompress(d, b.p + idat + 8, zn, raw, rawn, NULL), 0);
    libdeflate_free_decompressor(d);
    struct libdeflate_compressor *cz = libdeflate_alloc_compressor(6);
    uint8_t z[4096];
    static const struct {
        const char *what;
        size_t raw_len;   /* of the rows deflated */
        int bad_filter;   /* row 5's filter byte becomes 5 */
        const char *mid;  /* a chunk between two IDATs, or NULL */
        const char *tail; /* a chunk after the IDATs, or NULL */
        int fails;        /* libpng's verdict: corrupt (1), or a benign error, decoded (0) */
    } cases[] = {
        {"filter byte 5", 0, 1, NULL, NULL, 1},
        {"one row short", 7 * 3 + 1, 0, NULL, NULL, 1},
        {"IDAT after tEXt", 0, 0, "tEXt", NULL, 1},
        {"an unknown critical chunk after IDAT", 0, 0, NULL, "ZZZZ", 1},
        {"PLTE after IDAT", 0, 0, NULL, "PLTE", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *rows = malloc(rawn);
        memcpy(rows, raw, rawn);
        if (cases[i].bad_filter) {
            rows[5 * (7 * 3 + 1)] = 5;
        }
        size_t n = libdeflate_zlib_compress(cz, rows, rawn - cases[i].raw_len, z, sizeof z);
        struct bytes p = {0};
        put(&p, b.p, idat); /* signature and IHDR */
        if (cases[i].mid != NULL) {
            chunk(&p, "IDAT", z, n / 2);
            chunk(&p, cases[i].mid, (const uint8_t *)"Comment\0x", 9);
            chunk(&p, "IDAT", z + n / 2, n - n / 2);
        } else {
            chunk(&p, "IDAT", z, n);
        }
        if (cases[i].tail != NULL) {
            chunk(&p, cases[i].tail, (const uint8_t *)"\0\0\0", 3);
        }
        chunk(&p, "IEND", NULL, 0);
        fast_refuses(&p, 7, 11, 3, 8, cases[i].what);
        int rc = agree(p.p, p.n, cases[i].what);
        if ((rc != 0) != cases[i].fails) {
            fprintf(stderr, "%s: libpng gave %d\n", cases[i].what, rc);
        }
        CHECK_EQ_INT(rc != 0, cases[i].fails);
        free(p.p);
        free(rows);
    }
    libdeflate_free_compressor(cz);
    free(raw);
    free(b.p);
}

/* Past the bound on working memory (here 16 bytes: the 11 filter bytes fit, the copy of an
 * IDAT run in several chunks does not), the file is left to libpng, which streams it. */
static void test_copy_bound(void)
{
    for (int parts = 1; parts <= 3; parts += 2) {
        struct bytes png = make_png(33, 11, 6, 8, 0, parts);
        struct img *im = img_create(33, 11, 4);
        char msg[256] = "";
        CHECK_EQ_INT(img_png_idat_decode(png.p, png.n, 8, 16, im, msg, sizeof msg),
                     parts > 1 ? 1 : 0);
        img_destroy(im);
        free(png.p);
    }
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct bytes b = {0};
    uint8_t tmp[65536];
    size_t r;
    while ((r = fread(tmp, 1, sizeof tmp, f)) > 0) {
        put(&b, tmp, r);
    }
    fclose(f);
    *n = b.n;
    return b.p;
}

/* Every .png in DIR (not recursive) decodes alike both ways; returns how many were read. */
static int agree_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    int count = 0;
    struct dirent *e;
    char path[2048];
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 4, ".png") != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t n = 0;
        uint8_t *data = read_file(path, &n);
        if (data != NULL) {
            agree(data, n, path);
            count++;
        }
        free(data);
    }
    closedir(d);
    return count;
}

static void test_shared_pngs_alike(void)
{
    const char *shared = getenv("BATCHD_SHARED");
    if (shared == NULL) {
        shared = "../shared";
    }
    static const char *dirs[] = {"data/pngsuite",
                                 "data/photos",
                                 "data/broken/png/pngsuite-x",
                                 "data/broken/png/libpng-crashers",
                                 "data/broken/png/libpng-badpal",
                                 "data/broken/png/pillow"};
    int total = 0;
    char dir[1024];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(dir, sizeof dir, "%s/%s", shared, dirs[i]);
        total += agree_dir(dir);
    }
    printf("  %d shared PNGs decoded both ways\n", total);
    CHECK(total > 170);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"every_filter_and_layout", test_every_filter_and_layout},
    {"broken_copies_go_to_libpng", test_broken_copies_go_to_libpng},
    {"valid_crcs_wrong_content", test_valid_crcs_wrong_content},
    {"copy_bound", test_copy_bound},
    {"shared_pngs_alike", test_shared_pngs_alike},
};
/* clang-format on */

CHECK_MAIN("test_img_png_fast", cases)
