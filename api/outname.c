/* Output file names of image jobs: stems from inputs, unique within a batch. */
#include "outname.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A stem before a "-N" for a duplicate is added: leaves room for 20 digits and the dash. */
#define OUTNAME_MAX_BASE (OUTNAME_MAX - 22)
#define OUTNAME_MAX_PARTS 64

struct outname_set {
    json_t *taken; /* owned: an object used as a set of file names (extension left out) */
    json_t *next;  /* owned: base stem -> the next "-N" to try for it */
};

static int safe_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

struct part {
    const char *p;
    size_t len;
};

/* Splits S at '/' into at most OUTNAME_MAX_PARTS parts, dropping empty, "." and ".." ones
 * (a path with ".." is refused before anything is written; its stem only has to be safe).
 * Returns the count, or -1 when there are too many parts. */
static int split(const char *s, struct part *parts)
{
    int n = 0;
    while (*s != '\0') {
        const char *slash = strchr(s, '/');
        size_t len = slash != NULL ? (size_t)(slash - s) : strlen(s);
        int skip =
            len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.');
        if (!skip) {
            if (n == OUTNAME_MAX_PARTS) {
                return -1;
            }
            parts[n].p = s;
            parts[n].len = len;
            n++;
        }
        s += len + (slash != NULL);
    }
    return n;
}

/* Appends part P to OUT (at *K), made safe; LAST: without its extension. */
static void add_part(struct part p, int last, char *out, size_t *k)
{
    size_t len = p.len;
    if (last) {
        for (size_t i = len; i > 1; i--) {
            if (p.p[i - 1] == '.') {
                len = i - 1;
                break;
            }
        }
    }
    if (len > OUTNAME_MAX_PART) {
        len = OUTNAME_MAX_PART;
    }
    for (size_t i = 0; i < len; i++) {
        char c = p.p[i];
        out[(*k)++] = safe_char(c) && !(i == 0 && c == '.') ? c : '_';
    }
}

void outname_stem(const char *path, const char *name, uint64_t index, char *out, size_t n)
{
    struct part parts[OUTNAME_MAX_PARTS];
    char stem[OUTNAME_MAX_PARTS * (OUTNAME_MAX_PART + 1) + 1];
    size_t k = 0;
    int np = -1;
    if (path != NULL) {
        np = split(path, parts);
    } else if (name != NULL) {
        /* An upload's folders are the client's, not ours: its base name only. */
        const char *base = strrchr(name, '/');
        np = split(base != NULL ? base + 1 : name, parts);
    }
    if (np > 0) {
        for (int i = 0; i < np; i++) {
            if (i > 0) {
                stem[k++] = '/';
            }
            add_part(parts[i], i + 1 == np, stem, &k);
        }
        if (k > OUTNAME_MAX_BASE) {
            /* Too deep to keep the folders: the base name alone. */
            k = 0;
            add_part(parts[np - 1], 1, stem, &k);
        }
    }
    stem[k] = '\0';
    if (k == 0 || k > OUTNAME_MAX_BASE) {
        snprintf(out, n, "%llu", (unsigned long long)index);
        return;
    }
    snprintf(out, n, "%s", stem);
}

int outname_stem_ok(const char *stem)
{
    size_t len = strlen(stem);
    if (len == 0 || len > OUTNAME_MAX) {
        return 0;
    }
    size_t part = 0;
    for (size_t i = 0; i <= len; i++) {
        char c = stem[i];
        if (c == '/' || c == '\0') {
            if (part == 0 || part > OUTNAME_MAX_PART) {
                return 0;
            }
            part = 0;
            continue;
        }
        if (!safe_char(c) || (part == 0 && c == '.')) {
            return 0;
        }
        part++;
    }
    return 1;
}

struct outname_set *outname_set_create(void)
{
    struct outname_set *s = malloc(sizeof *s);
    if (s == NULL) {
        return NULL;
    }
    s->taken = json_object();
    s->next = json_object();
    if (s->taken == NULL || s->next == NULL) {
        outname_set_destroy(s);
        return NULL;
    }
    return s;
}

void outname_set_destroy(struct outname_set *s)
{
    if (s == NULL) {
        return;
    }
    json_decref(s->taken);
    json_decref(s->next);
    free(s);
}

/* The job's key: its own params first, then the batch's (jobs' params are merged so). */
static const json_t *param(const json_t *batch_params, const json_t *job_params, const char *k)
{
    const json_t *v = job_params != NULL ? json_object_get(job_params, k) : NULL;
    if (v == NULL && batch_params != NULL) {
        v = json_object_get(batch_params, k);
    }
    return v;
}

/* The file name (without extension) of variant V of STEM: STEM, or STEM-NAME. */
static void file_key(const char *stem, const json_t *variants, size_t v, char *out, size_t n)
{
    const char *name = json_string_value(json_object_get(json_array_get(variants, v), "name"));
    if (name == NULL) {
        snprintf(out, n, "%s", stem);
    } else {
        snprintf(out, n, "%s-%s", stem, name);
    }
}

int outname_claim(struct outname_set *s, const json_t *batch_params, const json_t *job_params,
                  const json_t *input, const char *upload_name, uint64_t index, char **out)
{
    *out = NULL;
    const char *output = json_string_value(param(batch_params, job_params, "output"));
    if (output == NULL || strcmp(output, "path") != 0) {
        return 0;
    }
    const json_t *variants = param(batch_params, job_params, "variants");
    size_t nv = json_is_array(variants) ? json_array_size(variants) : 0;
    const json_t *path = json_is_object(input) ? json_object_get(input, "path") : NULL;
    char base[OUTNAME_MAX + 1], stem[OUTNAME_MAX + 1], key[OUTNAME_MAX + 64];
    outname_stem(json_string_value(path), upload_name, index, base, sizeof base);
    /* Tries go on from where the last claim of this base stopped: a batch of n uploads of
     * one name costs n claims, not n * n tries. */
    json_int_t first = json_integer_value(json_object_get(s->next, base));
    uint64_t dup = first > 0 ? (uint64_t)first : 0;
    for (;; dup++) {
        if (dup == 0) {
            snprintf(stem, sizeof stem, "%s", base);
        } else {
            snprintf(stem, sizeof stem, "%.*s-%llu", OUTNAME_MAX_BASE, base,
                     (unsigned long long)dup);
        }
        int free_name = 1;
        for (size_t v = 0; v < (nv ? nv : 1) && free_name; v++) {
            file_key(stem, nv ? variants : NULL, v, key, sizeof key);
            free_name = json_object_get(s->taken, key) == NULL;
        }
        if (free_name) {
            break;
        }
    }
    for (size_t v = 0; v < (nv ? nv : 1); v++) {
        file_key(stem, nv ? variants : NULL, v, key, sizeof key);
        if (json_object_set_new(s->taken, key, json_true()) != 0) {
            return -1;
        }
    }
    if (json_object_set_new(s->next, base, json_integer((json_int_t)dup + 1)) != 0) {
        return -1;
    }
    *out = strdup(stem);
    return *out != NULL ? 0 : -1;
}
