/* An example batchd module (workers/ops/batchd_module.h): op "wordcount" counts the words,
 * lines and bytes of a string, as wc does, words being runs of bytes that are not ASCII
 * white space; params.min_length skips shorter words. Load it with
 * `batchd --module build/wordcount.so` and try
 *
 *     curl -d '{"op":"wordcount","inputs":["to be or not","a b\nc"]}' \
 *          -H 'Content-Type: application/json' localhost:8080/v1/batches
 */
#include "batchd_module.h"

#include <jansson.h>
#include <string.h>

static const struct op_param wordcount_params[] = {
    {.name = "min_length",
     .type = OP_PARAM_INT,
     .min = 1,
     .max = 1000,
     .def = "1",
     .help = "words shorter than this many bytes are not counted"},
    {0},
};

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int wordcount_run(const struct batchd_host *host, struct batchd_job *job)
{
    const json_t *in = host->input(job);
    if (!json_is_string(in)) {
        return host->fail(job, BATCHD_MODULE_INVALID_INPUT, "the input must be a string");
    }
    const json_t *params = host->params(job);
    const json_t *ml = params != NULL ? json_object_get(params, "min_length") : NULL;
    size_t min_length = json_is_integer(ml) ? (size_t)json_integer_value(ml) : 1;
    const unsigned char *s = (const unsigned char *)json_string_value(in);
    size_t n = json_string_length(in), words = 0, lines = 0, run = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || is_space(s[i])) {
            words += run >= min_length;
            run = 0;
            lines += i < n && s[i] == '\n';
        } else {
            run++;
        }
    }
    json_t *r = json_pack("{s:I, s:I, s:I}", "words", (json_int_t)words, "lines",
                          (json_int_t)lines, "bytes", (json_int_t)n);
    int rc = r != NULL ? host->set_result(job, r) : BATCHD_MODULE_TOO_LARGE;
    json_decref(r);
    return rc;
}

static const struct batchd_module_op wordcount_ops[] = {
    {.name = "wordcount",
     .summary = "words, lines and bytes of a string, as wc counts them (example module)",
     .input = "a string",
     .result = "{\"words\", \"lines\", \"bytes\"}",
     .example = "\"to be or not to be\"",
     .params = wordcount_params,
     .cost_hint_ns = 1000,
     .run = wordcount_run},
};

static const struct batchd_module wordcount_module = {
    BATCHD_MODULE_HEADER,
    .name = "wordcount",
    .version = "1.0",
    .ops = wordcount_ops,
    .nops = sizeof wordcount_ops / sizeof wordcount_ops[0],
};

const struct batchd_module *batchd_module_init(const struct batchd_host *host)
{
    /* A module may refuse a host older than what it needs. */
    if (host->abi_version != BATCHD_MODULE_ABI_VERSION || host->size < sizeof *host) {
        return NULL;
    }
    return &wordcount_module;
}
