/* Fuzz target: the image op on arbitrary bytes (format sniffing, libjpeg and libpng
 * decoding with limits, EXIF parsing, a thumbnail, PNG encoding), exactly as a worker runs
 * it on an uploaded file. Any input must give a result or a per-job error. */
#include "api/buf.h"
#include "workers/ops/ops.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *params;
    if (params == NULL) {
        params = json_loads("{\"pipeline\":[{\"op\":\"thumbnail\",\"width\":48,\"height\":48}],"
                            "\"format\":\"png\",\"png_level\":1}",
                            0, NULL);
    }
    const struct op *op = ops_find("image");
    if (op == NULL || params == NULL) {
        return 0;
    }
    struct buf json;
    buf_init(&json, 64u * 1024 * 1024);
    struct job_output out;
    memset(&out, 0, sizeof out);
    out.json = &json;
    /* The server's default limits, as a worker is given them. */
    static const struct job_limits limits = {.max_input_pixels = 100000000,
                                             .max_output_pixels = 100000000};
    struct job_input in = {
        .params = params, .blob = data, .blob_len = size, .want_binary = 1, .limits = &limits};
    op->run(&in, &out);
    for (int i = 0; i < out.nblobs; i++) {
        buf_cleanup(&out.blobs[i].bytes);
    }
    buf_cleanup(&json);
    return 0;
}
