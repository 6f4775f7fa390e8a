/* A POST that makes a stored batch (SPEC §8): async ("async": true, or Prefer:
 * respond-async) or keyed (Idempotency-Key). The batch, checked like any other, goes to the
 * store with its owner, key and fingerprint; the request sleeps until the store has
 * committed it, since only then may it be announced: 202 with its status, or the stream of
 * its results. A second POST with the key gets the first one's batch. */
#include "submit.h"

#include "internal.h"
#include "log.h"
#include "reply.h"
#include "results.h"
#include "status.h"
#include "stored.h"

#include "../api/errors.h"
#include "../api/sha256.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

/* A creation in flight: what the store borrows until its callback, and the request that
 * waits for it (NULL once that request is gone: the batch is created all the same). */
struct submit_wait {
    struct request *r;
    struct server *s;
    void *map; /* the upload's memfd, mapped: the files' bytes */
    size_t map_len;
    char *spec;
    size_t spec_len;
    char *names; /* a form's file names, as a JSON array */
    struct store_blob *inputs;
    char key[STORE_KEY_MAX + 1];
    int rc;
    char id[STORE_ID_SIZE];
};

static void submit_wait_free(struct submit_wait *w)
{
    if (w->map != NULL) {
        munmap(w->map, w->map_len);
    }
    free(w->spec);
    free(w->names);
    free(w->inputs);
    free(w);
}

/* 1 when header list H (Prefer) holds the preference TOKEN (RFC 7240: comma-separated,
 * each maybe with parameters after ';'). */
static int prefer_has(const char *h, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = h; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        if (strncasecmp(p, token, n) == 0 &&
            (p[n] == '\0' || p[n] == ',' || p[n] == ';' || p[n] == ' ' || p[n] == '\t')) {
            return 1;
        }
        p = strchr(p, ',');
    }
    return 0;
}

/* The Idempotency-Key of R into KEY (a structured-field string's quotes dropped). Returns 1
 * (a key), 0 (none) or -1 (malformed: empty, too long, or not printable ASCII). */
static int submit_key(struct request *r, char key[STORE_KEY_MAX + 1])
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Idempotency-Key");
    if (h == NULL) {
        return 0;
    }
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '"' && h[n - 1] == '"') {
        h++;
        n -= 2;
    }
    if (n == 0 || n > STORE_KEY_MAX) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (h[i] < 0x20 || h[i] > 0x7e) {
            return -1;
        }
    }
    memcpy(key, h, n);
    key[n] = '\0';
    return 1;
}

int submit_wanted(struct request *r)
{
    const char *prefer = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Prefer");
    r->async = r->prep.spec.async || prefer_has(prefer, "respond-async");
    return r->async ||
           MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Idempotency-Key") != NULL;
}

/* The fingerprint of the request: SHA-256 of the batch JSON, then of each file (its name and
 * length first, so that no two different forms hash alike). Two bodies that carry the same
 * batch and files match even if their form boundaries differ. */
static void submit_fingerprint(const struct submit_wait *w, size_t nfiles, uint8_t out[32])
{
    struct sha256 c;
    sha256_init(&c);
    sha256_update(&c, w->spec, w->spec_len);
    for (size_t i = 0; i < nfiles; i++) {
        const struct store_blob *f = &w->inputs[i + 1];
        uint64_t len = f->len;
        sha256_update(&c, &len, sizeof len);
        sha256_update(&c, f->data, f->len);
    }
    if (w->names != NULL) {
        sha256_update(&c, w->names, strlen(w->names));
    }
    sha256_final(&c, out);
}

/* The form's files as the batch's inputs: input 0 their names (JSON), then their bytes,
 * borrowed from a read-only map of the upload's memfd. Returns 0 or -1. */
static int submit_files(struct submit_wait *w, const struct upload *u)
{
    size_t nfiles = upload_nfiles(u);
    json_t *names = json_array();
    w->inputs = calloc(nfiles + 1, sizeof *w->inputs);
    int bad = names == NULL || w->inputs == NULL;
    uint64_t end = 0;
    for (size_t i = 0; !bad && i < nfiles; i++) {
        const struct upload_file *f = upload_file_at(u, i);
        bad = json_array_append_new(names, f->name ? json_string(f->name) : json_null()) != 0;
        end = f->off + f->len > end ? f->off + f->len : end;
    }
    if (!bad && end > 0) {
        w->map = mmap(NULL, (size_t)end, PROT_READ, MAP_SHARED, upload_fd(u), 0);
        bad = w->map == MAP_FAILED;
        w->map = bad ? NULL : w->map;
        w->map_len = (size_t)end;
    }
    for (size_t i = 0; !bad && i < nfiles; i++) {
        const struct upload_file *f = upload_file_at(u, i);
        w->inputs[i + 1].data = (const char *)w->map + f->off;
        w->inputs[i + 1].len = (size_t)f->len;
    }
    w->names = bad ? NULL : json_dumps(names, JSON_COMPACT);
    json_decref(names);
    if (bad || w->names == NULL) {
        return -1;
    }
    w->inputs[0].data = w->names;
    w->inputs[0].len = strlen(w->names);
    return 0;
}

