/* The "image" op (SPEC §6): read the input (handed-over bytes, base64, or a file under the
 * data dir that nothing can escape), sniff its format, decode it once (shrunk on load when
 * the pipeline allows), run the shared pipeline and each variant, encode, and answer inline
 * (base64 or binary blobs) or by writing files under the output dir. */
#include "internal.h"

#include "../../api/base64.h"
#include "../../api/errors.h"
#include "../../api/jsonw.h"
#include "../../api/outname.h"
#include "img_icc.h"
#include "img_jpeg.h"
#include "img_meta.h"
#include "img_pipeline.h"
#include "img_png.h"
#include "img_webp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#define IMG_DEFAULT_MAX_PIXELS 100000000ull
#define IMG_MAX_FILE_BYTES (1024ull * 1024 * 1024)
#define IMG_MAX_ENCODED_BYTES (1024ull * 1024 * 1024)
#define IMG_DECODER_MEMORY (1024ull * 1024 * 1024)
#define IMG_MAX_SCANS 100

/* The job's limits (job_input.limits), 0 or none meaning the default. */
struct img_limits {
    uint64_t max_input_pixels;
    uint64_t max_output_pixels;
};

static uint64_t limit_or_default(uint64_t v)
{
    return v != 0 ? v : IMG_DEFAULT_MAX_PIXELS;
}

static void limits_of(const struct job_input *in, struct img_limits *l)
{
    const struct job_limits *j = in->limits;
    l->max_input_pixels = limit_or_default(j != NULL ? j->max_input_pixels : 0);
    l->max_output_pixels = limit_or_default(j != NULL ? j->max_output_pixels : 0);
}

/* ---------------------------------------------------------------- input */

static int sniff(const uint8_t *p, size_t n, enum img_format *f, char *msg, size_t msglen)
{
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 2 && p[0] == 0xff && p[1] == 0xd8) {
        *f = IMG_FORMAT_JPEG;
        return 0;
    }
    if (n >= 8 && memcmp(p, png_magic, 8) == 0) {
        *f = IMG_FORMAT_PNG;
        return 0;
    }
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) {
        *f = IMG_FORMAT_WEBP;
        return 0;
    }
    /* A PNG signature with a byte or two changed is a damaged PNG (a text-mode transfer
     * turns its CR LF around), not some other format. */
    int same = 0;
    for (size_t i = 0; i < 8 && i < n; i++) {
        same += p[i] == png_magic[i];
    }
    if (same >= 6) {
        snprintf(msg, msglen, "png: the signature is damaged (a text-mode transfer?)");
        return -BATCHD_E_CORRUPT_IMAGE;
    }
    const char *what = "unknown data";
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0)) {
        what = "GIF";
    } else if (n >= 4 && (memcmp(p, "II*", 4) == 0 || memcmp(p, "MM\0*", 4) == 0)) {
        what = "TIFF";
    } else if (n >= 2 && memcmp(p, "BM", 2) == 0) {
        what = "BMP";
    } else if (n == 0) {
        what = "an empty input";
    }
    snprintf(msg, msglen, "the input is %s, not JPEG, PNG or WebP", what);
    return -BATCHD_E_UNSUPPORTED_FORMAT;
}

/* Checks a relative path before the kernel sees it, for clear messages. */
static int path_shape_ok(const char *rel)
{
    if (rel[0] == '\0' || rel[0] == '/') {
        return 0;
    }
    for (const char *c = rel; *c != '\0';) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        if (n == 2 && c[0] == '.' && c[1] == '.') {
            return 0;
        }
        if (slash == NULL) {
            break;
        }
        c = slash + 1;
    }
    return 1;
}

/* Opens REL beneath the directory DIRFD: openat2 with RESOLVE_BENEATH, so that neither
 * "..", absolute paths nor symlinks can lead outside. Where openat2 is missing (old kernels,
 * some sandboxes) every component is opened with O_NOFOLLOW instead: symlinks are then
 * refused outright. Returns an fd or -errno (-EXDEV/-ELOOP for escapes). */
