/* Unit tests of workers/frames.c: every RUN, RESULTS and CONFIG frame the encoders write decodes to
 * what was encoded (the general form, the tiny-integer record, the 16-byte all-integer
 * form, empty chunks, blobs, block records, the caps), and truncated, padded or random
 * bodies are refused or read safely, never past their end. */
#include "../../workers/frames.h"
#include "../../workers/ipc.h"
#include "../check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- RUN helpers */

struct jobs_src {
    struct frames_job jobs[8];
};

static void src_job_at(void *ud, uint64_t index, struct frames_job *job)
{
    const struct jobs_src *s = ud;
    *job = s->jobs[index % 8];
}

struct run_got {
    int heads;
    struct frames_run_head head;
    size_t n;
    struct frames_run_job jobs[64];
    int stop_after; /* > 0: the sink stops after that many jobs */
};

static int got_head(void *ud, const struct frames_run_head *h)
{
    struct run_got *g = ud;
    g->heads++;
    g->head = *h;
    return 0;
}

static int got_job(void *ud, const struct frames_run_head *h, const struct frames_run_job *j)
{
    struct run_got *g = ud;
    (void)h;
    if (g->n < 64) {
        g->jobs[g->n] = *j;
    }
    g->n++;
    return g->stop_after > 0 && (int)g->n >= g->stop_after ? 7 : 0;
}

/* Decodes the whole frame in OUT (header checked) into G. Returns the decoder's code. */
static int decode_run(const struct buf *out, struct run_got *g)
{
    struct ipc_header h;
    long total = ipc_frame_complete(buf_data(out), buf_len(out), &h);
    CHECK_EQ_INT(total, (long)buf_len(out));
    CHECK_EQ_INT(h.type, IPC_RUN);
    const struct frames_run_sink sink = {.head = got_head, .job = got_job, .ud = g};
    return frames_run_decode((const char *)buf_data(out) + sizeof h, h.len, &sink);
}

static int text_is(const char *p, uint32_t len, const char *want)
{
    return len == strlen(want) && (len == 0 || memcmp(p, want, len) == 0);
}

/* ---------------------------------------------------------------- RUN */

