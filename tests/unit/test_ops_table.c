/* Unit tests of the op table (workers/ops.c): every descriptor is complete and its example
 * parses, lookups agree, /v1/ops is well-formed, and ops_check_params refuses what it must.
 * Adding an op needs no change here: the test walks the table. */
#include "../../api/errors.h"
#include "../../workers/ops/ops.h"
#include "../check.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

static void test_walk(void)
{
    size_t n = ops_count();
    CHECK(n >= 15);
    CHECK(ops_at(n) == NULL);
    CHECK(ops_at(SIZE_MAX) == NULL);
    CHECK(ops_find("no_such_op") == NULL);
    CHECK(ops_find("") == NULL);
    CHECK(ops_find(NULL) == NULL);
    CHECK(ops_find("SQRT") == NULL);
    CHECK_EQ_INT(ops_index(NULL), SIZE_MAX);
    for (size_t i = 0; i < n; i++) {
        const struct op *op = ops_at(i);
        CHECK(op != NULL);
        if (op == NULL) {
            continue;
        }
        CHECK(op->name != NULL && op->name[0] != '\0');
        CHECK(op->summary != NULL && op->summary[0] != '\0');
        CHECK(op->input != NULL && op->input[0] != '\0');
        CHECK(op->result != NULL && op->result[0] != '\0');
        CHECK(op->example != NULL);
        CHECK(op->run != NULL);
        CHECK(op->cost_hint_ns > 0);
        CHECK(ops_find(op->name) == op);
        CHECK_EQ_INT(ops_index(op), i);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(ops_at(j)->name, op->name) == 0) {
                fprintf(stderr, "duplicate op name %s\n", op->name);
                CHECK(0);
            }
        }
        /* Names are lower snake case: they are wire names. */
        for (const char *p = op->name; *p != '\0'; p++) {
            CHECK((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_');
        }
        json_t *ex = json_loads(op->example, JSON_DECODE_ANY, NULL);
        CHECK(ex != NULL);
        json_decref(ex);
        for (const struct op_param *p = op->params; p != NULL && p->name != NULL; p++) {
            CHECK(p->help != NULL && p->help[0] != '\0');
            if (p->def != NULL) {
                json_t *def = json_loads(p->def, JSON_DECODE_ANY, NULL);
                CHECK(def != NULL);
                json_decref(def);
            }
        }
    }
    /* Every op SPEC §5 names is there. */
    static const char *const spec[] = {"square",    "cube",     "sqrt",          "factorial",
                                       "fibonacci", "is_prime", "prime_factors", "collatz_steps",
                                       "sum",       "mean",     "stats",         "sort",
                                       "cpu_loop",  "sleep",    "monte_carlo_pi"};
    for (size_t k = 0; k < sizeof spec / sizeof spec[0]; k++) {
        CHECK(ops_find(spec[k]) != NULL);
    }
    CHECK(ops_find("cpu_loop")->flags & OP_SLOW);
    CHECK(ops_find("sleep")->flags & OP_SLOW);
    CHECK(ops_find("monte_carlo_pi")->flags & OP_SLOW);
    CHECK(!(ops_find("sqrt")->flags & OP_SLOW));
}

/* Each op runs its own example without crashing, and its result is valid JSON. */
static void test_examples_run(void)
{
    for (size_t i = 0; i < ops_count(); i++) {
        const struct op *op = ops_at(i);
        if (op->flags & OP_IMAGE) {
            continue; /* image examples name files: test_img covers them */
        }
        char msg[256], path[64];
        if (ops_check_params(op, NULL, msg, sizeof msg, path, sizeof path) != 0) {
            continue; /* a required param (lua's code): its own tests run it */
        }
        json_t *ex = json_loads(op->example, JSON_DECODE_ANY, NULL);
        struct buf b;
        buf_init(&b, 1 << 20);
        struct job_output out;
        memset(&out, 0, sizeof out);
        out.json = &b;
        struct job_input in;
        memset(&in, 0, sizeof in);
        in.value = ex;
        int rc = op->run(&in, &out);
        CHECK_EQ_INT(rc, 0);
        json_t *res = rc == 0 ? json_loadb(buf_data(&b), buf_len(&b), JSON_DECODE_ANY, NULL) : NULL;
        if (res == NULL) {
            fprintf(stderr, "op %s: example result does not parse\n", op->name);
        }
        CHECK(res != NULL);
        json_decref(res);
        json_decref(ex);
        buf_cleanup(&b);
    }
}

