/* op "lua" (SPEC §10): params.code is a Lua 5.4 chunk that returns a function; each job calls
 * it with its input, and what it returns is the result. The server compiles the chunk once
 * per batch to refuse a syntax error (400, with the line); each worker compiles and runs it
 * once per batch, in an interpreter of that batch's own (lua_sandbox.c), which the batch's
 * jobs on that worker share and no other batch ever sees. A job that overruns its memory cap
 * fails with too_large and one that overruns its time with timeout; the interpreter is then
 * thrown away, and the worker carries on. */
#include "internal.h"
#include "lua_internal.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Interpreters a worker keeps: one per batch (and chunk) it has served lately, so that two
 * batches served in turn do not rebuild theirs at each chunk. */
#define LUA_CACHE_N 4

struct lua_entry {
    struct lbox box;
    uint64_t batch;
    char *code;
    size_t len;
    int64_t seed;
    uint64_t used_at;
};

static struct lua_entry lua_cache[LUA_CACHE_N];
static uint64_t lua_tick;

static uint64_t lua_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lua_entry_drop(struct lua_entry *e)
{
    lbox_close(&e->box);
    free(e->code);
    memset(e, 0, sizeof *e);
}

/* What a protected run of one job needs and gives back. */
struct lua_job {
    struct lbox *box;
    const struct job_input *in;
    struct job_output *out;
    const char *code;
    size_t len;
    int64_t seed;
    int err;
    char msg[256];
};

/* Turns a coroutine's failed or unfinished run into the job's error. */
static void lua_job_failure(struct lua_job *j, lua_State *co, int status)
{
    struct lbox *b = j->box;
    if (b->expired) {
        j->err = -BATCHD_E_TIMEOUT;
        snprintf(j->msg, sizeof j->msg, "the script ran past its budget of %llu ms",
                 (unsigned long long)j->in->timeout_ms);
    } else if (status == LUA_ERRMEM || (status != LUA_YIELD && b->refused)) {
        j->err = -BATCHD_E_TOO_LARGE;
        snprintf(j->msg, sizeof j->msg,
                 "the script needed more memory than its cap of %zu MiB (--lua-memory)",
                 b->cap / (1024 * 1024));
    } else if (status == LUA_YIELD) {
        j->err = -BATCHD_E_SCRIPT_ERROR;
        snprintf(j->msg, sizeof j->msg, "the function yielded outside a coroutine of its own");
    } else {
        j->err = -BATCHD_E_SCRIPT_ERROR;
        int t = lua_type(co, -1);
        if (t == LUA_TSTRING || t == LUA_TNUMBER) {
            snprintf(j->msg, sizeof j->msg, "%s", lua_tostring(co, -1));
        } else {
            snprintf(j->msg, sizeof j->msg, "the script raised an error object of type %s",
                     lua_typename(co, t));
        }
    }
}

/* Runs the function on top of L with NARGS arguments below it... in a coroutine of its own,
 * so that the hook can yield it out of any pcall. Returns the status, with the first result
 * (or nil) on top of L when LUA_OK. */
static int lua_job_resume(struct lua_job *j, lua_State *L, int nargs)
{
    lua_State *co = lua_newthread(L);
    lua_insert(L, -2 - nargs);
    lua_xmove(L, co, 1 + nargs);
    j->box->job = co; /* set before it runs: the alarm hooks it then */
    int nres = 0;
    int status = lua_resume(co, L, nargs, &nres);
    j->box->job = NULL;
    if (status == LUA_OK && !j->box->expired) {
        if (nres == 0) {
            lua_pushnil(co);
            nres = 1;
        }
        lua_pop(co, nres - 1);
        lua_xmove(co, L, 1);
    } else {
        lua_job_failure(j, co, status);
        if (status == LUA_OK) {
            status = LUA_YIELD; /* finished, but after its budget ran out */
        }
    }
    lua_remove(L, lua_gettop(L) - (status == LUA_OK ? 1 : 0)); /* the coroutine */
    return status;
}

