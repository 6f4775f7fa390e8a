/* The image op's outputs (SPEC §6): encode each image (colour to sRGB, JPEG's flattening,
 * the metadata kept), then answer inline (base64 or a binary blob) or write a file under the
 * output dir: made on first use, subfolders without symlinks, a temporary file marked as
 * ours and moved without replacing any file batchd did not write. Not the pipeline. */
#include "img_output.h"

#include "../../api/base64.h"
#include "../../api/errors.h"
#include "../../api/jsonw.h"
#include "../../api/outname.h"
#include "img_icc.h"
#include "img_input.h"
#include "img_jpeg.h"
#include "img_png.h"
#include "img_webp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define IMG_MAX_ENCODED_BYTES (1024ull * 1024 * 1024)

struct encoded {
    const char *format; /* "jpeg", "png" or "webp" */
    int width, height;
};

static const char *const format_names[] = {
    [IMG_FORMAT_JPEG] = "jpeg", [IMG_FORMAT_PNG] = "png", [IMG_FORMAT_WEBP] = "webp"};

/* Encodes the state's image (consumed: it may be changed in place) into DST. */
static int encode_state(struct img_state *st, const struct img_output *o,
                        const struct img_output_ctx *oc, struct buf *dst, struct encoded *e,
                        char *msg, size_t msglen)
{
    enum img_format f = o->format == IMG_FORMAT_SAME ? oc->src : o->format;
    struct img *im = st->im;
    e->width = im->width;
    e->height = im->height;
    e->format = format_names[f];
    /* Colour is converted on straight (not premultiplied) values, before JPEG's flattening:
     * white stays white through any profile. */
    if (oc->to_srgb && oc->meta->icc != NULL) {
        img_unpremultiply(im);
        if (img_icc_to_srgb(im, oc->meta->icc, oc->meta->icc_len) < 0) {
            return img_state_oom(msg, msglen);
        }
    }
    if (f == IMG_FORMAT_JPEG && img_has_alpha(im)) {
        struct img *flat = img_flatten_white(im);
        if (flat == NULL) {
            snprintf(msg, msglen, "out of memory");
            return -BATCHD_E_TOO_LARGE;
        }
        img_destroy(st->im);
        st->im = im = flat;
    }
    img_unpremultiply(im);
    /* The metadata this output carries: the profile under "keep" when it describes the
     * pixels as encoded (WebP widens gray to RGB), EXIF and XMP under keep_metadata. */
    struct img_meta m = {0};
    int enc_ch = f == IMG_FORMAT_WEBP && im->channels < 3 ? im->channels + 2 : im->channels;
    int fits =
        oc->p->icc == IMG_ICC_KEEP ? img_icc_fits(oc->meta->icc, oc->meta->icc_len, enc_ch) : 0;
    if (fits < 0) {
        return img_state_oom(msg, msglen);
    }
    if (fits) {
        m.icc = oc->meta->icc;
        m.icc_len = oc->meta->icc_len;
    }
    if (oc->p->keep_metadata) {
        m.exif = oc->meta->exif;
        m.exif_len = oc->meta->exif_len;
        m.xmp = oc->meta->xmp;
        m.xmp_len = oc->meta->xmp_len;
    }
    if (f == IMG_FORMAT_JPEG) {
        return img_jpeg_encode(im, o->quality, o->progressive, &m, dst, msg, msglen);
    }
    if (f == IMG_FORMAT_WEBP) {
        return img_webp_encode(im, o->quality, o->lossless, &m, dst, msg, msglen);
    }
    return img_png_encode(im, o->png_level, &m, dst, msg, msglen);
}

/* The output dir, made when it is missing: the default DATA_DIR/out is made by the first
 * job that writes into it, not at start-up, so a data dir that only feeds inputs is never
 * written to. An output dir that is the data dir or holds it is refused: every input could
 * be replaced (the server refuses it at start; this catches a folder swapped since).
 * Returns an O_PATH fd, or a negative code with MSG set. */