static int open_beneath(int dirfd, const char *rel, int no_openat2)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    /* NO_OPENAT2 (job_limits, a test hook) runs the fallback on kernels that have openat2. */
    long fd = -1;
    errno = ENOSYS;
    if (!no_openat2) {
        fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    }
    if (fd >= 0) {
        return (int)fd;
    }
    if (errno != ENOSYS && errno != EPERM) {
        return -errno;
    }
    char part[4096];
    if (strlen(rel) >= sizeof part) {
        return -ENAMETOOLONG;
    }
    int cur = dup(dirfd);
    if (cur < 0) {
        return -errno;
    }
    const char *c = rel;
    for (;;) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        memcpy(part, c, n);
        part[n] = '\0';
        if (n == 0 || (n == 1 && part[0] == '.')) {
            if (slash == NULL) {
                close(cur);
                return -EISDIR;
            }
            c = slash + 1;
            continue;
        }
        int flags = slash ? O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
                          : O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
        int next = openat(cur, part, flags);
        int e = errno;
        if (next < 0 && e == ENOTDIR) {
            /* O_NOFOLLOW on a symlink in a directory part fails with ENOTDIR too: tell a
             * symlink (refused) from a file used as a directory (not found). */
            struct stat st;
            if (fstatat(cur, part, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                e = ELOOP;
            }
        }
        close(cur);
        if (next < 0) {
            return -e;
        }
        if (slash == NULL) {
            return next;
        }
        cur = next;
        c = slash + 1;
    }
}

/* 1 when the canonical path P is DIR (canonical too) or lies beneath it. */
static int path_within(const char *p, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/') {
        return 1;
    }
    return strncmp(p, dir, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

/* 1 when the input file FD (opened as REL under the data dir) lies in the output dir, the
 * folder outputs are written to, symlinks and all: it is then refused, so that the inputs
 * and what outputs may replace never meet (README). The file's name comes from the kernel
 * (/proc/self/fd) where it can; else from the data dir and REL. */
static int in_output_dir(const struct job_input *in, int fd, const char *rel)
{
    char out[PATH_MAX], file[PATH_MAX], link[64];
    if (in->output_dir == NULL || realpath(in->output_dir, out) == NULL) {
        return 0; /* no output dir yet: nothing is in it */
    }
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, file, sizeof file - 1);
    if (n > 0 && file[0] == '/') {
        file[n] = '\0';
        return path_within(file, out);
    }
    char joined[PATH_MAX];
    int w = snprintf(joined, sizeof joined, "%s/%s", in->data_dir, rel);
    if (w < 0 || (size_t)w >= sizeof joined || realpath(joined, file) == NULL) {
        return 1; /* cannot tell: refuse rather than risk an input */
    }
    return path_within(file, out);
}

