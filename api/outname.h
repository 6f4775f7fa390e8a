/* The names of the files an image job writes with output "path" (SPEC §6; the rule is in
 * README, "Behaviour where the contract is silent"): one stem per job, from its input (a
 * {"path"} input keeps its folders), made unique within its batch by the server, and
 * checked again by the worker that writes the files. Nothing here touches the file system. */
#ifndef BATCHD_API_OUTNAME_H
#define BATCHD_API_OUTNAME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of a stem, the "-N" of a duplicate included; each folder or name part is at most
 * OUTNAME_MAX_PART bytes. */
#define OUTNAME_MAX 200
#define OUTNAME_MAX_PART 100

/* Writes into OUT (N bytes, N > OUTNAME_MAX) the stem of a job's output files: from PATH
 * (a {"path"} input: its relative path, folders kept) or else NAME (an upload's file name:
 * its last part only), without the extension; the decimal INDEX when neither gives a name.
 * Parts keep A-Z a-z 0-9 . _ - (any other byte becomes '_'), a leading '.' becomes '_',
 * empty, "." and ".." parts are dropped. */
void outname_stem(const char *path, const char *name, uint64_t index, char *out, size_t n);

/* 1 when STEM has the shape outname_stem makes (relative, non-empty parts of the safe
 * characters, none starting with '.', at most OUTNAME_MAX bytes), else 0. The worker
 * refuses any other name it is sent. */
int outname_stem_ok(const char *stem);

/* The output names claimed so far in one batch. */
struct outname_set;

/* New, empty; free with outname_set_destroy. NULL when out of memory. */
struct outname_set *outname_set_create(void);

/* Frees S; NULL is a no-op. */
void outname_set_destroy(struct outname_set *s);

/* The stem, unique in S, of job INDEX's output files, or NULL in *OUT when the job writes
 * none. BATCH_PARAMS and JOB_PARAMS (either may be NULL; the job's keys win) say whether
 * it does (output "path") and its variants (each writes STEM-NAME.ext, otherwise STEM.ext);
 * INPUT (a {"path"} object, or NULL) and UPLOAD_NAME (or NULL) give the stem (see
 * outname_stem). The first of STEM, STEM-1, STEM-2, ... none of whose files an earlier
 * claim in S took is claimed, so the same batch always gets the same names. *OUT is new
 * (free it). Returns 0, or -1 when out of memory. */
int outname_claim(struct outname_set *s, const json_t *batch_params, const json_t *job_params,
                  const json_t *input, const char *upload_name, uint64_t index, char **out);

#endif
