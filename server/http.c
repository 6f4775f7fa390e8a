/* HTTP: the libmicrohttpd daemon (external epoll mode, driven by loop.c, so everything runs
 * on one thread and needs no locks), routing, request limits, the small endpoints, error
 * bodies. Batch streaming itself is in stream.c. */
#include "internal.h"

#include "../api/errors.h"
#include "../api/jsonw.h"
#include "../api/torture.h"
#include "../workers/ipc.h"
#include "../workers/ops/ops.h"
#include "auth.h"
#include "log.h"
#include "metrics.h"
#include "observe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

struct route_row {
    const char *path;
    enum route route;
    const char *allow; /* methods, as the Allow header lists them */
};

static const struct route_row routes[] = {
    {"/v1/batches", ROUTE_BATCHES, "POST, OPTIONS"},
    {"/v1/ops", ROUTE_OPS, "GET, HEAD, OPTIONS"},
    {"/healthz", ROUTE_HEALTHZ, "GET, HEAD"},
    {"/readyz", ROUTE_READYZ, "GET, HEAD"},
    {"/metrics", ROUTE_METRICS, "GET, HEAD"},
    {"/", ROUTE_CONSOLE, "GET, HEAD"},
    /* a path that ends in '/' (but "/") also matches every path under it */
    {"/web/", ROUTE_CONSOLE, "GET, HEAD"},
};

static const struct route_row *route_find(const char *url)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t n = strlen(routes[i].path);
        int prefix = n > 1 && routes[i].path[n - 1] == '/';
        if (strcmp(routes[i].path, url) == 0 || (prefix && strncmp(routes[i].path, url, n) == 0)) {
            return &routes[i];
        }
    }
    return NULL;
}

static int method_allowed(const struct route_row *rr, const char *method)
{
    size_t n = strlen(method);
    const char *p = rr->allow;
    while (*p != '\0') {
        if (strncmp(p, method, n) == 0 && (p[n] == ',' || p[n] == '\0')) {
            return 1;
        }
        p = strchr(p, ',');
        if (p == NULL) {
            break;
        }
        p += 2;
    }
    return 0;
}

void http_add_common_headers(struct request *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    const char *allow = auth_cors_allow_origin(r->srv->auth, origin);
    if (allow != NULL) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", allow);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                AUTH_CORS_EXPOSE_HEADERS);
        if (strcmp(allow, "*") != 0) {
            MHD_add_response_header(resp, "Vary", "Origin");
        }
    }
}

static enum MHD_Result reply(struct request *r, int status, const char *ctype, const char *body,
                             size_t len, const char *allow, int retry_after)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    http_add_common_headers(r, resp);
    if (allow != NULL) {
        MHD_add_response_header(resp, "Allow", allow);
    }
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    r->status = status;
    r->bytes_out += len;
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result reply_error_allow(struct request *r, int err, const char *message,
                                         const char *path, const char *allow)
{
    struct buf b;
    buf_init(&b, 8192);
    buf_adds(&b, "{\"error\":");
    jsonw_error_object(&b, err, message, path);
    buf_adds(&b, "}\n");
    int status = batchd_err_http_status(err);
    if (status == 0) {
        status = 500;
    }
    int retry = (err == -BATCHD_E_OVERLOADED || err == -BATCHD_E_DRAINING) ? 1 : 0;
    if (log_enabled(LOG_DEBUG)) {
        char st[16];
        snprintf(st, sizeof st, "%d", status);
        log_event("debug", "refused", "request_id", r->id, "status", st, "code",
                  batchd_err_name(err), "message", message ? message : batchd_err_message(err),
                  "path", path, NULL);
    }
    enum MHD_Result rc =
        reply(r, status, "application/json", buf_data(&b), buf_len(&b), allow, retry);
    buf_cleanup(&b);
    return rc;
}

enum MHD_Result http_reply_error(struct request *r, int err, const char *message,
                                 const char *path)
{
    return reply_error_allow(r, err, message, path, NULL);
}

/* ---------------------------------------------------------------- small endpoints */

