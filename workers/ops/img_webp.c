/* WebP codec on libwebp's advanced API (the simple one fails without saying why), with
 * libwebpdemux to read metadata chunks and libwebpmux to write them. libwebp reports errors
 * by return values: no setjmp here. */
#include "img_webp.h"

#include "../../api/errors.h"
#include "img_meta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>
#include <webp/encode.h>
#include <webp/mux.h>

/* One metadata chunk FOURCC of the demuxed file into *DST; EXIF without a stray "Exif\0\0"
 * that some writers put in front of the TIFF structure. Returns 0 or -1 (OOM). */
static int read_chunk(WebPDemuxer *dmx, const char *fourcc, size_t max, uint8_t **dst,
                      size_t *dst_len)
{
    WebPChunkIterator it;
    int rc = 0;
    if (WebPDemuxGetChunk(dmx, fourcc, 1, &it)) {
        const uint8_t *p = it.chunk.bytes;
        size_t n = it.chunk.size;
        if (strcmp(fourcc, "EXIF") == 0 && n > 6 && memcmp(p, "Exif\0\0", 6) == 0) {
            p += 6;
            n -= 6;
        }
        if (n > 0 && n <= max) {
            rc = img_meta_set(dst, dst_len, p, n);
        }
        WebPDemuxReleaseChunkIterator(&it);
    }
    return rc;
}

static int read_meta(const uint8_t *data, size_t len, struct img_meta *meta, unsigned want)
{
    WebPData wd = {data, len};
    WebPDemuxer *dmx = WebPDemux(&wd);
    if (dmx == NULL) {
        return 0; /* the pixels decoded: a container the demuxer dislikes only loses metadata */
    }
    int rc = 0;
    if (want & IMG_WANT_ICC) {
        rc |= read_chunk(dmx, "ICCP", IMG_ICC_MAX_BYTES, &meta->icc, &meta->icc_len);
    }
    if (want & IMG_WANT_META) {
        rc |= read_chunk(dmx, "EXIF", IMG_META_MAX_BYTES, &meta->exif, &meta->exif_len);
        rc |= read_chunk(dmx, "XMP ", IMG_META_MAX_BYTES, &meta->xmp, &meta->xmp_len);
    }
    WebPDemuxDelete(dmx);
    return rc;
}

int img_webp_decode(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                    struct img_header *hdr, struct img **out, char *msg, size_t msglen)
{
    *out = NULL;
    msg[0] = '\0';
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, len, &f);
    if (st != VP8_STATUS_OK) {
        snprintf(msg, msglen, "webp: %s",
                 st == VP8_STATUS_NOT_ENOUGH_DATA ? "the file is truncated" : "not a valid header");
        return -BATCHD_E_CORRUPT_IMAGE;
    }
    if ((uint64_t)f.width * (uint64_t)f.height > opts->max_pixels) {
        snprintf(msg, msglen, "the image is %dx%d pixels, more than the limit of %llu", f.width,
                 f.height, (unsigned long long)opts->max_pixels);
        return -BATCHD_E_TOO_LARGE;
    }
    if (f.has_animation) {
        snprintf(msg, msglen, "webp: animated WebP is not supported");
        return -BATCHD_E_UNSUPPORTED_FORMAT;
    }
    hdr->width = f.width;
    hdr->height = f.height;
    hdr->channels = f.has_alpha ? 4 : 3;
    hdr->orientation = 1;
    if (opts->pick_scale != NULL) {
        int rc = opts->pick_scale(opts->ctx, hdr, msg, msglen);
        if (rc < 0) {
            return rc; /* no reduced decode here: only a refusal matters */
        }
    }
    struct img *im = img_create(f.width, f.height, hdr->channels);
    if (im == NULL) {
        snprintf(msg, msglen, "out of memory for %dx%d pixels", f.width, f.height);
        return -BATCHD_E_TOO_LARGE;
    }
    size_t size = im->stride * (size_t)im->height;
    uint8_t *px = f.has_alpha ? WebPDecodeRGBAInto(data, len, im->px, size, (int)im->stride)
                              : WebPDecodeRGBInto(data, len, im->px, size, (int)im->stride);
    if (px == NULL) {
        img_destroy(im);
        snprintf(msg, msglen, "webp: the file is truncated or corrupt");
        return -BATCHD_E_CORRUPT_IMAGE;
    }
    if (opts->meta != NULL && opts->want != 0 && read_meta(data, len, opts->meta, opts->want)) {
        img_destroy(im);
        snprintf(msg, msglen, "out of memory");
        return -BATCHD_E_TOO_LARGE;
    }
    *out = im;
    return 0;
}

static const char *picture_error(WebPEncodingError e)
{
    static const char *const names[] = {
        "ok",
        "out of memory",
        "out of memory for the bitstream",
        "null argument",
        "invalid configuration",
        "bad dimension",
        "partition 0 overflow",
        "partition overflow",
        "bad write",
        "file too big",
        "user abort",
    };
    return (unsigned)e < sizeof names / sizeof names[0] ? names[e] : "unknown error";
}

