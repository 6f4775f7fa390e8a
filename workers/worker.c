/* The worker loop. Each job is run in isolation: its input is parsed, the op runs, its
 * result is framed, and everything it allocated is freed before the next job. Results are
 * sent in batches for tiny jobs and at once for slow ones, so streaming stays per job. */
#include "worker.h"

#include "../api/batch.h"
#include "../api/errors.h"
#include "ipc.h"
#include "ops.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Results are flushed when this many are buffered, when the buffer is this big, or when a
 * job took long enough that its result should not wait for the next one. */
#define WORKER_FLUSH_COUNT 512
#define WORKER_FLUSH_BYTES (256u * 1024)
#define WORKER_FLUSH_SLOW_NS 100000u

struct worker {
    int sock;
    struct ipc_control *ctl;
    struct buf out;  /* the RESULTS frame being filled */
    uint32_t nout;   /* results in it */
    size_t count_at; /* offset of the count field */
    const char *data_dir;
    const char *output_dir;
};

static void worker_frame_begin(struct worker *w)
{
    buf_reset(&w->out);
    ipc_put_header(&w->out, IPC_RESULTS, 0);
    w->count_at = buf_len(&w->out);
    ipc_put_u32(&w->out, 0);
    w->nout = 0;
}

static int worker_flush(struct worker *w)
{
    if (w->nout == 0) {
        return 0;
    }
    memcpy((char *)buf_data(&w->out) + w->count_at, &w->nout, sizeof w->nout);
    ipc_patch_length(&w->out, 0);
    int rc = ipc_send_all(w->sock, buf_data(&w->out), buf_len(&w->out), -1);
    worker_frame_begin(w);
    return rc;
}

static void worker_put_result(struct worker *w, uint64_t index, int err, uint64_t t0,
                              uint64_t t1, struct job_output *o)
{
    size_t mark = buf_len(&w->out);
    int rc = 0;
    rc |= ipc_put_u64(&w->out, index);
    rc |= ipc_put_u32(&w->out, (uint32_t)err);
    rc |= ipc_put_u64(&w->out, t0);
    rc |= ipc_put_u64(&w->out, t1);
    if (err == 0) {
        rc |= ipc_put_bytes(&w->out, buf_data(o->json), (uint32_t)buf_len(o->json));
        rc |= ipc_put_u32(&w->out, (uint32_t)o->nblobs);
        for (int i = 0; i < o->nblobs; i++) {
            rc |= ipc_put_bytes(&w->out, o->blobs[i].name, (uint32_t)strlen(o->blobs[i].name));
            rc |= ipc_put_bytes(&w->out, buf_data(&o->blobs[i].bytes),
                                (uint32_t)buf_len(&o->blobs[i].bytes));
        }
    } else {
        rc |= ipc_put_bytes(&w->out, o->message, (uint32_t)strlen(o->message));
        rc |= ipc_put_u32(&w->out, 0);
    }
    if (rc != 0) {
        /* The result does not fit in a frame: report that instead of the result. */
        buf_truncate(&w->out, mark);
        static const char msg[] = "the result is larger than a worker frame may carry";
        ipc_put_u64(&w->out, index);
        ipc_put_u32(&w->out, (uint32_t)-BATCHD_E_TOO_LARGE);
        ipc_put_u64(&w->out, t0);
        ipc_put_u64(&w->out, t1);
        ipc_put_bytes(&w->out, msg, sizeof msg - 1);
        ipc_put_u32(&w->out, 0);
    }
    w->nout++;
}

static void job_output_init(struct job_output *o, struct buf *json)
{
    memset(o, 0, sizeof *o);
    o->json = json;
    buf_reset(json);
}

static void job_output_cleanup(struct job_output *o)
{
    for (int i = 0; i < o->nblobs; i++) {
        buf_cleanup(&o->blobs[i].bytes);
    }
    o->nblobs = 0;
}

