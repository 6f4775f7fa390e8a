/* The dispatcher. Data flow: a batch's jobs are cut into chunks (auto size from the measured
 * cost per job of each op) and sent to idle workers, taking batches in turn (round robin), so
 * a small batch behind a huge one waits for at most one chunk per worker. Results come back
 * per job; in input order they wait in a ring of WINDOW slots, and no job past
 * (next to deliver + WINDOW) is sent out, which bounds the memory of a batch whose client
 * reads slowly. A worker that dies or overruns its job's timeout is killed and replaced;
 * the job it was running fails, the rest of its chunk is queued again. A busy worker that
 * shows no sign of life while no job runs (it took none of the chunk's bytes, started no
 * job, sent no result) for DISPATCH_STALL_NS is stopped or wedged: it is killed the same
 * way, and as no job of its chunk is running, none fails; they all run elsewhere. */
#include "dispatch.h"

#include "../api/errors.h"
#include "ipc.h"
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define DISPATCH_MAX_WORKERS 1024
#define DISPATCH_DEFAULT_TARGET_NS 2000000u
#define DISPATCH_PER_JOB_OVERHEAD_NS 150u
#define DISPATCH_MIN_WINDOW 256u
#define DISPATCH_MAX_WINDOW (1u << 17) /* bounds a batch's held results: ~8 MiB of slots */
/* Cancelled results synthesised per pump: a deadline on a huge batch must not flood the
 * owner's buffers in one go. */
#define DISPATCH_SYNTH_PER_PUMP 4096u
/* Bytes of results a batch may hold out of order (input order) before it stops sending
 * jobs: the count window alone would let 256 large images pile up behind a slow first one. */
#define DISPATCH_MAX_HELD_BYTES (64u * 1024 * 1024)
/* A busy worker between jobs answers within microseconds: it reads its chunk, starts the
 * next job or sends results, each of which the server sees (bytes taken, the control page's
 * job start, a RESULTS frame). One second without any of them is a stopped (SIGSTOP) or
 * wedged process, whose chunk would otherwise never start and never time out. A worker that
 * has not yet reached its loop (its pid not on the control page) gets longer: exec and a
 * sanitizer's start-up on a loaded machine may take seconds. Fixed, not the batch's
 * timeout_ms: they bound different things, and a batch without a timeout must not hang. */
#define DISPATCH_STALL_NS 1000000000u
#define DISPATCH_STARTUP_STALL_NS 10000000000u

struct held {
    int ready;
    uint64_t count; /* > 0: a block of COUNT results from this index (text = its lines) */
    int err;
    int worker;
    char *text;
    size_t text_len;
    struct dispatch_blob *blobs;
    size_t nblobs;
    size_t bytes; /* text and blob bytes, counted in the batch's held_bytes */
    uint64_t start_ns, end_ns;
};

struct dispatch_batch {
    struct dispatch *d;
    struct dispatch_batch_desc desc;
    struct dispatch_batch *prev, *next; /* ring of live batches */
    uint64_t next_job;                  /* first index never sent */
    uint64_t *retry;                    /* indices to send again (their worker died) */
    size_t nretry, retry_cap;
    uint64_t delivered;
    size_t held_bytes; /* sum of the ring's held results' bytes */
    uint64_t base; /* input order: next index to deliver */
    struct held *ring;
    size_t window;
    uint64_t inflight_jobs;
    int inflight_chunks;
    size_t chunksize;
    int paused, cancelled, ending, in_pump;
    uint64_t started_ns, deadline_ns;
    uint64_t ok, failed, busy_ns;
};

enum slot_state { SLOT_EMPTY, SLOT_IDLE, SLOT_BUSY, SLOT_RETIRING };

struct slot {
    enum slot_state state;
    struct buf in;       /* bytes read from the worker, not yet parsed */
    struct buf out;      /* the RUN frame being sent */
    size_t out_off;
    int out_fd;          /* blob fd to attach to the first byte of out, or -1 */
    struct dispatch_batch *batch;
    uint64_t *jobs;      /* the chunk's job indices */
    const struct op **ops; /* and their ops (for the cost estimate) */
    size_t njobs, ndone, jobs_cap;
    uint64_t jobs_done;  /* over this worker's life, for recycling */
    uint64_t spawn_retry_ns;
    /* While busy: the last sign of life (DISPATCH_STALL_NS), the control page's job start
     * seen then, and whether the worker had announced its pid. */
    uint64_t alive_ns, seen_started_ns;
    int announced;
};

struct dispatch {
    struct dispatch_config cfg;
    struct pool *pool;
    int epfd;
    struct slot *slots;
    struct dispatch_batch *ring; /* any live batch; the next to serve is ring->next */
    int nbatches;
    uint64_t queued_jobs;
    int draining;
    int empty_pending; /* batches without jobs submitted since the last dispatch_run */
    double *cost_ns; /* per op: measured ns per job (EWMA) */
    struct dispatch_stats stats;
};

static void batch_pump(struct dispatch_batch *b);
static void batch_maybe_free(struct dispatch_batch *b);

/* ---------------------------------------------------------------- chunk sizing */

static double dispatch_cost(const struct dispatch *d, const struct op *op)
{
    size_t i = ops_index(op);
    return d->cost_ns[i] > 0 ? d->cost_ns[i] : (double)op->cost_hint_ns;
}

