/* The worker loop. Each job is run in isolation: its input is parsed, the op runs, its
 * result is framed, and everything it allocated is freed before the next job. Results are
 * sent in batches for tiny jobs and at once for slow ones, so streaming stays per job. */
#include "worker.h"

#include "../api/batch.h"
#include "../api/errors.h"
#include "../api/job.h"
#include "../api/jsonmem.h"
#include "../api/jsonw.h"
#include "../api/torture.h"
#include "frames.h"
#include "ipc.h"
#include "ops/module.h"
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
    /* The RESULTS frame being filled, and its writer. */
    struct buf out;
    struct frames_results_writer res;
    struct buf block;     /* NDJSON lines of the open block record (FRAMES_RUN_BLOCK) */
    uint64_t block_first; /* index of its first job */
    uint64_t block_count;
    uint64_t block_busy_ns;
    uint32_t block_op;   /* the op of its jobs: a block holds one op */
    json_t *scratch_int; /* reused as the input of integer jobs (no allocation per job) */
    const char *data_dir;
    const char *output_dir;
    struct job_limits limits; /* handed to every job */
};

static void worker_frame_begin(struct worker *w)
{
    frames_results_begin(&w->res, &w->out);
}

/* Adds an error record (ERR, MSG) for job INDEX; on failure the frame is left as it was,
 * never with half a record (frames_results_add). */
static void worker_put_failure(struct worker *w, uint64_t index, int err, uint64_t t0, uint64_t t1,
                               const char *msg)
{
    struct frames_result r;
    r.index = index;
    r.err = err;
    r.start_ns = t0;
    r.end_ns = t1;
    r.block_count = 0;
    r.nblobs = 0;
    r.text = msg;
    r.text_len = (uint32_t)strlen(msg);
    (void)frames_results_add(&w->res, &r);
}

/* Closes the open block into a record of the frame. */
static void worker_block_close(struct worker *w)
{
    if (w->block_count == 0) {
        return;
    }
    const uint64_t first = w->block_first, count = w->block_count;
    struct frames_result r;
    r.index = w->block_first;
    r.block_count = w->block_count;
    r.busy_ns = w->block_busy_ns;
    r.text = buf_data(&w->block);
    r.text_len = (uint32_t)buf_len(&w->block);
    int rc = frames_results_add(&w->res, &r);
    buf_reset(&w->block);
    w->block_count = 0;
    w->block_busy_ns = 0;
    if (rc == 0) {
        return;
    }
    /* The block is bounded by WORKER_FLUSH_BYTES, far below the frame cap, so this is memory
     * running out. Without a record the server would wait for these jobs; each gets an
     * error record instead. */
    const uint64_t now = ipc_now_ns();
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
    if (jsonw_result_line(&w->block, index, buf_data(o->json), buf_len(o->json)) != 0) {
        return -1;
    }
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
    if (frames_results_count(&w->res) == 0) {
        return 0;
    }
    frames_results_end(&w->res);
    int rc = ipc_send_all(w->sock, buf_data(&w->out), buf_len(&w->out), -1);
    worker_frame_begin(w);
    return rc;
}

