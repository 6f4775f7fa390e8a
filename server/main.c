/* batchd: the entry point. The same binary is the server and, run with --worker, a worker
 * process (the pool posix_spawns /proc/self/exe). */
#include "../api/jsonmem.h"
#include "../workers/ops/module.h"
#include "../workers/worker.h"
#include "config.h"
#include "healthcheck.h"
#include "internal.h"
#include "log.h"
#include "server.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    jsonmem_install(); /* before any JSON value: a parse can then tell a lost allocation */
    if (argc >= 2 && strcmp(argv[1], "--worker") == 0) {
        return worker_main(3, 4, argc >= 3 ? strtol(argv[2], NULL, 10) : 0);
    }
    static struct server s;
    s.sigfd = -1;
    if (argc >= 2 && strcmp(argv[1], "--healthcheck") == 0) {
        /* The image's HEALTHCHECK: the same flags and environment as the server, so it
         * probes the port the server listens on. Exit 0 = healthy. */
        argv[1] = argv[0];
        if (config_load(&s.cfg, argc - 1, argv + 1, stdout, stderr) != 0) {
            return 2;
        }
        char err[256];
        if (healthcheck_probe(s.cfg.listen, 3000, err, sizeof err) != 0) {
            fprintf(stderr, "batchd: unhealthy: %s\n", err);
            return 1;
        }
        return 0;
    }
    int rc = config_load(&s.cfg, argc, argv, stdout, stderr);
    if (rc != 0) {
        return rc > 0 ? 0 : 2;
    }
    /* Modules register their ops before anything reads the op table (the workers get the
     * same list in their CONFIG frame and load it in the same order). */
    char why[1024];
    if (module_load_all(s.cfg.modules, why, sizeof why) != 0) {
        fprintf(stderr, "batchd: %s\n", why);
        return 2;
    }
    log_set_format(strcmp(s.cfg.log_format, "json") == 0 ? LOG_JSON : LOG_LOGFMT);
    log_set_level((enum log_level)log_level_parse(s.cfg.log_level));
    /* Buffers of 1 MiB and more get mappings of their own, which free() gives back: left
     * to itself, glibc raises the threshold to the size of each big block freed (up to
     * 32 MiB) and then keeps such blocks in its heap, so that six clients not reading a
     * 57 MB result left hundreds of MB held after they had gone (issue 8). */
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    int status = server_run(&s);
    server_cleanup(&s);
    return status;
}
