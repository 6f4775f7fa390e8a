/* The Redis store's two connections. The loop's one is hiredis' async API on an epoll set of
 * its own (its socket and a timer), whose descriptor is store_fd(): the server's loop sees
 * one readable fd and calls store_dispatch, which never blocks. Commands wait in a queue while
 * Redis is away and those marked RS_RETRY are sent again after a reconnect, in their order
 * (they are idempotent: the exactly-once script, the end, the ack). Reads use a second,
 * blocking connection with short timeouts (redis_read.c). */
#include "redis_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RS_TICK_MS 50                     /* the timer: reconnects, polls, claims, heartbeats */
#define RS_RETRY_MS 250                   /* between two connection attempts */
#define RS_REPLY_TIMEOUT_NS 5000000000ull /* no reply for this long: the connection is dead */

struct rs_cmd {
    struct rs_cmd *next;
    struct rstore *rs;
    int flags;
    int script; /* RS_S_* or -1 */
    rs_reply_fn *fn;
    void *arg;
    int argc;
    char **argv;
    size_t *lens;
    uint64_t sent_ns;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t rs_now_ms(const struct rstore *rs)
{
    if (rs->cfg.now_ms != NULL) {
        return rs->cfg.now_ms();
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct rstore *rs_of(struct store *st)
{
    return st != NULL && strcmp(st->ops->name, "redis") == 0 ? (struct rstore *)st : NULL;
}

void rs_owner_hex(const uint8_t *owner, size_t owner_len, char out[RS_OWNER_HEX])
{
    static const char hex[] = "0123456789abcdef";
    if (owner == NULL || owner_len == 0 || owner_len == STORE_ANY_OWNER) {
        snprintf(out, RS_OWNER_HEX, "-");
        return;
    }
    size_t n = owner_len > STORE_OWNER_MAX ? STORE_OWNER_MAX : owner_len;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[owner[i] >> 4];
        out[2 * i + 1] = hex[owner[i] & 15];
    }
    out[2 * n] = '\0';
}

void rs_key(char *out, size_t size, const char *id, const char *suffix)
{
    snprintf(out, size, "batchd:{%s}:%s", id, suffix);
}

/* "redis://IP:PORT[/DB]" or "unix:/PATH[?db=N]". */
int rs_parse_url(struct rstore *rs, char *err, size_t errlen)
{
    const char *u = rs->url;
    char *end = NULL;
    rs->db = 0;
    rs->port = 6379;
    if (strncmp(u, "unix:", 5) == 0) {
        const char *q = strchr(u + 5, '?');
        size_t n = q != NULL ? (size_t)(q - (u + 5)) : strlen(u + 5);
        if (n == 0 || n >= sizeof rs->path) {
            snprintf(err, errlen, "--redis %s: no socket path", u);
            return -1;
        }
        memcpy(rs->path, u + 5, n);
        rs->path[n] = '\0';
        if (q != NULL) {
            if (strncmp(q, "?db=", 4) != 0) {
                snprintf(err, errlen, "--redis %s: only ?db=N may follow the path", u);
                return -1;
            }
            errno = 0;
            long db = strtol(q + 4, &end, 10);
            if (errno != 0 || *end != '\0' || end == q + 4 || db < 0 || db > 65535) {
                snprintf(err, errlen, "--redis %s: bad db number", u);
                return -1;
            }
            rs->db = (int)db;
        }
        return 0;
    }
    if (strncmp(u, "redis://", 8) != 0) {
        snprintf(err, errlen, "--redis %s: not redis:// or unix:", u);
        return -1;
    }
    const char *h = u + 8;
    const char *colon = strrchr(h, ':');
    const char *slash = strchr(h, '/');
    const char *hend = colon != NULL && (slash == NULL || colon < slash) ? colon
                       : slash != NULL                                   ? slash
                                                                         : h + strlen(h);
    size_t n = (size_t)(hend - h);
    if (n == 0 || n >= sizeof rs->host || memchr(h, '@', n) != NULL) {
        snprintf(err, errlen, "--redis %s: no host (user:password@ is not supported)", u);
        return -1;
    }
    memcpy(rs->host, h, n);
    rs->host[n] = '\0';
    struct in_addr a4;
    if (strcmp(rs->host, "localhost") == 0) {
        snprintf(rs->host, sizeof rs->host, "127.0.0.1");
    } else if (inet_pton(AF_INET, rs->host, &a4) != 1) {
        /* hiredis resolves a name with a blocking getaddrinfo at every (re)connect, on the
         * loop: an unreachable DNS would stall every request. */
        snprintf(err, errlen, "--redis %s: the host must be an IPv4 address (or a unix: socket)",
                 u);
        return -1;
    }
    if (hend == colon) {
        errno = 0;
        long port = strtol(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || port <= 0 || port > 65535 ||
            (*end != '\0' && *end != '/')) {
            snprintf(err, errlen, "--redis %s: bad port", u);
            return -1;
        }
        rs->port = (int)port;
        slash = *end == '/' ? end : NULL;
    }
    if (slash != NULL && slash[1] != '\0') {
        errno = 0;
        long db = strtol(slash + 1, &end, 10);
        if (errno != 0 || *end != '\0' || db < 0 || db > 65535) {
            snprintf(err, errlen, "--redis %s: bad db number", u);
            return -1;
        }
        rs->db = (int)db;
    }
    return 0;
}

/* ---------------------------------------------------------------- commands */

static void cmd_free(struct rs_cmd *c)
{
    if (c == NULL) {
        return;
    }
    for (int i = 0; i < c->argc; i++) {
        free(c->argv[i]);
    }
    free(c->argv);
    free(c->lens);
    free(c);
}

static void list_push(struct rs_cmd **head, struct rs_cmd **tail, struct rs_cmd *c)
{
    c->next = NULL;
    if (*tail != NULL) {
        (*tail)->next = c;
    } else {
        *head = c;
    }
    *tail = c;
}

static struct rs_cmd *list_pop(struct rs_cmd **head, struct rs_cmd **tail)
{
    struct rs_cmd *c = *head;
    if (c != NULL) {
        *head = c->next;
        if (*head == NULL) {
            *tail = NULL;
        }
        c->next = NULL;
    }
    return c;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Hands C to hiredis (its reply comes to on_reply). */
static int cmd_write(struct rstore *rs, struct rs_cmd *c)
{
    const char *argv[c->argc + 3];
    size_t lens[c->argc + 3];
    int n = 0;
    if (c->script >= 0) {
        argv[n] = "EVALSHA";
        lens[n++] = 7;
        argv[n] = rs->sha[c->script];
        lens[n++] = strlen(rs->sha[c->script]);
        argv[n] = "0"; /* no KEYS: the scripts name theirs from the batch id */
        lens[n++] = 1;
    }
    for (int i = 0; i < c->argc; i++) {
        argv[n] = c->argv[i];
        lens[n++] = c->lens[i];
    }
    if (redisAsyncCommandArgv(rs->ac, on_reply, c, n, argv, lens) != REDIS_OK) {
        return -1;
    }
    c->sent_ns = now_ns();
    list_push(&rs->sent_head, &rs->sent_tail, c);
    rs->nsent++;
    return 0;
}

/* Sends what waits, once the connection is ready. */
static void flush_waiting(struct rstore *rs)
{
    while (rs->connected && rs->wait_head != NULL) {
        struct rs_cmd *c = list_pop(&rs->wait_head, &rs->wait_tail);
        rs->nwait--;
        if (cmd_write(rs, c) != 0) {
            /* The context is going away: put it back first in line. */
            c->next = rs->wait_head;
            rs->wait_head = c;
            if (rs->wait_tail == NULL) {
                rs->wait_tail = c;
            }
            rs->nwait++;
            return;
        }
    }
}

static int cmd_queue(struct rstore *rs, int flags, int script, rs_reply_fn *fn, void *arg, int argc,
                     const char **argv, const size_t *lens)
{
    struct rs_cmd *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return STORE_E_NOMEM;
    }
    c->rs = rs;
    c->flags = flags;
    c->script = script;
    c->fn = fn;
    c->arg = arg;
    c->argv = calloc((size_t)argc + 1, sizeof *c->argv);
    c->lens = calloc((size_t)argc + 1, sizeof *c->lens);
    if (c->argv == NULL || c->lens == NULL) {
        cmd_free(c);
        return STORE_E_NOMEM;
    }
    for (int i = 0; i < argc; i++) {
        size_t len = lens != NULL ? lens[i] : strlen(argv[i]);
        c->argv[i] = malloc(len + 1);
        if (c->argv[i] == NULL) {
            c->argc = i;
            cmd_free(c);
            return STORE_E_NOMEM;
        }
        memcpy(c->argv[i], argv[i], len);
        c->argv[i][len] = '\0';
        c->lens[i] = len;
    }
    c->argc = argc;
    list_push(&rs->wait_head, &rs->wait_tail, c);
    rs->nwait++;
    flush_waiting(rs);
    return 0;
}

int rs_send(struct rstore *rs, int flags, rs_reply_fn *fn, void *arg, int argc, const char **argv,
            const size_t *lens)
{
    return cmd_queue(rs, flags, -1, fn, arg, argc, argv, lens);
}

int rs_eval(struct rstore *rs, int flags, int script, rs_reply_fn *fn, void *arg, int argc,
            const char **argv, const size_t *lens)
{
    return cmd_queue(rs, flags, script, fn, arg, argc, argv, lens);
}

/* A reply (or NULL: the connection is gone) for command PRIVDATA, always the oldest sent. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rs_cmd *c = privdata;
    struct rstore *rs = c->rs;
    redisReply *reply = r;
    (void)ac;
    /* Replies come in order: C is the head of the sent list. */
    struct rs_cmd *head = list_pop(&rs->sent_head, &rs->sent_tail);
    if (head != c) {
        /* Cannot happen (FIFO); keep the lists consistent anyway. */
        if (head != NULL) {
            head->next = rs->sent_head;
            rs->sent_head = head;
            if (rs->sent_tail == NULL) {
                rs->sent_tail = head;
            }
        }
    } else {
        rs->nsent--;
    }
    if (reply == NULL && (c->flags & RS_RETRY) && !rs->closing) {
        list_push(&rs->retry_head, &rs->retry_tail, c); /* sent again after the reconnect */
        return;
    }
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && c->script >= 0 &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && !rs->closing) {
        /* Redis restarted under us without our scripts: reconnect reloads them. */
        list_push(&rs->retry_head, &rs->retry_tail, c);
        rs->reload = 1;
        return;
    }
    if (reply != NULL) {
        store_stats_add_flush(&rs->stats, now_ns() - c->sent_ns); /* a write's round trip */
    }
    if (c->fn != NULL) {
        c->fn(rs, reply, c->arg);
    }
    cmd_free(c);
}

