/* Private to the Lua op (SPEC §10): the sandboxed interpreter (lua_sandbox.c), the JSON <-> Lua
 * conversion (lua_json.c) and the op itself (lua_op.c). Nothing outside workers/ops/ includes
 * this header. */
#ifndef BATCHD_WORKERS_OPS_LUA_INTERNAL_H
#define BATCHD_WORKERS_OPS_LUA_INTERNAL_H

#include "../../api/buf.h"

#include <jansson.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/* The memory cap of one interpreter when the server says none (--lua-memory). */
#define LUA_DEFAULT_MEMORY (64u * 1024 * 1024)
/* The largest string string.rep may build, whatever the memory cap. */
#define LUA_REP_MAX (16u * 1024 * 1024)
/* Results nested deeper than this are refused (a cycle is refused at once). */
#define LUA_RESULT_MAX_DEPTH 100
/* Coroutines of a script the budget's alarm can reach; past that many, new ones run with
 * the count hook always on (slower, as safe). */
#define LUA_MAX_THREADS 1024
/* The largest chunk accepted as params.code. */
#define LUA_CODE_MAX (1u * 1024 * 1024)

/* One sandboxed interpreter and what its allocator and hook need. The allocator's user data
 * is this struct, so that the hook (given only a lua_State) finds it through lua_getallocf. */
struct lbox {
    lua_State *L;
    size_t used;              /* bytes the interpreter holds */
    size_t cap;               /* the most it may hold */
    int refused;              /* 1 once an allocation was refused since the last lbox_arm */
    lua_State *job;           /* the coroutine running the current job, or NULL */
    uint64_t deadline;        /* CLOCK_MONOTONIC ns at which the job's budget ends; 0 = none */
    int expired;              /* 1 once the hook saw the deadline pass */
    int env_ref;              /* registry reference of the sandbox table (every chunk's _ENV) */
    int fn_ref;               /* registry reference of the function the chunk returned */
    int seed_ref;             /* registry reference of the real math.randomseed */
    int threads_ref;          /* registry reference of the table that keeps threads[] alive */
    volatile int alarm_fired; /* the alarm hooked the threads during this job */
    volatile int nthreads;
    lua_State *threads[LUA_MAX_THREADS]; /* the script's coroutines, for the alarm */
};

/* Makes a sandboxed interpreter capped at CAP bytes (SPEC §10's environment; the string
 * metatable locked). Returns 0, or -1 when out of memory (*BOX is then cleaned). */
int lbox_open(struct lbox *box, size_t cap);

/* Closes the interpreter (a full collection first). A zeroed or closed box is a no-op. */
void lbox_close(struct lbox *box);

/* Compiles CODE (text only) with the sandbox as its _ENV and leaves the function on L's
 * stack. Returns LUA_OK, or a Lua status with the message (with its line) on the stack. */
int lbox_load(struct lbox *box, const char *code, size_t len);

/* Starts a job's budget: at DEADLINE (monotonic ns; 0 = no limit) an alarm signal sets the
 * count hook on every thread of the interpreter, which then stops the script; until then Lua
 * runs at full speed, without a hook. Clears the allocator's refusal flag. */
void lbox_arm(struct lbox *box, uint64_t deadline);

/* Ends the budget: no alarm can touch the interpreter after this returns. */
void lbox_disarm(struct lbox *box);

/* The sentinel that stands for JSON null (batchd.null), pushed on L. */
void ljson_push_null(lua_State *L);

/* Pushes V as a Lua value (objects and arrays as tables, null as batchd.null). Raises a Lua
 * error when out of memory: call it in protected mode. */
void ljson_push(lua_State *L, const json_t *v);

/* Writes the Lua value at IDX of L as JSON text into OUT. Returns 0, or a negative per-job
 * code with MSG set (a function, a cycle, a table too deep, NaN, a string not UTF-8, a
 * result over OUT's cap). May raise a Lua error (memory): call it in protected mode. */
int ljson_write(lua_State *L, int idx, struct buf *out, char *msg, size_t msglen);

#endif
