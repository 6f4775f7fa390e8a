/* The param-spec engine (op_param.h): checks a value against its row in one of two modes,
 * reads it into a number, and describes the row for /v1/ops. The wording of every message
 * is the one each checker had before they were merged; the tests pin them. */
#include "op_param.h"

#include "../../api/errors.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct op_param *op_param_find(const struct op_param *table, const char *name)
{
    for (const struct op_param *p = table; p != NULL && p->name != NULL; p++) {
        if (strcmp(p->name, name) == 0) {
            return p;
        }
    }
    return NULL;
}

int op_param_choice_index(const char *const *choices, const char *s)
{
    for (int i = 0; choices != NULL && choices[i] != NULL; i++) {
        if (strcmp(choices[i], s) == 0) {
            return i;
        }
    }
    return -1;
}

char *op_param_join(const char *const *names, char *out, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; names != NULL && names[i] != NULL && len < n; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i > 0 ? "|" : "", names[i]);
        if (w < 0) {
            break;
        }
        len += (size_t)w;
    }
    return out;
}

const char *op_param_kind(const json_t *v)
{
    static const char *const kinds[] = {
        [JSON_OBJECT] = "an object",   [JSON_ARRAY] = "an array", [JSON_STRING] = "a string",
        [JSON_INTEGER] = "an integer", [JSON_REAL] = "a float",   [JSON_TRUE] = "a boolean",
        [JSON_FALSE] = "a boolean",    [JSON_NULL] = "null",
    };
    return kinds[json_typeof(v)];
}

