/* The "image" op (SPEC §6): read the input (handed-over bytes, base64, or a file under the
 * data dir that nothing can escape), sniff its format, decode it once (shrunk on load when
 * the pipeline allows), run the shared pipeline and each variant, encode, and answer inline
 * (base64 or binary blobs) or by writing files under the output dir. */
#include "internal.h"

#include "../../api/base64.h"
#include "../../api/errors.h"
#include "../../api/jsonw.h"
#include "img_jpeg.h"
#include "img_pipeline.h"
#include "img_png.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IMG_DEFAULT_MAX_PIXELS 100000000ull
#define IMG_MAX_FILE_BYTES (1024ull * 1024 * 1024)
#define IMG_MAX_ENCODED_BYTES (1024ull * 1024 * 1024)
#define IMG_DECODER_MEMORY (1024ull * 1024 * 1024)
#define IMG_MAX_SCANS 100

struct img_limits {
    uint64_t max_input_pixels;
    uint64_t max_output_pixels;
};

static uint64_t env_u64(const char *name, uint64_t def)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0') {
        return def;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0) {
        return def;
    }
    return v;
}

/* The server hands its limits to workers through the environment. */
static void limits_from_env(struct img_limits *l)
{
    l->max_input_pixels = env_u64("BATCHD_MAX_INPUT_PIXELS", IMG_DEFAULT_MAX_PIXELS);
    l->max_output_pixels = env_u64("BATCHD_MAX_OUTPUT_PIXELS", IMG_DEFAULT_MAX_PIXELS);
}

/* ---------------------------------------------------------------- input */

enum src_format {
    SRC_JPEG,
    SRC_PNG,
};

