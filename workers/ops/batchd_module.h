/* batchd's C module API (SPEC §10): how a deployer adds ops in C, the way Redis modules and
 * PostgreSQL extensions do. A module is a shared object named on the command line
 * (`--module PATH.so`, repeatable; BATCHD_MODULES=a.so:b.so), loaded at start by the server
 * and by every worker, never on a client's request. It exports one function:
 *
 *     const struct batchd_module *batchd_module_init(const struct batchd_host *host);
 *
 * which returns a static description of the module and its ops. batchd checks the ABI
 * version and the struct sizes it returns before anything registers; a module that fails a
 * check (or returns NULL) stops the start with a message naming it (exit status 2). Its ops
 * then appear in GET /v1/ops, have their params checked by the server from the same
 * declarations as the built-in ops (struct op_param, op_param.h beside this header), and run
 * in the workers like built-in ops: one call of `run` per job, in a worker process, which
 * reads the input through the host and writes the result (or an error) through it.
 *
 * A run() must not change signal dispositions or the process's limits. The worker may get a
 * SIGALRM now and then (op lua's timer; its handler is installed with SA_RESTART and does
 * nothing outside a Lua job): a call that cannot be restarted (poll, nanosleep) may see EINTR.
 *
 * Build one with: cc -shared -fPIC -I<batchd>/workers/ops mymod.c -o mymod.so $(pkg-config
 * --cflags --libs jansson). See examples/modules/wordcount.c. */
#ifndef BATCHD_MODULE_H
#define BATCHD_MODULE_H

#include "op_param.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Bumped at every incompatible change of the structs below. */
#define BATCHD_MODULE_ABI_VERSION 1
/* The name of the one symbol a module exports. */
#define BATCHD_MODULE_ENTRY "batchd_module_init"

/* Errors a run may return (or give to host->fail): SPEC §4's per-job codes. */
enum batchd_module_err {
    BATCHD_MODULE_OK = 0,
    BATCHD_MODULE_INVALID_INPUT = 1, /* invalid_input */
    BATCHD_MODULE_DOMAIN_ERROR = 2,  /* domain_error */
    BATCHD_MODULE_OVERFLOW = 3,      /* overflow */
    BATCHD_MODULE_TOO_LARGE = 4,     /* too_large */
};

/* One job, as the host hands it to run(). Opaque: read and write it through the host. */
struct batchd_job;

/* What batchd offers a module; valid for the life of the process. */
struct batchd_host {
    uint32_t abi_version; /* BATCHD_MODULE_ABI_VERSION of the batchd that loads the module */
    uint32_t size;        /* sizeof(struct batchd_host) in that batchd */
    /* The job's input (borrowed, never NULL: JSON null when it had none). */
    const json_t *(*input)(const struct batchd_job *job);
    /* The job's params, the batch's merged with its own (borrowed), or NULL. */
    const json_t *(*params)(const struct batchd_job *job);
    /* Sets the job's result to V (copied; integers stay integers, floats are written in
     * their shortest form). Returns 0, or BATCHD_MODULE_TOO_LARGE when it does not fit. */
    int (*set_result)(struct batchd_job *job, const json_t *v);
    /* Fails the job with CODE (enum batchd_module_err) and MESSAGE (copied; may be NULL).
     * Returns CODE, so that run() can end with `return host->fail(job, ..., "...")`. */
    int (*fail)(struct batchd_job *job, int code, const char *message);
};

/* Op flags. */
#define BATCHD_MODULE_OP_SLOW 1u /* jobs may take long: results are flushed before each */

/* One op of a module. Strings are static (they must outlive the process's use of them). */
struct batchd_module_op {
    const char *name;              /* [a-z0-9_]+, unique among every op batchd has */
    const char *summary;           /* one line, for /v1/ops */
    const char *input;             /* what a job's input is */
    const char *result;            /* what its result is */
    const char *example;           /* an example input, as JSON text, or NULL */
    const struct op_param *params; /* ends at a row with name == NULL; may be NULL */
    unsigned flags;                /* BATCHD_MODULE_OP_* */
    uint32_t cost_hint_ns;         /* a first guess at a job's cost (0 = 1 µs) */
    /* Optional, server side: checks params beyond what .params says, as built-in ops do.
     * Returns 0, or nonzero with MSG and PATH (relative to params) set. May be NULL. */
    int (*validate_params)(const json_t *params, char *msg, size_t msglen, char *path,
                           size_t pathlen);
    /* Worker side: runs one job. Returns 0 after host->set_result, or an enum
     * batchd_module_err (after host->fail, or alone for the code's default message). Must
     * not exit, abort or leak. */
    int (*run)(const struct batchd_host *host, struct batchd_job *job);
};

/* What batchd_module_init returns. */
struct batchd_module {
    uint32_t abi_version; /* BATCHD_MODULE_ABI_VERSION the module was built against */
    uint32_t size;        /* sizeof(struct batchd_module) */
    uint32_t op_size;     /* sizeof(struct batchd_module_op) */
    const char *name;     /* for messages and logs */
    const char *version;
    const struct batchd_module_op *ops;
    size_t nops;
};

/* The entry point (see the top of this file). Returns NULL to refuse to load. */
const struct batchd_module *batchd_module_init(const struct batchd_host *host);

/* The three size fields for a module's return value. */
#define BATCHD_MODULE_HEADER                                                                       \
    .abi_version = BATCHD_MODULE_ABI_VERSION, .size = sizeof(struct batchd_module),                \
    .op_size = sizeof(struct batchd_module_op)

#endif
