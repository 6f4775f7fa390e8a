/* The one place that owns start and stop order: signals and the worker environment before
 * any thread, the op table and auth, the store, metrics, the workers, the HTTP listener, the
 * event loop and what each turn runs (the store's expiry timer too), the stored batches
 * resumed; drain on the first SIGTERM, stop on the second; cleanup in reverse. What each
 * part does is its own file's (http.c, conn.c, dispatch, loop.c, store/, stored.c). */
#include "server.h"

#include "../workers/ipc.h"
#include "../workers/ops/ops.h"
#include "auth.h"
#include "cluster.h"
#include "conn.h"
#include "http.h"
#include "internal.h"
#include "log.h"
#include "loop.h"
#include "observe.h"
#include "results.h"
#include "stored.h"
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* What every worker is given at spawn (the pool's CONFIG frame): the server's limits and
 * folders. */
static void server_worker_config(const struct config *cfg, struct worker_config *wc)
{
    _Static_assert(sizeof cfg->data_dir <= sizeof wc->data_dir, "data_dir fits");
    _Static_assert(sizeof cfg->output_dir <= sizeof wc->output_dir, "output_dir fits");
    wc->memory_bytes = cfg->worker_memory_bytes;
    wc->limits.max_input_pixels = cfg->max_input_pixels;
    wc->limits.max_output_pixels = cfg->max_output_pixels;
    wc->limits.lua_memory = cfg->lua_memory_bytes;
    snprintf(wc->data_dir, sizeof wc->data_dir, "%s", cfg->data_dir);
    snprintf(wc->output_dir, sizeof wc->output_dir, "%s", cfg->output_dir);
    _Static_assert(sizeof cfg->modules <= sizeof wc->modules, "modules fit");
    snprintf(wc->modules, sizeof wc->modules, "%s", cfg->modules);
}

/* Everything before the first thread could exist: signals. */
static int server_prepare(struct server *s)
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

/* The signalfd is readable: the first SIGTERM or SIGINT drains, the second stops. */
static void server_on_signal(struct loop_watch *w, uint32_t events)
{
    struct server *s = w->ud;
    struct signalfd_siginfo si;
    (void)events;
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

/* A write of the store failed in the background (it retries): logged. Called on the store's
 * writer thread, so it only writes a log line (one write(2)); /readyz reads the state from
 * store_stats. */
static void server_store_error(void *arg, int rc, const char *message)
{
    (void)arg;
    log_event("error", "store_error", "code", store_err_name(rc), "message", message, NULL);
}

/* Opens the store in --state-dir. A store that cannot open (unwritable, full, damaged, held
 * by another batchd) refuses the start with one line naming the dir and the cause: never
 * start on an empty store beside the real one. Returns 0, or -1 (logged). */
/* The store committed writes of batch ID: stored.c forgets it once ended, and the streams
 * that follow it read on. */
static void server_store_progress(void *arg, const char *id, uint64_t committed_seq)
{
    (void)committed_seq;
    stored_on_progress(arg, id);
    results_wake(arg, id);
}

/* Cluster: a cancel of batch ID was recorded, by this replica or another one. */
static void server_store_cancel(void *arg, const char *id, uint64_t seq)
{
    (void)seq;
    cluster_on_cancel(arg, id);
}

static int server_store_open(struct server *s)
{
    if (s->cfg.redis_url[0] != '\0') {
        log_set_replica(s->cfg.replica_name);
    }
    struct store_config sc = {
        .redis_url = s->cfg.redis_url,
        .replica = s->cfg.replica_name,
        .claim_timeout_ms = s->cfg.claim_timeout_ms,
        .cluster_max_upload = s->cfg.cluster_max_upload,
        .on_cancel = server_store_cancel,
        .state_dir = s->cfg.state_dir,
        .max_bytes = s->cfg.max_stored_bytes,
        .result_ttl_ms = (int64_t)s->cfg.result_ttl_ms,
        .on_progress = server_store_progress,
        .on_error = server_store_error,
        .arg = s,
    };
    char err[1024] = "";
    int rc = store_open(&sc, &s->store, err, sizeof err);
    if (rc != 0) {
        log_event("error", "startup", s->cfg.redis_url[0] != '\0' ? "redis" : "state_dir",
                  s->cfg.redis_url[0] != '\0' ? s->cfg.redis_url : s->cfg.state_dir, "code",
                  store_err_name(rc), "message", err[0] != '\0' ? err : store_err_message(rc),
                  NULL);
        s->store = NULL;
        return -1;
    }
    if (store_is_cluster(s->store)) {
        log_event("info", "store_opened", "redis", s->cfg.redis_url, "replica", s->cfg.replica_name,
                  NULL);
    }
    struct store_stats st;
    store_stats_get(s->store, &st);
    char bytes[24];
    snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)st.bytes);
    if (!store_is_cluster(s->store)) {
        log_event("info", "store_opened", "state_dir", s->cfg.state_dir, "bytes", bytes, NULL);
    }
    /* Expiry runs every quarter of the ttl, between 250 ms and 30 s, so that a short ttl
     * (tests) expires within about 1.25 ttl; the first one at once, for what expired while
     * the server was down. */
    uint64_t every = s->cfg.result_ttl_ms / 4;
    every = every < 250 ? 250 : (every > 30000 ? 30000 : every);
    s->store_expire_every = every * 1000000u;
    s->store_expire_ns = ipc_now_ns();
    return 0;
}

