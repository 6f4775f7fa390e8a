/* The contract between the two sides of a job: what an op is given and gives back in the
 * worker (job_input, job_output), and the outcome the server writes to the client
 * (job_result). Both sides include this header; it includes nothing of theirs. */
#ifndef BATCHD_API_JOB_H
#define BATCHD_API_JOB_H

#include "buf.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The limits the server sets for every job, handed to the worker once at spawn (the CONFIG
 * frame, workers/frames.h) and to each op through job_input. */
struct job_limits {
    uint64_t max_input_pixels;  /* largest input image, width x height; 0 = the op's default */
    uint64_t max_output_pixels; /* largest output image; 0 = the op's default */
    int no_openat2;      /* test hook: open paths without openat2, as on kernels that lack it */
    uint64_t lua_memory; /* bytes an op lua interpreter may hold (--lua-memory); 0 = default */
};

/* What a job is given. Borrowed for the duration of run(). */
struct job_input {
    const json_t *value;  /* the job's input from the batch */
    const json_t *params; /* the job's params (batch params merged with its own), or NULL */
    const uint8_t *blob;  /* image bytes handed over in shared memory, or NULL */
    size_t blob_len;
    const char *data_dir;   /* --data-dir, or NULL when none was given */
    const char *output_dir; /* where output:"path" results go (under data_dir), or NULL */
    const char *name;       /* the stem of its output "path" files, unique in the batch, or NULL */
    uint64_t index;         /* the job's index in its batch (for output file names) */
    int want_binary;        /* 1: the client reads a tar stream, so image bytes go in blobs */
    const struct job_limits *limits; /* NULL: every limit at its default */
    uint64_t batch;      /* the batch's serial, unique in the server's life (0 = unknown) */
    uint64_t timeout_ms; /* the job's time limit (0 = none): the worker is killed past it */
};

#define JOB_MAX_BLOBS 16

/* One binary result (an encoded image) returned beside the JSON result. */
struct job_blob {
    char name[64]; /* tar member name suffix, e.g. "png" or "small.jpeg" */
    struct buf bytes;
};

/* What a job gives back. The worker loop initialises it before run() and frees it after. */
struct job_output {
    struct buf *json;  /* on success: the result value as JSON text */
    int err;           /* on failure: the negative error code run() returned */
    char message[256]; /* on failure: for a human; empty = the code's default message */
    struct job_blob blobs[JOB_MAX_BLOBS];
    int nblobs;
};

struct result_blob {
    const char *name;
    const uint8_t *data;
    size_t len;
};

/* One job's outcome. Borrowed for the duration of the owner's on_result call. */
struct job_result {
    uint64_t index;
    int err;          /* 0, or a negative per-job error code */
    const char *text; /* the result JSON (err == 0) or the error message */
    size_t text_len;
    const struct result_blob *blobs;
    size_t nblobs;
    int worker;                /* slot that ran it, -1 when it never ran */
    uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC; 0 when it never ran */
};

/* A jobs batch's params for one job: the batch's PARAMS with the job's own JOB_PARAMS merged
 * over them (the job's win). Either may be NULL. Returns a new reference (json_decref it),
 * or NULL when both are NULL or when out of memory (*OOM set to 1 then). */
json_t *job_params_merge(const json_t *params, const json_t *job_params, int *oom);

#endif
