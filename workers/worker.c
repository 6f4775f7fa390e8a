/* The worker loop. Each job is run in isolation: its input is parsed, the op runs, its
 * result is framed, and everything it allocated is freed before the next job. Results are
 * sent in batches for tiny jobs and at once for slow ones, so streaming stays per job. */
#include "worker.h"

#include "../api/batch.h"
#include "../api/errors.h"
#include "../api/job.h"
#include "../api/jsonmem.h"
#include "../api/torture.h"
#include "ipc.h"
#include "ops/ops.h"

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
    struct buf block;     /* NDJSON lines of the open block record (IPC_RUN_BLOCK) */
    uint64_t block_first; /* index of its first job */
    uint64_t block_count;
    uint64_t block_busy_ns;
    uint32_t block_op;   /* the op of its jobs: a block holds one op */
    json_t *scratch_int; /* reused as the input of integer jobs (no allocation per job) */
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

/* Appends an error record (ERR, MSG) for job INDEX to the frame; on failure the frame is
 * left as it was, never with half a record. */
static void worker_put_failure(struct worker *w, uint64_t index, int err, uint64_t t0, uint64_t t1,
                               const char *msg)
{
    size_t mark = buf_len(&w->out);
    int rc = 0;
    rc |= ipc_put_u64(&w->out, index);
    rc |= ipc_put_u32(&w->out, (uint32_t)err);
    rc |= ipc_put_u64(&w->out, t0);
    rc |= ipc_put_u64(&w->out, t1);
    rc |= ipc_put_bytes(&w->out, msg, (uint32_t)strlen(msg));
    rc |= ipc_put_u32(&w->out, 0);
    if (rc != 0) {
        buf_truncate(&w->out, mark);
        return;
    }
    w->nout++;
}

/* Closes the open block into a record of the frame. */
static void worker_block_close(struct worker *w)
{
    if (w->block_count == 0) {
        return;
    }
    const uint64_t first = w->block_first, count = w->block_count, now = ipc_now_ns();
    size_t mark = buf_len(&w->out);
    int rc = 0;
    rc |= ipc_put_u64(&w->out, w->block_first);
    rc |= ipc_put_u32(&w->out, (uint32_t)IPC_ERR_BLOCK);
    rc |= ipc_put_u64(&w->out, w->block_busy_ns);
    rc |= ipc_put_u64(&w->out, w->block_count);
    rc |= ipc_put_bytes(&w->out, buf_data(&w->block), (uint32_t)buf_len(&w->block));
    rc |= ipc_put_u32(&w->out, 0);
    buf_reset(&w->block);
    w->block_count = 0;
    w->block_busy_ns = 0;
    if (rc == 0) {
        w->nout++;
        return;
    }
    /* The block is bounded far below the frame cap, so this is memory running out. Half a
     * record would break the frame (the server then kills us and re-runs the chunk, which
     * fails the same way, forever): each job of the block gets an error record instead. */
    buf_truncate(&w->out, mark);
    for (uint64_t k = 0; k < count; k++) {
        worker_put_failure(w, first + k, -BATCHD_E_INTERNAL, now, now,
                           "out of memory for the result");
    }
}

/* Adds a successful result of job INDEX to the open block (opening one if needed). Returns 0,
 * or -1 when it cannot be a block line (the caller frames it on its own). */
static int worker_block_add(struct worker *w, uint64_t index, uint32_t opi, uint64_t t0,
                            uint64_t t1, const struct job_output *o)
{
    if (o->nblobs > 0) {
        return -1;
    }
    if (w->block_count > 0 && (index != w->block_first + w->block_count || opi != w->block_op)) {
        worker_block_close(w);
    }
    size_t need = 32 + 12 + buf_len(o->json);
    char *dst = buf_reserve(&w->block, need);
    if (dst == NULL) {
        return -1;
    }
    char *p = dst;
    memcpy(p, "{\"index\":", 9);
    p += 9;
    char digits[20];
    int nd = 0;
    uint64_t i = index;
    do {
        digits[nd++] = (char)('0' + i % 10);
        i /= 10;
    } while (i > 0);
    while (nd > 0) {
        *p++ = digits[--nd];
    }
    memcpy(p, ",\"result\":", 10);
    p += 10;
    memcpy(p, buf_data(o->json), buf_len(o->json));
    p += buf_len(o->json);
    *p++ = '}';
    *p++ = '\n';
    buf_commit(&w->block, (size_t)(p - dst));
    if (w->block_count == 0) {
        w->block_first = index;
        w->block_op = opi;
    }
    w->block_count++;
    w->block_busy_ns += t1 - t0;
    return 0;
}