/* The job, in protected mode on the interpreter's main thread. */
static int lua_job_protected(lua_State *L)
{
    struct lua_job *j = lua_touserdata(L, 1);
    lua_settop(L, 0);
    struct lbox *b = j->box;
    if (b->fn_ref == LUA_NOREF) {
        int rc = lbox_load(b, j->code, j->len);
        if (rc != LUA_OK) {
            j->err = rc == LUA_ERRMEM ? -BATCHD_E_TOO_LARGE : -BATCHD_E_SCRIPT_ERROR;
            snprintf(j->msg, sizeof j->msg, "%s", lua_tostring(L, -1));
            return 0;
        }
        if (lua_job_resume(j, L, 0) != LUA_OK) {
            return 0;
        }
        if (lua_type(L, -1) != LUA_TFUNCTION) {
            j->err = -BATCHD_E_SCRIPT_ERROR;
            snprintf(j->msg, sizeof j->msg,
                     "params.code must return a function (the job's), not a %s",
                     luaL_typename(L, -1));
            return 0;
        }
        b->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    /* math.random gives the same numbers for the same job of the same batch, whichever
     * worker runs it and whatever ran there before. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->seed_ref);
    lua_pushinteger(L, (lua_Integer)j->seed);
    lua_pushinteger(L, (lua_Integer)j->in->index);
    lua_call(L, 2, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->fn_ref);
    if (j->in->value != NULL) {
        ljson_push(L, j->in->value);
    } else {
        ljson_push_null(L);
    }
    if (lua_job_resume(j, L, 1) != LUA_OK) {
        return 0;
    }
    j->err = ljson_write(L, -1, j->out->json, j->msg, sizeof j->msg);
    return 0;
}

/* The interpreter for this job's batch and chunk: the cached one, or a new one. Returns
 * NULL when out of memory. */
static struct lua_entry *lua_entry_get(const struct job_input *in, const char *code, size_t len,
                                       int64_t seed)
{
    struct lua_entry *lru = &lua_cache[0];
    for (int i = 0; i < LUA_CACHE_N; i++) {
        struct lua_entry *e = &lua_cache[i];
        if (e->box.L != NULL && e->batch == in->batch && e->len == len && e->seed == seed &&
            memcmp(e->code, code, len) == 0) {
            e->used_at = ++lua_tick;
            return e;
        }
        if (e->box.L == NULL || (lru->box.L != NULL && e->used_at < lru->used_at)) {
            lru = e;
        }
    }
    lua_entry_drop(lru);
    lru->code = malloc(len + 1);
    uint64_t want = in->limits != NULL ? in->limits->lua_memory : 0;
    size_t cap = want > 0 ? (size_t)want : LUA_DEFAULT_MEMORY;
    if (lru->code == NULL || lbox_open(&lru->box, cap) != 0) {
        lua_entry_drop(lru);
        return NULL;
    }
    memcpy(lru->code, code, len);
    lru->code[len] = '\0';
    lru->len = len;
    lru->batch = in->batch;
    lru->seed = seed;
    lru->used_at = ++lua_tick;
    return lru;
}

static int lua_read_params(const json_t *params, const char **code, size_t *len, int64_t *seed)
{
    const json_t *c = params != NULL ? json_object_get(params, "code") : NULL;
    const json_t *s = params != NULL ? json_object_get(params, "seed") : NULL;
    if (!json_is_string(c) || (s != NULL && !json_is_integer(s))) {
        return -1;
    }
    *code = json_string_value(c);
    *len = json_string_length(c);
    *seed = s != NULL ? (int64_t)json_integer_value(s) : 0;
    return 0;
}

static int run_lua(const struct job_input *in, struct job_output *out)
{
    struct lua_job j = {.in = in, .out = out};
    if (lua_read_params(in->params, &j.code, &j.len, &j.seed) != 0) {
        return num_fail(out, -BATCHD_E_INVALID_INPUT, "params.code must be a string");
    }
    struct lua_entry *e = lua_entry_get(in, j.code, j.len, j.seed);
    if (e == NULL) {
        return num_fail(out, -BATCHD_E_TOO_LARGE, "out of memory starting the interpreter");
    }
    j.box = &e->box;
    uint64_t deadline = 0;
    if (in->timeout_ms > 0) {
        /* Stop a little before the dispatcher would kill the worker, so that the job fails
         * with its own timeout and the worker lives on. */
        uint64_t budget = in->timeout_ms * 1000000u;
        uint64_t margin = budget / 10 < 500000000u ? budget / 10 : 500000000u;
        deadline = lua_now_ns() + budget - margin;
    }
    lbox_arm(&e->box, deadline);
    lua_State *L = e->box.L;
    lua_pushcfunction(L, lua_job_protected);
    lua_pushlightuserdata(L, &j);
    int status = lua_pcall(L, 1, 0, 0);
    lbox_disarm(&e->box);
    if (status != LUA_OK && j.err == 0) {
        /* A memory error outside the script (converting its input, say). */
        j.err =
            e->box.refused || status == LUA_ERRMEM ? -BATCHD_E_TOO_LARGE : -BATCHD_E_SCRIPT_ERROR;
        snprintf(j.msg, sizeof j.msg, "%s",
                 e->box.refused || status == LUA_ERRMEM
                     ? "the input does not fit in the script's memory cap (--lua-memory)"
                     : (lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error"));
    }
    lua_settop(L, 0);
    int err = j.err;
    if (err == -BATCHD_E_TIMEOUT || err == -BATCHD_E_TOO_LARGE || e->box.fn_ref == LUA_NOREF) {
        /* Its state is whatever the script left when it was stopped: start afresh. */
        lua_entry_drop(e);
    }
    if (err != 0) {
        buf_reset(out->json);
        return num_fail(out, err, "%s", j.msg);
    }
    return 0;
}

/* Server side: the chunk compiles (text only), once per distinct chunk in a row. */
static int validate_lua(const json_t *params, char *msg, size_t msglen, char *path, size_t pathlen)
{
    static char *last_ok;
    static size_t last_len;
    const json_t *c = params != NULL ? json_object_get(params, "code") : NULL;
    snprintf(path, pathlen, "code");
    if (c == NULL) {
        snprintf(msg, msglen, "op lua needs params.code: a Lua chunk that returns a function");
        return -BATCHD_E_INVALID_PARAM;
    }
    size_t len = json_string_length(c);
    const char *code = json_string_value(c);
    if (len > LUA_CODE_MAX) {
        snprintf(msg, msglen, "code is %zu bytes, more than the %u allowed", len, LUA_CODE_MAX);
        return -BATCHD_E_INVALID_PARAM;
    }
    if (last_ok != NULL && len == last_len && memcmp(last_ok, code, len) == 0) {
        path[0] = '\0';
        return 0;
    }
    struct lbox box;
    if (lbox_open(&box, LUA_DEFAULT_MEMORY) != 0) {
        snprintf(msg, msglen, "out of memory compiling code");
        return -BATCHD_E_INVALID_PARAM;
    }
    int rc = lbox_load(&box, code, len);
    if (rc != LUA_OK) {
        const char *m = lua_tostring(box.L, -1);
        snprintf(msg, msglen, "code does not compile: %s", m != NULL ? m : "error");
        lbox_close(&box);
        return -BATCHD_E_INVALID_PARAM;
    }
    lbox_close(&box);
    char *copy = malloc(len + 1);
    if (copy != NULL) {
        memcpy(copy, code, len);
        copy[len] = '\0';
        free(last_ok);
        last_ok = copy;
        last_len = len;
    }
    path[0] = '\0';
    return 0;
}

static const struct op_param lua_params[] = {
    {.name = "code",
     .type = OP_PARAM_STRING,
     .min = 1,
     .max = 0,
     .help =
         "required: Lua 5.4 source of a chunk that returns a function; each job calls it with its "
         "input and its return value is the result (text only; a sandbox of string, "
         "table, math, utf8, coroutine and the safe base functions)",
     .flags = OP_PARAM_REQUIRED},
    {.name = "seed",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = 0,
     .def = "0",
     .help = "seeds math.random (with the job's index): the same batch gives the same results"},
    {0},
};

const struct op op_lua = {
    .name = "lua",
    .summary = "your own function, in sandboxed Lua 5.4",
    .input = "any JSON value (objects are tables, arrays sequences, null is batchd.null)",
    .result = "what the function returns, as JSON (a sequence is an array)",
    .example = "3",
    .params = lua_params,
    /* A tiny function costs ~1 µs a job; the hint sizes chunks of big batches from that,
     * and small batches are spread over the workers whatever they cost. */
    .flags = OP_COST_VARIES,
    .cost_hint_ns = 1000,
    .validate_params = validate_lua,
    .run = run_lua,
};
