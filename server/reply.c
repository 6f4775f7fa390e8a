/* Replies that are not streams: a copied buffer with the headers every answer carries
 * (X-Request-Id, CORS), the JSON error body of every refusal ({"error": {...}}, SPEC), the
 * OPTIONS answer, and the raw refusal written to the socket in the middle of a body. The
 * batch stream is stream.c's; this file calls neither it nor http.c. */
#include "reply.h"

#include "../api/errors.h"
#include "../api/jsonw.h"
#include "auth.h"
#include "internal.h"
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

void reply_add_common_headers(struct request *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    const char *allow = auth_cors_allow_origin(r->srv->auth, origin);
    if (allow != NULL) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", allow);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", AUTH_CORS_EXPOSE_HEADERS);
        if (strcmp(allow, "*") != 0) {
            MHD_add_response_header(resp, "Vary", "Origin");
        }
    }
}

enum MHD_Result reply_buffer(struct request *r, int status, const char *ctype, const char *body,
                             size_t len, const char *allow, int retry_after)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    reply_add_common_headers(r, resp);
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

enum MHD_Result reply_error_allow(struct request *r, int err, const char *message, const char *path,
                                  const char *allow)
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
    int retry = (err == -BATCHD_E_OVERLOADED || err == -BATCHD_E_DRAINING ||
                 err == -BATCHD_E_STORE_UNAVAILABLE)
                    ? 1
                    : (err == -BATCHD_E_STORE_FULL ? 60 : 0);
    if (log_enabled(LOG_DEBUG)) {
        char st[16];
        snprintf(st, sizeof st, "%d", status);
        log_event("debug", "refused", "request_id", r->id, "status", st, "code",
                  batchd_err_name(err), "message", message ? message : batchd_err_message(err),
                  "path", path, NULL);
    }
    enum MHD_Result rc =
        reply_buffer(r, status, "application/json", buf_data(&b), buf_len(&b), allow, retry);
    buf_cleanup(&b);
    return rc;
}

enum MHD_Result reply_error(struct request *r, int err, const char *message, const char *path)
{
    return reply_error_allow(r, err, message, path, NULL);
}

enum MHD_Result reply_options(struct request *r, const char *allow)
{
    /* CORS preflight (and plain OPTIONS): say what is allowed. */
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    reply_add_common_headers(r, resp);
    MHD_add_response_header(resp, "Allow", allow);
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (auth_cors_allow_origin(r->srv->auth, origin) != NULL) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", AUTH_CORS_ALLOW_HEADERS);
        MHD_add_response_header(resp, "Access-Control-Max-Age", AUTH_CORS_MAX_AGE);
    }
    r->status = 204;
    enum MHD_Result rc = MHD_queue_response(r->conn, 204, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* Answers ERR now, in the middle of the body, and closes the connection: libmicrohttpd
 * 0.9.75 queues no response while a body is being read (MHD_queue_response refuses it), and
 * reading the rest only to answer at its end is what a client sending without end wants.
 * The response is written straight to the socket (it is small, and nothing else is being
 * sent on this connection while its request body is read); MHD_NO then makes MHD close. */
enum MHD_Result reply_refuse_now(struct request *r, int err, const char *message)
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