/* ---------------------------------------------------------------- the epoll set */

static void ev_update(struct rstore *rs)
{
    if (rs->ac_fd < 0) {
        return;
    }
    struct epoll_event ev = {.events = rs->ac_mask, .data.fd = rs->ac_fd};
    if (rs->ac_registered) {
        epoll_ctl(rs->epfd, EPOLL_CTL_MOD, rs->ac_fd, &ev);
    } else {
        epoll_ctl(rs->epfd, EPOLL_CTL_ADD, rs->ac_fd, &ev);
        rs->ac_registered = 1;
    }
}

static void ev_add_read(void *p)
{
    struct rstore *rs = p;
    rs->ac_mask |= EPOLLIN;
    ev_update(rs);
}
static void ev_del_read(void *p)
{
    struct rstore *rs = p;
    rs->ac_mask &= ~(unsigned)EPOLLIN;
    ev_update(rs);
}
static void ev_add_write(void *p)
{
    struct rstore *rs = p;
    rs->ac_mask |= EPOLLOUT;
    ev_update(rs);
}
static void ev_del_write(void *p)
{
    struct rstore *rs = p;
    rs->ac_mask &= ~(unsigned)EPOLLOUT;
    ev_update(rs);
}
static void ev_cleanup(void *p)
{
    struct rstore *rs = p;
    if (rs->ac_fd >= 0 && rs->ac_registered) {
        epoll_ctl(rs->epfd, EPOLL_CTL_DEL, rs->ac_fd, NULL);
    }
    rs->ac_registered = 0;
    rs->ac_fd = -1;
    rs->ac_mask = 0;
}

