/* The RUN, RESULTS and CONFIG frames: one encoder and one decoder each (layout in frames.h). The
 * encoders keep the fast paths numeric batches live on: integers written as digits without
 * jansson, the 16-byte form of an all-integer chunk, a tiny job's record in one append. */
#include "frames.h"

#include "ipc.h"

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- RUN: encoding */

/* Writes the decimal digits of X ending at END; returns where they start. */
static char *frames_digits(char *end, int64_t x)
{
    uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
    char *p = end;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (x < 0) {
        *--p = '-';
    }
    return p;
}

/* Appends the JSON text of X as u32 length + digits. */
static int frames_put_int(struct buf *out, int64_t x)
{
    char tmp[4 + 24];
    char *end = tmp + sizeof tmp;
    char *p = frames_digits(end, x);
    uint32_t len = (uint32_t)(end - p);
    p -= 4;
    memcpy(p, &len, sizeof len);
    return buf_add(out, p, (size_t)(end - p));
}

/* Appends V's JSON text as u32 length + bytes (length 0 for NULL). Integers, the bulk of
 * numeric batches, are written directly; anything else is dumped by jansson once into
 * reserved room, and a second time only when that room was too small. */
static int frames_put_json(struct buf *out, const json_t *v)
{
    if (v == NULL) {
        return ipc_put_u32(out, 0);
    }
    if (json_is_integer(v)) {
        return frames_put_int(out, json_integer_value(v));
    }
    size_t at = buf_len(out);
    if (ipc_put_u32(out, 0) != 0) {
        return -1;
    }
    size_t room = 256;
    char *dst = buf_reserve(out, room);
    if (dst == NULL) {
        return -1;
    }
    /* No JSON text is empty: 0 is jansson's failure (it allocates while dumping), and an
     * empty text would reach the worker as "no value" or "no params". */
    size_t need = json_dumpb(v, dst, room, JSON_COMPACT | JSON_ENCODE_ANY);
    if (need > room) {
        dst = buf_reserve(out, need);
        if (dst == NULL) {
            buf_truncate(out, at);
            return -1;
        }
        if (json_dumpb(v, dst, need, JSON_COMPACT | JSON_ENCODE_ANY) != need) {
            need = 0;
        }
    }
    if (need == 0) {
        buf_truncate(out, at);
        return -1;
    }
    buf_commit(out, need);
    uint32_t len = (uint32_t)need;
    memcpy((char *)buf_data(out) + at, &len, sizeof len);
    return 0;
}

/* The 16-byte form: u32 op, then u64 index, i64 value per job. */
static size_t frames_run_put_ints(struct buf *out, const struct frames_run_desc *desc,
                                  const uint64_t *indices, size_t n, const struct op **ops)
{
    if (ipc_put_u32(out, (uint32_t)ops_index(desc->ints_op)) != 0) {
        return 0;
    }
    char *dst = buf_reserve(out, n * 16);
    if (dst == NULL) {
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        uint64_t idx = indices[k];
        int64_t v = desc->ints[idx];
        memcpy(dst + 16 * k, &idx, 8);
        memcpy(dst + 16 * k + 8, &v, 8);
        if (ops != NULL) {
            ops[k] = desc->ints_op;
        }
    }
    buf_commit(out, 16 * n);
    return n;
}

/* A job that is a bare integer of the chunk's params, without name or blob: its whole record
 * in one append. */
static int frames_run_put_tiny(struct buf *out, uint64_t idx, const struct frames_job *job)
{
    char rec[8 + 4 + 4 + 20 + 4 + 4 + 8 + 8];
    uint32_t opi = (uint32_t)ops_index(job->op), zero = 0;
    memcpy(rec, &idx, 8);
    memcpy(rec + 8, &opi, 4);
    char digits[24];
    char *dend = digits + sizeof digits;
    char *d = frames_digits(dend, job->ival);
    uint32_t len = (uint32_t)(dend - d);
    memcpy(rec + 12, &len, 4);
    memcpy(rec + 16, d, len);
    char *p = rec + 16 + len;
    memcpy(p, &zero, 4);     /* params: the chunk's */
    memcpy(p + 4, &zero, 4); /* no name */
    memset(p + 8, 0, 16);    /* no blob */
    p += 24;
    return buf_add(out, rec, (size_t)(p - rec));
}

