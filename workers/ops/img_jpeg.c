/* JPEG codec on the libjpeg API. libjpeg reports errors by calling error_exit, whose default
 * calls exit(): ours longjmps back to jpeg_guarded(), the only function here that calls
 * setjmp. Everything a decode or encode owns lives in struct jpeg_ctx (not in locals of
 * the function that called setjmp), so it is freed correctly whatever path was taken. */
#include "img_jpeg.h"

#include "../../api/errors.h"
#include "img_icc.h"
#include "img_meta.h"

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
    uint8_t *icc;   /* the profile read by jpeg_read_icc_profile (malloc'd) */
    unsigned icc_len;
    /* encode */
    const struct img *src;
    int quality, progressive;
    const struct img_meta *meta;
    struct buf *out;
};

static const char exif_id[6] = {'E', 'x', 'i', 'f', 0, 0};
static const char xmp_id[29] = "http://ns.adobe.com/xap/1.0/"; /* with its NUL */

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

/* Pillow's MULDIV255. */
static inline unsigned muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* 1 when the file's last 4 KB hold an EOI marker (FF D9: entropy-coded data never does,
 * its FF bytes are stuffed): the file is not cut short. */
static int ends_with_eoi(const uint8_t *p, size_t n)
{
    size_t from = n > 4096 ? n - 4096 : 0;
    for (size_t i = n; i >= from + 2; i--) {
        if (p[i - 2] == 0xff && p[i - 1] == 0xd9) {
            return 1;
        }
    }
    return 0;
}

/* The zigzag position (the index of libjpeg's coef_bits) of each coefficient in natural
 * order (the index of quantval). */
static const unsigned char zigzag_of[64] = {
    0,  1,  5,  6,  14, 15, 27, 28, 2,  4,  7,  13, 16, 26, 29, 42, 3,  8,  12, 17, 25, 30,
    41, 43, 9,  11, 18, 24, 31, 40, 44, 53, 10, 19, 23, 32, 39, 45, 52, 54, 20, 22, 33, 38,
    46, 51, 55, 60, 21, 34, 37, 47, 50, 56, 59, 61, 35, 36, 48, 49, 57, 58, 62, 63};

/* 1 when every component's coefficients that the IDCT of a 1/DENOM decode reads are in (8:
 * the DC alone; 4: rows and columns 0, 1, 3, 5, 7, libjpeg's 2x2 IDCT): all their bits, or
 * all but the lowest when its quantisation step is small enough that the output stays within
 * the quality bar (DC at most 8: at most one level at 1/8; AC at most 64): JPEG qualities of
 * 75 and up, >= 45 dB against the full decode on the shared photos. */
static int coefs_ready(j_decompress_ptr d, int denom)
{
    static const int used4[5] = {0, 1, 3, 5, 7};
    int n = denom == 8 ? 1 : 5;
    if (d->coef_bits == NULL) {
        return 0;
    }
    for (int ci = 0; ci < d->num_components; ci++) {
        const JQUANT_TBL *q = d->comp_info[ci].quant_table;
        for (int r = 0; r < n; r++) {
            for (int k = 0; k < n; k++) {
                int nat = used4[r] * 8 + used4[k];
                int bits = d->coef_bits[ci][zigzag_of[nat]];
                int step = nat == 0 ? 8 : 64;
                if (bits < 0 || bits > 1 || (bits == 1 && (q == NULL || q->quantval[nat] > step))) {
                    return 0;
                }
            }
        }
    }
    return 1;
}

/* Buffered-image mode: reads scans until the coefficients a 1/DENOM decode needs are in (or
 * the file ends), with the scan-bomb guard (the progress monitor is not called from here).
 * Returns 0, or -BATCHD_E_CORRUPT_IMAGE with MSG set. */
static int consume_needed_scans(struct jpeg_ctx *c, int denom)
{
    j_decompress_ptr d = &c->d;
    for (;;) {
        int r = jpeg_consume_input(d);
        if (r == JPEG_REACHED_EOI || r == JPEG_SUSPENDED) {
            return 0;
        }
        if (d->input_scan_number > c->opts->max_scans) {
            snprintf(c->msg, c->msglen, "jpeg: more than %d progressive scans", c->opts->max_scans);
            return -BATCHD_E_CORRUPT_IMAGE;
        }
        if (r == JPEG_SCAN_COMPLETED && coefs_ready(d, denom)) {
            return 0;
        }
    }
}

/* The saved markers: EXIF orientation into the header, the ICC profile into C (and into
 * the metadata when asked for and the pixels are not CMYK), EXIF and XMP into the metadata
 * when asked for. Returns 0 or -BATCHD_E_TOO_LARGE (out of memory). */
