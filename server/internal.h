/* State shared by the files of server/ (http.c, stream.c, loop.c): the server and one HTTP
 * request. Private to this folder. */
#ifndef BATCHD_SERVER_INTERNAL_H
#define BATCHD_SERVER_INTERNAL_H

#include "../api/batch.h"
#include "../api/buf.h"
#include "../workers/dispatch.h"
#include "config.h"
#include "upload.h"
#include "writer.h"

#include <microhttpd.h>
#include <stdint.h>

/* What an epoll event's data.ptr points at: every such struct starts with this. */
enum loop_kind { LOOP_MHD, LOOP_DISPATCH, LOOP_SIGNAL, LOOP_REQUEST, LOOP_BODY };
struct loop_tag {
    enum loop_kind kind;
};

struct server {
    struct config cfg;
    struct MHD_Daemon *mhd;
    struct dispatch *dispatch;
    int epfd;
    int sigfd;
    struct loop_tag tag_mhd, tag_dispatch, tag_signal;
    uint16_t port;
    int draining;
    int stop;
    uint64_t drain_deadline_ns;
    int streams; /* batch responses not yet finished */
    int resumed; /* a connection was resumed since the last MHD_run */
    struct request *stream_list; /* those responses, so a stop can cut them (stream.c) */
    struct metrics *metrics;     /* observe.c */
    char *ops_json;
    size_t ops_json_len;
    struct auth *auth; /* --auth-token-file and --cors-origin (auth.c) */
    uint64_t upload_held; /* request body bytes reserved, all connections (http.c) */
    uint64_t request_seq;
    uint64_t id_salt;
};

enum route { ROUTE_NONE, ROUTE_BATCHES, ROUTE_OPS, ROUTE_HEALTHZ, ROUTE_READYZ, ROUTE_METRICS };

/* Where a job's image bytes are in the upload's memfd (len 0: none). */
struct stream_blob {
    uint64_t off, len;
    const char *name; /* borrowed from the upload */
};

struct request {
    struct loop_tag tag; /* LOOP_REQUEST: the client socket, watched while suspended */
    struct server *srv;
    struct MHD_Connection *conn;
    enum route route;
    char id[80];
    char method[16];
    uint64_t started_ns;
    int status;
    /* the upload */
    struct upload *upload;    /* batch requests only */
    uint64_t upload_reserved; /* this body's share of srv->upload_held */
    struct loop_tag body_tag; /* LOOP_BODY: the client socket, watched while the body comes */
    int body_watched;
    int peer_closed; /* the client closed while its body was still being read */
    /* the batch */
    struct batch_spec spec;
    const struct op *op;       /* the batch's op, or NULL when jobs name their own */
    const struct op **job_ops; /* per job, for the jobs form */
    struct stream_blob *blobs; /* per job, for image bytes in the upload's memfd */
    json_t *empty_upload;      /* the input of an empty file part: {"data": ""} */
    struct dispatch_batch *batch;
    struct writer writer;
    /* the response stream */
    struct buf out;
    size_t out_off;
    int suspended;
    int fd_watched;
    int fd;
    int done;        /* the summary is in out */
    int client_gone; /* the client hung up: end the stream with an error */
    uint64_t bytes_out;
    struct request *stream_prev, *stream_next; /* in srv->stream_list while streaming */
};

/* http.c */
int http_start(struct server *s);
void http_stop(struct server *s);
/* Queues a JSON error response for ERR (status from the error list) with MESSAGE and PATH. */
enum MHD_Result http_reply_error(struct request *r, int err, const char *message,
                                 const char *path);
/* Adds X-Request-Id and, for an allowed Origin, the CORS headers to RESP. */
void http_add_common_headers(struct request *r, struct MHD_Response *resp);

/* The client of R closed its side while R's body was being read (LOOP_BODY event). */
void http_body_hangup(struct request *r);

/* stream.c */
/* Starts the batch of R from its finished upload and queues the streaming response (or an
 * error response). */
enum MHD_Result stream_start(struct request *r);
/* The client socket of R hung up while its stream was suspended. */
void stream_client_gone(struct request *r);
/* R's connection is over (completed callback): cancel what is left, free the stream state. */
void stream_finish(struct request *r);
/* Cuts every live stream (grace period over, second signal): their batches are cancelled
 * and their responses end without a summary, so clients can tell. Returns how many. */
int stream_cut_all(struct server *s);

/* loop.c */
/* Watches (WATCH = 1) or stops watching R's client socket for hang-ups. */
void loop_watch_request(struct server *s, struct request *r, int watch);

#endif
