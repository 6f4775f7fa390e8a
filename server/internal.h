/* State shared by the files of server/: the server and one HTTP request, the fields
 * commented with the file that owns them. Private to this folder; each file's functions are
 * declared in its own header. */
#ifndef BATCHD_SERVER_INTERNAL_H
#define BATCHD_SERVER_INTERNAL_H

#include "../api/batch.h"
#include "../api/buf.h"
#include "../store/store.h"
#include "../workers/dispatch.h"
#include "config.h"
#include "loop.h"
#include "upload.h"
#include "writer.h"

#include <microhttpd.h>
#include <stdint.h>

struct server {
    struct config cfg;
    struct MHD_Daemon *mhd;
    struct dispatch *dispatch;
    struct store *store; /* SPEC §8's stored batches (server.c opens it; stored.c uses it) */
    struct loop *loop; /* server.c */
    int sigfd;
    struct loop_watch w_mhd, w_dispatch, w_signal; /* server.c */
    uint16_t port;
    int draining;
    int stop;
    uint64_t drain_deadline_ns;
    int streams; /* batch responses not yet finished */
    int resumed; /* a connection was resumed since the last MHD_run */
    struct request *stream_list; /* those responses, so a stop can cut them (stream.c) */
    struct conn *conn_list;      /* every open client connection (conn.c) */
    uint64_t conn_next_check_ns; /* the earliest connection deadline (UINT64_MAX: none) */
    int spare_fd;       /* held for accept() when fds run out with no connection (http.c) */
    int accept_starved; /* MHD said so (http.c's logger) */
    struct metrics *metrics;     /* observe.c */
    char *ops_json;
    size_t ops_json_len;
    struct auth *auth; /* --auth-token-file and --cors-origin (auth.c) */
    uint64_t upload_held; /* request body bytes reserved, all connections (body.c) */
    uint64_t request_seq;
    uint64_t id_salt;
};

/* The routes: http.c's table has a row for each. */
enum route {
    ROUTE_NONE,
    ROUTE_BATCHES,
    ROUTE_OPS,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_CONSOLE
};

struct request;
/* A route's handler (http.c's table): queues the answer, or returns MHD_YES to read on. */
typedef enum MHD_Result (*route_fn)(struct request *r);

/* Where a job's image bytes are in the upload's memfd (len 0: none). */
struct stream_blob {
    uint64_t off, len;
    const char *name; /* borrowed from the upload */
    char *out_name;   /* owned: the stem of its output "path" files (api/outname.h), or NULL */
};

struct request {
    struct server *srv;
    struct MHD_Connection *conn;
    struct conn *cn; /* its connection's deadlines and socket watch (conn.c); may be NULL */
    enum route route;
    const char *path; /* its route's path (static, http.c's table), or NULL: no route */
    char id[80];
    char method[16];
    uint64_t started_ns;
    int status;
    const char *url; /* as the client sent it; borrowed from libmicrohttpd, valid while the
                      * access handler runs */
    int tortured;    /* torture builds: it armed the allocation-failure counter */
    int deferred;    /* no body: served on the call after the headers' (http.c) */
    /* the upload */
    struct upload *upload;    /* batch requests only */
    uint64_t upload_reserved; /* this body's share of srv->upload_held */
    int body_watched; /* its connection watches the socket for the client's close (body.c) */
    int peer_closed;  /* the client closed while its body was still being read */
    /* the batch */
    struct batch_spec spec;
    const struct op *op;       /* the batch's op, or NULL when jobs name their own */
    const struct op **job_ops; /* per job, for the jobs form */
    struct stream_blob *blobs; /* per job, for image bytes in the upload's memfd */
    json_t *empty_upload;      /* the input of an empty file part: {"data": ""} */
    struct dispatch_batch *batch;
    char batch_id[STORE_ID_SIZE]; /* its id (SPEC §8), made when the batch is accepted */
    struct writer writer;
    /* the response stream */
    struct buf out;
    size_t out_off;
    int suspended;
    int done;        /* the summary is in out */
    int client_gone; /* the client hung up: end the stream with an error */
    uint64_t bytes_out;
    struct request *stream_prev, *stream_next; /* in srv->stream_list while streaming */
};

#endif
