/* JPEG codec on the libjpeg API. libjpeg reports errors by calling error_exit, whose default
 * calls exit(): ours longjmps back to jpeg_guarded(), the only function here that calls
 * setjmp. Everything a decode or encode owns lives in struct jpeg_ctx (not in locals of
 * the function that called setjmp), so it is freed correctly whatever path was taken. */
#include "img_jpeg.h"

#include "../../api/errors.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

struct jpeg_ctx {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    int err; /* the code to fail with when error_exit fires */
    char *msg;
    size_t msglen;
    int is_compress;
    struct jpeg_decompress_struct d;
    struct jpeg_compress_struct c;
    struct jpeg_progress_mgr progress;
    struct jpeg_destination_mgr dest;
    /* decode */
    const uint8_t *data;
    size_t len;
    const struct img_decode_opts *opts;
    struct img_header *hdr;
    struct img *im; /* owned until handed to the caller */
    uint8_t *row;   /* CMYK scanline buffer */
    /* encode */
    const struct img *src;
    int quality, progressive;
    struct buf *out;
};

static void ctx_message(struct jpeg_ctx *c, j_common_ptr cinfo)
{
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(c->msg, c->msglen, "jpeg: %s", text);
}

static void on_error_exit(j_common_ptr cinfo)
{
    struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->err;
    int code = cinfo->err->msg_code;
    if (code == JERR_BAD_PRECISION) {
        c->err = -BATCHD_E_UNSUPPORTED_FORMAT;
    } else if (code == JERR_OUT_OF_MEMORY || code == JERR_NO_BACKING_STORE) {
        c->err = -BATCHD_E_TOO_LARGE;
    } else if (c->err == 0) {
        c->err = c->is_compress ? -BATCHD_E_INTERNAL : -BATCHD_E_CORRUPT_IMAGE;
    }
    if (c->msg[0] == '\0') {
        ctx_message(c, cinfo);
    }
    longjmp(c->jmp, 1);
}

/* Warnings (level -1) are mostly harmless quirks of real files ("extraneous bytes before
 * marker"), but a premature end of data means libjpeg invents the missing pixels: refuse
 * that, as Pillow does. Trace messages (level >= 0) are dropped. */
static void on_emit_message(j_common_ptr cinfo, int level)
{
    if (level >= 0) {
        return;
    }
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->err;
        c->err = -BATCHD_E_CORRUPT_IMAGE;
        snprintf(c->msg, c->msglen, "jpeg: the file is truncated");
        (*cinfo->err->error_exit)(cinfo);
    }
    cinfo->err->num_warnings++;
}

static void on_output_message(j_common_ptr cinfo)
{
    (void)cinfo;
}

/* Called by libjpeg between passes and rows: stops scan bombs (thousands of tiny
 * progressive scans) long before the job's deadline. */
static void on_progress(j_common_ptr cinfo)
{
    struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->err;
    if (!cinfo->is_decompressor) {
        return;
    }
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > c->opts->max_scans) {
        c->err = -BATCHD_E_CORRUPT_IMAGE;
        snprintf(c->msg, c->msglen, "jpeg: more than %d progressive scans", c->opts->max_scans);
        (*cinfo->err->error_exit)(cinfo);
    }
}

static uint32_t rd16(const uint8_t *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : (uint32_t)p[0] << 8 | p[1];
}

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? rd16(p, 1) | rd16(p + 2, 1) << 16 : rd16(p, 0) << 16 | rd16(p + 2, 0);
}

/* The EXIF orientation tag (0x0112) of IFD0 in an APP1 payload, or 1. Every offset is
 * checked against the payload's length: the bytes come from the user. */
