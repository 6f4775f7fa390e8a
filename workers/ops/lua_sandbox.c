/* The Lua sandbox (SPEC §10), an allow-list: the environment of every chunk is a table built
 * from nothing, holding copies of the functions named below and nothing else. The libraries
 * are opened into the registry only (never into a reachable global table), so io, os, debug,
 * package, require, load, dofile and collectgarbage are simply not there; string.dump is not
 * copied, and the string metatable, shared by every string, points at the sandbox's own
 * string table and is locked (__metatable), so ("").dump and friends lead nowhere new.
 * Memory is counted by our allocator (refused past the cap: Lua raises a memory error); time
 * by a count hook that yields the job's coroutine at its deadline (an error raised there
 * could be caught by the script's own pcall; a yield cannot). The hook costs about 3x in a
 * tight loop while it is set, so it is set only when the job's time is up: a POSIX timer
 * fires SIGALRM at the deadline, and its handler sets the hook (lua_sethook may be called
 * from a signal handler; lua.c does the same for Ctrl-C) on the interpreter, the job's
 * thread and every coroutine the script made (coroutine.create and wrap record them). C code
 * that runs long (string patterns) is bounded by the guards below and, past them, by the
 * worker kill. */
#include "lua_internal.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The hook runs every this many VM instructions (a clock read each time). */
#define LBOX_HOOK_COUNT 1000
/* The most elements one table.move may move. */
#define LBOX_MOVE_MAX (1 << 26)
/* Estimated backtracking steps past which a pattern is refused before it runs. */
#define LBOX_PATTERN_BUDGET 1e10

static uint64_t lbox_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *lbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lbox *b = ud;
    size_t old = ptr != NULL ? osize : 0; /* with ptr NULL, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        b->used -= old;
        return NULL;
    }
    if (nsize > old && nsize - old > b->cap - b->used) {
        b->refused = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL) {
        b->refused = 1;
        return NULL;
    }
    b->used = b->used - old + nsize;
    return p;
}

static struct lbox *lbox_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

static void lbox_hook_fn(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct lbox *b = lbox_of(L);
    if (!b->expired) {
        if (b->deadline == 0 || lbox_now_ns() < b->deadline) {
            return;
        }
        b->expired = 1;
    }
    /* From now on, every instruction of every thread comes here. */
    lua_sethook(L, lbox_hook_fn, LUA_MASKCOUNT, 1);
    if (L == b->job && lua_isyieldable(L)) {
        lua_yield(L, 0); /* back to lbox's resume, past any pcall of the script's */
        return;
    }
    /* A coroutine of the script's own, or inside a C call that cannot yield (a sort's
     * comparator): fail it; the job's thread yields at its next instruction. */
    luaL_error(L, "the job ran past its time budget");
}

/* The interpreter whose job the alarm may stop, or NULL. */
static _Atomic(struct lbox *) lbox_armed;
/* When the one-shot timer is set to fire (monotonic ns), 0 when it is not set. It is left
 * running between jobs: arming it is a system call, and a tiny job costs less than two. */
static _Atomic uint64_t lbox_timer_at;
static timer_t lbox_timer;
static int lbox_timer_ok; /* 1 once the timer and the handler are set up */

static void lbox_hook_all(struct lbox *b, int count)
{
    lua_sethook(b->L, lbox_hook_fn, LUA_MASKCOUNT, count);
    if (b->job != NULL) {
        lua_sethook(b->job, lbox_hook_fn, LUA_MASKCOUNT, count);
    }
    for (int i = 0; i < b->nthreads; i++) {
        lua_sethook(b->threads[i], lbox_hook_fn, LUA_MASKCOUNT, count);
    }
}

/* Sets the timer to fire at AT (absolute, monotonic). Async-signal-safe. */
static int lbox_timer_set(uint64_t at)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)(at / 1000000000u);
    its.it_value.tv_nsec = (long)(at % 1000000000u);
    atomic_store(&lbox_timer_at, at);
    if (timer_settime(lbox_timer, TIMER_ABSTIME, &its, NULL) != 0) {
        atomic_store(&lbox_timer_at, 0);
        return -1;
    }
    return 0;
}

static void lbox_on_alarm(int sig)
{
    (void)sig;
    atomic_store(&lbox_timer_at, 0);
    struct lbox *b = atomic_load(&lbox_armed);
    if (b == NULL || b->deadline == 0) {
        return; /* between jobs: the next one sets the timer again */
    }
    if (lbox_now_ns() < b->deadline) {
        lbox_timer_set(b->deadline); /* set for an earlier job: not this one's time yet */
        return;
    }
    b->alarm_fired = 1;
    lbox_hook_all(b, 1);
}

