/* Worker slots: the dispatcher's side of each worker. A chunk goes out as one RUN frame
 * (sent as the socket takes it, with the batch's blob fd on its first byte); RESULTS frames
 * come back and their records go to the batch in order. A worker that dies, overruns its
 * job's timeout or stops answering is killed and replaced: the job it was running fails,
 * the rest of its chunk is sent again. A busy worker that shows no sign of life while no
 * job runs (it took none of the chunk's bytes, started no job, sent no result) for
 * SLOT_STALL_NS is stopped or wedged: it is killed the same way, and as no job of its chunk
 * is running, none fails; they all run elsewhere. */
#include "slot.h"

#include "../api/errors.h"
#include "dispatch_internal.h"
#include "frames.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* A busy worker between jobs answers within microseconds: it reads its chunk, starts the
 * next job or sends results, each of which the server sees (bytes taken, the control page's
 * job start, a RESULTS frame). One second without any of them is a stopped (SIGSTOP) or
 * wedged process, whose chunk would otherwise never start and never time out. A worker that
 * has not yet reached its loop (its pid not on the control page) gets longer: exec and a
 * sanitizer's start-up on a loaded machine may take seconds. Fixed, not the batch's
 * timeout_ms: they bound different things, and a batch without a timeout must not hang. */
#define SLOT_STALL_NS 1000000000u
#define SLOT_STARTUP_STALL_NS 10000000000u

/* Whose RESULTS frame is being decoded. */
struct slot_rx {
    struct dispatch *d;
    int i;
};

void slot_init(struct slot *s)
{
    buf_init(&s->in, IPC_MAX_FRAME + 1024 * 1024);
    buf_init(&s->out, IPC_MAX_FRAME);
    s->out_fd = -1;
}

void slot_cleanup(struct slot *s)
{
    buf_cleanup(&s->in);
    buf_cleanup(&s->out);
    free(s->jobs);
    free(s->ops);
}

static int slot_reserve_jobs(struct slot *s, size_t n)
{
    if (n <= s->jobs_cap) {
        return 0;
    }
    uint64_t *p = realloc(s->jobs, n * sizeof *p);
    if (p == NULL) {
        return -1;
    }
    s->jobs = p;
    const struct op **o = realloc(s->ops, n * sizeof *o);
    if (o == NULL) {
        return -1;
    }
    s->ops = o;
    s->jobs_cap = n;
    return 0;
}

static void slot_watch(struct dispatch *d, int i, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)i};
    epoll_ctl(d->epfd, EPOLL_CTL_MOD, pool_fd(d->pool, i), &ev);
}

void slot_flush(struct dispatch *d, int i)
{
    struct slot *s = &d->slots[i];
    int fd = pool_fd(d->pool, i);
    while (s->out_off < buf_len(&s->out)) {
        long w = ipc_send_some(fd, buf_data(&s->out) + s->out_off, buf_len(&s->out) - s->out_off,
                               s->out_off == 0 ? s->out_fd : -1);
        if (w < 0) {
            slot_fail(d, i, -BATCHD_E_WORKER_CRASHED, NULL);
            return;
        }
        if (w == 0) {
            slot_watch(d, i, 1);
            return;
        }
        s->out_off += (size_t)w;
        s->alive_ns = ipc_now_ns(); /* the worker takes its chunk */
    }
    buf_reset(&s->out);
    s->out_off = 0;
    slot_watch(d, i, 0);
}