static void worker_put_result(struct worker *w, uint64_t index, int err, uint64_t t0,
                              uint64_t t1, struct job_output *o)
{
    worker_block_close(w); /* records stay in job order */
    /* Field by field, as job_output_init does: the blob slots are set only when used. */
    struct frames_result r;
    r.index = index;
    r.err = err;
    r.start_ns = t0;
    r.end_ns = t1;
    r.block_count = 0;
    r.nblobs = 0;
    if (err == 0) {
        r.text = buf_data(o->json);
        r.text_len = (uint32_t)buf_len(o->json);
        r.nblobs = (uint32_t)o->nblobs;
        for (int i = 0; i < o->nblobs; i++) {
            r.blobs[i].name = o->blobs[i].name;
            r.blobs[i].data = (const uint8_t *)buf_data(&o->blobs[i].bytes);
            r.blobs[i].len = (uint32_t)buf_len(&o->blobs[i].bytes);
        }
    } else {
        r.text = o->message;
        r.text_len = (uint32_t)strlen(o->message);
    }
    errno = 0; /* a put fails past the frame cap (errno untouched) or with realloc (ENOMEM) */
    if (frames_results_add(&w->res, &r) != 0) {
        /* The result does not fit in a frame, or memory ran out: report that instead. */
        const int oom = errno == ENOMEM;
        worker_put_failure(w, index, oom ? -BATCHD_E_INTERNAL : -BATCHD_E_TOO_LARGE, t0, t1,
                           oom ? "out of memory for the result"
                               : "the result is larger than a worker frame may carry");
    }
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

/* The state of one chunk while its RUN frame is decoded and its jobs run. */
struct worker_chunk {
    struct worker *w;
    uint32_t flags;
    json_t *params;  /* the chunk's, or NULL */
    int params_lost; /* its text did not come back whole: an allocation failed (jsonmem.h) */
    int blob_fd;
    const uint8_t *blob_map;
    size_t blob_map_len;
    struct buf json; /* a job's result JSON, reused */
    uint64_t now;    /* when the previous job ended (the next one starts then) */
};

static int worker_chunk_head(void *ud, const struct frames_run_head *h)
{
    struct worker_chunk *c = ud;
    c->flags = h->flags;
    const unsigned long failed = jsonmem_failures();
    if (h->params != NULL) {
        c->params = json_loadb(h->params, h->params_len, JSON_DECODE_ANY, NULL);
        c->params_lost = c->params == NULL;
    }
    /* A parse that lost an allocation may have dropped a byte (jsonmem.h). */
    c->params_lost = c->params_lost || jsonmem_failures() != failed;
    if (c->blob_fd >= 0) {
        struct stat st;
        if (fstat(c->blob_fd, &st) == 0 && st.st_size > 0) {
            void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, c->blob_fd, 0);
            if (m != MAP_FAILED) {
                c->blob_map = m;
                c->blob_map_len = (size_t)st.st_size;
            }
        }
    }
    c->now = ipc_now_ns();
    return 0;
}

/* The job's params: its own merged over the chunk's (job_params_merge). New, or NULL when
 * there are none; *LOST is set when its text did not come back or memory ran out. */
static json_t *worker_job_params(const struct worker_chunk *c, const struct frames_run_job *j,
                                 int *lost)
{
    json_t *own =
        j->params_len > 0 ? json_loadb(j->params, j->params_len, JSON_DECODE_ANY, NULL) : NULL;
    int oom;
    json_t *merged = job_params_merge(c->params, own, &oom);
    *lost = (j->params_len > 0 && own == NULL) || oom;
    json_decref(own);
    return merged;
}

/* Runs op OP on IN (VALUE its parsed input) into O; returns the job's error code. LOST: the
 * job's texts did not all come back (an allocation failed), so it must not run. */
static int worker_job_exec(const struct op *op, const struct frames_run_job *j, const json_t *value,
                           int lost, const struct job_input *in, struct job_output *o)
{
    if (op == NULL) {
        snprintf(o->message, sizeof o->message, "no op with index %u", j->op);
        return -BATCHD_E_INTERNAL;
    }
    if (j->value_len > 0 &&
        memmem(j->value, j->value_len, BATCH_BIGINT_MARK, sizeof BATCH_BIGINT_MARK - 1) != NULL) {
        snprintf(o->message, sizeof o->message,
                 "the input holds an integer that does not fit in 64 bits");
        return -BATCHD_E_OVERFLOW;
    }
    /* The server wrote every text here from JSON it had parsed: a text that does not come
     * back is an allocation that failed, never a bad input. */
    if (lost || (j->value_len > 0 && value == NULL)) {
        snprintf(o->message, sizeof o->message, "out of memory reading the job");
        return -BATCHD_E_INTERNAL;
    }
    return ops_run(op, in, o);
}

