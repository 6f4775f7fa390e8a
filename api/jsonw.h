/* A small JSON writer for the hot paths (results, summaries): appends JSON text to a
 * struct buf without building a tree. Floats are written in the shortest form that reads
 * back as the same double (jansson prints %.17g: 0.1 -> 0.10000000000000001). */
#ifndef BATCHD_API_JSONW_H
#define BATCHD_API_JSONW_H

#include "buf.h"

#include <stdint.h>

/* Writes D in the shortest decimal form that strtod reads back as D (the closest such when
 * several), laid out as Python's repr: always with a '.' or an exponent so that it reads back
 * as a float ("2.0", "0.1", "1000000000.0", "1e+16", "1.5e-07", "-0.0"). NaN and infinities
 * have no JSON form: returns -1 and writes nothing. Otherwise as buf_add. Assumes the C
 * locale for numbers (batchd never calls setlocale). */
int jsonw_double(struct buf *b, double d);

/* Formats D as jsonw_double does into OUT (at least 32 bytes); returns the length, or -1
 * for NaN and infinities. */
int jsonw_format_double(char out[32], double d);

/* The same, by the reference path only ("%.*e" and strtod): for tests of the fast path. */
int jsonw_format_double_ref(char out[32], double d);

/* Writes an integer. Returns as buf_add. */
int jsonw_int(struct buf *b, int64_t v);

/* Writes S (LEN bytes of UTF-8) as a quoted JSON string with escapes. Returns as buf_add. */
int jsonw_string(struct buf *b, const char *s, size_t len);

/* Writes a NUL-terminated string as jsonw_string. */
int jsonw_cstr(struct buf *b, const char *s);

/* Writes the NDJSON line of a successful result, {"index":INDEX,"result":RESULT}\n, RESULT
 * being LEN bytes of JSON text. The one writer of that line: the worker (block records of
 * tiny results) and the server (a single result) both call it. Returns as buf_add. */
int jsonw_result_line(struct buf *b, uint64_t index, const char *result, size_t len);

/* Writes {"code":...,"message":...} for an error (message may be NULL: the code's default). */
int jsonw_error_object(struct buf *b, int err, const char *message, const char *path);

/* Writes SPEC §8's progress line {"progress":{"done","total","ok","failed","rate_per_s",
 * "eta_ms"}} (no newline; eta_ms null while no rate is known). Returns as buf_add. */
int jsonw_progress(struct buf *b, uint64_t done, uint64_t total, uint64_t ok, uint64_t failed,
                   double rate_per_s);

#endif