/* The store has outcomes waiting (commits, creations): they run now. */
static void server_on_store(struct loop_watch *w, uint32_t events)
{
    struct server *s = w->ud;
    (void)events;
    store_dispatch(s->store);
}

/* The expiry timer: when due, queues the expiry of every batch past its ttl. */
static void server_store_tick(struct server *s)
{
    uint64_t now = ipc_now_ns();
    if (s->store == NULL || now < s->store_expire_ns) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (store_expire(s->store, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000) != 0) {
        log_event("warn", "store_expire", "message", "out of memory: expiry put off", NULL);
    }
    s->store_expire_ns = now + s->store_expire_every;
}

/* The event loop and its four fds of the server's own: libmicrohttpd's epoll fd and the
 * dispatcher's only wake the loop (each turn runs both), the signalfd and the store's fd
 * have their callbacks. Client sockets are added by conn.c. Returns 0 or -1. */
static int server_watch(struct server *s)
{
    s->loop = loop_create();
    if (s->loop == NULL) {
        return -1;
    }
    loop_watch_init(&s->w_mhd, http_epoll_fd(s), NULL, s);
    loop_watch_init(&s->w_dispatch, dispatch_fd(s->dispatch), NULL, s);
    loop_watch_init(&s->w_signal, s->sigfd, server_on_signal, s);
    loop_watch_init(&s->w_store, store_fd(s->store), server_on_store, s);
    if (loop_add(s->loop, &s->w_mhd, EPOLLIN) != 0 ||
        loop_add(s->loop, &s->w_dispatch, EPOLLIN) != 0 ||
        loop_add(s->loop, &s->w_signal, EPOLLIN) != 0 ||
        loop_add(s->loop, &s->w_store, EPOLLIN) != 0) {
        return -1;
    }
    return 0;
}

/* The op table, auth, the store, metrics, the workers, the listener and the loop, then the
 * stored batches resumed, in that order. Returns 0, or -1 (logged). */