static int frames_run_put_job(struct buf *out, uint64_t idx, const struct frames_job *job)
{
    if (job->has_int && job->params == NULL && job->name == NULL && job->blob_len == 0) {
        return frames_run_put_tiny(out, idx, job);
    }
    size_t mark = buf_len(out);
    int rc = 0;
    rc |= ipc_put_u64(out, idx);
    rc |= ipc_put_u32(out, (uint32_t)ops_index(job->op));
    rc |= job->has_int ? frames_put_int(out, job->ival) : frames_put_json(out, job->value);
    rc |= frames_put_json(out, job->params);
    rc |= ipc_put_bytes(out, job->name ? job->name : "",
                        (uint32_t)(job->name ? strlen(job->name) : 0));
    rc |= ipc_put_u64(out, job->blob_off);
    rc |= ipc_put_u64(out, job->blob_len);
    if (rc != 0) {
        buf_truncate(out, mark);
        return -1;
    }
    return 0;
}

size_t frames_run_encode(struct buf *out, const struct frames_run_desc *desc,
                         const uint64_t *indices, size_t n, const struct op **ops)
{
    const int ints = desc->ints != NULL && desc->ints_op != NULL;
    buf_reset(out);
    int rc = ipc_put_header(out, IPC_RUN, 0);
    size_t count_at = buf_len(out);
    rc |= ipc_put_u32(out, 0);
    rc |= ipc_put_u32(out, (desc->flags & ~FRAMES_RUN_INTS) | (ints ? FRAMES_RUN_INTS : 0));
    rc |= ipc_put_u64(out, desc->batch);
    rc |= ipc_put_u64(out, desc->timeout_ms);
    rc |= frames_put_json(out, desc->params);
    if (rc != 0) {
        buf_reset(out);
        return 0;
    }
    size_t done = 0;
    if (ints) {
        done = frames_run_put_ints(out, desc, indices, n, ops);
    } else {
        for (; done < n; done++) {
            struct frames_job job = {0};
            desc->job_at(desc->ud, indices[done], &job);
            if (frames_run_put_job(out, indices[done], &job) != 0) {
                break;
            }
            if (ops != NULL) {
                ops[done] = job.op;
            }
        }
    }
    uint32_t n32 = (uint32_t)done;
    memcpy((char *)buf_data(out) + count_at, &n32, sizeof n32);
    ipc_patch_length(out, 0);
    return done;
}

/* ---------------------------------------------------------------- RUN: decoding */

/* Reads the next job of the general form into J. J is reused for every job of the frame:
 * each call sets every field this form has, and the others stay zero, which spares a tiny
 * job the clearing of the whole struct. */
static void frames_run_get_job(struct ipc_reader *r, struct frames_run_job *j)
{
    j->index = ipc_get_u64(r);
    j->op = ipc_get_u32(r);
    j->value = ipc_get_bytes(r, &j->value_len);
    j->params = ipc_get_bytes(r, &j->params_len);
    j->name = ipc_get_bytes(r, &j->name_len);
    j->blob_off = ipc_get_u64(r);
    j->blob_len = ipc_get_u64(r);
}

/* The jobs of a RUN body after its head, handed to SINK one by one. */
static int frames_run_jobs(struct ipc_reader *r, const struct frames_run_head *h,
                           const struct frames_run_sink *sink)
{
    struct frames_run_job j = {0};
    int rc = 0;
    if (h->flags & FRAMES_RUN_INTS) {
        /* The 16-byte form, the bulk of numeric batches: the caller's count check proved
         * that every record is there, so they are read without a check per field. */
        j.op = h->ints_op;
        j.is_int = 1;
        const uint8_t *p = r->p;
        for (uint32_t i = 0; rc == 0 && i < h->njobs; i++) {
            memcpy(&j.index, p, 8);
            memcpy(&j.ival, p + 8, 8);
            p += 16;
            rc = sink->job(sink->ud, h, &j);
        }
        r->left -= (size_t)(p - r->p);
        r->p = p;
        return rc;
    }
    for (uint32_t i = 0; rc == 0 && i < h->njobs; i++) {
        frames_run_get_job(r, &j);
        if (r->bad) {
            return FRAMES_BAD;
        }
        rc = sink->job(sink->ud, h, &j);
    }
    return rc;
}

