/* Fuzz target: the decoders of the RUN, RESULTS and CONFIG frames (workers/frames.c), which read
 * what the other end of a worker socket sent. Every input is read as a frame (header
 * checked by ipc_frame_complete, as both ends do) and as a bare body of each type: any bytes
 * must give 0 or FRAMES_BAD, never a read past the end. A RESULTS body that decodes is
 * written again record by record, and that must decode to the same records; a CONFIG body
 * that decodes is encoded again and must decode to the same config. Built as a
 * libFuzzer target with clang (-DBATCHD_FUZZ=ON) and as a corpus replayer with any compiler
 * (tests/fuzz/replay.c). */
#include "workers/frames.h"
#include "workers/ipc.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fz_head(void *ud, const struct frames_run_head *h)
{
    (void)ud;
    return h->njobs == 0xdeadbeefu; /* never true past the decoder's own count check */
}

static int fz_job(void *ud, const struct frames_run_head *h, const struct frames_run_job *j)
{
    size_t *sum = ud;
    (void)h;
    /* Touch every byte the decoder hands over: a pointer past the body shows under ASan. */
    for (uint32_t k = 0; k < j->value_len; k++) {
        *sum += (uint8_t)j->value[k];
    }
    for (uint32_t k = 0; k < j->params_len; k++) {
        *sum += (uint8_t)j->params[k];
    }
    for (uint32_t k = 0; k < j->name_len; k++) {
        *sum += (uint8_t)j->name[k];
    }
    return 0;
}

struct fz_results {
    struct frames_results_writer w;
    size_t n;
};

static int fz_result(void *ud, const struct frames_result *r)
{
    struct fz_results *f = ud;
    for (uint32_t k = 0; k < r->text_len; k++) {
        f->n += (uint8_t)r->text[k];
    }
    for (uint32_t j = 0; j < r->nblobs; j++) {
        f->n += strlen(r->blobs[j].name);
        if (r->blobs[j].len > 0) {
            f->n += r->blobs[j].data[r->blobs[j].len - 1];
        }
    }
    if (r->err >= 0 && r->err != 0) {
        return 0; /* not what a worker writes: not re-encoded */
    }
    frames_results_add(&f->w, r);
    return 0;
}

static int fz_same(void *ud, const struct frames_result *r)
{
    (void)r;
    (*(size_t *)ud)++;
    return 0;
}

static void fz_config(const uint8_t *body, size_t len)
{
    static struct worker_config c, again;
    if (frames_config_decode(body, len, &c) != 0) {
        return;
    }
    struct buf out;
    buf_init(&out, 1u << 16);
    if (frames_config_encode(&out, &c) != 0 ||
        frames_config_decode((const char *)buf_data(&out) + sizeof(struct ipc_header),
                             buf_len(&out) - sizeof(struct ipc_header), &again) != 0 ||
        again.memory_bytes != c.memory_bytes ||
        again.limits.max_input_pixels != c.limits.max_input_pixels ||
        again.limits.max_output_pixels != c.limits.max_output_pixels ||
        strcmp(again.data_dir, c.data_dir) != 0 || strcmp(again.output_dir, c.output_dir) != 0) {
        abort();
    }
    buf_cleanup(&out);
}

static void fz_body(const uint8_t *body, size_t len)
{
    fz_config(body, len);
    size_t sum = 0;
    const struct frames_run_sink sink = {.head = fz_head, .job = fz_job, .ud = &sum};
    int rc = frames_run_decode(body, len, &sink);
    if (rc != 0 && rc != FRAMES_BAD) {
        abort();
    }
    struct buf out;
    buf_init(&out, 1u << 24);
    struct fz_results f = {.n = 0};
    frames_results_begin(&f.w, &out);
    rc = frames_results_decode(body, len, fz_result, &f);
    if (rc != 0 && rc != FRAMES_BAD) {
        abort();
    }
    frames_results_end(&f.w);
    /* What was re-encoded decodes, to as many records. */
    size_t again = 0;
    rc = frames_results_decode((const char *)buf_data(&out) + sizeof(struct ipc_header),
                               buf_len(&out) - sizeof(struct ipc_header), fz_same, &again);
    if (rc != 0 || again != frames_results_count(&f.w)) {
        abort();
    }
    buf_cleanup(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly SIZE bytes, so that a read past the end is caught. */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }
    memcpy(copy, data, size);
    struct ipc_header h;
    long total = ipc_frame_complete(copy, size, &h);
    if (total > 0) {
        fz_body(copy + sizeof h, h.len);
    }
    fz_body(copy, size);
    free(copy);
    return 0;
}