/* ---------------------------------------------------------------- connecting */

static void lost(struct rstore *rs, const char *why)
{
    if (rs->connected && rs->cfg.on_error != NULL) {
        rs->cfg.on_error(rs->cfg.arg, STORE_E_IO, why);
    }
    rs->ac = NULL;
    rs->connected = 0;
    rs->connecting = 0;
    rs->stats.write_error = STORE_E_IO;
    rs->retry_at_ns = now_ns() + RS_RETRY_MS * 1000000ull;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rstore *rs = ac->ev.data;
    (void)status;
    /* Every pending callback ran with NULL before this; the context is freed after. */
    lost(rs, ac->errstr[0] != '\0' ? ac->errstr : "the connection to Redis was closed");
}

/* A set-up command refused (LOADING: a restarted Redis reads its AOF back, and the
 * connection stays open): the set-up is void; the tick connects again. */
static void on_setup(struct rstore *rs, redisReply *reply, void *arg)
{
    (void)arg;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        rs->reload = 1;
    }
}

static void on_ready(struct rstore *rs, redisReply *reply, void *arg)
{
    (void)arg;
    if (reply == NULL) {
        return; /* the disconnect follows */
    }
    if (reply->type == REDIS_REPLY_ERROR || rs->reload) {
        rs->reload = 1; /* not ready: the tick drops this connection and tries again */
        return;
    }
    /* Everything that was sent and lost goes first, then what waited. */
    if (rs->retry_head != NULL) {
        rs->retry_tail->next = rs->wait_head;
        if (rs->wait_tail == NULL) {
            rs->wait_tail = rs->retry_tail;
        }
        rs->wait_head = rs->retry_head;
        for (struct rs_cmd *c = rs->retry_head; c != NULL && c != rs->retry_tail->next;
             c = c->next) {
            rs->nwait++;
        }
        rs->retry_head = rs->retry_tail = NULL;
    }
    rs->connected = 1;
    rs->connecting = 0;
    rs->stats.write_error = 0;
    flush_waiting(rs);
}

