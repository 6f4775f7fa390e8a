/* The image op's input (SPEC §6): the handed-over bytes, base64, or a file under the data dir
 * that nothing can escape (openat2 RESOLVE_BENEATH, or O_NOFOLLOW part by part) and that is not
 * in the output dir; and which format the bytes are. Not the decoding: img_op.c picks the
 * codec from the sniffed format. */
#include "img_input.h"

#include "../../api/base64.h"
#include "../../api/errors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int img_input_sniff(const uint8_t *p, size_t n, enum img_format *f, char *msg, size_t msglen)
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

int img_input_path_within(const char *p, const char *dir)
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
        return img_input_path_within(file, out);
    }
    char joined[PATH_MAX];
    int w = snprintf(joined, sizeof joined, "%s/%s", in->data_dir, rel);
    if (w < 0 || (size_t)w >= sizeof joined || realpath(joined, file) == NULL) {
        return 1; /* cannot tell: refuse rather than risk an input */
    }
    return img_input_path_within(file, out);
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

int img_input_load(const struct job_input *in, struct buf *data, const uint8_t **p, size_t *n,
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