static size_t auto_chunksize(const struct dispatch *d, const struct dispatch_batch *b,
                             const struct op *op)
{
    uint64_t n = b->desc.njobs;
    if (n == 0) {
        return 1;
    }
    double cost = dispatch_cost(d, op) + DISPATCH_PER_JOB_OVERHEAD_NS;
    double target = (double)(d->cfg.chunk_target_ns ? d->cfg.chunk_target_ns
                                                    : DISPATCH_DEFAULT_TARGET_NS);
    /* A whole batch cheaper than one chunk's target goes in one message. */
    if ((double)n * cost <= target) {
        return (size_t)n;
    }
    double by_cost = target / cost;
    uint64_t spread = (n + 4 * (uint64_t)d->cfg.workers - 1) / (4 * (uint64_t)d->cfg.workers);
    uint64_t c = by_cost < 1 ? 1 : (uint64_t)by_cost;
    if (c > spread) {
        c = spread;
    }
    return c < 1 ? 1 : (size_t)c;
}

/* ---------------------------------------------------------------- the batch ring */

static void ring_insert(struct dispatch *d, struct dispatch_batch *b)
{
    if (d->ring == NULL) {
        b->prev = b->next = b;
        d->ring = b;
        return;
    }
    /* New batches go just before the cursor's next, i.e. at the back of the round. */
    struct dispatch_batch *tail = d->ring;
    b->next = tail->next;
    b->prev = tail;
    tail->next->prev = b;
    tail->next = b;
    d->ring = b;
}

static void ring_remove(struct dispatch *d, struct dispatch_batch *b)
{
    if (b->next == NULL) {
        return;
    }
    if (b->next == b) {
        d->ring = NULL;
    } else {
        b->prev->next = b->next;
        b->next->prev = b->prev;
        if (d->ring == b) {
            d->ring = b->prev;
        }
    }
    b->next = b->prev = NULL;
}

/* ---------------------------------------------------------------- results */

static void held_clear(struct dispatch_batch *b, struct held *h)
{
    b->held_bytes -= h->bytes;
    free(h->text);
    for (size_t i = 0; i < h->nblobs; i++) {
        free((void *)h->blobs[i].name);
        free((void *)h->blobs[i].data);
    }
    free(h->blobs);
    memset(h, 0, sizeof *h);
}

static void batch_count(struct dispatch_batch *b, const struct dispatch_result *r)
{
    if (r->err == 0) {
        b->ok++;
    } else {
        b->failed++;
    }
    if (r->end_ns > r->start_ns) {
        b->busy_ns += r->end_ns - r->start_ns;
    }
    b->delivered++;
    if (b->d->queued_jobs > 0) {
        b->d->queued_jobs--;
    }
}

static void batch_deliver(struct dispatch_batch *b, const struct dispatch_result *r)
{
    batch_count(b, r);
    b->desc.on_result(b->desc.ud, r);
}

static void batch_count_block(struct dispatch_batch *b, uint64_t count, uint64_t busy_ns)
{
    b->ok += count;
    b->busy_ns += busy_ns;
    b->delivered += count;
    b->d->queued_jobs = b->d->queued_jobs > count ? b->d->queued_jobs - count : 0;
}

static void batch_finish(struct dispatch_batch *b)
{
    struct dispatch *d = b->d;
    struct dispatch_summary s = {
        .jobs = b->desc.njobs,
        .ok = b->ok,
        .failed = b->failed,
        .chunksize = b->chunksize,
        .workers = d->cfg.workers,
        .elapsed_ns = ipc_now_ns() - b->started_ns,
        .busy_ns = b->busy_ns,
        .deadline_hit = b->ending,
    };
    ring_remove(d, b);
    b->cancelled = 1; /* no more callbacks */
    b->desc.on_done(b->desc.ud, &s);
    batch_maybe_free(b);
}

/* Takes a result for job INDEX of batch B: delivers it now (completed order) or holds it
 * until its turn (input order). TEXT and blobs are copied when held. */
static void batch_take_result(struct dispatch_batch *b, const struct dispatch_result *r)
{
    if (b->cancelled) {
        return;
    }
    if (b->desc.order == DISPATCH_ORDER_COMPLETED || r->index == b->base) {
        batch_deliver(b, r);
        if (b->desc.order == DISPATCH_ORDER_INPUT) {
            b->base++;
        }
        return;
    }
    struct held *h = &b->ring[r->index % b->window];
    held_clear(b, h);
    h->ready = 1;
    h->err = r->err;
    h->worker = r->worker;
    h->start_ns = r->start_ns;
    h->end_ns = r->end_ns;
    h->text = malloc(r->text_len + 1);
    if (h->text != NULL) {
        memcpy(h->text, r->text, r->text_len);
        h->text[r->text_len] = '\0';
        h->text_len = r->text_len;
    }
    if (r->nblobs > 0) {
        h->blobs = calloc(r->nblobs, sizeof *h->blobs);
        for (size_t i = 0; h->blobs != NULL && i < r->nblobs; i++) {
            uint8_t *p = malloc(r->blobs[i].len ? r->blobs[i].len : 1);
            if (p != NULL) {
                memcpy(p, r->blobs[i].data, r->blobs[i].len);
            }
            h->blobs[i].name = strdup(r->blobs[i].name);
            h->blobs[i].data = p;
            h->blobs[i].len = r->blobs[i].len;
            h->nblobs++;
            h->bytes += r->blobs[i].len;
        }
    }
    h->bytes += h->text_len;
    b->held_bytes += h->bytes;
}

