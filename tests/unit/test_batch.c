/* Batch parsing: the integer fast path for "inputs" gives the same spec, and the same
 * refusals, as the plain jansson parse. */
#include "api/batch.h"
#include "api/errors.h"
#include "tests/check.h"

#include <stdlib.h>
#include <string.h>

static const struct batch_limits lim = {.max_jobs = 1000};

static int parse(const char *body, struct batch_spec *s, struct batch_error *e)
{
    return batch_spec_parse(body, strlen(body), &lim, s, e);
}

static void test_int_inputs(void)
{
    struct batch_spec s;
    struct batch_error e;
    CHECK_EQ_INT(parse("{\"op\": \"sqrt\", \"chunksize\": 7,\n \"inputs\" : [ 4, -9,0 ,\n"
                       "123456789012345678], \"order\": \"completed\"}",
                       &s, &e),
                 0);
    CHECK(s.ints != NULL);
    CHECK_EQ_INT(s.njobs, 4);
    CHECK_EQ_INT(s.chunksize, 7);
    CHECK_EQ_INT(s.order, BATCH_ORDER_COMPLETED);
    int64_t v = 0;
    CHECK(batch_spec_int_input(&s, 1, &v) && v == -9);
    CHECK(batch_spec_int_input(&s, 3, &v) && v == 123456789012345678);
    CHECK(!batch_spec_int_input(&s, 4, &v));
    batch_spec_cleanup(&s);

    /* Not all plain integers: the JSON tree, as before. */
    const char *others[] = {
        "{\"op\": \"sqrt\", \"inputs\": [1, 2.5, 3], \"timing\": false}",
        "{\"op\": \"sqrt\", \"inputs\": [1, 2, 1e3], \"timing\": false}",
        "{\"op\": \"sqrt\", \"inputs\": [1, 2, \"3\"], \"timing\": false}",
        "{\"op\": \"sqrt\", \"inputs\": [1234567890123456789], \"timing\": false}",
        "{\"op\": \"sum\", \"inputs\": [[1, 2], [3]], \"timing\": false}",
        "{\"op\": \"sqrt\", \"in\\u0070uts\": [1, 2, 3], \"timing\": false}",
    };
    for (size_t k = 0; k < sizeof others / sizeof others[0]; k++) {
        CHECK_EQ_INT(parse(others[k], &s, &e), 0);
        CHECK(s.ints == NULL);
        CHECK(json_is_array(s.inputs) && s.njobs == json_array_size(s.inputs));
        CHECK(!batch_spec_int_input(&s, 0, &v));
        batch_spec_cleanup(&s);
    }
}

