/* A POST that makes a stored batch (submit.c, SPEC §8): async or keyed. Private to server/. */
#ifndef BATCHD_SERVER_SUBMIT_H
#define BATCHD_SERVER_SUBMIT_H

#include <microhttpd.h>

struct request;

/* 1 when R's prepared batch is to be stored: "async": true, Prefer: respond-async, or an
 * Idempotency-Key (sets r->async). */
int submit_wanted(struct request *r);

/* Stores R's prepared batch; R sleeps until the store has committed it, then submit_reply
 * answers (202 with its status, or its results stream), or refuses (422, 507, 503). */
enum MHD_Result submit_stored(struct request *r);

/* R's resume_fn after the creation. */
enum MHD_Result submit_reply(struct request *r);

/* R's connection is over: a creation still in flight goes on without it. */
void submit_finish(struct request *r);

#endif
