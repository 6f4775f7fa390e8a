/* An ended image batch's tar from its stored results (SPEC §4's tar, from §8's results
 * endpoint): each stored line is read back, its base64 images decoded and handed to the tar
 * writer as the blobs a streamed batch would have had, so that the members are named and
 * laid out exactly as in a streamed tar. */
#include "results_tar.h"

#include "../api/base64.h"
#include "../api/errors.h"
#include "writer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAR_MAX_BLOBS 16 /* variants of one job (the op allows fewer) */

/* One image of a result ({"format", "data"}) as blob NAME into B (decoded into D). Returns 0,
 * -1 (not an inline image) or -2 (its data could not be decoded: out of memory, since the
 * store holds what the server wrote). */
static int tar_blob(const json_t *img, const char *variant, struct buf *d, char *name, size_t n,
                    struct result_blob *b)
{
    const char *fmt = json_string_value(json_object_get(img, "format"));
    json_t *data = json_object_get(img, "data");
    if (fmt == NULL || !json_is_string(data)) {
        return -1;
    }
    buf_reset(d);
    if (base64_decode(d, json_string_value(data), json_string_length(data)) != 0) {
        return -2;
    }
    if (variant != NULL) {
        snprintf(name, n, "%s.%s", variant, fmt);
    } else {
        snprintf(name, n, "%s", fmt);
    }
    b->name = name;
    b->data = (const uint8_t *)buf_data(d);
    b->len = buf_len(d);
    return 0;
}

int results_tar_line(struct writer *w, struct buf *out, uint32_t index, const char *line,
                     size_t len)
{
    json_t *root = json_loadb(line, len, 0, NULL);
    json_t *res = json_object_get(root, "result");
    struct job_result r = {.index = index, .worker = -1};
    struct result_blob blobs[TAR_MAX_BLOBS];
    struct buf data[TAR_MAX_BLOBS];
    char names[TAR_MAX_BLOBS][80];
    size_t nb = 0;
    int rc = 0, oom = 0;
    if (root == NULL) {
        return -1; /* out of memory: the stored line is JSON. Never an error member instead */
    }
    if (res == NULL) {
        /* An error: the writer lists it in errors.ndjson. */
        json_t *err = json_object_get(root, "error");
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        r.err = -BATCHD_E_INTERNAL;
        for (int e = 1; code != NULL && e < BATCHD_E_COUNT; e++) {
            if (batchd_err_is_per_job(-e) && strcmp(batchd_err_name(-e), code) == 0) {
                r.err = -e;
            }
        }
        r.text = msg != NULL ? msg : "";
        r.text_len = strlen(r.text);
        rc = writer_result(w, out, &r);
        json_decref(root);
        return rc;
    }
    json_t *variants = json_object_get(res, "variants");
    const char *vname;
    json_t *img;
    if (variants != NULL) {
        json_object_foreach(variants, vname, img)
        {
            if (nb == TAR_MAX_BLOBS) {
                break;
            }
            buf_init(&data[nb], SIZE_MAX / 2);
            int brc = tar_blob(img, vname, &data[nb], names[nb], sizeof names[nb], &blobs[nb]);
            rc |= brc;
            oom |= brc == -2;
            nb++;
        }
    } else {
        buf_init(&data[0], SIZE_MAX / 2);
        rc = tar_blob(res, NULL, &data[0], names[0], sizeof names[0], &blobs[0]);
        oom = rc == -2;
        nb = 1;
    }
    if (oom) {
        rc = -1;
    } else if (rc == 0) {
        r.blobs = blobs;
        r.nblobs = nb;
        rc = writer_result(w, out, &r);
    } else {
        /* Not an inline image (output "path", or a numeric job): its JSON is the member. */
        char *dump = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
        r.text = dump;
        r.text_len = dump != NULL ? strlen(dump) : 0;
        rc = dump != NULL ? writer_result(w, out, &r) : -1;
        free(dump);
    }
    for (size_t i = 0; i < nb; i++) {
        buf_cleanup(&data[i]);
    }
    json_decref(root);
    return rc;
}
