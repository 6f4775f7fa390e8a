/* Request bodies (body.c): framing checks, the shared upload memory budget, a batch's upload
 * from its headers to its last piece, and the watch for a client that cut it. Private to
 * server/. */
#ifndef BATCHD_SERVER_BODY_H
#define BATCHD_SERVER_BODY_H

#include <microhttpd.h>
#include <stddef.h>

struct request;

/* Why the headers of C leave the body's length ambiguous (answer 400 and close), or NULL. */
const char *body_framing_problem(struct MHD_Connection *c);

/* The batches route's handler, on the request's headers: refuses (draining, too large, not
 * JSON or multipart, over the budget) or reserves the budget and creates R's upload. */
enum MHD_Result body_start(struct request *r);

/* A piece of R's body (N bytes at DATA): fed to the upload, or refused at once (past
 * --max-body or the budget: MHD_NO, the connection closes). */
enum MHD_Result body_piece(struct request *r, const char *data, size_t n);

/* R's body is complete, or R is over: the cut-body watch ends. */
void body_done(struct request *r);

/* R is over: frees its upload and gives its share of the budget back. */
void body_release(struct request *r);

#endif
