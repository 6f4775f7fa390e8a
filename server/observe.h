/* Metrics and worker-event logs of the running server (see observe.c). Private to server/:
 * it takes the server's internal types. */
#ifndef BATCHD_SERVER_OBSERVE_H
#define BATCHD_SERVER_OBSERVE_H

#include "../api/buf.h"
#include "../workers/dispatch.h"

struct server;
struct request;

/* Creates the server's metrics registry. Returns 0, or -1 when out of memory. */
int observe_start(struct server *s);

/* Frees it. Safe to call when observe_start failed or never ran. */
void observe_stop(struct server *s);

struct prepared;
/* One job of batch P ended with RES (called once per job, as results arrive). */
void observe_job(struct server *s, const struct prepared *p, const struct job_result *res);

/* R is over (completed callback): counts the request, its bytes, and for a batch its
 * outcome (completed, refused, cancelled, cut). */
/* COUNT successful jobs of batch P answered as one block, BUSY_NS their summed run time. */
void observe_block(struct server *s, const struct prepared *p, uint64_t index, uint64_t count,
                   uint64_t busy_ns);
void observe_request_done(struct request *r);

/* Appends the GET /metrics exposition to OUT. Returns 0, or -1 (answer 500). */
int observe_render(struct server *s, struct buf *out);

/* dispatch_config.on_worker: one log line per worker start and exit, with the cause, and at
 * debug one per chunk sent. */
void observe_worker_event(void *ud, const struct dispatch_worker_event *ev);

#endif
