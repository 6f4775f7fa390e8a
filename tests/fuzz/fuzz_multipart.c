/* Fuzz target: the multipart upload path (server/upload.c over server/multipart.c), fed in
 * pieces whose sizes the input chooses, since where the reads of a body end is how
 * libmicrohttpd's parser miscounted parts. Each input is parsed twice, whole and in pieces;
 * the two must agree on the outcome, the batch part and every file (offset, length, name,
 * bytes), or the target aborts. Input layout:
 *     N (1 byte), N piece sizes (1 byte each, 0 means 1), the Content-Type, '\n', the body.
 * Built as a libFuzzer target with clang (-DBATCHD_FUZZ=ON) and as a corpus replayer with
 * any compiler (tests/fuzz/replay.c). */
#include "api/buf.h"
#include "server/upload.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_BODY (1u << 20)

static struct upload *fuzz_parse(const char *ct, const uint8_t *body, size_t len,
                                 const uint8_t *sizes, size_t nsizes, int *rc)
{
    struct upload *u = upload_create(ct, 1, FUZZ_MAX_BODY);
    if (u == NULL) {
        return NULL;
    }
    size_t at = 0, k = 0;
    while (at < len) {
        size_t n = len - at;
        if (nsizes > 0) {
            size_t want = sizes[k++ % nsizes];
            want = want == 0 ? 1 : want;
            n = want < n ? want : n;
        }
        upload_feed(u, (const char *)body + at, n);
        at += n;
    }
    *rc = upload_finish(u);
    return u;
}

static int fuzz_same_bytes(int fa, int fb, uint64_t off, uint64_t len)
{
    char a[4096], b[4096];
    while (len > 0) {
        size_t n = len < sizeof a ? (size_t)len : sizeof a;
        if (pread(fa, a, n, (off_t)off) != (ssize_t)n ||
            pread(fb, b, n, (off_t)off) != (ssize_t)n || memcmp(a, b, n) != 0) {
            return 0;
        }
        off += n;
        len -= n;
    }
    return 1;
}

static void fuzz_compare(const struct upload *a, int rca, const struct upload *b, int rcb)
{
    if (rca != rcb) {
        abort();
    }
    if (rca != 0) {
        return; /* the same refusal; what was kept before it may differ */
    }
    const struct buf *ja = upload_json(a), *jb = upload_json(b);
    if (buf_len(ja) != buf_len(jb) ||
        (buf_len(ja) > 0 && memcmp(buf_data(ja), buf_data(jb), buf_len(ja)) != 0) ||
        upload_nfiles(a) != upload_nfiles(b)) {
        abort();
    }
    for (size_t i = 0; i < upload_nfiles(a); i++) {
        const struct upload_file *fa = upload_file_at(a, i), *fb = upload_file_at(b, i);
        if (fa->off != fb->off || fa->len != fb->len || (fa->name == NULL) != (fb->name == NULL) ||
            (fa->name != NULL && strcmp(fa->name, fb->name) != 0) ||
            !fuzz_same_bytes(upload_fd(a), upload_fd(b), fa->off, fa->len)) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || (size_t)data[0] + 1 > size) {
        return 0;
    }
    size_t nsizes = data[0];
    const uint8_t *sizes = data + 1;
    const uint8_t *rest = sizes + nsizes;
    size_t rlen = size - 1 - nsizes;
    const uint8_t *nl = memchr(rest, '\n', rlen);
    if (nl == NULL || (size_t)(nl - rest) > 512) {
        return 0;
    }
    char ct[520];
    memcpy(ct, rest, (size_t)(nl - rest));
    ct[nl - rest] = '\0';
    const uint8_t *body = nl + 1;
    size_t blen = rlen - (size_t)(nl - rest) - 1;
    int rca = 0, rcb = 0;
    struct upload *whole = fuzz_parse(ct, body, blen, NULL, 0, &rca);
    struct upload *pieces = fuzz_parse(ct, body, blen, sizes, nsizes, &rcb);
    if (whole != NULL && pieces != NULL) {
        fuzz_compare(whole, rca, pieces, rcb);
    }
    upload_destroy(whole);
    upload_destroy(pieces);
    return 0;
}