int frames_run_decode(const void *body, size_t len, const struct frames_run_sink *sink)
{
    struct ipc_reader r;
    ipc_reader_init(&r, body, len);
    struct frames_run_head h = {0};
    h.njobs = ipc_get_u32(&r);
    h.flags = ipc_get_u32(&r);
    h.batch = ipc_get_u64(&r);
    h.timeout_ms = ipc_get_u64(&r);
    h.params = ipc_get_bytes(&r, &h.params_len);
    if (h.params_len == 0) {
        h.params = NULL;
    }
    if (h.flags & FRAMES_RUN_INTS) {
        h.ints_op = ipc_get_u32(&r);
    }
    /* A count no body of this size could hold is refused before anything runs. */
    size_t min_job = (h.flags & FRAMES_RUN_INTS) ? 16 : 8 + 4 + 4 + 4 + 4 + 8 + 8;
    if (r.bad || h.njobs > r.left / min_job) {
        return FRAMES_BAD;
    }
    int rc = sink->head != NULL ? sink->head(sink->ud, &h) : 0;
    if (rc == 0) {
        rc = frames_run_jobs(&r, &h, sink);
    }
    if (rc != 0) {
        return rc;
    }
    return r.left == 0 ? 0 : FRAMES_BAD;
}

/* ---------------------------------------------------------------- RESULTS: encoding */

void frames_results_begin(struct frames_results_writer *w, struct buf *out)
{
    w->out = out;
    buf_reset(out);
    ipc_put_header(out, IPC_RESULTS, 0);
    w->count_at = buf_len(out);
    ipc_put_u32(out, 0);
    w->count = 0;
}

int frames_results_add(struct frames_results_writer *w, const struct frames_result *r)
{
    struct buf *out = w->out;
    size_t mark = buf_len(out);
    const int block = r->block_count > 0;
    uint32_t nblobs = block ? 0 : r->nblobs;
    int rc = 0;
    rc |= ipc_put_u64(out, r->index);
    rc |= ipc_put_u32(out, block ? (uint32_t)FRAMES_ERR_BLOCK : (uint32_t)r->err);
    rc |= ipc_put_u64(out, block ? r->busy_ns : r->start_ns);
    rc |= ipc_put_u64(out, block ? r->block_count : r->end_ns);
    rc |= ipc_put_bytes(out, r->text != NULL ? r->text : "", r->text_len);
    rc |= ipc_put_u32(out, nblobs);
    for (uint32_t i = 0; i < nblobs && rc == 0; i++) {
        rc |= ipc_put_bytes(out, r->blobs[i].name, (uint32_t)strlen(r->blobs[i].name));
        rc |= ipc_put_bytes(out, r->blobs[i].data, r->blobs[i].len);
    }
    if (rc != 0) {
        buf_truncate(out, mark);
        return -1;
    }
    w->count++;
    return 0;
}

void frames_results_end(struct frames_results_writer *w)
{
    memcpy((char *)buf_data(w->out) + w->count_at, &w->count, sizeof w->count);
    ipc_patch_length(w->out, 0);
}

/* ---------------------------------------------------------------- RESULTS: decoding */

/* Reads one record into R. Returns 0, or -1 when it is malformed. Only the fields a record
 * uses are set: R is a large struct reused for every record, and clearing it each time
 * would cost more than a tiny job's record. */
