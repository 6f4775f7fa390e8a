/* `batchd --healthcheck`: the container's HEALTHCHECK probe. It asks the server that the
 * same configuration describes (--listen / BATCHD_LISTEN) for GET /healthz on loopback, so
 * the image needs no curl or wget. It starts no workers and binds nothing. */
#ifndef BATCHD_SERVER_HEALTHCHECK_H
#define BATCHD_SERVER_HEALTHCHECK_H

#include <stddef.h>

/* Probes the server listening on LISTEN ("ADDR:PORT", "[V6]:PORT" or ":PORT"; a wildcard
 * address is probed on loopback). Waits at most TIMEOUT_MS in all. Returns 0 when the
 * answer's status is 200, else -1 with ERR set (refused, timed out, another status). */
int healthcheck_probe(const char *listen, int timeout_ms, char *err, size_t errlen);

#endif
