/* Unit tests of the step registry (workers/ops/img_step.c) and of the param-spec engine as
 * the steps use it: every class is complete, names are unique and found, each row's default
 * is valid for its own row, "one of" names are params; and the lenient mode's wording.
 * Adding a step needs no change here: the test walks the table. */
#include "../../api/errors.h"
#include "../../workers/ops/img_step.h"
#include "../../workers/ops/op_param.h"
#include "../check.h"

#include <jansson.h>
#include <string.h>

static void test_walk(void)
{
    const char *const *names = img_step_names();
    int n = 0;
    for (; names[n] != NULL; n++) {
        enum img_step_kind kind = IMG_STEP_COUNT;
        const struct img_step_class *c = img_step_find(names[n], &kind);
        CHECK(c != NULL);
        if (c == NULL) {
            continue;
        }
        CHECK_EQ_INT(kind, n);
        CHECK(img_step_class_of(kind) == c);
        CHECK_EQ_STR(c->op, names[n]);
        CHECK(c->help != NULL && c->help[0] != '\0');
        CHECK(c->params != NULL && c->store != NULL);
        /* Exactly one way to run: its own hook, or the shared resampling run. */
        CHECK((c->run != NULL) != (c->scale != NULL));
        /* A resampling step's size comes from .scale; it has no .size of its own. */
        CHECK(c->scale == NULL || c->size == NULL);
        int rows = 0;
        for (const struct op_param *p = c->params; p->name != NULL; p++, rows++) {
            CHECK(p->help != NULL && p->help[0] != '\0');
            CHECK(op_param_find(c->params, p->name) == p); /* unique */
            CHECK(strcmp(p->name, "op") != 0);
            if (p->def != NULL) {
                /* The default is valid JSON and passes its own row. */
                json_t *d = json_loads(p->def, JSON_DECODE_ANY, NULL);
                char msg[256];
                CHECK(d != NULL);
                CHECK(d != NULL && op_param_check(p, d, OP_PARAM_LENIENT, msg, sizeof msg) == 0);
                json_decref(d);
                CHECK(!(p->flags & OP_PARAM_REQUIRED));
            }
        }
        CHECK(rows <= IMG_STEP_MAX_PARAMS);
        for (int i = 0; c->one_of != NULL && c->one_of[i] != NULL; i++) {
            const struct op_param *p = op_param_find(c->params, c->one_of[i]);
            CHECK(p != NULL && !(p->flags & OP_PARAM_REQUIRED));
        }
    }
    CHECK_EQ_INT(n, IMG_STEP_COUNT);
    enum img_step_kind k;
    CHECK(img_step_find("spin", &k) == NULL);
    CHECK(img_step_find("", &k) == NULL);
    json_t *d = img_steps_describe();
    CHECK(json_is_array(d) && (int)json_array_size(d) == IMG_STEP_COUNT);
    json_decref(d);
}

/* Reads TEXT (JSON, or NULL = absent) against row P in lenient mode. */
static char msg[256];
static int read_text(const struct op_param *p, const char *text, double *v)
{
    json_t *j = text != NULL ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    msg[0] = '\0';
    int rc = op_param_read(p, j, OP_PARAM_LENIENT, v, msg, sizeof msg);
    json_decref(j);
    return rc;
}

static void test_lenient(void)
{
    enum img_step_kind k;
    const struct op_param *sigma = op_param_find(img_step_find("sharpen", &k)->params, "sigma");
    const struct op_param *amount = op_param_find(img_step_find("sharpen", &k)->params, "amount");
    const struct op_param *deg = op_param_find(img_step_find("rotate", &k)->params, "degrees");
    const struct op_param *fit = op_param_find(img_step_find("resize", &k)->params, "fit");
    double v = -1;
    CHECK_EQ_INT(read_text(sigma, NULL, &v), 0);
    CHECK(v == 1.0); /* the default */
    CHECK_EQ_INT(read_text(sigma, "0", &v), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "sigma must be above 0 and at most 250");
    CHECK_EQ_INT(read_text(amount, "10.5", &v), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "amount must be at least 0 and at most 10");
    CHECK_EQ_INT(read_text(amount, "\"x\"", &v), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "amount must be a number");
    CHECK_EQ_INT(read_text(deg, "270.0", &v), 0); /* an integral float is an integer here */
    CHECK(v == 270);
    CHECK_EQ_INT(read_text(deg, "91", &v), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "degrees must be one of 90|180|270");
    CHECK_EQ_INT(read_text(deg, NULL, &v), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "degrees is required (one of 90|180|270)");
    CHECK_EQ_INT(read_text(fit, "\"cover\"", &v), 0);
    CHECK(v == 2); /* a choice reads as its index */
    CHECK_EQ_INT(read_text(fit, NULL, &v), 0);
    CHECK(v == 0);
    CHECK_EQ_INT(read_text(fit, "2", &v), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "fit must be one of fill|contain|cover");
    /* The same row in strict mode (the server's generic check) refuses 270.0. */
    json_t *j = json_real(270.0);
    CHECK_EQ_INT(op_param_check(deg, j, OP_PARAM_STRICT, msg, sizeof msg), -BATCHD_E_INVALID_PARAM);
    CHECK_EQ_STR(msg, "degrees must be an integer, not a float");
    json_decref(j);
    /* Joining cuts, never overflows. */
    char small[8];
    CHECK_EQ_STR(op_param_join(fit->choices, small, sizeof small), "fill|co");
}

int main(void)
{
    test_walk();
    test_lenient();
    return check_report("test_img_step");
}