static void on_script_loaded(struct rstore *rs, redisReply *reply, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    if (reply != NULL && reply->type == REDIS_REPLY_STRING && reply->len == 40) {
        memcpy(rs->sha[i], reply->str, 40);
        rs->sha[i][40] = '\0';
    } else if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        rs->reload = 1; /* e.g. LOADING: on_ready sees it and the tick connects again */
        if (rs->cfg.on_error != NULL) {
            rs->cfg.on_error(rs->cfg.arg, STORE_E_IO, reply->str);
        }
    }
}

/* Writes directly (not through the wait queue): the connection's set-up goes first. */
static int setup_write(struct rstore *rs, rs_reply_fn *fn, void *arg, int argc, const char **argv)
{
    struct rs_cmd *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -1;
    }
    c->rs = rs;
    c->script = -1;
    c->fn = fn;
    c->arg = arg;
    c->argv = calloc((size_t)argc, sizeof *c->argv);
    c->lens = calloc((size_t)argc, sizeof *c->lens);
    if (c->argv == NULL || c->lens == NULL) {
        cmd_free(c);
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        c->argv[i] = strdup(argv[i]);
        if (c->argv[i] == NULL) {
            c->argc = i;
            cmd_free(c);
            return -1;
        }
        c->lens[i] = strlen(argv[i]);
        c->argc = i + 1;
    }
    if (cmd_write(rs, c) != 0) {
        cmd_free(c);
        return -1;
    }
    return 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rstore *rs = ac->ev.data;
    if (status != REDIS_OK) {
        /* hiredis frees the context without onDisconnect. */
        lost(rs, ac->errstr);
        return;
    }
    char db[16];
    snprintf(db, sizeof db, "%d", rs->db);
    const char *sel[] = {"SELECT", db};
    int bad = rs->db != 0 && setup_write(rs, on_setup, NULL, 2, sel) != 0;
    for (size_t i = 0; !bad && i < RS_NSCRIPTS; i++) {
        const char *load[] = {"SCRIPT", "LOAD", rs_scripts[i]};
        bad = setup_write(rs, on_script_loaded, (void *)(uintptr_t)i, 3, load) != 0;
    }
    const char *ping[] = {"PING"};
    if (bad || setup_write(rs, on_ready, NULL, 1, ping) != 0) {
        redisAsyncDisconnect(rs->ac);
    }
}