/* Runs one job of the chunk: says on the control page that it runs, parses its input, runs
 * the op, frames the result and flushes when due. Returns 0, or -1 when the server is gone. */
static int worker_run_job(void *ud, const struct frames_run_head *h, const struct frames_run_job *j)
{
    struct worker_chunk *c = ud;
    struct worker *w = c->w;
    const struct op *op = ops_at(j->op);
    if (op != NULL && (op->flags & OP_SLOW)) {
        /* A slow job's result must not wait behind the results of the quick ones. */
        if ((frames_results_count(&w->res) > 0 || w->block_count > 0) && worker_flush(w) != 0) {
            return -1;
        }
        c->now = ipc_now_ns(); /* the flush may have waited */
    }
    /* Say which job runs before touching its input: if parsing it kills us, the server
     * must blame this job and not re-run it elsewhere. */
    /* One clock read per job: a job starts when the previous one ended (framing its
     * result is noise), or now after a send that may have waited. Release stores: the
     * server reads running, then the rest; x86 keeps them in order without a fence,
     * where seq_cst stores cost a locked instruction each, per tiny job. */
    uint64_t t0 = c->now;
    atomic_store_explicit(&w->ctl->job_index, j->index, memory_order_release);
    atomic_store_explicit(&w->ctl->job_started_ns, t0, memory_order_release);
    atomic_store_explicit(&w->ctl->running, 1, memory_order_release);
    struct job_output o;
    job_output_init(&o, &c->json);
    const unsigned long job_failed = jsonmem_failures();
    json_t *value = j->is_int          ? worker_int_value(w, j->ival)
                    : j->value_len > 0 ? worker_parse_value(w, j->value, j->value_len)
                                       : NULL;
    int lost;
    json_t *job_params = worker_job_params(c, j, &lost);
    lost =
        lost || (j->is_int && value == NULL) || c->params_lost || jsonmem_failures() != job_failed;
    char name[256] = "";
    if (j->name_len > 0) {
        snprintf(name, sizeof name, "%.*s", (int)j->name_len, j->name);
    }
    struct job_input in = {
        .value = value,
        .params = job_params,
        .data_dir = w->data_dir,
        .output_dir = w->output_dir,
        .name = j->name_len > 0 ? name : NULL,
        .index = j->index,
        .want_binary = (c->flags & FRAMES_RUN_WANT_BINARY) != 0,
        .limits = &w->limits,
        .batch = h->batch,
        .timeout_ms = h->timeout_ms,
    };
    if (j->blob_len > 0 && c->blob_map != NULL && j->blob_off <= c->blob_map_len &&
        j->blob_len <= c->blob_map_len - j->blob_off) {
        in.blob = c->blob_map + j->blob_off;
        in.blob_len = (size_t)j->blob_len;
    }
    int err = worker_job_exec(op, j, value, lost, &in, &o);
    uint64_t t1 = ipc_now_ns();
    c->now = t1;
    if (err != 0 && o.message[0] == '\0') {
        snprintf(o.message, sizeof o.message, "%s", batchd_err_message(err));
    }
    const int block = (c->flags & FRAMES_RUN_BLOCK) != 0;
    if (!(err == 0 && block && worker_block_add(w, j->index, j->op, t0, t1, &o) == 0)) {
        worker_put_result(w, j->index, err, t0, t1, &o);
    }
    atomic_store_explicit(&w->ctl->running, 0, memory_order_release);
    job_output_cleanup(&o);
    json_decref(value);
    json_decref(job_params);
    if (frames_results_count(&w->res) + w->block_count >= WORKER_FLUSH_COUNT ||
        buf_len(&w->out) + buf_len(&w->block) >= WORKER_FLUSH_BYTES ||
        t1 - t0 >= WORKER_FLUSH_SLOW_NS) {
        if (worker_flush(w) != 0) {
            return -1;
        }
        c->now = ipc_now_ns();
    }
    return 0;
}

