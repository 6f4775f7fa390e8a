/* Bearer-token and CORS policy: loads the token file once at start, answers "may this
 * request in" and "which Allow-Origin" per request. No HTTP library here. */
#include "auth.h"

#include "../api/errors.h"
#include "../api/sha256.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CORS_MAX_ORIGINS 32

struct auth {
    char *tokens[AUTH_MAX_TOKENS];
    size_t token_len[AUTH_MAX_TOKENS];
    int ntokens;
    int cors_any;
    char *cors_origins[CORS_MAX_ORIGINS];
    int norigins;
};

void auth_destroy(struct auth *a)
{
    if (a == NULL) {
        return;
    }
    for (int i = 0; i < a->ntokens; i++) {
        /* The token is a secret: do not leave it in freed memory. */
        explicit_bzero(a->tokens[i], a->token_len[i]);
        free(a->tokens[i]);
    }
    for (int i = 0; i < a->norigins; i++) {
        free(a->cors_origins[i]);
    }
    free(a);
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* The end of the line that starts at TEXT (LEN bytes left): the offset of its first line
 * break, or LEN. *NEXT gets the offset of the next line. A line ends with LF, CRLF or a
 * lone CR, so files written on any system read the same. */
static size_t line_end(const char *text, size_t len, size_t *next)
{
    size_t i = 0;

    while (i < len && text[i] != '\n' && text[i] != '\r') {
        i++;
    }
    *next = i;
    if (i < len) {
        *next = i + (text[i] == '\r' && i + 1 < len && text[i + 1] == '\n' ? 2 : 1);
    }
    return i;
}

/* Splits TEXT (LEN bytes, not NUL-terminated, may hold any byte) into lines, trims each
 * and stores the non-empty ones as tokens with their explicit length. A token holding a
 * control byte (a NUL, say) is refused: an HTTP header value cannot carry one, so such a
 * token could never match, and a C-string copy of it would be shorter than its length. */
static int load_tokens(struct auth *a, const char *text, size_t len, char *err, size_t errlen)
{
    size_t pos = 0;
    int lineno = 0;

    while (pos < len) {
        const char *line = text + pos;
        size_t next = 0;
        size_t n = line_end(line, len - pos, &next);
        size_t start = 0, end = n;
        pos += next;
        lineno++;
        while (start < end && is_space(line[start])) {
            start++;
        }
        while (end > start && is_space(line[end - 1])) {
            end--;
        }
        if (start == end) {
            continue;
        }
        for (size_t i = start; i < end; i++) {
            uint8_t c = (uint8_t)line[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                snprintf(err, errlen,
                         "auth token file: line %d holds a control byte (0x%02x), which a "
                         "bearer token cannot carry",
                         lineno, c);
                return -1;
            }
        }
        if (end - start > AUTH_MAX_TOKEN) {
            snprintf(err, errlen, "auth token longer than %d bytes", AUTH_MAX_TOKEN);
            return -1;
        }
        if (a->ntokens == AUTH_MAX_TOKENS) {
            snprintf(err, errlen, "auth token file: more than %d tokens", AUTH_MAX_TOKENS);
            return -1;
        }
        a->tokens[a->ntokens] = malloc(end - start + 1);
        if (a->tokens[a->ntokens] == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(a->tokens[a->ntokens], line + start, end - start);
        a->tokens[a->ntokens][end - start] = '\0';
        a->token_len[a->ntokens] = end - start;
        a->ntokens++;
    }
    if (a->ntokens == 0) {
        snprintf(err, errlen, "auth token file holds no token");
        return -1;
    }
    return 0;
}

static int read_token_file(struct auth *a, const char *path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = NULL;
    int rc = -1;

    f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errlen, "auth token file %s: %s", path, strerror(errno));
        goto out;
    }
    text = malloc(AUTH_MAX_TOKENS * (AUTH_MAX_TOKEN + 2) + 1);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    len = fread(text, 1, AUTH_MAX_TOKENS * (AUTH_MAX_TOKEN + 2) + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "auth token file %s: read error", path);
        goto out;
    }
    if (len > AUTH_MAX_TOKENS * (AUTH_MAX_TOKEN + 2)) {
        snprintf(err, errlen, "auth token file %s is too large", path);
        goto out;
    }
    rc = load_tokens(a, text, len, err, errlen);
out:
    if (text != NULL) {
        explicit_bzero(text, len);
        free(text);
    }
    if (f != NULL) {
        fclose(f);
    }
    return rc;
}

