/* ICC colour management on lcms2 (img_icc.h). One lcms2 context per process, its error
 * logger raising a flag that every step checks; a small cache of transforms keyed by the
 * profile's bytes and the pixel format (struct img_icc_xform is a cache entry). */
#include "img_icc.h"

#include "img_codec.h"

#include <lcms2.h>
#include <lcms2_plugin.h>
#include <stdlib.h>
#include <string.h>

enum { ICC_CACHE = 8, ICC_HEADER = 128 };

enum xf_state {
    XF_OK = 1,       /* convert */
    XF_IDENTITY = 2, /* sRGB already: leave the pixels */
    XF_BAD = 3,      /* ignored */
    XF_OOM = 4,      /* memory ran out: the job fails, and nothing is cached */
};

struct img_icc_xform {
    uint8_t *prof; /* a copy of the profile: a hit compares every byte, not a hash */
    size_t len;
    cmsUInt32Number fmt;
    cmsHTRANSFORM xf;
    enum xf_state state;
};

static cmsContext icc_ctx;
static int icc_failed; /* set by the logger */
static int icc_oom;    /* set by the allocator: tells a profile lcms2 refused from no memory */
static struct img_icc_xform icc_cache[ICC_CACHE];
static int icc_next;

static void on_icc_error(cmsContext ctx, cmsUInt32Number code, const char *text)
{
    (void)ctx;
    (void)code;
    (void)text;
    icc_failed = 1;
}

static void *icc_malloc(cmsContext ctx, cmsUInt32Number size)
{
    (void)ctx;
    void *p = malloc(size);
    icc_oom |= p == NULL;
    return p;
}

static void icc_free(cmsContext ctx, void *p)
{
    (void)ctx;
    free(p);
}

static void *icc_realloc(cmsContext ctx, void *p, cmsUInt32Number size)
{
    (void)ctx;
    void *q = realloc(p, size);
    icc_oom |= q == NULL;
    return q;
}

/* lcms2 2.14 makes a pthread mutex per profile and does not check the malloc under it: out
 * of memory, it crashes (found by tests/unit/test_img_icc.c under allocation failures). A
 * worker runs one job at a time, so its profiles need no lock: one static token stands for
 * every mutex, and creating one never fails. */
static char icc_mutex_token;

static void *icc_mutex_create(cmsContext ctx)
{
    (void)ctx;
    return &icc_mutex_token;
}

static void icc_mutex_destroy(cmsContext ctx, void *m)
{
    (void)ctx;
    (void)m;
}

static cmsBool icc_mutex_lock(cmsContext ctx, void *m)
{
    (void)ctx;
    (void)m;
    return TRUE;
}

static void icc_mutex_unlock(cmsContext ctx, void *m)
{
    (void)ctx;
    (void)m;
}

static cmsPluginMutex icc_mutex = {
    .base = {cmsPluginMagicNumber, 2060, cmsPluginMutexSig, NULL},
    .CreateMutexPtr = icc_mutex_create,
    .DestroyMutexPtr = icc_mutex_destroy,
    .LockMutexPtr = icc_mutex_lock,
    .UnlockMutexPtr = icc_mutex_unlock,
};

/* lcms2's allocations through ours, so that running out of memory is told from a bad
 * profile (a transient failure must fail the job, not be remembered as "ignore"). lcms2
 * 2.14 does not check every small allocation (its optimiser dereferences a failed one): out
 * of memory deep in a transform's creation can still take the worker down, which the pool
 * replaces (worker_crashed). */
static cmsPluginMemHandler icc_mem = {
    .base = {cmsPluginMagicNumber, 2060, cmsPluginMemHandlerSig, &icc_mutex.base},
    .MallocPtr = icc_malloc,
    .FreePtr = icc_free,
    .ReallocPtr = icc_realloc,
};