static enum MHD_Result serve_simple(struct request *r)
{
    struct server *s = r->srv;
    char body[512];
    switch (r->route) {
    case ROUTE_OPS:
        return reply(r, 200, "application/json", s->ops_json, s->ops_json_len, NULL, 0);
    case ROUTE_HEALTHZ:
        snprintf(body, sizeof body, "{\"status\":\"ok\"}\n");
        return reply(r, 200, "application/json", body, strlen(body), NULL, 0);
    case ROUTE_READYZ: {
        int up = dispatch_workers_up(s->dispatch), want = dispatch_workers(s->dispatch);
        int ready = !s->draining && up == want;
        snprintf(body, sizeof body,
                 "{\"status\":\"%s\",\"workers\":%d,\"workers_up\":%d,\"draining\":%s}\n",
                 ready ? "ready" : "not_ready", want, up, s->draining ? "true" : "false");
        return reply(r, ready ? 200 : 503, "application/json", body, strlen(body), NULL,
                     ready ? 0 : 1);
    }
    case ROUTE_METRICS: {
        struct buf b;
        buf_init(&b, 16u << 20);
        enum MHD_Result rc =
            observe_render(s, &b) == 0
                ? reply(r, 200, METRICS_CONTENT_TYPE, buf_data(&b), buf_len(&b), NULL, 0)
                : http_reply_error(r, -BATCHD_E_INTERNAL, "cannot render the metrics", NULL);
        buf_cleanup(&b);
        return rc;
    }
    default:
        return http_reply_error(r, -BATCHD_E_NOT_FOUND_ROUTE, NULL, NULL);
    }
}

/* ---------------------------------------------------------------- requests */

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

static void request_make_id(struct request *r, struct MHD_Connection *c)
{
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (given != NULL) {
        size_t n = strlen(given);
        int ok = n > 0 && n < sizeof r->id;
        for (size_t i = 0; ok && i < n; i++) {
            unsigned char ch = (unsigned char)given[i];
            ok = ch > 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
        }
        if (ok) {
            memcpy(r->id, given, n + 1);
            return;
        }
    }
    struct server *s = r->srv;
    uint64_t x = (++s->request_seq) ^ s->id_salt;
    /* splitmix64: ids that look random but are unique per process */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    snprintf(r->id, sizeof r->id, "%016llx", (unsigned long long)x);
}

static int auth_ok(struct server *s, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    return auth_check(s->auth, h) == 0;
}

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
static const char *framing_problem(struct MHD_Connection *c)
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

/* Answers ERR now, in the middle of the body, and closes the connection: libmicrohttpd
 * 0.9.75 queues no response while a body is being read (MHD_queue_response refuses it), and
 * reading the rest only to answer at its end is what a client sending without end wants.
 * The response is written straight to the socket (it is small, and nothing else is being
 * sent on this connection while its request body is read); MHD_NO then makes MHD close. */
static enum MHD_Result refuse_now(struct request *r, int err, const char *message)
{
    struct buf b;
    buf_init(&b, 16384);
    int status = batchd_err_http_status(err);
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    struct buf body;
    buf_init(&body, 8192);
    buf_adds(&body, "{\"error\":");
    jsonw_error_object(&body, err, message, NULL);
    buf_adds(&body, "}\n");
    buf_printf(&b,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
               "X-Request-Id: %s\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
               status, reason != NULL ? reason : "Error", r->id,
               status == 503 ? "Retry-After: 1\r\n" : "", buf_len(&body));
    buf_add(&b, buf_data(&body), buf_len(&body));
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci != NULL && buf_len(&b) > 0) {
        ssize_t w = send(ci->connect_fd, buf_data(&b), buf_len(&b), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            r->bytes_out += (uint64_t)w;
        }
    }
    r->status = status;
    buf_cleanup(&body);
    buf_cleanup(&b);
    return MHD_NO;
}

/* ---------------------------------------------------------------- abandoned bodies */

/* libmicrohttpd 0.9.75 takes a short read for "no more data" and waits for the next
 * edge-triggered event; when the client's FIN came with the last bytes there is no next
 * event, so an upload cut by its client was noticed only at --connection-timeout, holding its
 * memory. While a body is read we watch the socket for EPOLLRDHUP ourselves (edge-triggered,
 * re-armed after each piece once the client is gone); see http_body_hangup. */
/* Bodies up to this size mostly come with their headers, and at most this is held per
 * connection: they are not worth two epoll_ctl calls each (small batches run at ~20k/s). */
#define HTTP_BODY_WATCH_MIN (64u * 1024)

static void body_watch(struct request *r, int op)
{
    if (op == EPOLL_CTL_DEL) {
        if (r->body_watched) {
            conn_watch_body(r->cn, r, 0);
            r->body_watched = 0;
        }
        return;
    }
    if ((op == EPOLL_CTL_MOD && !r->body_watched) || (op == EPOLL_CTL_ADD && r->body_watched)) {
        return;
    }
    r->body_watched = conn_watch_body(r->cn, r, 1) == 0;
}

