/* Stored batches on the server side (SPEC §8): batches that outlive their connection. It runs
 * the batches of the store (async or keyed ones, and the unfinished ones found at start) on
 * the dispatcher, records their results in the store, and wakes the streams that follow
 * them. server.c opens the store and calls these; the §8 routes live in batches_routes.c.
 * Private to server/. */
#ifndef BATCHD_SERVER_STORED_H
#define BATCHD_SERVER_STORED_H

#include <stdint.h>

struct server;

/* The store's on_progress callback (ARG is the server): results of batch ID are committed
 * up to COMMITTED_SEQ; followers of ID are woken. */
void stored_on_progress(void *arg, const char *id, uint64_t committed_seq);

/* After the store and the dispatcher exist: carries on every unfinished batch of the store
 * (jobs without a recorded result run again; a batch whose cancel was recorded ends as
 * cancelled). Returns 0, or -1 when the store cannot be read. */
int stored_resume(struct server *s);

/* The server stops: the dispatcher batches of stored batches are dropped without recording
 * anything (their jobs without results run again on the next start) and their handles are
 * given back. Call before store_close. */
void stored_stop_all(struct server *s);

/* Stored batches still running (a drain waits for none of them: they carry on after a
 * restart). */
int stored_running(const struct server *s);

#endif
