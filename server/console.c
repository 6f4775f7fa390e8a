/* The web console's route: the page at GET /, its files at GET /web/NAME (embedded at
 * compile time, see console.h), and GET /web/server.json, the one answer made at run time.
 * Static files are served without a token even under --auth-token-file (they hold no data;
 * the page asks for the token and sends it on its API calls). Each file carries an ETag and
 * "Cache-Control: no-cache", so a browser revalidates and an upgrade is seen at once, and a
 * strict Content-Security-Policy: the page may load and call nothing but this server. */
#include "console.h"

#include "../api/errors.h"
#include "auth.h"
#include "internal.h"
#include "reply.h"

#include <stdio.h>
#include <string.h>

#define CONSOLE_PREFIX "/web/"

/* Scripts, styles, fonts and connections: this origin only; images also from the data: and
 * blob: URLs the page makes of image results. No inline script or style, no framing. */
#define CONSOLE_CSP                                                                                \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "        \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "                 \
    "frame-ancestors 'none'"

struct console_type {
    const char *ext;
    const char *ctype;
};

static const struct console_type console_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".json", "application/json"},
};

/* The asset called NAME, or NULL. */
static const struct console_asset *console_find(const char *name)
{
    for (size_t i = 0; i < console_nassets; i++) {
        if (strcmp(console_assets[i].name, name) == 0) {
            return &console_assets[i];
        }
    }
    return NULL;
}

static const char *console_ctype(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof console_types / sizeof console_types[0]; i++) {
        size_t e = strlen(console_types[i].ext);
        if (n > e && strcmp(name + n - e, console_types[i].ext) == 0) {
            return console_types[i].ctype;
        }
    }
    return "application/octet-stream";
}

/* 1 if the If-None-Match header VALUE (may be NULL) names ETAG or is "*". */
static int console_etag_matches(const char *value, const char *etag)
{
    if (value == NULL) {
        return 0;
    }
    if (strcmp(value, "*") == 0) {
        return 1;
    }
    size_t n = strlen(etag);
    for (const char *p = strstr(value, etag); p != NULL; p = strstr(p + 1, etag)) {
        /* a whole list element: after the start, a comma, a space or a weak "W/" */
        int starts = p == value || p[-1] == ',' || p[-1] == ' ' || p[-1] == '/';
        int ends = p[n] == '\0' || p[n] == ',' || p[n] == ' ';
        if (starts && ends) {
            return 1;
        }
    }
    return 0;
}

static enum MHD_Result console_queue(struct request *r, int status, struct MHD_Response *resp,
                                     size_t len)
{
    enum MHD_Result rc = MHD_NO;
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Security-Policy", CONSOLE_CSP);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    reply_add_common_headers(r, resp);
    r->status = status;
    r->bytes_out += len;
    rc = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* GET /web/server.json: what the page must know before its first API call, so that it never
 * has to provoke a 401 to learn that a token is needed. */
static enum MHD_Result console_server_json(struct request *r)
{
    char body[128];
    int need = auth_required(r->srv->auth, "GET", "/v1/ops");
    int n = snprintf(body, sizeof body, "{\"auth\":%s}\n", need ? "\"bearer\"" : "null");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    if (resp != NULL) {
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    }
    return console_queue(r, 200, resp, (size_t)n);
}

enum MHD_Result console_serve(struct request *r)
{
    const char *url = r->url;
    const char *name = NULL;
    if (strcmp(url, "/") == 0 || strcmp(url, CONSOLE_PREFIX) == 0) {
        name = "index.html";
    } else if (strncmp(url, CONSOLE_PREFIX, strlen(CONSOLE_PREFIX)) == 0) {
        name = url + strlen(CONSOLE_PREFIX);
    }
    if (name != NULL && strcmp(name, "server.json") == 0) {
        return console_server_json(r);
    }
    const struct console_asset *a = name != NULL ? console_find(name) : NULL;
    if (a == NULL) {
        return reply_error(r, -BATCHD_E_NOT_FOUND_ROUTE, NULL, NULL);
    }
    const char *inm = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "If-None-Match");
    int fresh = console_etag_matches(inm, a->etag);
    struct MHD_Response *resp =
        fresh ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
              : MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (resp != NULL) {
        if (!fresh) {
            MHD_add_response_header(resp, "Content-Type", console_ctype(a->name));
        }
        MHD_add_response_header(resp, "ETag", a->etag);
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
    }
    return console_queue(r, fresh ? 304 : 200, resp, fresh ? 0 : a->len);
}