static int read_markers(struct jpeg_ctx *c)
{
    j_decompress_ptr d = &c->d;
    struct img_meta *meta = c->opts->meta;
    int want_meta = meta != NULL && (c->opts->want & IMG_WANT_META);
    int oriented = 0, fail = 0;
    c->hdr->orientation = 1;
    for (jpeg_saved_marker_ptr m = d->marker_list; m != NULL; m = m->next) {
        if (m->marker != JPEG_APP0 + 1) {
            continue;
        }
        if (m->data_length > sizeof exif_id && memcmp(m->data, exif_id, sizeof exif_id) == 0) {
            const uint8_t *t = m->data + sizeof exif_id;
            size_t tn = m->data_length - sizeof exif_id;
            if (!oriented) {
                c->hdr->orientation = img_exif_orientation(t, tn);
                oriented = 1;
            }
            if (want_meta && meta->exif == NULL) {
                fail |= img_meta_set(&meta->exif, &meta->exif_len, t, tn);
            }
        } else if (want_meta && meta->xmp == NULL && m->data_length > sizeof xmp_id &&
                   memcmp(m->data, xmp_id, sizeof xmp_id) == 0) {
            fail |= img_meta_set(&meta->xmp, &meta->xmp_len, m->data + sizeof xmp_id,
                                 m->data_length - sizeof xmp_id);
        }
    }
    int cmyk = d->jpeg_color_space == JCS_CMYK || d->jpeg_color_space == JCS_YCCK;
    int want_icc = meta != NULL && (c->opts->want & IMG_WANT_ICC);
    if (cmyk || want_icc) {
        JOCTET *icc = NULL;
        unsigned len = 0;
        /* A malformed chain of ICC markers only logs a warning: then there is no profile. */
        if (jpeg_read_icc_profile(d, &icc, &len) && icc != NULL) {
            c->icc = icc;
            c->icc_len = len;
        }
    }
    if (!cmyk && want_icc && c->icc != NULL) {
        fail |= img_meta_set(&meta->icc, &meta->icc_len, c->icc, c->icc_len);
    }
    if (fail) {
        snprintf(c->msg, c->msglen, "out of memory");
        return -BATCHD_E_TOO_LARGE;
    }
    return 0;
}

/* The decode's helpers below run under jpeg_guarded()'s setjmp, called from decode_body: any
 * libjpeg call in them may longjmp straight back there, past their frames. That is safe
 * because none of them owns anything in a local: what must be freed lives in struct jpeg_ctx
 * (c->im, c->row, c->icc), and the setjmp itself stays in jpeg_guarded() alone (STYLE). */

/* Creates the decompressor with our error manager and reads the header. */
static void decode_open(struct jpeg_ctx *c)
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
    jpeg_save_markers(d, JPEG_APP0 + 1, 0xffff); /* EXIF, XMP */
    jpeg_save_markers(d, JPEG_APP0 + 2, 0xffff); /* ICC, possibly in several markers */
    jpeg_read_header(d, TRUE);
}

/* Refuses an image over the limits; else fills the header's size. */
static int decode_check_size(struct jpeg_ctx *c)
{
    j_decompress_ptr d = &c->d;
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
    c->hdr->width = (int)d->image_width;
    c->hdr->height = (int)d->image_height;
    return 0;
}

/* The output colour space and the header's channels. Returns 1 for a CMYK (or YCCK) file. */
static int decode_colour_space(struct jpeg_ctx *c)
{
    j_decompress_ptr d = &c->d;
    int cmyk = 0;
    switch (d->jpeg_color_space) {
    case JCS_GRAYSCALE:
        d->out_color_space = JCS_GRAYSCALE;
        c->hdr->channels = 1;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        d->out_color_space = JCS_CMYK; /* libjpeg turns YCCK into CMYK */
        cmyk = 1;
        c->hdr->channels = 3;
        break;
    default:
        d->out_color_space = JCS_RGB;
        c->hdr->channels = 3;
        break;
    }
    return cmyk;
}

/* Picks the scale, starts the decompressor and, for the early stop, reads the scans the
 * reduced IDCT needs. *EARLY: 1 when buffered-image mode is on (the caller finishes it). */
