/* The configuration (server/config.c), its upload part: --max-upload-memory and its environment
 * twin, and its automatic default from the machine's memory. */
#include "../../server/config.h"
#include "../check.h"

#include <stdlib.h>
#include <unistd.h>

static int load(struct config *cfg, int argc, char **argv)
{
    FILE *null = fopen("/dev/null", "w");
    int rc = config_load(cfg, argc, argv, null, null);
    fclose(null);
    return rc;
}

int main(void)
{
    static struct config cfg;
    unsetenv("BATCHD_MAX_UPLOAD_MEMORY");
    char *none[] = {"batchd", NULL};
    CHECK_EQ_INT(load(&cfg, 1, none), 0);
    uint64_t autov = config_upload_memory_auto();
    CHECK_EQ_INT(cfg.max_upload_memory, autov);
    CHECK(autov >= 64u << 20);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t phys = (uint64_t)pages * (uint64_t)page;
    CHECK(autov <= phys / 4 || autov == 64u << 20);

    char *flag[] = {"batchd", "--max-upload-memory", "8MiB", NULL};
    CHECK_EQ_INT(load(&cfg, 3, flag), 0);
    CHECK_EQ_INT(cfg.max_upload_memory, 8u << 20);

    setenv("BATCHD_MAX_UPLOAD_MEMORY", "1GiB", 1);
    CHECK_EQ_INT(load(&cfg, 1, none), 0);
    CHECK_EQ_INT(cfg.max_upload_memory, 1u << 30);
    CHECK_EQ_INT(load(&cfg, 3, flag), 0); /* the flag wins */
    CHECK_EQ_INT(cfg.max_upload_memory, 8u << 20);
    unsetenv("BATCHD_MAX_UPLOAD_MEMORY");

    char *zero[] = {"batchd", "--max-upload-memory=0", NULL};
    CHECK_EQ_INT(load(&cfg, 2, zero), -1);
    char *bad[] = {"batchd", "--max-upload-memory", "lots", NULL};
    CHECK_EQ_INT(load(&cfg, 3, bad), -1);
    return check_report("config");
}
