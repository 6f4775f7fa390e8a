/* Frame encoding and socket helpers shared by the dispatcher and the worker loop. */
#include "ipc.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int ipc_put_header(struct buf *b, enum ipc_type type, uint32_t len)
{
    struct ipc_header h = {IPC_MAGIC, (uint32_t)type, len, 0};
    return buf_add(b, &h, sizeof h);
}

void ipc_patch_length(struct buf *b, size_t offset)
{
    struct ipc_header h;
    char *p = (char *)buf_data(b) + offset;
    memcpy(&h, p, sizeof h);
    h.len = (uint32_t)(buf_len(b) - offset - sizeof h);
    memcpy(p, &h, sizeof h);
}

int ipc_put_u32(struct buf *b, uint32_t v)
{
    return buf_add(b, &v, sizeof v);
}

int ipc_put_u64(struct buf *b, uint64_t v)
{
    return buf_add(b, &v, sizeof v);
}

int ipc_put_bytes(struct buf *b, const void *p, uint32_t len)
{
    if (ipc_put_u32(b, len) != 0) {
        return -1;
    }
    return buf_add(b, p, len);
}

void ipc_reader_init(struct ipc_reader *r, const void *body, size_t len)
{
    r->p = body;
    r->left = len;
    r->bad = 0;
}

static int ipc_take(struct ipc_reader *r, void *out, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = 1;
        memset(out, 0, n);
        return -1;
    }
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
    return 0;
}

uint32_t ipc_get_u32(struct ipc_reader *r)
{
    uint32_t v;
    ipc_take(r, &v, sizeof v);
    return v;
}

uint64_t ipc_get_u64(struct ipc_reader *r)
{
    uint64_t v;
    ipc_take(r, &v, sizeof v);
    return v;
}

const void *ipc_get_bytes(struct ipc_reader *r, uint32_t *len)
{
    *len = ipc_get_u32(r);
    if (r->bad || r->left < *len) {
        r->bad = 1;
        *len = 0;
        return NULL;
    }
    const void *p = r->p;
    r->p += *len;
    r->left -= *len;
    return p;
}

long ipc_frame_complete(const void *in, size_t len, struct ipc_header *hdr)
{
    if (len < sizeof *hdr) {
        return 0;
    }
    memcpy(hdr, in, sizeof *hdr);
    if (hdr->magic != IPC_MAGIC || hdr->len > IPC_MAX_FRAME) {
        return -1;
    }
    if (len < sizeof *hdr + hdr->len) {
        return 0;
    }
    return (long)(sizeof *hdr + hdr->len);
}

static long ipc_sendmsg(int sock, const void *p, size_t n, int fd, int flags)
{
    struct iovec iov = {(void *)p, n};
    struct msghdr msg = {0};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    return sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
}

static long ipc_recvmsg(int sock, void *p, size_t n, int *fd, int flags)
{
    struct iovec iov = {p, n};
    struct msghdr msg = {0};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } ctl;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof ctl.buf;
    long r = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    if (r <= 0) {
        return r;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfds; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
            /* Keep the first fd we are offered; close any others (a peer bug, not a leak). */
            if (fd != NULL && *fd < 0) {
                *fd = got;
            } else {
                close(got);
            }
        }
    }
    return r;
}

int ipc_send_all(int sock, const void *p, size_t n, int fd)
{
    const char *c = p;
    while (n > 0) {
        long w = ipc_sendmsg(sock, c, n, fd, 0);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        fd = -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int ipc_recv_all(int sock, void *p, size_t n, int *fd)
{
    char *c = p;
    while (n > 0) {
        long r = ipc_recvmsg(sock, c, n, fd, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

long ipc_send_some(int sock, const void *p, size_t n, int fd)
{
    long w = ipc_sendmsg(sock, p, n, fd, MSG_DONTWAIT);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return 0;
    }
    return w;
}

long ipc_recv_some(int sock, struct buf *b, int *fd)
{
    size_t want = 256 * 1024;
    char *dst = buf_reserve(b, want);
    if (dst == NULL) {
        errno = ENOBUFS;
        return -1;
    }
    long r = ipc_recvmsg(sock, dst, want, fd, MSG_DONTWAIT);
    if (r > 0) {
        buf_commit(b, (size_t)r);
    }
    return r;
}

uint64_t ipc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