static int exif_orientation(const uint8_t *p, size_t n)
{
    if (n < 14 || memcmp(p, "Exif\0\0", 6) != 0) {
        return 1;
    }
    const uint8_t *t = p + 6;
    size_t tn = n - 6;
    int le;
    if (t[0] == 'I' && t[1] == 'I') {
        le = 1;
    } else if (t[0] == 'M' && t[1] == 'M') {
        le = 0;
    } else {
        return 1;
    }
    if (rd16(t + 2, le) != 42) {
        return 1;
    }
    uint32_t ifd = rd32(t + 4, le);
    if (ifd > tn || tn - ifd < 2) {
        return 1;
    }
    uint32_t count = rd16(t + ifd, le);
    for (uint32_t i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > tn) {
            break;
        }
        if (rd16(t + e, le) == 0x0112) {
            uint32_t type = rd16(t + e + 2, le);
            uint32_t v = type == 3 ? rd16(t + e + 8, le) : type == 4 ? rd32(t + e + 8, le) : 0;
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
}

/* Pillow's MULDIV255. */
static inline unsigned muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

static int decode_body(struct jpeg_ctx *c)
{
    j_decompress_ptr d = &c->d;
    d->err = jpeg_std_error(&c->pub);
    c->pub.error_exit = on_error_exit;
    c->pub.emit_message = on_emit_message;
    c->pub.output_message = on_output_message;
    jpeg_create_decompress(d);
    c->progress.progress_monitor = on_progress;
    d->progress = &c->progress;
    d->mem->max_memory_to_use = (long)c->opts->max_memory;
    jpeg_mem_src(d, c->data, (unsigned long)c->len);
    jpeg_save_markers(d, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(d, TRUE);

    uint64_t pixels = (uint64_t)d->image_width * d->image_height;
    if (pixels > c->opts->max_pixels) {
        snprintf(c->msg, c->msglen, "the image is %ux%u pixels, more than the limit of %llu",
                 d->image_width, d->image_height, (unsigned long long)c->opts->max_pixels);
        return -BATCHD_E_TOO_LARGE;
    }
    if (d->image_width > IMG_MAX_SIDE || d->image_height > IMG_MAX_SIDE) {
        snprintf(c->msg, c->msglen, "the image is %ux%u pixels, a side is too long", d->image_width,
                 d->image_height);
        return -BATCHD_E_TOO_LARGE;
    }
    struct img_header *h = c->hdr;
    h->width = (int)d->image_width;
    h->height = (int)d->image_height;
    h->orientation = 1;
    for (jpeg_saved_marker_ptr m = d->marker_list; m != NULL; m = m->next) {
        if (m->marker == JPEG_APP0 + 1) {
            int o = exif_orientation(m->data, m->data_length);
            if (o != 1 || memcmp(m->data, "Exif", 4) == 0) {
                h->orientation = o;
                break;
            }
        }
    }
    int cmyk = 0;
    switch (d->jpeg_color_space) {
    case JCS_GRAYSCALE:
        d->out_color_space = JCS_GRAYSCALE;
        h->channels = 1;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        d->out_color_space = JCS_CMYK; /* libjpeg turns YCCK into CMYK */
        cmyk = 1;
        h->channels = 3;
        break;
    default:
        d->out_color_space = JCS_RGB;
        h->channels = 3;
        break;
    }
    int denom = c->opts->pick_scale ? c->opts->pick_scale(c->opts->ctx, h, c->msg, c->msglen) : 1;
    if (denom < 0) {
        return denom;
    }
    if (denom != 2 && denom != 4 && denom != 8) {
        denom = 1;
    }
    d->scale_num = 1;
    d->scale_denom = (unsigned)denom;
    d->dct_method = JDCT_ISLOW; /* what Pillow uses: the decode matches it exactly */
    jpeg_start_decompress(d);

    c->im = img_create((int)d->output_width, (int)d->output_height, h->channels);
    if (c->im == NULL) {
        snprintf(c->msg, c->msglen, "out of memory for %ux%u pixels", d->output_width,
                 d->output_height);
        return -BATCHD_E_TOO_LARGE;
    }
    if (cmyk) {
        c->row = malloc((size_t)d->output_width * 4);
        if (c->row == NULL) {
            snprintf(c->msg, c->msglen, "out of memory");
            return -BATCHD_E_TOO_LARGE;
        }
    }
    /* Adobe writes CMYK inverted (and says so in its APP14 marker); Pillow's CMYK -> RGB
     * is then R = (255 - C) * (255 - K) / 255 on the un-inverted values. */
    int inverted = d->saw_Adobe_marker;
    while (d->output_scanline < d->output_height) {
        uint8_t *dst = c->im->px + (size_t)d->output_scanline * c->im->stride;
        JSAMPROW rows[1] = {cmyk ? c->row : dst};
        if (jpeg_read_scanlines(d, rows, 1) != 1) {
            snprintf(c->msg, c->msglen, "jpeg: the file is truncated");
            return -BATCHD_E_CORRUPT_IMAGE;
        }
        if (cmyk) {
            const uint8_t *s = c->row;
            for (JDIMENSION x = 0; x < d->output_width; x++, s += 4, dst += 3) {
                unsigned k = inverted ? s[3] : 255u - s[3]; /* 255 - K */
                for (int i = 0; i < 3; i++) {
                    unsigned v = inverted ? 255u - s[i] : s[i]; /* C */
                    dst[i] = (uint8_t)(k - muldiv255(v, k));
                }
            }
        }
    }
    return 0;
}

/* Destination manager writing straight into the caller's struct buf. */
enum { JPEG_OUT_CHUNK = 64 * 1024 };

static void dest_init(j_compress_ptr cinfo)
{
    struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->err;
    char *p = buf_reserve(c->out, JPEG_OUT_CHUNK);
    if (p == NULL) {
        c->err = -BATCHD_E_TOO_LARGE;
        snprintf(c->msg, c->msglen, "%s",
                 errno == ENOMEM ? "out of memory for the encoded image"
                                 : "the encoded image is larger than allowed");
        ERREXIT(cinfo, JERR_OUT_OF_MEMORY);
    }
    c->dest.next_output_byte = (JOCTET *)p;
    c->dest.free_in_buffer = JPEG_OUT_CHUNK;
}

static boolean dest_empty(j_compress_ptr cinfo)
{
    struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->err;
    buf_commit(c->out, JPEG_OUT_CHUNK);
    dest_init(cinfo);
    return TRUE;
}

static void dest_term(j_compress_ptr cinfo)
{
    struct jpeg_ctx *c = (struct jpeg_ctx *)cinfo->err;
    buf_commit(c->out, JPEG_OUT_CHUNK - c->dest.free_in_buffer);
}

static int encode_body(struct jpeg_ctx *c)
{
    j_compress_ptr e = &c->c;
    e->err = jpeg_std_error(&c->pub);
    c->pub.error_exit = on_error_exit;
    c->pub.emit_message = on_emit_message;
    c->pub.output_message = on_output_message;
    jpeg_create_compress(e);
    c->dest.init_destination = dest_init;
    c->dest.empty_output_buffer = dest_empty;
    c->dest.term_destination = dest_term;
    e->dest = &c->dest;
    const struct img *im = c->src;
    e->image_width = (JDIMENSION)im->width;
    e->image_height = (JDIMENSION)im->height;
    e->input_components = im->channels;
    e->in_color_space = im->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(e); /* YCbCr with 2x2 luma sampling: 4:2:0 */
    jpeg_set_quality(e, c->quality, TRUE);
    e->dct_method = JDCT_ISLOW;
    if (c->progressive) {
        jpeg_simple_progression(e);
    }
    jpeg_start_compress(e, TRUE);
    while (e->next_scanline < e->image_height) {
        JSAMPROW rows[1] = {(JSAMPROW)(im->px + (size_t)e->next_scanline * im->stride)};
        jpeg_write_scanlines(e, rows, 1);
    }
    jpeg_finish_compress(e);
    return 0;
}

/* The one setjmp of libjpeg's error handling. BODY creates the codec object; whatever it
 * returns or however it leaves, the caller cleans up from C. */
static int jpeg_guarded(struct jpeg_ctx *c, int (*body)(struct jpeg_ctx *))
{
    if (setjmp(c->jmp) != 0) {
        return c->err != 0 ? c->err : -BATCHD_E_CORRUPT_IMAGE;
    }
    return body(c);
}

int img_jpeg_decode(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                    struct img_header *hdr, struct img **out, char *msg, size_t msglen)
{
    struct jpeg_ctx *c = calloc(1, sizeof *c);
    *out = NULL;
    msg[0] = '\0';
    if (c == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -BATCHD_E_INTERNAL;
    }
    c->data = data;
    c->len = len;
    c->opts = opts;
    c->hdr = hdr;
    c->msg = msg;
    c->msglen = msglen;
    int rc = jpeg_guarded(c, decode_body);
    jpeg_destroy_decompress(&c->d);
    if (rc == 0) {
        *out = c->im;
    } else {
        img_destroy(c->im);
    }
    free(c->row);
    free(c);
    return rc;
}

int img_jpeg_encode(const struct img *im, int quality, int progressive, struct buf *out, char *msg,
                    size_t msglen)
{
    if (im->channels != 1 && im->channels != 3) {
        snprintf(msg, msglen, "jpeg: cannot encode %d channels", im->channels);
        return -BATCHD_E_INTERNAL;
    }
    /* The image op's plan refuses such outputs before decoding; this is the codec's own
     * guard, so that no caller meets libjpeg's error as an internal one. */
    if (im->width > JPEG_MAX_DIMENSION || im->height > JPEG_MAX_DIMENSION) {
        snprintf(msg, msglen, "a JPEG is at most %ld pixels on a side; the output is %dx%d",
                 (long)JPEG_MAX_DIMENSION, im->width, im->height);
        return -BATCHD_E_TOO_LARGE;
    }
    struct jpeg_ctx *c = calloc(1, sizeof *c);
    msg[0] = '\0';
    if (c == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -BATCHD_E_INTERNAL;
    }
    c->is_compress = 1;
    c->src = im;
    c->quality = quality;
    c->progressive = progressive;
    c->out = out;
    c->msg = msg;
    c->msglen = msglen;
    int rc = jpeg_guarded(c, encode_body);
    jpeg_destroy_compress(&c->c);
    free(c);
    return rc;
}