static int lbox_timer_setup(void)
{
    if (lbox_timer_ok) {
        return 0;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lbox_on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGALRM;
    if (sigaction(SIGALRM, &sa, NULL) != 0 ||
        timer_create(CLOCK_MONOTONIC, &sev, &lbox_timer) != 0) {
        return -1;
    }
    lbox_timer_ok = 1;
    return 0;
}

void lbox_arm(struct lbox *box, uint64_t deadline)
{
    box->job = NULL;
    box->deadline = deadline;
    box->expired = 0;
    box->refused = 0;
    box->alarm_fired = 0;
    if (deadline == 0) {
        return;
    }
    if (lbox_timer_setup() != 0) {
        /* No timer: the hook stays on for the whole job (slower, as safe). */
        lbox_hook_all(box, LBOX_HOOK_COUNT);
        return;
    }
    /* Publish the job first: an alarm from now on sees it (and sets the timer again when it
     * came early), one before has cleared lbox_timer_at, which is read after. */
    atomic_store(&lbox_armed, box);
    uint64_t at = atomic_load(&lbox_timer_at);
    if ((at == 0 || at > deadline) && lbox_timer_set(deadline) != 0) {
        atomic_store(&lbox_armed, NULL);
        lbox_hook_all(box, LBOX_HOOK_COUNT);
    }
}

void lbox_disarm(struct lbox *box)
{
    /* The timer may stay set: when it fires with no job armed, the handler does nothing. */
    atomic_store(&lbox_armed, NULL);
    box->deadline = 0;
    box->job = NULL;
    if (box->alarm_fired || !lbox_timer_ok) {
        /* Hooks were set (the alarm came as the job ended, or there is no timer): take them
         * off, so that the next job runs at full speed. */
        lua_sethook(box->L, NULL, 0, 0);
        for (int i = 0; i < box->nthreads; i++) {
            lua_sethook(box->threads[i], NULL, 0, 0);
        }
    }
}

/* Records coroutine T for the alarm (or, past LUA_MAX_THREADS, hooks it for good). The
 * thread is at the top of L's stack. */
static void lbox_track(lua_State *L, lua_State *T)
{
    struct lbox *b = lbox_of(L);
    if (b->nthreads >= LUA_MAX_THREADS) {
        lua_sethook(T, lbox_hook_fn, LUA_MASKCOUNT, b->expired ? 1 : LBOX_HOOK_COUNT);
        return;
    }
    /* Anchored, so that the pointer stays valid for the alarm as long as the interpreter. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->threads_ref);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, b->nthreads + 1);
    lua_pop(L, 1);
    b->threads[b->nthreads] = T;
    b->nthreads = b->nthreads + 1; /* after the store: the handler reads up to nthreads */
}

/* setmetatable without __gc: a finalizer would run whenever the collector runs, also between
 * jobs or at lua_close, outside any job's budget. */
static int lbox_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL) {
            return luaL_error(L, "__gc metamethods are not allowed in the sandbox");
        }
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* string.rep whose result is bounded: one C call that builds 1 GiB would run unhooked. */
static int lbox_rep(lua_State *L)
{
    size_t l = 0, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (l + lsep == 0) {
        /* Lua's own would copy nothing n times: string.rep('', 1e18) never ends. */
        lua_pushliteral(L, "");
        return 1;
    }
    double total = n <= 0 ? 0 : (double)l * (double)n + (double)lsep * (double)(n - 1);
    struct lbox *b = lbox_of(L);
    double cap = b->cap < LUA_REP_MAX ? (double)b->cap : (double)LUA_REP_MAX;
    if (total > cap) {
        char m[128];
        snprintf(m, sizeof m, "string.rep would make %.0f bytes, more than the %d MiB allowed",
                 total, (int)(cap / (1024 * 1024)));
        return luaL_error(L, "%s", m);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* table.move over a bounded range: moving nils allocates nothing, so the memory cap would
 * not stop table.move({}, 1, math.maxinteger - 1, 1), one C loop without a hook. */
static int lbox_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    if (e >= f && (e - f > LBOX_MOVE_MAX || e - f < 0)) {
        return luaL_error(L, "table.move of more than %d elements", (int)LBOX_MOVE_MAX);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* The wildcard repetitions of a Lua pattern ('.' followed by '*', '+' or '-'): each one more
 * multiplies the backtracking of a failing match by the subject's length. *ANCHORED is set
 * when the pattern starts with '^'. */
static int lbox_pattern_wildcards(const char *p, size_t len, int *anchored)
{
    int q = 0;
    size_t i = 0;
    *anchored = len > 0 && p[0] == '^';
    while (i < len) {
        char c = p[i];
        if (c == '%') {
            i += 2;
            continue;
        }
        if (c == '[') {
            i++;
            if (i < len && p[i] == '^') {
                i++;
            }
            if (i < len && p[i] == ']') {
                i++;
            }
            while (i < len && p[i] != ']') {
                i += p[i] == '%' ? 2 : 1;
            }
            i++;
            continue;
        }
        if (c == '.' && i + 1 < len && (p[i + 1] == '*' || p[i + 1] == '+' || p[i + 1] == '-')) {
            q++;
            i += 2;
            continue;
        }
        i++;
    }
    return q;
}

/* string.find/match/gmatch/gsub with a guard: a pattern whose estimated backtracking over
 * this subject is beyond any job's budget is refused before it runs (inside one C call no
 * hook fires, and string.find(string.rep('a', 1000), '.-.-.-b') takes minutes). */
static int lbox_pattern_guard(lua_State *L)
{
    int is_find = (int)lua_tointeger(L, lua_upvalueindex(2));
    if (lua_type(L, 1) == LUA_TSTRING && lua_type(L, 2) == LUA_TSTRING &&
        !(is_find && lua_toboolean(L, 4))) {
        size_t n, plen;
        lua_tolstring(L, 1, &n);
        const char *p = lua_tolstring(L, 2, &plen);
        int anchored;
        int q = lbox_pattern_wildcards(p, plen, &anchored);
        if (q >= 2) {
            /* ~ n^q / q! ways to split the subject among q wildcards, at each start. */
            double steps = anchored ? 1 : (double)n;
            for (int k = 1; k <= q; k++) {
                steps *= (double)n / k;
            }
            if (steps > LBOX_PATTERN_BUDGET) {
                char m[160];
                snprintf(m, sizeof m,
                         "pattern too complex: %d wildcard repetitions over %zu bytes could "
                         "backtrack ~%.0e steps",
                         q, n, steps);
                return luaL_error(L, "%s", m);
            }
        }
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* coroutine.create and coroutine.wrap that record the new thread for the alarm (a thread
 * made after the alarm inherits its maker's hook as well). */
static int lbox_co_create(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    lua_State *T = lua_tothread(L, -1);
    if (T != NULL) {
        lbox_track(L, T);
    }
    return 1;
}

static int lbox_co_wrap(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    /* The wrapper is a C closure whose one upvalue is its coroutine. */
    if (lua_getupvalue(L, -1, 1) != NULL) {
        lua_State *T = lua_tothread(L, -1);
        if (T != NULL) {
            lbox_track(L, T);
        }
        lua_pop(L, 1);
    }
    return 1;
}

/* Opens library F into the registry only and leaves its table on the stack. */
static void lbox_lib(lua_State *L, const char *name, lua_CFunction f)
{
    luaL_requiref(L, name, f, 0);
}

/* Copies the fields NAMES of the table at SRC into the table at DST. */
static void lbox_copy(lua_State *L, int src, int dst, const char *const *names)
{
    for (; *names != NULL; names++) {
        lua_getfield(L, src, *names);
        lua_setfield(L, dst, *names);
    }
}

/* Replaces DST[NAME] by a closure of F over the original (and EXTRA as a second upvalue when
 * EXTRA >= 0). */
static void lbox_wrap(lua_State *L, int dst, const char *name, lua_CFunction f, int extra)
{
    lua_getfield(L, dst, name);
    int n = 1;
    if (extra >= 0) {
        lua_pushinteger(L, extra);
        n = 2;
    }
    lua_pushcclosure(L, f, n);
    lua_setfield(L, dst, name);
}

static const char *const lbox_base_names[] = {
    "assert",   "error",  "getmetatable", "ipairs",   "next",   "pairs",        "pcall",
    "rawequal", "rawget", "rawlen",       "rawset",   "select", "setmetatable", "tonumber",
    "tostring", "type",   "xpcall",       "_VERSION", NULL};
static const char *const lbox_string_names[] = {
    "byte", "char",     "find", "format",  "gmatch", "gsub",   "len",   "lower", "match",
    "pack", "packsize", "rep",  "reverse", "sub",    "unpack", "upper", NULL};
static const char *const lbox_table_names[] = {"concat", "insert", "move",   "pack",
                                               "remove", "sort",   "unpack", NULL};
static const char *const lbox_math_names[] = {
    "abs", "acos",       "asin", "atan",      "ceil", "cos",    "deg",
    "exp", "floor",      "fmod", "huge",      "log",  "max",    "maxinteger",
    "min", "mininteger", "modf", "pi",        "rad",  "random", "randomseed",
    "sin", "sqrt",       "tan",  "tointeger", "type", "ult",    NULL};
static const char *const lbox_utf8_names[] = {"char", "charpattern", "codes", "codepoint",
                                              "len",  "offset",      NULL};
static const char *const lbox_co_names[] = {"close",  "create", "isyieldable", "resume", "running",
                                            "status", "wrap",   "yield",       NULL};

/* Builds the sandbox (in protected mode: any allocation may fail). */
static int lbox_setup(lua_State *L)
{
    struct lbox *b = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_newtable(L); /* 1: the sandbox */
    lbox_lib(L, "_G", luaopen_base);
    lbox_copy(L, 2, 1, lbox_base_names);
    lbox_wrap(L, 1, "setmetatable", lbox_setmetatable, -1);
    lua_settop(L, 1);
    static const struct {
        const char *name;
        lua_CFunction open;
        const char *const *names;
    } libs[] = {
        {LUA_STRLIBNAME, luaopen_string, lbox_string_names},
        {LUA_TABLIBNAME, luaopen_table, lbox_table_names},
        {LUA_MATHLIBNAME, luaopen_math, lbox_math_names},
        {LUA_UTF8LIBNAME, luaopen_utf8, lbox_utf8_names},
        {LUA_COLIBNAME, luaopen_coroutine, lbox_co_names},
    };
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        lbox_lib(L, libs[i].name, libs[i].open); /* 2: the real library */
        lua_newtable(L);                         /* 3: the sandbox's copy */
        lbox_copy(L, 2, 3, libs[i].names);
        if (libs[i].open == luaopen_math) {
            lua_getfield(L, 2, "randomseed");
            b->seed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        lua_setfield(L, 1, libs[i].name);
        lua_settop(L, 1);
    }
    lua_getfield(L, 1, LUA_STRLIBNAME); /* 2 */
    lbox_wrap(L, 2, "rep", lbox_rep, -1);
    lbox_wrap(L, 2, "find", lbox_pattern_guard, 1);
    lbox_wrap(L, 2, "match", lbox_pattern_guard, 0);
    lbox_wrap(L, 2, "gmatch", lbox_pattern_guard, 0);
    lbox_wrap(L, 2, "gsub", lbox_pattern_guard, 0);
    /* The string metatable is shared by all strings: its __index becomes the sandbox's
     * string table, and __metatable hides it (getmetatable("") is false). */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1); /* 4 */
    lua_pushvalue(L, 2);
    lua_setfield(L, 4, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, 4, "__metatable");
    lua_settop(L, 1);
    lua_getfield(L, 1, LUA_TABLIBNAME);
    lbox_wrap(L, 2, "move", lbox_move, -1);
    lua_settop(L, 1);
    lua_getfield(L, 1, LUA_COLIBNAME);
    lbox_wrap(L, 2, "create", lbox_co_create, -1);
    lbox_wrap(L, 2, "wrap", lbox_co_wrap, -1);
    lua_settop(L, 1);
    lua_newtable(L); /* batchd */
    ljson_push_null(L);
    lua_setfield(L, 2, "null");
    lua_setfield(L, 1, "batchd");
    lua_pushvalue(L, 1);
    lua_setfield(L, 1, "_G");
    b->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    b->threads_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int lbox_open(struct lbox *box, size_t cap)
{
    memset(box, 0, sizeof *box);
    box->cap = cap;
    box->env_ref = LUA_NOREF;
    box->fn_ref = LUA_NOREF;
    box->seed_ref = LUA_NOREF;
    box->threads_ref = LUA_NOREF;
    box->L = lua_newstate(lbox_alloc, box);
    if (box->L == NULL) {
        return -1;
    }
    lua_pushcfunction(box->L, lbox_setup);
    lua_pushlightuserdata(box->L, box);
    if (lua_pcall(box->L, 1, 0, 0) != LUA_OK) {
        lbox_close(box);
        return -1;
    }
    return 0;
}

void lbox_close(struct lbox *box)
{
    if (box->L == NULL) {
        return;
    }
    /* Collect first (CVE-2024-46981 in Valkey: a use after free without it). No finalizer
     * can run: the sandbox's setmetatable refuses __gc. */
    if (atomic_load(&lbox_armed) == box) {
        lbox_disarm(box);
    }
    box->deadline = 0;
    lua_gc(box->L, LUA_GCCOLLECT);
    lua_close(box->L);
    box->L = NULL;
}

int lbox_load(struct lbox *box, const char *code, size_t len)
{
    lua_State *L = box->L;
    int rc = luaL_loadbufferx(L, code, len, "=params.code", "t");
    if (rc != LUA_OK) {
        return rc;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, box->env_ref);
    if (lua_setupvalue(L, -2, 1) == NULL) {
        lua_pop(L, 1); /* a chunk always has _ENV; keep the stack right anyway */
    }
    return LUA_OK;
}
