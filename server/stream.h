/* A batch's response stream (stream.c): from the finished upload to the dispatcher batch and
 * its streamed results. Private to server/. */
#ifndef BATCHD_SERVER_STREAM_H
#define BATCHD_SERVER_STREAM_H

#include <microhttpd.h>

struct request;
struct server;

/* Starts the batch of R from its finished upload and queues the streaming response (or an
 * error response). */
enum MHD_Result stream_start(struct request *r);
/* R's connection is over (completed callback): cancel what is left, free the stream state. */
void stream_finish(struct request *r);
/* Cuts every live stream (grace period over, second signal): their batches are cancelled
 * and their responses end without a summary, so clients can tell. Returns how many. */
int stream_cut_all(struct server *s);

#endif
