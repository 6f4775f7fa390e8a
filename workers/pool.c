/* Worker processes. They are started with posix_spawn of this very binary (/proc/self/exe
 * --worker): the server is multithreaded by then (libmicrohttpd may run threads, sanitizers
 * do), and a plain fork() of a threaded process may only call async-signal-safe functions
 * until exec — a lock held by another thread at fork time stays held forever in the child,
 * and the child would inherit every client socket. posix_spawn execs at once, with only the
 * worker's socket (fd 3) and control page (fd 4) kept open, and it needs no fork-server
 * process that could itself die.
 *
 * A worker's limits and folders reach it as the CONFIG frame (frames.h), written on its
 * socket before it is even spawned, so it is the first frame it reads. Not argv: the frame
 * has one encoder and one bounds-checked decoder (unit-tested and fuzzed with the others),
 * no numbers to reparse from text, no folder names in every `ps` line, and the command line
 * stays the same for profilers (BATCHD_WORKER_EXE below). Not the environment: the server
 * sets nothing process-wide, and a worker reads its limits once, not per job. */
#include "pool.h"

#include "frames.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct pool_slot {
    pid_t pid;
    int sock;
    int ctl_fd; /* persistent memfd of the control page, reused across respawns */
    struct ipc_control *ctl;
    uint64_t started_ns;
};

struct pool {
    int n;
    struct pool_slot *slots;
    struct buf config; /* the CONFIG frame every worker is given, encoded once */
};

struct pool *pool_create(int n, const struct worker_config *cfg)
{
    struct pool *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    buf_init(&p->config, IPC_MAX_FRAME);
    p->slots = calloc((size_t)n, sizeof *p->slots);
    if (p->slots == NULL || frames_config_encode(&p->config, cfg) != 0) {
        buf_cleanup(&p->config);
        free(p->slots);
        free(p);
        return NULL;
    }
    p->n = n;
    for (int i = 0; i < n; i++) {
        p->slots[i].pid = -1;
        p->slots[i].sock = -1;
        p->slots[i].ctl_fd = -1;
    }
    for (int i = 0; i < n; i++) {
        struct pool_slot *s = &p->slots[i];
        s->ctl_fd = memfd_create("batchd-control", MFD_CLOEXEC);
        if (s->ctl_fd < 0 || ftruncate(s->ctl_fd, sizeof(struct ipc_control)) != 0) {
            pool_destroy(p);
            return NULL;
        }
        void *m = mmap(NULL, sizeof(struct ipc_control), PROT_READ | PROT_WRITE, MAP_SHARED,
                       s->ctl_fd, 0);
        if (m == MAP_FAILED) {
            pool_destroy(p);
            return NULL;
        }
        s->ctl = m;
    }
    return p;
}

void pool_destroy(struct pool *p)
{
    if (p == NULL) {
        return;
    }
    for (int i = 0; i < p->n; i++) {
        pool_kill(p, i);
        pool_reap(p, i);
        if (p->slots[i].ctl != NULL) {
            munmap(p->slots[i].ctl, sizeof(struct ipc_control));
        }
        if (p->slots[i].ctl_fd >= 0) {
            close(p->slots[i].ctl_fd);
        }
    }
    free(p->slots);
    buf_cleanup(&p->config);
    free(p);
}

/* The server blocks SIGTERM/SIGINT for its signalfd, and a blocked mask survives exec:
 * give workers a clean one. Their own process group keeps a terminal's Ctrl-C (sent to the
 * foreground group) for the server, which then drains them in order. */
static void pool_spawn_attr(posix_spawnattr_t *attr)
{
    posix_spawnattr_init(attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigmask(attr, &none);
    posix_spawnattr_setsigdefault(attr, &defaults);
    posix_spawnattr_setpgroup(attr, 0);
    posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                       POSIX_SPAWN_SETPGROUP);
}

