/* One client connection from accept to close (MHD_OPTION_NOTIFY_CONNECTION): the deadlines
 * its requests must meet while they are read (--header-timeout, --min-body-rate), and the
 * watch on its socket in the event loop (the first byte of a keep-alive request; a hang-up
 * while a stream is suspended or a body read, reported to the caller's callback).
 * libmicrohttpd's own timeout is idleness only. Answers (streams) have no deadline here. */
#include "conn.h"

#include "internal.h"
#include "loop.h"

#include "../workers/ipc.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>

enum conn_phase {
    CONN_HEADERS, /* reading a request's headers: --header-timeout from its start */
    CONN_BODY,    /* reading a body: --header-timeout plus 1 s per --min-body-rate bytes */
    CONN_ANSWER,  /* a response is queued: no deadline */
    CONN_IDLE,    /* keep-alive, between requests: --connection-timeout (libmicrohttpd's) */
};

enum conn_watch { CONN_WATCH_NONE, CONN_WATCH_IDLE, CONN_WATCH_BODY, CONN_WATCH_STREAM };

struct conn {
    struct loop_watch lw; /* its socket in the loop, while watched */
    struct server *srv;
    int fd;
    enum conn_phase phase;
    uint64_t since_ns; /* start of the phase */
    uint64_t body_bytes;
    uint64_t deadline_ns; /* 0: none */
    enum conn_watch watch;
    int peer_shut_wr;         /* the client sent its FIN: it may still read */
    int cut;                  /* shut down for a missed deadline */
    conn_hangup_fn on_hangup; /* the stream's or the body's watcher, and its pointer */
    void *hangup_ud;
    struct conn *prev, *next; /* in srv->conn_list */
};

static const char *const conn_phase_names[] = {
    [CONN_HEADERS] = "headers",
    [CONN_BODY] = "body",
    [CONN_ANSWER] = "answer",
    [CONN_IDLE] = "idle",
};

static void conn_on_event(struct loop_watch *w, uint32_t events);

static void conn_unwatch(struct conn *cn)
{
    if (cn->watch != CONN_WATCH_NONE) {
        loop_remove(cn->srv->loop, &cn->lw);
        cn->watch = CONN_WATCH_NONE;
        cn->on_hangup = NULL;
        cn->hangup_ud = NULL;
    }
}

/* Watches the socket for EVENTS (EPOLLERR and EPOLLHUP are always reported). */
static void conn_watch(struct conn *cn, enum conn_watch w, uint32_t events)
{
    if (cn->fd >= 0 && loop_add(cn->srv->loop, &cn->lw, events) == 0) {
        cn->watch = w;
    }
}

static void conn_set_deadline(struct conn *cn)
{
    const struct config *cfg = &cn->srv->cfg;
    cn->deadline_ns = 0;
    if (cfg->header_timeout_ms == 0 || cn->cut) {
        return;
    }
    uint64_t base = cn->since_ns + cfg->header_timeout_ms * 1000000u;
    if (cn->phase == CONN_HEADERS) {
        cn->deadline_ns = base;
    } else if (cn->phase == CONN_BODY && cfg->min_body_rate != 0) {
        /* Apache's RequestReadTimeout MinRate: each byte buys 1/rate s more. */
        cn->deadline_ns = base + cn->body_bytes * 1000000000u / cfg->min_body_rate;
    }
    if (cn->deadline_ns != 0 && cn->deadline_ns < cn->srv->conn_next_check_ns) {
        cn->srv->conn_next_check_ns = cn->deadline_ns;
    }
}

static void conn_enter(struct conn *cn, enum conn_phase phase)
{
    cn->phase = phase;
    cn->since_ns = ipc_now_ns();
    cn->body_bytes = 0;
    if (cn->watch == CONN_WATCH_IDLE) {
        conn_unwatch(cn);
    }
    conn_set_deadline(cn);
}

void conn_on_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                    enum MHD_ConnectionNotificationCode code)
{
    struct server *s = cls;
    struct conn *cn = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (cn == NULL) {
            return;
        }
        conn_unwatch(cn);
        if (cn->prev != NULL) {
            cn->prev->next = cn->next;
        } else {
            s->conn_list = cn->next;
        }
        if (cn->next != NULL) {
            cn->next->prev = cn->prev;
        }
        free(cn);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    cn = calloc(1, sizeof *cn);
    if (cn == NULL) {
        /* No memory for its bookkeeping: better no connection than one without limits. */
        if (ci != NULL) {
            shutdown(ci->connect_fd, SHUT_RDWR);
        }
        return;
    }
    cn->srv = s;
    cn->fd = ci != NULL ? ci->connect_fd : -1;
    loop_watch_init(&cn->lw, cn->fd, conn_on_event, cn);
    cn->next = s->conn_list;
    if (s->conn_list != NULL) {
        s->conn_list->prev = cn;
    }
    s->conn_list = cn;
    *socket_context = cn;
    conn_enter(cn, CONN_HEADERS);
}

struct conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

