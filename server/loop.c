/* The event loop: one epoll set whose events carry the struct loop_watch they belong to, and
 * loop_wait calling each one back. No policy here: what to watch, with which timeout, and
 * what a turn does besides waiting are the callers' (server.c, conn.c). */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Events taken per epoll_wait; more wait for the next turn. */
#define LOOP_MAX_EVENTS 64

struct loop {
    int epfd;
};

struct loop *loop_create(void)
{
    struct loop *l = calloc(1, sizeof *l);
    if (l == NULL) {
        return NULL;
    }
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    return l;
}

void loop_destroy(struct loop *l)
{
    if (l == NULL) {
        return;
    }
    close(l->epfd);
    free(l);
}

void loop_watch_init(struct loop_watch *w, int fd, loop_watch_fn on_event, void *ud)
{
    w->fd = fd;
    w->on_event = on_event;
    w->ud = ud;
    w->added = 0;
}

int loop_add(struct loop *l, struct loop_watch *w, uint32_t events)
{
    if (w->added) {
        return loop_modify(l, w, events);
    }
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (l == NULL || w->fd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, w->fd, &ev) != 0) {
        return -1;
    }
    w->added = 1;
    return 0;
}

int loop_modify(struct loop *l, struct loop_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (l == NULL || !w->added) {
        return -1;
    }
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void loop_remove(struct loop *l, struct loop_watch *w)
{
    if (l != NULL && w->added) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    }
    w->added = 0;
}

int loop_wait(struct loop *l, int timeout_ms)
{
    struct epoll_event evs[LOOP_MAX_EVENTS];
    int n = epoll_wait(l->epfd, evs, LOOP_MAX_EVENTS, timeout_ms);
    if (n < 0) {
        return errno == EINTR ? 0 : -1;
    }
    for (int i = 0; i < n; i++) {
        struct loop_watch *w = evs[i].data.ptr;
        if (w->on_event != NULL) {
            w->on_event(w, evs[i].events);
        }
    }
    return n;
}
