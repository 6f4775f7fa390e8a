/* The handlers of the small routes (routes.c): GET /v1/ops, /healthz, /readyz, /metrics. Each
 * is a route_fn, named in http.c's route table. Private to server/. */
#ifndef BATCHD_SERVER_ROUTES_H
#define BATCHD_SERVER_ROUTES_H

#include <microhttpd.h>

struct request;

/* GET /v1/ops: the op table as JSON (rendered once at startup). */
enum MHD_Result routes_ops(struct request *r);
/* GET /healthz: the process answers. */
enum MHD_Result routes_healthz(struct request *r);
/* GET /readyz: every worker up and not draining (200), or 503. */
enum MHD_Result routes_readyz(struct request *r);
/* GET /metrics: the Prometheus exposition. */
enum MHD_Result routes_metrics(struct request *r);

#endif
