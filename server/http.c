/* HTTP: the libmicrohttpd daemon in external epoll mode (server.c's loop watches its epoll
 * fd and calls http_run each turn, so everything runs on one thread and needs no locks), the
 * access handler, and the route table: each row names its handler (routes.c for the small
 * endpoints, body.c and stream.c for batches). Replies are reply.c's. */
#include "http.h"

#include "../api/errors.h"
#include "../api/torture.h"
#include "../workers/ipc.h"
#include "auth.h"
#include "batches.h"
#include "body.h"
#include "conn.h"
#include "console.h"
#include "internal.h"
#include "log.h"
#include "observe.h"
#include "reply.h"
#include "results.h"
#include "routes.h"
#include "stream.h"
#include "submit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* What a request is matched on: its path, the route's name and the methods allowed. */
struct route_match {
    const char *path;
    enum route route;
    const char *allow; /* methods, as the Allow header lists them */
};

/* One route: its handlers and its match. Adding a route is one row here (its ROUTE_ value
 * added to enum route in internal.h) and one handler function. */
struct route_row {
    route_fn handler; /* on the request's headers: answers, or starts reading its body */
    route_fn on_body; /* the body is complete (NULL: the route reads none) */
    struct route_match m;
};

static const struct route_row routes[] = {
    {batches_collection, batches_post, {"/v1/batches", ROUTE_BATCHES, "GET, HEAD, POST, OPTIONS"}},
    {batches_item, NULL, {"/v1/batches/*", ROUTE_BATCH, "GET, HEAD, DELETE, OPTIONS"}},
    {routes_ops, NULL, {"/v1/ops", ROUTE_OPS, "GET, HEAD, OPTIONS"}},
    {routes_healthz, NULL, {"/healthz", ROUTE_HEALTHZ, "GET, HEAD"}},
    {routes_readyz, NULL, {"/readyz", ROUTE_READYZ, "GET, HEAD"}},
    {routes_metrics, NULL, {"/metrics", ROUTE_METRICS, "GET, HEAD"}},
    {console_serve, NULL, {"/", ROUTE_CONSOLE, "GET, HEAD"}},
    {console_serve, NULL, {"/web/*", ROUTE_CONSOLE, "GET, HEAD"}},
};

/* The row whose path is URL, or whose path ends in "*" and is, without it, a prefix of URL
 * (a row for "/web/" plus "*" takes "/web/app.js"), or NULL. The first match wins. */
static const struct route_row *route_find(const char *url)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const char *path = routes[i].m.path;
        size_t n = strlen(path);
        int prefix = n > 0 && path[n - 1] == '*';
        if (prefix ? strncmp(path, url, n - 1) == 0 : strcmp(path, url) == 0) {
            return &routes[i];
        }
    }
    return NULL;
}

static int method_allowed(const struct route_row *rr, const char *method)
{
    size_t n = strlen(method);
    const char *p = rr->m.allow;
    while (*p != '\0') {
        if (strncmp(p, method, n) == 0 && (p[n] == ',' || p[n] == '\0')) {
            return 1;
        }
        p = strchr(p, ',');
        if (p == NULL) {
            break;
        }
        p += 2;
    }
    return 0;
}

/* ---------------------------------------------------------------- requests */

static void request_make_id(struct request *r, struct MHD_Connection *c)
{
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (given != NULL) {
        size_t n = strlen(given);
        int ok = n > 0 && n < sizeof r->id;
        for (size_t i = 0; ok && i < n; i++) {
            unsigned char ch = (unsigned char)given[i];
            ok = ch > 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
        }
        if (ok) {
            memcpy(r->id, given, n + 1);
            return;
        }
    }
    struct server *s = r->srv;
    uint64_t x = (++s->request_seq) ^ s->id_salt;
    /* splitmix64: ids that look random but are unique per process */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    snprintf(r->id, sizeof r->id, "%016llx", (unsigned long long)x);
}

/* A new request on C (freed in on_completed), or NULL. */
static struct request *request_create(struct server *s, struct MHD_Connection *c,
                                      const char *method)
{
    /* Torture builds: this request's Nth allocation fails (a no-op otherwise). */
    const char *fail_at = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Batchd-Fail-Alloc");
    torture_arm_text(fail_at);
    struct request *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    r->tortured = fail_at != NULL;
    r->srv = s;
    r->conn = c;
    r->cn = conn_of(c);
    r->started_ns = ipc_now_ns();
    snprintf(r->method, sizeof r->method, "%s", method);
    buf_init(&r->out, SIZE_MAX / 2);
    request_make_id(r, c);
    return r;
}

/* 1 if the request on C has no body: no Transfer-Encoding, and no Content-Length or one of
 * 0 (libmicrohttpd has refused a malformed one already). */
static int request_has_no_body(struct MHD_Connection *c)
{
    if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding") != NULL) {
        return 0;
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    return cl == NULL || (cl[0] != '\0' && cl[strspn(cl, "0")] == '\0');
}

