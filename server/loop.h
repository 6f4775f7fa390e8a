/* The server's event loop: run it, clean it up. */
#ifndef BATCHD_SERVER_LOOP_H
#define BATCHD_SERVER_LOOP_H

struct server;

/* Starts the workers and the HTTP listener and serves until drained or stopped. Returns the
 * process exit status. */
int loop_run(struct server *s);

/* Stops everything loop_run started. */
void loop_cleanup(struct server *s);

#endif
