/* The one param-spec engine: a parameter declared once (type, range, choices, default, help)
 * is checked, read and described for /v1/ops from that row. The op table's params (every op,
 * checked by the server before a batch is accepted) and the image op's own fields (pipeline
 * steps, variants) use it alike. It knows nothing of ops, steps or paths: callers name where
 * a value sits. */
#ifndef BATCHD_WORKERS_OPS_OP_PARAM_H
#define BATCHD_WORKERS_OPS_OP_PARAM_H

#include <jansson.h>
#include <stddef.h>

enum op_param_type {
    OP_PARAM_BOOL,
    OP_PARAM_INT,
    OP_PARAM_NUMBER,
    OP_PARAM_STRING, /* one of .choices when .choices is set */
    OP_PARAM_ARRAY,  /* structured: the op's validate_params checks it */
    OP_PARAM_OBJECT,
};

enum op_param_flags {
    OP_PARAM_REQUIRED = 1 << 0,      /* absent is an error */
    OP_PARAM_EXCLUSIVE_MIN = 1 << 1, /* INT, NUMBER: the range is (min, max] */
};

/* One parameter. A table of them ends at a row with name == NULL. */
struct op_param {
    const char *name;
    enum op_param_type type;
    double min, max; /* for INT and NUMBER; ignored when min > max */
    /* STRING: the names allowed; INT: the only values allowed, as decimal text (then min and
     * max still bound them). NULL-terminated; NULL = any value of the type. */
    const char *const *choices;
    const char *def; /* the default, as JSON text, or NULL when required/none */
    const char *help;
    unsigned flags; /* enum op_param_flags */
};

/* How a value is read and how a refusal is worded. STRICT is the server's generic check of
 * an op's params: an INT is a JSON integer (5.0 is refused) and a message names the wrong
 * kind ("must be an integer, not a float"). LENIENT is for the image op's own fields (steps,
 * variants), which have always taken an integral float for an integer and word their
 * messages in their own way ("must be at least 0 and at most 10"). Both stay so that no
 * message or accepted input changed when the two checkers became this one. */
enum op_param_mode {
    OP_PARAM_STRICT,
    OP_PARAM_LENIENT,
};

/* The row of TABLE (may be NULL) named NAME, or NULL. Returns a borrowed pointer. */
const struct op_param *op_param_find(const struct op_param *table, const char *name);

/* Checks V (present) against row P. Returns 0 or -BATCHD_E_INVALID_PARAM with MSG set (the
 * message starts with the param's name; the caller knows its path). */
int op_param_check(const struct op_param *p, const json_t *v, enum op_param_mode mode, char *msg,
                   size_t msglen);

/* Reads V (NULL = absent) against row P into *OUT: a number as it is, a boolean as 0 or 1, a
 * choice as its index in .choices. Absent: an error when P is required, else the row's
 * default, else *OUT is left as it is. Returns 0 or -BATCHD_E_INVALID_PARAM with MSG set. */
int op_param_read(const struct op_param *p, const json_t *v, enum op_param_mode mode, double *out,
                  char *msg, size_t msglen);

/* The index of the string S in the NULL-terminated list CHOICES, or -1. */
int op_param_choice_index(const char *const *choices, const char *s);

/* Writes the NULL-terminated list NAMES as "a|b|c" into OUT (cut to N). Returns OUT. */
char *op_param_join(const char *const *names, char *out, size_t n);

/* What V is, for messages ("an integer", "a string", ...). Returns a static string. */
const char *op_param_kind(const json_t *v);

/* Row P for /v1/ops: {name, type, [required,] help, min, max, exclusive_min, choices,
 * default}, each only where it applies; "required" only when WITH_REQUIRED (the steps' tables
 * list it for every param, the ops' tables do not). Returns a new reference or NULL (OOM). */
json_t *op_param_describe(const struct op_param *p, int with_required);

#endif
