/* The frames between the server and its workers over a SOCK_STREAM socketpair: a 16-byte
 * header {magic+version, type, length, reserved} then LENGTH bytes of body, little-endian
 * host order (both ends are the same binary), and the primitives frames.c builds bodies
 * with. Also the fixed-size control page each worker shares with the server, which says
 * which job it is running and since when. */
#ifndef BATCHD_WORKERS_IPC_H
#define BATCHD_WORKERS_IPC_H

#include "../api/buf.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IPC_MAGIC 0x42440001u /* "BD", frame format version 1 */
#define IPC_MAX_FRAME (512u * 1024 * 1024)

enum ipc_type {
    IPC_RUN = 1,     /* server -> worker: a chunk of jobs */
    IPC_RESULTS = 2, /* worker -> server: results of some jobs of the current chunk */
    IPC_QUIT = 3,    /* server -> worker: exit after the current chunk (recycling, drain) */
    IPC_CONFIG = 4,  /* server -> worker: its limits and folders, once, before any RUN */
};

struct ipc_header {
    uint32_t magic;
    uint32_t type;
    uint32_t len;
    uint32_t reserved;
};

/* The page a worker shares with the server (MAP_SHARED memfd). The worker writes it before
 * and after each job; the server reads it to find the job at fault when the worker dies and
 * to enforce per-job timeouts without any message per job. */
struct ipc_control {
    _Atomic uint64_t job_index;      /* index in its batch of the job running, if running */
    _Atomic uint64_t job_started_ns; /* CLOCK_MONOTONIC when it started */
    _Atomic uint32_t running;        /* 1 while a job runs */
    _Atomic uint32_t pid;
};

/* The bodies of RUN, RESULTS and CONFIG, their layout, flags and codec: frames.h. */

/* Appends a frame header for a body of LEN bytes; returns 0 or -1 (buffer cap). */
int ipc_put_header(struct buf *b, enum ipc_type type, uint32_t len);

/* Sets the length field of the frame header at OFFSET in B to the bytes that follow it. */
void ipc_patch_length(struct buf *b, size_t offset);

int ipc_put_u32(struct buf *b, uint32_t v);
int ipc_put_u64(struct buf *b, uint64_t v);
/* Appends a u32 length then the bytes. */
int ipc_put_bytes(struct buf *b, const void *p, uint32_t len);

/* A cursor over a received body. Reads past the end set .bad and return zeros. */
struct ipc_reader {
    const uint8_t *p;
    size_t left;
    int bad;
};

void ipc_reader_init(struct ipc_reader *r, const void *body, size_t len);
uint32_t ipc_get_u32(struct ipc_reader *r);
uint64_t ipc_get_u64(struct ipc_reader *r);
/* Reads a u32 length and returns a borrowed pointer to that many bytes (NULL if short). */
const void *ipc_get_bytes(struct ipc_reader *r, uint32_t *len);

/* Looks for one complete frame at the start of IN (LEN bytes). Returns the frame's total
 * size and fills *HDR when a whole frame is there, 0 when more bytes are needed, or -1 when
 * the bytes are not a frame of ours (bad magic, oversize). */
long ipc_frame_complete(const void *in, size_t len, struct ipc_header *hdr);

/* Blocking helpers for the worker side: send all of P (with FD attached when FD >= 0),
 * receive exactly N bytes (receiving at most one passed fd into *FD if FD != NULL).
 * Return 0, or -1 on error/EOF. */
int ipc_send_all(int sock, const void *p, size_t n, int fd);
int ipc_recv_all(int sock, void *p, size_t n, int *fd);

/* Nonblocking send of P with FD attached to the first byte when FD >= 0. Returns the bytes
 * sent (0 when the socket is full) or -1 on error. */
long ipc_send_some(int sock, const void *p, size_t n, int fd);

/* Nonblocking receive into B (up to the cap), collecting a passed fd into *FD if any.
 * Returns bytes read, 0 on EOF, -1 with errno EAGAIN when nothing is there, -1 on error. */
long ipc_recv_some(int sock, struct buf *b, int *fd);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t ipc_now_ns(void);

#endif