static cmsContext context(void)
{
    if (icc_ctx == NULL) {
        icc_ctx = cmsCreateContext(&icc_mem, NULL);
        if (icc_ctx != NULL) {
            cmsSetLogErrorHandlerTHR(icc_ctx, on_icc_error);
        }
    }
    return icc_ctx;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The colour space the pixels of format FMT need in a profile. */
static cmsColorSpaceSignature space_of(cmsUInt32Number fmt)
{
    int space = (int)T_COLORSPACE(fmt);
    return space == PT_GRAY ? cmsSigGrayData : space == PT_CMYK ? cmsSigCmykData : cmsSigRgbData;
}

/* The profile P/N opened, if its header is sane and it can describe pixels of FMT; NULL
 * otherwise. */
static cmsHPROFILE open_input(const uint8_t *p, size_t n, cmsUInt32Number fmt)
{
    /* The declared size may be smaller than the block (padding), never larger (cut). */
    if (p == NULL || n < ICC_HEADER + 4 || n > IMG_ICC_MAX_BYTES || be32(p) > n ||
        be32(p) < ICC_HEADER + 4 || memcmp(p + 36, "acsp", 4) != 0) {
        return NULL;
    }
    cmsContext ctx = context();
    if (ctx == NULL) {
        return NULL;
    }
    icc_failed = 0;
    cmsHPROFILE h = cmsOpenProfileFromMemTHR(ctx, p, (cmsUInt32Number)be32(p));
    if (h == NULL) {
        return NULL;
    }
    cmsProfileClassSignature cls = cmsGetDeviceClass(h);
    int image_class = cls == cmsSigInputClass || cls == cmsSigDisplayClass ||
                      cls == cmsSigOutputClass || cls == cmsSigColorSpaceClass;
    cmsColorSpaceSignature pcs = cmsGetPCS(h);
    if (icc_failed || !image_class || cmsGetColorSpace(h) != space_of(fmt) ||
        (pcs != cmsSigXYZData && pcs != cmsSigLabData)) {
        cmsCloseProfile(h);
        return NULL;
    }
    return h;
}

/* sRGB, or for gray pixels a gray profile with the sRGB tone curve. */
static cmsHPROFILE open_output(cmsUInt32Number fmt)
{
    cmsContext ctx = context();
    if (T_COLORSPACE(fmt) != PT_GRAY) {
        return cmsCreate_sRGBProfileTHR(ctx);
    }
    static const cmsFloat64Number srgb_curve[5] = {2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92,
                                                   0.04045};
    cmsToneCurve *curve = cmsBuildParametricToneCurve(ctx, 4, srgb_curve);
    if (curve == NULL) {
        return NULL;
    }
    cmsHPROFILE h = cmsCreateGrayProfileTHR(ctx, cmsD50_xyY(), curve);
    cmsFreeToneCurve(curve);
    return h;
}

static cmsUInt32Number out_format(cmsUInt32Number fmt)
{
    if (T_COLORSPACE(fmt) == PT_CMYK) {
        return TYPE_RGB_8;
    }
    return fmt;
}

/* 1 when XF (of pixel format FMT, not CMYK) changes no colour by more than one level. */
static int is_identity(cmsHTRANSFORM xf, cmsUInt32Number fmt)
{
    enum { STEPS = 6, MAXPX = STEPS * STEPS * STEPS };
    int ch = (int)(T_CHANNELS(fmt) + T_EXTRA(fmt));
    int colours = (int)T_CHANNELS(fmt);
    uint8_t in[MAXPX * 4], out[MAXPX * 4];
    int n = 0;
    if (colours == 1) {
        for (int v = 0; v < 256 && n < MAXPX; v += 2, n++) {
            in[n * ch] = (uint8_t)v;
            in[n * ch + ch - 1] = ch == 2 ? 255 : (uint8_t)v;
        }
    } else {
        for (int r = 0; r < STEPS; r++) {
            for (int g = 0; g < STEPS; g++) {
                for (int b = 0; b < STEPS; b++, n++) {
                    uint8_t *px = in + n * ch;
                    px[0] = (uint8_t)(r * 51);
                    px[1] = (uint8_t)(g * 51);
                    px[2] = (uint8_t)(b * 51);
                    if (ch == 4) {
                        px[3] = 255;
                    }
                }
            }
        }
    }
    cmsDoTransform(xf, in, out, (cmsUInt32Number)n);
    for (int i = 0; i < n * ch; i++) {
        int d = (int)in[i] - (int)out[i];
        if (d > 1 || d < -1) {
            return 0;
        }
    }
    return 1;
}

static void entry_clear(struct img_icc_xform *e)
{
    if (e->xf != NULL) {
        cmsDeleteTransform(e->xf);
    }
    free(e->prof);
    memset(e, 0, sizeof *e);
}

static void entry_probe(struct img_icc_xform *e, const uint8_t *p, size_t n, cmsUInt32Number fmt);

/* Builds the cache entry E for P/N and FMT (XF_OOM when memory ran out on the way). */
static void entry_build(struct img_icc_xform *e, const uint8_t *p, size_t n, cmsUInt32Number fmt)
{
    icc_oom = 0;
    entry_probe(e, p, n, fmt);
    if (icc_oom || e->prof == NULL) {
        e->state = XF_OOM;
    }
}

static void entry_probe(struct img_icc_xform *e, const uint8_t *p, size_t n, cmsUInt32Number fmt)
{
    e->state = XF_BAD;
    e->fmt = fmt;
    e->len = n;
    e->prof = malloc(n > 0 ? n : 1);
    if (e->prof != NULL && n > 0) {
        memcpy(e->prof, p, n);
    }
    cmsHPROFILE in = open_input(p, n, fmt);
    if (in == NULL) {
        return;
    }
    cmsHPROFILE out = open_output(fmt);
    if (out != NULL) {
        icc_failed = 0;
        cmsUInt32Number flags = T_EXTRA(fmt) ? cmsFLAGS_COPY_ALPHA : 0;
        e->xf = cmsCreateTransformTHR(context(), in, fmt, out, out_format(fmt), INTENT_PERCEPTUAL,
                                      flags);
        if (e->xf != NULL && icc_failed) {
            cmsDeleteTransform(e->xf);
            e->xf = NULL;
        }
        cmsCloseProfile(out);
    }
    cmsCloseProfile(in);
    if (e->xf == NULL) {
        return;
    }
    e->state = XF_OK;
    if (T_COLORSPACE(fmt) != PT_CMYK && is_identity(e->xf, fmt)) {
        e->state = XF_IDENTITY;
    }
    if (icc_failed) {
        e->state = XF_BAD;
    }
}

/* The cached entry for P/N and FMT, built when missing; never NULL. When memory ran out, a
 * static XF_OOM entry (nothing is cached: the next job tries again). */
static const struct img_icc_xform *lookup(const uint8_t *p, size_t n, cmsUInt32Number fmt)
{
    for (int i = 0; i < ICC_CACHE; i++) {
        const struct img_icc_xform *e = &icc_cache[i];
        if (e->prof != NULL && e->len == n && e->fmt == fmt && memcmp(e->prof, p, n) == 0) {
            return e;
        }
    }
    if (n > IMG_ICC_MAX_BYTES) {
        static const struct img_icc_xform too_large = {.state = XF_BAD};
        return &too_large;
    }
    struct img_icc_xform *e = &icc_cache[icc_next];
    icc_next = (icc_next + 1) % ICC_CACHE;
    entry_clear(e);
    entry_build(e, p, n, fmt);
    if (e->state == XF_OOM) {
        static const struct img_icc_xform oom = {.state = XF_OOM};
        entry_clear(e);
        return &oom;
    }
    return e;
}

static cmsUInt32Number format_of(int ch)
{
    static const cmsUInt32Number fmts[5] = {0, TYPE_GRAY_8, TYPE_GRAYA_8, TYPE_RGB_8, TYPE_RGBA_8};
    return ch >= 1 && ch <= 4 ? fmts[ch] : 0;
}

int img_icc_to_srgb(struct img *im, const uint8_t *p, size_t n)
{
    cmsUInt32Number fmt = format_of(im->channels);
    if (p == NULL || n == 0 || fmt == 0 || im->premultiplied) {
        return 0;
    }
    const struct img_icc_xform *e = lookup(p, n, fmt);
    if (e->state == XF_OOM) {
        return -1;
    }
    if (e->state != XF_OK) {
        return 0;
    }
    for (int y = 0; y < im->height; y++) {
        uint8_t *row = im->px + (size_t)y * im->stride;
        cmsDoTransform(e->xf, row, row, (cmsUInt32Number)im->width);
    }
    return 1;
}

int img_icc_fits(const uint8_t *p, size_t n, int ch)
{
    cmsUInt32Number fmt = format_of(ch);
    if (p == NULL || n == 0 || fmt == 0) {
        return 0;
    }
    const struct img_icc_xform *e = lookup(p, n, fmt);
    return e->state == XF_OOM ? -1 : e->state != XF_BAD;
}

const struct img_icc_xform *img_icc_cmyk_open(const uint8_t *p, size_t n, int inverted, int *oom)
{
    *oom = 0;
    if (p == NULL || n == 0) {
        return NULL;
    }
    const struct img_icc_xform *e = lookup(p, n, inverted ? TYPE_CMYK_8_REV : TYPE_CMYK_8);
    *oom = e->state == XF_OOM;
    return e->state == XF_OK ? e : NULL;
}

void img_icc_cmyk_row(const struct img_icc_xform *x, const uint8_t *src, uint8_t *dst, int w)
{
    cmsDoTransform(x->xf, src, dst, (cmsUInt32Number)w);
}

void img_icc_flush(void)
{
    for (int i = 0; i < ICC_CACHE; i++) {
        entry_clear(&icc_cache[i]);
    }
    icc_next = 0;
    if (icc_ctx != NULL) {
        cmsDeleteContext(icc_ctx);
        icc_ctx = NULL;
    }
}
