/* The server's one event loop: libmicrohttpd's epoll fd, the dispatcher's epoll fd, a
 * signalfd for SIGTERM/SIGINT, and client sockets that conn.c watches (hang-ups of suspended
 * streams, keep-alive requests' first bytes), all in one epoll set, with the connections'
 * deadlines as timers. Drain on the first SIGTERM, stop at once on the second. */
#include "loop.h"

#include "../workers/ipc.h"
#include "../workers/ops/ops.h"
#include "auth.h"
#include "internal.h"
#include "log.h"
#include "observe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* Open client connections, as MHD counts them. */
static unsigned loop_connections(struct server *s)
{
    const union MHD_DaemonInfo *i =
        MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i != NULL ? i->num_connections : 0;
}

/* accept() ran out of fds while no connection was open, so no close will ever free one,
 * and MHD would retry on every turn: a busy loop while the client waits forever. Give the
 * spare fd back, take the waiting client and close it at once, then take the spare again
 * (as nginx and libev advise). */
static void loop_shed(struct server *s)
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

static int loop_add(struct server *s, int fd, struct loop_tag *tag, enum loop_kind kind)
{
    tag->kind = kind;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Everything before the first thread could exist: signals. */
static int loop_prepare(struct server *s)
{
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        return -1;
    }
    s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->sigfd < 0) {
        return -1;
    }
    return 0;
}

/* What every worker is given at spawn (the pool's CONFIG frame): the server's limits and
 * folders. */
static void loop_worker_config(const struct config *cfg, struct worker_config *wc)
{
    _Static_assert(sizeof cfg->data_dir <= sizeof wc->data_dir, "data_dir fits");
    _Static_assert(sizeof cfg->output_dir <= sizeof wc->output_dir, "output_dir fits");
    wc->memory_bytes = cfg->worker_memory_bytes;
    wc->limits.max_input_pixels = cfg->max_input_pixels;
    wc->limits.max_output_pixels = cfg->max_output_pixels;
    snprintf(wc->data_dir, sizeof wc->data_dir, "%s", cfg->data_dir);
    snprintf(wc->output_dir, sizeof wc->output_dir, "%s", cfg->output_dir);
}

static void loop_on_signal(struct server *s)
{
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        const char *name = si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT";
        if (s->draining) {
            log_event("warn", "shutdown", "signal", name, "message",
                      "second signal: stopping at once", NULL);
            s->stop = 1;
            continue;
        }
        s->draining = 1;
        s->drain_deadline_ns = ipc_now_ns() + s->cfg.grace_period_ms * 1000000u;
        char streams[16];
        snprintf(streams, sizeof streams, "%d", s->streams);
        log_event("info", "drain", "signal", name, "streams", streams, NULL);
        dispatch_drain(s->dispatch);
    }
}