/* A block of COUNT results from INDEX: delivered now when its turn has come, else held in
 * the ring at its first index (its other slots stay empty: no other result names them). */
static void batch_take_block(struct dispatch_batch *b, uint64_t index, uint64_t count,
                             const char *text, size_t len, uint64_t busy_ns)
{
    if (b->cancelled) {
        return;
    }
    if (b->desc.order == DISPATCH_ORDER_COMPLETED || index == b->base) {
        batch_count_block(b, count, busy_ns);
        b->desc.on_block(b->desc.ud, index, count, text, len, busy_ns);
        if (b->desc.order == DISPATCH_ORDER_INPUT) {
            b->base += count;
        }
        return;
    }
    struct held *h = &b->ring[index % b->window];
    held_clear(b, h);
    h->ready = 1;
    h->count = count;
    h->start_ns = 0;
    h->end_ns = busy_ns;
    h->text = malloc(len + 1);
    if (h->text != NULL) {
        memcpy(h->text, text, len);
        h->text[len] = '\0';
        h->text_len = len;
    }
    h->bytes = h->text_len;
    b->held_bytes += h->bytes;
}

static void batch_fail_job(struct dispatch_batch *b, uint64_t index, int err, const char *msg,
                           int worker)
{
    struct dispatch_result r = {
        .index = index,
        .err = err,
        .text = msg,
        .text_len = strlen(msg),
        .worker = worker,
    };
    batch_take_result(b, &r);
}

/* Input order: delivers the held results that are next in line. */
static void batch_deliver_held(struct dispatch_batch *b)
{
    if (b->desc.order != DISPATCH_ORDER_INPUT) {
        return;
    }
    while (!b->cancelled && b->base < b->desc.njobs) {
        struct held *h = &b->ring[b->base % b->window];
        if (!h->ready) {
            break;
        }
        if (h->count > 0) {
            /* a block of results: its lines, and its count */
            uint64_t count = h->count;
            batch_count_block(b, count, h->end_ns);
            b->desc.on_block(b->desc.ud, b->base, count, h->text != NULL ? h->text : "",
                             h->text_len, h->end_ns);
            held_clear(b, h);
            b->base += count;
            continue;
        }
        struct dispatch_result r = {
            .index = b->base,
            .err = h->err,
            .text = h->text != NULL ? h->text : "",
            .text_len = h->text_len,
            .blobs = h->blobs,
            .nblobs = h->nblobs,
            .worker = h->worker,
            .start_ns = h->start_ns,
            .end_ns = h->end_ns,
        };
        batch_deliver(b, &r);
        held_clear(b, h);
        b->base++;
    }
}

/* Delivers what is ready, in order, then finishes the batch when every job is answered.
 * B may be freed on return (finished, or cancelled by the owner from a callback). All the
 * work happens in this one frame, with in_pump set: a nested pump that finished the batch
 * would free it under the outer one. */
static void batch_pump(struct dispatch_batch *b)
{
    if (b->in_pump) {
        return;
    }
    if (b->cancelled) {
        batch_maybe_free(b); /* cancelled while pinned: free it now if nothing is out */
        return;
    }
    b->in_pump = 1;
    batch_deliver_held(b);
    /* Past the deadline, jobs never sent are answered "cancelled", a bounded number per
     * pump while the owner's output keeps up. */
    if (b->ending) {
        static const char msg[] = "the batch deadline passed before this job started";
        for (unsigned k = 0; k < DISPATCH_SYNTH_PER_PUMP && !b->paused && !b->cancelled; k++) {
            if (b->nretry > 0) {
                uint64_t idx = b->retry[--b->nretry];
                batch_fail_job(b, idx, -BATCHD_E_CANCELLED, msg, -1);
            } else if (b->next_job < b->desc.njobs &&
                       (b->desc.order == DISPATCH_ORDER_COMPLETED || b->next_job == b->base)) {
                uint64_t idx = b->next_job++;
                batch_fail_job(b, idx, -BATCHD_E_CANCELLED, msg, -1);
            } else {
                break;
            }
            batch_deliver_held(b); /* what the synthesised result unblocked */
        }
    }
    b->in_pump = 0;
    if (b->cancelled) {
        batch_maybe_free(b); /* the owner cancelled it from a callback */
    } else if (b->delivered >= b->desc.njobs) {
        batch_finish(b);
    }
}

static void batch_free(struct dispatch_batch *b)
{
    if (b->ring != NULL) {
        for (size_t i = 0; i < b->window; i++) {
            held_clear(b, &b->ring[i]);
        }
        free(b->ring);
    }
    free(b->retry);
    if (b->desc.blob_fd >= 0) {
        close(b->desc.blob_fd);
    }
    free(b);
}

static void batch_maybe_free(struct dispatch_batch *b)
{
    if (b->cancelled && b->inflight_chunks == 0 && !b->in_pump) {
        struct dispatch *d = b->d;
        /* Jobs never delivered leave the queue count with the batch. */
        uint64_t left = b->desc.njobs - b->delivered;
        d->queued_jobs = d->queued_jobs > left ? d->queued_jobs - left : 0;
        d->nbatches--;
        batch_free(b);
    }
}

static int batch_retry_push(struct dispatch_batch *b, uint64_t index)
{
    if (b->nretry == b->retry_cap) {
        size_t cap = b->retry_cap ? b->retry_cap * 2 : 16;
        uint64_t *p = realloc(b->retry, cap * sizeof *p);
        if (p == NULL) {
            return -1;
        }
        b->retry = p;
        b->retry_cap = cap;
    }
    b->retry[b->nretry++] = index;
    return 0;
}

