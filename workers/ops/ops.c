/* The table of ops and what the server needs from it: lookup by name and index, the generic
 * checks of a batch's params against each op's declared params, and the /v1/ops catalogue.
 * The ops themselves live beside it (one family per file); this file only lists them. */
#include "ops.h"

#include "../../api/errors.h"
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The order is the wire order: IPC frames carry indices into this table, so the server and
 * the workers (one binary) always agree. */
/* One op per line, so that adding one is a one-line diff. */
/* clang-format off */
static const struct op *const ops_table[] = {
    &op_square,
    &op_cube,
    &op_sqrt,
    &op_factorial,
    &op_fibonacci,
    &op_is_prime,
    &op_prime_factors,
    &op_collatz_steps,
    &op_sum,
    &op_mean,
    &op_stats,
    &op_sort,
    &op_cpu_loop,
    &op_sleep,
    &op_monte_carlo_pi,
    &op_image,
    &op_lua,
};
/* clang-format on */

#define OPS_BUILTIN (sizeof ops_table / sizeof ops_table[0])
#define OPS_MODULE_MAX 64

/* Modules' ops, after the built-in ones (module.c registers them at start, in both the
 * server and the workers, in the same order). */
static const struct op *ops_extra[OPS_MODULE_MAX];
static size_t ops_nextra;

#define OPS_N (OPS_BUILTIN + ops_nextra)

int ops_register(const struct op *op)
{
    if (ops_nextra >= OPS_MODULE_MAX) {
        return -1;
    }
    ops_extra[ops_nextra++] = op;
    return 0;
}

static const struct op *ops_get(size_t i)
{
    return i < OPS_BUILTIN ? ops_table[i] : ops_extra[i - OPS_BUILTIN];
}

const struct op *ops_find(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < OPS_N; i++) {
        if (strcmp(ops_get(i)->name, name) == 0) {
            return ops_get(i);
        }
    }
    return NULL;
}

const struct op *ops_at(size_t i)
{
    return i < OPS_N ? ops_get(i) : NULL;
}

size_t ops_index(const struct op *op)
{
    for (size_t i = 0; i < OPS_N; i++) {
        if (ops_get(i) == op) {
            return i;
        }
    }
    return SIZE_MAX;
}

size_t ops_count(void)
{
    return OPS_N;
}

int ops_run(const struct op *op, const struct job_input *in, struct job_output *out)
{
    if (op->run_op != NULL) {
        return op->run_op(op, in, out);
    }
    return op->run(in, out);
}

int ops_check_params(const struct op *op, const json_t *params, char *msg, size_t msglen,
                     char *path, size_t pathlen)
{
    msg[0] = '\0';
    path[0] = '\0';
    if (params != NULL && !json_is_null(params)) {
        if (!json_is_object(params)) {
            snprintf(msg, msglen, "params must be an object, not %s", op_param_kind(params));
            return -BATCHD_E_INVALID_PARAM;
        }
        const char *key;
        json_t *val;
        /* The const cast is jansson's: its iteration macro takes a non-const object. */
        json_object_foreach((json_t *)params, key, val)
        {
            const struct op_param *p = op_param_find(op->params, key);
            if (p == NULL) {
                snprintf(path, pathlen, "%s", key);
                if (op->params == NULL || op->params[0].name == NULL) {
                    snprintf(msg, msglen, "op %s takes no params, got \"%s\"", op->name, key);
                } else {
                    int n = snprintf(msg, msglen, "unknown param \"%s\" for op %s (accepted:", key,
                                     op->name);
                    for (p = op->params; p->name != NULL && n >= 0 && (size_t)n < msglen; p++) {
                        n += snprintf(msg + n, msglen - (size_t)n, " %s", p->name);
                    }
                    if (n >= 0 && (size_t)n < msglen) {
                        snprintf(msg + n, msglen - (size_t)n, ")");
                    }
                }
                return -BATCHD_E_INVALID_PARAM;
            }
            int rc = op_param_check(p, val, OP_PARAM_STRICT, msg, msglen);
            if (rc != 0) {
                snprintf(path, pathlen, "%s", key);
                return rc;
            }
        }
    }
    if (op->validate_params != NULL) {
        return op->validate_params(json_is_null(params) ? NULL : params, msg, msglen, path,
                                   pathlen);
    }
    return 0;
}

/* One entry of the catalogue. Returns a new reference or NULL. */
static json_t *describe_op(const struct op *op)
{
    json_t *params = json_array();
    for (const struct op_param *p = op->params; p != NULL && p->name != NULL; p++) {
        if (json_array_append_new(params, op_param_describe(p, 0)) != 0) {
            json_decref(params);
            return NULL;
        }
    }
    json_t *example = op->example != NULL ? json_loads(op->example, JSON_DECODE_ANY, NULL) : NULL;
    json_t *entry =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:b, s:b}", "name", op->name, "summary",
                  op->summary, "input", op->input, "result", op->result, "example",
                  example != NULL ? example : json_null(), "params", params, "slow",
                  (op->flags & OP_SLOW) != 0, "image", (op->flags & OP_IMAGE) != 0);
    if (entry != NULL && op->describe != NULL) {
        json_t *extra = op->describe();
        /* The hook adds fields; it cannot replace the ones every op has. */
        if (extra == NULL || !json_is_object(extra) ||
            json_object_update_missing(entry, extra) != 0) {
            json_decref(entry);
            entry = NULL;
        }
        json_decref(extra);
    }
    return entry;
}

json_t *ops_describe(void)
{
    json_t *list = json_array();
    for (size_t i = 0; i < OPS_N; i++) {
        if (json_array_append_new(list, describe_op(ops_get(i))) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return json_pack("{s:o}", "ops", list);
}
