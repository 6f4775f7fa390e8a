/* One client connection's bookkeeping (conn.c): its deadlines while a request is read and
 * the watch on its socket. It calls no request code by name: whoever watches a socket for a
 * hang-up passes its callback. Private to server/. */
#ifndef BATCHD_SERVER_CONN_H
#define BATCHD_SERVER_CONN_H

#include <microhttpd.h>
#include <stddef.h>

struct conn;
struct server;

/* The client of a watched connection hung up: UD is the pointer given with the watch. */
typedef void (*conn_hangup_fn)(void *ud);

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
/* Watches (ON = 1) or stops watching the socket of CN for hang-ups while a stream is
 * suspended: FN(UD) is called once when the client is gone (reset or error; a half-close
 * is not a hang-up), the watch then ended. CN may be NULL. */
void conn_watch_stream(struct conn *cn, int on, conn_hangup_fn fn, void *ud);
/* Watches (ON = 1; again to re-arm) or stops watching the socket of CN for the client's
 * close while a body is read: FN(UD) on each edge (EPOLLRDHUP, edge-triggered). Returns 0,
 * or -1 when it cannot (CN NULL, or watched for something else). */
int conn_watch_body(struct conn *cn, int on, conn_hangup_fn fn, void *ud);
/* The socket of CN, or -1 (CN NULL). */
int conn_fd(const struct conn *cn);
/* Milliseconds until the next connection deadline (-1: none; at most 1000). */
int conn_timeout_ms(const struct server *s);
/* Closes the connections past their deadline. */
void conn_enforce(struct server *s);

#endif
