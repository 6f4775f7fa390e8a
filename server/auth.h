/* Access control for deployments that need it: an optional bearer token (--auth-token-file)
 * and CORS for browser clients (--cors-origin). It decides; the router applies the answer
 * to its responses. It knows nothing of libmicrohttpd. Health endpoints (/healthz,
 * /readyz) and CORS preflights stay open, so probes and browsers work without the token. */
#ifndef BATCHD_SERVER_AUTH_H
#define BATCHD_SERVER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_MAX_TOKENS 8   /* one per line, so a token can be rotated without downtime */
#define AUTH_MAX_TOKEN 4096 /* bytes of one token */

struct auth;

/* A new policy (free with auth_destroy), or NULL with ERR set. TOKEN_FILE (may be NULL or
 * "": no token required) holds one or more tokens, one per line (LF, CRLF or CR line
 * ends); blank lines and surrounding whitespace are ignored. A file with no token is an
 * error (a typo must not open the service), and so is a token holding a control byte such
 * as a NUL (no HTTP header can carry it). CORS_ORIGINS (may be NULL or "": no CORS
 * headers) is "*" or a comma-separated list of exact origins
 * ("https://a.example,https://b.example"). */
struct auth *auth_create(const char *token_file, const char *cors_origins, char *err,
                         size_t errlen);

/* Frees A. auth_destroy(NULL) is a no-op. */
void auth_destroy(struct auth *a);

/* 1 if a request for PATH with METHOD must carry the token: a token is configured, the
 * path is not a health endpoint nor the web console's static files ("/", "/web/..."), and
 * the request is not a CORS preflight (OPTIONS). */
int auth_required(const struct auth *a, const char *method, const char *path);

/* Checks an Authorization header value (may be NULL) against the tokens: "Bearer TOKEN",
 * the scheme case-insensitive. The comparison takes the same time wherever the first
 * differing byte is. Returns 0 if it matches (or no token is configured), else
 * -BATCHD_E_UNAUTHORIZED. */
int auth_check(const struct auth *a, const char *authorization);

/* The owner of the batches a request makes or sees (SPEC §8: with tokens, a batch belongs
 * to the token that submitted it): the SHA-256 of its bearer token into OUT, so that no
 * token is ever stored. Returns AUTH_OWNER_SIZE, or 0 when no token is configured (every
 * batch is then everyone's). Call after auth_check accepted AUTHORIZATION. */
#define AUTH_OWNER_SIZE 32
size_t auth_owner(const struct auth *a, const char *authorization, uint8_t out[AUTH_OWNER_SIZE]);

/* The Access-Control-Allow-Origin value for a request's Origin header (may be NULL):
 * ORIGIN itself when it is allowed, "*" for a wildcard policy, or NULL when no CORS header
 * should be sent. Returns a borrowed pointer (into A or ORIGIN). */
const char *auth_cors_allow_origin(const struct auth *a, const char *origin);

/* The fixed CORS headers: methods and request headers a preflight may ask for, headers a
 * browser script may read, and how long a preflight may be cached. */
#define AUTH_CORS_ALLOW_METHODS "GET, POST, DELETE, OPTIONS"
#define AUTH_CORS_ALLOW_HEADERS                                                                    \
    "Authorization, Content-Type, Accept, X-Request-Id, Prefer, Idempotency-Key, Last-Event-ID"
#define AUTH_CORS_EXPOSE_HEADERS                                                                   \
    "X-Request-Id, Retry-After, Content-Location, Location, Preference-Applied"
#define AUTH_CORS_MAX_AGE "600"

#endif
