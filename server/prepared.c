/* A batch ready for the dispatcher: from an upload to a spec whose ops are resolved, whose
 * image bytes sit in shared memory and whose output files have names. Nothing here answers
 * a request: refusals come back as a struct batch_error for the caller to answer. */
#include "prepared.h"

#include "upload.h"

#include "../api/errors.h"
#include "../api/job.h"
#include "../api/outname.h"
#include "../workers/ops/ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fills *E and returns ERR. */
static int refuse(struct batch_error *e, int err, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    snprintf(e->path, sizeof e->path, "%s", path != NULL ? path : "");
    e->err = err;
    return err;
}

const struct op *prepared_op_of(const struct prepared *p, uint64_t i)
{
    if (p->op != NULL) {
        return p->op;
    }
    return p->job_ops != NULL && i < p->spec.njobs ? p->job_ops[i] : NULL;
}

const char *prepared_op_label(const struct prepared *p)
{
    if (p->op != NULL) {
        return p->op->name;
    }
    return p->job_ops != NULL ? "mixed" : "none";
}

int prepared_all_ints(const struct prepared *p)
{
    return p->op != NULL && p->blobs == NULL && p->spec.ints != NULL;
}

void prepared_job_at(void *ud, uint64_t i, struct dispatch_job *job)
{
    struct prepared *p = ud;
    const char *opname;
    json_t *input, *params;
    batch_spec_job(&p->spec, i, &opname, &input, &params);
    job->op = prepared_op_of(p, i);
    job->value = input;
    job->params = params;
    job->has_int = batch_spec_int_input(&p->spec, i, &job->ival);
    if (p->blobs != NULL) {
        job->name = p->blobs[i].out_name;
    }
    if (p->blobs != NULL && p->blobs[i].len > 0) {
        /* The bytes travel in shared memory; the input (base64) need not. */
        job->value = NULL;
        job->blob_off = p->blobs[i].off;
        job->blob_len = p->blobs[i].len;
    } else if (p->blobs != NULL && upload_is_multipart(p->upload)) {
        /* An empty file part has no bytes to hand over; without an input the worker would
         * blame the shape of the input instead of saying that the file is empty. */
        job->value = p->empty_upload;
    }
}

const char *prepared_name_of(void *ud, uint64_t i)
{
    struct prepared *p = ud;
    return p->blobs != NULL && i < p->spec.njobs ? p->blobs[i].name : NULL;
}

/* Resolves op names and checks params against the ops table. Returns 0 or an error code. */
static int prepared_resolve_ops(struct prepared *p, struct batch_error *e)
{
    char msg[256] = "", path[192] = "", ppath[128] = "";
    struct batch_spec *sp = &p->spec;
    if (sp->op != NULL) {
        p->op = ops_find(sp->op);
        if (p->op == NULL) {
            return refuse(e, -BATCHD_E_UNKNOWN_OP, "op",
                          "no op named \"%.64s\" (GET /v1/ops lists them)", sp->op);
        }
        int bad = ops_check_params(p->op, sp->params, msg, sizeof msg, ppath, sizeof ppath);
        if (bad != 0) {
            /* INVALID_PARAM, or INTERNAL when the check itself ran out of memory. */
            snprintf(path, sizeof path, "params%s%s", ppath[0] ? "." : "", ppath);
            return refuse(e, bad, bad == -BATCHD_E_INVALID_PARAM ? path : NULL, "%s", msg);
        }
        return 0;
    }
    p->job_ops = calloc(sp->njobs ? sp->njobs : 1, sizeof *p->job_ops);
    if (p->job_ops == NULL) {
        return refuse(e, -BATCHD_E_INTERNAL, NULL, "out of memory");
    }
    for (uint64_t i = 0; i < sp->njobs; i++) {
        const char *opname;
        json_t *input, *params;
        batch_spec_job(sp, i, &opname, &input, &params);
        const struct op *op = ops_find(opname);
        snprintf(path, sizeof path, "jobs[%llu].op", (unsigned long long)i);
        if (op == NULL) {
            return refuse(e, -BATCHD_E_UNKNOWN_OP, path,
                          "no op named \"%.64s\" (GET /v1/ops lists them)", opname);
        }
        int oom;
        json_t *merged = job_params_merge(sp->params, params, &oom);
        if (oom) {
            return refuse(e, -BATCHD_E_INTERNAL, NULL, "out of memory");
        }
        int bad = ops_check_params(op, merged, msg, sizeof msg, ppath, sizeof ppath);
        json_decref(merged);
        if (bad != 0) {
            snprintf(path, sizeof path, "jobs[%llu].params%s%s", (unsigned long long)i,
                     ppath[0] ? "." : "", ppath);
            return refuse(e, bad, bad == -BATCHD_E_INVALID_PARAM ? path : NULL, "%s", msg);
        }
        p->job_ops[i] = op;
    }
    return 0;
}

