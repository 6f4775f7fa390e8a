/* Expansion of BATCHD_ERRNO_MAP into lookup tables. */
#include "errors.h"

#include <string.h>

struct err_row {
    const char *name;
    const char *message;
    int status;
    int per_job;
};

static const struct err_row err_rows[BATCHD_E_COUNT] = {
    [BATCHD_OK] = {"ok", "ok", 200, 0},
#define XX(e, n, m, s, p) [BATCHD_E_##e] = {n, m, s, p},
    BATCHD_ERRNO_MAP(XX)
#undef XX
};

static const struct err_row *err_row_of(int err)
{
    if (err < 0) {
        err = -err;
    }
    if (err <= 0 || err >= BATCHD_E_COUNT) {
        return &err_rows[BATCHD_E_INTERNAL];
    }
    return &err_rows[err];
}

const char *batchd_err_name(int err)
{
    return err_row_of(err)->name;
}

const char *batchd_err_message(int err)
{
    return err_row_of(err)->message;
}

int batchd_err_http_status(int err)
{
    return err_row_of(err)->status;
}

int batchd_err_is_per_job(int err)
{
    return err_row_of(err)->per_job;
}

int batchd_err_from_name(const char *name)
{
    int found = 0;
    for (int e = 1; e < BATCHD_E_COUNT; e++) {
        if (strcmp(err_rows[e].name, name) == 0) {
            if (err_rows[e].per_job) {
                return e;
            }
            found = e;
        }
    }
    return found;
}
