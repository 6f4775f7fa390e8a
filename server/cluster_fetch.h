/* A stored batch's upload read back from the store without blocking the loop (cluster.c's
 * batches). Private to server/. */
#ifndef BATCHD_SERVER_CLUSTER_FETCH_H
#define BATCHD_SERVER_CLUSTER_FETCH_H

struct store;
struct upload;

/* The outcome: U (taken over: upload_destroy it) is the rebuilt upload, or NULL: with IO set
 * the store could not be read now (try again), else the batch cannot be rebuilt. */
typedef void cfetch_done_fn(void *arg, struct upload *u, int io);

/* Starts reading batch ID back; DONE runs once, later (or at once, from a store whose reads
 * do not wait). Returns 0, or -1 (DONE will not run: try again). */
int cluster_fetch(struct store *st, const char *id, cfetch_done_fn *done, void *arg);

#endif