static int server_start(struct server *s)
{
    json_t *ops = ops_describe();
    s->ops_json = json_dumps(ops, JSON_COMPACT);
    json_decref(ops);
    s->ops_json_len = s->ops_json ? strlen(s->ops_json) : 0;
    char aerr[256] = "";
    s->auth = auth_create(s->cfg.auth_token_file, s->cfg.cors_origin, aerr, sizeof aerr);
    if (s->auth == NULL) {
        log_event("error", "startup", "message", aerr, NULL);
        return -1;
    }
    if (server_store_open(s) != 0) {
        return -1;
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
    server_worker_config(&s->cfg, &dc.worker);
    if (observe_start(s) != 0) {
        log_event("error", "startup", "message", "out of memory", NULL);
        return -1;
    }
    s->dispatch = dispatch_create(&dc);
    if (s->dispatch == NULL) {
        log_event("error", "startup", "message", "cannot start the workers", NULL);
        return -1;
    }
    s->conn_next_check_ns = UINT64_MAX;
    if (http_start(s) != 0) {
        dispatch_destroy(s->dispatch);
        s->dispatch = NULL;
        return -1;
    }
    if (server_watch(s) != 0) {
        log_event("error", "startup", "message", "cannot set up the event loop", NULL);
        return -1;
    }
    if (stored_resume(s) != 0) {
        log_event("error", "startup", "state_dir", s->cfg.state_dir, "message",
                  "cannot read the unfinished batches of the store", NULL);
        return -1;
    }
    return 0;
}

/* How long the loop may sleep: the nearest of the dispatcher's, MHD's, the connections' and
 * the store expiry's timers; 50 ms at most while draining, to notice the end. */
static int server_timeout_ms(const struct server *s)
{
    int timeout = dispatch_timeout_ms(s->dispatch);
    int hto = http_timeout_ms(s);
    if (hto >= 0 && (timeout < 0 || hto < timeout)) {
        timeout = hto;
    }
    int cto = conn_timeout_ms(s);
    if (cto >= 0 && (timeout < 0 || cto < timeout)) {
        timeout = cto;
    }
    if (s->store != NULL) {
        uint64_t now = ipc_now_ns();
        uint64_t ms = s->store_expire_ns > now ? (s->store_expire_ns - now + 999999) / 1000000 : 0;
        if (timeout < 0 || ms < (uint64_t)timeout) {
            timeout = (int)ms;
        }
    }
    if (s->draining && (timeout < 0 || timeout > 50)) {
        timeout = 50;
    }
    return timeout;
}

/* 1 when a drain is over: every stream and batch done, or the grace period gone. Stored
 * batches are not waited for: they carry on after a restart. */
static int server_drained(struct server *s)
{
    if (s->streams == 0 && dispatch_batches(s->dispatch) <= stored_running(s)) {
        log_event("info", "shutdown", "message", "drained", NULL);
        return 1;
    }
    if (ipc_now_ns() > s->drain_deadline_ns) {
        log_event("warn", "shutdown", "message", "grace period over: stopping", NULL);
        return 1;
    }
    return 0;
}

int server_run(struct server *s)
{
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (server_prepare(s) != 0) {
        log_event("error", "startup", "message", "cannot set up signals", NULL);
        return 1;
    }
    if (server_start(s) != 0) {
        return 1;
    }
    char port[16], workers[16], pid[16];
    snprintf(port, sizeof port, "%u", s->port);
    snprintf(workers, sizeof workers, "%d", s->cfg.workers);
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    log_event("info", "listening", "address", s->cfg.listen, "port", port, "workers", workers,
              "pid", pid, NULL);
    while (!s->stop) {
        if (loop_wait(s->loop, server_timeout_ms(s)) < 0) {
            log_event("error", "loop", "message", strerror(errno), NULL);
            break;
        }
        conn_enforce(s);
        server_store_tick(s);
        stored_pump(s); /* stored batches that wait for room in the dispatcher */
        cluster_pump(s); /* chunks of the cluster's batches for idle workers */
        dispatch_run(s->dispatch);
        http_run(s);
        if (s->draining && server_drained(s)) {
            break;
        }
    }
    return 0;
}

void server_cleanup(struct server *s)
{
    /* MHD_stop_daemon aborts on suspended connections: wake them all first; their streams
     * end without a summary, which tells clients they were cut off. Give MHD a moment to
     * send what is buffered and close them. */
    if (s->mhd != NULL) {
        /* Creations queued get their answers (202 or a refusal), followers of stored batches
         * end without a summary (their batches carry on after a restart). */
        s->closing = 1;
        if (s->store != NULL) {
            store_sync(s->store);
        }
        results_cut_all(s);
        int cut = stream_cut_all(s);
        if (cut > 0) {
            char n[16];
            snprintf(n, sizeof n, "%d", cut);
            log_event("warn", "shutdown", "message", "cutting unfinished streams", "streams", n,
                      NULL);
        }
        http_flush(s, ipc_now_ns() + 2000000000u);
    }
    /* The stored batches' dispatcher batches go first (their jobs without a recorded result
     * run again on the next start), then the dispatcher; the store closes last, once nothing
     * holds a handle: it commits what is queued. */
    if (s->store != NULL) {
        stored_stop_all(s);
        cluster_stop_all(s);
    }
    dispatch_destroy(s->dispatch);
    s->dispatch = NULL;
    http_stop(s);
    if (s->loop != NULL) {
        loop_remove(s->loop, &s->w_store);
    }
    store_close(s->store);
    s->store = NULL;
    cluster_free(s);
    loop_destroy(s->loop);
    s->loop = NULL;
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
