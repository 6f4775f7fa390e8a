/* Batches and their ordering window. Results come back per job; in input order they wait
 * in a ring of WINDOW slots, and no job past (next to deliver + WINDOW) is sent out, which
 * bounds the memory of a batch whose client reads slowly. Past a deadline the jobs never
 * sent are answered "cancelled", a bounded number at a time. Every function here runs on
 * the dispatcher's thread and may call the batch owner's callbacks. */
#include "batch_window.h"

#include "../api/errors.h"
#include "dispatch_internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_MIN_WINDOW 256u
#define BATCH_MAX_WINDOW (1u << 17) /* bounds a batch's held results: ~8 MiB of slots */
/* Cancelled results synthesised per pump: a deadline on a huge batch must not flood the
 * owner's buffers in one go. */
#define BATCH_SYNTH_PER_PUMP 4096u
/* Bytes of results a batch may hold out of order (input order) before it stops sending
 * jobs: the count window alone would let 256 large images pile up behind a slow first one. */
#define BATCH_MAX_HELD_BYTES (64u * 1024 * 1024)

/* Why a job that never started fails: the batch's deadline, or its owner's cancel. */
static const char *batch_cancelled_msg(const struct dispatch_batch *b)
{
    return b->stopped ? "the batch was cancelled before this job started"
                      : "the batch deadline passed before this job started";
}

/* ---------------------------------------------------------------- the ring of batches */

static void batch_ring_insert(struct dispatch *d, struct dispatch_batch *b)
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

void batch_ring_remove(struct dispatch *d, struct dispatch_batch *b)
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

static void batch_count(struct dispatch_batch *b, const struct job_result *r)
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

static void batch_deliver(struct dispatch_batch *b, const struct job_result *r)
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
        .deadline_hit = b->ending && !b->stopped,
    };
    batch_ring_remove(d, b);
    b->cancelled = 1; /* no more callbacks */
    b->desc.on_done(b->desc.ud, &s);
    batch_maybe_free(b);
}

/* Takes a result for job INDEX of batch B: delivers it now (completed order) or holds it
 * until its turn (input order). TEXT and blobs are copied when held. */
void batch_take_result(struct dispatch_batch *b, const struct job_result *r)
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
void batch_take_block(struct dispatch_batch *b, uint64_t index, uint64_t count, const char *text,
                      size_t len, uint64_t busy_ns)
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

void batch_fail_job(struct dispatch_batch *b, uint64_t index, int err, const char *msg, int worker)
{
    struct job_result r = {
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
        struct job_result r = {
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
void batch_pump(struct dispatch_batch *b)
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
        for (unsigned k = 0; k < BATCH_SYNTH_PER_PUMP && !b->paused && !b->cancelled; k++) {
            if (b->nretry > 0) {
                uint64_t idx = b->retry[--b->nretry];
                batch_fail_job(b, idx, -BATCHD_E_CANCELLED, batch_cancelled_msg(b), -1);
            } else if (b->next_job < b->desc.njobs &&
                       (b->desc.order == DISPATCH_ORDER_COMPLETED || b->next_job == b->base)) {
                uint64_t idx = b->next_job++;
                batch_fail_job(b, idx, -BATCHD_E_CANCELLED, batch_cancelled_msg(b), -1);
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

void batch_free(struct dispatch_batch *b)
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

void batch_maybe_free(struct dispatch_batch *b)
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

int batch_retry_push(struct dispatch_batch *b, uint64_t index)
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

int batch_has_work(const struct dispatch_batch *b)
{
    if (b->cancelled || b->ending || b->paused) {
        return 0;
    }
    if (b->nretry > 0) {
        return 1;
    }
    if (b->next_job >= b->desc.njobs || b->held_bytes > BATCH_MAX_HELD_BYTES) {
        return 0;
    }
    /* The window: never run ahead of delivery by more than it holds. */
    uint64_t limit = (b->desc.order == DISPATCH_ORDER_INPUT ? b->base : b->delivered) + b->window;
    return b->next_job < limit;
}

/* 1 if B's deadline passed and some of its jobs still wait for their "cancelled" answer. */
int batch_synth_left(const struct dispatch_batch *b)
{
    return b->ending && !b->paused && !b->cancelled &&
           (b->nretry > 0 || b->next_job < b->desc.njobs);
}

void batch_requeue(struct dispatch_batch *b, uint64_t index)
{
    if (b->ending) {
        batch_fail_job(b, index, -BATCHD_E_CANCELLED, batch_cancelled_msg(b), -1);
    } else if (!b->cancelled) {
        batch_retry_push(b, index);
    }
}

size_t batch_take_jobs(struct dispatch_batch *b, uint64_t *out, size_t want)
{
    uint64_t limit = (b->desc.order == DISPATCH_ORDER_INPUT ? b->base : b->delivered) + b->window;
    size_t n = 0;
    while (n < want) {
        if (b->nretry > 0) {
            out[n++] = b->retry[--b->nretry];
        } else if (b->next_job < b->desc.njobs && b->next_job < limit) {
            out[n++] = b->next_job++;
        } else {
            break;
        }
    }
    return n;
}

/* The window: two chunks per worker, within bounds, never more than the batch. */
static size_t batch_window_size(uint64_t njobs, size_t chunksize, int workers)
{
    uint64_t w = 2 * (uint64_t)chunksize * (uint64_t)workers;
    if (w < BATCH_MIN_WINDOW) {
        w = BATCH_MIN_WINDOW;
    }
    if (w > BATCH_MAX_WINDOW) {
        w = BATCH_MAX_WINDOW;
    }
    if (w > njobs) {
        w = njobs > 0 ? njobs : 1; /* a small batch needs no bigger ring */
    }
    return (size_t)w;
}

struct dispatch_batch *batch_create(struct dispatch *d, const struct dispatch_batch_desc *desc,
                                    size_t chunksize)
{
    static uint64_t last_serial;
    struct dispatch_batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    b->d = d;
    b->desc = *desc;
    b->serial = ++last_serial;
    /* The batch keeps its own handle on the input bytes: a chunk may still be on its way
     * to a worker after the owner has gone. */
    if (desc->blob_fd >= 0) {
        b->desc.blob_fd = fcntl(desc->blob_fd, F_DUPFD_CLOEXEC, 0);
    }
    b->started_ns = ipc_now_ns();
    if (desc->deadline_ms > 0) {
        b->deadline_ns = b->started_ns + desc->deadline_ms * 1000000u;
    }
    b->window = batch_window_size(desc->njobs, chunksize, d->cfg.workers);
    b->chunksize = chunksize > b->window ? b->window : chunksize;
    if (desc->order == DISPATCH_ORDER_INPUT) {
        b->ring = calloc(b->window, sizeof *b->ring);
        if (b->ring == NULL) {
            batch_free(b);
            return NULL;
        }
    }
    d->nbatches++;
    d->queued_jobs += desc->njobs;
    d->empty_pending += desc->njobs == 0;
    batch_ring_insert(d, b);
    return b;
}
