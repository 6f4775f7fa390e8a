/* The web console (SPEC §11): GET / and GET /web/NAME serve the files of web/, built into
 * the binary at compile time (cmake/embed.cmake writes the table below), and GET
 * /web/server.json tells the page what this server asks of it (a token or not). */
#ifndef BATCHD_SERVER_CONSOLE_H
#define BATCHD_SERVER_CONSOLE_H

#include <microhttpd.h>
#include <stddef.h>

struct request;

struct console_asset {
    const char *name;          /* relative to web/: "index.html", "batchd.js" */
    const unsigned char *data; /* LEN bytes (and a NUL after them) */
    size_t len;
    const char *etag; /* quoted, as the ETag header carries it */
};

/* The embedded files (generated: build/console_assets.c). */
extern const struct console_asset console_assets[];
extern const size_t console_nassets;

/* The console route's handler (http.c's table): the page for "/", a file of web/ for
 * "/web/NAME" (r->url), 404 for any other name. */
enum MHD_Result console_serve(struct request *r);

#endif
