/* Request bodies: JSON buffered, multipart files streamed into a memfd. */
#include "upload.h"

#include "../api/base64.h"
#include "../api/errors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The batch JSON of a multipart upload holds no inputs, so it is small. */
#define UPLOAD_MAX_BATCH_PART (16u * 1024 * 1024)

struct upload {
    struct MHD_PostProcessor *pp;
    int multipart;
    uint64_t max_bytes;
    uint64_t received;
    struct buf json;
    int fd;
    uint64_t fd_len;
    struct upload_file *files;
    size_t nfiles, files_cap;
    int in_file; /* the part being read is a file */
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

static enum MHD_Result upload_part(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *filename, const char *content_type,
                                   const char *transfer_encoding, const char *data, uint64_t off,
                                   size_t size)
{
    struct upload *u = cls;
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    if (key != NULL && strcmp(key, "batch") == 0) {
        if (buf_add(&u->json, data, size) != 0) {
            upload_fail(u, -BATCHD_E_BODY_TOO_LARGE, "the batch part is too large");
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (key != NULL && strcmp(key, "file") == 0) {
        if (off == 0) {
            /* A new file part begins. */
            if (u->nfiles == u->files_cap) {
                size_t cap = u->files_cap ? u->files_cap * 2 : 16;
                struct upload_file *f = realloc(u->files, cap * sizeof *f);
                if (f == NULL) {
                    upload_fail(u, -BATCHD_E_INTERNAL, "out of memory");
                    return MHD_NO;
                }
                u->files = f;
                u->files_cap = cap;
            }
            struct upload_file *f = &u->files[u->nfiles++];
            f->off = u->fd_len;
            f->len = 0;
            f->name = filename != NULL ? strdup(filename) : NULL;
        }
        if (u->nfiles == 0 || upload_store(u, data, size) != 0) {
            upload_fail(u, -BATCHD_E_BODY_TOO_LARGE, "the uploaded files are too large");
            return MHD_NO;
        }
        u->files[u->nfiles - 1].len += size;
        return MHD_YES;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "unexpected form part \"%.64s\": send a \"batch\" part and "
             "\"file\" parts", key ? key : "");
    upload_fail(u, -BATCHD_E_BAD_REQUEST, msg);
    return MHD_NO;
}

struct upload *upload_create(struct MHD_Connection *c, int multipart, uint64_t max_bytes)
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
        u->pp = MHD_create_post_processor(c, 64 * 1024, upload_part, u);
        if (u->pp == NULL) {
            /* MHD could not read the boundary from the Content-Type. */
            upload_fail(u, -BATCHD_E_BAD_REQUEST,
                        "multipart/form-data needs a boundary (and nothing after it)");
        }
    }
    return u;
}

void upload_destroy(struct upload *u)
{
    if (u == NULL) {
        return;
    }
    if (u->pp != NULL) {
        MHD_destroy_post_processor(u->pp);
    }
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
    if (u->pp == NULL) {
        return u->err;
    }
    if (MHD_post_process(u->pp, data, n) != MHD_YES) {
        return upload_fail(u, -BATCHD_E_BAD_REQUEST, "the multipart body is malformed");
    }
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
