/* Request bodies: JSON buffered, multipart files streamed into a memfd (the parsing itself is
 * server/multipart.c). */
#include "upload.h"

#include "../api/base64.h"
#include "../api/errors.h"
#include "multipart.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The batch JSON of a multipart upload holds no inputs, so it is small. */
#define UPLOAD_MAX_BATCH_PART (16u * 1024 * 1024)

enum upload_part_kind { UPLOAD_PART_NONE, UPLOAD_PART_BATCH, UPLOAD_PART_FILE };

struct upload {
    struct multipart *mp;
    int multipart;
    uint64_t max_bytes;
    uint64_t received;
    struct buf json;
    int fd;
    uint64_t fd_len;
    struct upload_file *files;
    size_t nfiles, files_cap;
    enum upload_part_kind part; /* what the part being read is */
    int err;
    char message[200];
};

static int upload_fail(struct upload *u, int err, const char *msg)
{
    if (u->err == 0) {
        u->err = err;
        snprintf(u->message, sizeof u->message, "%s", msg);
    }
    return err;
}

static int upload_store(struct upload *u, const void *p, size_t n)
{
    if (u->fd < 0) {
        u->fd = memfd_create("batchd-upload", MFD_CLOEXEC);
        if (u->fd < 0) {
            return -2;
        }
    }
    if (u->fd_len + n > u->max_bytes) {
        return -2;
    }
    const char *c = p;
    while (n > 0) {
        ssize_t w = pwrite(u->fd, c, n, (off_t)u->fd_len);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -2;
        }
        c += w;
        n -= (size_t)w;
        u->fd_len += (uint64_t)w;
    }
    return 0;
}

/* The multipart parser's events: the "batch" part goes to the JSON buffer, each "file" part
 * becomes one file of the memfd. A part is a file from its begin event to its end event, so
 * where the reads of the body end cannot make one part two, nor two parts one. */
static int upload_part(void *ud, enum multipart_event ev, const struct multipart_part *part,
                       const char *data, size_t size)
{
    struct upload *u = ud;
    if (ev == MULTIPART_PART_BEGIN) {
        u->part = UPLOAD_PART_NONE;
        if (part->name != NULL && strcmp(part->name, "batch") == 0) {
            u->part = UPLOAD_PART_BATCH;
            return 0;
        }
        if (part->name == NULL || strcmp(part->name, "file") != 0) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "unexpected form part \"%.64s\": send a \"batch\" part and \"file\" parts",
                     part->name ? part->name : "");
            return upload_fail(u, -BATCHD_E_BAD_REQUEST, msg);
        }
        if (u->nfiles == u->files_cap) {
            size_t cap = u->files_cap ? u->files_cap * 2 : 16;
            struct upload_file *f = realloc(u->files, cap * sizeof *f);
            if (f == NULL) {
                return upload_fail(u, -BATCHD_E_INTERNAL, "out of memory");
            }
            u->files = f;
            u->files_cap = cap;
        }
        struct upload_file *f = &u->files[u->nfiles];
        f->off = u->fd_len;
        f->len = 0;
        f->name = NULL;
        if (part->filename != NULL) {
            f->name = strdup(part->filename);
            if (f->name == NULL) {
                return upload_fail(u, -BATCHD_E_INTERNAL, "out of memory");
            }
        }
        u->nfiles++;
        u->part = UPLOAD_PART_FILE;
        return 0;
    }
    if (ev == MULTIPART_PART_END) {
        u->part = UPLOAD_PART_NONE;
        return 0;
    }
    if (u->part == UPLOAD_PART_BATCH) {
        if (buf_add(&u->json, data, size) != 0) {
            return upload_fail(u, -BATCHD_E_BODY_TOO_LARGE, "the batch part is too large");
        }
        return 0;
    }
    if (upload_store(u, data, size) != 0) {
        return upload_fail(u, -BATCHD_E_BODY_TOO_LARGE, "the uploaded files are too large");
    }
    u->files[u->nfiles - 1].len += size;
    return 0;
}

struct upload *upload_create(const char *content_type, int multipart, uint64_t max_bytes)
{
    struct upload *u = calloc(1, sizeof *u);
    if (u == NULL) {
        return NULL;
    }
    u->fd = -1;
    u->multipart = multipart;
    u->max_bytes = max_bytes;
    buf_init(&u->json, multipart ? UPLOAD_MAX_BATCH_PART : max_bytes);
    if (multipart) {
        u->mp = multipart_create(content_type, upload_part, u);
        if (u->mp == NULL) {
            free(u);
            return NULL;
        }
    }
    return u;
}

