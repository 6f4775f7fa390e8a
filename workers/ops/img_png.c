/* PNG codec on libpng. libpng reports errors by longjmp to png_jmpbuf: png_guarded() is the
 * only function that calls setjmp, and everything a decode or encode owns lives in struct
 * png_ctx, so it is freed from C whichever way the body left. */
#include "img_png.h"

#include "../../api/errors.h"
#include "img_meta.h"
#include "img_png_idat.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ancillary chunks can be hostile (zTXt/iCCP zlib bombs, huge sPLT): batchd reads only
 * iCCP, eXIf and iTXt, and only when the job asks for them; a single chunk above this is
 * skipped or refused by libpng. */
#define PNG_CHUNK_MALLOC_MAX (8u * 1024 * 1024)
#define PNG_CHUNK_CACHE_MAX 1000

struct png_ctx {
    png_structp png;
    png_infop info;
    int err;
    char *msg;
    size_t msglen;
    /* decode */
    const uint8_t *data;
    size_t len, pos;
    const struct img_decode_opts *opts;
    int libpng_only; /* img_png_decode_libpng: no fast path */
    struct img_header *hdr;
    struct img *im;
    png_bytep *rows;
    /* encode */
    const struct img *src;
    int level;
    const struct img_meta *meta;
    struct buf *out;
};

static const char xmp_key[] = "XML:com.adobe.xmp";

static void on_error(png_structp png, png_const_charp text)
{
    struct png_ctx *c = png_get_error_ptr(png);
    if (c->err == 0) {
        c->err = -BATCHD_E_CORRUPT_IMAGE;
    }
    if (c->msg[0] == '\0') {
        snprintf(c->msg, c->msglen, "png: %s", text);
    }
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp text)
{
    /* Warnings are recoverable quirks (a bad CRC in an ancillary chunk, a skipped huge
     * chunk): the image itself is intact. */
    (void)png;
    (void)text;
}

static void on_read(png_structp png, png_bytep dst, size_t n)
{
    struct png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos) {
        c->err = -BATCHD_E_CORRUPT_IMAGE;
        snprintf(c->msg, c->msglen, "png: the file is truncated");
        png_error(png, "truncated");
    }
    memcpy(dst, c->data + c->pos, n);
    c->pos += n;
}

static void on_write(png_structp png, png_bytep src, size_t n)
{
    struct png_ctx *c = png_get_io_ptr(png);
    if (buf_add(c->out, src, n) != 0) {
        c->err = -BATCHD_E_TOO_LARGE;
        snprintf(c->msg, c->msglen, "%s",
                 errno == ENOMEM ? "out of memory for the encoded image"
                                 : "the encoded image is larger than allowed");
        png_error(png, "output too large");
    }
}

static void on_flush(png_structp png)
{
    (void)png;
}

/* The chunks asked for (WANT) into the metadata, once the whole file is read: a profile that
 * libpng accepted (it drops one that does not fit the colour type), EXIF, the XMP packet.
 * Returns 0 or -BATCHD_E_TOO_LARGE (out of memory). */
static int read_meta(struct png_ctx *c, unsigned want)
{
    struct img_meta *meta = c->opts->meta;
    int fail = 0;
    png_charp name = NULL;
    int comp = 0;
    png_bytep prof = NULL;
    png_uint_32 plen = 0;
    if ((want & IMG_WANT_ICC) && png_get_iCCP(c->png, c->info, &name, &comp, &prof, &plen) != 0 &&
        prof != NULL && plen > 0) {
        fail |= img_meta_set(&meta->icc, &meta->icc_len, prof, plen);
    }
    png_bytep exif = NULL;
    png_uint_32 elen = 0;
    if ((want & IMG_WANT_META) && png_get_eXIf_1(c->png, c->info, &elen, &exif) != 0 &&
        exif != NULL && elen > 0 && elen <= IMG_META_MAX_BYTES) {
        fail |= img_meta_set(&meta->exif, &meta->exif_len, exif, elen);
    }
    png_textp text = NULL;
    int ntext = 0;
    if (want & IMG_WANT_META) {
        png_get_text(c->png, c->info, &text, &ntext);
    }
    for (int i = 0; i < ntext && meta->xmp == NULL; i++) {
        size_t n = text[i].compression >= PNG_ITXT_COMPRESSION_NONE ? text[i].itxt_length
                                                                    : text[i].text_length;
        if (strcmp(text[i].key, xmp_key) == 0 && n > 0 && n <= IMG_META_MAX_BYTES) {
            fail |= img_meta_set(&meta->xmp, &meta->xmp_len, text[i].text, n);
        }
    }
    if (fail) {
        snprintf(c->msg, c->msglen, "out of memory");
        return -BATCHD_E_TOO_LARGE;
    }
    return 0;
}

