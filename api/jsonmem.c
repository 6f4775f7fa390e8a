/* Counts jansson's failed allocations (see jsonmem.h). Nothing else: the allocations are
 * plain malloc and free. */
#include "jsonmem.h"

#include <jansson.h>
#include <stdlib.h>

/* Per thread: a parse and its check run on one thread. */
static _Thread_local unsigned long jsonmem_failed;

static void *jsonmem_malloc(size_t n)
{
    void *p = malloc(n);

    if (p == NULL) {
        jsonmem_failed++;
    }
    return p;
}

void jsonmem_install(void)
{
    json_set_alloc_funcs(jsonmem_malloc, free);
}

unsigned long jsonmem_failures(void)
{
    return jsonmem_failed;
}
