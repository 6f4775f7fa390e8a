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
enum loop_kind { LOOP_MHD, LOOP_DISPATCH, LOOP_SIGNAL, LOOP_CONN };
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
    struct conn *conn_list;      /* every open client connection (conn.c) */
    uint64_t conn_next_check_ns; /* the earliest connection deadline (UINT64_MAX: none) */
    int spare_fd;       /* held for accept() when fds run out with no connection (loop.c) */
    int accept_starved; /* MHD said so (http.c's logger) */
    struct metrics *metrics;     /* observe.c */
    char *ops_json;
    size_t ops_json_len;
    struct auth *auth; /* --auth-token-file and --cors-origin (auth.c) */
    uint64_t upload_held; /* request body bytes reserved, all connections (http.c) */
    uint64_t request_seq;
    uint64_t id_salt;
};

enum route {
    ROUTE_NONE,
    ROUTE_BATCHES,
    ROUTE_OPS,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_CONSOLE
};

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
    char id[80];
    char method[16];
    uint64_t started_ns;
    int status;
    /* the upload */
    struct upload *upload;    /* batch requests only */
    uint64_t upload_reserved; /* this body's share of srv->upload_held */
    int body_watched; /* its connection watches the socket for the client's close (conn.c) */
    int peer_closed;  /* the client closed while its body was still being read */
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

/* The client of R closed its side while R's body was being read (conn.c's body watch). */
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

/* console.c */
/* Serves the web console: the page for URL "/", a file of web/ for "/web/NAME". */
enum MHD_Result console_serve(struct request *r, const char *url);

/* conn.c */
struct conn;
/* MHD_OPTION_NOTIFY_CONNECTION: a connection's bookkeeping, from accept to close. */
void conn_on_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                    enum MHD_ConnectionNotificationCode code);
/* The bookkeeping of C (borrowed, valid until C closes), or NULL. */
struct conn *conn_of(struct MHD_Connection *c);
/* The access handler ran: on the request's FIRST call (headers complete), or for a body
 * PIECE of that many bytes; ANSWERED when a response is queued. CN may be NULL. */
void conn_on_request(struct conn *cn, int first, size_t piece, int answered);
/* The request is over; KEEP when the connection may carry another. CN may be NULL. */
void conn_on_request_end(struct conn *cn, int keep);
/* Watches (ON = 1) or stops watching the socket of CN for hang-ups while R's stream is
 * suspended. CN may be NULL. */
void conn_watch_stream(struct conn *cn, struct request *r, int on);
/* Watches (ON = 1; again to re-arm) or stops watching the socket of CN for the client's
 * close while R's body is read. Returns 0, or -1 when it cannot (CN NULL, or watched for
 * something else). */
int conn_watch_body(struct conn *cn, struct request *r, int on);
/* The socket of CN, or -1 (CN NULL). */
int conn_fd(const struct conn *cn);
/* An epoll event on the socket of CN. */
void conn_on_event(struct conn *cn, uint32_t events);
/* Milliseconds until the next connection deadline (-1: none; at most 1000). */
int conn_timeout_ms(const struct server *s);
/* Closes the connections past their deadline. */
void conn_enforce(struct server *s);

#endif
