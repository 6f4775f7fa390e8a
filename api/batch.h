/* The wire form of a batch (SPEC §3): parsing and checking the JSON a client POSTs into a
 * struct batch_spec. It checks the shape (types, ranges, one of inputs/jobs) and nothing
 * that needs the ops table: the server resolves op names and params afterwards. */
#ifndef BATCHD_API_BATCH_H
#define BATCHD_API_BATCH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* How an integer literal past 64 bits reaches a worker: jansson cannot hold it, so the
 * parser rewrites it as {"$batchd_bigint":"<digits>"}, and the worker answers that job
 * with overflow. */
#define BATCH_BIGINT_MARK "{\"$batchd_bigint\":"

enum batch_order { BATCH_ORDER_INPUT, BATCH_ORDER_COMPLETED };

struct batch_limits {
    uint64_t max_jobs;
    int multipart;   /* the uploaded files are the inputs ("inputs" and "jobs" are refused) */
    uint64_t nfiles; /* how many files were uploaded */
};

struct batch_spec {
    json_t *root;         /* owned: the parsed document */
    const char *op;       /* the batch's op, or NULL when it is given per job */
    json_t *inputs;       /* borrowed from root: an array, or NULL (empty when ints is set) */
    int64_t *ints;        /* owned: the inputs, when they are all integers (then read them
                           * with batch_spec_int_input, not from the inputs array) */
    json_t *jobs;         /* borrowed from root: an array, or NULL */
    json_t *params;       /* borrowed from root: an object, or NULL */
    uint64_t njobs;
    uint64_t chunksize;   /* 0 = "auto" */
    enum batch_order order;
    int64_t timeout_ms;   /* -1 = the server's default */
    uint64_t deadline_ms; /* 0 = none */
    int timing;
    int async;            /* "async": true (SPEC §8): stored, answered 202 at once */
    uint64_t progress_ms; /* "progress_ms": progress lines at most this often; 0 = none */
};

struct batch_error {
    int err;            /* negative BATCHD_E_ code */
    char message[256];
    char path[128];     /* the field at fault, e.g. "jobs[3].op"; may be empty */
};

/* Parses LEN bytes of BODY into *OUT. Returns 0, or a negative error code with *E filled
 * (and *OUT empty). On success *OUT owns a reference to the document: release it with
 * batch_spec_cleanup. */
int batch_spec_parse(const char *body, size_t len, const struct batch_limits *lim,
                     struct batch_spec *out, struct batch_error *e);

/* Job I of the batch: its op name, input (NULL for uploaded files) and own params (NULL
 * if none). All borrowed from the spec. */
void batch_spec_job(const struct batch_spec *s, uint64_t i, const char **op, json_t **input,
                    json_t **params);

/* 1 with *V set when the batch's inputs were all integers (read without a JSON tree), else
 * 0: then batch_spec_job's input is the one to use. */
int batch_spec_int_input(const struct batch_spec *s, uint64_t i, int64_t *v);

/* Releases the document. Safe on a zeroed or already cleaned spec. */
void batch_spec_cleanup(struct batch_spec *s);

#endif
