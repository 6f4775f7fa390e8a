/* Unit tests of op lua's JSON <-> Lua conversion (workers/ops/lua_json.c) and of the op run
 * directly: values round-trip with integers and floats kept apart, null as batchd.null,
 * objects with sorted keys; what has no JSON form is refused with its code. */
#include "../../api/errors.h"
#include "../../workers/ops/lua_internal.h"
#include "../../workers/ops/ops.h"
#include "../check.h"

#include <lauxlib.h>
#include <string.h>

/* Pushes TEXT (JSON) into a sandbox, writes it back; returns the code, OUT the text. */
static int round_trip(const char *text, struct buf *out)
{
    struct lbox box;
    CHECK_EQ_INT(lbox_open(&box, LUA_DEFAULT_MEMORY), 0);
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    CHECK(v != NULL);
    ljson_push(box.L, v);
    char msg[256];
    buf_reset(out);
    int rc = ljson_write(box.L, -1, out, msg, sizeof msg);
    json_decref(v);
    lbox_close(&box);
    return rc;
}

static void test_round_trip(void)
{
    static const char *const same[] = {
        "1",
        "-9223372036854775808",
        "2.0",
        "0.1",
        "1e+16",
        "true",
        "null",
        "\"h\\u00e9\\n\"",
        "[1,2.5,null,\"x\"]",
        "{\"a\":{\"b\":[]},\"z\":1}",
        "[[[]]]",
        "[]",
    };
    struct buf b;
    buf_init(&b, 1 << 20);
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        CHECK_EQ_INT(round_trip(same[i], &b), 0);
        json_t *want = json_loads(same[i], JSON_DECODE_ANY, NULL);
        json_t *got = json_loadb(buf_data(&b), buf_len(&b), JSON_DECODE_ANY, NULL);
        CHECK(got != NULL && json_equal(want, got));
        if (json_is_real(want)) {
            CHECK(json_is_real(got)); /* 2.0 stays a float */
        }
        json_decref(want);
        json_decref(got);
    }
    /* Keys come out sorted, whatever the interpreter's hash order. */
    CHECK_EQ_INT(round_trip("{\"b\":1,\"a\":2,\"c\":3}", &b), 0);
    CHECK(buf_len(&b) == 19 && memcmp(buf_data(&b), "{\"a\":2,\"b\":1,\"c\":3}", 19) == 0);
    /* An empty object has no form of its own in Lua: it comes back as []. */
    CHECK_EQ_INT(round_trip("{}", &b), 0);
    CHECK(buf_len(&b) == 2 && memcmp(buf_data(&b), "[]", 2) == 0);
    buf_cleanup(&b);
}

/* Runs CODE's function on INPUT through the op; returns the code, OUT the result text. */
static int run_code(const char *code, const char *input, struct buf *out, char *msg, size_t n)
{
    const struct op *op = ops_find("lua");
    CHECK(op != NULL);
    json_t *params = json_pack("{s:s}", "code", code);
    json_t *v = json_loads(input, JSON_DECODE_ANY, NULL);
    struct job_output o;
    memset(&o, 0, sizeof o);
    buf_reset(out);
    o.json = out;
    static uint64_t batch;
    struct job_input in = {.value = v, .params = params, .batch = ++batch, .timeout_ms = 5000};
    int rc = op->run(&in, &o);
    snprintf(msg, n, "%s", o.message);
    json_decref(v);
    json_decref(params);
    return rc;
}

static void test_refusals(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    char msg[256];
    CHECK_EQ_INT(run_code("return function() return 0/0 end", "1", &b, msg, sizeof msg),
                 -BATCHD_E_DOMAIN_ERROR);
    CHECK_EQ_INT(
        run_code("return function() local t = {} t[1] = t return t end", "1", &b, msg, sizeof msg),
        -BATCHD_E_SCRIPT_ERROR);
    CHECK(strstr(msg, "cyclic") != NULL);
    CHECK_EQ_INT(run_code("return function() return {1, nil, 3} end", "1", &b, msg, sizeof msg),
                 -BATCHD_E_SCRIPT_ERROR);
    CHECK_EQ_INT(
        run_code("return function() return coroutine.create(print) end", "1", &b, msg, sizeof msg),
        -BATCHD_E_SCRIPT_ERROR);
    CHECK_EQ_INT(run_code("return function(x) return x.a[2] == batchd.null end", "{\"a\":[1,null]}",
                          &b, msg, sizeof msg),
                 0);
    CHECK(buf_len(&b) == 4 && memcmp(buf_data(&b), "true", 4) == 0);
    buf_cleanup(&b);
}

static void test_budget(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    char msg[256];
    const struct op *op = ops_find("lua");
    json_t *params = json_pack("{s:s}", "code", "return function() while true do end end");
    json_t *v = json_integer(1);
    struct job_output o;
    memset(&o, 0, sizeof o);
    o.json = &b;
    struct job_input in = {.value = v, .params = params, .batch = 999, .timeout_ms = 200};
    CHECK_EQ_INT(op->run(&in, &o), -BATCHD_E_TIMEOUT);
    json_decref(v);
    json_decref(params);
    /* A memory bomb: the cap refuses it, the process lives on. */
    CHECK_EQ_INT(run_code("return function() local t = {} for i = 1, 1e8 do t[i] = i end end", "1",
                          &b, msg, sizeof msg),
                 -BATCHD_E_TOO_LARGE);
    buf_cleanup(&b);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"round_trip", test_round_trip},
    {"refusals", test_refusals},
    {"budget", test_budget},
};
/* clang-format on */

CHECK_MAIN("test_lua_json", cases)
