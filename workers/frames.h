/* The frames with a body between the server and its workers, in one place: RUN (a chunk
 * of jobs, server -> worker), RESULTS (outcomes of jobs of that chunk, worker -> server)
 * and CONFIG (the worker's limits and folders, server -> worker once at spawn), each with
 * one encoder and one decoder used by both ends (the dispatcher, the pool and the worker
 * loop) and by the tests. Not the socket I/O, the frame header or the control page: those
 * are ipc.h. Both ends are the same binary: integers are in host order.
 *
 * A RUN body: u32 njobs, u32 flags, u64 batch serial, u64 timeout_ms, u32 params_len, params
 * JSON; with FRAMES_RUN_INTS then u32 op and per job u64 index, i64 value (16 bytes, no JSON);
 * otherwise per job: u64 index, u32 op, u32 value_len, value JSON, u32 params_len (0 = the
 * chunk's), params, u32 name_len, name, u64 blob_off, u64 blob_len (into the fd passed with
 * the frame).
 * A RESULTS body: u32 count; then per record: u64 index, i32 err, u64 start_ns, u64 end_ns,
 * u32 text_len, text (the result JSON, or the error message), u32 nblobs, then per blob
 * u32 name_len, name, u32 len, bytes. A block record (err FRAMES_ERR_BLOCK) carries in
 * start_ns the summed run time and in end_ns the count of its jobs.
 * A CONFIG body: u64 memory_bytes, u64 max_input_pixels, u64 max_output_pixels, u64
 * lua_memory, u32 len + data_dir, u32 len + output_dir (each shorter than PATH_MAX, without
 * NUL), u32 len + modules (the --module paths, ':'-separated). */
#ifndef BATCHD_WORKERS_FRAMES_H
#define BATCHD_WORKERS_FRAMES_H

#include "../api/buf.h"
#include "ops/ops.h"
#include "worker.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* RUN flags. */
#define FRAMES_RUN_WANT_BINARY 1u
/* The server writes NDJSON without timing: successful results of consecutive jobs may come
 * back as one block record of ready-made lines. */
#define FRAMES_RUN_BLOCK 2u
/* Every job of the chunk is an integer input of one op, without params of its own or blob:
 * 16 bytes a job. */
#define FRAMES_RUN_INTS 4u

/* The err of a RESULTS record that is a block: COUNT consecutive jobs from INDEX all
 * succeeded, text their NDJSON lines, {"index":I,"result":R}\n each. Never a real error code
 * (those are negative and small). */
#define FRAMES_ERR_BLOCK 0x424c4b00

/* Blob names longer than this are cut when decoded (they are output file names). */
#define FRAMES_BLOB_NAME_MAX 71

/* ---------------------------------------------------------------- RUN */

/* One job to encode. Borrowed for the call that fills it. */
struct frames_job {
    const struct op *op;
    const json_t *value; /* the input; may be NULL (an empty value) */
    int has_int;         /* instead of value: the input is the integer ival */
    int64_t ival;
    const json_t *params; /* the job's own params, or NULL for the chunk's */
    const char *name;     /* or NULL */
    uint64_t blob_off, blob_len;
};

/* Describes job INDEX for the encoder (fills *JOB, zeroed by the caller). */
typedef void frames_job_fn(void *ud, uint64_t index, struct frames_job *job);

struct frames_run_desc {
    uint32_t flags;       /* FRAMES_RUN_WANT_BINARY, FRAMES_RUN_BLOCK; INTS is set by the encoder */
    uint64_t batch;       /* the batch's serial (per-batch state in the worker: op lua) */
    uint64_t timeout_ms;  /* the batch's per-job limit, 0 = none (op lua stops a job by it) */
    const json_t *params; /* the chunk's params, may be NULL */
    /* Either every job is the integer INTS[index] of op INTS_OP (the 16-byte form) ... */
    const int64_t *ints;
    const struct op *ints_op;
    /* ... or JOB_AT describes each. */
    frames_job_fn *job_at;
    void *ud;
};

/* Writes into OUT (reset first) the RUN frame, header included, of the jobs INDICES[0..N).
 * When OPS is not NULL, OPS[k] is set to job k's op. A job that does not fit under OUT's
 * cap ends the chunk early. Returns the jobs written (the first that many of INDICES; 0 also
 * when not even the head fits). */
size_t frames_run_encode(struct buf *out, const struct frames_run_desc *desc,
                         const uint64_t *indices, size_t n, const struct op **ops);

