/* The HTTP side (http.c): the libmicrohttpd daemon in external epoll mode, its access handler
 * and route table, and the MHD-specific share of each loop turn. Private to server/. */
#ifndef BATCHD_SERVER_HTTP_H
#define BATCHD_SERVER_HTTP_H

#include <stdint.h>

struct server;

/* Starts the daemon on --listen. Returns 0, or -1 (logged). */
int http_start(struct server *s);
/* Stops it (resume suspended connections first: stream_cut_all). Safe when not started. */
void http_stop(struct server *s);
/* The epoll fd of the daemon, to watch in the loop, or -1. */
int http_epoll_fd(const struct server *s);
/* Milliseconds until MHD wants to run (-1: no limit; at most 1000). */
int http_timeout_ms(const struct server *s);
/* One turn of MHD: runs it (and the dispatcher after it) until no resumed connection waits
 * and the listen socket is re-armed, then sheds a client accept() could not take. */
void http_run(struct server *s);
/* Runs MHD until every stream is gone or UNTIL_NS (ipc_now_ns) passes: after stream_cut_all,
 * it sends what is buffered and closes the cut connections. */
void http_flush(struct server *s, uint64_t until_ns);

#endif
