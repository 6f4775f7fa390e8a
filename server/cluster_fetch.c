/* A stored batch's upload rebuilt from the store without blocking the loop (cluster mode):
 * its batch JSON, then input 0 (the files' names, a JSON array, for a form), then each file,
 * one asynchronous read after the other, so that a replica taking a chunk of a batch with
 * hundreds of MiB of uploads keeps serving while they arrive. */
#include "cluster_fetch.h"

#include "internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cfetch {
    struct store *st;
    char id[STORE_ID_SIZE];
    cfetch_done_fn *done;
    void *arg;
    struct upload *u;
    void *spec;
    size_t spec_len;
    json_t *names;
    size_t next; /* the file read next (input next + 1) */
};

static void fetch_end(struct cfetch *f, int io)
{
    struct upload *u = io ? NULL : f->u;
    if (io) {
        upload_destroy(f->u);
    }
    f->done(f->arg, u, io);
    json_decref(f->names);
    free(f->spec);
    free(f);
}

static void on_file(void *arg, int rc, const void *data, size_t len);

/* Asks for the next file, or ends when every one is there. */
static void fetch_next(struct cfetch *f)
{
    if (f->next >= json_array_size(f->names)) {
        fetch_end(f, 0);
        return;
    }
    int rc =
        store_batch_blob_async(f->st, f->id, STORE_PART_INPUT, (uint32_t)f->next + 1, on_file, f);
    if (rc != 0) {
        fetch_end(f, 1);
    }
}

static void on_file(void *arg, int rc, const void *data, size_t len)
{
    struct cfetch *f = arg;
    if (rc == STORE_E_IO || rc == STORE_E_NOMEM) {
        fetch_end(f, 1);
        return;
    }
    const char *name = json_string_value(json_array_get(f->names, f->next));
    if (rc != 0 || upload_restore_file(f->u, name, data, len) != 0) {
        upload_destroy(f->u); /* the batch cannot be rebuilt: its jobs fail */
        f->u = NULL;
        fetch_end(f, 0);
        return;
    }
    f->next++;
    fetch_next(f);
}

static void on_names(void *arg, int rc, const void *data, size_t len)
{
    struct cfetch *f = arg;
    if (rc == STORE_E_IO || rc == STORE_E_NOMEM) {
        fetch_end(f, 1);
        return;
    }
    int form = rc == 0;
    f->u = upload_restored(form, UINT64_MAX / 4);
    f->names = form ? json_loadb(data, len, 0, NULL) : json_array();
    int oom = f->u == NULL || (!form && f->names == NULL);
    if (oom || !json_is_array(f->names) || upload_restore_json(f->u, f->spec, f->spec_len) != 0) {
        upload_destroy(f->u); /* out of memory: try again later; else it cannot be rebuilt */
        f->u = NULL;
        fetch_end(f, oom);
        return;
    }
    fetch_next(f);
}

static void on_spec(void *arg, int rc, const void *data, size_t len)
{
    struct cfetch *f = arg;
    if (rc != 0) {
        fetch_end(f, rc == STORE_E_IO || rc == STORE_E_NOMEM);
        return;
    }
    f->spec = malloc(len ? len : 1);
    if (f->spec == NULL) {
        fetch_end(f, 1);
        return;
    }
    memcpy(f->spec, data, len);
    f->spec_len = len;
    if (store_batch_blob_async(f->st, f->id, STORE_PART_INPUT, 0, on_names, f) != 0) {
        fetch_end(f, 1);
    }
}

int cluster_fetch(struct store *st, const char *id, cfetch_done_fn *done, void *arg)
{
    struct cfetch *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    f->st = st;
    snprintf(f->id, sizeof f->id, "%s", id);
    f->done = done;
    f->arg = arg;
    if (store_batch_blob_async(st, id, STORE_PART_SPEC, 0, on_spec, f) != 0) {
        free(f);
        return -1;
    }
    return 0;
}