void rs_connect(struct rstore *rs)
{
    if (rs->ac != NULL || rs->connecting) {
        return;
    }
    redisAsyncContext *ac = rs->path[0] != '\0' ? redisAsyncConnectUnix(rs->path)
                                                : redisAsyncConnect(rs->host, rs->port);
    if (ac == NULL) {
        rs->retry_at_ns = now_ns() + RS_RETRY_MS * 1000000ull;
        return;
    }
    if (ac->err) {
        redisAsyncFree(ac);
        rs->retry_at_ns = now_ns() + RS_RETRY_MS * 1000000ull;
        return;
    }
    rs->ac = ac;
    rs->ac_fd = ac->c.fd;
    rs->ac_mask = 0;
    rs->ac_registered = 0;
    rs->connecting = 1;
    /* The hooks before the connect callback (TECH-NOTES): it registers the first write. */
    ac->ev.data = rs;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisEnableKeepAlive(&ac->c);
}

/* ---------------------------------------------------------------- the loop's turn */

int rs_conn_open(struct rstore *rs, char *err, size_t errlen)
{
    rs->ac_fd = -1;
    rs->epfd = epoll_create1(EPOLL_CLOEXEC);
    rs->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (rs->epfd < 0 || rs->timerfd < 0) {
        snprintf(err, errlen, "epoll/timerfd: %s", strerror(errno));
        return STORE_E_IO;
    }
    struct itimerspec its = {.it_interval = {0, RS_TICK_MS * 1000000L},
                             .it_value = {0, RS_TICK_MS * 1000000L}};
    timerfd_settime(rs->timerfd, 0, &its, NULL);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = rs->timerfd};
    epoll_ctl(rs->epfd, EPOLL_CTL_ADD, rs->timerfd, &ev);
    rs->stats.write_error = STORE_E_IO; /* until connected */
    rs_connect(rs);
    return 0;
}

/* 1 when the timer fired since the last call. */
int rs_conn_dispatch(struct rstore *rs)
{
    struct epoll_event evs[4];
    int ticked = 0;
    int n = epoll_wait(rs->epfd, evs, 4, 0);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.fd == rs->timerfd) {
            uint64_t x;
            while (read(rs->timerfd, &x, sizeof x) == (ssize_t)sizeof x) {
            }
            ticked = 1;
            continue;
        }
        if (rs->ac == NULL || evs[i].data.fd != rs->ac_fd) {
            continue;
        }
        redisAsyncContext *ac = rs->ac;
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            redisAsyncHandleRead(ac); /* may free the context */
        }
        if (rs->ac == ac && (evs[i].events & EPOLLOUT)) {
            redisAsyncHandleWrite(ac);
        }
    }
    uint64_t now = now_ns();
    if (rs->ac == NULL && now >= rs->retry_at_ns) {
        rs_connect(rs);
    } else if (rs->ac != NULL &&
               (rs->reload ||
                (rs->sent_head != NULL && now - rs->sent_head->sent_ns > RS_REPLY_TIMEOUT_NS))) {
        /* No answer for seconds (a stopped Redis): start again; RS_RETRY commands survive. */
        rs->reload = 0;
        redisAsyncContext *ac = rs->ac;
        redisAsyncFree(ac); /* callbacks with NULL, cleanup; no onDisconnect after Free? */
        if (rs->ac == ac) {
            lost(rs, "Redis did not answer");
        }
    }
    return ticked;
}

void rs_conn_close(struct rstore *rs)
{
    rs->closing = 1;
    if (rs->ac != NULL) {
        redisAsyncContext *ac = rs->ac;
        redisAsyncFree(ac);
        rs->ac = NULL;
    }
    struct rs_cmd *c;
    while ((c = list_pop(&rs->wait_head, &rs->wait_tail)) != NULL ||
           (c = list_pop(&rs->retry_head, &rs->retry_tail)) != NULL) {
        if (c->fn != NULL) {
            c->fn(rs, NULL, c->arg);
        }
        cmd_free(c);
    }
    if (rs->sc != NULL) {
        redisFree(rs->sc);
        rs->sc = NULL;
    }
    if (rs->epfd >= 0) {
        close(rs->epfd);
    }
    if (rs->timerfd >= 0) {
        close(rs->timerfd);
    }
    rs->epfd = rs->timerfd = -1;
}

