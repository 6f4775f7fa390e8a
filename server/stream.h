/* A batch's response stream (stream.c): from the finished upload to the dispatcher batch and
 * its streamed results. Private to server/. */
#ifndef BATCHD_SERVER_STREAM_H
#define BATCHD_SERVER_STREAM_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

struct request;
struct server;

/* Starts R's prepared batch (r->prep) and queues the streaming response (or an error
 * response). */
enum MHD_Result stream_start(struct request *r);
/* R's connection is over (completed callback): cancel what is left, free the stream state. */
void stream_finish(struct request *r);
/* Cuts every live stream (grace period over, second signal): their batches are cancelled
 * and their responses end without a summary, so clients can tell. Returns how many. */
int stream_cut_all(struct server *s);

/* The streamed batch (not stored) with id ID that runs now for OWNER, or NULL; ID NULL:
 * the first of OWNER's, to go on with stream_find_next. */
struct request *stream_find(struct server *s, const char *id, const uint8_t *owner,
                            size_t owner_len);
struct request *stream_find_next(struct request *r, const uint8_t *owner, size_t owner_len);

/* A streamed batch's progress. */
struct stream_live {
    uint64_t ok, failed, running;
    double elapsed_s;
};
void stream_live(const struct request *r, struct stream_live *out);

/* Copies up to MAX bytes of R's buffered output (r->out from r->out_off) to OUT, counts
 * them, and drops what was sent once it is past LOW_WATER and no shorter than what is left.
 * Returns the bytes copied. The one reader of a response buffer (streams and results.c). */
size_t stream_copy_out(struct request *r, char *out, size_t max, size_t low_water);

/* Cancels R's batch (SPEC §8 DELETE): queued jobs fail with cancelled, running ones are
 * stopped, and the stream ends with its summary as usual. */
void stream_cancel(struct request *r);

#endif
