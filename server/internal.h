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
#include "prepared.h"
#include "results.h"
#include "upload.h"
#include "writer.h"

#include <microhttpd.h>
#include <stdint.h>

struct server {
    struct config cfg;
    struct MHD_Daemon *mhd;
    struct dispatch *dispatch;
    struct store *store; /* SPEC §8's stored batches (server.c opens it; stored.c uses it) */
    struct cluster *cluster;    /* cluster mode: the chunks run here (cluster.c) */
    struct sbatch *stored_list; /* stored batches live here, oldest first (stored.c) */
    int stored_rescan; /* a stored batch could not be taken on: look for it again (stored.c) */
    struct request *followers;  /* result streams waiting for a stored batch (results.c) */
    struct loop *loop; /* server.c */
    int sigfd;
    struct loop_watch w_mhd, w_dispatch, w_signal; /* server.c */
    struct loop_watch w_store;                     /* server.c: store_fd */
    uint64_t store_expire_ns;    /* when server.c next asks the store to expire (monotonic) */
    uint64_t store_expire_every; /* ns between those */
    uint16_t port;
    int draining;
    int closing; /* server_cleanup runs: nothing may sleep any more */
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
    ROUTE_BATCH,
    ROUTE_OPS,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_CONSOLE
};

struct request;
/* A route's handler (http.c's table): queues the answer, or returns MHD_YES to read on. */
typedef enum MHD_Result (*route_fn)(struct request *r);

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
    struct prepared prep; /* its spec, ops and blobs (prepared.c) */
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
    /* SPEC §8 */
    uint8_t owner[32];            /* who its batches belong to: a hash of its token (http.c) */
    size_t owner_len;             /* 0: no tokens configured */
    struct submit_wait *wait;     /* a store write it waits for (submit.c, batches.c) */
    route_fn resume_fn;           /* runs when it is resumed after that wait (http.c) */
    int wait_rc;                  /* the store's answer to that write */
    struct request **forget_slot; /* a DELETE's forget in flight (batches.c) */
    int async;                    /* SPEC §8 async: answered 202 */
    struct results_state res;     /* a stored batch's results stream (results.c) */
    struct request *follow_next;  /* in srv->followers while waiting for results */
    uint64_t progress_last_ns;    /* a streamed batch's last progress line (stream.c) */
    uint64_t n_ok, n_failed;      /* a streamed batch's results so far (stream.c) */
    int cancelled;                /* a streamed batch was cancelled (stream.c) */
    int streaming;                /* in srv->stream_list (stream.c) */
};

#endif