/* The head of a decoded RUN frame. Pointers borrow the frame's body. */
struct frames_run_head {
    uint32_t njobs, flags;
    uint64_t batch, timeout_ms;
    const char *params; /* JSON text, params_len bytes; NULL when there are none */
    uint32_t params_len;
    uint32_t ints_op; /* the op index of every job (FRAMES_RUN_INTS) */
};

/* One decoded job. Pointers borrow the frame's body; texts are not NUL-terminated. */
struct frames_run_job {
    uint64_t index;
    uint32_t op; /* index in the ops table (unchecked: ops_at may say NULL) */
    int is_int;  /* FRAMES_RUN_INTS: the value is ival, value is NULL */
    int64_t ival;
    const char *value, *params, *name;
    uint32_t value_len, params_len, name_len;
    uint64_t blob_off, blob_len;
};

/* What a decoded RUN frame is handed to: HEAD once, then JOB per job in order. Either may
 * return nonzero to stop the decoding (the decoder then returns that value). */
struct frames_run_sink {
    int (*head)(void *ud, const struct frames_run_head *h);
    int (*job)(void *ud, const struct frames_run_head *h, const struct frames_run_job *j);
    void *ud;
};

/* Decodes the RUN body BODY (LEN bytes, the frame without its header). Returns 0 when the
 * whole body was read, FRAMES_BAD when it is malformed (truncated, trailing bytes; the jobs
 * before the fault were handed over), or the sink's nonzero return. */
int frames_run_decode(const void *body, size_t len, const struct frames_run_sink *sink);

#define FRAMES_BAD (-1000)

/* ---------------------------------------------------------------- RESULTS */

struct frames_blob {
    const char *name; /* NUL-terminated: the record's name buffer when decoded */
    const uint8_t *data;
    uint32_t len;
};

/* One record. Pointers borrow the caller's memory (encoding) or the frame and the record
 * (decoding). */
struct frames_result {
    uint64_t index;
    int err;                   /* 0 or a negative per-job code; unchecked when decoded */
    uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC: when the job ran */
    /* > 0: a block of that many successes from index, text their NDJSON lines, busy_ns
     * their summed run time (start_ns, end_ns and the blobs unused). */
    uint64_t block_count, busy_ns;
    const char *text; /* the result JSON (err 0), the error message, or the block's lines */
    uint32_t text_len;
    uint32_t nblobs;
    struct frames_blob blobs[JOB_MAX_BLOBS];
    char names[JOB_MAX_BLOBS][FRAMES_BLOB_NAME_MAX + 1]; /* decoding: the blob names */
};

/* A RESULTS frame being written into a buffer the caller owns. Fields are private. */
struct frames_results_writer {
    struct buf *out;
    size_t count_at;
    uint32_t count;
};

/* Starts a RESULTS frame in OUT (reset first). */
void frames_results_begin(struct frames_results_writer *w, struct buf *out);

/* Appends record R (block_count > 0: a block record). Returns 0, or -1 when it does not fit
 * under the buffer's cap (the frame is left as it was). */
int frames_results_add(struct frames_results_writer *w, const struct frames_result *r);

/* Records appended since begin (inline: the worker asks after every job). */
static inline uint32_t frames_results_count(const struct frames_results_writer *w)
{
    return w->count;
}

/* Finishes the frame: OUT then holds it whole, header included. */
void frames_results_end(struct frames_results_writer *w);

/* Hands each record of a RESULTS body to FN (R borrowed for the call). Returns 0,
 * FRAMES_BAD when the body is malformed (records before the fault were handed over), or
 * FN's nonzero return, which stops the decoding. */
typedef int frames_result_fn(void *ud, const struct frames_result *r);
int frames_results_decode(const void *body, size_t len, frames_result_fn *fn, void *ud);

/* ---------------------------------------------------------------- CONFIG */

/* Writes into OUT (reset first) the CONFIG frame of CFG, header included. Returns 0, or -1
 * past OUT's cap or out of memory. */
int frames_config_encode(struct buf *out, const struct worker_config *cfg);

/* Decodes the CONFIG body BODY (LEN bytes, without its header) into *CFG (limits.no_openat2
 * set to 0). Returns 0, or FRAMES_BAD when it is malformed (truncated, trailing bytes, a
 * folder too long or holding a NUL); *CFG is then unspecified. */
int frames_config_decode(const void *body, size_t len, struct worker_config *cfg);

#endif