static int decode_body(struct png_ctx *c)
{
    png_structp png = c->png;
    png_infop info = c->info;
    static const png_byte ignored[] = "tEXt\0zTXt\0iTXt\0iCCP\0sPLT\0eXIf\0pCAL\0sCAL\0hIST\0"
                                      "tIME\0pHYs\0sBIT\0bKGD\0cHRM\0gAMA\0sRGB\0sTER\0oFFs";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, ignored, (int)(sizeof ignored / 5));
    struct img_meta *meta = c->opts->meta;
    unsigned want = meta != NULL ? c->opts->want : 0;
    if (want & IMG_WANT_ICC) {
        png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_AS_DEFAULT, (png_const_bytep) "iCCP", 1);
    }
    if (want & IMG_WANT_META) {
        png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_AS_DEFAULT,
                                    (png_const_bytep) "eXIf\0iTXt", 2);
    }
    png_set_user_limits(png, IMG_MAX_SIDE, IMG_MAX_SIDE);
    png_set_chunk_malloc_max(png, PNG_CHUNK_MALLOC_MAX);
    png_set_chunk_cache_max(png, PNG_CHUNK_CACHE_MAX);
    png_set_read_fn(png, c, on_read);
    png_read_info(png, info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if ((uint64_t)w * h > c->opts->max_pixels) {
        snprintf(c->msg, c->msglen, "the image is %ux%u pixels, more than the limit of %llu",
                 (unsigned)w, (unsigned)h, (unsigned long long)c->opts->max_pixels);
        return -BATCHD_E_TOO_LARGE;
    }
    if (depth == 16) {
        png_set_strip_16(png);
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(png);
    }
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) {
        png_set_expand_gray_1_2_4_to_8(png);
    }
    if (png_get_valid(png, info, PNG_INFO_tRNS)) {
        png_set_tRNS_to_alpha(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int ch = png_get_channels(png, info);
    if (ch < 1 || ch > 4 || png_get_rowbytes(png, info) != (size_t)w * (size_t)ch) {
        snprintf(c->msg, c->msglen, "png: unexpected row layout");
        return -BATCHD_E_CORRUPT_IMAGE;
    }
    c->hdr->width = (int)w;
    c->hdr->height = (int)h;
    c->hdr->channels = ch;
    c->hdr->orientation = 1;
    if (c->opts->pick_scale != NULL) {
        int rc = c->opts->pick_scale(c->opts->ctx, c->hdr, c->msg, c->msglen);
        if (rc < 0) {
            return rc; /* PNG has no reduced decode: only a refusal matters */
        }
    }
    c->im = img_create((int)w, (int)h, ch);
    if (c->im == NULL) {
        snprintf(c->msg, c->msglen, "out of memory for %ux%u pixels", (unsigned)w, (unsigned)h);
        return -BATCHD_E_TOO_LARGE;
    }
    /* The plain case, which is most large PNGs, skips libpng's row loop; anything else, and
     * any file the fast path finds less than plainly valid, is libpng's. Metadata chunks may
     * follow the pixels, and only libpng's png_read_end reads them. */
    int plain = (depth == 8 || depth == 16) && interlace == PNG_INTERLACE_NONE &&
                (ctype & PNG_COLOR_MASK_PALETTE) == 0 && !png_get_valid(png, info, PNG_INFO_tRNS) &&
                (want & IMG_WANT_META) == 0;
    if (plain && !c->libpng_only) {
        int rc = img_png_idat_decode(c->data, c->len, depth, c->opts->max_memory, c->im, c->msg,
                                     c->msglen);
        if (rc <= 0) {
            return rc < 0 ? rc : read_meta(c, want);
        }
    }
    c->rows = malloc(sizeof *c->rows * h);
    if (c->rows == NULL) {
        snprintf(c->msg, c->msglen, "out of memory for %ux%u pixels", (unsigned)w, (unsigned)h);
        return -BATCHD_E_TOO_LARGE;
    }
    for (png_uint_32 y = 0; y < h; y++) {
        c->rows[y] = c->im->px + (size_t)y * c->im->stride;
    }
    png_read_image(png, c->rows);
    /* Reading to IEND finishes the zlib stream, which checks its Adler-32; eXIf and iTXt
     * may come after the pixels. */
    png_read_end(png, info);
    return read_meta(c, want);
}

/* The metadata given: iCCP (libpng checks the profile against the colour type and drops
 * one that does not fit, with a warning), eXIf, and XMP in an uncompressed iTXt. */
static void write_meta(struct png_ctx *c)
{
    const struct img_meta *m = c->meta;
    if (m == NULL) {
        return;
    }
    if (m->icc != NULL && m->icc_len > 0 && m->icc_len <= IMG_ICC_MAX_BYTES) {
        png_set_iCCP(c->png, c->info, "icc", PNG_COMPRESSION_TYPE_BASE, m->icc,
                     (png_uint_32)m->icc_len);
    }
    if (m->exif != NULL && m->exif_len > 0 && m->exif_len <= IMG_META_MAX_BYTES) {
        png_set_eXIf_1(c->png, c->info, (png_uint_32)m->exif_len, m->exif);
    }
    if (m->xmp != NULL && m->xmp_len > 0 && m->xmp_len <= IMG_META_MAX_BYTES) {
        png_text t;
        memset(&t, 0, sizeof t);
        t.compression = PNG_ITXT_COMPRESSION_NONE;
        t.key = (png_charp)xmp_key;
        t.text = (png_charp)m->xmp; /* NUL-terminated (img_meta_set): libpng takes strlen */
        t.itxt_length = m->xmp_len;
        t.lang = (png_charp) "";
        t.lang_key = (png_charp) "";
        png_set_text(c->png, c->info, &t, 1);
    }
}

static int encode_body(struct png_ctx *c)
{
    png_structp png = c->png;
    const struct img *im = c->src;
    static const int types[] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    png_set_write_fn(png, c, on_write, on_flush);
    png_set_IHDR(png, c->info, (png_uint_32)im->width, (png_uint_32)im->height, 8,
                 types[im->channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, c->level);
    write_meta(c);
    if (c->level == 0) {
        png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
    } else if (c->level <= 3) {
        png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
    } else {
        png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_ALL_FILTERS);
    }
    png_write_info(png, c->info);
    for (int y = 0; y < im->height; y++) {
        png_write_row(png, im->px + (size_t)y * im->stride);
    }
    png_write_end(png, NULL);
    return 0;
}

/* The one setjmp of libpng's error handling. */
static int png_guarded(struct png_ctx *c, int (*body)(struct png_ctx *))
{
    if (setjmp(png_jmpbuf(c->png)) != 0) {
        return c->err != 0 ? c->err : -BATCHD_E_CORRUPT_IMAGE;
    }
    return body(c);
}

static int decode(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                  int libpng_only, struct img_header *hdr, struct img **out, char *msg,
                  size_t msglen)
{
    *out = NULL;
    msg[0] = '\0';
    struct png_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -BATCHD_E_INTERNAL;
    }
    int rc = -BATCHD_E_INTERNAL;
    c->data = data;
    c->len = len;
    c->opts = opts;
    c->libpng_only = libpng_only;
    c->hdr = hdr;
    c->msg = msg;
    c->msglen = msglen;
    c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    if (c->png != NULL) {
        c->info = png_create_info_struct(c->png);
    }
    if (c->info == NULL) {
        snprintf(msg, msglen, "out of memory");
        goto out;
    }
    rc = png_guarded(c, decode_body);
out:
    png_destroy_read_struct(c->png ? &c->png : NULL, c->info ? &c->info : NULL, NULL);
    if (rc == 0) {
        *out = c->im;
    } else {
        img_destroy(c->im);
    }
    free(c->rows);
    free(c);
    return rc;
}

