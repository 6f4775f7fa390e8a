/* Request bodies: the framing checks every request's headers pass (RFC 9112 §6), the memory
 * budget all bodies in progress share (--max-upload-memory), the start of a batch's upload
 * (the batches route's handler), each piece fed to it, refusals in the middle of a body,
 * and the watch that notices a client which cut its upload. What the upload holds is
 * upload.c's; what the batch does with it is stream.c's. */
#include "body.h"

#include "../api/errors.h"
#include "conn.h"
#include "internal.h"
#include "reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/* ---------------------------------------------------------------- framing */

struct framing {
    int content_length; /* Content-Length headers */
    int transfer_encoding;
    int te_chunked; /* the one Transfer-Encoding is exactly "chunked" */
    int bad_name;   /* a header name with blanks (e.g. "Transfer-Encoding : chunked") */
};

static enum MHD_Result framing_count(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct framing *f = cls;
    (void)kind;
    if (key == NULL) {
        return MHD_YES;
    }
    if (strpbrk(key, " \t") != NULL) {
        f->bad_name = 1;
    } else if (strcasecmp(key, "Content-Length") == 0) {
        f->content_length++;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->transfer_encoding++;
        /* Exactly as MHD compares it: "chunked " (a trailing blank) is not chunked to
         * MHD 0.9.75, which would then read the body until the peer closes. */
        f->te_chunked = value != NULL && strcasecmp(value, "chunked") == 0;
    }
    return MHD_YES;
}

/* RFC 9112 §6: a message whose body length is ambiguous is refused, not guessed at, since a
 * proxy in front may guess otherwise (request smuggling). libmicrohttpd 0.9.75 takes the
 * first of two Content-Lengths, lets Transfer-Encoding win over Content-Length and keeps
 * the connection, stores "Transfer-Encoding : chunked" as another header (so the body is
 * read as the next request), and reads an unknown coding until the peer closes. Returns
 * the reason to refuse (400 and close), or NULL. Two equal Content-Lengths are refused too:
 * no honest client sends them. */
const char *body_framing_problem(struct MHD_Connection *c)
{
    struct framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, framing_count, &f);
    if (f.bad_name) {
        return "a header name contains blanks (\"Name : value\")";
    }
    if (f.content_length > 1) {
        return "more than one Content-Length header";
    }
    if (f.transfer_encoding > 0 && f.content_length > 0) {
        return "both Content-Length and Transfer-Encoding";
    }
    if (f.transfer_encoding > 1 || (f.transfer_encoding == 1 && !f.te_chunked)) {
        return "Transfer-Encoding must be exactly \"chunked\"";
    }
    return NULL;
}

/* ---------------------------------------------------------------- body budget */

/* Reserves N more bytes of --max-upload-memory for R's body. Returns 0, or -1 when they do
 * not fit (nothing is reserved then). */
static int budget_take(struct request *r, uint64_t n)
{
    struct server *s = r->srv;
    if (n > s->cfg.max_upload_memory || s->upload_held > s->cfg.max_upload_memory - n) {
        return -1;
    }
    s->upload_held += n;
    r->upload_reserved += n;
    return 0;
}

static void budget_release(struct request *r)
{
    r->srv->upload_held -= r->upload_reserved;
    r->upload_reserved = 0;
}

static void budget_message(struct request *r, uint64_t want, char *msg, size_t len)
{
    struct server *s = r->srv;
    snprintf(msg, len,
             "request bodies in progress hold %llu bytes; this one needs %llu more and the "
             "limit (--max-upload-memory) is %llu; retry later",
             (unsigned long long)s->upload_held, (unsigned long long)want,
             (unsigned long long)s->cfg.max_upload_memory);
}

void body_release(struct request *r)
{
    upload_destroy(r->upload);
    r->upload = NULL;
    budget_release(r);
}

/* ---------------------------------------------------------------- abandoned bodies */

/* libmicrohttpd 0.9.75 takes a short read for "no more data" and waits for the next
 * edge-triggered event; when the client's FIN came with the last bytes there is no next
 * event, so an upload cut by its client was noticed only at --connection-timeout, holding its
 * memory. While a body is read we watch the socket for EPOLLRDHUP ourselves (edge-triggered,
 * re-armed after each piece once the client is gone); see body_hangup. */
/* Bodies up to this size mostly come with their headers, and at most this is held per
 * connection: they are not worth two epoll_ctl calls each (small batches run at ~20k/s). */
#define BODY_WATCH_MIN (64u * 1024)

static void body_hangup(void *ud);

static void body_watch(struct request *r, int op)
{
    if (op == EPOLL_CTL_DEL) {
        if (r->body_watched) {
            conn_watch_body(r->cn, 0, NULL, NULL);
            r->body_watched = 0;
        }
        return;
    }
    if ((op == EPOLL_CTL_MOD && !r->body_watched) || (op == EPOLL_CTL_ADD && r->body_watched)) {
        return;
    }
    r->body_watched = conn_watch_body(r->cn, 1, body_hangup, r) == 0;
}

