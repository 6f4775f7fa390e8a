/* A batch ready for the dispatcher (prepared.c): its spec parsed from an upload, op names
 * resolved and params checked against the ops table, image bytes placed in the upload's
 * shared memory and output names claimed. The same for a streamed batch (from its request)
 * and a stored one (from its request, or from the store after a restart). Private to server/. */
#ifndef BATCHD_SERVER_PREPARED_H
#define BATCHD_SERVER_PREPARED_H

#include "../api/batch.h"
#include "../workers/dispatch.h"

#include <jansson.h>
#include <stdint.h>

struct upload;

/* Where a job's image bytes are in the upload's memfd (len 0: none). */
struct prepared_blob {
    uint64_t off, len;
    const char *name; /* borrowed from the upload */
    char *out_name;   /* owned: the stem of its output "path" files (api/outname.h), or NULL */
};

struct prepared {
    struct batch_spec spec;
    const struct op *op;         /* the batch's op, or NULL when jobs name their own */
    const struct op **job_ops;   /* per job, for the jobs form */
    struct prepared_blob *blobs; /* per job, for image bytes in the upload's memfd */
    json_t *empty_upload;        /* the input of an empty file part: {"data": ""} */
    struct upload *upload;       /* borrowed: where the spec and the bytes came from */
};

/* Finishes upload U and builds *P from it (MAX_JOBS: --max-jobs). Returns 0, or a negative
 * BATCHD_E_ code with *E filled (the refusal to answer); *P must be cleaned up either way. */
int prepared_build(struct prepared *p, struct upload *u, uint64_t max_jobs, struct batch_error *e);

/* Frees what *P owns (not the upload). Safe on a zeroed one. */
void prepared_cleanup(struct prepared *p);

/* dispatch_batch_desc.job_at for UD = a struct prepared. */
void prepared_job_at(void *ud, uint64_t i, struct dispatch_job *job);

/* writer.name_of for UD = a struct prepared: job I's uploaded file name, or NULL. */
const char *prepared_name_of(void *ud, uint64_t i);

/* The op of job I (the batch's, or the job's own). */
const struct op *prepared_op_of(const struct prepared *p, uint64_t i);

/* The op's label for logs, metrics and status: its name, "mixed" for a jobs list. */
const char *prepared_op_label(const struct prepared *p);

/* 1 when every job is an integer input of one op with no blobs: the dispatcher's fast path
 * (dispatch_batch_desc.ints) applies. */
int prepared_all_ints(const struct prepared *p);

#endif
