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
};
/* clang-format on */

#define OPS_N (sizeof ops_table / sizeof ops_table[0])

const struct op *ops_find(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < OPS_N; i++) {
        if (strcmp(ops_table[i]->name, name) == 0) {
            return ops_table[i];
        }
    }
    return NULL;
}

const struct op *ops_at(size_t i)
{
    return i < OPS_N ? ops_table[i] : NULL;
}

size_t ops_index(const struct op *op)
{
    for (size_t i = 0; i < OPS_N; i++) {
        if (ops_table[i] == op) {
            return i;
        }
    }
    return SIZE_MAX;
}

size_t ops_count(void)
{
    return OPS_N;
}

static const char *param_type_name(enum op_param_type t)
{
    switch (t) {
    case OP_PARAM_BOOL:
        return "boolean";
    case OP_PARAM_INT:
        return "integer";
    case OP_PARAM_NUMBER:
        return "number";
    case OP_PARAM_STRING:
        return "string";
    case OP_PARAM_ARRAY:
        return "array";
    case OP_PARAM_OBJECT:
        return "object";
    }
    return "unknown";
}

/* What V is, for messages ("an integer", "a string", ...). */
static const char *json_kind(const json_t *v)
{
    static const char *const kinds[] = {
        [JSON_OBJECT] = "an object",   [JSON_ARRAY] = "an array", [JSON_STRING] = "a string",
        [JSON_INTEGER] = "an integer", [JSON_REAL] = "a float",   [JSON_TRUE] = "a boolean",
        [JSON_FALSE] = "a boolean",    [JSON_NULL] = "null",
    };
    return kinds[json_typeof(v)];
}

/* 1 if S is one of the "|"-separated CHOICES. */
static int in_choices(const char *s, const char *choices)
{
    size_t len = strlen(s);
    const char *p = choices;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && memcmp(p, s, n) == 0) {
            return 1;
        }
        if (bar == NULL) {
            return 0;
        }
        p = bar + 1;
    }
}

static int type_matches(const struct op_param *p, const json_t *v)
{
    switch (p->type) {
    case OP_PARAM_BOOL:
        return json_is_boolean(v);
    case OP_PARAM_INT:
        return json_is_integer(v); /* 5.0 is a float, as for the ops' inputs */
    case OP_PARAM_NUMBER:
        return json_is_number(v);
    case OP_PARAM_STRING:
        return json_is_string(v);
    case OP_PARAM_ARRAY:
        return json_is_array(v);
    case OP_PARAM_OBJECT:
        return json_is_object(v);
    }
    return 0;
}

/* Checks one param's value against its row. Returns 0 or -BATCHD_E_INVALID_PARAM with MSG. */
static int check_one(const struct op_param *p, const json_t *v, char *msg, size_t msglen)
{
    if (!type_matches(p, v)) {
        snprintf(msg, msglen, "%s must be %s %s, not %s", p->name,
                 p->type == OP_PARAM_INT || p->type == OP_PARAM_ARRAY || p->type == OP_PARAM_OBJECT
                     ? "an"
                     : "a",
                 param_type_name(p->type), json_kind(v));
        return -BATCHD_E_INVALID_PARAM;
    }
    if ((p->type == OP_PARAM_INT || p->type == OP_PARAM_NUMBER) && p->min <= p->max) {
        double d = json_number_value(v);
        if (d < p->min || d > p->max) {
            snprintf(msg, msglen, "%s must be between %.17g and %.17g", p->name, p->min, p->max);
            return -BATCHD_E_INVALID_PARAM;
        }
    }
    if (p->type == OP_PARAM_STRING && p->choices != NULL &&
        !in_choices(json_string_value(v), p->choices)) {
        snprintf(msg, msglen, "%s must be one of %s", p->name, p->choices);
        return -BATCHD_E_INVALID_PARAM;
    }
    return 0;
}

int ops_check_params(const struct op *op, const json_t *params, char *msg, size_t msglen,
                     char *path, size_t pathlen)
{
    msg[0] = '\0';
    path[0] = '\0';
    if (params != NULL && !json_is_null(params)) {
        if (!json_is_object(params)) {
            snprintf(msg, msglen, "params must be an object, not %s", json_kind(params));
            return -BATCHD_E_INVALID_PARAM;
        }
        const char *key;
        json_t *val;
        /* The const cast is jansson's: its iteration macro takes a non-const object. */
        json_object_foreach((json_t *)params, key, val)
        {
            const struct op_param *p = op->params;
            while (p != NULL && p->name != NULL && strcmp(p->name, key) != 0) {
                p++;
            }
            if (p == NULL || p->name == NULL) {
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
            int rc = check_one(p, val, msg, msglen);
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

/* One entry of an op's "params" list in the catalogue. Returns a new reference or NULL. */
static json_t *describe_param(const struct op_param *p)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "name", p->name, "type", param_type_name(p->type),
                          "help", p->help != NULL ? p->help : "");
    if (o == NULL) {
        return NULL;
    }
    int rc = 0;
    if ((p->type == OP_PARAM_INT || p->type == OP_PARAM_NUMBER) && p->min <= p->max) {
        if (p->type == OP_PARAM_INT) {
            rc |= json_object_set_new(o, "min", json_integer((json_int_t)p->min));
            rc |= json_object_set_new(o, "max", json_integer((json_int_t)p->max));
        } else {
            rc |= json_object_set_new(o, "min", json_real(p->min));
            rc |= json_object_set_new(o, "max", json_real(p->max));
        }
    }
    if (p->type == OP_PARAM_STRING && p->choices != NULL) {
        json_t *c = json_array();
        const char *s = p->choices;
        for (;;) {
            const char *bar = strchr(s, '|');
            size_t n = bar ? (size_t)(bar - s) : strlen(s);
            rc |= json_array_append_new(c, json_stringn(s, n));
            if (bar == NULL) {
                break;
            }
            s = bar + 1;
        }
        rc |= json_object_set_new(o, "choices", c);
    }
    if (p->def != NULL) {
        rc |= json_object_set_new(o, "default", json_loads(p->def, JSON_DECODE_ANY, NULL));
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* One entry of the catalogue. Returns a new reference or NULL. */
static json_t *describe_op(const struct op *op)
{
    json_t *params = json_array();
    for (const struct op_param *p = op->params; p != NULL && p->name != NULL; p++) {
        if (json_array_append_new(params, describe_param(p)) != 0) {
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
        if (json_array_append_new(list, describe_op(ops_table[i])) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return json_pack("{s:o}", "ops", list);
}