/* The uploaded files of a multipart batch as the jobs' blobs. */
static void prepared_place_files(struct prepared *p)
{
    size_t nfiles = upload_nfiles(p->upload);
    for (size_t i = 0; i < nfiles; i++) {
        const struct upload_file *f = upload_file_at(p->upload, i);
        p->blobs[i].off = f->off;
        p->blobs[i].len = f->len;
        p->blobs[i].name = f->name;
        if (f->len == 0 && p->empty_upload == NULL) {
            p->empty_upload = json_pack("{s:s}", "data", "");
        }
    }
}

/* Image inputs: uploaded files, and base64 {"data": ...} inputs decoded into the upload's
 * shared memory, so no image byte crosses a socket to the workers. Returns 0 or an error
 * code. A bad base64 input stays as it is: its job fails alone. */
static int prepared_place_blobs(struct prepared *p, struct batch_error *e)
{
    struct batch_spec *sp = &p->spec;
    size_t nfiles = upload_nfiles(p->upload);
    int any_image = p->op != NULL ? (p->op->flags & OP_IMAGE) != 0 : 0;
    for (uint64_t i = 0; !any_image && p->job_ops != NULL && i < sp->njobs; i++) {
        any_image = (p->job_ops[i]->flags & OP_IMAGE) != 0;
    }
    if (!any_image && nfiles == 0) {
        return 0;
    }
    if (!any_image) {
        return refuse(e, -BATCHD_E_BAD_REQUEST, "op", "only image ops take file uploads");
    }
    p->blobs = calloc(sp->njobs ? sp->njobs : 1, sizeof *p->blobs);
    if (p->blobs == NULL) {
        return refuse(e, -BATCHD_E_INTERNAL, NULL, "out of memory");
    }
    if (upload_is_multipart(p->upload)) {
        prepared_place_files(p);
        return 0;
    }
    for (uint64_t i = 0; i < sp->njobs; i++) {
        const char *opname;
        json_t *input, *params;
        batch_spec_job(sp, i, &opname, &input, &params);
        const struct op *op = prepared_op_of(p, i);
        json_t *data = json_object_get(input, "data");
        /* The worker refuses {"path", "data"} together as ambiguous: leave such an input
         * to it rather than decoding the data and hiding the path. */
        if (!(op->flags & OP_IMAGE) || !json_is_string(data) ||
            json_object_get(input, "path") != NULL) {
            continue;
        }
        uint64_t off, len;
        int rc = upload_add_base64(p->upload, json_string_value(data), json_string_length(data),
                                   &off, &len);
        if (rc == -2) {
            return refuse(e, -BATCHD_E_BODY_TOO_LARGE, NULL, "the decoded images are too large");
        }
        if (rc == 0 && len > 0) {
            p->blobs[i].off = off;
            p->blobs[i].len = len;
        }
    }
    return 0;
}

/* The stems of the files that image jobs with output "path" write, unique in the batch
 * (README: two inputs never get one output name). The workers only see their own jobs, so
 * the batch names them here, in input order: the same batch gets the same names again. */
static int prepared_name_outputs(struct prepared *p, struct batch_error *e)
{
    struct outname_set *set = NULL;
    int rc = 0;
    for (uint64_t i = 0; p->blobs != NULL && i < p->spec.njobs && rc == 0; i++) {
        const char *opname;
        json_t *input, *params;
        if (!(prepared_op_of(p, i)->flags & OP_IMAGE)) {
            continue;
        }
        batch_spec_job(&p->spec, i, &opname, &input, &params);
        if (set == NULL) {
            set = outname_set_create();
        }
        rc = set == NULL ? -1
                         : outname_claim(set, p->spec.params, params, input, p->blobs[i].name, i,
                                         &p->blobs[i].out_name);
    }
    outname_set_destroy(set);
    return rc != 0 ? refuse(e, -BATCHD_E_INTERNAL, NULL, "out of memory") : 0;
}

int prepared_build(struct prepared *p, struct upload *u, uint64_t max_jobs, struct batch_error *e)
{
    const char *msg;
    memset(p, 0, sizeof *p);
    p->upload = u;
    upload_finish(u);
    int err = upload_error(u, &msg);
    if (err != 0) {
        return refuse(e, err, NULL, "%s", msg != NULL ? msg : batchd_err_message(err));
    }
    struct batch_limits lim = {
        .max_jobs = max_jobs,
        .multipart = upload_is_multipart(u),
        .nfiles = upload_nfiles(u),
    };
    const struct buf *body = upload_json(u);
    if (lim.multipart && buf_len(body) == 0) {
        return refuse(e, -BATCHD_E_BAD_REQUEST, "batch",
                      "a multipart batch needs a part named \"batch\" (the JSON)");
    }
    err = batch_spec_parse(buf_data(body), buf_len(body), &lim, &p->spec, e);
    if (err != 0) {
        return err;
    }
    err = prepared_resolve_ops(p, e);
    err = err != 0 ? err : prepared_place_blobs(p, e);
    return err != 0 ? err : prepared_name_outputs(p, e);
}

void prepared_cleanup(struct prepared *p)
{
    for (uint64_t i = 0; p->blobs != NULL && i < p->spec.njobs; i++) {
        free(p->blobs[i].out_name);
    }
    batch_spec_cleanup(&p->spec);
    free(p->job_ops);
    free(p->blobs);
    json_decref(p->empty_upload);
    memset(p, 0, sizeof *p);
}