int pool_spawn(struct pool *p, int slot)
{
    struct pool_slot *s = &p->slots[slot];
    int sv[2] = {-1, -1};
    int child = -1;
    int rc = 0;
    posix_spawn_file_actions_t fa;
    int fa_ok = 0;
    if (s->pid > 0) {
        return -EBUSY;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return -errno;
    }
    /* The CONFIG frame first, while the socket still blocks: a few KiB in a fresh socket's
     * buffer, so this never waits, and no RUN can come before it. */
    if (ipc_send_all(sv[0], buf_data(&p->config), buf_len(&p->config), -1) != 0) {
        rc = -errno;
        goto out;
    }
    /* Move the child's end above the fds it is dup'ed onto, so that the dup2 actions
     * below cannot clobber one another. */
    child = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
    if (child < 0) {
        rc = -errno;
        goto out;
    }
    int ctl = fcntl(s->ctl_fd, F_DUPFD_CLOEXEC, 10);
    if (ctl < 0) {
        rc = -errno;
        goto out;
    }
    memset(s->ctl, 0, sizeof *s->ctl);
    char parent[32];
    snprintf(parent, sizeof parent, "%ld", (long)getpid());
    char *argv[] = {"batchd-worker", "--worker", parent, NULL};
    if (posix_spawn_file_actions_init(&fa) != 0) {
        close(ctl);
        rc = -ENOMEM;
        goto out;
    }
    fa_ok = 1;
    posix_spawn_file_actions_adddup2(&fa, child, 3);
    posix_spawn_file_actions_adddup2(&fa, ctl, 4);
    posix_spawn_file_actions_addclosefrom_np(&fa, 5);
    posix_spawnattr_t attr;
    pool_spawn_attr(&attr);
    pid_t pid;
    /* BATCHD_WORKER_EXE names the binary for profilers that run the server under their own
     * loader (valgrind: /proc/self/exe is the tool there, not batchd). */
    const char *exe = getenv("BATCHD_WORKER_EXE");
    if (exe == NULL || exe[0] == '\0') {
        exe = "/proc/self/exe";
    }
    int err = posix_spawn(&pid, exe, &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    close(ctl);
    if (err != 0) {
        rc = -err;
        goto out;
    }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    int sndbuf = 4 * 1024 * 1024;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    s->pid = pid;
    s->sock = sv[0];
    sv[0] = -1;
    s->started_ns = ipc_now_ns();
out:
    if (fa_ok) {
        posix_spawn_file_actions_destroy(&fa);
    }
    if (sv[0] >= 0) {
        close(sv[0]);
    }
    close(sv[1]);
    if (child >= 0) {
        close(child);
    }
    return rc;
}

void pool_quit(struct pool *p, int slot)
{
    struct pool_slot *s = &p->slots[slot];
    if (s->sock < 0) {
        return;
    }
    struct ipc_header h = {IPC_MAGIC, IPC_QUIT, 0, 0};
    /* Best effort: when the socket is full the worker is busy and will be killed by the
     * caller's grace timer instead. */
    ipc_send_some(s->sock, &h, sizeof h, -1);
}

void pool_kill(struct pool *p, int slot)
{
    if (p->slots[slot].pid > 0) {
        kill(p->slots[slot].pid, SIGKILL);
    }
}

int pool_reap(struct pool *p, int slot)
{
    struct pool_slot *s = &p->slots[slot];
    if (s->sock >= 0) {
        close(s->sock);
        s->sock = -1;
    }
    if (s->pid <= 0) {
        return -1;
    }
    int status = 0;
    /* The worker's socket hit EOF, so it is exiting; if it somehow lingers, it must not
     * keep the slot: kill it before waiting. */
    pid_t r;
    for (int tries = 0;; tries++) {
        r = waitpid(s->pid, &status, tries < 200 ? WNOHANG : 0);
        if (r != 0 || tries >= 200) {
            break;
        }
        if (tries == 100) {
            kill(s->pid, SIGKILL);
        }
        usleep(500);
    }
    if (r < 0) {
        status = -1;
    }
    s->pid = -1;
    return status;
}

int pool_size(const struct pool *p)
{
    return p->n;
}

int pool_fd(const struct pool *p, int slot)
{
    return p->slots[slot].sock;
}

pid_t pool_pid(const struct pool *p, int slot)
{
    return p->slots[slot].pid;
}

const struct ipc_control *pool_control(const struct pool *p, int slot)
{
    return p->slots[slot].ctl;
}

uint64_t pool_started_ns(const struct pool *p, int slot)
{
    return p->slots[slot].started_ns;
}

const char *pool_describe_status(int status, char *out, size_t outlen)
{
    if (status == -1) {
        return "unknown";
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *abbrev = sigabbrev_np(sig);
        if (abbrev != NULL) {
            snprintf(out, outlen, "SIG%s", abbrev);
        } else {
            snprintf(out, outlen, "signal %d", sig);
        }
        return out;
    }
    if (WIFEXITED(status)) {
        snprintf(out, outlen, "exit status %d", WEXITSTATUS(status));
        return out;
    }
    return "unknown";
}