/* The store has answered for W's batch (on the loop thread). */
static void submit_done(void *arg, int rc, struct store_batch *sb, const char *id)
{
    struct submit_wait *w = arg;
    struct server *s = w->s;
    if (rc == STORE_OK && sb != NULL) {
        log_event("info", "batch_stored", "batch", id, "request_id", w->r != NULL ? w->r->id : "",
                  NULL);
        stored_started(s, id, sb); /* async or keyed: it runs whether the client waits or not */
    } else {
        store_batch_release(sb); /* a replay: that batch is live here already, or ended */
    }
    struct request *r = w->r;
    if (r != NULL) {
        r->wait = NULL;
        r->status = 0;
        snprintf(r->batch_id, sizeof r->batch_id, "%s", id != NULL ? id : "");
        r->wait_rc = rc; /* for submit_reply */
        r->resume_fn = submit_reply;
        MHD_resume_connection(r->conn);
        s->resumed = 1;
    }
    submit_wait_free(w);
}

/* 1 when R's ?after= or Last-Event-ID (where its results stream resumes) is not a seq. */
static int submit_after_bad(struct request *r)
{
    const char *lei = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    const char *after_q = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "after");
    const char *from = lei != NULL ? lei : after_q;
    uint64_t after;
    return !r->async && from != NULL && results_parse_seq(from, &after) != 0;
}

enum MHD_Result submit_stored(struct request *r)
{
    struct server *s = r->srv;
    struct submit_wait *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
    }
    int has_key = submit_key(r, w->key);
    if (has_key < 0) {
        free(w);
        return reply_error(r, -BATCHD_E_BAD_REQUEST,
                           "Idempotency-Key must be 1 to 255 printable ASCII characters",
                           "Idempotency-Key");
    }
    if (submit_after_bad(r)) {
        free(w); /* refused before the batch exists: it would run with nobody to read it */
        return reply_error(r, -BATCHD_E_BAD_REQUEST, "after and Last-Event-ID are a seq (integer)",
                           "after");
    }
    if (s->closing) {
        free(w); /* the server stops: nothing may sleep on the store any more */
        return reply_error(r, -BATCHD_E_DRAINING, NULL, NULL);
    }
    if (s->store == NULL) {
        free(w);
        return reply_error(r, -BATCHD_E_STORE_UNAVAILABLE, NULL, NULL);
    }
    if (r->prep.spec.njobs > UINT32_MAX) {
        free(w); /* the store counts a batch's jobs in 32 bits */
        return reply_error(r, -BATCHD_E_TOO_MANY_JOBS, "a stored batch has at most 4294967295 jobs",
                           "inputs");
    }
    w->s = s;
    const struct buf *json = upload_json(r->upload);
    w->spec_len = buf_len(json);
    w->spec = malloc(w->spec_len ? w->spec_len : 1);
    size_t nfiles = upload_is_multipart(r->upload) ? upload_nfiles(r->upload) : 0;
    if (w->spec == NULL || (upload_is_multipart(r->upload) && submit_files(w, r->upload) != 0)) {
        submit_wait_free(w);
        return reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
    }
    memcpy(w->spec, buf_data(json), w->spec_len);
    struct store_new_batch nb = {
        .owner = r->owner,
        .owner_len = r->owner_len,
        .idem_key = has_key ? w->key : NULL,
        .op = prepared_op_label(&r->prep),
        .request_id = r->id,
        .spec = w->spec,
        .spec_len = w->spec_len,
        .inputs = w->inputs,
        .ninputs = w->inputs != NULL ? nfiles + 1 : 0,
        .njobs = (uint32_t)r->prep.spec.njobs,
    };
    submit_fingerprint(w, nfiles, nb.fingerprint);
    int crc = store_batch_create(s->store, &nb, submit_done, w);
    if (crc != 0) {
        submit_wait_free(w);
        return crc == STORE_E_IO
                   ? reply_error(r, -BATCHD_E_STORE_UNAVAILABLE, store_err_message(crc), NULL)
                   : reply_error(r, -BATCHD_E_INTERNAL, "out of memory", NULL);
    }
    /* Asleep until submit_done: the batch may be announced only once it is committed. */
    w->r = r;
    r->wait = w;
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

/* The outcome of the creation, as the client's answer. */
enum MHD_Result submit_reply(struct request *r)
{
    int rc = r->wait_rc;
    if (rc == STORE_E_KEY_REUSED) {
        return reply_error(r, -BATCHD_E_KEY_REUSED, NULL, "Idempotency-Key");
    }
    if (rc == STORE_E_FULL) {
        return reply_error(r, -BATCHD_E_STORE_FULL, NULL, NULL);
    }
    if (rc < 0) {
        return reply_error(r, -BATCHD_E_STORE_UNAVAILABLE, store_err_message(rc), NULL);
    }
    if (r->async) {
        return status_reply(r, r->batch_id, 202);
    }
    const char *lei = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    const char *after_q = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "after");
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
    const char *from = lei != NULL ? lei : after_q;
    uint64_t after = 0;
    if (from != NULL) {
        (void)results_parse_seq(from, &after); /* checked by submit_stored */
    }
    int sse = accept != NULL && strcasestr(accept, "text/event-stream") != NULL;
    return results_respond(r, r->batch_id, after, 1, sse, 0);
}

void submit_finish(struct request *r)
{
    if (r->wait != NULL) {
        r->wait->r = NULL; /* the creation goes on; nobody waits for its answer */
        r->wait = NULL;
    }
}