void conn_on_request(struct conn *cn, int first, size_t piece, int answered)
{
    if (cn == NULL || cn->phase == CONN_ANSWER) {
        return;
    }
    if (answered) {
        conn_enter(cn, CONN_ANSWER);
    } else if (first) {
        conn_enter(cn, CONN_BODY);
    } else {
        cn->body_bytes += piece;
        conn_set_deadline(cn);
    }
}

void conn_on_request_end(struct conn *cn, int keep)
{
    if (cn == NULL) {
        return;
    }
    if (cn->watch == CONN_WATCH_STREAM) {
        conn_unwatch(cn);
    }
    conn_enter(cn, CONN_IDLE);
    if (keep && !cn->cut) {
        /* The next request's header deadline starts at its first byte: until then the
         * connection is idle, and libmicrohttpd's --connection-timeout applies. */
        conn_watch(cn, CONN_WATCH_IDLE, EPOLLIN);
    }
}

void conn_watch_stream(struct conn *cn, int on, conn_hangup_fn fn, void *ud)
{
    if (cn == NULL) {
        return;
    }
    if (!on) {
        if (cn->watch == CONN_WATCH_STREAM) {
            conn_unwatch(cn);
        }
        return;
    }
    /* Until the client's FIN, watch for it; after it, only for a reset or an error (always
     * reported): the FIN stays readable, and a half-closed client may still read. */
    conn_watch(cn, CONN_WATCH_STREAM, cn->peer_shut_wr ? 0 : EPOLLRDHUP);
    cn->on_hangup = fn;
    cn->hangup_ud = ud;
}

int conn_watch_body(struct conn *cn, int on, conn_hangup_fn fn, void *ud)
{
    if (cn == NULL) {
        return -1;
    }
    if (!on) {
        if (cn->watch == CONN_WATCH_BODY) {
            conn_unwatch(cn);
        }
        return 0;
    }
    if (cn->watch != CONN_WATCH_NONE && cn->watch != CONN_WATCH_BODY) {
        return -1;
    }
    /* Edge-triggered, re-armed (a MOD) after each piece once the client is gone: see
     * body.c. */
    conn_watch(cn, CONN_WATCH_BODY, EPOLLRDHUP | EPOLLET);
    if (cn->watch != CONN_WATCH_BODY) {
        return -1;
    }
    cn->on_hangup = fn;
    cn->hangup_ud = ud;
    return 0;
}

int conn_fd(const struct conn *cn)
{
    return cn != NULL ? cn->fd : -1;
}

static void conn_on_event(struct loop_watch *w, uint32_t events)
{
    struct conn *cn = w->ud;
    if (cn->watch == CONN_WATCH_BODY) {
        cn->on_hangup(cn->hangup_ud);
        return;
    }
    if (cn->watch == CONN_WATCH_IDLE) {
        /* The first byte of the next request (or the client's close, which MHD reads). */
        conn_enter(cn, CONN_HEADERS);
        return;
    }
    if (cn->watch != CONN_WATCH_STREAM) {
        return;
    }
    conn_hangup_fn fn = cn->on_hangup;
    void *ud = cn->hangup_ud;
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_unwatch(cn);
        fn(ud);
    } else if (events & EPOLLRDHUP) {
        /* A half-close (shutdown(SHUT_WR)) or a close: the same FIN. Keep streaming; a
         * client that closed answers the next write with a reset, which ends the batch. */
        cn->peer_shut_wr = 1;
        conn_watch(cn, CONN_WATCH_STREAM, 0);
    }
}

int conn_timeout_ms(const struct server *s)
{
    if (s->conn_next_check_ns == UINT64_MAX) {
        return -1;
    }
    uint64_t now = ipc_now_ns();
    if (s->conn_next_check_ns <= now) {
        return 0;
    }
    uint64_t ms = (s->conn_next_check_ns - now + 999999u) / 1000000u;
    return ms > 1000 ? 1000 : (int)ms;
}

void conn_enforce(struct server *s)
{
    uint64_t now = ipc_now_ns();
    if (now < s->conn_next_check_ns) {
        return;
    }
    uint64_t next = UINT64_MAX;
    for (struct conn *cn = s->conn_list; cn != NULL; cn = cn->next) {
        if (cn->deadline_ns == 0) {
            continue;
        }
        if (cn->deadline_ns > now) {
            next = cn->deadline_ns < next ? cn->deadline_ns : next;
            continue;
        }
        /* Shutting the socket down makes libmicrohttpd see a closed connection on its next
         * run and drop it (the completed callback frees the request). */
        char secs[32];
        snprintf(secs, sizeof secs, "%.3f", (double)(now - cn->since_ns) / 1e9);
        log_event("warn", "deadline", "phase", conn_phase_names[cn->phase], "seconds", secs,
                  "message",
                  cn->phase == CONN_HEADERS ? "request headers too slow: closing"
                                            : "request body too slow: closing",
                  NULL);
        shutdown(cn->fd, SHUT_RDWR);
        cn->cut = 1;
        cn->deadline_ns = 0;
    }
    s->conn_next_check_ns = next;
}
