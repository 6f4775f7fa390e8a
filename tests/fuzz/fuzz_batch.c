/* Fuzz target: the batch parser (api/batch.c) and the op/param checks the server runs on
 * every batch before any job. Any input must give 0 or an error code, never a crash or a
 * leak. Built as a libFuzzer target with clang (-DBATCHD_FUZZ=ON) and as a corpus replayer
 * with any compiler (tests/fuzz/replay.c). */
#include "api/batch.h"
#include "workers/ops/ops.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct batch_limits lim = {.max_jobs = 1000, .multipart = size % 2,
                               .nfiles = size % 5};
    struct batch_spec spec;
    struct batch_error e;
    if (batch_spec_parse((const char *)data, size, &lim, &spec, &e) != 0) {
        return 0;
    }
    for (uint64_t i = 0; i < spec.njobs; i++) {
        const char *opname;
        json_t *input, *params;
        batch_spec_job(&spec, i, &opname, &input, &params);
        const struct op *op = ops_find(opname != NULL ? opname : "");
        if (op != NULL) {
            char msg[256], path[128];
            ops_check_params(op, params != NULL ? params : spec.params, msg, sizeof msg, path,
                             sizeof path);
        }
    }
    batch_spec_cleanup(&spec);
    return 0;
}