static const char *type_name(enum op_param_type t)
{
    static const char *const names[] = {
        [OP_PARAM_BOOL] = "boolean",  [OP_PARAM_INT] = "integer", [OP_PARAM_NUMBER] = "number",
        [OP_PARAM_STRING] = "string", [OP_PARAM_ARRAY] = "array", [OP_PARAM_OBJECT] = "object",
    };
    return (size_t)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

__attribute__((format(printf, 3, 4))) static int refuse(char *msg, size_t msglen, const char *fmt,
                                                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
    return -BATCHD_E_INVALID_PARAM;
}

/* The type test. STRICT: an INT is a JSON integer; LENIENT: any number (its fraction is
 * checked after). */
static int type_matches(const struct op_param *p, const json_t *v, enum op_param_mode mode)
{
    switch (p->type) {
    case OP_PARAM_BOOL:
        return json_is_boolean(v);
    case OP_PARAM_INT:
        return mode == OP_PARAM_STRICT ? json_is_integer(v) : json_is_number(v);
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

/* A wrong type, worded as each mode always has. */
static int refuse_type(const struct op_param *p, const json_t *v, enum op_param_mode mode,
                       char *msg, size_t msglen)
{
    char names[200];
    if (mode == OP_PARAM_STRICT) {
        int an = p->type == OP_PARAM_INT || p->type == OP_PARAM_ARRAY || p->type == OP_PARAM_OBJECT;
        return refuse(msg, msglen, "%s must be %s %s, not %s", p->name, an ? "an" : "a",
                      type_name(p->type), op_param_kind(v));
    }
    switch (p->type) {
    case OP_PARAM_BOOL:
        return refuse(msg, msglen, "%s must be true or false", p->name);
    case OP_PARAM_STRING:
        if (p->choices != NULL) {
            return refuse(msg, msglen, "%s must be one of %s", p->name,
                          op_param_join(p->choices, names, sizeof names));
        }
        return refuse(msg, msglen, "%s must be a string", p->name);
    case OP_PARAM_INT:
        return refuse(msg, msglen, "%s must be an integer", p->name);
    default:
        return refuse(msg, msglen, "%s must be %s %s", p->name,
                      p->type == OP_PARAM_NUMBER ? "a" : "an", type_name(p->type));
    }
}

/* The range and choices of a number D. */
static int check_number(const struct op_param *p, double d, enum op_param_mode mode, char *msg,
                        size_t msglen)
{
    char names[200];
    int ranged = p->min <= p->max;
    int low = p->flags & OP_PARAM_EXCLUSIVE_MIN ? d <= p->min : d < p->min;
    int out = ranged && (low || d > p->max);
    if (p->type == OP_PARAM_INT && p->choices != NULL) {
        char num[32];
        snprintf(num, sizeof num, "%.0f", d);
        if (out || op_param_choice_index(p->choices, num) < 0) {
            return refuse(msg, msglen, "%s must be one of %s", p->name,
                          op_param_join(p->choices, names, sizeof names));
        }
        return 0;
    }
    if (!out) {
        return 0;
    }
    if (p->flags & OP_PARAM_EXCLUSIVE_MIN ||
        (mode == OP_PARAM_LENIENT && p->type == OP_PARAM_NUMBER)) {
        return refuse(msg, msglen, "%s must be %s %g and at most %g", p->name,
                      p->flags & OP_PARAM_EXCLUSIVE_MIN ? "above" : "at least", p->min, p->max);
    }
    return refuse(msg, msglen, "%s must be between %.17g and %.17g", p->name, p->min, p->max);
}

int op_param_check(const struct op_param *p, const json_t *v, enum op_param_mode mode, char *msg,
                   size_t msglen)
{
    if (!type_matches(p, v, mode)) {
        return refuse_type(p, v, mode, msg, msglen);
    }
    if (p->type == OP_PARAM_INT || p->type == OP_PARAM_NUMBER) {
        double d = json_number_value(v);
        if (p->type == OP_PARAM_INT && d != floor(d)) {
            return refuse(msg, msglen, "%s must be an integer", p->name);
        }
        return check_number(p, d, mode, msg, msglen);
    }
    if (p->type == OP_PARAM_STRING && p->choices != NULL &&
        op_param_choice_index(p->choices, json_string_value(v)) < 0) {
        char names[200];
        return refuse(msg, msglen, "%s must be one of %s", p->name,
                      op_param_join(p->choices, names, sizeof names));
    }
    return 0;
}

/* The row's default as a number (see op_param_read). Defaults are literals of this source
 * tree, checked by the unit tests: a quoted choice, true/false, or a number. */
static double default_value(const struct op_param *p)
{
    const char *d = p->def;
    if (d[0] == '"') {
        size_t n = strlen(d);
        for (int i = 0; p->choices != NULL && p->choices[i] != NULL; i++) {
            if (strlen(p->choices[i]) + 2 == n && memcmp(p->choices[i], d + 1, n - 2) == 0) {
                return i;
            }
        }
        return 0;
    }
    if (strcmp(d, "true") == 0 || strcmp(d, "false") == 0) {
        return d[0] == 't';
    }
    return strtod(d, NULL);
}

int op_param_read(const struct op_param *p, const json_t *v, enum op_param_mode mode, double *out,
                  char *msg, size_t msglen)
{
    if (v == NULL) {
        char names[200];
        if (!(p->flags & OP_PARAM_REQUIRED)) {
            *out = p->def != NULL ? default_value(p) : *out;
            return 0;
        }
        if (p->choices != NULL) {
            return refuse(msg, msglen, "%s is required (one of %s)", p->name,
                          op_param_join(p->choices, names, sizeof names));
        }
        return refuse(msg, msglen, "%s is required", p->name);
    }
    int rc = op_param_check(p, v, mode, msg, msglen);
    if (rc != 0) {
        return rc;
    }
    if (p->type == OP_PARAM_BOOL) {
        *out = json_is_true(v);
    } else if (p->type == OP_PARAM_STRING && p->choices != NULL) {
        *out = op_param_choice_index(p->choices, json_string_value(v));
    } else if (p->type == OP_PARAM_INT || p->type == OP_PARAM_NUMBER) {
        *out = json_number_value(v);
    }
    return 0;
}

/* The row's choices for the catalogue: strings, or integers for an INT. */
static json_t *describe_choices(const struct op_param *p)
{
    json_t *c = json_array();
    for (int i = 0; c != NULL && p->choices[i] != NULL; i++) {
        json_t *item = p->type == OP_PARAM_INT ? json_integer(strtoll(p->choices[i], NULL, 10))
                                               : json_string(p->choices[i]);
        if (json_array_append_new(c, item) != 0) {
            json_decref(c);
            c = NULL;
        }
    }
    return c;
}

json_t *op_param_describe(const struct op_param *p, int with_required)
{
    json_t *o = json_pack("{s:s, s:s}", "name", p->name, "type", type_name(p->type));
    if (o == NULL) {
        return NULL;
    }
    int rc = 0;
    if (with_required) {
        rc |= json_object_set_new(o, "required", json_boolean(p->flags & OP_PARAM_REQUIRED));
    }
    rc |= json_object_set_new(o, "help", json_string(p->help != NULL ? p->help : ""));
    if (p->min <= p->max && p->type == OP_PARAM_INT && p->choices == NULL) {
        rc |= json_object_set_new(o, "min", json_integer((json_int_t)p->min));
        rc |= json_object_set_new(o, "max", json_integer((json_int_t)p->max));
    } else if (p->min <= p->max && p->type == OP_PARAM_NUMBER) {
        rc |= json_object_set_new(o, "min", json_real(p->min));
        rc |= json_object_set_new(o, "max", json_real(p->max));
        if (p->flags & OP_PARAM_EXCLUSIVE_MIN) {
            rc |= json_object_set_new(o, "exclusive_min", json_true());
        }
    }
    if (p->choices != NULL) {
        rc |= json_object_set_new(o, "choices", describe_choices(p));
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