void http_body_hangup(struct request *r)
{
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

/* A piece of R's body: past --max-body (a chunked body has no Content-Length to refuse it
 * by) or past the memory budget the request is answered at once and the connection closed. */
static enum MHD_Result body_piece(struct request *r, const char *data, size_t n)
{
    struct server *s = r->srv;
    uint64_t after = upload_bytes(r->upload) + n;
    if (after > s->cfg.max_body_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %llu bytes",
                 (unsigned long long)s->cfg.max_body_bytes);
        return refuse_now(r, -BATCHD_E_BODY_TOO_LARGE, msg);
    }
    if (after > r->upload_reserved) {
        /* Only chunked bodies grow past their reservation; take a little ahead. */
        uint64_t want = after - r->upload_reserved;
        uint64_t ahead = want < 65536 ? 65536 : want;
        if (budget_take(r, ahead) != 0 && budget_take(r, want) != 0) {
            char msg[256];
            budget_message(r, want, msg, sizeof msg);
            return refuse_now(r, -BATCHD_E_OVERLOADED, msg);
        }
    }
    upload_feed(r->upload, data, n);
    if (r->peer_closed) {
        body_watch(r, EPOLL_CTL_MOD); /* re-arm: reports the hang-up after this MHD_run */
    }
    return MHD_YES;
}

