/* The worker process: receives chunks of jobs, runs each through the ops table, sends the
 * results back. It is started by the pool (posix_spawn of this binary with --worker) and
 * knows nothing of HTTP. */
#ifndef BATCHD_WORKERS_WORKER_H
#define BATCHD_WORKERS_WORKER_H

#include "../api/job.h"

#include <limits.h>
#include <stdint.h>

/* What a worker is configured with, once, at spawn: the server fills it from its own config
 * (dispatch_config.worker), the pool writes it as the CONFIG frame (frames.h) on the
 * worker's socket before any RUN, and the worker applies it before its loop. */
struct worker_config {
    uint64_t memory_bytes;     /* RLIMIT_AS of the worker; 0 = none */
    struct job_limits limits;  /* handed to every job (no_openat2 is not sent: a test hook) */
    char data_dir[PATH_MAX];   /* --data-dir, "" when none */
    char output_dir[PATH_MAX]; /* --output-dir, "" when none */
    char modules[8192];        /* --module paths, ':'-separated, "" when none */
};

/* Reads its CONFIG frame from socket SOCK, applies it, then runs the worker loop on SOCK
 * with control page CTL_FD until the server closes the socket or says quit. PARENT is the
 * server's pid (the worker exits if it is gone). Returns the process exit status. */
int worker_main(int sock, int ctl_fd, long parent);

#endif
