/* Small helpers every file of the SQLite store uses: clocks, error messages, SQLite codes
 * as store codes, statement binding and stepping, batch handles and queued writes freed.
 * Nothing here calls into the other sq_*.c files. */
#include "sq_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int64_t sq_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t sq_now(const struct sq_store *sq)
{
    if (sq->cfg.now_ms != NULL) {
        return sq->cfg.now_ms();
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sq_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sq_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* SQLite's primary result codes as store codes; any other failure is STORE_E_IO. */
/* clang-format off */
static const struct { int sqlite; int store; } sq_codes[] = {
    {SQLITE_OK, STORE_OK},
    {SQLITE_DONE, STORE_OK},
    {SQLITE_ROW, STORE_OK},
    {SQLITE_FULL, STORE_E_FULL},
    {SQLITE_NOMEM, STORE_E_NOMEM},
    {SQLITE_CORRUPT, STORE_E_CORRUPT},
    {SQLITE_NOTADB, STORE_E_CORRUPT},
    {SQLITE_READONLY, STORE_E_UNWRITABLE},
    {SQLITE_CANTOPEN, STORE_E_UNWRITABLE},
    {SQLITE_PERM, STORE_E_UNWRITABLE},
};
/* clang-format on */

int sq_rc(int rc)
{
    for (size_t i = 0; i < sizeof sq_codes / sizeof sq_codes[0]; i++) {
        if (sq_codes[i].sqlite == (rc & 0xff)) {
            return sq_codes[i].store;
        }
    }
    return STORE_E_IO;
}

const uint8_t sq_empty[1];

int sq_bind_owner(sqlite3_stmt *s, int col, const uint8_t *owner, size_t len)
{
    return sqlite3_bind_blob(s, col, len > 0 ? (const void *)owner : (const void *)sq_empty,
                             (int)len, SQLITE_STATIC);
}

int sq_step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

void sq_finish(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

void sq_copy_text(char *dst, size_t cap, const unsigned char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? (const char *)src : "");
}

struct sq_batch *sq_batch_new(struct sq_store *sq, const char *id, int64_t bno, uint32_t njobs)
{
    struct sq_batch *sb = calloc(1, sizeof *sb);
    if (sb == NULL) {
        return NULL;
    }
    sb->bits = calloc((size_t)njobs / 8 + 1, 1);
    if (sb->bits == NULL) {
        free(sb);
        return NULL;
    }
    sb->base.st = &sq->base;
    sb->sq = sq;
    snprintf(sb->id, sizeof sb->id, "%s", id);
    sb->bno = bno;
    sb->njobs = njobs;
    return sb;
}

void sq_batch_free(struct sq_batch *sb)
{
    if (sb != NULL) {
        free(sb->bits);
        free(sb);
    }
}

void sq_wop_free(struct wop *op)
{
    if (op != NULL) {
        free(op->inputs);
        free(op->key);
        if (op->kind == OP_CREATE && op->made != NULL) {
            sq_batch_free(op->made);
        }
        free(op);
    }
}