/* The request's headers are in (and its framing checked): route, method, CORS preflight and
 * auth are checked in that order, then its route's handler runs. */
static enum MHD_Result serve_headers(struct request *r, const char *url, const char *method)
{
    const struct route_row *rr = route_find(url);
    if (rr == NULL) {
        return reply_error(r, -BATCHD_E_NOT_FOUND_ROUTE, NULL, NULL);
    }
    r->route = rr->m.route;
    r->path = rr->m.path;
    r->url = url;
    if (!method_allowed(rr, method)) {
        return reply_error_allow(r, -BATCHD_E_METHOD_NOT_ALLOWED, NULL, NULL, rr->m.allow);
    }
    if (strcmp(method, "OPTIONS") == 0) {
        return reply_options(r, rr->m.allow);
    }
    const char *authz = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (auth_required(r->srv->auth, method, rr->m.path) && auth_check(r->srv->auth, authz) != 0) {
        return reply_error(r, -BATCHD_E_UNAUTHORIZED, NULL, NULL);
    }
    r->owner_len = auth_owner(r->srv->auth, authz, r->owner);
    return rr->handler(r);
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *c, const char *url,
                             const char *method, const char *upload_data, size_t *upload_data_size,
                             void **con_cls)
{
    struct request *r = *con_cls;
    if (r == NULL) {
        r = request_create(cls, c, method);
        if (r == NULL) {
            return MHD_NO;
        }
        *con_cls = r;
        const char *bad_framing = body_framing_problem(c);
        if (bad_framing != NULL) {
            /* Answered before the body is read: MHD then closes the connection. */
            return reply_error(r, -BATCHD_E_BAD_REQUEST, bad_framing, NULL);
        }
        if (request_has_no_body(c)) {
            /* Answered on the next call, when MHD has the whole request: libmicrohttpd
             * 0.9.75 takes a response queued on this first call for one sent before the
             * body and closes the connection after it, so GETs never kept theirs. */
            r->deferred = 1;
            return MHD_YES;
        }
        return serve_headers(r, url, method);
    }
    if (r->resume_fn != NULL) {
        /* It slept while the store wrote (SPEC §8): now it is answered. */
        route_fn fn = r->resume_fn;
        r->resume_fn = NULL;
        return fn(r);
    }
    if (r->deferred) {
        /* A request without a body, complete now. */
        r->deferred = 0;
        enum MHD_Result rc = serve_headers(r, url, method);
        if (rc != MHD_YES || r->status != 0 || r->upload == NULL) {
            return rc;
        }
        /* A batch with an empty body: on as one whose body is complete. */
    } else if (*upload_data_size > 0) {
        /* After a malformed part the rest (bounded by its Content-Length or --max-body) is
         * read and dropped; that refusal goes out at the end. */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return r->upload != NULL ? body_piece(r, upload_data, n) : MHD_YES;
    }
    body_done(r); /* the body is complete */
    if (r->status != 0 || r->upload == NULL) {
        return MHD_YES; /* already answered */
    }
    const struct route_row *rr = route_find(url); /* found: the headers' call answered if not */
    return rr != NULL && rr->on_body != NULL ? rr->on_body(r) : MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    int first = *con_cls == NULL;
    size_t piece = *upload_data_size;
    (void)version;
    enum MHD_Result rc = serve(cls, c, url, method, upload_data, upload_data_size, con_cls);
    struct request *r = *con_cls;
    if (r != NULL) {
        /* The request's deadlines: headers now in, a body piece read, or answered. */
        conn_on_request(r->cn, first, piece, r->status != 0);
    }
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *r = *con_cls;
    (void)cls;
    (void)c;
    if (r == NULL) {
        return;
    }
    char status[16], ms[32], bytes_in[32], bytes_out[32];
    snprintf(status, sizeof status, "%d", r->status);
    snprintf(ms, sizeof ms, "%.3f", (double)(ipc_now_ns() - r->started_ns) / 1e6);
    snprintf(bytes_in, sizeof bytes_in, "%llu",
             (unsigned long long)(r->upload ? upload_bytes(r->upload) : 0));
    snprintf(bytes_out, sizeof bytes_out, "%llu", (unsigned long long)r->bytes_out);
    log_event("info", "request", "request_id", r->id, "method", r->method, "path",
              r->path != NULL ? r->path : "other", "status", status, "duration_ms", ms, "bytes_in",
              bytes_in, "bytes_out", bytes_out, "outcome",
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok" : "aborted", NULL);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
        toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN) {
        /* MHD ended it on an error (a write met the client's reset, a read its close) before
         * our own socket watch saw the hang-up: the client is as gone as if it had. */
        r->client_gone = 1;
    }
    observe_request_done(r);
    body_done(r);
    submit_finish(r);
    batches_finish(r);
    results_finish(r);
    stream_finish(r);
    if (r->tortured) {
        /* A request that made fewer allocations than N leaves the count armed: the failure
         * must not fall on the next connection, which did not ask for it. */
        torture_arm(0);
    }
    conn_on_request_end(r->cn, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    body_release(r);
    buf_cleanup(&r->out);
    free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct server *s = cls;
    if (strstr(fmt, "resource limit at FIRST connection") != NULL) {
        /* accept() failed for lack of fds with no connection open: MHD retries on every
         * turn; http_run sheds the client instead. */
        s->accept_starved = 1;
    }
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) {
        msg[--n] = '\0';
    }
    log_event("warn", "http", "message", msg, NULL);
}