static void test_run_general(void)
{
    const struct op *sq = ops_find("square"), *img = ops_find("sqrt");
    json_t *chunk_params = json_pack("{s:i}", "quality", 85);
    json_t *own = json_pack("{s:s}", "format", "png");
    json_t *val = json_pack("{s:[i,i]}", "xs", 1, 2);
    json_t *big = json_integer(-1234567890123LL);
    struct jobs_src src = {{
        {.op = sq, .has_int = 1, .ival = -42}, /* the tiny record */
        {.op = sq, .value = big},              /* an integer value via JSON */
        {.op = img,
         .value = val,
         .params = own,
         .name = "a/b.png",
         .blob_off = 7,
         .blob_len = 99},                                         /* everything */
        {.op = img, .value = NULL},                               /* an empty value */
        {.op = sq, .has_int = 1, .ival = INT64_MIN, .name = "n"}, /* int, not tiny */
    }};
    const struct frames_run_desc desc = {.flags = FRAMES_RUN_WANT_BINARY | FRAMES_RUN_BLOCK,
                                         .batch = 0x1234567890ull,
                                         .timeout_ms = 60000,
                                         .params = chunk_params,
                                         .job_at = src_job_at,
                                         .ud = &src};
    uint64_t idx[5] = {0, 1, 2, 3, 4};
    const struct op *ops[5] = {0};
    struct buf out;
    buf_init(&out, 1 << 20);
    CHECK_EQ_INT(frames_run_encode(&out, &desc, idx, 5, ops), 5);
    CHECK(ops[0] == sq && ops[2] == img && ops[4] == sq);
    struct run_got g = {0};
    CHECK_EQ_INT(decode_run(&out, &g), 0);
    CHECK_EQ_INT(g.heads, 1);
    CHECK_EQ_INT(g.head.njobs, 5);
    CHECK_EQ_INT(g.head.flags, FRAMES_RUN_WANT_BINARY | FRAMES_RUN_BLOCK);
    CHECK(g.head.batch == 0x1234567890ull && g.head.timeout_ms == 60000);
    CHECK(text_is(g.head.params, g.head.params_len, "{\"quality\":85}"));
    CHECK_EQ_INT(g.n, 5);
    for (int k = 0; k < 5; k++) {
        CHECK_EQ_INT(g.jobs[k].index, k);
        CHECK_EQ_INT(g.jobs[k].op, ops_index(src.jobs[k].op));
        CHECK_EQ_INT(g.jobs[k].is_int, 0);
    }
    CHECK(text_is(g.jobs[0].value, g.jobs[0].value_len, "-42"));
    CHECK_EQ_INT(g.jobs[0].params_len + g.jobs[0].name_len + g.jobs[0].blob_len, 0);
    CHECK(text_is(g.jobs[1].value, g.jobs[1].value_len, "-1234567890123"));
    CHECK(text_is(g.jobs[2].value, g.jobs[2].value_len, "{\"xs\":[1,2]}"));
    CHECK(text_is(g.jobs[2].params, g.jobs[2].params_len, "{\"format\":\"png\"}"));
    CHECK(text_is(g.jobs[2].name, g.jobs[2].name_len, "a/b.png"));
    CHECK_EQ_INT(g.jobs[2].blob_off, 7);
    CHECK_EQ_INT(g.jobs[2].blob_len, 99);
    CHECK_EQ_INT(g.jobs[3].value_len, 0);
    CHECK(text_is(g.jobs[4].value, g.jobs[4].value_len, "-9223372036854775808"));
    CHECK(text_is(g.jobs[4].name, g.jobs[4].name_len, "n"));
    /* A sink that stops: its code comes back, no job after it is handed over. */
    struct run_got stop = {.stop_after = 2};
    CHECK_EQ_INT(decode_run(&out, &stop), 7);
    CHECK_EQ_INT(stop.n, 2);
    buf_cleanup(&out);
    json_decref(chunk_params);
    json_decref(own);
    json_decref(val);
    json_decref(big);
}

static void test_run_empty_chunk(void)
{
    struct jobs_src src = {0};
    const struct frames_run_desc desc = {.job_at = src_job_at, .ud = &src};
    struct buf out;
    buf_init(&out, 1 << 16);
    CHECK_EQ_INT(frames_run_encode(&out, &desc, NULL, 0, NULL), 0);
    struct run_got g = {0};
    CHECK_EQ_INT(decode_run(&out, &g), 0);
    CHECK_EQ_INT(g.heads, 1);
    CHECK_EQ_INT(g.head.njobs, 0);
    CHECK(g.head.params == NULL);
    CHECK_EQ_INT(g.n, 0);
    /* 28 bytes: njobs, flags, batch, timeout_ms, params_len. */
    CHECK_EQ_INT(buf_len(&out), sizeof(struct ipc_header) + 28);
    buf_cleanup(&out);
}

static void test_run_ints(void)
{
    const struct op *sq = ops_find("square");
    int64_t ints[6] = {0, -1, 1, INT64_MIN, INT64_MAX, 123456789};
    const struct frames_run_desc desc = {.flags = FRAMES_RUN_BLOCK, .ints = ints, .ints_op = sq};
    uint64_t idx[6] = {5, 4, 3, 2, 1, 0};
    const struct op *ops[6] = {0};
    struct buf out;
    buf_init(&out, 1 << 16);
    CHECK_EQ_INT(frames_run_encode(&out, &desc, idx, 6, ops), 6);
    /* Header, njobs, flags, batch, timeout_ms, params_len 0, op, then 16 bytes a job. */
    CHECK_EQ_INT(buf_len(&out), sizeof(struct ipc_header) + 32 + 6 * 16);
    struct run_got g = {0};
    CHECK_EQ_INT(decode_run(&out, &g), 0);
    CHECK_EQ_INT(g.head.flags, FRAMES_RUN_BLOCK | FRAMES_RUN_INTS);
    CHECK_EQ_INT(g.head.ints_op, ops_index(sq));
    CHECK_EQ_INT(g.n, 6);
    for (int k = 0; k < 6; k++) {
        CHECK(ops[k] == sq);
        CHECK_EQ_INT(g.jobs[k].index, idx[k]);
        CHECK_EQ_INT(g.jobs[k].is_int, 1);
        CHECK(g.jobs[k].ival == ints[idx[k]]);
        CHECK_EQ_INT(g.jobs[k].op, ops_index(sq));
    }
    /* An empty all-integer chunk. */
    CHECK_EQ_INT(frames_run_encode(&out, &desc, idx, 0, ops), 0);
    struct run_got e = {0};
    CHECK_EQ_INT(decode_run(&out, &e), 0);
    CHECK_EQ_INT(e.n, 0);
    buf_cleanup(&out);
}

