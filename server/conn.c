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
#include <sys/ioctl.h>
#include <sys/socket.h>

enum conn_phase {
    CONN_HEADERS, /* reading a request's headers: --header-timeout from its start */
    CONN_BODY,    /* reading a body: --header-timeout plus 1 s per --min-body-rate bytes */
    CONN_ANSWER,  /* a response is queued: no deadline */
    CONN_IDLE,    /* keep-alive, between requests: --connection-timeout (libmicrohttpd's) */
};

/* Who is told of a hang-up: a body being read, or a stream while it is suspended. */
enum conn_owner { CONN_OWNER_NONE, CONN_OWNER_BODY, CONN_OWNER_STREAM };

/* The socket is in the loop from accept to close, edge-triggered, for the three things we
 * watch it for: the first byte of a keep-alive request (EPOLLIN while idle), the client's FIN
 * (EPOLLRDHUP) and a reset or an error (EPOLLERR, EPOLLHUP). One registration per connection:
 * changing a watch per request cost two to four epoll_ctl calls per keep-alive request, a
 * tenth of a small batch's syscalls. What is seen is latched (peer_shut_wr, peer_gone), so
 * that a watcher that starts later still hears of it (conn_rearm). */
#define CONN_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLET)

struct conn {
    struct loop_watch lw; /* its socket in the loop (watched), from accept to close */
    struct server *srv;
    int fd;
    enum conn_phase phase;
    uint64_t since_ns; /* start of the phase */
    uint64_t body_bytes;
    uint64_t deadline_ns; /* 0: none */
    int watched;          /* the socket is in the loop */
    enum conn_owner owner;
    int peer_shut_wr;         /* the client sent its FIN: it may still read */
    int peer_gone;            /* a reset or an error was seen */
    int input_in_answer;      /* bytes came while an answer went out: the next request's */
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

static void conn_disown(struct conn *cn)
{
    cn->owner = CONN_OWNER_NONE;
    cn->on_hangup = NULL;
    cn->hangup_ud = NULL;
}

/* Makes the loop report the socket's present state again (epoll_ctl MOD polls it), for a
 * watcher that starts after what it waits for was already seen. */
static void conn_rearm(struct conn *cn)
{
    if (cn->watched) {
        loop_modify(cn->srv->loop, &cn->lw, CONN_EVENTS);
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
    cn->input_in_answer = 0;
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
        if (cn->watched) {
            loop_remove(s->loop, &cn->lw);
        }
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
    cn->watched = cn->fd >= 0 && loop_add(s->loop, &cn->lw, CONN_EVENTS) == 0;
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

/* 1 if bytes wait unread in the socket of CN. */
static int conn_has_input(const struct conn *cn)
{
    int pending = 0;
    return ioctl(cn->fd, FIONREAD, &pending) == 0 && pending > 0;
}

void conn_on_request_end(struct conn *cn, int keep)
{
    if (cn == NULL) {
        return;
    }
    if (cn->owner == CONN_OWNER_STREAM) {
        conn_disown(cn);
    }
    /* The next request's header deadline starts at its first byte: until then the
     * connection is idle, and libmicrohttpd's --connection-timeout applies. A first byte
     * that came while the answer went out had its edge then: it is looked for here (one
     * ioctl, only then); later bytes bring their own edge (conn_on_event). */
    int next_begun = keep && !cn->cut && cn->watched && cn->input_in_answer && conn_has_input(cn);
    conn_enter(cn, next_begun ? CONN_HEADERS : CONN_IDLE);
}

void conn_watch_stream(struct conn *cn, int on, conn_hangup_fn fn, void *ud)
{
    if (cn == NULL) {
        return;
    }
    if (!on) {
        if (cn->owner == CONN_OWNER_STREAM) {
            conn_disown(cn);
        }
        return;
    }
    if (!cn->watched || cn->owner == CONN_OWNER_BODY) {
        return;
    }
    /* A half-close (the FIN) is not a hang-up: a half-closed client may still read. */
    cn->owner = CONN_OWNER_STREAM;
    cn->on_hangup = fn;
    cn->hangup_ud = ud;
    if (cn->peer_gone) {
        conn_rearm(cn); /* the reset came while nobody watched: report it now */
    }
}

int conn_watch_body(struct conn *cn, int on, conn_hangup_fn fn, void *ud)
{
    if (cn == NULL) {
        return -1;
    }
    if (!on) {
        if (cn->owner == CONN_OWNER_BODY) {
            conn_disown(cn);
        }
        return 0;
    }
    if (!cn->watched || (cn->owner != CONN_OWNER_NONE && cn->owner != CONN_OWNER_BODY)) {
        return -1;
    }
    /* Edge-triggered, re-armed after each piece once the client is gone (see body.c), or
     * at once when its FIN or reset came before the watch. */
    int again = cn->owner == CONN_OWNER_BODY;
    cn->owner = CONN_OWNER_BODY;
    cn->on_hangup = fn;
    cn->hangup_ud = ud;
    if (again || cn->peer_shut_wr || cn->peer_gone) {
        conn_rearm(cn);
    }
    return 0;
}

int conn_fd(const struct conn *cn)
{
    return cn != NULL ? cn->fd : -1;
}

static void conn_on_event(struct loop_watch *w, uint32_t events)
{
    struct conn *cn = w->ud;
    int hangup = (events & (EPOLLERR | EPOLLHUP)) != 0;
    if (hangup) {
        cn->peer_gone = 1;
    }
    if (events & EPOLLRDHUP) {
        /* A half-close (shutdown(SHUT_WR)) or a close: the same FIN. A stream keeps going;
         * a client that closed answers the next write with a reset, which ends the batch. */
        cn->peer_shut_wr = 1;
    }
    conn_hangup_fn fn = cn->on_hangup;
    void *ud = cn->hangup_ud;
    if (cn->owner == CONN_OWNER_BODY && (hangup || (events & EPOLLRDHUP))) {
        fn(ud);
        return;
    }
    if (cn->owner == CONN_OWNER_STREAM && hangup) {
        conn_disown(cn);
        fn(ud);
        return;
    }
    if (!(events & EPOLLIN)) {
        return;
    }
    if (cn->phase == CONN_IDLE && !cn->cut) {
        /* The first byte of the next request (or the client's close, which MHD reads). */
        conn_enter(cn, CONN_HEADERS);
    } else if (cn->phase == CONN_ANSWER) {
        cn->input_in_answer = 1;
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