/* ---------------------------------------------------------------- sending chunks */

static int batch_has_work(const struct dispatch_batch *b)
{
    if (b->cancelled || b->ending || b->paused) {
        return 0;
    }
    if (b->nretry > 0) {
        return 1;
    }
    if (b->next_job >= b->desc.njobs || b->held_bytes > DISPATCH_MAX_HELD_BYTES) {
        return 0;
    }
    /* The window: never run ahead of delivery by more than it holds. */
    uint64_t limit = (b->desc.order == DISPATCH_ORDER_INPUT ? b->base : b->delivered) + b->window;
    return b->next_job < limit;
}

/* Appends the JSON text of X as u32 length + digits. */
static int put_int(struct buf *out, int64_t x)
{
    char tmp[4 + 24];
    uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
    char *end = tmp + sizeof tmp, *p = end;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (x < 0) {
        *--p = '-';
    }
    uint32_t len = (uint32_t)(end - p);
    p -= 4;
    memcpy(p, &len, sizeof len);
    return buf_add(out, p, (size_t)(end - p));
}

/* Appends V's JSON text as u32 length + bytes (length 0 for NULL). Integers, the bulk of
 * numeric batches, are written here directly; anything else is dumped by jansson once into
 * reserved room, and a second time only when that room was too small. */
