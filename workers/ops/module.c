/* C modules (SPEC §10, batchd_module.h): loading a shared object, checking what it declares
 * before any of its ops registers, and running its ops' jobs through the host API. The
 * server and every worker load the same list in the same order, so that a module op has the
 * same index in the op table on both sides of a RUN frame. */
#include "module.h"

#include "../../api/errors.h"
#include "../../api/jsonw.h"
#include "batchd_module.h"
#include "internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODULE_MAX_OPS 64

struct batchd_job {
    const struct job_input *in;
    struct job_output *out;
};

static struct op module_ops[MODULE_MAX_OPS];
static size_t module_nops;

/* ------------------------------------------------------------------ the host API */

static const json_t *host_input(const struct batchd_job *job)
{
    static json_t *null_value;
    if (job->in->value != NULL) {
        return job->in->value;
    }
    if (null_value == NULL) {
        null_value = json_null();
    }
    return null_value;
}

static const json_t *host_params(const struct batchd_job *job)
{
    return job->in->params;
}

/* Writes V as JSON (shortest floats, as every result). Returns as buf_add. */
static int module_write(struct buf *b, const json_t *v, int depth)
{
    if (depth > 512) {
        return -1;
    }
    int rc = 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        size_t klen;
        json_t *val;
        int first = 1;
        rc = buf_add(b, "{", 1);
        json_object_keylen_foreach((json_t *)v, key, klen, val)
        {
            if (!first) {
                rc |= buf_add(b, ",", 1);
            }
            first = 0;
            rc |= jsonw_string(b, key, klen);
            rc |= buf_add(b, ":", 1);
            rc |= module_write(b, val, depth + 1);
            if (rc != 0) {
                return -1;
            }
        }
        return rc | buf_add(b, "}", 1);
    }
    case JSON_ARRAY:
        rc = buf_add(b, "[", 1);
        for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) {
            if (i > 0) {
                rc |= buf_add(b, ",", 1);
            }
            rc |= module_write(b, json_array_get(v, i), depth + 1);
        }
        return rc | buf_add(b, "]", 1);
    case JSON_STRING:
        return jsonw_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return jsonw_int(b, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return jsonw_double(b, json_real_value(v));
    case JSON_TRUE:
        return buf_add(b, "true", 4);
    case JSON_FALSE:
        return buf_add(b, "false", 5);
    case JSON_NULL:
    default:
        return buf_add(b, "null", 4);
    }
}

static int host_set_result(struct batchd_job *job, const json_t *v)
{
    buf_reset(job->out->json);
    if (v == NULL || module_write(job->out->json, v, 0) != 0) {
        buf_reset(job->out->json);
        return BATCHD_MODULE_TOO_LARGE;
    }
    return 0;
}

static int module_code(int code)
{
    static const int codes[] = {
        [BATCHD_MODULE_INVALID_INPUT] = -BATCHD_E_INVALID_INPUT,
        [BATCHD_MODULE_DOMAIN_ERROR] = -BATCHD_E_DOMAIN_ERROR,
        [BATCHD_MODULE_OVERFLOW] = -BATCHD_E_OVERFLOW,
        [BATCHD_MODULE_TOO_LARGE] = -BATCHD_E_TOO_LARGE,
    };
    if (code > 0 && (size_t)code < sizeof codes / sizeof codes[0]) {
        return codes[code];
    }
    return -BATCHD_E_INTERNAL;
}

static int host_fail(struct batchd_job *job, int code, const char *message)
{
    job->out->err = module_code(code);
    snprintf(job->out->message, sizeof job->out->message, "%s", message != NULL ? message : "");
    return code;
}

static const struct batchd_host module_host = {
    .abi_version = BATCHD_MODULE_ABI_VERSION,
    .size = sizeof(struct batchd_host),
    .input = host_input,
    .params = host_params,
    .set_result = host_set_result,
    .fail = host_fail,
};

/* Runs one job of module op OP: its run_op. */
static int module_run(const struct op *op, const struct job_input *in, struct job_output *out)
{
    struct batchd_job job = {.in = in, .out = out};
    int rc = op->module_op->run(&module_host, &job);
    if (rc == 0 && buf_len(out->json) == 0) {
        snprintf(out->message, sizeof out->message, "module op %s gave no result", op->name);
        return -BATCHD_E_INTERNAL;
    }
    if (rc != 0) {
        buf_reset(out->json);
        return module_code(rc);
    }
    return 0;
}

/* ------------------------------------------------------------------ loading */

