/* The server's start and stop order (server.c): what runs before any thread, the workers,
 * the HTTP listener, the loop, the drain, and the cleanup in reverse. */
#ifndef BATCHD_SERVER_SERVER_H
#define BATCHD_SERVER_SERVER_H

struct server;

/* Starts the workers and the HTTP listener and serves until drained or stopped. Returns the
 * process exit status. S is zeroed but for its config, with sigfd -1. */
int server_run(struct server *s);

/* Stops everything server_run started, in reverse order (also after a failed start). */
void server_cleanup(struct server *s);

#endif