static int sniff(const uint8_t *p, size_t n, enum src_format *f, char *msg, size_t msglen)
{
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 2 && p[0] == 0xff && p[1] == 0xd8) {
        *f = SRC_JPEG;
        return 0;
    }
    if (n >= 8 && memcmp(p, png_magic, 8) == 0) {
        *f = SRC_PNG;
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
    } else if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) {
        what = "WebP";
    } else if (n >= 4 && (memcmp(p, "II*", 4) == 0 || memcmp(p, "MM\0*", 4) == 0)) {
        what = "TIFF";
    } else if (n >= 2 && memcmp(p, "BM", 2) == 0) {
        what = "BMP";
    } else if (n == 0) {
        what = "an empty input";
    }
    snprintf(msg, msglen, "the input is %s, not JPEG or PNG", what);
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
static int open_beneath(int dirfd, const char *rel)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    /* BATCHD_TEST_NO_OPENAT2 lets the tests run the fallback on kernels that have openat2. */
    long fd = -1;
    errno = ENOSYS;
    if (getenv("BATCHD_TEST_NO_OPENAT2") == NULL) {
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
    int fd = open_beneath(dirfd, rel);
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

/* The input's bytes: borrowed from IN->blob, or read/decoded into DATA. */
static int load_input(const struct job_input *in, struct buf *data, const uint8_t **p, size_t *n,
                      const char **stem_src, char *msg, size_t msglen)
{
    *stem_src = in->name;
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
        if (*stem_src == NULL) {
            *stem_src = rel;
        }
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
    const char *format; /* "jpeg" or "png" */
    int width, height;
};

/* Encodes the state's image (consumed: it may be changed in place) into DST. */
static int encode_state(struct img_state *st, const struct img_output *o, enum src_format src,
                        struct buf *dst, struct encoded *e, char *msg, size_t msglen)
{
    int jpeg = o->format == IMG_FORMAT_JPEG || (o->format == IMG_FORMAT_SAME && src == SRC_JPEG);
    struct img *im = st->im;
    e->width = im->width;
    e->height = im->height;
    if (jpeg) {
        e->format = "jpeg";
        if (img_has_alpha(im)) {
            struct img *flat = img_flatten_white(im);
            if (flat == NULL) {
                snprintf(msg, msglen, "out of memory");
                return -BATCHD_E_TOO_LARGE;
            }
            img_destroy(st->im);
            st->im = im = flat;
        }
        return img_jpeg_encode(im, o->quality, o->progressive, dst, msg, msglen);
    }
    e->format = "png";
    img_unpremultiply(im);
    return img_png_encode(im, o->png_level, dst, msg, msglen);
}

/* A file name part from a user's name: the base name without extension, limited to safe
 * characters. */
static void make_stem(const char *name, uint64_t index, char *out, size_t n)
{
    if (name != NULL) {
        const char *base = strrchr(name, '/');
        base = base ? base + 1 : name;
        const char *dot = strrchr(base, '.');
        size_t len = dot && dot != base ? (size_t)(dot - base) : strlen(base);
        size_t k = 0;
        for (size_t i = 0; i < len && k + 1 < n && k < 100; i++) {
            char c = base[i];
            int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.';
            out[k++] = ok ? c : '_';
        }
        out[k] = '\0';
        if (k > 0 && out[0] != '.') {
            return;
        }
    }
    snprintf(out, n, "%llu", (unsigned long long)index);
}

static int write_file(const struct job_input *in, const char *fname, const struct buf *bytes,
                      char *msg, size_t msglen)
{
    int dirfd = open(in->output_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 && errno == ENOENT) {
        /* The default output dir (DATA_DIR/out) is made by the first job that writes into
         * it, not at start-up: a data dir that only feeds inputs is never written to. */
        if (mkdir(in->output_dir, 0755) == 0 || errno == EEXIST) {
            dirfd = open(in->output_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        }
    }
    if (dirfd < 0) {
        snprintf(msg, msglen, "the output dir cannot be opened: %s", strerror(errno));
        return -BATCHD_E_INTERNAL;
    }
    char tmp[320];
    snprintf(tmp, sizeof tmp, ".%s.%ld.tmp", fname, (long)getpid());
    int rc = 0;
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(msg, msglen, "cannot write %s: %s", fname, strerror(errno));
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
            snprintf(msg, msglen, "cannot write %s: %s", fname, strerror(errno));
            rc = -BATCHD_E_INTERNAL;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (close(fd) != 0 && rc == 0) {
        snprintf(msg, msglen, "cannot write %s: %s", fname, strerror(errno));
        rc = -BATCHD_E_INTERNAL;
    }
    /* Write then rename: a reader never sees half a file. */
    if (rc == 0 && renameat(dirfd, tmp, dirfd, fname) != 0) {
        snprintf(msg, msglen, "cannot write %s: %s", fname, strerror(errno));
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
                       const struct img_output *o, int to_path, enum src_format src,
                       const char *variant, const char *stem, char *msg, size_t msglen)
{
    struct buf local;
    buf_init(&local, IMG_MAX_ENCODED_BYTES);
    struct buf *bytes = &local;
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
    int rc = encode_state(st, o, src, bytes, &e, msg, msglen);
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
        char fname[200], rel[4200];
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
    int denom;
};

static int pick_scale(void *ctx, const struct img_header *h)
{
    struct pick_ctx *c = ctx;
    c->denom = img_params_shrink(c->p, h);
    return c->denom;
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
    int rc;
    buf_init(&data, IMG_MAX_FILE_BYTES);
    limits_from_env(&lim);
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
    const char *stem_src;
    rc = load_input(in, &data, &bytes, &nbytes, &stem_src, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    enum src_format src;
    rc = sniff(bytes, nbytes, &src, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    struct pick_ctx pc = {p, 1};
    struct img_decode_opts opts = {
        .max_pixels = lim.max_input_pixels,
        .max_memory = IMG_DECODER_MEMORY,
        .max_scans = IMG_MAX_SCANS,
        .pick_scale = pick_scale,
        .ctx = &pc,
    };
    struct img_header hdr = {0};
    rc = src == SRC_JPEG ? img_jpeg_decode(bytes, nbytes, &opts, &hdr, &im, msg, msglen)
                         : img_png_decode(bytes, nbytes, &opts, &hdr, &im, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    /* The input bytes are not needed past the decode: free them before the big buffers. */
    buf_cleanup(&data);
    rc = img_state_init_take(&st, im, hdr.width, hdr.height, src == SRC_JPEG ? pc.denom : 1,
                             p->auto_orient ? hdr.orientation : 1, msg, msglen);
    im = NULL;
    if (rc != 0) {
        goto out;
    }
    rc = img_pipeline_run(&st, p->steps, p->nsteps, p->exact, lim.max_output_pixels, msg, msglen);
    if (rc != 0) {
        goto out;
    }
    char stem[128];
    make_stem(stem_src, in->index, stem, sizeof stem);
    if (p->nvariants == 0) {
        if ((rc = img_state_unreduce(&st, msg, msglen)) == 0) {
            rc = emit_output(in, out, &st, &p->out, p->output_path, src, NULL, stem, msg, msglen);
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
                        : emit_output(in, out, &vst, &var->out, p->output_path, src, var->name,
                                      stem, msg, msglen);
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

static const struct op_param image_params[] = {
    {"pipeline", OP_PARAM_ARRAY, 0, -1, NULL, "[]",
     "up to 32 steps {\"op\": name, ...params}, applied in order; \"steps\" in this entry "
     "lists each step with its params, their ranges and defaults"},
    {"variants", OP_PARAM_ARRAY, 0, -1, NULL, NULL,
     "up to 16 outputs from one decode, each {\"name\":[A-Za-z0-9_-]{1,32},\"pipeline\":[...],"
     "\"format\",\"quality\",\"progressive\",\"png_level\"} run after the shared pipeline; the "
     "result is then {\"variants\":{name:{...}}}"},
    {"format", OP_PARAM_STRING, 0, -1, "jpeg|png|same", "\"same\"",
     "output format; same = the input's; JPEG output drops alpha over white"},
    {"quality", OP_PARAM_INT, 1, 100, NULL, "85", "JPEG quality"},
    {"progressive", OP_PARAM_BOOL, 0, -1, NULL, "false", "progressive JPEG"},
    {"png_level", OP_PARAM_INT, 0, 9, NULL, "3",
     "zlib level; 0-3 use the SUB filter only (fast), 4-9 pick a filter per row"},
    {"output", OP_PARAM_STRING, 0, -1, "inline|path", "\"inline\"",
     "inline: {format,width,height,bytes,data:base64} (binary in a tar stream); path: the file "
     "is written under the data dir's output folder and the result is "
     "{format,width,height,bytes,path}"},
    {"auto_orient", OP_PARAM_BOOL, 0, -1, NULL, "true", "apply the JPEG EXIF orientation"},
    {"exact", OP_PARAM_BOOL, 0, -1, NULL, "false",
     "run the steps as written: no blur moved after a downscale, no JPEG shrink-on-load"},
    {NULL, 0, 0, 0, NULL, NULL, NULL},
};

const struct op op_image = {
    .name = "image",
    .summary = "decode a JPEG or PNG, run a pipeline of steps, encode (SPEC §6)",
    .input = "{\"path\": \"rel/path\"} under --data-dir, {\"data\": \"<base64>\"}, or an uploaded "
             "file (multipart part \"file\")",
    .result = "{\"format\",\"width\",\"height\",\"bytes\",\"data\"|\"path\"}, or "
              "{\"variants\":{name:{...}}}",
    .example = "{\"path\": \"photos/a.jpg\"}",
    .params = image_params,
    .flags = OP_IMAGE | OP_SLOW,
    .cost_hint_ns = 200000000u,
    .validate_params = image_validate,
    .describe = image_describe,
    .run = image_run,
};
