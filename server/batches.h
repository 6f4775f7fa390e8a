/* The batch resources of SPEC §8 (batches.c): the routes' handlers and the status document.
 * Private to server/. */
#ifndef BATCHD_SERVER_BATCHES_H
#define BATCHD_SERVER_BATCHES_H

#include <microhttpd.h>

struct request;

/* /v1/batches: GET lists R's owner's batches; POST submits one (body.c reads it). */
enum MHD_Result batches_collection(struct request *r);

/* /v1/batches/{id} (GET status, DELETE cancel or forget) and /v1/batches/{id}/results. */
enum MHD_Result batches_item(struct request *r);

/* /v1/batches, the body is in: the batch is checked, then streamed or stored. */
enum MHD_Result batches_post(struct request *r);

/* R's connection is over: a forget in flight goes on without it. */
void batches_finish(struct request *r);

#endif
