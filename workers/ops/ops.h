/* The table of ops: every job kind batchd runs, one const descriptor each. The server reads
 * it to validate batches and to answer /v1/ops; workers read it to run jobs. Adding an op =
 * one file in this folder, one line in ops.c, one test. The types of a job's input and output
 * are the contract's (api/job.h). */
#ifndef BATCHD_WORKERS_OPS_OPS_H
#define BATCHD_WORKERS_OPS_OPS_H

#include "../../api/job.h"
#include "op_param.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct batchd_module_op;

/* An op's params are declared with struct op_param (ops/op_param.h): the engine that the
 * server's generic checks, /v1/ops and the image op's steps share. */

enum op_flags {
    OP_SLOW = 1 << 0,  /* jobs may take long: results are flushed before each one starts */
    OP_IMAGE = 1 << 1, /* inputs are images: multipart, base64 or data-dir paths */
    /* A job's cost depends on the params (op lua: the user's code): chunks are sized from the
     * cost hint, never from what other batches of the op measured, and even a batch that
     * looks cheap is spread over the workers. */
    OP_COST_VARIES = 1 << 2,
};

struct op {
    const char *name;
    const char *summary;
    const char *input;   /* a short description of the input, as in SPEC §5 */
    const char *result;  /* a short description of the result */
    const char *example; /* an example input, as JSON text */
    const struct op_param *params; /* terminated by a row with name == NULL; may be NULL */
    unsigned flags;
    uint32_t cost_hint_ns; /* a first guess at a job's cost, until one has been measured */
    /* Server side, once per batch (and per job's own params): checks the params beyond
     * what .params says. Returns 0, or -BATCHD_E_INVALID_PARAM with MSG and PATH set
     * (PATH relative to params, e.g. "pipeline[2].sigma"). May be NULL. */
    int (*validate_params)(const json_t *params, char *msg, size_t msglen, char *path,
                           size_t pathlen);
    /* /v1/ops: extra fields for the op's catalogue entry, for what struct op_param cannot
     * say (the image op's pipeline steps, each with its own params). Returns a new object
     * whose fields ops_describe merges into the entry, or NULL (none, or out of memory).
     * May be NULL. */
    json_t *(*describe)(void);
    /* Worker side: runs one job. Returns 0 with out->json set, or a negative per-job error
     * code with out->message set. Must not exit, abort or leak on any input. */
    int (*run)(const struct job_input *in, struct job_output *out);
    /* Instead of run, for an op that needs its own descriptor (a module's: module.c). May
     * be NULL. */
    int (*run_op)(const struct op *op, const struct job_input *in, struct job_output *out);
    /* A module's op (batchd_module.h), for run_op; NULL for the built-in ops. */
    const struct batchd_module_op *module_op;
};

/* Appends OP (a module's, static for the process's life) to the table, after the built-in
 * ops. Returns 0, or -1 when the table is full. */
int ops_register(const struct op *op);

/* The op named NAME, or NULL. Returns a borrowed pointer into the static table. */
const struct op *ops_find(const char *name);

/* The op with table index I, or NULL when I is out of range. */
const struct op *ops_at(size_t i);

/* The index of OP in the table (for IPC frames, which carry indices, not names), or SIZE_MAX
 * when OP is not in the table. */
size_t ops_index(const struct op *op);

/* Number of ops in the table. */
size_t ops_count(void);

/* Runs one job of OP (the worker's call): as OP's run, or through the module API for a
 * module's op. */
int ops_run(const struct op *op, const struct job_input *in, struct job_output *out);

/* Checks PARAMS (may be NULL) against OP's .params and validate_params. Returns 0,
 * -BATCHD_E_INVALID_PARAM with MSG and PATH (relative to params) set, or -BATCHD_E_INTERNAL
 * with MSG when the check ran out of memory. */
int ops_check_params(const struct op *op, const json_t *params, char *msg, size_t msglen,
                     char *path, size_t pathlen);

/* The catalogue (for GET /v1/ops): {"ops":[{name, summary, input, result, example (parsed),
 * params: [{name, type, help, min, max, choices, default}], slow, image, and what the op's
 * describe hook adds}]}, min/max/choices/default present only where they apply. Returns a new
 * reference, or NULL when out of memory. */
json_t *ops_describe(void);

#endif
