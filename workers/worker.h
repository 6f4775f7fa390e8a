/* The worker process: receives chunks of jobs, runs each through the ops table, sends the
 * results back. It is started by the pool (posix_spawn of this binary with --worker) and
 * knows nothing of HTTP. */
#ifndef BATCHD_WORKERS_WORKER_H
#define BATCHD_WORKERS_WORKER_H

/* Runs the worker loop on socket SOCK with control page CTL_FD until the server closes the
 * socket or says quit. PARENT is the server's pid (the worker exits if it is gone).
 * Returns the process exit status. */
int worker_main(int sock, int ctl_fd, long parent);

#endif