static int parse_listen(const char *spec, struct sockaddr_in *sa)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= sizeof host) {
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535) {
        return -1;
    }
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (strcmp(host, "localhost") == 0) {
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        return -1;
    }
    return 0;
}

int http_start(struct server *s)
{
    struct sockaddr_in sa;
    if (parse_listen(s->cfg.listen, &sa) != 0) {
        log_event("error", "config", "message", "--listen must be ADDR:PORT (IPv4)", "value",
                  s->cfg.listen, NULL);
        return -1;
    }
    /* The connection pool is 64 KiB: MHD zeroes it for every request, and at 256 KiB that
     * cost a quarter of the time of a small batch (15k -> 20k small batches/s on 2 cores);
     * uploads then come in ~32 KiB pieces and a stream goes out in up to ~32 KiB writes. */
    s->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_access, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, conn_on_notify,
        s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->cfg.connection_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)s->cfg.max_connections, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, MHD_OPTION_END);
    if (s->mhd == NULL) {
        log_event("error", "listen", "message", "cannot listen", "address", s->cfg.listen, NULL);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? info->port : ntohs(sa.sin_port);
    return 0;
}

void http_stop(struct server *s)
{
    if (s->mhd != NULL) {
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
    }
}

/* ---------------------------------------------------------------- the loop's turn */

int http_epoll_fd(const struct server *s)
{
    const union MHD_DaemonInfo *mi = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    return mi != NULL ? mi->epoll_fd : -1;
}

int http_timeout_ms(const struct server *s)
{
    MHD_UNSIGNED_LONG_LONG mto;
    if (MHD_get_timeout(s->mhd, &mto) != MHD_YES) {
        return -1;
    }
    return (int)(mto > 1000 ? 1000 : mto);
}

/* Open client connections, as MHD counts them. */
static unsigned http_connections(struct server *s)
{
    const union MHD_DaemonInfo *i =
        MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i != NULL ? i->num_connections : 0;
}

/* accept() ran out of fds while no connection was open, so no close will ever free one,
 * and MHD would retry on every turn: a busy loop while the client waits forever. Give the
 * spare fd back, take the waiting client and close it at once, then take the spare again
 * (as nginx and libev advise). */
static void http_shed(struct server *s)
{
    s->accept_starved = 0;
    const union MHD_DaemonInfo *li = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_LISTEN_FD);
    if (li == NULL) {
        return;
    }
    struct pollfd p = {.fd = li->listen_fd, .events = POLLIN};
    if (s->spare_fd >= 0) {
        close(s->spare_fd);
        s->spare_fd = -1;
    }
    if (poll(&p, 1, 0) == 1) {
        int fd = accept4(li->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            log_event("warn", "accept", "message", "out of file descriptors: client refused", NULL);
        }
    }
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void http_run(struct server *s)
{
    unsigned before = http_connections(s), after;
    int rearm;
    /* A connection resumed before this turn (by the store's callbacks, say) is taken out of
     * the suspended list by the first MHD_run and served by the second. */
    int resumed_before = s->resumed;
    do {
        s->resumed = 0;
        MHD_run(s->mhd);
        /* Batches submitted by MHD_run get their first chunks without waiting a round;
         * connections resumed meanwhile need one more MHD_run to be served. */
        dispatch_run(s->dispatch);
        /* At --max-connections, or after accept() ran out of fds, MHD takes its listen
         * socket out of its epoll set and puts it back only at the start of a run: a
         * run that closed connections may have left it out, with nothing left to wake
         * us but a client that cannot get in. One more run re-arms it. */
        after = http_connections(s);
        rearm = after < before;
        before = after;
    } while (s->resumed || rearm || resumed_before-- > 0);
    if (s->accept_starved) {
        http_shed(s);
    }
}

void http_flush(struct server *s, uint64_t until_ns)
{
    if (s->mhd == NULL) {
        return;
    }
    /* Connections resumed just now are served by the second run. */
    MHD_run(s->mhd);
    MHD_run(s->mhd);
    while (s->stream_list != NULL && ipc_now_ns() < until_ns) {
        if (s->loop != NULL) {
            loop_wait(s->loop, 10);
        }
        MHD_run(s->mhd);
    }
}