int img_png_decode(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                   struct img_header *hdr, struct img **out, char *msg, size_t msglen)
{
    return decode(data, len, opts, 0, hdr, out, msg, msglen);
}

int img_png_decode_libpng(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                          struct img_header *hdr, struct img **out, char *msg, size_t msglen)
{
    return decode(data, len, opts, 1, hdr, out, msg, msglen);
}

int img_png_encode(const struct img *im, int level, const struct img_meta *meta, struct buf *out,
                   char *msg, size_t msglen)
{
    msg[0] = '\0';
    if (im->premultiplied) {
        snprintf(msg, msglen, "png: premultiplied input");
        return -BATCHD_E_INTERNAL;
    }
    struct png_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -BATCHD_E_INTERNAL;
    }
    int rc = -BATCHD_E_INTERNAL;
    c->src = im;
    c->level = level < 0 ? 0 : level > 9 ? 9 : level;
    c->meta = meta;
    c->out = out;
    c->msg = msg;
    c->msglen = msglen;
    c->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    if (c->png != NULL) {
        c->info = png_create_info_struct(c->png);
    }
    if (c->info == NULL) {
        snprintf(msg, msglen, "out of memory");
        goto out;
    }
    c->err = 0;
    png_set_benign_errors(c->png, 1); /* a profile libpng dislikes is dropped, not fatal */
    rc = png_guarded(c, encode_body);
    if (rc == -BATCHD_E_CORRUPT_IMAGE) {
        rc = -BATCHD_E_INTERNAL; /* libpng refused our own data */
    }
out:
    png_destroy_write_struct(c->png ? &c->png : NULL, c->info ? &c->info : NULL);
    free(c);
    return rc;
}
