/* Unit tests of the generic event loop (server/loop.c): a watch is called back with its
 * events and its pointer, a watch without a callback only wakes the wait, modify re-arms an
 * edge-triggered watch, remove stops the calls, and a wait with nothing ready times out. */
#include "../../server/loop.h"
#include "../check.h"

#include <sys/epoll.h>
#include <unistd.h>

struct seen {
    int calls;
    uint32_t events;
};

static void on_event(struct loop_watch *w, uint32_t events)
{
    struct seen *s = w->ud;
    s->calls++;
    s->events = events;
}

static void test_callback_with_events_and_pointer(void)
{
    struct loop *l = loop_create();
    int p[2];
    CHECK(l != NULL);
    CHECK_EQ_INT(pipe(p), 0);
    struct seen seen = {0, 0};
    struct loop_watch w;
    loop_watch_init(&w, p[0], on_event, &seen);
    CHECK_EQ_INT(loop_add(l, &w, EPOLLIN), 0);
    CHECK_EQ_INT(loop_wait(l, 0), 0); /* nothing to read yet */
    CHECK_EQ_INT(seen.calls, 0);
    CHECK_EQ_INT(write(p[1], "x", 1), 1);
    CHECK_EQ_INT(loop_wait(l, 1000), 1);
    CHECK_EQ_INT(seen.calls, 1);
    CHECK((seen.events & EPOLLIN) != 0);
    /* Level-triggered: still readable, called again. */
    CHECK_EQ_INT(loop_wait(l, 1000), 1);
    CHECK_EQ_INT(seen.calls, 2);
    loop_remove(l, &w);
    CHECK_EQ_INT(loop_wait(l, 0), 0);
    CHECK_EQ_INT(seen.calls, 2);
    loop_remove(l, &w); /* a watch not added: a no-op */
    close(p[0]);
    close(p[1]);
    loop_destroy(l);
    loop_destroy(NULL);
}

static void test_no_callback_only_wakes(void)
{
    struct loop *l = loop_create();
    int p[2];
    CHECK(l != NULL);
    CHECK_EQ_INT(pipe(p), 0);
    struct loop_watch w;
    loop_watch_init(&w, p[0], NULL, NULL);
    CHECK_EQ_INT(loop_add(l, &w, EPOLLIN), 0);
    CHECK_EQ_INT(write(p[1], "x", 1), 1);
    CHECK_EQ_INT(loop_wait(l, 1000), 1);
    loop_remove(l, &w);
    close(p[0]);
    close(p[1]);
    loop_destroy(l);
}

static void test_edge_triggered_rearm(void)
{
    struct loop *l = loop_create();
    int p[2];
    CHECK(l != NULL);
    CHECK_EQ_INT(pipe(p), 0);
    struct seen seen = {0, 0};
    struct loop_watch w;
    loop_watch_init(&w, p[0], on_event, &seen);
    CHECK_EQ_INT(loop_modify(l, &w, EPOLLIN), -1); /* not added yet */
    CHECK_EQ_INT(loop_add(l, &w, EPOLLIN | EPOLLET), 0);
    CHECK_EQ_INT(write(p[1], "x", 1), 1);
    CHECK_EQ_INT(loop_wait(l, 1000), 1);
    CHECK_EQ_INT(loop_wait(l, 0), 0); /* one edge, one call */
    CHECK_EQ_INT(seen.calls, 1);
    CHECK_EQ_INT(loop_modify(l, &w, EPOLLIN | EPOLLET), 0); /* re-armed: reported again */
    CHECK_EQ_INT(loop_wait(l, 1000), 1);
    CHECK_EQ_INT(seen.calls, 2);
    /* Adding a watch already added changes its events. */
    CHECK_EQ_INT(loop_add(l, &w, EPOLLIN | EPOLLET), 0);
    CHECK_EQ_INT(loop_wait(l, 1000), 1);
    CHECK_EQ_INT(seen.calls, 3);
    loop_remove(l, &w);
    close(p[0]);
    close(p[1]);
    loop_destroy(l);
}

static void test_bad_fd_refused(void)
{
    struct loop *l = loop_create();
    CHECK(l != NULL);
    struct loop_watch w;
    loop_watch_init(&w, -1, NULL, NULL);
    CHECK_EQ_INT(loop_add(l, &w, EPOLLIN), -1);
    CHECK_EQ_INT(loop_add(NULL, &w, EPOLLIN), -1);
    loop_remove(l, &w);
    loop_destroy(l);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"callback_with_events_and_pointer", test_callback_with_events_and_pointer},
    {"no_callback_only_wakes", test_no_callback_only_wakes},
    {"edge_triggered_rearm", test_edge_triggered_rearm},
    {"bad_fd_refused", test_bad_fd_refused},
};
/* clang-format on */

CHECK_MAIN("test_loop", cases)