static int open_output_dir(const struct job_input *in, char *msg, size_t msglen)
{
    int dirfd = open(in->output_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 && errno == ENOENT) {
        if (mkdir(in->output_dir, 0755) == 0 || errno == EEXIST) {
            dirfd = open(in->output_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        }
    }
    if (dirfd < 0) {
        snprintf(msg, msglen, "the output dir cannot be opened: %s", strerror(errno));
        return -BATCHD_E_INTERNAL;
    }
    char out[PATH_MAX], data[PATH_MAX];
    if (in->data_dir != NULL && realpath(in->output_dir, out) != NULL &&
        realpath(in->data_dir, data) != NULL && img_input_path_within(data, out)) {
        close(dirfd);
        snprintf(msg, msglen,
                 "the output dir is the data dir or holds it: outputs could "
                 "replace inputs");
        return -BATCHD_E_FORBIDDEN_PATH;
    }
    return dirfd;
}

/* Opens, making what is missing, the folders DIR (LEN bytes of "a/b" from an output stem)
 * beneath DIRFD, which it takes (closes). One part at a time with O_NOFOLLOW, as
 * open_beneath's fallback: a symlink in the output tree is refused, never followed.
 * Returns an O_PATH fd or -errno (-ENOTDIR for a symlink or a file in the way). */
static int open_subdirs_take(int dirfd, const char *dir, size_t len)
{
    char part[OUTNAME_MAX_PART + 1];
    const char *c = dir, *end = dir + len;
    int cur = dirfd;
    while (c < end) {
        const char *slash = memchr(c, '/', (size_t)(end - c));
        size_t n = slash != NULL ? (size_t)(slash - c) : (size_t)(end - c);
        if (n == 0 || n >= sizeof part) {
            close(cur);
            return -EINVAL;
        }
        memcpy(part, c, n);
        part[n] = '\0';
        if (mkdirat(cur, part, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            close(cur);
            return -e;
        }
        int next = openat(cur, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(cur);
        if (next < 0) {
            return -e;
        }
        cur = next;
        c = slash != NULL ? slash + 1 : end;
    }
    return cur;
}

/* The extended attribute that marks a file as an output of batchd: only such a file is
 * ever replaced by an output (a rerun replacing its own earlier results). */
#define IMG_OUTPUT_XATTR "user.batchd.output"

/* 1 when BASE in DIRFD is a regular file that batchd wrote (it bears IMG_OUTPUT_XATTR). */
static int is_our_output(int dirfd, const char *base)
{
    int fd = openat(dirfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    struct stat st;
    char v[8];
    int ours = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
               fgetxattr(fd, IMG_OUTPUT_XATTR, v, sizeof v) >= 0;
    close(fd);
    return ours;
}

/* Moves TMP to BASE in DIRFD without replacing anything: renameat2 RENAME_NOREPLACE, or
 * link + unlink where the file system cannot (both fail with EEXIST when BASE is there).
 * Returns 0 or -errno. */
static int rename_noreplace(int dirfd, const char *tmp, const char *base)
{
    if (renameat2(dirfd, tmp, dirfd, base, RENAME_NOREPLACE) == 0) {
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS) {
        return -errno;
    }
    if (linkat(dirfd, tmp, dirfd, base, 0) != 0) {
        return -errno;
    }
    unlinkat(dirfd, tmp, 0);
    return 0;
}

/* Writes BYTES to REL ("sub/a-small.png": an output stem, a variant, an extension) under
 * the output dir: into a new temporary file (O_EXCL) beside it, marked as an output, then
 * moved to REL, so that a reader never sees half a file. An existing REL is replaced only
 * when it is an earlier output of batchd (a rerun of a batch); any other file there, the
 * user's own, stays and the job fails forbidden_path. Stems are unique within a batch and
 * inputs are never read from the output dir, so what is replaced is never an input. */
static int write_file(const struct job_input *in, const char *rel, const struct buf *bytes,
                      char *msg, size_t msglen)
{
    static unsigned seq;
    int dirfd = open_output_dir(in, msg, msglen);
    if (dirfd < 0) {
        return dirfd;
    }
    const char *slash = strrchr(rel, '/');
    const char *base = slash != NULL ? slash + 1 : rel;
    if (slash != NULL) {
        dirfd = open_subdirs_take(dirfd, rel, (size_t)(slash - rel));
        if (dirfd < 0) {
            int e = -dirfd;
            snprintf(msg, msglen, "cannot make the output folder of %.150s: %.60s", rel,
                     e == ENOTDIR || e == ELOOP ? "a file or a symlink is in the way"
                                                : strerror(e));
            return e == ENOTDIR || e == ELOOP ? -BATCHD_E_FORBIDDEN_PATH : -BATCHD_E_INTERNAL;
        }
    }
    char tmp[OUTNAME_MAX + 96];
    int rc = 0, fd = -1;
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        snprintf(tmp, sizeof tmp, ".%s.%ld.%u.tmp", base, (long)getpid(), seq++);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) {
            unlinkat(dirfd, tmp, 0); /* left by a crashed worker that had our pid */
        }
    }
    if (fd < 0) {
        snprintf(msg, msglen, "cannot write %.200s: %s", rel, strerror(errno));
        close(dirfd);
        return -BATCHD_E_INTERNAL;
    }
    const char *p = buf_data(bytes);
    size_t left = buf_len(bytes);
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            snprintf(msg, msglen, "cannot write %.200s: %s", rel, strerror(errno));
            rc = -BATCHD_E_INTERNAL;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    /* Without the mark (a file system without user xattrs) the output is still written,
     * but a rerun cannot tell it from a user's file and will not replace it. */
    (void)fsetxattr(fd, IMG_OUTPUT_XATTR, "1", 1, 0);
    if (close(fd) != 0 && rc == 0) {
        snprintf(msg, msglen, "cannot write %.200s: %s", rel, strerror(errno));
        rc = -BATCHD_E_INTERNAL;
    }
    int mv = rc == 0 ? rename_noreplace(dirfd, tmp, base) : 0;
    if (mv == -EEXIST && is_our_output(dirfd, base)) {
        mv = renameat(dirfd, tmp, dirfd, base) == 0 ? 0 : -errno;
    }
    if (mv == -EEXIST) {
        snprintf(msg, msglen,
                 "the output folder already holds %.150s, which batchd did not write: outputs "
                 "never replace other files",
                 rel);
        rc = -BATCHD_E_FORBIDDEN_PATH;
    } else if (mv != 0) {
        snprintf(msg, msglen, "cannot write %.200s: %s", rel, strerror(-mv));
        rc = -BATCHD_E_INTERNAL;
    }
    if (rc != 0) {
        unlinkat(dirfd, tmp, 0);
    }
    close(dirfd);
    return rc;
}

/* The path to report for a written file: relative to the data dir when the output dir is
 * inside it. */
static void report_path(const struct job_input *in, const char *fname, char *out, size_t n)
{
    const char *od = in->output_dir;
    size_t dl = in->data_dir ? strlen(in->data_dir) : 0;
    while (dl > 1 && in->data_dir[dl - 1] == '/') {
        dl--;
    }
    if (dl > 0 && strncmp(od, in->data_dir, dl) == 0 && od[dl] == '/') {
        const char *rest = od + dl;
        while (*rest == '/') {
            rest++;
        }
        snprintf(out, n, "%s%s%s", rest, *rest ? "/" : "", fname);
    } else {
        snprintf(out, n, "%s/%s", od, fname);
    }
}

int img_output_emit(const struct job_input *in, struct job_output *out, struct img_state *st,
                    const struct img_output *o, const struct img_output_ctx *oc,
                    const char *variant, const char *stem, char *msg, size_t msglen)
{
    struct buf local;
    buf_init(&local, IMG_MAX_ENCODED_BYTES);
    struct buf *bytes = &local;
    int to_path = oc->p->output_path;
    int blob = in->want_binary && !to_path;
    if (blob) {
        if (out->nblobs >= JOB_MAX_BLOBS) {
            snprintf(msg, msglen, "too many outputs");
            return -BATCHD_E_INTERNAL;
        }
        bytes = &out->blobs[out->nblobs].bytes;
        buf_init(bytes, IMG_MAX_ENCODED_BYTES);
    }
    struct encoded e;
    int rc = encode_state(st, o, oc, bytes, &e, msg, msglen);
    if (rc != 0) {
        buf_cleanup(bytes);
        return rc;
    }
    struct buf *j = out->json;
    int w = 0;
    w |= buf_adds(j, "{\"format\":");
    w |= jsonw_cstr(j, e.format);
    w |= buf_adds(j, ",\"width\":");
    w |= jsonw_int(j, e.width);
    w |= buf_adds(j, ",\"height\":");
    w |= jsonw_int(j, e.height);
    w |= buf_adds(j, ",\"bytes\":");
    w |= jsonw_int(j, (int64_t)buf_len(bytes));
    if (blob) {
        struct job_blob *b = &out->blobs[out->nblobs++];
        if (variant != NULL) {
            snprintf(b->name, sizeof b->name, "%s.%s", variant, e.format);
        } else {
            snprintf(b->name, sizeof b->name, "%s", e.format);
        }
    } else if (to_path) {
        char fname[OUTNAME_MAX + 64], rel[4400];
        if (variant != NULL) {
            snprintf(fname, sizeof fname, "%s-%s.%s", stem, variant, e.format);
        } else {
            snprintf(fname, sizeof fname, "%s.%s", stem, e.format);
        }
        rc = write_file(in, fname, bytes, msg, msglen);
        if (rc == 0) {
            report_path(in, fname, rel, sizeof rel);
            w |= buf_adds(j, ",\"path\":");
            w |= jsonw_cstr(j, rel);
        }
        buf_cleanup(&local);
    } else {
        w |= buf_adds(j, ",\"data\":\"");
        w |= base64_encode(j, (const uint8_t *)buf_data(bytes), buf_len(bytes));
        w |= buf_adds(j, "\"");
        buf_cleanup(&local);
    }
    w |= buf_adds(j, "}");
    if (rc == 0 && w != 0) {
        /* Like a pixel buffer, memory for the result counts as too large, but say which. */
        snprintf(msg, msglen, "%s",
                 errno == ENOMEM ? "out of memory for the result"
                                 : "the result is larger than allowed");
        rc = -BATCHD_E_TOO_LARGE;
    }
    return rc;
}