void upload_destroy(struct upload *u)
{
    if (u == NULL) {
        return;
    }
    multipart_destroy(u->mp);
    buf_cleanup(&u->json);
    for (size_t i = 0; i < u->nfiles; i++) {
        free(u->files[i].name);
    }
    free(u->files);
    if (u->fd >= 0) {
        close(u->fd);
    }
    free(u);
}

/* A parser error that no callback reported is the body's fault. */
static int upload_parsed(struct upload *u, int rc)
{
    if (rc == 0 || u->err != 0) {
        return u->err;
    }
    return upload_fail(u, -BATCHD_E_BAD_REQUEST, multipart_error(u->mp));
}

int upload_feed(struct upload *u, const char *data, size_t n)
{
    u->received += n;
    if (u->err != 0) {
        return u->err; /* discard the rest */
    }
    if (u->received > u->max_bytes) {
        buf_cleanup(&u->json);
        return upload_fail(u, -BATCHD_E_BODY_TOO_LARGE, "the request body is larger than allowed");
    }
    if (!u->multipart) {
        if (buf_add(&u->json, data, n) != 0) {
            return upload_fail(u, -BATCHD_E_BODY_TOO_LARGE, "the request body is too large");
        }
        return 0;
    }
    return upload_parsed(u, multipart_feed(u->mp, data, n));
}

int upload_finish(struct upload *u)
{
    if (u->err != 0 || !u->multipart || u->mp == NULL) {
        return u->err;
    }
    return upload_parsed(u, multipart_finish(u->mp));
}

struct upload *upload_restored(int multipart, uint64_t max_bytes)
{
    struct upload *u = upload_create(NULL, 0, max_bytes);
    if (u != NULL) {
        u->multipart = multipart; /* no parser: the parts come whole, from the store */
    }
    return u;
}

int upload_restore_json(struct upload *u, const void *data, size_t len)
{
    buf_reset(&u->json);
    return buf_add(&u->json, data, len) == 0 ? 0 : -1;
}

int upload_restore_file(struct upload *u, const char *name, const void *data, size_t len)
{
    if (u->nfiles == u->files_cap) {
        size_t cap = u->files_cap ? u->files_cap * 2 : 16;
        struct upload_file *f = realloc(u->files, cap * sizeof *f);
        if (f == NULL) {
            return -1;
        }
        u->files = f;
        u->files_cap = cap;
    }
    struct upload_file *f = &u->files[u->nfiles];
    f->off = u->fd_len;
    f->len = len;
    f->name = name != NULL ? strdup(name) : NULL;
    if ((name != NULL && f->name == NULL) || upload_store(u, data, len) != 0) {
        free(f->name);
        return -1;
    }
    u->nfiles++;
    return 0;
}

int upload_error(const struct upload *u, const char **message)
{
    *message = u->message;
    return u->err;
}

const struct buf *upload_json(const struct upload *u)
{
    return &u->json;
}

int upload_is_multipart(const struct upload *u)
{
    return u->multipart;
}

size_t upload_nfiles(const struct upload *u)
{
    return u->nfiles;
}

const struct upload_file *upload_file_at(const struct upload *u, size_t i)
{
    return i < u->nfiles ? &u->files[i] : NULL;
}

struct b64_sink {
    struct upload *u;
    int failed;
};

static int b64_emit(void *ud, const uint8_t *p, size_t n)
{
    struct b64_sink *s = ud;
    if (upload_store(s->u, p, n) != 0) {
        return -2;
    }
    return 0;
}

int upload_add_base64(struct upload *u, const char *s, size_t len, uint64_t *off,
                      uint64_t *outlen)
{
    uint64_t start = u->fd_len;
    struct b64_sink sink = {u, 0};
    int rc = base64_decode_each(s, len, b64_emit, &sink);
    if (rc != 0) {
        /* Give back what a bad input wrote: the next input starts where this one did. */
        u->fd_len = start;
        return rc == -1 ? -1 : -2;
    }
    *off = start;
    *outlen = u->fd_len - start;
    return 0;
}

int upload_fd(const struct upload *u)
{
    return u->fd;
}

uint64_t upload_bytes(const struct upload *u)
{
    return u->received;
}