static int worker_flush(struct worker *w)
{
    worker_block_close(w);
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
    worker_block_close(w); /* records stay in job order */
    size_t mark = buf_len(&w->out);
    int rc = 0;
    errno = 0; /* a put fails past the frame cap (errno untouched) or with realloc (ENOMEM) */
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
        /* The result does not fit in a frame, or memory ran out: report that instead. */
        const int oom = errno == ENOMEM;
        buf_truncate(&w->out, mark);
        worker_put_failure(w, index, oom ? -BATCHD_E_INTERNAL : -BATCHD_E_TOO_LARGE, t0, t1,
                           oom ? "out of memory for the result"
                               : "the result is larger than a worker frame may carry");
        return;
    }
    w->nout++;
}

static void job_output_init(struct job_output *o, struct buf *json)
{
    /* Field by field: the blob slots (1.5 KiB) are set up by the op that fills them, and
     * zeroing them cost more than a tiny job itself. */
    o->json = json;
    o->err = 0;
    o->message[0] = '\0';
    o->nblobs = 0;
    buf_reset(json);
}

static void job_output_cleanup(struct job_output *o)
{
    for (int i = 0; i < o->nblobs; i++) {
        buf_cleanup(&o->blobs[i].bytes);
    }
    o->nblobs = 0;
}

/* A job's input: a plain integer (what numeric batches mostly send, written by the
 * dispatcher as bare digits) is read here, everything else by jansson. */
static json_t *worker_int_value(struct worker *w, int64_t v)
{
    /* The scratch integer, unless a job kept a reference to it (none does today). */
    if (w->scratch_int != NULL && w->scratch_int->refcount == 1 &&
        json_integer_set(w->scratch_int, v) == 0) {
        return json_incref(w->scratch_int);
    }
    return json_integer(v);
}

static json_t *worker_parse_value(struct worker *w, const char *t, uint32_t len)
{
    uint32_t i = t[0] == '-' ? 1 : 0;
    if (len > i && len - i <= 18 && (t[i] != '0' || len - i == 1)) {
        int64_t v = 0;
        uint32_t k = i;
        for (; k < len && t[k] >= '0' && t[k] <= '9'; k++) {
            v = v * 10 + (t[k] - '0');
        }
        if (k == len) {
            return worker_int_value(w, i ? -v : v);
        }
    }
    return json_loadb(t, len, JSON_DECODE_ANY, NULL);
}