/* A buffer cap cuts the chunk at the last job that fits; what was written stays valid. */
static void test_run_cap(void)
{
    const struct op *sq = ops_find("square");
    json_t *s = json_string("a string of some length, repeated in every job of the chunk");
    struct jobs_src src;
    for (int k = 0; k < 8; k++) {
        src.jobs[k] = (struct frames_job){.op = sq, .value = s};
    }
    const struct frames_run_desc desc = {.job_at = src_job_at, .ud = &src};
    uint64_t idx[40];
    for (int k = 0; k < 40; k++) {
        idx[k] = (uint64_t)k;
    }
    struct buf out;
    buf_init(&out, 1024);
    size_t n = frames_run_encode(&out, &desc, idx, 40, NULL);
    CHECK(n > 0 && n < 40);
    CHECK(buf_len(&out) <= 1024);
    struct run_got g = {0};
    CHECK_EQ_INT(decode_run(&out, &g), 0);
    CHECK_EQ_INT(g.n, n);
    CHECK_EQ_INT(g.jobs[n - 1].index, n - 1);
    /* Not even the head fits: nothing is written. */
    struct buf tiny;
    buf_init(&tiny, 8);
    CHECK_EQ_INT(frames_run_encode(&tiny, &desc, idx, 40, NULL), 0);
    buf_cleanup(&tiny);
    buf_cleanup(&out);
    json_decref(s);
}

/* A large value: 1 MiB of JSON text in one job. */
static void test_run_large_value(void)
{
    size_t n = 1 << 20;
    char *text = malloc(n + 1);
    memset(text, 'x', n);
    text[n] = '\0';
    json_t *s = json_string(text);
    struct jobs_src src = {{{.op = ops_find("sqrt"), .value = s}}};
    const struct frames_run_desc desc = {.job_at = src_job_at, .ud = &src};
    uint64_t idx[1] = {0};
    struct buf out;
    buf_init(&out, IPC_MAX_FRAME);
    CHECK_EQ_INT(frames_run_encode(&out, &desc, idx, 1, NULL), 1);
    struct run_got g = {0};
    CHECK_EQ_INT(decode_run(&out, &g), 0);
    CHECK_EQ_INT(g.jobs[0].value_len, n + 2);
    CHECK(g.jobs[0].value[0] == '"' && g.jobs[0].value[n + 1] == '"');
    buf_cleanup(&out);
    json_decref(s);
    free(text);
}

