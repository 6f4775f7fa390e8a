/* Cluster mode on the server side (SPEC §9): this replica's share of the stored batches. Its
 * idle workers claim chunks of any replica's batches from the store (store_claim), run them
 * on the dispatcher, record each job's result (exactly once over the cluster: the store's
 * gate), and the replica that finishes a batch's last chunk records its summary. Only with
 * --redis; without it nothing here runs. server.c calls these. Private to server/. */
#ifndef BATCHD_SERVER_CLUSTER_H
#define BATCHD_SERVER_CLUSTER_H

#include <stdint.h>

struct server;

/* Each loop turn: asks the store for as many chunks as there are idle workers, and hands
 * chunks that wait for room to the dispatcher. */
void cluster_pump(struct server *s);

/* A cancel of batch ID was recorded (by any replica): its chunks here stop (their running
 * jobs fail cancelled, the others at once). */
void cluster_on_cancel(struct server *s, const char *id);

/* The server stops (before the dispatcher goes): chunks that run are given up unacknowledged
 * (another replica, or this one after a restart, runs them after the claim timeout); their
 * recorded results stay. Those finishing in the store are answered by store_close. */
void cluster_stop_all(struct server *s);

/* After store_close: frees what is left. */
void cluster_free(struct server *s);

#endif