/* The debug line of a batch that starts: its size and the chunk size it runs with. */
static void log_batch_accepted(const struct request *r)
{
    char jobs[24], bytes[24], chunk[24];
    snprintf(jobs, sizeof jobs, "%llu", (unsigned long long)r->spec.njobs);
    snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)upload_bytes(r->upload));
    snprintf(chunk, sizeof chunk, "%zu", dispatch_batch_chunksize(r->batch));
    log_event("debug", "batch_accepted", "request_id", r->id, "op",
              r->spec.op ? r->spec.op : "(per job)", "jobs", jobs, "bytes_in", bytes, "chunksize",
              chunk, "order", r->spec.order == BATCH_ORDER_COMPLETED ? "completed" : "input",
              "format", writer_content_type(r->writer.fmt), NULL);
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version, const char *upload_data,
                             size_t *upload_data_size, void **con_cls)
{
    struct server *s = cls;
    struct request *r = *con_cls;
    (void)version;
    if (r == NULL) {
        /* Torture builds: this request's Nth allocation fails (a no-op otherwise). */
        torture_arm_text(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Batchd-Fail-Alloc"));
        r = calloc(1, sizeof *r);
        if (r == NULL) {
            return MHD_NO;
        }
        r->srv = s;
        r->conn = c;
        r->cn = conn_of(c);
        r->started_ns = ipc_now_ns();
        snprintf(r->method, sizeof r->method, "%s", method);
        buf_init(&r->out, SIZE_MAX / 2);
        request_make_id(r, c);
        *con_cls = r;
        const char *bad_framing = framing_problem(c);
        if (bad_framing != NULL) {
            /* Answered before the body is read: MHD then closes the connection. */
            return http_reply_error(r, -BATCHD_E_BAD_REQUEST, bad_framing, NULL);
        }
        const struct route_row *rr = route_find(url);
        if (rr == NULL) {
            return http_reply_error(r, -BATCHD_E_NOT_FOUND_ROUTE, NULL, NULL);
        }
        r->route = rr->route;
        if (!method_allowed(rr, method)) {
            return reply_error_allow(r, -BATCHD_E_METHOD_NOT_ALLOWED, NULL, NULL, rr->allow);
        }
        if (strcmp(method, "OPTIONS") == 0) {
            /* CORS preflight (and plain OPTIONS): say what is allowed. */
            struct MHD_Response *resp =
                MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            http_add_common_headers(r, resp);
            MHD_add_response_header(resp, "Allow", rr->allow);
            const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
            if (auth_cors_allow_origin(s->auth, origin) != NULL) {
                MHD_add_response_header(resp, "Access-Control-Allow-Methods", rr->allow);
                MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                        AUTH_CORS_ALLOW_HEADERS);
                MHD_add_response_header(resp, "Access-Control-Max-Age", AUTH_CORS_MAX_AGE);
            }
            r->status = 204;
            enum MHD_Result rc = MHD_queue_response(c, 204, resp);
            MHD_destroy_response(resp);
            return rc;
        }
        if (auth_required(s->auth, method, rr->path) && !auth_ok(s, c)) {
            return http_reply_error(r, -BATCHD_E_UNAUTHORIZED, NULL, NULL);
        }
        if (r->route == ROUTE_CONSOLE) {
            return console_serve(r, url);
        }
        if (r->route != ROUTE_BATCHES) {
            return serve_simple(r);
        }
        if (s->draining) {
            return http_reply_error(r, -BATCHD_E_DRAINING, NULL, NULL);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
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
                return http_reply_error(r, -BATCHD_E_BODY_TOO_LARGE, msg, NULL);
            }
        }
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        int json = media_type_is(ct, "application/json");
        int multipart = media_type_is(ct, "multipart/form-data");
        if (!json && !multipart) {
            return http_reply_error(r, -BATCHD_E_UNSUPPORTED_MEDIA_TYPE, NULL, NULL);
        }
        /* The whole body is reserved before any of it is read, so that a 503 reaches the
         * client before it sends the body; chunked bodies reserve as they come. */
        if (clen > 0 && budget_take(r, clen) != 0) {
            char msg[256];
            budget_message(r, clen, msg, sizeof msg);
            return http_reply_error(r, -BATCHD_E_OVERLOADED, msg, NULL);
        }
        r->upload = upload_create(ct, multipart, s->cfg.max_body_bytes);
        if (r->upload == NULL) {
            return http_reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
        }
        if (cl == NULL || clen > HTTP_BODY_WATCH_MIN) {
            body_watch(r, EPOLL_CTL_ADD);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        /* After a malformed part the rest (bounded by its Content-Length or --max-body) is
         * read and dropped; that refusal goes out at the end. */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return r->upload != NULL ? body_piece(r, upload_data, n) : MHD_YES;
    }
    body_watch(r, EPOLL_CTL_DEL); /* the body is complete */
    if (r->status != 0 || r->upload == NULL) {
        return MHD_YES; /* already answered */
    }
    const char *msg;
    upload_finish(r->upload);
    int err = upload_error(r->upload, &msg);
    if (err != 0) {
        return http_reply_error(r, err, msg, NULL);
    }
    enum MHD_Result mr = stream_start(r);
    if (r->batch != NULL && log_enabled(LOG_DEBUG)) {
        log_batch_accepted(r);
    }
    return mr;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    int first = *con_cls == NULL;
    size_t piece = *upload_data_size;
    enum MHD_Result rc =
        serve(cls, c, url, method, version, upload_data, upload_data_size, con_cls);
    struct request *r = *con_cls;
    if (r != NULL) {
        /* The request's deadlines: headers now in, a body piece read, or answered. */
        conn_on_request(r->cn, first, piece, r->status != 0);
    }
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *r = *con_cls;
    (void)cls;
    (void)c;
    if (r == NULL) {
        return;
    }
    char status[16], ms[32], bytes_in[32], bytes_out[32];
    snprintf(status, sizeof status, "%d", r->status);
    snprintf(ms, sizeof ms, "%.3f", (double)(ipc_now_ns() - r->started_ns) / 1e6);
    snprintf(bytes_in, sizeof bytes_in, "%llu",
             (unsigned long long)(r->upload ? upload_bytes(r->upload) : 0));
    snprintf(bytes_out, sizeof bytes_out, "%llu", (unsigned long long)r->bytes_out);
    const struct route_row *rr = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i].route == r->route) {
            rr = &routes[i];
        }
    }
    log_event("info", "request", "request_id", r->id, "method", r->method, "path",
              rr ? rr->path : "other", "status", status, "duration_ms", ms, "bytes_in",
              bytes_in, "bytes_out", bytes_out, "outcome",
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok" : "aborted", NULL);
    observe_request_done(r);
    body_watch(r, EPOLL_CTL_DEL);
    stream_finish(r);
    conn_on_request_end(r->cn, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    upload_destroy(r->upload);
    budget_release(r);
    buf_cleanup(&r->out);
    free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct server *s = cls;
    if (strstr(fmt, "resource limit at FIRST connection") != NULL) {
        /* accept() failed for lack of fds with no connection open: MHD retries on every
         * turn; the loop sheds the client instead. */
        s->accept_starved = 1;
    }
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) {
        msg[--n] = '\0';
    }
    log_event("warn", "http", "message", msg, NULL);
}

static int parse_listen(const char *spec, struct sockaddr_in *sa)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= sizeof host) {
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535) {
        return -1;
    }
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (strcmp(host, "localhost") == 0) {
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        return -1;
    }
    return 0;
}

int http_start(struct server *s)
{
    struct sockaddr_in sa;
    if (parse_listen(s->cfg.listen, &sa) != 0) {
        log_event("error", "config", "message", "--listen must be ADDR:PORT (IPv4)", "value",
                  s->cfg.listen, NULL);
        return -1;
    }
    /* The connection pool is 64 KiB: MHD zeroes it for every request, and at 256 KiB that
     * cost a quarter of the time of a small batch (15k -> 20k small batches/s on 2 cores);
     * uploads then come in ~32 KiB pieces and a stream goes out in up to ~32 KiB writes. */
    s->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_access, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, conn_on_notify,
        s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->cfg.connection_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)s->cfg.max_connections, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, MHD_OPTION_END);
    if (s->mhd == NULL) {
        log_event("error", "listen", "message", "cannot listen", "address", s->cfg.listen, NULL);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? info->port : ntohs(sa.sin_port);
    return 0;
}

void http_stop(struct server *s)
{
    if (s->mhd != NULL) {
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
    }
}