static int read_path(const struct job_input *in, const char *rel, struct buf *data, char *msg,
                     size_t msglen)
{
    if (in->data_dir == NULL) {
        snprintf(msg, msglen, "path inputs need the server's --data-dir");
        return -BATCHD_E_INVALID_INPUT;
    }
    if (!path_shape_ok(rel)) {
        snprintf(msg, msglen, "the path must be relative and must not contain \"..\"");
        return -BATCHD_E_FORBIDDEN_PATH;
    }
    int dirfd = open(in->data_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        snprintf(msg, msglen, "the data dir cannot be opened");
        return -BATCHD_E_INTERNAL;
    }
    int fd = open_beneath(dirfd, rel, in->limits != NULL && in->limits->no_openat2);
    close(dirfd);
    if (fd < 0) {
        if (fd == -ENOENT || fd == -ENOTDIR) {
            snprintf(msg, msglen, "no file \"%.200s\" under the data dir", rel);
            return -BATCHD_E_NOT_FOUND;
        }
        if (fd == -EXDEV || fd == -ELOOP || fd == -EACCES || fd == -EPERM) {
            snprintf(msg, msglen,
                     "the path \"%.150s\" leads outside the data dir or is not allowed", rel);
            return -BATCHD_E_FORBIDDEN_PATH;
        }
        snprintf(msg, msglen, "cannot open \"%.200s\": %s", rel, strerror(-fd));
        return -BATCHD_E_INVALID_INPUT;
    }
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(msg, msglen, "\"%.200s\" is not a regular file", rel);
        rc = -BATCHD_E_INVALID_INPUT;
        goto out;
    }
    if (in_output_dir(in, fd, rel)) {
        snprintf(msg, msglen,
                 "\"%.150s\" is in the output folder: outputs are not read as inputs, so that "
                 "no output can replace an input",
                 rel);
        rc = -BATCHD_E_FORBIDDEN_PATH;
        goto out;
    }
    if ((uint64_t)st.st_size > IMG_MAX_FILE_BYTES) {
        snprintf(msg, msglen, "the file is larger than %llu bytes",
                 (unsigned long long)IMG_MAX_FILE_BYTES);
        rc = -BATCHD_E_TOO_LARGE;
        goto out;
    }
    size_t want = (size_t)st.st_size, got = 0;
    char *dst = buf_reserve(data, want + 1);
    if (dst == NULL) {
        rc = -BATCHD_E_TOO_LARGE;
        snprintf(msg, msglen, "out of memory for the file");
        goto out;
    }
    while (got < want) {
        ssize_t r = read(fd, dst + got, want - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    buf_commit(data, got);
out:
    close(fd);
    return rc;
}

/* The input's bytes: borrowed from IN->blob, or read/decoded into DATA. *REL_PATH: a
 * {"path"} input's relative path (borrowed from IN), else NULL. */
static int load_input(const struct job_input *in, struct buf *data, const uint8_t **p, size_t *n,
                      const char **rel_path, char *msg, size_t msglen)
{
    *rel_path = NULL;
    if (in->blob != NULL) {
        *p = in->blob;
        *n = in->blob_len;
        return 0;
    }
    const json_t *v = in->value;
    const json_t *path = json_is_object(v) ? json_object_get(v, "path") : NULL;
    const json_t *b64 = json_is_object(v) ? json_object_get(v, "data") : NULL;
    int rc;
    if (json_is_string(path) && b64 == NULL) {
        const char *rel = json_string_value(path);
        *rel_path = rel;
        rc = read_path(in, rel, data, msg, msglen);
    } else if (json_is_string(b64) && path == NULL) {
        rc = base64_decode(data, json_string_value(b64), json_string_length(b64));
        if (rc != 0) {
            snprintf(msg, msglen, rc == -1 ? "data is not valid base64" : "data is too large");
            rc = rc == -1 ? -BATCHD_E_INVALID_INPUT : -BATCHD_E_TOO_LARGE;
        }
    } else {
        snprintf(msg, msglen,
                 "an image input is {\"path\": \"rel/path\"} or {\"data\": \"<base64>\"}");
        rc = -BATCHD_E_INVALID_INPUT;
    }
    *p = (const uint8_t *)buf_data(data);
    *n = buf_len(data);
    return rc;
}

/* ---------------------------------------------------------------- output */

struct encoded {
    const char *format; /* "jpeg", "png" or "webp" */
    int width, height;
};

/* What every output of a job shares: the input's format ("same") and metadata, and whether
 * its pixels still wait for their conversion to sRGB. */
struct out_ctx {
    const struct img_params *p;
    enum img_format src;
    const struct img_meta *meta; /* the input's: profile, EXIF (orientation reset), XMP */
    int to_srgb;                 /* convert each output's pixels through meta->icc */
};

static const char *const format_names[] = {
    [IMG_FORMAT_JPEG] = "jpeg", [IMG_FORMAT_PNG] = "png", [IMG_FORMAT_WEBP] = "webp"};

/* Encodes the state's image (consumed: it may be changed in place) into DST. */
static int encode_state(struct img_state *st, const struct img_output *o, const struct out_ctx *oc,
                        struct buf *dst, struct encoded *e, char *msg, size_t msglen)
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
        realpath(in->data_dir, data) != NULL && path_within(data, out)) {
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

/* Encodes one output and writes its result object into OUT->json. */
static int emit_output(const struct job_input *in, struct job_output *out, struct img_state *st,
                       const struct img_output *o, const struct out_ctx *oc, const char *variant,
                       const char *stem, char *msg, size_t msglen)
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

/* ---------------------------------------------------------------- run */

struct pick_ctx {
    const struct img_params *p;
    enum img_format src;
    int denom;
};

/* The plan, once the header is known: refuse outputs that cannot be made, before any pixel
 * is, and pick the shrink-on-load factor. */
static int pick_scale(void *ctx, const struct img_header *h, char *msg, size_t msglen)
{
    struct pick_ctx *c = ctx;
    int rc = img_params_check_outputs(c->p, h, c->src, msg, msglen);
    if (rc != 0) {
        return rc;
    }
    c->denom = img_params_shrink(c->p, h);
    return c->denom;
}

typedef int (*decode_fn)(const uint8_t *data, size_t len, const struct img_decode_opts *opts,
                         struct img_header *hdr, struct img **out, char *msg, size_t msglen);

static const decode_fn decoders[] = {[IMG_FORMAT_JPEG] = img_jpeg_decode,
                                     [IMG_FORMAT_PNG] = img_png_decode,
                                     [IMG_FORMAT_WEBP] = img_webp_decode};

/* 1 when a step of P's shared pipeline or of a variant needs the colours in sRGB before it
 * runs: grayscale (a gray image has no RGB profile any more), and blur and sharpen, which mix
 * pixels far enough apart that filtering in a strongly non-linear space (an HLG or ProPhoto
 * profile) and converting afterwards shows (a blur(15) of hdr_room.png: 38 dB). Resampling,
 * crops, rotations and flips commute with the conversion within the quality bar. */
static int needs_srgb_first(const struct img_params *p)
{
    int g = 0;
    for (int v = -1; v < p->nvariants; v++) {
        const struct img_step *steps = v < 0 ? p->steps : p->variants[v].steps;
        int n = v < 0 ? p->nsteps : p->variants[v].nsteps;
        for (int i = 0; i < n; i++) {
            enum img_step_kind k = steps[i].kind;
            g |= k == IMG_STEP_GRAYSCALE || k == IMG_STEP_BLUR || k == IMG_STEP_SHARPEN;
        }
    }
    return g;
}

static int image_run(const struct job_input *in, struct job_output *out)
{
    char *msg = out->message;
    size_t msglen = sizeof out->message;
    char pathbuf[128];
    struct img_limits lim;
    struct img_params *p = malloc(sizeof *p);
    struct buf data;
    struct img_state st = {0}, vst = {0};
    struct img *im = NULL;
    struct img_meta meta = {0};
    int rc;
    buf_init(&data, IMG_MAX_FILE_BYTES);
    limits_of(in, &lim);
    if (p == NULL) {
        snprintf(msg, msglen, "out of memory");
        rc = -BATCHD_E_INTERNAL;
        goto out;
    }
    rc = img_params_parse(in->params, p, msg, msglen, pathbuf, sizeof pathbuf);
    if (rc != 0) {
        char m[sizeof out->message];
        snprintf(m, sizeof m, "%s", msg);
        snprintf(msg, msglen, "params.%.100s: %.140s", pathbuf, m);
        rc = -BATCHD_E_INVALID_INPUT;
        goto out;
    }
    if (p->output_path && in->output_dir == NULL) {
        snprintf(msg, msglen, "output \"path\" needs the server's --data-dir");
        rc = -BATCHD_E_INVALID_INPUT;
        goto out;
    }
    const uint8_t *bytes;
    size_t nbytes;
    const char *rel_path;
    rc = load_input(in, &data, &bytes, &nbytes, &rel_path, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    enum img_format src;
    rc = sniff(bytes, nbytes, &src, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    struct pick_ctx pc = {p, src, 1};
    struct img_decode_opts opts = {
        .max_pixels = lim.max_input_pixels,
        .max_memory = IMG_DECODER_MEMORY,
        .max_scans = IMG_MAX_SCANS,
        .pick_scale = pick_scale,
        .ctx = &pc,
        .meta = &meta,
        .want =
            (p->icc != IMG_ICC_STRIP ? IMG_WANT_ICC : 0) | (p->keep_metadata ? IMG_WANT_META : 0),
    };
    struct img_header hdr = {0};
    rc = decoders[src](bytes, nbytes, &opts, &hdr, &im, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    /* The input bytes are not needed past the decode: free them before the big buffers. */
    buf_cleanup(&data);
    int orientation = p->auto_orient ? hdr.orientation : 1;
    if (orientation != 1 && meta.exif != NULL) {
        img_exif_reset_orientation(meta.exif, meta.exif_len); /* applied below */
    }
    /* To sRGB: at each output's size (cheaper; within the quality bar, as the tests show)
     * unless the steps must run as written or one needs the colours first. */
    struct out_ctx oc = {p, src, &meta, 0};
    if (p->icc == IMG_ICC_SRGB && meta.icc != NULL) {
        if (p->exact || needs_srgb_first(p)) {
            if (img_icc_to_srgb(im, meta.icc, meta.icc_len) < 0) {
                rc = img_state_oom(msg, msglen);
                goto out;
            }
        } else {
            oc.to_srgb = 1;
        }
    }
    rc = img_state_init_take(&st, im, hdr.width, hdr.height, src == IMG_FORMAT_JPEG ? pc.denom : 1,
                             orientation, msg, msglen);
    im = NULL;
    if (rc != 0) {
        goto out;
    }
    rc = img_pipeline_run(&st, p->steps, p->nsteps, p->exact, lim.max_output_pixels, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    /* The stem of the output files: the batch's name for this job (unique in the batch),
     * or, when the job comes without one, a name from its input. */
    char stem[OUTNAME_MAX + 1] = "";
    if (p->output_path && in->name != NULL) {
        if (!outname_stem_ok(in->name)) {
            snprintf(msg, msglen, "the output name \"%.100s\" is not one batchd makes", in->name);
            rc = -BATCHD_E_INVALID_INPUT;
            goto out;
        }
        snprintf(stem, sizeof stem, "%s", in->name);
    } else if (p->output_path) {
        outname_stem(rel_path, NULL, in->index, stem, sizeof stem);
    }
    if (p->nvariants == 0) {
        rc = img_state_unreduce(&st, msg, msglen);
        if (rc == 0) {
            rc = emit_output(in, out, &st, &p->out, &oc, NULL, stem, msg, msglen);
        }
        goto out;
    }
    if (buf_adds(out->json, "{\"variants\":{") != 0) {
        rc = -BATCHD_E_TOO_LARGE;
        goto out;
    }
    for (int v = 0; v < p->nvariants && rc == 0; v++) {
        const struct img_variant *var = &p->variants[v];
        /* The last variant may consume the shared image; the others work on copies. */
        if (v + 1 == p->nvariants) {
            vst = st;
            st.im = NULL;
        } else if (img_state_copy(&vst, &st) != 0) {
            snprintf(msg, msglen, "out of memory");
            rc = -BATCHD_E_TOO_LARGE;
            break;
        }
        rc = img_pipeline_run(&vst, var->steps, var->nsteps, p->exact, lim.max_output_pixels, msg,
                              msglen);
        if (rc == 0) {
            rc = img_state_unreduce(&vst, msg, msglen);
        }
        if (rc == 0) {
            int w = 0;
            w |= v > 0 ? buf_adds(out->json, ",") : 0;
            w |= jsonw_cstr(out->json, var->name);
            w |= buf_adds(out->json, ":");
            rc = w != 0 ? -BATCHD_E_TOO_LARGE
                        : emit_output(in, out, &vst, &var->out, &oc, var->name, stem, msg, msglen);
        }
        img_state_cleanup(&vst);
    }
    if (rc == 0 && buf_adds(out->json, "}}") != 0) {
        rc = -BATCHD_E_TOO_LARGE;
    }
out:
    if (rc != 0) {
        /* A failed job returns no partial result and no blobs. */
        buf_reset(out->json);
        for (int i = 0; i < out->nblobs; i++) {
            buf_cleanup(&out->blobs[i].bytes);
        }
        out->nblobs = 0;
        out->err = rc;
        if (msg[0] == '\0') {
            snprintf(msg, msglen, "%s", batchd_err_message(rc));
        }
    }
    img_destroy(im);
    img_state_cleanup(&st);
    img_state_cleanup(&vst);
    img_meta_cleanup(&meta);
    buf_cleanup(&data);
    free(p);
    return rc;
}

static int image_validate(const json_t *params, char *msg, size_t msglen, char *path,
                          size_t pathlen)
{
    struct img_params *p = malloc(sizeof *p);
    if (p == NULL) {
        snprintf(msg, msglen, "out of memory");
        path[0] = '\0';
        return -BATCHD_E_INTERNAL;
    }
    int rc = img_params_parse(params, p, msg, msglen, path, pathlen);
    free(p);
    return rc;
}

/* The catalogue's "steps": the pipeline steps from the table their parser checks. */
static json_t *image_describe(void)
{
    json_t *steps = img_steps_describe();
    return steps != NULL ? json_pack("{s:o}", "steps", steps) : NULL;
}

const struct op op_image = {
    .name = "image",
    .summary = "decode a JPEG, PNG or WebP, run a pipeline of steps, encode (SPEC §6)",
    .input = "{\"path\": \"rel/path\"} under --data-dir, {\"data\": \"<base64>\"}, or an uploaded "
             "file (multipart part \"file\")",
    .result = "{\"format\",\"width\",\"height\",\"bytes\",\"data\"|\"path\"}, or "
              "{\"variants\":{name:{...}}}",
    .example = "{\"path\": \"photos/a.jpg\"}",
    .params = img_params_spec,
    .flags = OP_IMAGE | OP_SLOW,
    .cost_hint_ns = 200000000u,
    .validate_params = image_validate,
    .describe = image_describe,
    .run = image_run,
};