static int decode_start(struct jpeg_ctx *c, int *early)
{
    j_decompress_ptr d = &c->d;
    const struct img_decode_opts *o = c->opts;
    int denom = o->pick_scale ? o->pick_scale(o->ctx, c->hdr, c->msg, c->msglen) : 1;
    *early = 0;
    if (denom < 0) {
        return denom;
    }
    if (denom != 2 && denom != 4 && denom != 8) {
        denom = 1;
    }
    d->scale_num = 1;
    d->scale_denom = (unsigned)denom;
    d->dct_method = JDCT_ISLOW; /* what Pillow uses: the decode matches it exactly */
    /* At 1/8 each 8x8 block becomes one pixel, its DC coefficient; at 1/4 four, from 25 of
     * its 64 coefficients. A progressive file sends the DC and the top bits of every
     * coefficient first, and spends its last scans (most of its bytes) on the lowest bits.
     * Buffered-image mode reads scan by scan and stops once what the reduced IDCT reads is in
     * (coefs_ready). Only for a file that ends in EOI, so that a truncated one is still
     * refused as the full decode refuses it. */
    *early =
        (denom == 8 || denom == 4) && jpeg_has_multiple_scans(d) && ends_with_eoi(c->data, c->len);
    d->buffered_image = *early ? TRUE : FALSE;
    if (*early) {
        d->do_block_smoothing = FALSE; /* it guesses missing AC from the DC: nothing to gain */
    }
    jpeg_start_decompress(d);
    if (*early) {
        int drc = consume_needed_scans(c, denom);
        if (drc != 0) {
            return drc;
        }
        jpeg_start_output(d, d->input_scan_number);
    }
    return 0;
}

/* Reads the scanlines into c->im (made here), converting CMYK to RGB. */
static int decode_rows(struct jpeg_ctx *c, int cmyk)
{
    j_decompress_ptr d = &c->d;
    c->im = img_create((int)d->output_width, (int)d->output_height, c->hdr->channels);
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
    /* Adobe writes CMYK inverted (and says so in its APP14 marker). With a CMYK profile,
     * lcms2 makes the RGB; without one, Pillow's CMYK -> RGB: R = (255 - C) * (255 - K) / 255
     * on the un-inverted values. */
    int inverted = d->saw_Adobe_marker;
    int oom = 0;
    const struct img_icc_xform *xf =
        cmyk ? img_icc_cmyk_open(c->icc, c->icc_len, inverted, &oom) : NULL;
    if (oom) {
        snprintf(c->msg, c->msglen, "out of memory");
        return -BATCHD_E_TOO_LARGE;
    }
    while (d->output_scanline < d->output_height) {
        uint8_t *dst = c->im->px + (size_t)d->output_scanline * c->im->stride;
        JSAMPROW rows[1] = {cmyk ? c->row : dst};
        if (jpeg_read_scanlines(d, rows, 1) != 1) {
            snprintf(c->msg, c->msglen, "jpeg: the file is truncated");
            return -BATCHD_E_CORRUPT_IMAGE;
        }
        if (xf != NULL) {
            img_icc_cmyk_row(xf, c->row, dst, (int)d->output_width);
        } else if (cmyk) {
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

static int decode_body(struct jpeg_ctx *c)
{
    decode_open(c);
    int rc = decode_check_size(c);
    if (rc != 0) {
        return rc;
    }
    rc = read_markers(c);
    if (rc != 0) {
        return rc;
    }
    int cmyk = decode_colour_space(c);
    int early = 0;
    rc = decode_start(c, &early);
    if (rc != 0) {
        return rc;
    }
    rc = decode_rows(c, cmyk);
    if (rc != 0) {
        return rc;
    }
    if (early) {
        jpeg_finish_output(&c->d);
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

/* One APP1 marker: ID then the block P/N, when it fits in a marker (else it is left out). */
static void write_app1(j_compress_ptr e, const char *id, size_t idlen, const uint8_t *p, size_t n)
{
    if (p == NULL || n == 0 || n > 65533 - idlen) {
        return;
    }
    jpeg_write_m_header(e, JPEG_APP0 + 1, (unsigned)(idlen + n));
    for (size_t i = 0; i < idlen; i++) {
        jpeg_write_m_byte(e, (unsigned char)id[i]);
    }
    for (size_t i = 0; i < n; i++) {
        jpeg_write_m_byte(e, p[i]);
    }
}

/* The metadata given, after the JFIF marker: EXIF and XMP in APP1, the profile in APP2. */
static void write_meta(struct jpeg_ctx *c)
{
    const struct img_meta *m = c->meta;
    if (m == NULL) {
        return;
    }
    write_app1(&c->c, exif_id, sizeof exif_id, m->exif, m->exif_len);
    write_app1(&c->c, xmp_id, sizeof xmp_id, m->xmp, m->xmp_len);
    if (m->icc != NULL && m->icc_len > 0 && m->icc_len <= IMG_ICC_MAX_BYTES) {
        jpeg_write_icc_profile(&c->c, m->icc, (unsigned)m->icc_len);
    }
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
    write_meta(c);
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
    free(c->icc);
    free(c);
    return rc;
}

int img_jpeg_encode(const struct img *im, int quality, int progressive, const struct img_meta *meta,
                    struct buf *out, char *msg, size_t msglen)
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
    c->meta = meta;
    c->out = out;
    c->msg = msg;
    c->msglen = msglen;
    int rc = jpeg_guarded(c, encode_body);
    jpeg_destroy_compress(&c->c);
    free(c);
    return rc;
}