/* Wraps the bitstream IMG/N into a container with META's chunks; the result into OUT. */
static int mux_meta(const uint8_t *img, size_t n, const struct img_meta *meta, struct buf *out)
{
    WebPMux *mux = WebPMuxNew();
    WebPData outd;
    WebPDataInit(&outd);
    int ok = mux != NULL;
    WebPData bits = {img, n};
    ok = ok && WebPMuxSetImage(mux, &bits, 0) == WEBP_MUX_OK;
    WebPData icc = {meta->icc, meta->icc_len}, exif = {meta->exif, meta->exif_len},
             xmp = {meta->xmp, meta->xmp_len};
    if (ok && meta->icc_len > 0) {
        ok = WebPMuxSetChunk(mux, "ICCP", &icc, 0) == WEBP_MUX_OK;
    }
    if (ok && meta->exif_len > 0) {
        ok = WebPMuxSetChunk(mux, "EXIF", &exif, 0) == WEBP_MUX_OK;
    }
    if (ok && meta->xmp_len > 0) {
        ok = WebPMuxSetChunk(mux, "XMP ", &xmp, 0) == WEBP_MUX_OK;
    }
    ok = ok && WebPMuxAssemble(mux, &outd) == WEBP_MUX_OK;
    int rc = !ok                                        ? -BATCHD_E_INTERNAL
             : buf_add(out, outd.bytes, outd.size) != 0 ? -BATCHD_E_TOO_LARGE
                                                        : 0;
    WebPDataClear(&outd);
    WebPMuxDelete(mux);
    return rc;
}

int img_webp_encode(const struct img *im, int quality, int lossless, const struct img_meta *meta,
                    struct buf *out, char *msg, size_t msglen)
{
    msg[0] = '\0';
    if (im->premultiplied) {
        snprintf(msg, msglen, "webp: premultiplied input");
        return -BATCHD_E_INTERNAL;
    }
    if (im->width > IMG_WEBP_MAX_SIDE || im->height > IMG_WEBP_MAX_SIDE) {
        snprintf(msg, msglen, "a WebP is at most %d pixels on a side; the output is %dx%d",
                 IMG_WEBP_MAX_SIDE, im->width, im->height);
        return -BATCHD_E_TOO_LARGE;
    }
    int rc = -BATCHD_E_INTERNAL;
    struct img *wide = NULL;
    const struct img *src = im;
    WebPConfig cfg;
    WebPPicture pic;
    WebPMemoryWriter w;
    WebPMemoryWriterInit(&w);
    int pic_ok = WebPPictureInit(&pic);
    if (im->channels < 3) {
        wide = img_convert(im, im->channels + 2);
        if (wide == NULL) {
            snprintf(msg, msglen, "out of memory");
            rc = -BATCHD_E_TOO_LARGE;
            goto out;
        }
        src = wide;
    }
    if (!pic_ok || !WebPConfigPreset(&cfg, WEBP_PRESET_DEFAULT, (float)quality)) {
        snprintf(msg, msglen, "webp: the library version does not match");
        goto out;
    }
    cfg.method = 4;
    if (lossless) {
        WebPConfigLosslessPreset(&cfg, 1);
    }
    if (!WebPValidateConfig(&cfg)) {
        snprintf(msg, msglen, "webp: invalid configuration");
        goto out;
    }
    pic.use_argb = lossless;
    pic.width = src->width;
    pic.height = src->height;
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &w;
    int imported = src->channels == 4 ? WebPPictureImportRGBA(&pic, src->px, (int)src->stride)
                                      : WebPPictureImportRGB(&pic, src->px, (int)src->stride);
    if (!imported || !WebPEncode(&cfg, &pic)) {
        snprintf(msg, msglen, "webp: %s", picture_error(pic.error_code));
        rc = pic.error_code == VP8_ENC_ERROR_OUT_OF_MEMORY ? -BATCHD_E_TOO_LARGE
                                                           : -BATCHD_E_INTERNAL;
        goto out;
    }
    int with_meta = meta != NULL && (meta->icc_len > 0 || meta->exif_len > 0 || meta->xmp_len > 0);
    rc = with_meta                          ? mux_meta(w.mem, w.size, meta, out)
         : buf_add(out, w.mem, w.size) != 0 ? -BATCHD_E_TOO_LARGE
                                            : 0;
    if (rc == -BATCHD_E_TOO_LARGE) {
        snprintf(msg, msglen, "the encoded image is larger than allowed");
    } else if (rc != 0) {
        snprintf(msg, msglen, "webp: cannot add the metadata chunks");
    }
out:
    WebPMemoryWriterClear(&w);
    WebPPictureFree(&pic);
    img_destroy(wide);
    return rc;
}