/* The client of R (UD) closed its side while R's body was being read (conn.c's watch). */
static void body_hangup(void *ud)
{
    struct request *r = ud;
    if (!r->body_watched) {
        return;
    }
    int fd = conn_fd(r->cn);
    int pending = 0;
    if (fd < 0 || ioctl(fd, FIONREAD, &pending) != 0 || pending > 0) {
        /* MHD has bytes to read still (they may complete the body): look again after the
         * next piece. */
        r->peer_closed = 1;
        return;
    }
    /* Everything the client sent has been read and handed to us, and the body is not
     * complete (its last piece would have ended the watch): it never will be. Shutting our
     * read side wakes MHD's epoll set, so MHD reads the end of the stream and closes the
     * connection; the completed callback then frees the upload and its budget. */
    body_watch(r, EPOLL_CTL_DEL);
    shutdown(fd, SHUT_RD);
}

void body_done(struct request *r)
{
    body_watch(r, EPOLL_CTL_DEL);
}

/* A piece of R's body: past --max-body (a chunked body has no Content-Length to refuse it
 * by) or past the memory budget the request is answered at once and the connection closed. */
enum MHD_Result body_piece(struct request *r, const char *data, size_t n)
{
    struct server *s = r->srv;
    uint64_t after = upload_bytes(r->upload) + n;
    if (after > s->cfg.max_body_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %llu bytes",
                 (unsigned long long)s->cfg.max_body_bytes);
        return reply_refuse_now(r, -BATCHD_E_BODY_TOO_LARGE, msg);
    }
    if (after > r->upload_reserved) {
        /* Only chunked bodies grow past their reservation; take a little ahead. */
        uint64_t want = after - r->upload_reserved;
        uint64_t ahead = want < 65536 ? 65536 : want;
        if (budget_take(r, ahead) != 0 && budget_take(r, want) != 0) {
            char msg[256];
            budget_message(r, want, msg, sizeof msg);
            return reply_refuse_now(r, -BATCHD_E_OVERLOADED, msg);
        }
    }
    upload_feed(r->upload, data, n);
    if (r->peer_closed) {
        body_watch(r, EPOLL_CTL_MOD); /* re-arm: reports the hang-up after this MHD_run */
    }
    return MHD_YES;
}

/* ---------------------------------------------------------------- the start */

/* 1 if the Content-Type CT is the media type TYPE, parameters (";charset=...") allowed:
 * a bare prefix match would take "application/jsonx" for JSON. */
static int media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    if (ct == NULL || strncasecmp(ct, type, n) != 0) {
        return 0;
    }
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t';
}

enum MHD_Result body_start(struct request *r)
{
    struct server *s = r->srv;
    if (s->draining) {
        return reply_error(r, -BATCHD_E_DRAINING, NULL, NULL);
    }
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    unsigned long long clen = 0;
    if (cl != NULL) {
        char *end = NULL;
        clen = strtoull(cl, &end, 10);
        /* A body that could never fit the memory budget is as refused as one over
         * --max-body: waiting would not help. */
        uint64_t limit = s->cfg.max_body_bytes < s->cfg.max_upload_memory
                             ? s->cfg.max_body_bytes
                             : s->cfg.max_upload_memory;
        if (end != cl && clen > limit) {
            char msg[160];
            snprintf(msg, sizeof msg, "the body is %llu bytes; the limit is %llu%s", clen,
                     (unsigned long long)limit,
                     limit < s->cfg.max_body_bytes ? " (--max-upload-memory)" : "");
            return reply_error(r, -BATCHD_E_BODY_TOO_LARGE, msg, NULL);
        }
    }
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
    int json = media_type_is(ct, "application/json");
    int multipart = media_type_is(ct, "multipart/form-data");
    if (!json && !multipart) {
        return reply_error(r, -BATCHD_E_UNSUPPORTED_MEDIA_TYPE, NULL, NULL);
    }
    /* The whole body is reserved before any of it is read, so that a 503 reaches the
     * client before it sends the body; chunked bodies reserve as they come. */
    if (clen > 0 && budget_take(r, clen) != 0) {
        char msg[256];
        budget_message(r, clen, msg, sizeof msg);
        return reply_error(r, -BATCHD_E_OVERLOADED, msg, NULL);
    }
    r->upload = upload_create(ct, multipart, s->cfg.max_body_bytes);
    if (r->upload == NULL) {
        return reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
    }
    if (cl == NULL || clen > BODY_WATCH_MIN) {
        body_watch(r, EPOLL_CTL_ADD);
    }
    return MHD_YES;
}