/* Runs the jobs of one RUN frame. Returns 0, or -1 when the server is gone. */
static int worker_run_chunk(struct worker *w, const uint8_t *body, size_t len, int blob_fd)
{
    struct ipc_reader r;
    ipc_reader_init(&r, body, len);
    uint32_t njobs = ipc_get_u32(&r);
    uint32_t flags = ipc_get_u32(&r);
    uint32_t plen;
    const char *ptext = ipc_get_bytes(&r, &plen);
    json_t *chunk_params = NULL;
    if (plen > 0) {
        chunk_params = json_loadb(ptext, plen, JSON_DECODE_ANY, NULL);
    }
    const uint8_t *blob_map = NULL;
    size_t blob_map_len = 0;
    if (blob_fd >= 0) {
        struct stat st;
        if (fstat(blob_fd, &st) == 0 && st.st_size > 0) {
            void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, blob_fd, 0);
            if (m != MAP_FAILED) {
                blob_map = m;
                blob_map_len = (size_t)st.st_size;
            }
        }
    }
    struct buf json;
    buf_init(&json, IPC_MAX_FRAME / 2);
    int rc = 0;
    for (uint32_t i = 0; i < njobs && !r.bad; i++) {
        uint64_t index = ipc_get_u64(&r);
        uint32_t opi = ipc_get_u32(&r);
        uint32_t vlen, jplen, nlen;
        const char *vtext = ipc_get_bytes(&r, &vlen);
        const char *jptext = ipc_get_bytes(&r, &jplen);
        const char *ntext = ipc_get_bytes(&r, &nlen);
        uint64_t boff = ipc_get_u64(&r);
        uint64_t blen = ipc_get_u64(&r);
        if (r.bad) {
            break;
        }
        const struct op *op = ops_at(opi);
        if (op != NULL && (op->flags & OP_SLOW) && w->nout > 0 && worker_flush(w) != 0) {
            rc = -1;
            break;
        }
        /* Say which job runs before touching its input: if parsing it kills us, the server
         * must blame this job and not re-run it elsewhere. */
        uint64_t t0 = ipc_now_ns();
        atomic_store(&w->ctl->job_index, index);
        atomic_store(&w->ctl->job_started_ns, t0);
        atomic_store(&w->ctl->running, 1);
        struct job_output o;
        job_output_init(&o, &json);
        json_t *value = vlen > 0 ? json_loadb(vtext, vlen, JSON_DECODE_ANY, NULL) : NULL;
        json_t *job_params = jplen > 0 ? json_loadb(jptext, jplen, JSON_DECODE_ANY, NULL) : NULL;
        char name[256] = "";
        if (nlen > 0) {
            snprintf(name, sizeof name, "%.*s", (int)nlen, ntext);
        }
        /* A job's own params override the batch's key by key. */
        if (job_params != NULL && json_is_object(chunk_params) && json_is_object(job_params)) {
            json_t *merged = json_copy(chunk_params);
            if (merged != NULL && json_object_update(merged, job_params) == 0) {
                json_decref(job_params);
                job_params = merged;
            } else {
                json_decref(merged);
            }
        }
        struct job_input in = {
            .value = value,
            .params = job_params != NULL ? job_params : chunk_params,
            .data_dir = w->data_dir,
            .output_dir = w->output_dir,
            .name = nlen > 0 ? name : NULL,
            .index = index,
            .want_binary = (flags & IPC_RUN_WANT_BINARY) != 0,
        };
        if (blen > 0 && blob_map != NULL && boff <= blob_map_len && blen <= blob_map_len - boff) {
            in.blob = blob_map + boff;
            in.blob_len = (size_t)blen;
        }
        int err;
        if (op == NULL) {
            err = -BATCHD_E_INTERNAL;
            snprintf(o.message, sizeof o.message, "no op with index %u", opi);
        } else if (vlen > 0 && memmem(vtext, vlen, BATCH_BIGINT_MARK,
                                      sizeof BATCH_BIGINT_MARK - 1) != NULL) {
            err = -BATCHD_E_OVERFLOW;
            snprintf(o.message, sizeof o.message,
                     "the input holds an integer that does not fit in 64 bits");
        } else if (vlen > 0 && value == NULL) {
            err = -BATCHD_E_INVALID_INPUT;
            snprintf(o.message, sizeof o.message, "the input could not be read");
        } else {
            err = op->run(&in, &o);
        }
        uint64_t t1 = ipc_now_ns();
        if (err != 0 && o.message[0] == '\0') {
            snprintf(o.message, sizeof o.message, "%s", batchd_err_message(err));
        }
        worker_put_result(w, index, err, t0, t1, &o);
        atomic_store(&w->ctl->running, 0);
        job_output_cleanup(&o);
        json_decref(value);
        json_decref(job_params);
        if (w->nout >= WORKER_FLUSH_COUNT || buf_len(&w->out) >= WORKER_FLUSH_BYTES ||
            t1 - t0 >= WORKER_FLUSH_SLOW_NS) {
            if (worker_flush(w) != 0) {
                rc = -1;
                break;
            }
        }
    }
    if (rc == 0 && worker_flush(w) != 0) {
        rc = -1;
    }
    buf_cleanup(&json);
    json_decref(chunk_params);
    if (blob_map != NULL) {
        munmap((void *)blob_map, blob_map_len);
    }
    return rc;
}

