/* The worker processes: spawning, killing and reaping them. Only this module forks, kills
 * and waits. It does not schedule jobs (that is dispatch.c); it keeps one slot per worker. */
#ifndef BATCHD_WORKERS_POOL_H
#define BATCHD_WORKERS_POOL_H

#include "ipc.h"
#include "worker.h"

#include <sys/types.h>

struct pool;

/* Makes a pool of N slots (none started) whose workers are each given CFG (borrowed for the
 * call) at spawn. Returns new (free with pool_destroy) or NULL. */
struct pool *pool_create(int n, const struct worker_config *cfg);

/* Kills every worker, waits for them and frees the pool. NULL is a no-op. */
void pool_destroy(struct pool *p);

/* Starts a worker in SLOT (which must be empty). Returns 0, or a negative errno. */
int pool_spawn(struct pool *p, int slot);

/* Asks the worker in SLOT to exit when its current chunk is done (recycling, drain). */
void pool_quit(struct pool *p, int slot);

/* Sends SIGKILL to the worker in SLOT, if any. */
void pool_kill(struct pool *p, int slot);

/* Closes the slot's socket and waits for its process (which must be dead or dying). Returns
 * the wait status (as waitpid gives it), or -1 if the slot was empty. */
int pool_reap(struct pool *p, int slot);

int pool_size(const struct pool *p);
/* The socket of the worker in SLOT (nonblocking), or -1 when the slot is empty. */
int pool_fd(const struct pool *p, int slot);
pid_t pool_pid(const struct pool *p, int slot);
/* The control page of SLOT: borrowed, valid for the pool's life. */
const struct ipc_control *pool_control(const struct pool *p, int slot);
/* Monotonic ns when the slot's worker was started; jobs it ran (the caller counts). */
uint64_t pool_started_ns(const struct pool *p, int slot);

/* "SIGKILL", "exit status 3", ... for a wait status: a static string or OUT. */
const char *pool_describe_status(int status, char *out, size_t outlen);

#endif
