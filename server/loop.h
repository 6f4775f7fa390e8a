/* A generic event loop over epoll: "watch this fd, call this back" (libuv's uv__io_t, redis'
 * ae file events). It knows nothing of requests, libmicrohttpd or the workers: each user
 * embeds a struct loop_watch and gets its callback. Timers are the callers' own timeouts,
 * passed to loop_wait. */
#ifndef BATCHD_SERVER_LOOP_H
#define BATCHD_SERVER_LOOP_H

#include <stdint.h>

struct loop;
struct loop_watch;

/* Called from loop_wait with the epoll EVENTS that fired on W's fd. */
typedef void (*loop_watch_fn)(struct loop_watch *w, uint32_t events);

/* One watched fd. The caller embeds it (loop_watch_init) and keeps it alive while it is
 * added; the fields are the loop's. */
struct loop_watch {
    int fd;
    loop_watch_fn on_event; /* NULL: the event only wakes loop_wait */
    void *ud;               /* the caller's, untouched by the loop */
    int added;
};

/* A new loop (free with loop_destroy), or NULL. */
struct loop *loop_create(void);

/* Frees L (the watches stay the callers'). NULL is a no-op. */
void loop_destroy(struct loop *l);

/* Sets W up to watch FD with ON_EVENT (may be NULL) and UD; not yet added. */
void loop_watch_init(struct loop_watch *w, int fd, loop_watch_fn on_event, void *ud);

/* Starts watching W for EVENTS (EPOLLIN, EPOLLRDHUP, EPOLLET...; EPOLLERR and EPOLLHUP are
 * always reported), or changes the events of a W already added. Returns 0 or -1 (errno). */
int loop_add(struct loop *l, struct loop_watch *w, uint32_t events);

/* Changes the events of W, added (re-arms an edge-triggered watch). Returns 0 or -1. */
int loop_modify(struct loop *l, struct loop_watch *w, uint32_t events);

/* Stops watching W (a no-op when it is not added). */
void loop_remove(struct loop *l, struct loop_watch *w);

/* Waits up to TIMEOUT_MS (-1: no limit) for events and calls their watches back. Returns how
 * many fired, 0 on a timeout or a signal, or -1 on an error (errno). */
int loop_wait(struct loop *l, int timeout_ms);

#endif
