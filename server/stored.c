/* Stored batches on the server side (SPEC §8). */
#include "stored.h"

#include "internal.h"

void stored_on_progress(void *arg, const char *id, uint64_t committed_seq)
{
    (void)arg;
    (void)id;
    (void)committed_seq;
}

int stored_resume(struct server *s)
{
    (void)s;
    return 0;
}

void stored_stop_all(struct server *s)
{
    (void)s;
}

int stored_running(const struct server *s)
{
    (void)s;
    return 0;
}