static void test_int_inputs_refusals(void)
{
    struct batch_spec s;
    struct batch_error e;
    /* Syntax errors are reported where they are in the body as sent. */
    CHECK_EQ_INT(parse("{\"op\": \"sqrt\", \"inputs\": [1, 2, 3], \"timing\": tru}", &s, &e),
                 -BATCHD_E_INVALID_JSON);
    CHECK(strstr(e.message, "column") != NULL);
    struct batch_error e2;
    CHECK_EQ_INT(
        parse("{\"op\": \"sqrt\", \"inputs\": [1, 2, 3, 4, 5, 6], \"timing\": tru}", &s, &e2),
        -BATCHD_E_INVALID_JSON);
    CHECK(strcmp(e.message, e2.message) != 0); /* the column moved with the array */
    CHECK_EQ_INT(parse("{\"op\": \"sqrt\", \"inputs\": [1, 2,], \"timing\": false}", &s, &e),
                 -BATCHD_E_INVALID_JSON);
    CHECK_EQ_INT(parse("{\"op\": \"sqrt\", \"inputs\": [01, 2], \"timing\": false}", &s, &e),
                 -BATCHD_E_INVALID_JSON);
    CHECK_EQ_INT(parse("{\"op\": \"sqrt\", \"inputs\": [1, 2], \"inputs\": [3]}", &s, &e),
                 -BATCHD_E_INVALID_JSON);
    CHECK_EQ_INT(parse("{\"op\": \"sqrt\", \"inputs\": [1, 2], \"jobs\": [], \"x\": 1}", &s, &e),
                 -BATCHD_E_BAD_REQUEST);
    CHECK_EQ_INT(
        parse("{\"op\": \"sqrt\", \"inputs\": [1, 2], \"bogus\": [1, {\"a\": \"]\"}]}", &s, &e),
        -BATCHD_E_BAD_REQUEST);
    CHECK_EQ_STR(e.path, "bogus");
    /* Past the job limit: the same refusal as without the fast path. */
    size_t cap = 16 + 2 * 1001 + 64, len = 0;
    char *big = malloc(cap);
    len += (size_t)snprintf(big + len, cap - len, "{\"op\": \"sqrt\", \"inputs\": [0");
    for (int i = 1; i < 1001; i++) {
        len += (size_t)snprintf(big + len, cap - len, ",1");
    }
    snprintf(big + len, cap - len, "]}");
    CHECK_EQ_INT(parse(big, &s, &e), -BATCHD_E_TOO_MANY_JOBS);
    big[strlen(big) - 4] = ']';
    big[strlen(big) - 3] = '}';
    big[strlen(big) - 2] = '\0';
    CHECK_EQ_INT(parse(big, &s, &e), 0);
    CHECK_EQ_INT(s.njobs, 1000);
    CHECK(s.ints != NULL);
    batch_spec_cleanup(&s);
    free(big);
}

/* Raw NUL bytes (jansson's reader skips them) and empty bodies (jansson says "wrong
 * arguments" at line -1) are refused with their own messages, on both parse paths. */
static void test_nul_and_empty(void)
{
    struct batch_spec s;
    struct batch_error e;
    static const char fast[] =
        "{\"op\": \"sqrt\", \"timing\": false, \"chunksize\": 1, \"inputs\": "
        "[4\0]}      ";
    CHECK_EQ_INT(batch_spec_parse(fast, sizeof fast - 1, &lim, &s, &e), -BATCHD_E_INVALID_JSON);
    CHECK(strstr(e.message, "NUL") != NULL);
    CHECK(strstr(e.message, "line 1 column 61 (byte 60)") != NULL);
    static const char tree[] = "{\"op\": \"sqrt\",\n \"inputs\": [4, 9\0, 2]}";
    CHECK_EQ_INT(batch_spec_parse(tree, sizeof tree - 1, &lim, &s, &e), -BATCHD_E_INVALID_JSON);
    CHECK(strstr(e.message, "line 2 column 17") != NULL);
    static const char str[] = "{\"op\": \"sq\0rt\", \"inputs\": [4]}";
    CHECK_EQ_INT(batch_spec_parse(str, sizeof str - 1, &lim, &s, &e), -BATCHD_E_INVALID_JSON);
    static const char tail[] = "{\"op\": \"sqrt\", \"inputs\": [4]}\0";
    CHECK_EQ_INT(batch_spec_parse(tail, sizeof tail - 1, &lim, &s, &e), -BATCHD_E_INVALID_JSON);
    CHECK_EQ_INT(batch_spec_parse(NULL, 0, &lim, &s, &e), -BATCHD_E_INVALID_JSON);
    CHECK(strstr(e.message, "empty request body") != NULL);
    CHECK(strstr(e.message, "-1") == NULL);
    CHECK_EQ_INT(parse(" \r\n\t ", &s, &e), -BATCHD_E_INVALID_JSON);
    CHECK(strstr(e.message, "empty request body") != NULL);
    CHECK_EQ_INT(parse("{\"op\": \"sqrt\", \"inputs\": [4]}", &s, &e), 0);
    batch_spec_cleanup(&s);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"int_inputs", test_int_inputs},
    {"int_inputs_refusals", test_int_inputs_refusals},
    {"nul_and_empty", test_nul_and_empty},
};
/* clang-format on */

CHECK_MAIN("test_batch", cases)
