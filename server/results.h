/* The results of a stored batch as a response (results.c, SPEC §8): GET
 * /v1/batches/{id}/results, and the stream of a keyed POST. Private to server/. */
#ifndef BATCHD_SERVER_RESULTS_H
#define BATCHD_SERVER_RESULTS_H

#include "../store/store.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>

struct request;
struct server;

/* A request's results stream (in struct request). */
struct results_state {
    char id[STORE_ID_SIZE];
    uint64_t after;      /* the last seq written (or skipped: ?after, Last-Event-ID) */
    int follow;          /* wait for more until the summary */
    int sse;             /* Server-Sent Events instead of NDJSON */
    int document;        /* 1: §4's JSON document, 2: the tar (ended batches) */
    int active;          /* the response is queued */
    uint32_t next_index; /* document: the next job index to read */
    uint64_t count;      /* document: elements written */
    uint64_t progress_last_ns;
    json_t *names; /* tar: the uploaded files' names */
};

/* Parses TEXT (?after=, Last-Event-ID) as a seq into *OUT: decimal digits only, at most
 * 2^64-1. Returns 0, or -1 (empty, a sign, spaces, other characters, overflow). */
int results_parse_seq(const char *text, uint64_t *out);

/* Queues R's response with the results of batch ID (read for R's owner: the caller checked
 * that it exists) after seq AFTER: NDJSON, or SSE; FOLLOW keeps it open until the summary.
 * DOCUMENT 1 instead writes §4's JSON document, 2 its tar (the batch has ended). */
enum MHD_Result results_respond(struct request *r, const char *id, uint64_t after, int follow,
                                int sse, int document);

/* New results of batch ID are committed: the streams that wait for them go on. */
void results_wake(struct server *s, const char *id);

/* R (a request without a response yet) sleeps until the store commits writes of batch ID,
 * then FN answers it (FN may sleep again). */
typedef enum MHD_Result (*results_wake_fn)(struct request *r);
void results_sleep(struct request *r, const char *id, results_wake_fn fn);

/* The server stops: every stream that follows a stored batch ends without its summary, and
 * every request that sleeps is woken (and answered: see struct server's closing). */
void results_cut_all(struct server *s);

/* R's connection is over (completed callback). */
void results_finish(struct request *r);

#endif
