/* Replies that are not streams (reply.c): a buffer with the common headers, the JSON error
 * body of every refusal, the OPTIONS answer, and the raw refusal written in the middle of a
 * body. It calls neither http.c nor stream.c. Private to server/. */
#ifndef BATCHD_SERVER_REPLY_H
#define BATCHD_SERVER_REPLY_H

#include <microhttpd.h>
#include <stddef.h>

struct request;

/* Adds X-Request-Id and, for an allowed Origin, the CORS headers to RESP. */
void reply_add_common_headers(struct request *r, struct MHD_Response *resp);

/* Queues STATUS with BODY (LEN bytes, copied) of type CTYPE, an Allow header when ALLOW is
 * not NULL, and Retry-After when RETRY_AFTER > 0. */
enum MHD_Result reply_buffer(struct request *r, int status, const char *ctype, const char *body,
                             size_t len, const char *allow, int retry_after);

/* Queues a JSON error response for ERR (status from the error list) with MESSAGE and PATH
 * (both may be NULL), and an Allow header when ALLOW is not NULL. */
enum MHD_Result reply_error_allow(struct request *r, int err, const char *message, const char *path,
                                  const char *allow);
/* reply_error_allow without an Allow header. */
enum MHD_Result reply_error(struct request *r, int err, const char *message, const char *path);

/* Queues 204 for OPTIONS (and a CORS preflight from an allowed Origin): ALLOW lists the
 * methods. */
enum MHD_Result reply_options(struct request *r, const char *allow);

/* Answers ERR now, in the middle of a body, straight to the socket, and returns MHD_NO so
 * that MHD closes the connection (see reply.c). */
enum MHD_Result reply_refuse_now(struct request *r, int err, const char *message);

#endif