/* Every strict prefix of a RUN body is refused, as is a body with a byte more. */
static void test_run_truncated(void)
{
    const struct op *sq = ops_find("square");
    json_t *v = json_pack("[i,s]", 1, "two");
    struct jobs_src src = {{{.op = sq, .has_int = 1, .ival = 3},
                            {.op = sq, .value = v, .name = "x.png", .blob_len = 4}}};
    const struct frames_run_desc desc = {.job_at = src_job_at, .ud = &src};
    uint64_t idx[2] = {0, 1};
    struct buf out;
    buf_init(&out, 1 << 16);
    CHECK_EQ_INT(frames_run_encode(&out, &desc, idx, 2, NULL), 2);
    const uint8_t *body = (const uint8_t *)buf_data(&out) + sizeof(struct ipc_header);
    size_t len = buf_len(&out) - sizeof(struct ipc_header);
    int refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        struct run_got g = {0};
        const struct frames_run_sink sink = {.head = got_head, .job = got_job, .ud = &g};
        /* A copy of exactly CUT bytes, so that ASan sees any read past it. */
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, body, cut);
        refused += frames_run_decode(copy, cut, &sink) == FRAMES_BAD;
        free(copy);
    }
    CHECK_EQ_INT(refused, len);
    uint8_t *padded = malloc(len + 1);
    memcpy(padded, body, len);
    padded[len] = 0;
    struct run_got g = {0};
    const struct frames_run_sink sink = {.head = got_head, .job = got_job, .ud = &g};
    CHECK_EQ_INT(frames_run_decode(padded, len + 1, &sink), FRAMES_BAD);
    /* A count no body of this size can hold is refused before any job. */
    uint32_t huge = 0xffffffffu;
    memcpy(padded, &huge, 4);
    struct run_got h = {0};
    const struct frames_run_sink hs = {.head = got_head, .job = got_job, .ud = &h};
    CHECK_EQ_INT(frames_run_decode(padded, len, &hs), FRAMES_BAD);
    CHECK_EQ_INT(h.heads + (int)h.n, 0);
    free(padded);
    buf_cleanup(&out);
    json_decref(v);
}

/* ---------------------------------------------------------------- RESULTS */

struct res_got {
    size_t n;
    struct frames_result r[8];
    char text[8][256];
    uint8_t data[8][4][64];
};

static int got_result(void *ud, const struct frames_result *r)
{
    struct res_got *g = ud;
    if (g->n < 8) {
        struct frames_result *c = &g->r[g->n];
        *c = *r;
        /* The record borrows the frame: keep copies to compare after the decoding. */
        snprintf(g->text[g->n], sizeof g->text[g->n], "%.*s", (int)r->text_len,
                 r->text != NULL ? r->text : "");
        c->text = g->text[g->n];
        for (uint32_t j = 0; j < r->nblobs && j < 4; j++) {
            memcpy(g->data[g->n][j], r->blobs[j].data, r->blobs[j].len < 64 ? r->blobs[j].len : 64);
            c->blobs[j].name = c->names[j];
            c->blobs[j].data = g->data[g->n][j];
        }
    }
    g->n++;
    return 0;
}

static int decode_results(const struct buf *out, struct res_got *g)
{
    struct ipc_header h;
    long total = ipc_frame_complete(buf_data(out), buf_len(out), &h);
    CHECK_EQ_INT(total, (long)buf_len(out));
    CHECK_EQ_INT(h.type, IPC_RESULTS);
    return frames_results_decode((const char *)buf_data(out) + sizeof h, h.len, got_result, g);
}

