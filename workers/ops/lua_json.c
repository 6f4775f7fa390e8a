/* JSON <-> Lua for the Lua op (SPEC §10): objects are tables with string keys, arrays are
 * sequences, integers stay integers and floats floats, null is batchd.null (a light userdata
 * only this file makes). Back to JSON: a sequence is an array, a table of string keys an
 * object (keys sorted, so that a result does not depend on the interpreter's hash seed), the
 * empty table []; NaN and infinities are domain_error; functions, cycles, tables nested past
 * LUA_RESULT_MAX_DEPTH and strings that are not UTF-8 are refused with script_error. */
#include "../../api/errors.h"
#include "../../api/jsonw.h"
#include "lua_internal.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Its address is batchd.null: unique, and no script can make another. */
static const char ljson_null_tag = 'n';

void ljson_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&ljson_null_tag);
}

void ljson_push(lua_State *L, const json_t *v)
{
    /* Two slots for a table and a value at each level; jansson bounds the depth (2048). */
    luaL_checkstack(L, 4, "the input is nested too deeply");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(v));
        const char *key;
        size_t klen;
        json_t *val;
        json_object_keylen_foreach((json_t *)v, key, klen, val)
        {
            lua_pushlstring(L, key, klen);
            ljson_push(L, val);
            lua_rawset(L, -3);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        lua_createtable(L, n < 1u << 24 ? (int)n : 0, 0);
        for (size_t i = 0; i < n; i++) {
            ljson_push(L, json_array_get(v, i));
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
    default:
        ljson_push_null(L);
        break;
    }
}

/* 1 when the LEN bytes at S are well-formed UTF-8 (no overlongs, no surrogates). */
static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            min = 0x80;
            c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            min = 0x800;
            c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return 0;
        }
        if (len - i <= n) {
            return 0;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
            return 0;
        }
        i += n + 1;
    }
    return 1;
}

struct ljson_key {
    const char *s;
    size_t len;
};

static int ljson_key_cmp(const void *a, const void *b)
{
    const struct ljson_key *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c != 0) {
        return c;
    }
    return x->len < y->len ? -1 : x->len > y->len;
}

struct ljson_ctx {
    struct buf *out;
    char *msg;
    size_t msglen;
    const void *path[LUA_RESULT_MAX_DEPTH]; /* the tables being written, outermost first */
    int depth;
};

static int ljson_fail(struct ljson_ctx *c, int err, const char *what)
{
    snprintf(c->msg, c->msglen, "%s", what);
    return err;
}

static int ljson_value(lua_State *L, int idx, struct ljson_ctx *c);

/* Writes the sequence 1..MAXI at IDX (absolute) as a JSON array. */
static int ljson_array(lua_State *L, int idx, lua_Integer maxi, struct ljson_ctx *c)
{
    int rc = buf_add(c->out, "[", 1);
    for (lua_Integer i = 1; rc == 0 && i <= maxi; i++) {
        if (i > 1) {
            rc = buf_add(c->out, ",", 1);
        }
        lua_rawgeti(L, idx, i);
        if (rc == 0) {
            rc = ljson_value(L, lua_gettop(L), c);
        }
        lua_pop(L, 1);
    }
    if (rc == 0) {
        rc = buf_add(c->out, "]", 1);
    }
    return rc;
}

/* Writes the table of COUNT string keys at IDX (absolute) as a JSON object, keys sorted. */
static int ljson_object(lua_State *L, int idx, size_t count, struct ljson_ctx *c)
{
    /* A userdata, not malloc: a memory error below (a long key pushed again) unwinds
     * through here, and the collector frees it then. */
    struct ljson_key *keys = lua_newuserdatauv(L, count * sizeof *keys, 0);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        /* The key is a string the table holds: its bytes stay put while no Lua runs. */
        keys[n].s = lua_tolstring(L, -1, &keys[n].len);
        n++;
    }
    qsort(keys, n, sizeof *keys, ljson_key_cmp);
    int rc = buf_add(c->out, "{", 1);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!utf8_valid((const unsigned char *)keys[i].s, keys[i].len)) {
            rc = ljson_fail(c, -BATCHD_E_SCRIPT_ERROR, "a key of the result is not valid UTF-8");
            break;
        }
        if (i > 0) {
            rc = buf_add(c->out, ",", 1);
        }
        if (rc == 0) {
            rc = jsonw_string(c->out, keys[i].s, keys[i].len);
        }
        if (rc == 0) {
            rc = buf_add(c->out, ":", 1);
        }
        lua_pushlstring(L, keys[i].s, keys[i].len);
        lua_rawget(L, idx);
        if (rc == 0) {
            rc = ljson_value(L, lua_gettop(L), c);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* keys */
    if (rc == 0) {
        rc = buf_add(c->out, "}", 1);
    }
    return rc;
}