static int put_json(struct buf *out, const json_t *v)
{
    if (v == NULL) {
        return ipc_put_u32(out, 0);
    }
    if (json_is_integer(v)) {
        return put_int(out, json_integer_value(v));
    }
    size_t at = buf_len(out);
    if (ipc_put_u32(out, 0) != 0) {
        return -1;
    }
    size_t room = 256;
    char *dst = buf_reserve(out, room);
    if (dst == NULL) {
        return -1;
    }
    size_t need = json_dumpb(v, dst, room, JSON_COMPACT | JSON_ENCODE_ANY);
    if (need > room) {
        dst = buf_reserve(out, need);
        if (dst == NULL) {
            return -1;
        }
        json_dumpb(v, dst, need, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    buf_commit(out, need);
    uint32_t len = (uint32_t)need;
    memcpy((char *)buf_data(out) + at, &len, sizeof len);
    return 0;
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

static void slot_flush(struct dispatch *d, int i);

/* Cuts the next chunk of B into slot I's RUN frame. Returns the jobs taken. */
static size_t batch_cut_chunk(struct dispatch *d, struct dispatch_batch *b, int i)
{
    struct slot *s = &d->slots[i];
    size_t want = b->chunksize;
    if (slot_reserve_jobs(s, want) != 0) {
        return 0;
    }
    buf_reset(&s->out);
    s->out_off = 0;
    ipc_put_header(&s->out, IPC_RUN, 0);
    size_t count_at = buf_len(&s->out);
    ipc_put_u32(&s->out, 0);
    const int ints = b->desc.ints != NULL && b->desc.ints_op != NULL;
    ipc_put_u32(&s->out, (b->desc.want_binary ? IPC_RUN_WANT_BINARY : 0) |
                             (b->desc.on_block != NULL ? IPC_RUN_BLOCK : 0) |
                             (ints ? IPC_RUN_INTS : 0));
    put_json(&s->out, b->desc.params);
    uint64_t limit = (b->desc.order == DISPATCH_ORDER_INPUT ? b->base : b->delivered) + b->window;
    size_t n = 0;
    if (ints) {
        ipc_put_u32(&s->out, (uint32_t)ops_index(b->desc.ints_op));
        char *dst = buf_reserve(&s->out, want * 16);
        if (dst == NULL) {
            return 0;
        }
        while (n < want) {
            uint64_t idx;
            if (b->nretry > 0) {
                idx = b->retry[--b->nretry];
            } else if (b->next_job < b->desc.njobs && b->next_job < limit) {
                idx = b->next_job++;
            } else {
                break;
            }
            int64_t v = b->desc.ints[idx];
            memcpy(dst + 16 * n, &idx, 8);
            memcpy(dst + 16 * n + 8, &v, 8);
            s->ops[n] = b->desc.ints_op;
            s->jobs[n++] = idx;
        }
        buf_commit(&s->out, 16 * n);
        uint32_t n32 = (uint32_t)n;
        memcpy((char *)buf_data(&s->out) + count_at, &n32, sizeof n32);
        ipc_patch_length(&s->out, 0);
        return n;
    }
    while (n < want) {
        uint64_t idx;
        if (b->nretry > 0) {
            idx = b->retry[--b->nretry];
        } else if (b->next_job < b->desc.njobs && b->next_job < limit) {
            idx = b->next_job++;
        } else {
            break;
        }
        struct dispatch_job job = {0};
        b->desc.job_at(b->desc.ud, idx, &job);
        size_t mark = buf_len(&s->out);
        int rc = 0;
        if (job.has_int && job.params == NULL && job.name == NULL && job.blob_len == 0) {
            /* The tiny numeric job: its whole record in one append. */
            char rec[8 + 4 + 4 + 20 + 4 + 4 + 8 + 8];
            char *p = rec;
            uint32_t opi = (uint32_t)ops_index(job.op), zero = 0;
            memcpy(p, &idx, 8);
            memcpy(p + 8, &opi, 4);
            p += 12;
            char digits[24];
            int nd = 0;
            uint64_t u = job.ival < 0 ? 0 - (uint64_t)job.ival : (uint64_t)job.ival;
            do {
                digits[nd++] = (char)('0' + u % 10);
                u /= 10;
            } while (u > 0);
            if (job.ival < 0) {
                digits[nd++] = '-';
            }
            uint32_t len = (uint32_t)nd;
            memcpy(p, &len, 4);
            p += 4;
            while (nd > 0) {
                *p++ = digits[--nd];
            }
            memcpy(p, &zero, 4);     /* params: the chunk's */
            memcpy(p + 4, &zero, 4); /* no name */
            memset(p + 8, 0, 16);    /* no blob */
            p += 24;
            if (buf_add(&s->out, rec, (size_t)(p - rec)) != 0) {
                batch_retry_push(b, idx);
                break;
            }
            s->ops[n] = job.op;
            s->jobs[n++] = idx;
            continue;
        }
        rc |= ipc_put_u64(&s->out, idx);
        rc |= ipc_put_u32(&s->out, (uint32_t)ops_index(job.op));
        rc |= job.has_int ? put_int(&s->out, job.ival) : put_json(&s->out, job.value);
        rc |= put_json(&s->out, job.params);
        rc |= ipc_put_bytes(&s->out, job.name ? job.name : "",
                            (uint32_t)(job.name ? strlen(job.name) : 0));
        rc |= ipc_put_u64(&s->out, job.blob_off);
        rc |= ipc_put_u64(&s->out, job.blob_len);
        if (rc != 0) {
            buf_truncate(&s->out, mark);
            batch_retry_push(b, idx);
            break;
        }
        s->ops[n] = job.op;
        s->jobs[n++] = idx;
    }
    uint32_t n32 = (uint32_t)n;
    memcpy((char *)buf_data(&s->out) + count_at, &n32, sizeof n32);
    ipc_patch_length(&s->out, 0);
    return n;
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

static void dispatch_feed(struct dispatch *d)
{
    if (d->ring == NULL) {
        return;
    }
    for (int i = 0; i < d->cfg.workers; i++) {
        struct slot *s = &d->slots[i];
        if (s->state != SLOT_IDLE) {
            continue;
        }
        /* Round robin: start after the batch served last. */
        struct dispatch_batch *start = d->ring->next, *b = start, *pick = NULL;
        do {
            if (batch_has_work(b)) {
                pick = b;
                break;
            }
            b = b->next;
        } while (b != start);
        if (pick == NULL) {
            return;
        }
        d->ring = pick;
        size_t n = batch_cut_chunk(d, pick, i);
        if (n == 0) {
            continue;
        }
        s->batch = pick;
        s->njobs = n;
        s->ndone = 0;
        s->state = SLOT_BUSY;
        s->out_fd = pick->desc.blob_fd;
        slot_mark_assigned(d, i);
        pick->inflight_jobs += n;
        pick->inflight_chunks++;
        slot_flush(d, i);
    }
}

/* ---------------------------------------------------------------- worker I/O */

static void slot_watch(struct dispatch *d, int i, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)i};
    epoll_ctl(d->epfd, EPOLL_CTL_MOD, pool_fd(d->pool, i), &ev);
}

static void slot_fail(struct dispatch *d, int i, int cause_err, const char *cause);

static void slot_flush(struct dispatch *d, int i)
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

static void slot_spawn(struct dispatch *d, int i)
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

/* Kills (if needed) and reaps the worker of slot I, answers the job it was running with
 * CAUSE_ERR, requeues (or cancels, past a deadline) the rest of its chunk, and respawns. */
static void slot_fail(struct dispatch *d, int i, int cause_err, const char *cause)
{
    struct slot *s = &d->slots[i];
    const struct ipc_control *ctl = pool_control(d->pool, i);
    int running = atomic_load(&ctl->running);
    uint64_t at_fault = atomic_load(&ctl->job_index);
    uint64_t started = atomic_load(&ctl->job_started_ns);
    pid_t pid = pool_pid(d->pool, i);
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
            .slot = i, .pid = (long)pid, .event = "exit", .cause = why, .status = how};
        d->cfg.on_worker(d->cfg.ud, &ev);
    }
    struct dispatch_batch *b = s->batch;
    if (b != NULL) {
        for (size_t k = s->ndone; k < s->njobs; k++) {
            uint64_t idx = s->jobs[k];
            b->inflight_jobs--;
            if (running && idx == at_fault) {
                char msg[256];
                if (cause_err == -BATCHD_E_WORKER_CRASHED) {
                    snprintf(msg, sizeof msg, "worker %d (pid %ld) died with %s while running this job",
                             i, (long)pid, how);
                } else {
                    snprintf(msg, sizeof msg, "%s", cause);
                }
                struct dispatch_result r = {
                    .index = idx,
                    .err = cause_err,
                    .text = msg,
                    .text_len = strlen(msg),
                    .worker = i,
                    .start_ns = started,
                    .end_ns = ipc_now_ns(),
                };
                batch_take_result(b, &r);
            } else if (b->ending) {
                batch_fail_job(b, idx, -BATCHD_E_CANCELLED,
                               "the batch deadline passed before this job started", -1);
            } else if (!b->cancelled) {
                batch_retry_push(b, idx);
            }
        }
    }
    s->state = SLOT_EMPTY;
    s->spawn_retry_ns = 0;
    buf_reset(&s->out);
    s->out_off = 0;
    slot_release_chunk(d, i);
    slot_spawn(d, i);
}