/* Checks one op of a module. Returns 0, or -1 with ERR set. */
static int module_check_op(const struct batchd_module_op *o, size_t first, char *err, size_t errlen)
{
    if (o->name == NULL || o->name[0] == '\0' || strlen(o->name) > 64 ||
        strspn(o->name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(o->name)) {
        snprintf(err, errlen, "an op name must be 1..64 of [a-z0-9_], got \"%.64s\"",
                 o->name != NULL ? o->name : "(null)");
        return -1;
    }
    if (ops_find(o->name) != NULL) {
        snprintf(err, errlen, "op %s exists already", o->name);
        return -1;
    }
    for (size_t i = first; i < module_nops; i++) {
        if (strcmp(module_ops[i].name, o->name) == 0) {
            snprintf(err, errlen, "op %s is declared twice", o->name);
            return -1;
        }
    }
    if (o->run == NULL) {
        snprintf(err, errlen, "op %s has no run function", o->name);
        return -1;
    }
    if (o->example != NULL) {
        json_t *ex = json_loads(o->example, JSON_DECODE_ANY, NULL);
        if (ex == NULL) {
            snprintf(err, errlen, "op %s: its example is not JSON", o->name);
            return -1;
        }
        json_decref(ex);
    }
    for (const struct op_param *p = o->params; p != NULL && p->name != NULL; p++) {
        if (p->type < OP_PARAM_BOOL || p->type > OP_PARAM_OBJECT) {
            snprintf(err, errlen, "op %s: param %.64s has an unknown type", o->name, p->name);
            return -1;
        }
        if (p->def != NULL) {
            json_t *d = json_loads(p->def, JSON_DECODE_ANY, NULL);
            char msg[256];
            int bad = d == NULL || op_param_check(p, d, OP_PARAM_STRICT, msg, sizeof msg) != 0;
            json_decref(d);
            if (bad) {
                snprintf(err, errlen, "op %s: the default of param %.64s is not valid", o->name,
                         p->name);
                return -1;
            }
        }
    }
    return 0;
}

/* Loads one module. Returns 0, or -1 with ERR set (nothing of it registered then). */
static int module_load(const char *path, char *err, size_t errlen)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *e = dlerror();
        snprintf(err, errlen, "%s", e != NULL ? e : "cannot be loaded");
        return -1;
    }
    const struct batchd_module *(*init)(const struct batchd_host *) = NULL;
    void *sym = dlsym(h, BATCHD_MODULE_ENTRY);
    memcpy(&init, &sym, sizeof init < sizeof sym ? sizeof init : sizeof sym);
    const struct batchd_module *m = init != NULL ? init(&module_host) : NULL;
    size_t first = module_nops;
    int rc = -1;
    if (init == NULL) {
        snprintf(err, errlen, "exports no %s (is it a batchd module?)", BATCHD_MODULE_ENTRY);
        goto out;
    }
    if (m == NULL) {
        snprintf(err, errlen, "its %s refused to load", BATCHD_MODULE_ENTRY);
        goto out;
    }
    if (m->abi_version != BATCHD_MODULE_ABI_VERSION) {
        snprintf(err, errlen,
                 "built for module ABI version %u, this batchd speaks version %u: rebuild it "
                 "against this batchd's batchd_module.h",
                 m->abi_version, BATCHD_MODULE_ABI_VERSION);
        goto out;
    }
    if (m->size != sizeof(struct batchd_module) || m->op_size != sizeof(struct batchd_module_op)) {
        snprintf(err, errlen,
                 "its structs have other sizes than this batchd's (module %u/%u bytes, batchd "
                 "%zu/%zu): rebuild it against this batchd's batchd_module.h",
                 m->size, m->op_size, sizeof(struct batchd_module),
                 sizeof(struct batchd_module_op));
        goto out;
    }
    if (m->ops == NULL || m->nops == 0 || m->nops > MODULE_MAX_OPS - module_nops) {
        snprintf(err, errlen, "declares %zu ops (1..%zu are allowed)", m->nops,
                 (size_t)MODULE_MAX_OPS - module_nops);
        goto out;
    }
    for (size_t i = 0; i < m->nops; i++) {
        const struct batchd_module_op *o = &m->ops[i];
        if (module_check_op(o, first, err, errlen) != 0) {
            module_nops = first;
            goto out;
        }
        module_ops[module_nops++] = (struct op){
            .name = o->name,
            .summary = o->summary != NULL ? o->summary : "",
            .input = o->input != NULL ? o->input : "",
            .result = o->result != NULL ? o->result : "",
            .example = o->example,
            .params = o->params,
            .flags = (o->flags & BATCHD_MODULE_OP_SLOW) ? OP_SLOW : 0,
            .cost_hint_ns = o->cost_hint_ns > 0 ? o->cost_hint_ns : 1000,
            .validate_params = o->validate_params,
            .run_op = module_run,
            .module_op = o,
        };
    }
    for (size_t i = first; i < module_nops; i++) {
        if (ops_register(&module_ops[i]) != 0) {
            snprintf(err, errlen, "the op table is full");
            goto out;
        }
    }
    rc = 0;
out:
    if (rc != 0) {
        module_nops = first;
        dlclose(h);
    }
    /* A loaded module stays for the life of the process: its ops point into it. */
    return rc;
}

int module_load_all(const char *list, char *err, size_t errlen)
{
    const char *p = list;
    while (p != NULL && *p != '\0') {
        const char *colon = strchr(p, ':');
        size_t n = colon != NULL ? (size_t)(colon - p) : strlen(p);
        if (n > 0) {
            char path[4096];
            char why[512];
            snprintf(path, sizeof path, "%.*s", (int)n, p);
            if (module_load(path, why, sizeof why) != 0) {
                snprintf(err, errlen, "module %s: %s", path, why);
                return -1;
            }
        }
        p = colon != NULL ? colon + 1 : NULL;
    }
    return 0;
}