static int parse_origins(struct auth *a, const char *list, char *err, size_t errlen)
{
    const char *p = list;

    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        size_t start = 0, end = n;
        while (start < end && is_space(p[start])) {
            start++;
        }
        while (end > start && is_space(p[end - 1])) {
            end--;
        }
        if (end - start == 1 && p[start] == '*') {
            a->cors_any = 1;
        } else if (end > start) {
            if (a->norigins == CORS_MAX_ORIGINS) {
                snprintf(err, errlen, "--cors-origin: more than %d origins", CORS_MAX_ORIGINS);
                return -1;
            }
            a->cors_origins[a->norigins] = strndup(p + start, end - start);
            if (a->cors_origins[a->norigins] == NULL) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            a->norigins++;
        }
        p += n + (comma ? 1 : 0);
    }
    return 0;
}

struct auth *auth_create(const char *token_file, const char *cors_origins, char *err, size_t errlen)
{
    struct auth *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (token_file != NULL && token_file[0] != '\0' &&
        read_token_file(a, token_file, err, errlen) != 0) {
        auth_destroy(a);
        return NULL;
    }
    if (cors_origins != NULL && parse_origins(a, cors_origins, err, errlen) != 0) {
        auth_destroy(a);
        return NULL;
    }
    return a;
}

int auth_required(const struct auth *a, const char *method, const char *path)
{
    if (a == NULL || a->ntokens == 0) {
        return 0;
    }
    if (method != NULL && strcmp(method, "OPTIONS") == 0) {
        return 0;
    }
    if (path != NULL && (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0)) {
        return 0;
    }
    /* The web console's static files: the page asks for the token itself. */
    if (path != NULL && (strcmp(path, "/") == 0 || strncmp(path, "/web/", 5) == 0)) {
        return 0;
    }
    return 1;
}

/* Compares GIVEN (GLEN bytes) with the secret WANT (WLEN bytes) in time that depends on
 * WLEN only: every byte of WANT is read, whatever GIVEN holds. Returns 1 when equal. */
static int equal_ct(const char *given, size_t glen, const char *want, size_t wlen)
{
    volatile uint8_t diff = (uint8_t)(glen != wlen);

    for (size_t i = 0; i < wlen; i++) {
        uint8_t g = i < glen ? (uint8_t)given[i] : 0;
        diff |= (uint8_t)(g ^ (uint8_t)want[i]);
    }
    return diff == 0;
}

/* The token of an Authorization value "Bearer TOKEN" (*LEN bytes, surrounding blanks
 * dropped), or NULL. */
static const char *bearer_token(const char *authorization, size_t *len)
{
    if (authorization == NULL || strncasecmp(authorization, "Bearer", 6) != 0 ||
        (authorization[6] != ' ' && authorization[6] != '\t')) {
        return NULL;
    }
    const char *tok = authorization + 6;
    while (*tok == ' ' || *tok == '\t') {
        tok++;
    }
    *len = strlen(tok);
    while (*len > 0 && is_space(tok[*len - 1])) {
        (*len)--;
    }
    return *len > 0 ? tok : NULL;
}

int auth_check(const struct auth *a, const char *authorization)
{
    size_t len = 0;
    int ok = 0;

    if (a == NULL || a->ntokens == 0) {
        return 0;
    }
    const char *tok = bearer_token(authorization, &len);
    if (tok == NULL) {
        return -BATCHD_E_UNAUTHORIZED;
    }
    /* Check every token, not only until the first match, so that timing does not tell
     * which one matched either. */
    for (int i = 0; i < a->ntokens; i++) {
        ok |= equal_ct(tok, len, a->tokens[i], a->token_len[i]);
    }
    return ok ? 0 : -BATCHD_E_UNAUTHORIZED;
}

size_t auth_owner(const struct auth *a, const char *authorization, uint8_t out[AUTH_OWNER_SIZE])
{
    size_t len = 0;
    const char *tok = a != NULL && a->ntokens > 0 ? bearer_token(authorization, &len) : NULL;
    if (tok == NULL) {
        return 0;
    }
    sha256(tok, len, out);
    return AUTH_OWNER_SIZE;
}

const char *auth_cors_allow_origin(const struct auth *a, const char *origin)
{
    if (a == NULL || (a->norigins == 0 && !a->cors_any)) {
        return NULL;
    }
    if (origin == NULL || origin[0] == '\0') {
        return a->cors_any ? "*" : NULL;
    }
    for (int i = 0; i < a->norigins; i++) {
        if (strcmp(origin, a->cors_origins[i]) == 0) {
            return origin;
        }
    }
    return a->cors_any ? "*" : NULL;
}