/* Runs the jobs of one RUN frame. Returns 0, or -1 when the server is gone. A malformed
 * frame (a server bug) ends the chunk at the fault, as if it ended there. */
static int worker_run_chunk(struct worker *w, const uint8_t *body, size_t len, int blob_fd)
{
    /* Torture builds: the Nth allocation of every chunk fails (a no-op otherwise). */
    torture_arm_env("BATCHD_WORKER_FAIL_ALLOC_AT");
    struct worker_chunk c = {.w = w, .blob_fd = blob_fd};
    buf_init(&c.json, IPC_MAX_FRAME / 2);
    const struct frames_run_sink sink = {
        .head = worker_chunk_head, .job = worker_run_job, .ud = &c};
    int rc = frames_run_decode(body, len, &sink) == -1 ? -1 : 0;
    if (rc == 0 && worker_flush(w) != 0) {
        rc = -1;
    }
    buf_cleanup(&c.json);
    json_decref(c.params);
    if (c.blob_map != NULL) {
        munmap((void *)c.blob_map, c.blob_map_len);
    }
    return rc;
}

static void worker_limit_memory(uint64_t bytes)
{
    /* RLIMIT_AS bounds what a hostile input can make a worker allocate. AddressSanitizer
     * reserves terabytes of shadow memory, so sanitized builds skip the limit. */
#if defined(__SANITIZE_ADDRESS__)
    (void)bytes;
    return;
#else
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
    (void)bytes;
    return;
#endif
#endif
    if (bytes > 0) {
        struct rlimit rl = {(rlim_t)bytes, (rlim_t)bytes};
        setrlimit(RLIMIT_AS, &rl);
    }
#endif
}

/* Reads the CONFIG frame, the first the pool writes (pool.c), into *CFG. Returns 0, or -1
 * when the socket closed first or the frame is not one. */
static int worker_read_config(int sock, struct worker_config *cfg)
{
    struct ipc_header h;
    uint8_t body[3 * 8 + 2 * (4 + PATH_MAX)];
    if (ipc_recv_all(sock, &h, sizeof h, NULL) != 0 || h.magic != IPC_MAGIC ||
        h.type != IPC_CONFIG || h.len > sizeof body || ipc_recv_all(sock, body, h.len, NULL) != 0) {
        return -1;
    }
    return frames_config_decode(body, h.len, cfg) == 0 ? 0 : -1;
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
    /* Static: two folders of PATH_MAX are more than a stack frame should carry. */
    static struct worker_config cfg;
    if (worker_read_config(sock, &cfg) != 0) {
        return 2;
    }
    /* A test hook, read once: the fallback path of open_beneath (img_op.c). */
    cfg.limits.no_openat2 = getenv("BATCHD_TEST_NO_OPENAT2") != NULL;
    worker_limit_memory(cfg.memory_bytes);
    struct worker w = {.sock = sock, .limits = cfg.limits};
    void *m = mmap(NULL, sizeof(struct ipc_control), PROT_READ | PROT_WRITE, MAP_SHARED, ctl_fd,
                   0);
    if (m == MAP_FAILED) {
        return 1;
    }
    w.ctl = m;
    atomic_store(&w.ctl->pid, (uint32_t)getpid());
    w.data_dir = cfg.data_dir[0] != '\0' ? cfg.data_dir : NULL;
    w.output_dir = cfg.output_dir[0] != '\0' ? cfg.output_dir : NULL;
    /* The server loaded these already, so they load here too; if one does not, this worker
     * must not run jobs with another op table. */
    char why[1024];
    if (module_load_all(cfg.modules, why, sizeof why) != 0) {
        fprintf(stderr, "batchd-worker: %s\n", why);
        return 2;
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