/* A block record (IPC_ERR_BLOCK) of slot I: end_ns holds the count, start_ns the busy time. */
static int slot_take_block(struct dispatch *d, int i, const struct dispatch_result *res,
                           const struct ipc_reader *r)
{
    struct slot *s = &d->slots[i];
    uint64_t count = res->end_ns;
    struct dispatch_batch *b = s->batch;
    if (r->bad || b == NULL || b->desc.on_block == NULL || res->nblobs != 0 || count == 0 ||
        count > s->njobs - s->ndone) {
        return -1;
    }
    for (uint64_t k = 0; k < count; k++) {
        if (s->jobs[s->ndone + k] != res->index + k) {
            return -1;
        }
    }
    const struct op *op = s->ops[s->ndone];
    s->ndone += count;
    s->jobs_done += count;
    b->inflight_jobs -= count;
    if (!b->cancelled && op != NULL) {
        double *c = &d->cost_ns[ops_index(op)];
        double x = (double)res->start_ns / (double)count;
        *c = *c > 0 ? *c * 0.9 + x * 0.1 : x;
    }
    batch_take_block(b, res->index, count, res->text, res->text_len, res->start_ns);
    return 0;
}

/* Parses one RESULTS frame from slot I. Returns 0, or -1 if the frame is malformed. */
static int slot_take_results(struct dispatch *d, int i, const uint8_t *body, size_t len)
{
    struct slot *s = &d->slots[i];
    struct ipc_reader r;
    ipc_reader_init(&r, body, len);
    uint32_t count = ipc_get_u32(&r);
    struct dispatch_blob blobs[JOB_MAX_BLOBS];
    for (uint32_t k = 0; k < count; k++) {
        struct dispatch_result res = {.worker = i};
        res.index = ipc_get_u64(&r);
        res.err = (int)ipc_get_u32(&r);
        res.start_ns = ipc_get_u64(&r);
        res.end_ns = ipc_get_u64(&r);
        uint32_t tlen;
        res.text = ipc_get_bytes(&r, &tlen);
        res.text_len = tlen;
        uint32_t nb = ipc_get_u32(&r);
        if (nb > JOB_MAX_BLOBS) {
            return -1;
        }
        for (uint32_t j = 0; j < nb; j++) {
            uint32_t nlen, blen;
            const char *name = ipc_get_bytes(&r, &nlen);
            const uint8_t *data = ipc_get_bytes(&r, &blen);
            static char names[JOB_MAX_BLOBS][72];
            snprintf(names[j], sizeof names[j], "%.*s", (int)nlen, name ? name : "");
            blobs[j].name = names[j];
            blobs[j].data = data;
            blobs[j].len = blen;
        }
        res.blobs = blobs;
        res.nblobs = nb;
        if ((uint32_t)res.err == IPC_ERR_BLOCK) {
            if (slot_take_block(d, i, &res, &r) != 0) {
                return -1;
            }
            continue;
        }
        if (r.bad || s->batch == NULL || s->ndone >= s->njobs || s->jobs[s->ndone] != res.index) {
            return -1;
        }
        s->ndone++;
        s->jobs_done++;
        struct dispatch_batch *b = s->batch;
        b->inflight_jobs--;
        if (res.err == 0 || batchd_err_is_per_job(res.err)) {
            /* keep it */
        } else {
            res.err = -BATCHD_E_INTERNAL;
        }
        const struct op *op = NULL;
        if (!b->cancelled && res.end_ns > res.start_ns) {
            op = s->ops[s->ndone - 1];
        }
        if (op != NULL) {
            /* A moving average from the op's hint, each sample capped at 4x the estimate:
             * one job that stalled (a preempted worker on a busy machine) must not make a
             * tiny op look slow and send the next big batch out one job per message. */
            double *c = &d->cost_ns[ops_index(op)];
            double est = *c > 0 ? *c : (double)op->cost_hint_ns;
            double x = (double)(res.end_ns - res.start_ns);
            if (est > 0 && x > 4 * est) {
                x = 4 * est;
            }
            *c = est > 0 ? est * 0.9 + x * 0.1 : x;
        }
        batch_take_result(b, &res);
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

static void slot_read(struct dispatch *d, int i)
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

/* ---------------------------------------------------------------- timers */

/* Slot I is busy: fails its worker when the job it runs overran the batch's timeout, or
 * when no job runs and the worker has shown no sign of life for the stall bound. */
static void slot_check_time(struct dispatch *d, int i, uint64_t now)
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
    uint64_t bound = s->announced ? DISPATCH_STALL_NS : DISPATCH_STARTUP_STALL_NS;
    if (now > s->alive_ns && now - s->alive_ns > bound) {
        char msg[128];
        snprintf(msg, sizeof msg, "the worker did not take up its chunk within %llu ms",
                 (unsigned long long)(bound / 1000000u));
        slot_fail(d, i, -BATCHD_E_TIMEOUT, msg);
    }
}

static void dispatch_check_time(struct dispatch *d)
{
    uint64_t now = ipc_now_ns();
    /* Per-job timeouts and stalls: the control page says which job runs and since when. */
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state == SLOT_BUSY) {
            slot_check_time(d, i, now);
        }
    }
    /* Batch deadlines: running jobs fail with timeout, the others are cancelled. */
    struct dispatch_batch *b = d->ring;
    if (b == NULL) {
        return;
    }
    int n = d->nbatches;
    for (int k = 0; k < n && d->ring != NULL; k++) {
        struct dispatch_batch *next = b->next;
        if (!b->ending && b->deadline_ns != 0 && now >= b->deadline_ns) {
            b->ending = 1;
            /* Pinned (in_pump) while its chunks fail: the pump after each one could finish
             * and free it under this loop. The one pump below does it all. */
            b->in_pump = 1;
            for (int i = 0; i < d->cfg.workers; i++) {
                if (d->slots[i].batch == b && d->slots[i].state == SLOT_BUSY) {
                    slot_fail(d, i, -BATCHD_E_TIMEOUT,
                              "the batch deadline passed while this job ran");
                }
            }
            b->in_pump = 0;
            batch_pump(b);
            /* b may be gone now; continue from the saved next only if the ring survives. */
            if (d->ring == NULL) {
                break;
            }
        }
        b = next;
    }
}