static void test_results_roundtrip(void)
{
    struct buf out;
    buf_init(&out, 1 << 16);
    struct frames_results_writer w;
    frames_results_begin(&w, &out);
    struct frames_result r;
    memset(&r, 0, sizeof r);
    r.index = 3;
    r.start_ns = 100;
    r.end_ns = 250;
    r.text = "{\"w\":1}";
    r.text_len = 7;
    r.nblobs = 2;
    r.blobs[0] =
        (struct frames_blob){.name = "out/a.png", .data = (const uint8_t *)"PNG!", .len = 4};
    r.blobs[1] = (struct frames_blob){.name = "", .data = (const uint8_t *)"", .len = 0};
    CHECK_EQ_INT(frames_results_add(&w, &r), 0);
    struct frames_result e;
    memset(&e, 0, sizeof e);
    e.index = 4;
    e.err = -7;
    e.start_ns = 1;
    e.end_ns = 2;
    e.text = "bad input";
    e.text_len = 9;
    e.nblobs = 3; /* an error record carries whatever blobs it is given */
    e.blobs[0] = e.blobs[1] = e.blobs[2] =
        (struct frames_blob){.name = "n", .data = (const uint8_t *)"", .len = 0};
    CHECK_EQ_INT(frames_results_add(&w, &e), 0);
    struct frames_result b;
    memset(&b, 0, sizeof b);
    b.index = 5;
    b.block_count = 2;
    b.busy_ns = 900;
    b.text = "{\"index\":5,\"result\":1}\n{\"index\":6,\"result\":2}\n";
    b.text_len = (uint32_t)strlen(b.text);
    CHECK_EQ_INT(frames_results_add(&w, &b), 0);
    CHECK_EQ_INT(frames_results_count(&w), 3);
    frames_results_end(&w);
    struct res_got g = {0};
    CHECK_EQ_INT(decode_results(&out, &g), 0);
    CHECK_EQ_INT(g.n, 3);
    CHECK_EQ_INT(g.r[0].index, 3);
    CHECK_EQ_INT(g.r[0].err, 0);
    CHECK_EQ_INT(g.r[0].start_ns, 100);
    CHECK_EQ_INT(g.r[0].end_ns, 250);
    CHECK_EQ_INT(g.r[0].block_count, 0);
    CHECK_EQ_STR(g.r[0].text, "{\"w\":1}");
    CHECK_EQ_INT(g.r[0].nblobs, 2);
    CHECK_EQ_STR(g.r[0].names[0], "out/a.png");
    CHECK_EQ_INT(g.r[0].blobs[0].len, 4);
    CHECK(memcmp(g.r[0].blobs[0].data, "PNG!", 4) == 0);
    CHECK_EQ_STR(g.r[0].names[1], "");
    CHECK_EQ_INT(g.r[0].blobs[1].len, 0);
    CHECK_EQ_INT(g.r[1].err, -7);
    CHECK_EQ_STR(g.r[1].text, "bad input");
    CHECK_EQ_INT(g.r[1].nblobs, 3);
    CHECK_EQ_INT(g.r[2].index, 5);
    CHECK_EQ_INT(g.r[2].err, 0);
    CHECK_EQ_INT(g.r[2].block_count, 2);
    CHECK_EQ_INT(g.r[2].busy_ns, 900);
    CHECK_EQ_INT(g.r[2].nblobs, 0);
    CHECK_EQ_STR(g.r[2].text, b.text);
    /* An empty frame. */
    frames_results_begin(&w, &out);
    frames_results_end(&w);
    struct res_got z = {0};
    CHECK_EQ_INT(decode_results(&out, &z), 0);
    CHECK_EQ_INT(z.n, 0);
    buf_cleanup(&out);
}

/* JOB_MAX_BLOBS blobs with names past the decoded length: names are cut, bytes kept. */
static void test_results_max_blobs(void)
{
    struct buf out;
    buf_init(&out, 1 << 20);
    struct frames_results_writer w;
    frames_results_begin(&w, &out);
    struct frames_result r;
    memset(&r, 0, sizeof r);
    char longname[200];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    static uint8_t bytes[JOB_MAX_BLOBS][1000];
    r.nblobs = JOB_MAX_BLOBS;
    r.text = "{}";
    r.text_len = 2;
    for (int j = 0; j < JOB_MAX_BLOBS; j++) {
        memset(bytes[j], j, sizeof bytes[j]);
        r.blobs[j] = (struct frames_blob){.name = longname, .data = bytes[j], .len = 1000};
    }
    CHECK_EQ_INT(frames_results_add(&w, &r), 0);
    frames_results_end(&w);
    struct ipc_header h;
    CHECK(ipc_frame_complete(buf_data(&out), buf_len(&out), &h) > 0);
    struct res_got g = {0};
    CHECK_EQ_INT(decode_results(&out, &g), 0);
    CHECK_EQ_INT(g.r[0].nblobs, JOB_MAX_BLOBS);
    CHECK_EQ_INT(strlen(g.r[0].names[JOB_MAX_BLOBS - 1]), FRAMES_BLOB_NAME_MAX);
    CHECK_EQ_INT(g.r[0].blobs[JOB_MAX_BLOBS - 1].len, 1000);
    /* One blob more than a record may carry is refused by the decoder. */
    uint32_t nb = JOB_MAX_BLOBS + 1;
    size_t nb_at = sizeof h + 4 + 8 + 4 + 8 + 8 + 4 + 2;
    memcpy((char *)buf_data(&out) + nb_at, &nb, 4);
    struct res_got bad = {0};
    CHECK_EQ_INT(decode_results(&out, &bad), FRAMES_BAD);
    CHECK_EQ_INT(bad.n, 0);
    buf_cleanup(&out);
}

