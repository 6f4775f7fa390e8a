/* The small routes' handlers: GET /v1/ops, /healthz, /readyz and /metrics, each answered
 * at once from the server's state. The route table that names them, and the method, CORS
 * and auth checks before them, are http.c's; batches are body.c's and stream.c's. */
#include "routes.h"

#include "../api/errors.h"
#include "internal.h"
#include "metrics.h"
#include "observe.h"
#include "reply.h"

#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

enum MHD_Result routes_ops(struct request *r)
{
    struct server *s = r->srv;
    return reply_buffer(r, 200, "application/json", s->ops_json, s->ops_json_len, NULL, 0);
}

enum MHD_Result routes_healthz(struct request *r)
{
    char body[64];
    snprintf(body, sizeof body, "{\"status\":\"ok\"}\n");
    return reply_buffer(r, 200, "application/json", body, strlen(body), NULL, 0);
}

/* Less free space than this on the state dir's file system is "full": the store's own
 * start-up bar (store/sq_internal.h, SQ_MIN_FREE). */
#define ROUTES_STORE_MIN_FREE (8ull << 20)

/* "ok" when the store can take writes, else why not: the code of a background write that
 * failed and has not been followed by a commit yet (full, unwritable, io...), "read_only"
 * when the state dir's file system was remounted read-only, or "full" when it has less room
 * than the store wants at start. The last two are asked of the file system each time: a
 * write that failed once is cleared by the next commit (the expiry timer's included, which
 * writes nothing), so a full disk stays 503 until there is room again. Static. */
static const char *routes_store_state(struct server *s)
{
    if (s->store == NULL) {
        return "closed";
    }
    struct store_stats st;
    store_stats_get(s->store, &st);
    if (st.write_error != 0) {
        return store_err_name(st.write_error);
    }
    struct statvfs vfs;
    if (statvfs(s->cfg.state_dir, &vfs) == 0) {
        if ((vfs.f_flag & ST_RDONLY) != 0) {
            return "read_only";
        }
        if ((unsigned long long)vfs.f_bavail * vfs.f_frsize < ROUTES_STORE_MIN_FREE) {
            return "full";
        }
    }
    return "ok";
}

enum MHD_Result routes_readyz(struct request *r)
{
    struct server *s = r->srv;
    char body[512];
    int up = dispatch_workers_up(s->dispatch), want = dispatch_workers(s->dispatch);
    const char *store = routes_store_state(s);
    int ready = !s->draining && up == want && strcmp(store, "ok") == 0;
    snprintf(body, sizeof body,
             "{\"status\":\"%s\",\"workers\":%d,\"workers_up\":%d,\"draining\":%s,"
             "\"store\":\"%s\"}\n",
             ready ? "ready" : "not_ready", want, up, s->draining ? "true" : "false", store);
    return reply_buffer(r, ready ? 200 : 503, "application/json", body, strlen(body), NULL,
                        ready ? 0 : 1);
}

enum MHD_Result routes_metrics(struct request *r)
{
    struct buf b;
    buf_init(&b, 16u << 20);
    enum MHD_Result rc =
        observe_render(r->srv, &b) == 0
            ? reply_buffer(r, 200, METRICS_CONTENT_TYPE, buf_data(&b), buf_len(&b), NULL, 0)
            : reply_error(r, -BATCHD_E_INTERNAL, "cannot render the metrics", NULL);
    buf_cleanup(&b);
    return rc;
}