/* 1 if B's deadline passed and some of its jobs still wait for their "cancelled" answer. */
static int batch_synth_left(const struct dispatch_batch *b)
{
    return b->ending && !b->paused && !b->cancelled &&
           (b->nretry > 0 || b->next_job < b->desc.njobs);
}

/* Writes the next cancelled answers of deadline-ended batches: batch_pump writes a bounded
 * number at a time, so that a huge batch cannot flood its owner's buffers in one go, and
 * this carries on where it stopped. */
static void dispatch_pump_ending(struct dispatch *d)
{
    struct dispatch_batch *b = d->ring;
    int n = d->nbatches;
    for (int k = 0; k < n && d->ring != NULL && b != NULL; k++) {
        struct dispatch_batch *next = b->next;
        int last = next == b;
        if (batch_synth_left(b)) {
            batch_pump(b); /* may finish and free b; NEXT stays valid */
        }
        if (last) {
            break;
        }
        b = next;
    }
}

int dispatch_timeout_ms(const struct dispatch *d)
{
    if (d->ring != NULL) {
        const struct dispatch_batch *b = d->ring;
        do {
            if (batch_synth_left(b)) {
                return 0;
            }
            b = b->next;
        } while (b != d->ring);
    }
    int need = 0;
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state == SLOT_EMPTY && !d->draining) {
            return 50;
        }
        if (d->slots[i].state == SLOT_BUSY) {
            need = 1;
        }
    }
    if (d->ring != NULL) {
        need = 1;
    }
    return need ? 10 : -1;
}

/* ---------------------------------------------------------------- public */

struct dispatch *dispatch_create(const struct dispatch_config *cfg)
{
    if (cfg->workers < 1 || cfg->workers > DISPATCH_MAX_WORKERS) {
        return NULL;
    }
    struct dispatch *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return NULL;
    }
    d->cfg = *cfg;
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->pool = pool_create(cfg->workers);
    d->slots = calloc((size_t)cfg->workers, sizeof *d->slots);
    d->cost_ns = calloc(ops_count() + 1, sizeof *d->cost_ns);
    if (d->epfd < 0 || d->pool == NULL || d->slots == NULL || d->cost_ns == NULL) {
        dispatch_destroy(d);
        return NULL;
    }
    for (int i = 0; i < cfg->workers; i++) {
        buf_init(&d->slots[i].in, IPC_MAX_FRAME + 1024 * 1024);
        buf_init(&d->slots[i].out, IPC_MAX_FRAME);
        d->slots[i].out_fd = -1;
        slot_spawn(d, i);
        if (d->slots[i].state != SLOT_IDLE) {
            dispatch_destroy(d);
            return NULL;
        }
    }
    return d;
}

void dispatch_destroy(struct dispatch *d)
{
    if (d == NULL) {
        return;
    }
    pool_destroy(d->pool);
    /* Cancelled batches wait out of the ring for their running chunks; the workers are
     * gone now, so free each of them once (several slots may hold the same one). This
     * runs before the ring's batches are freed, because slots may point at those too. */
    for (int i = 0; d->slots != NULL && i < d->cfg.workers; i++) {
        struct dispatch_batch *b = d->slots[i].batch;
        if (b == NULL || !b->cancelled) {
            continue;
        }
        for (int j = i; j < d->cfg.workers; j++) {
            if (d->slots[j].batch == b) {
                d->slots[j].batch = NULL;
            }
        }
        batch_free(b);
    }
    while (d->ring != NULL) {
        struct dispatch_batch *b = d->ring;
        ring_remove(d, b);
        batch_free(b);
    }
    if (d->slots != NULL) {
        for (int i = 0; i < d->cfg.workers; i++) {
            buf_cleanup(&d->slots[i].in);
            buf_cleanup(&d->slots[i].out);
            free(d->slots[i].jobs);
            free(d->slots[i].ops);
        }
    }
    free(d->slots);
    free(d->cost_ns);
    if (d->epfd >= 0) {
        close(d->epfd);
    }
    free(d);
}

/* A batch without jobs never gets a result, and results are what end a batch: finish such
 * batches here, in dispatch_run, since no callback may run inside dispatch_submit. */
static void dispatch_finish_empty(struct dispatch *d)
{
    if (d->empty_pending == 0) {
        return;
    }
    d->empty_pending = 0;
    int again = 1;
    while (again && d->ring != NULL) {
        again = 0;
        struct dispatch_batch *b = d->ring;
        do {
            if (b->desc.njobs == 0 && !b->cancelled) {
                batch_pump(b); /* finishes and frees it: start the walk again */
                again = 1;
                break;
            }
            b = b->next;
        } while (b != d->ring);
    }
}