void slot_spawn(struct dispatch *d, int i)
{
    struct slot *s = &d->slots[i];
    uint64_t now = ipc_now_ns();
    if (d->draining || now < s->spawn_retry_ns) {
        return;
    }
    if (pool_spawn(d->pool, i) != 0) {
        s->spawn_retry_ns = now + 100000000u; /* try again in 100 ms */
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    epoll_ctl(d->epfd, EPOLL_CTL_ADD, pool_fd(d->pool, i), &ev);
    if (d->cfg.on_worker != NULL) {
        struct dispatch_worker_event wev = {
            .slot = i, .pid = (long)pool_pid(d->pool, i), .event = "start"};
        d->cfg.on_worker(d->cfg.ud, &wev);
    }
    buf_reset(&s->in);
    s->state = SLOT_IDLE;
    s->jobs_done = 0;
}

/* The chunk of slot I is over (finished or its worker died): release the batch. */
static void slot_release_chunk(struct dispatch *d, int i)
{
    struct slot *s = &d->slots[i];
    struct dispatch_batch *b = s->batch;
    s->batch = NULL;
    s->njobs = s->ndone = 0;
    if (b == NULL) {
        return;
    }
    b->inflight_chunks--;
    if (b->cancelled) {
        batch_maybe_free(b);
    } else {
        batch_pump(b);
    }
    (void)d;
}

/* ---------------------------------------------------------------- sending chunks */

/* The encoder's view of job INDEX of batch UD. */
static void slot_job_at(void *ud, uint64_t index, struct frames_job *job)
{
    const struct dispatch_batch *b = ud;
    struct dispatch_job dj = {0};
    b->desc.job_at(b->desc.ud, index, &dj);
    job->op = dj.op;
    job->value = dj.value;
    job->has_int = dj.has_int;
    job->ival = dj.ival;
    job->params = dj.params;
    job->name = dj.name;
    job->blob_off = dj.blob_off;
    job->blob_len = dj.blob_len;
}

/* A chunk was just given to slot I: its stall clock starts now. */
static void slot_mark_assigned(struct dispatch *d, int i)
{
    struct slot *s = &d->slots[i];
    const struct ipc_control *ctl = pool_control(d->pool, i);
    s->alive_ns = ipc_now_ns();
    s->seen_started_ns = atomic_load(&ctl->job_started_ns);
    s->announced = atomic_load(&ctl->pid) != 0;
}

size_t slot_send_chunk(struct dispatch *d, int i, struct dispatch_batch *b)
{
    struct slot *s = &d->slots[i];
    if (slot_reserve_jobs(s, b->chunksize) != 0) {
        return 0;
    }
    size_t n = batch_take_jobs(b, s->jobs, b->chunksize);
    const struct frames_run_desc desc = {
        .flags = (b->desc.want_binary ? FRAMES_RUN_WANT_BINARY : 0) |
                 (b->desc.on_block != NULL ? FRAMES_RUN_BLOCK : 0),
        .batch = b->serial,
        .timeout_ms = b->desc.timeout_ms,
        .params = b->desc.params,
        .ints = b->desc.ints,
        .ints_op = b->desc.ints_op,
        .job_at = slot_job_at,
        .ud = b,
    };
    size_t sent = n > 0 ? frames_run_encode(&s->out, &desc, s->jobs, n, s->ops) : 0;
    for (size_t k = sent; k < n; k++) {
        batch_retry_push(b, s->jobs[k]); /* past the frame's cap: the next chunk's */
    }
    s->out_off = 0;
    if (sent == 0) {
        buf_reset(&s->out);
        return 0;
    }
    s->batch = b;
    s->njobs = sent;
    s->ndone = 0;
    s->state = SLOT_BUSY;
    s->out_fd = b->desc.blob_fd;
    slot_mark_assigned(d, i);
    b->inflight_jobs += sent;
    b->inflight_chunks++;
    if (d->cfg.on_worker != NULL) {
        struct dispatch_worker_event ev = {.slot = i,
                                           .pid = (long)pool_pid(d->pool, i),
                                           .event = "chunk",
                                           .first_job = s->jobs[0],
                                           .njobs = sent};
        d->cfg.on_worker(d->cfg.ud, &ev);
    }
    slot_flush(d, i);
    return sent;
}

/* ---------------------------------------------------------------- failures */

/* What the control page said when a worker was lost. */
struct slot_last {
    int running;
    uint64_t at_fault, started_ns;
    long pid;
    const char *how; /* how it ended */
};

/* Answers what is left of slot I's chunk after its worker was lost: the job it was running
 * fails with CAUSE_ERR, the others are sent again. */
static void slot_fail_chunk(struct dispatch *d, int i, int cause_err, const char *cause,
                            const struct slot_last *last)
{
    struct slot *s = &d->slots[i];
    struct dispatch_batch *b = s->batch;
    for (size_t k = s->ndone; b != NULL && k < s->njobs; k++) {
        uint64_t idx = s->jobs[k];
        b->inflight_jobs--;
        if (!last->running || idx != last->at_fault) {
            batch_requeue(b, idx);
            continue;
        }
        char msg[256];
        if (cause_err == -BATCHD_E_WORKER_CRASHED) {
            snprintf(msg, sizeof msg, "worker %d (pid %ld) died with %s while running this job", i,
                     last->pid, last->how);
        } else {
            snprintf(msg, sizeof msg, "%s", cause);
        }
        struct job_result r = {
            .index = idx,
            .err = cause_err,
            .text = msg,
            .text_len = strlen(msg),
            .worker = i,
            .start_ns = last->started_ns,
            .end_ns = ipc_now_ns(),
        };
        batch_take_result(b, &r);
    }
}

void slot_fail(struct dispatch *d, int i, int cause_err, const char *cause)
{
    struct slot *s = &d->slots[i];
    const struct ipc_control *ctl = pool_control(d->pool, i);
    struct slot_last last = {
        .running = (int)atomic_load(&ctl->running),
        .at_fault = atomic_load(&ctl->job_index),
        .started_ns = atomic_load(&ctl->job_started_ns),
        .pid = (long)pool_pid(d->pool, i),
    };
    int fd = pool_fd(d->pool, i);
    if (fd >= 0) {
        epoll_ctl(d->epfd, EPOLL_CTL_DEL, fd, NULL);
    }
    if (cause_err != -BATCHD_E_WORKER_CRASHED || cause != NULL) {
        pool_kill(d->pool, i);
    }
    int status = pool_reap(d->pool, i);
    char sbuf[64];
    const char *how = pool_describe_status(status, sbuf, sizeof sbuf);
    last.how = how;
    const char *why = "crash";
    if (s->state == SLOT_RETIRING && status == 0) {
        /* A worker asked to quit: recycled, or let go by a drain (not a restart). */
        why = d->draining ? "drain" : "recycle";
        d->stats.restarts_recycle += !d->draining;
    } else if (cause_err == -BATCHD_E_TIMEOUT) {
        why = "timeout";
        d->stats.restarts_timeout++;
    } else {
        d->stats.restarts_crash++;
    }
    if (d->cfg.on_worker != NULL) {
        struct dispatch_worker_event ev = {
            .slot = i, .pid = last.pid, .event = "exit", .cause = why, .status = how};
        d->cfg.on_worker(d->cfg.ud, &ev);
    }
    slot_fail_chunk(d, i, cause_err, cause, &last);
    s->state = SLOT_EMPTY;
    s->spawn_retry_ns = 0;
    buf_reset(&s->out);
    s->out_off = 0;
    slot_release_chunk(d, i);
    slot_spawn(d, i);
}

void slot_check_time(struct dispatch *d, int i, uint64_t now)
{
    struct slot *s = &d->slots[i];
    const struct ipc_control *ctl = pool_control(d->pool, i);
    uint64_t started = atomic_load(&ctl->job_started_ns);
    if (atomic_load(&ctl->running)) {
        s->alive_ns = now;
        uint64_t timeout_ms = s->batch != NULL ? s->batch->desc.timeout_ms : 0;
        if (timeout_ms > 0 && now > started && now - started > timeout_ms * 1000000u) {
            char msg[128];
            snprintf(msg, sizeof msg, "the job ran past its timeout of %llu ms",
                     (unsigned long long)timeout_ms);
            slot_fail(d, i, -BATCHD_E_TIMEOUT, msg);
        }
        return;
    }
    if (started != s->seen_started_ns || (!s->announced && atomic_load(&ctl->pid) != 0)) {
        s->seen_started_ns = started; /* a job ran since the last look */
        s->announced = atomic_load(&ctl->pid) != 0;
        s->alive_ns = now;
        return;
    }
    uint64_t bound = s->announced ? SLOT_STALL_NS : SLOT_STARTUP_STALL_NS;
    if (now > s->alive_ns && now - s->alive_ns > bound) {
        char msg[128];
        snprintf(msg, sizeof msg, "the worker did not take up its chunk within %llu ms",
                 (unsigned long long)(bound / 1000000u));
        slot_fail(d, i, -BATCHD_E_TIMEOUT, msg);
    }
}

/* ---------------------------------------------------------------- results */

/* A block record of slot I: COUNT successes from its index, their NDJSON lines. */
static int slot_take_block(struct dispatch *d, int i, const struct frames_result *fr)
{
    struct slot *s = &d->slots[i];
    uint64_t count = fr->block_count;
    struct dispatch_batch *b = s->batch;
    if (b == NULL || b->desc.on_block == NULL || count > s->njobs - s->ndone) {
        return -1;
    }
    for (uint64_t k = 0; k < count; k++) {
        if (s->jobs[s->ndone + k] != fr->index + k) {
            return -1;
        }
    }
    const struct op *op = s->ops[s->ndone];
    s->ndone += count;
    s->jobs_done += count;
    b->inflight_jobs -= count;
    if (!b->cancelled && op != NULL) {
        cost_add(d->cost, op, count, fr->busy_ns);
    }
    batch_take_block(b, fr->index, count, fr->text, fr->text_len, fr->busy_ns);
    return 0;
}

/* One record of a RESULTS frame of slot UD: the next job of its chunk, in order. Returns 0,
 * or -1 when it is not what the worker should have sent. */
static int slot_take_record(void *ud, const struct frames_result *fr)
{
    struct dispatch *d = ((struct slot_rx *)ud)->d;
    int i = ((struct slot_rx *)ud)->i;
    struct slot *s = &d->slots[i];
    if (fr->block_count > 0) {
        return slot_take_block(d, i, fr);
    }
    if (s->batch == NULL || s->ndone >= s->njobs || s->jobs[s->ndone] != fr->index) {
        return -1;
    }
    struct result_blob blobs[JOB_MAX_BLOBS];
    for (uint32_t j = 0; j < fr->nblobs; j++) {
        blobs[j].name = fr->blobs[j].name;
        blobs[j].data = fr->blobs[j].data;
        blobs[j].len = fr->blobs[j].len;
    }
    struct job_result res = {
        .index = fr->index,
        .err = fr->err == 0 || batchd_err_is_per_job(fr->err) ? fr->err : -BATCHD_E_INTERNAL,
        .text = fr->text,
        .text_len = fr->text_len,
        .blobs = blobs,
        .nblobs = fr->nblobs,
        .worker = i,
        .start_ns = fr->start_ns,
        .end_ns = fr->end_ns,
    };
    s->ndone++;
    s->jobs_done++;
    struct dispatch_batch *b = s->batch;
    b->inflight_jobs--;
    const struct op *op = s->ops[s->ndone - 1];
    if (!b->cancelled && op != NULL && res.end_ns > res.start_ns) {
        cost_add(d->cost, op, 1, res.end_ns - res.start_ns);
    }
    batch_take_result(b, &res);
    return 0;
}

/* Takes one RESULTS body from slot I, then frees or retires the slot when its chunk is
 * done. Returns 0, or -1 if the frame is malformed. */
static int slot_take_results(struct dispatch *d, int i, const uint8_t *body, size_t len)
{
    struct slot *s = &d->slots[i];
    struct slot_rx rx = {d, i};
    if (frames_results_decode(body, len, slot_take_record, &rx) != 0) {
        return -1;
    }
    if (s->batch != NULL && s->ndone == s->njobs) {
        s->state = SLOT_IDLE;
        slot_release_chunk(d, i);
        if (d->cfg.recycle_after > 0 && s->jobs_done >= d->cfg.recycle_after) {
            s->state = SLOT_RETIRING;
            pool_quit(d->pool, i);
        } else if (d->draining && d->ring == NULL) {
            /* Draining and no batch left to serve: this worker may go. While batches
             * remain, it keeps working for them (they must finish with their summary). */
            s->state = SLOT_RETIRING;
            pool_quit(d->pool, i);
        }
    } else if (s->batch != NULL && s->ndone < s->njobs) {
        batch_pump(s->batch);
    }
    return 0;
}

void slot_read(struct dispatch *d, int i)
{
    struct slot *s = &d->slots[i];
    for (;;) {
        int fd = -1;
        long n = ipc_recv_some(pool_fd(d->pool, i), &s->in, &fd);
        if (fd >= 0) {
            close(fd); /* workers never pass fds up */
        }
        if (n == 0) {
            slot_fail(d, i, -BATCHD_E_WORKER_CRASHED, NULL);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                break;
            }
            slot_fail(d, i, -BATCHD_E_WORKER_CRASHED, NULL);
            return;
        }
        s->alive_ns = ipc_now_ns(); /* results: the worker is alive */
        /* Every whole frame in the buffer, then one move of what is left (moving the rest
         * down after each frame cost a copy of the buffer per frame). */
        size_t off = 0;
        for (;;) {
            struct ipc_header h;
            long fl = ipc_frame_complete(buf_data(&s->in) + off, buf_len(&s->in) - off, &h);
            if (fl == 0) {
                break;
            }
            if (fl < 0 || h.type != IPC_RESULTS ||
                slot_take_results(d, i, (const uint8_t *)buf_data(&s->in) + off + sizeof h,
                                  h.len) != 0) {
                slot_fail(d, i, -BATCHD_E_WORKER_CRASHED, "the worker sent a malformed frame");
                return;
            }
            off += (size_t)fl;
        }
        buf_consume(&s->in, off);
        if (s->state == SLOT_EMPTY) {
            return;
        }
    }
}