static int frames_results_get(struct ipc_reader *rd, struct frames_result *r)
{
    r->index = ipc_get_u64(rd);
    r->err = (int)ipc_get_u32(rd);
    r->start_ns = ipc_get_u64(rd);
    r->end_ns = ipc_get_u64(rd);
    r->text = ipc_get_bytes(rd, &r->text_len);
    r->nblobs = ipc_get_u32(rd);
    r->block_count = r->busy_ns = 0;
    if (rd->bad || r->nblobs > JOB_MAX_BLOBS) {
        return -1;
    }
    for (uint32_t j = 0; j < r->nblobs; j++) {
        uint32_t nlen;
        const char *name = ipc_get_bytes(rd, &nlen);
        r->blobs[j].data = ipc_get_bytes(rd, &r->blobs[j].len);
        snprintf(r->names[j], sizeof r->names[j], "%.*s", (int)nlen, name ? name : "");
        r->blobs[j].name = r->names[j];
    }
    if (rd->bad) {
        return -1;
    }
    if ((uint32_t)r->err == FRAMES_ERR_BLOCK) {
        if (r->nblobs != 0 || r->end_ns == 0) {
            return -1;
        }
        r->block_count = r->end_ns;
        r->busy_ns = r->start_ns;
        r->err = 0;
        r->start_ns = r->end_ns = 0;
    }
    return 0;
}

int frames_results_decode(const void *body, size_t len, frames_result_fn *fn, void *ud)
{
    struct ipc_reader rd;
    ipc_reader_init(&rd, body, len);
    uint32_t count = ipc_get_u32(&rd);
    if (rd.bad) {
        return FRAMES_BAD;
    }
    struct frames_result r;
    for (uint32_t k = 0; k < count; k++) {
        if (frames_results_get(&rd, &r) != 0) {
            return FRAMES_BAD;
        }
        int rc = fn(ud, &r);
        if (rc != 0) {
            return rc;
        }
    }
    return rd.left == 0 ? 0 : FRAMES_BAD;
}

/* ---------------------------------------------------------------- CONFIG */

int frames_config_encode(struct buf *out, const struct worker_config *cfg)
{
    buf_reset(out);
    int rc = ipc_put_header(out, IPC_CONFIG, 0);
    rc |= ipc_put_u64(out, cfg->memory_bytes);
    rc |= ipc_put_u64(out, cfg->limits.max_input_pixels);
    rc |= ipc_put_u64(out, cfg->limits.max_output_pixels);
    rc |= ipc_put_u64(out, cfg->limits.lua_memory);
    rc |= ipc_put_bytes(out, cfg->data_dir, (uint32_t)strnlen(cfg->data_dir, PATH_MAX - 1));
    rc |= ipc_put_bytes(out, cfg->output_dir, (uint32_t)strnlen(cfg->output_dir, PATH_MAX - 1));
    rc |=
        ipc_put_bytes(out, cfg->modules, (uint32_t)strnlen(cfg->modules, sizeof cfg->modules - 1));
    if (rc != 0) {
        buf_reset(out);
        return -1;
    }
    ipc_patch_length(out, 0);
    return 0;
}

/* Copies a string of the CONFIG body into DST (CAP bytes). Returns 0 or -1. */
static int frames_config_str(struct ipc_reader *r, char *dst, size_t cap)
{
    uint32_t len;
    const char *p = ipc_get_bytes(r, &len);
    if (r->bad || len >= cap || (len > 0 && memchr(p, '\0', len) != NULL)) {
        return -1;
    }
    if (len > 0) {
        memcpy(dst, p, len);
    }
    dst[len] = '\0';
    return 0;
}

int frames_config_decode(const void *body, size_t len, struct worker_config *cfg)
{
    struct ipc_reader r;
    ipc_reader_init(&r, body, len);
    cfg->memory_bytes = ipc_get_u64(&r);
    cfg->limits.max_input_pixels = ipc_get_u64(&r);
    cfg->limits.max_output_pixels = ipc_get_u64(&r);
    cfg->limits.lua_memory = ipc_get_u64(&r);
    cfg->limits.no_openat2 = 0;
    if (r.bad || frames_config_str(&r, cfg->data_dir, PATH_MAX) != 0 ||
        frames_config_str(&r, cfg->output_dir, PATH_MAX) != 0 ||
        frames_config_str(&r, cfg->modules, sizeof cfg->modules) != 0) {
        return FRAMES_BAD;
    }
    return r.left == 0 ? 0 : FRAMES_BAD;
}