int dispatch_fd(const struct dispatch *d)
{
    return d->epfd;
}

void dispatch_run(struct dispatch *d)
{
    struct epoll_event evs[64];
    int n = epoll_wait(d->epfd, evs, 64, 0);
    for (int k = 0; k < n; k++) {
        int i = (int)evs[k].data.u32;
        if (i < 0 || i >= d->cfg.workers || d->slots[i].state == SLOT_EMPTY) {
            continue;
        }
        if (evs[k].events & EPOLLOUT) {
            slot_flush(d, i);
        }
        if (d->slots[i].state != SLOT_EMPTY && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP |
                                                                 EPOLLRDHUP))) {
            slot_read(d, i);
        }
    }
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state == SLOT_EMPTY) {
            slot_spawn(d, i);
        }
    }
    dispatch_check_time(d);
    dispatch_finish_empty(d);
    dispatch_pump_ending(d);
    dispatch_feed(d);
    if (d->draining && d->ring == NULL) {
        dispatch_drain(d); /* the last batch is over: let idle workers go */
    }
}

struct dispatch_batch *dispatch_submit(struct dispatch *d, const struct dispatch_batch_desc *desc,
                                       int *err)
{
    if (d->nbatches >= d->cfg.max_batches ||
        d->queued_jobs + desc->njobs > d->cfg.max_queued_jobs) {
        *err = -BATCHD_E_OVERLOADED;
        return NULL;
    }
    struct dispatch_batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        *err = -BATCHD_E_INTERNAL;
        return NULL;
    }
    b->d = d;
    b->desc = *desc;
    /* The batch keeps its own handle on the input bytes: a chunk may still be on its way
     * to a worker after the owner has gone. */
    if (desc->blob_fd >= 0) {
        b->desc.blob_fd = fcntl(desc->blob_fd, F_DUPFD_CLOEXEC, 0);
    }
    b->started_ns = ipc_now_ns();
    if (desc->deadline_ms > 0) {
        b->deadline_ns = b->started_ns + desc->deadline_ms * 1000000u;
    }
    if (desc->chunksize > 0) {
        b->chunksize = desc->chunksize;
    } else {
        /* Auto: sized from the first job's op (a mixed batch is sized by its first kind). */
        struct dispatch_job job = {0};
        if (desc->njobs > 0) {
            desc->job_at(desc->ud, 0, &job);
        }
        b->chunksize = job.op != NULL ? auto_chunksize(d, b, job.op) : 1;
    }
    uint64_t w = 2 * (uint64_t)b->chunksize * (uint64_t)d->cfg.workers;
    if (w < DISPATCH_MIN_WINDOW) {
        w = DISPATCH_MIN_WINDOW;
    }
    if (w > DISPATCH_MAX_WINDOW) {
        w = DISPATCH_MAX_WINDOW;
    }
    if (w > desc->njobs) {
        w = desc->njobs > 0 ? desc->njobs : 1; /* a small batch needs no bigger ring */
    }
    if (b->chunksize > w) {
        b->chunksize = (size_t)w;
    }
    b->window = (size_t)w;
    if (desc->order == DISPATCH_ORDER_INPUT) {
        b->ring = calloc(b->window, sizeof *b->ring);
        if (b->ring == NULL) {
            batch_free(b);
            *err = -BATCHD_E_INTERNAL;
            return NULL;
        }
    }
    d->nbatches++;
    d->queued_jobs += desc->njobs;
    d->empty_pending += desc->njobs == 0;
    ring_insert(d, b);
    return b;
}

void dispatch_batch_cancel(struct dispatch_batch *b)
{
    if (b == NULL) {
        return;
    }
    ring_remove(b->d, b);
    b->cancelled = 1;
    batch_maybe_free(b);
}

void dispatch_batch_set_paused(struct dispatch_batch *b, int paused)
{
    int was = b->paused;
    b->paused = paused;
    if (was && !paused) {
        batch_pump(b);
    }
}

size_t dispatch_batch_chunksize(const struct dispatch_batch *b)
{
    return b->chunksize;
}

int dispatch_workers_up(const struct dispatch *d)
{
    int up = 0;
    for (int i = 0; i < d->cfg.workers; i++) {
        up += d->slots[i].state != SLOT_EMPTY;
    }
    return up;
}

int dispatch_workers(const struct dispatch *d)
{
    return d->cfg.workers;
}

uint64_t dispatch_queued_jobs(const struct dispatch *d)
{
    return d->queued_jobs;
}

int dispatch_batches(const struct dispatch *d)
{
    return d->nbatches;
}

void dispatch_get_stats(const struct dispatch *d, struct dispatch_stats *s)
{
    *s = d->stats;
    s->busy_workers = 0;
    for (int i = 0; i < d->cfg.workers; i++) {
        s->busy_workers += d->slots[i].state == SLOT_BUSY;
    }
}

void dispatch_drain(struct dispatch *d)
{
    d->draining = 1;
    for (int i = 0; i < d->cfg.workers; i++) {
        if (d->slots[i].state == SLOT_IDLE && d->ring == NULL && d->slots[i].batch == NULL) {
            d->slots[i].state = SLOT_RETIRING;
            pool_quit(d->pool, i);
        }
    }
}
