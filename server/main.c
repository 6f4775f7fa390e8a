/* batchd: the entry point. The same binary is the server and, run with --worker, a worker
 * process (the pool posix_spawns /proc/self/exe). */
#include "../workers/worker.h"
#include "config.h"
#include "internal.h"
#include "log.h"
#include "loop.h"

#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--worker") == 0) {
        return worker_main(3, 4, argc >= 3 ? strtol(argv[2], NULL, 10) : 0);
    }
    static struct server s;
    s.epfd = -1;
    s.sigfd = -1;
    int rc = config_load(&s.cfg, argc, argv, stdout, stderr);
    if (rc != 0) {
        return rc > 0 ? 0 : 2;
    }
    log_set_format(strcmp(s.cfg.log_format, "json") == 0 ? LOG_JSON : LOG_LOGFMT);
    int status = loop_run(&s);
    loop_cleanup(&s);
    return status;
}