/* Writes the table at IDX (absolute): an array, an object, or a failure for neither. */
static int ljson_table(lua_State *L, int idx, struct ljson_ctx *c)
{
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < c->depth; i++) {
        if (c->path[i] == self) {
            return ljson_fail(c, -BATCHD_E_SCRIPT_ERROR,
                              "the result is cyclic: a table contains itself");
        }
    }
    if (c->depth >= LUA_RESULT_MAX_DEPTH) {
        char m[96];
        snprintf(m, sizeof m, "the result is nested deeper than %d tables", LUA_RESULT_MAX_DEPTH);
        return ljson_fail(c, -BATCHD_E_SCRIPT_ERROR, m);
    }
    luaL_checkstack(L, 6, "the result is nested too deeply");
    /* One pass to learn what the table is: a sequence 1..n, string keys, or neither. */
    size_t count = 0, nstr = 0;
    lua_Integer maxi = 0;
    int other = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            nstr++;
        } else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0) {
            lua_Integer k = lua_tointeger(L, -1);
            maxi = k > maxi ? k : maxi;
        } else {
            other = 1;
        }
    }
    int rc = 0;
    c->path[c->depth++] = self;
    if (!other && nstr == 0 && (lua_Integer)count == maxi) {
        rc = ljson_array(L, idx, maxi, c);
    } else if (!other && nstr == count) {
        rc = ljson_object(L, idx, count, c);
    } else {
        rc = ljson_fail(c, -BATCHD_E_SCRIPT_ERROR,
                        "a table of the result is neither a sequence 1..n nor a table of "
                        "string keys, so it has no JSON form");
    }
    c->depth--;
    return rc;
}

static int ljson_value(lua_State *L, int idx, struct ljson_ctx *c)
{
    int rc = 0;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        rc = buf_add(c->out, "null", 4);
        break;
    case LUA_TBOOLEAN:
        rc = lua_toboolean(L, idx) ? buf_add(c->out, "true", 4) : buf_add(c->out, "false", 5);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            rc = jsonw_int(c->out, (int64_t)lua_tointeger(L, idx));
        } else {
            double d = (double)lua_tonumber(L, idx);
            if (!isfinite(d)) {
                return ljson_fail(c, -BATCHD_E_DOMAIN_ERROR,
                                  "the result holds NaN or an infinity, which JSON cannot carry");
            }
            rc = jsonw_double(c->out, d);
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (!utf8_valid((const unsigned char *)s, len)) {
            return ljson_fail(c, -BATCHD_E_SCRIPT_ERROR,
                              "a string of the result is not valid UTF-8");
        }
        rc = jsonw_string(c->out, s, len);
        break;
    }
    case LUA_TTABLE:
        return ljson_table(L, idx, c);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == (void *)&ljson_null_tag) {
            rc = buf_add(c->out, "null", 4);
            break;
        }
        return ljson_fail(c, -BATCHD_E_SCRIPT_ERROR, "a userdata has no JSON form");
    default: {
        char m[96];
        snprintf(m, sizeof m, "a %s has no JSON form", lua_typename(L, lua_type(L, idx)));
        return ljson_fail(c, -BATCHD_E_SCRIPT_ERROR, m);
    }
    }
    if (rc != 0) {
        return ljson_fail(c, -BATCHD_E_TOO_LARGE, "the result is larger than a result may be");
    }
    return 0;
}

int ljson_write(lua_State *L, int idx, struct buf *out, char *msg, size_t msglen)
{
    struct ljson_ctx c = {.out = out, .msg = msg, .msglen = msglen};
    msg[0] = '\0';
    int rc = ljson_value(L, lua_absindex(L, idx), &c);
    if (rc != 0) {
        buf_reset(out);
    }
    return rc;
}