/* A record that does not fit under the cap is not written, and the frame stays valid. */
static void test_results_cap(void)
{
    struct buf out;
    buf_init(&out, 256);
    struct frames_results_writer w;
    frames_results_begin(&w, &out);
    struct frames_result r;
    memset(&r, 0, sizeof r);
    r.text = "1";
    r.text_len = 1;
    CHECK_EQ_INT(frames_results_add(&w, &r), 0);
    static char big[1000];
    r.text = big;
    r.text_len = sizeof big;
    CHECK_EQ_INT(frames_results_add(&w, &r), -1);
    CHECK_EQ_INT(frames_results_count(&w), 1);
    frames_results_end(&w);
    struct res_got g = {0};
    CHECK_EQ_INT(decode_results(&out, &g), 0);
    CHECK_EQ_INT(g.n, 1);
    buf_cleanup(&out);
}

/* Prefixes, padding, a block of zero jobs, random bytes. */
static void test_results_garbage(void)
{
    struct buf out;
    buf_init(&out, 1 << 16);
    struct frames_results_writer w;
    frames_results_begin(&w, &out);
    struct frames_result r;
    memset(&r, 0, sizeof r);
    r.text = "2.0";
    r.text_len = 3;
    r.nblobs = 1;
    r.blobs[0] = (struct frames_blob){.name = "x", .data = (const uint8_t *)"ab", .len = 2};
    frames_results_add(&w, &r);
    r.index = 1;
    frames_results_add(&w, &r);
    frames_results_end(&w);
    const uint8_t *body = (const uint8_t *)buf_data(&out) + sizeof(struct ipc_header);
    size_t len = buf_len(&out) - sizeof(struct ipc_header);
    int refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        struct res_got g = {0};
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, body, cut);
        refused += frames_results_decode(copy, cut, got_result, &g) == FRAMES_BAD;
        free(copy);
    }
    CHECK_EQ_INT(refused, len);
    uint8_t *padded = calloc(1, len + 3);
    memcpy(padded, body, len);
    struct res_got g = {0};
    CHECK_EQ_INT(frames_results_decode(padded, len + 3, got_result, &g), FRAMES_BAD);
    free(padded);
    /* A block record of no jobs. */
    frames_results_begin(&w, &out);
    memset(&r, 0, sizeof r);
    r.err = (int)FRAMES_ERR_BLOCK;
    frames_results_add(&w, &r); /* block_count 0: a plain record with err BLOCK, end_ns 0 */
    frames_results_end(&w);
    struct res_got zb = {0};
    CHECK_EQ_INT(decode_results(&out, &zb), FRAMES_BAD);
    /* Random bodies: any verdict, never a read out of bounds (ASan watches). */
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (int t = 0; t < 2000; t++) {
        size_t n = (size_t)(seed >> 58) + 1;
        uint8_t *p = malloc(n);
        for (size_t k = 0; k < n; k++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            p[k] = (uint8_t)(seed >> 56);
            if (k < 4) {
                p[k] = k == 0 ? (uint8_t)(seed >> 62) : 0; /* small counts, to go deeper */
            }
        }
        struct res_got rg = {0};
        int rc = frames_results_decode(p, n, got_result, &rg);
        CHECK(rc == 0 || rc == FRAMES_BAD);
        struct run_got gg = {0};
        const struct frames_run_sink sink = {.head = got_head, .job = got_job, .ud = &gg};
        rc = frames_run_decode(p, n, &sink);
        CHECK(rc == 0 || rc == FRAMES_BAD);
        free(p);
    }
    buf_cleanup(&out);
}

/* ---------------------------------------------------------------- CONFIG */

static void config_fill(struct worker_config *c, size_t dir_len)
{
    memset(c, 0, sizeof *c);
    c->memory_bytes = 4ull << 30;
    c->limits.max_input_pixels = 100000000;
    c->limits.max_output_pixels = UINT64_MAX;
    c->limits.lua_memory = 64ull << 20;
    c->limits.no_openat2 = 1; /* a test hook of the worker's own: never sent */
    memset(c->data_dir, 'd', dir_len);
    snprintf(c->output_dir, sizeof c->output_dir, "%s", "/srv/out");
    snprintf(c->modules, sizeof c->modules, "%s", "/opt/a.so:/opt/b.so");
}