/* Blocks until every queued command has its reply (or Redis is gone for 2 s). */
int rs_conn_sync(struct rstore *rs)
{
    uint64_t give_up = now_ns() + 2000000000ull;
    while ((rs->sent_head != NULL || rs->wait_head != NULL || rs->retry_head != NULL) &&
           now_ns() < give_up) {
        struct epoll_event ev;
        epoll_wait(rs->epfd, &ev, 1, 10);
        rs_conn_dispatch(rs);
    }
    return rs->sent_head == NULL && rs->wait_head == NULL ? 0 : STORE_E_IO;
}

/* ---------------------------------------------------------------- the read connection */

/* After a read that waited out its timeout (Redis stopped, or its host unreachable), reads
 * fail at once for a second rather than stall the loop again; a refused or closed
 * connection costs nothing to try again, so it sets no such pause. */
static void sync_backoff(struct rstore *rs, const redisContext *c)
{
    int timed_out = c == NULL ||
                    (c->err == REDIS_ERR_IO &&
                     (errno == EAGAIN || errno == EWOULDBLOCK || errno == ETIMEDOUT)) ||
                    (c->err != 0 && strstr(c->errstr, "timed out") != NULL);
    if (timed_out) {
        rs->sc_down_until_ns = now_ns() + 1000000000ull;
    }
}

static redisContext *sync_ctx(struct rstore *rs)
{
    if (rs->sc != NULL) {
        return rs->sc;
    }
    uint64_t now = now_ns();
    if (now < rs->sc_down_until_ns) {
        return NULL; /* it failed a moment ago: fail fast rather than block the loop again */
    }
    struct timeval tv = {0, RS_READ_TIMEOUT_MS * 1000};
    redisContext *c = rs->path[0] != '\0' ? redisConnectUnixWithTimeout(rs->path, tv)
                                          : redisConnectWithTimeout(rs->host, rs->port, tv);
    if (c == NULL || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        sync_backoff(rs, c);
        redisFree(c);
        return NULL;
    }
    if (rs->db != 0) {
        redisReply *r = redisCommand(c, "SELECT %d", rs->db);
        int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (!ok) {
            sync_backoff(rs, c);
            redisFree(c);
            return NULL;
        }
    }
    rs->sc = c;
    return c;
}

static redisReply *sync_done(struct rstore *rs, redisReply *r)
{
    if (r == NULL) {
        sync_backoff(rs, rs->sc);
        redisFree(rs->sc); /* a timeout or a lost connection: the next read connects again */
        rs->sc = NULL;
    }
    return r;
}

/* 1 when C failed because the other end closed it (not a timeout). */
static int closed_under(const redisContext *c)
{
    return c->err == REDIS_ERR_EOF ||
           (c->err == REDIS_ERR_IO && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Reads are idempotent: one that fails on a connection that was open (Redis restarted, or
 * closed it idle) is tried once more on a new one before the store counts as unavailable. */
redisReply *rs_sync(struct rstore *rs, int argc, const char **argv, const size_t *lens)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = rs->sc == NULL;
        redisContext *c = sync_ctx(rs);
        if (c == NULL) {
            return NULL;
        }
        redisReply *r = redisCommandArgv(c, argc, argv, lens);
        if (r != NULL || fresh || !closed_under(c)) {
            return sync_done(rs, r);
        }
        redisFree(rs->sc);
        rs->sc = NULL;
    }
    return NULL;
}

redisReply *rs_syncf(struct rstore *rs, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = rs->sc == NULL;
        redisContext *c = sync_ctx(rs);
        if (c == NULL) {
            return NULL;
        }
        va_list ap;
        va_start(ap, fmt);
        redisReply *r = redisvCommand(c, fmt, ap);
        va_end(ap);
        if (r != NULL || fresh || !closed_under(c)) {
            return sync_done(rs, r);
        }
        redisFree(rs->sc);
        rs->sc = NULL;
    }
    return NULL;
}

redisReply *rs_sync_script(struct rstore *rs, int script, int argc, const char **argv,
                           const size_t *lens)
{
    const char *av[argc + 3];
    size_t lv[argc + 3];
    av[0] = "EVAL";
    lv[0] = 4;
    av[1] = rs_scripts[script];
    lv[1] = strlen(rs_scripts[script]);
    av[2] = "0";
    lv[2] = 1;
    for (int i = 0; i < argc; i++) {
        av[i + 3] = argv[i];
        lv[i + 3] = lens != NULL ? lens[i] : strlen(argv[i]);
    }
    return rs_sync(rs, argc + 3, av, lv);
}