/* Runs the jobs of one RUN frame. Returns 0, or -1 when the server is gone. */
static int worker_run_chunk(struct worker *w, const uint8_t *body, size_t len, int blob_fd)
{
    /* Torture builds: the Nth allocation of every chunk fails (a no-op otherwise). */
    torture_arm_env("BATCHD_WORKER_FAIL_ALLOC_AT");
    struct ipc_reader r;
    ipc_reader_init(&r, body, len);
    uint32_t njobs = ipc_get_u32(&r);
    uint32_t flags = ipc_get_u32(&r);
    const int block = (flags & IPC_RUN_BLOCK) != 0;
    const int ints = (flags & IPC_RUN_INTS) != 0;
    uint32_t plen;
    const char *ptext = ipc_get_bytes(&r, &plen);
    const uint32_t ints_op = ints ? ipc_get_u32(&r) : 0;
    json_t *chunk_params = NULL;
    const unsigned long failed = jsonmem_failures();
    if (plen > 0) {
        chunk_params = json_loadb(ptext, plen, JSON_DECODE_ANY, NULL);
    }
    /* A parse that lost an allocation may have dropped a byte (jsonmem.h). */
    const int params_lost = jsonmem_failures() != failed;
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
    uint64_t now = ipc_now_ns();
    for (uint32_t i = 0; i < njobs && !r.bad; i++) {
        uint64_t index = ipc_get_u64(&r);
        uint32_t opi = ints_op;
        uint32_t vlen = 0, jplen = 0, nlen = 0;
        const char *vtext = NULL, *jptext = NULL, *ntext = NULL;
        uint64_t boff = 0, blen = 0;
        int64_t ival = 0;
        if (ints) {
            ival = (int64_t)ipc_get_u64(&r);
        } else {
            opi = ipc_get_u32(&r);
            vtext = ipc_get_bytes(&r, &vlen);
            jptext = ipc_get_bytes(&r, &jplen);
            ntext = ipc_get_bytes(&r, &nlen);
            boff = ipc_get_u64(&r);
            blen = ipc_get_u64(&r);
        }
        if (r.bad) {
            break;
        }
        const struct op *op = ops_at(opi);
        if (op != NULL && (op->flags & OP_SLOW) && (w->nout > 0 || w->block_count > 0) &&
            worker_flush(w) != 0) {
            rc = -1;
            break;
        }
        if (op != NULL && (op->flags & OP_SLOW)) {
            now = ipc_now_ns(); /* the flush may have waited */
        }
        /* Say which job runs before touching its input: if parsing it kills us, the server
         * must blame this job and not re-run it elsewhere. */
        /* One clock read per job: a job starts when the previous one ended (framing its
         * result is noise), or now after a send that may have waited. Release stores: the
         * server reads running, then the rest; x86 keeps them in order without a fence,
         * where seq_cst stores cost a locked instruction each, per tiny job. */
        uint64_t t0 = now;
        atomic_store_explicit(&w->ctl->job_index, index, memory_order_release);
        atomic_store_explicit(&w->ctl->job_started_ns, t0, memory_order_release);
        atomic_store_explicit(&w->ctl->running, 1, memory_order_release);
        struct job_output o;
        job_output_init(&o, &json);
        const unsigned long job_failed = jsonmem_failures();
        json_t *value = ints       ? worker_int_value(w, ival)
                        : vlen > 0 ? worker_parse_value(w, vtext, vlen)
                                   : NULL;
        json_t *job_params = jplen > 0 ? json_loadb(jptext, jplen, JSON_DECODE_ANY, NULL) : NULL;
        char name[256] = "";
        if (nlen > 0) {
            snprintf(name, sizeof name, "%.*s", (int)nlen, ntext);
        }
        /* The server wrote every text here from JSON it had parsed: a text that does not
         * come back is an allocation that failed, never a bad input, and a job must then
         * fail rather than run without its params. */
        int lost = (ints && value == NULL) || (vlen > 0 && value == NULL) ||
                   (jplen > 0 && job_params == NULL) || (plen > 0 && chunk_params == NULL) ||
                   params_lost || jsonmem_failures() != job_failed;
        int oom;
        json_t *merged = job_params_merge(chunk_params, job_params, &oom);
        json_decref(job_params);
        job_params = merged;
        lost = lost || oom;
        struct job_input in = {
            .value = value,
            .params = job_params,
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
        } else if (lost) {
            err = -BATCHD_E_INTERNAL;
            snprintf(o.message, sizeof o.message, "out of memory reading the job");
        } else {
            err = op->run(&in, &o);
        }
        uint64_t t1 = ipc_now_ns();
        now = t1;
        if (err != 0 && o.message[0] == '\0') {
            snprintf(o.message, sizeof o.message, "%s", batchd_err_message(err));
        }
        if (!(err == 0 && block && worker_block_add(w, index, opi, t0, t1, &o) == 0)) {
            worker_put_result(w, index, err, t0, t1, &o);
        }
        atomic_store_explicit(&w->ctl->running, 0, memory_order_release);
        job_output_cleanup(&o);
        json_decref(value);
        json_decref(job_params);
        if (w->nout + w->block_count >= WORKER_FLUSH_COUNT ||
            buf_len(&w->out) + buf_len(&w->block) >= WORKER_FLUSH_BYTES ||
            t1 - t0 >= WORKER_FLUSH_SLOW_NS) {
            if (worker_flush(w) != 0) {
                rc = -1;
                break;
            }
            now = ipc_now_ns();
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
    buf_init(&w.block, IPC_MAX_FRAME / 2);
    w.scratch_int = json_integer(0);
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
    buf_cleanup(&w.block);
    json_decref(w.scratch_int);
    munmap(m, sizeof(struct ipc_control));
    return status;
}