/* A CONFIG frame decodes to what was encoded, with folders empty, short and at the limit;
 * every truncation, padding, an overlong folder and a NUL inside one are refused. */
static void test_config_roundtrip(void)
{
    static const size_t lens[] = {0, 1, 9, PATH_MAX - 1};
    static struct worker_config in, got;
    struct buf out;
    buf_init(&out, 1 << 16);
    struct ipc_header h;
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        config_fill(&in, lens[k]);
        CHECK_EQ_INT(frames_config_encode(&out, &in), 0);
        CHECK_EQ_INT((long)ipc_frame_complete(buf_data(&out), buf_len(&out), &h),
                     (long)buf_len(&out));
        CHECK_EQ_INT(h.type, IPC_CONFIG);
        const char *body = buf_data(&out) + sizeof h;
        memset(&got, 0x55, sizeof got);
        CHECK_EQ_INT(frames_config_decode(body, h.len, &got), 0);
        CHECK(got.memory_bytes == in.memory_bytes);
        CHECK(got.limits.max_input_pixels == in.limits.max_input_pixels);
        CHECK(got.limits.max_output_pixels == in.limits.max_output_pixels);
        CHECK(got.limits.lua_memory == in.limits.lua_memory);
        CHECK_EQ_STR(got.modules, in.modules);
        CHECK_EQ_INT(got.limits.no_openat2, 0);
        CHECK_EQ_INT((long)strlen(got.data_dir), (long)lens[k]);
        CHECK_EQ_STR(got.data_dir, in.data_dir);
        CHECK_EQ_STR(got.output_dir, "/srv/out");
        for (uint32_t cut = 0; cut < h.len; cut++) {
            CHECK_EQ_INT(frames_config_decode(body, cut, &got), FRAMES_BAD);
        }
    }
    /* Padding after the last folder. */
    config_fill(&in, 3);
    CHECK_EQ_INT(frames_config_encode(&out, &in), 0);
    CHECK_EQ_INT(buf_add(&out, "x", 1), 0);
    CHECK_EQ_INT(frames_config_decode(buf_data(&out) + sizeof h, buf_len(&out) - sizeof h, &got),
                 FRAMES_BAD);
    /* A folder of PATH_MAX bytes (no room for its NUL), written by hand. */
    static char body[4 * 8 + 4 + PATH_MAX + 4];
    memset(body, 0, sizeof body);
    uint32_t len = PATH_MAX;
    memcpy(body + 32, &len, 4);
    memset(body + 36, 'd', PATH_MAX);
    CHECK_EQ_INT(frames_config_decode(body, sizeof body, &got), FRAMES_BAD);
    /* A NUL inside a folder. */
    len = 3;
    memcpy(body + 32, &len, 4);
    memcpy(body + 36, "a\0b", 3);
    memset(body + 39, 0, 8); /* output_dir and modules: empty */
    CHECK_EQ_INT(frames_config_decode(body, 47, &got), FRAMES_BAD);
    memcpy(body + 36, "a/b", 3);
    CHECK_EQ_INT(frames_config_decode(body, 47, &got), 0);
    CHECK_EQ_STR(got.data_dir, "a/b");
    CHECK_EQ_STR(got.output_dir, "");
    /* Past the buffer's cap the encoder refuses, leaving nothing. */
    struct buf tiny;
    buf_init(&tiny, 32);
    CHECK_EQ_INT(frames_config_encode(&tiny, &in), -1);
    CHECK_EQ_INT((long)buf_len(&tiny), 0);
    buf_cleanup(&tiny);
    buf_cleanup(&out);
}

int main(void)
{
    test_run_general();
    test_run_empty_chunk();
    test_run_ints();
    test_run_cap();
    test_run_large_value();
    test_run_truncated();
    test_results_roundtrip();
    test_results_max_blobs();
    test_results_cap();
    test_results_garbage();
    test_config_roundtrip();
    return check_report("test_frames");
}
