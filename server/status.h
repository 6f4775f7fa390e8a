/* The status document of SPEC §8 (status.c) and the lookups behind it. Private to server/. */
#ifndef BATCHD_SERVER_STATUS_H
#define BATCHD_SERVER_STATUS_H

#include "../api/buf.h"
#include "../store/store.h"

#include <microhttpd.h>

struct request;
struct server;

/* Looks batch ID up for R's owner: a streamed batch running here (*SR set), or one of the
 * store (*SR NULL, *INFO filled). Returns 0 or a STORE_E_* code. */
int status_lookup(struct request *r, const char *id, struct request **sr, struct store_info *info);

/* Appends the status document of INFO (a batch of the store) to B. Returns 0 or -1. */
int status_put_stored(struct server *s, const struct store_info *info, struct buf *b);

/* Appends the status document of the streamed batch of SR to B. Returns 0 or -1. */
int status_put_streamed(struct request *sr, struct buf *b);

/* Answers R with STATUS (200, or 202 with Location and Preference-Applied) and the status
 * document of batch ID (or the refusal of its lookup). */
enum MHD_Result status_reply(struct request *r, const char *id, int status);

/* Answers R with STATUS and the JSON in B (LOCATION: for a 202). */
enum MHD_Result status_reply_json(struct request *r, int status, struct buf *b,
                                  const char *location);

/* The refusal for a lookup's STORE_E_* outcome RC: 404, 410 or 503. */
enum MHD_Result status_reply_lookup_error(struct request *r, int rc);

#endif