static void test_describe(void)
{
    json_t *d = ops_describe();
    CHECK(json_is_object(d));
    json_t *list = json_object_get(d, "ops");
    CHECK(json_is_array(list));
    CHECK_EQ_INT(json_array_size(list), ops_count());
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        CHECK_EQ_STR(json_string_value(json_object_get(e, "name")), ops_at(i)->name);
        CHECK(json_is_string(json_object_get(e, "summary")));
        CHECK(json_is_string(json_object_get(e, "input")));
        CHECK(json_is_string(json_object_get(e, "result")));
        CHECK(json_object_get(e, "example") != NULL &&
              !json_is_null(json_object_get(e, "example")));
        CHECK(json_is_array(json_object_get(e, "params")));
        CHECK(json_is_boolean(json_object_get(e, "slow")));
        CHECK(json_is_boolean(json_object_get(e, "image")));
    }
    json_t *sort = json_array_get(list, ops_index(ops_find("sort")));
    json_t *rev = json_array_get(json_object_get(sort, "params"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(rev, "name")), "reverse");
    CHECK_EQ_STR(json_string_value(json_object_get(rev, "type")), "boolean");
    CHECK(json_is_false(json_object_get(rev, "default")));
    CHECK(json_object_get(rev, "min") == NULL);
    json_t *cpu = json_array_get(list, ops_index(ops_find("cpu_loop")));
    CHECK(json_is_true(json_object_get(cpu, "slow")));
    CHECK(json_is_integer(json_object_get(json_object_get(cpu, "example"), "n")));
    /* The whole catalogue serialises. */
    char *text = json_dumps(d, JSON_COMPACT);
    CHECK(text != NULL && strlen(text) > 100);
    free(text);
    json_decref(d);
}

/* Runs ops_check_params on PARAMS (JSON text, or NULL) and returns the code, keeping the
 * message and path for the caller. */
static char msg[256], path[128];
static int check(const struct op *op, const char *params)
{
    json_t *p = params != NULL ? json_loads(params, JSON_DECODE_ANY, NULL) : NULL;
    int rc = ops_check_params(op, p, msg, sizeof msg, path, sizeof path);
    json_decref(p);
    return rc;
}

/* A test-only op with one param of every kind, to reach each generic check. */
static const char *const formats[] = {"jpeg", "png", "same", NULL};
static const struct op_param all_params[] = {
    {.name = "flag", .type = OP_PARAM_BOOL, .min = 1, .max = 0, .help = "b"},
    {.name = "quality", .type = OP_PARAM_INT, .min = 1, .max = 100, .def = "85", .help = "q"},
    {.name = "sigma", .type = OP_PARAM_NUMBER, .min = 0.5, .max = 250, .help = "s"},
    {.name = "any", .type = OP_PARAM_INT, .min = 1, .max = 0, .help = "no range"},
    {.name = "format", .type = OP_PARAM_STRING, .choices = formats, .help = "f"},
    {.name = "label", .type = OP_PARAM_STRING, .help = "free text"},
    {.name = "pipeline", .type = OP_PARAM_ARRAY, .help = "p"},
    {.name = "opts", .type = OP_PARAM_OBJECT, .help = "o"},
    {.name = NULL},
};

static int validate_calls;
static int fake_validate(const json_t *params, char *m, size_t mlen, char *pth, size_t plen)
{
    validate_calls++;
    if (json_is_object(params) && json_object_get(params, "label") != NULL &&
        strcmp(json_string_value(json_object_get(params, "label")), "bad") == 0) {
        snprintf(m, mlen, "label is bad");
        snprintf(pth, plen, "label");
        return -BATCHD_E_INVALID_PARAM;
    }
    return 0;
}

static const struct op fake = {
    .name = "fake",
    .params = all_params,
    .validate_params = fake_validate,
};

