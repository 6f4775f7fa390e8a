/* imgrun: runs the image op's run() on files, without the server, for the quality tests and
 * for timing the engine alone.
 *
 *   imgrun [-p PARAMS_JSON] [-o OUT] [-n REPEAT] [-j] [-b] [-d DATA_DIR] [-O OUT_DIR] FILE...
 *
 * Each FILE is handed over as bytes (in->blob), as the server does with uploads; with -b as
 * a {"data": "<base64>"} input; with -d, FILE is instead a {"path": FILE} input resolved
 * under DATA_DIR. The result JSON goes to
 * stdout, one line per file; -o writes the (first) encoded output to OUT (one file only).
 * -j asks for an inline base64 result instead of binary blobs. -n repeats each job and
 * prints the total time to stderr. Exit status: 0 if every job succeeded, 1 if one failed
 * with a per-job error, 2 on usage errors. */
#include "../../api/base64.h"
#include "../../api/errors.h"
#include "../../workers/ops/ops.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int read_all(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return -1;
    }
    size_t cap = 1 << 20, n = 0;
    uint8_t *p = malloc(cap);
    while (p != NULL) {
        size_t r = fread(p + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            break;
        }
        if (n == cap) {
            uint8_t *q = realloc(p, cap * 2);
            if (q == NULL) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
    }
    fclose(f);
    if (p == NULL) {
        return -1;
    }
    *data = p;
    *len = n;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *params_text = NULL, *outpath = NULL, *data_dir = NULL, *out_dir = NULL;
    int repeat = 1, inline_json = 0, as_b64 = 0, i;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-j") == 0) {
            inline_json = 1;
        } else if (strcmp(a, "-b") == 0) {
            as_b64 = 1;
        } else if (i + 1 < argc && strcmp(a, "-p") == 0) {
            params_text = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "-o") == 0) {
            outpath = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "-d") == 0) {
            data_dir = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "-O") == 0) {
            out_dir = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "-n") == 0) {
            repeat = (int)strtol(argv[++i], NULL, 10);
        } else {
            fprintf(
                stderr,
                "usage: imgrun [-p JSON] [-o OUT] [-n N] [-j] [-b] [-d DIR] [-O DIR] FILE...\n");
            return 2;
        }
    }
    const struct op *op = ops_find("image");
    json_t *params = NULL;
    if (params_text != NULL) {
        json_error_t err;
        params = json_loads(params_text, 0, &err);
        if (params == NULL) {
            fprintf(stderr, "imgrun: bad params: %s\n", err.text);
            return 2;
        }
        char msg[256], path[128];
        if (ops_check_params(op, params, msg, sizeof msg, path, sizeof path) != 0) {
            printf("{\"params_error\":{\"path\":\"%s\",\"message\":\"%s\"}}\n", path, msg);
            json_decref(params);
            return 1;
        }
    }
    /* The limits a worker would be given; the quality tests set them as the server's
     * environment twins (README), and the openat2 test hook likewise. */
    const char *mi = getenv("BATCHD_MAX_INPUT_PIXELS"), *mo = getenv("BATCHD_MAX_OUTPUT_PIXELS");
    const struct job_limits limits = {
        .max_input_pixels = mi != NULL ? strtoull(mi, NULL, 10) : 0,
        .max_output_pixels = mo != NULL ? strtoull(mo, NULL, 10) : 0,
        .no_openat2 = getenv("BATCHD_TEST_NO_OPENAT2") != NULL,
    };
    int status = 0;
    double total = 0;
    struct buf json;
    buf_init(&json, 1u << 30);
    for (; i < argc; i++) {
        uint8_t *data = NULL;
        size_t len = 0;
        json_t *value = NULL;
        if (data_dir != NULL) {
            value = json_pack("{s:s}", "path", argv[i]);
        } else if (read_all(argv[i], &data, &len) != 0) {
            fprintf(stderr, "imgrun: cannot read %s\n", argv[i]);
            status = 2;
            continue;
        }
        if (as_b64) {
            struct buf t;
            buf_init(&t, (size_t)1 << 31);
            base64_encode(&t, data, len);
            value = json_pack("{s:s%}", "data", buf_data(&t) ? buf_data(&t) : "", buf_len(&t));
            buf_cleanup(&t);
            free(data);
            data = NULL;
            len = 0;
        }
        for (int r = 0; r < repeat; r++) {
            struct job_output out;
            memset(&out, 0, sizeof out);
            buf_reset(&json);
            out.json = &json;
            struct job_input in = {
                .value = value,
                .params = params,
                .blob = data,
                .blob_len = len,
                .data_dir = data_dir,
                .output_dir = out_dir,
                .name = data_dir ? NULL : argv[i],
                .index = 0,
                .want_binary = !inline_json,
                .limits = &limits,
            };
            double t0 = now_s();
            int rc = op->run(&in, &out);
            total += now_s() - t0;
            if (r == repeat - 1) {
                if (rc != 0) {
                    printf("{\"file\":\"%s\",\"error\":{\"code\":\"%s\",\"message\":", argv[i],
                           batchd_err_name(rc));
                    json_t *m = json_string(out.message);
                    char *ms = json_dumps(m, JSON_ENCODE_ANY);
                    printf("%s}}\n", ms ? ms : "\"\"");
                    free(ms);
                    json_decref(m);
                    status = status ? status : 1;
                } else {
                    printf("{\"file\":\"%s\",\"result\":%.*s", argv[i], (int)buf_len(&json),
                           buf_data(&json) ? buf_data(&json) : "");
                    if (out.nblobs > 0) {
                        printf(",\"blobs\":[");
                        for (int b = 0; b < out.nblobs; b++) {
                            printf("%s\"%s\"", b ? "," : "", out.blobs[b].name);
                        }
                        printf("]");
                    }
                    printf("}\n");
                    if (outpath != NULL && out.nblobs > 0) {
                        FILE *f = fopen(outpath, "wb");
                        if (f == NULL ||
                            fwrite(buf_data(&out.blobs[0].bytes), 1, buf_len(&out.blobs[0].bytes),
                                   f) != buf_len(&out.blobs[0].bytes)) {
                            fprintf(stderr, "imgrun: cannot write %s\n", outpath);
                            status = 2;
                        }
                        if (f != NULL) {
                            fclose(f);
                        }
                    }
                }
                fflush(stdout);
            }
            for (int b = 0; b < out.nblobs; b++) {
                buf_cleanup(&out.blobs[b].bytes);
            }
        }
        free(data);
        json_decref(value);
    }
    if (repeat > 1 || getenv("IMGRUN_TIME") != NULL) {
        fprintf(stderr, "imgrun: %.3f s total\n", total);
    }
    buf_cleanup(&json);
    json_decref(params);
    return status;
}
