/* C modules (SPEC §10): the loader and the runner of module ops. The API a module is built
 * against is batchd_module.h; this header is batchd's own side of it. */
#ifndef BATCHD_WORKERS_OPS_MODULE_H
#define BATCHD_WORKERS_OPS_MODULE_H

#include "ops.h"

#include <stddef.h>

/* Loads each shared object of LIST (paths separated by ':'; NULL or "" = none), checks its
 * ABI version and struct sizes, then each op it declares, and registers its ops at the end
 * of the op table. Returns 0, or -1 with ERR naming the module and what is wrong (the ops of
 * the modules before it stay registered: the caller stops). */
int module_load_all(const char *list, char *err, size_t errlen);

#endif