static void worker_limit_memory(void)
{
    /* RLIMIT_AS bounds what a hostile input can make a worker allocate. AddressSanitizer
     * reserves terabytes of shadow memory, so sanitized builds skip the limit. */
#if defined(__SANITIZE_ADDRESS__)
    return;
#else
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
    return;
#endif
#endif
    const char *s = getenv("BATCHD_WORKER_MEMORY");
    char *end = NULL;
    unsigned long long bytes = s != NULL ? strtoull(s, &end, 10) : 0;
    if (bytes > 0 && end != NULL && *end == '\0') {
        struct rlimit rl = {(rlim_t)bytes, (rlim_t)bytes};
        setrlimit(RLIMIT_AS, &rl);
    }
#endif
}

int worker_main(int sock, int ctl_fd, long parent)
{
    prctl(PR_SET_NAME, "batchd-worker", 0, 0, 0);
    /* Die with the server: a worker must never outlive it and keep its port's clients. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (parent > 0 && getppid() != (pid_t)parent) {
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(1);
    worker_limit_memory();
    struct worker w = {.sock = sock};
    void *m = mmap(NULL, sizeof(struct ipc_control), PROT_READ | PROT_WRITE, MAP_SHARED, ctl_fd,
                   0);
    if (m == MAP_FAILED) {
        return 1;
    }
    w.ctl = m;
    atomic_store(&w.ctl->pid, (uint32_t)getpid());
    w.data_dir = getenv("BATCHD_DATA_DIR");
    w.output_dir = getenv("BATCHD_OUTPUT_DIR");
    if (w.data_dir != NULL && w.data_dir[0] == '\0') {
        w.data_dir = NULL;
    }
    if (w.output_dir != NULL && w.output_dir[0] == '\0') {
        w.output_dir = NULL;
    }
    buf_init(&w.out, IPC_MAX_FRAME);
    worker_frame_begin(&w);
    struct buf body;
    buf_init(&body, IPC_MAX_FRAME);
    int status = 0;
    for (;;) {
        struct ipc_header h;
        int fd = -1;
        if (ipc_recv_all(sock, &h, sizeof h, &fd) != 0) {
            break; /* the server closed our socket: exit quietly */
        }
        if (h.magic != IPC_MAGIC || h.len > IPC_MAX_FRAME) {
            status = 2;
            break;
        }
        buf_reset(&body);
        char *dst = buf_reserve(&body, h.len);
        if (dst == NULL || ipc_recv_all(sock, dst, h.len, &fd) != 0) {
            if (fd >= 0) {
                close(fd);
            }
            break;
        }
        buf_commit(&body, h.len);
        if (h.type == IPC_QUIT) {
            if (fd >= 0) {
                close(fd);
            }
            break;
        }
        int rc = 0;
        if (h.type == IPC_RUN) {
            rc = worker_run_chunk(&w, (const uint8_t *)buf_data(&body), h.len, fd);
        }
        if (fd >= 0) {
            close(fd);
        }
        if (rc != 0) {
            break;
        }
    }
    buf_cleanup(&body);
    buf_cleanup(&w.out);
    munmap(m, sizeof(struct ipc_control));
    return status;
}