static void test_check_params(void)
{
    const struct op *sqrt_op = ops_find("sqrt"), *sort = ops_find("sort");
    CHECK_EQ_INT(check(sqrt_op, NULL), 0);
    CHECK_EQ_INT(check(sqrt_op, "null"), 0);
    CHECK_EQ_INT(check(sqrt_op, "{}"), 0);
    CHECK_EQ_INT(check(sqrt_op, "{\"reverse\": true}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(path, "reverse");
    CHECK_EQ_STR(msg, "op sqrt takes no params, got \"reverse\"");
    CHECK_EQ_INT(check(sqrt_op, "[1]"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(path, "");
    CHECK_EQ_STR(msg, "params must be an object, not an array");
    CHECK_EQ_INT(check(sort, "{\"reverse\": true}"), 0);
    CHECK_EQ_INT(check(sort, "{\"reverse\": false}"), 0);
    CHECK_EQ_INT(check(sort, NULL), 0);
    CHECK_EQ_INT(check(sort, "{\"reverse\": 1}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(path, "reverse");
    CHECK_EQ_STR(msg, "reverse must be a boolean, not an integer");
    CHECK_EQ_INT(check(sort, "{\"reverse\": \"yes\"}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(check(sort, "{\"reverse\": null}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(check(sort, "{\"revers\": true}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(path, "revers");
    CHECK_EQ_STR(msg, "unknown param \"revers\" for op sort (accepted: reverse)");
    CHECK_EQ_INT(check(sort, "\"reverse\""), -BATCHD_E_INVALID_PARAM);

    validate_calls = 0;
    CHECK_EQ_INT(check(&fake, "{\"flag\": true, \"quality\": 1, \"sigma\": 250, \"any\": -5,"
                              " \"format\": \"png\", \"label\": \"x\", \"pipeline\": [],"
                              " \"opts\": {}}"),
                 0);
    CHECK_EQ_INT(validate_calls, 1);
    CHECK_EQ_INT(check(&fake, "{\"quality\": 101}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(path, "quality");
    CHECK_EQ_STR(msg, "quality must be between 1 and 100");
    CHECK_EQ_INT(check(&fake, "{\"quality\": 0}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(check(&fake, "{\"quality\": 85.0}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "quality must be an integer, not a float");
    CHECK_EQ_INT(check(&fake, "{\"quality\": true}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(check(&fake, "{\"sigma\": 0.25}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "sigma must be between 0.5 and 250");
    CHECK_EQ_INT(check(&fake, "{\"sigma\": 3}"), 0);
    CHECK_EQ_INT(check(&fake, "{\"sigma\": \"3\"}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "sigma must be a number, not a string");
    CHECK_EQ_INT(check(&fake, "{\"any\": -9223372036854775808}"), 0);
    CHECK_EQ_INT(check(&fake, "{\"format\": \"gif\"}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(path, "format");
    CHECK_EQ_STR(msg, "format must be one of jpeg|png|same");
    CHECK_EQ_INT(check(&fake, "{\"format\": \"jpe\"}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(check(&fake, "{\"format\": \"jpeg\"}"), 0);
    CHECK_EQ_INT(check(&fake, "{\"format\": \"same\"}"), 0);
    CHECK_EQ_INT(check(&fake, "{\"format\": 1}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(check(&fake, "{\"pipeline\": {}}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "pipeline must be an array, not an object");
    CHECK_EQ_INT(check(&fake, "{\"opts\": []}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(check(&fake, "{\"flag\": 0}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(check(&fake, "{\"nope\": 0}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "unknown param \"nope\" for op fake (accepted: flag quality sigma any "
                      "format label pipeline opts)");
    /* The generic checks pass; the op's own hook then has its say. */
    CHECK_EQ_INT(check(&fake, "{\"label\": \"bad\"}"), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(path, "label");
    CHECK_EQ_STR(msg, "label is bad");
    /* A long list of accepted names is cut, never overflowed. */
    char small[16], p2[4];
    json_t *p = json_loads("{\"nope\": 0}", 0, NULL);
    CHECK_EQ_INT(ops_check_params(&fake, p, small, sizeof small, p2, sizeof p2),
                 -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_INT(strlen(small), sizeof small - 1);
    CHECK_EQ_STR(p2, "nop");
    json_decref(p);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"walk", test_walk},
    {"examples_run", test_examples_run},
    {"describe", test_describe},
    {"check_params", test_check_params},
};
/* clang-format on */

CHECK_MAIN("test_ops_table", cases)