int loop_run(struct server *s)
{
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (loop_prepare(s) != 0) {
        log_event("error", "startup", "message", "cannot set up signals", NULL);
        return 1;
    }
    json_t *ops = ops_describe();
    s->ops_json = json_dumps(ops, JSON_COMPACT);
    json_decref(ops);
    s->ops_json_len = s->ops_json ? strlen(s->ops_json) : 0;
    char aerr[256] = "";
    s->auth = auth_create(s->cfg.auth_token_file, s->cfg.cors_origin, aerr, sizeof aerr);
    if (s->auth == NULL) {
        log_event("error", "startup", "message", aerr, NULL);
        return 1;
    }
    s->id_salt = ipc_now_ns() ^ ((uint64_t)getpid() << 32);
    struct dispatch_config dc = {
        .workers = s->cfg.workers,
        .recycle_after = s->cfg.recycle_after,
        .max_queued_jobs = s->cfg.max_queued_jobs,
        .max_batches = (int)s->cfg.max_batches,
        .on_worker = observe_worker_event,
        .ud = s,
    };
    loop_worker_config(&s->cfg, &dc.worker);
    if (observe_start(s) != 0) {
        log_event("error", "startup", "message", "out of memory", NULL);
        return 1;
    }
    s->dispatch = dispatch_create(&dc);
    if (s->dispatch == NULL) {
        log_event("error", "startup", "message", "cannot start the workers", NULL);
        return 1;
    }
    s->conn_next_check_ns = UINT64_MAX;
    if (http_start(s) != 0) {
        dispatch_destroy(s->dispatch);
        return 1;
    }
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    const union MHD_DaemonInfo *mi = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (s->epfd < 0 || mi == NULL || loop_add(s, mi->epoll_fd, &s->tag_mhd, LOOP_MHD) != 0 ||
        loop_add(s, dispatch_fd(s->dispatch), &s->tag_dispatch, LOOP_DISPATCH) != 0 ||
        loop_add(s, s->sigfd, &s->tag_signal, LOOP_SIGNAL) != 0) {
        log_event("error", "startup", "message", "cannot set up the event loop", NULL);
        return 1;
    }
    char port[16], workers[16], pid[16];
    snprintf(port, sizeof port, "%u", s->port);
    snprintf(workers, sizeof workers, "%d", s->cfg.workers);
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    log_event("info", "listening", "address", s->cfg.listen, "port", port, "workers", workers,
              "pid", pid, NULL);
    while (!s->stop) {
        int timeout = dispatch_timeout_ms(s->dispatch);
        MHD_UNSIGNED_LONG_LONG mto;
        if (MHD_get_timeout(s->mhd, &mto) == MHD_YES && (timeout < 0 || mto < (unsigned)timeout)) {
            timeout = (int)(mto > 1000 ? 1000 : mto);
        }
        int cto = conn_timeout_ms(s);
        if (cto >= 0 && (timeout < 0 || cto < timeout)) {
            timeout = cto;
        }
        if (s->draining && (timeout < 0 || timeout > 50)) {
            timeout = 50;
        }
        struct epoll_event evs[64];
        int n = epoll_wait(s->epfd, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            log_event("error", "loop", "message", strerror(errno), NULL);
            break;
        }
        for (int i = 0; i < n; i++) {
            struct loop_tag *tag = evs[i].data.ptr;
            if (tag->kind == LOOP_SIGNAL) {
                loop_on_signal(s);
            } else if (tag->kind == LOOP_CONN) {
                conn_on_event((struct conn *)tag, evs[i].events);
            }
        }
        conn_enforce(s);
        dispatch_run(s->dispatch);
        unsigned before = loop_connections(s), after;
        int rearm;
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
            after = loop_connections(s);
            rearm = after < before;
            before = after;
        } while (s->resumed || rearm);
        if (s->accept_starved) {
            loop_shed(s);
        }
        if (s->draining) {
            if (s->streams == 0 && dispatch_batches(s->dispatch) == 0) {
                log_event("info", "shutdown", "message", "drained", NULL);
                break;
            }
            if (ipc_now_ns() > s->drain_deadline_ns) {
                log_event("warn", "shutdown", "message", "grace period over: stopping", NULL);
                break;
            }
        }
    }
    return 0;
}

void loop_cleanup(struct server *s)
{
    /* MHD_stop_daemon aborts on suspended connections: wake them all first; their streams
     * end without a summary, which tells clients they were cut off. Give MHD a moment to
     * send what is buffered and close them. */
    if (s->mhd != NULL) {
        int cut = stream_cut_all(s);
        if (cut > 0) {
            char n[16];
            snprintf(n, sizeof n, "%d", cut);
            log_event("warn", "shutdown", "message", "cutting unfinished streams", "streams", n,
                      NULL);
        }
        uint64_t until = ipc_now_ns() + 2000000000u;
        MHD_run(s->mhd);
        while (s->stream_list != NULL && ipc_now_ns() < until) {
            struct epoll_event ev;
            if (s->epfd >= 0) {
                epoll_wait(s->epfd, &ev, 1, 10);
            }
            MHD_run(s->mhd);
        }
    }
    dispatch_destroy(s->dispatch);
    s->dispatch = NULL;
    http_stop(s);
    if (s->epfd >= 0) {
        close(s->epfd);
    }
    if (s->sigfd >= 0) {
        close(s->sigfd);
    }
    if (s->spare_fd >= 0) {
        close(s->spare_fd);
    }
    free(s->ops_json);
    observe_stop(s);
    auth_destroy(s->auth);
    s->auth = NULL;
}
