/* Unit tests of the frame primitives between the server and its workers (workers/ipc.c):
 * header, lengths and fields written then read back, the frame detector's three answers,
 * and the socket helpers over a socketpair, a passed fd included. The RUN and RESULTS
 * bodies themselves are the dispatcher's and the worker's; they are not tested here. */
#include "../../workers/ipc.h"
#include "../check.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_fields_round_trip(void)
{
    struct buf b;
    buf_init(&b, 1u << 20);
    CHECK_EQ_INT(ipc_put_header(&b, IPC_RESULTS, 0), 0);
    CHECK_EQ_INT(ipc_put_u32(&b, 0xdeadbeefu), 0);
    CHECK_EQ_INT(ipc_put_u64(&b, 0x0123456789abcdefull), 0);
    CHECK_EQ_INT(ipc_put_bytes(&b, "hello", 5), 0);
    CHECK_EQ_INT(ipc_put_bytes(&b, "", 0), 0);
    CHECK_EQ_INT(ipc_put_u64(&b, UINT64_MAX), 0);
    ipc_patch_length(&b, 0);

    struct ipc_header h;
    long total = ipc_frame_complete(buf_data(&b), buf_len(&b), &h);
    CHECK_EQ_INT(total, buf_len(&b));
    CHECK_EQ_INT(h.magic, IPC_MAGIC);
    CHECK_EQ_INT(h.type, IPC_RESULTS);
    CHECK_EQ_INT(h.len, buf_len(&b) - sizeof h);
    CHECK_EQ_INT(h.len, 4 + 8 + (4 + 5) + 4 + 8);

    struct ipc_reader r;
    ipc_reader_init(&r, buf_data(&b) + sizeof h, h.len);
    CHECK_EQ_INT(ipc_get_u32(&r), 0xdeadbeefu);
    CHECK(ipc_get_u64(&r) == 0x0123456789abcdefull);
    uint32_t len = 99;
    const char *p = ipc_get_bytes(&r, &len);
    CHECK_EQ_INT(len, 5);
    CHECK(p != NULL && memcmp(p, "hello", 5) == 0);
    CHECK(ipc_get_bytes(&r, &len) != NULL);
    CHECK_EQ_INT(len, 0);
    CHECK(ipc_get_u64(&r) == UINT64_MAX);
    CHECK_EQ_INT(r.left, 0);
    CHECK_EQ_INT(r.bad, 0);
    buf_cleanup(&b);
}

static void test_reader_past_end(void)
{
    uint8_t body[6] = {1, 0, 0, 0, 9, 9};
    struct ipc_reader r;
    ipc_reader_init(&r, body, sizeof body);
    CHECK_EQ_INT(ipc_get_u32(&r), 1);
    CHECK_EQ_INT(ipc_get_u32(&r), 0); /* only 2 bytes left: zero, and bad from now on */
    CHECK_EQ_INT(r.bad, 1);
    CHECK(ipc_get_u64(&r) == 0);
    CHECK_EQ_INT(r.bad, 1);

    /* A length that claims more bytes than there are. */
    struct buf b;
    buf_init(&b, 64);
    ipc_put_u32(&b, 100);
    buf_add(&b, "abc", 3);
    ipc_reader_init(&r, buf_data(&b), buf_len(&b));
    uint32_t len = 7;
    CHECK(ipc_get_bytes(&r, &len) == NULL);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(r.bad, 1);
    buf_cleanup(&b);
}

static void test_frame_complete(void)
{
    struct buf b;
    buf_init(&b, 1024);
    ipc_put_header(&b, IPC_RUN, 0);
    buf_add(&b, "0123456789", 10);
    ipc_patch_length(&b, 0);
    size_t first = buf_len(&b);
    ipc_put_header(&b, IPC_QUIT, 0); /* a second frame, empty body, right behind */
    struct ipc_header h;
    /* Every strict prefix of the first frame asks for more. */
    for (size_t n = 0; n < first; n++) {
        CHECK_EQ_INT(ipc_frame_complete(buf_data(&b), n, &h), 0);
    }
    CHECK_EQ_INT(ipc_frame_complete(buf_data(&b), buf_len(&b), &h), first);
    CHECK_EQ_INT(h.type, IPC_RUN);
    CHECK_EQ_INT(ipc_frame_complete(buf_data(&b) + first, buf_len(&b) - first, &h), sizeof h);
    CHECK_EQ_INT(h.type, IPC_QUIT);
    CHECK_EQ_INT(h.len, 0);

    /* Not ours: another magic (another frame version), or a length past the cap. */
    struct ipc_header bad = {IPC_MAGIC + 1, IPC_RUN, 0, 0};
    CHECK_EQ_INT(ipc_frame_complete(&bad, sizeof bad, &h), -1);
    bad.magic = IPC_MAGIC;
    bad.len = IPC_MAX_FRAME + 1;
    CHECK_EQ_INT(ipc_frame_complete(&bad, sizeof bad, &h), -1);
    bad.len = IPC_MAX_FRAME;
    CHECK_EQ_INT(ipc_frame_complete(&bad, sizeof bad, &h), 0);
    buf_cleanup(&b);
}

static void test_sockets_and_fd_passing(void)
{
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    FILE *tmp = tmpfile();
    CHECK(tmp != NULL);
    int fd = fileno(tmp);
    char frame[100];
    memset(frame, 'x', sizeof frame);
    CHECK_EQ_INT(ipc_send_all(sv[0], frame, sizeof frame, fd), 0);

    char got[100];
    int passed = -1;
    CHECK_EQ_INT(ipc_recv_all(sv[1], got, sizeof got, &passed), 0);
    CHECK(memcmp(got, frame, sizeof got) == 0);
    CHECK(passed >= 0 && passed != fd);
    struct stat a, b;
    CHECK(fstat(fd, &a) == 0 && fstat(passed, &b) == 0);
    CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev); /* the same open file */
    CHECK((fcntl(passed, F_GETFD) & FD_CLOEXEC) != 0);
    if (passed >= 0) {
        close(passed);
    }

    /* Nonblocking: nothing there is EAGAIN, then bytes, then EOF is 0. */
    struct buf in;
    buf_init(&in, 1u << 20);
    int none = -1;
    errno = 0;
    CHECK_EQ_INT(ipc_recv_some(sv[1], &in, &none), -1);
    CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
    CHECK_EQ_INT(ipc_send_some(sv[0], "abc", 3, -1), 3);
    CHECK_EQ_INT(ipc_recv_some(sv[1], &in, &none), 3);
    CHECK_EQ_INT(buf_len(&in), 3);
    CHECK_EQ_INT(none, -1);
    close(sv[0]);
    CHECK_EQ_INT(ipc_recv_some(sv[1], &in, &none), 0);
    CHECK_EQ_INT(ipc_recv_all(sv[1], got, 1, NULL), -1);
    /* The buffer's cap is honoured: no room, no read. */
    struct buf tiny;
    buf_init(&tiny, 16);
    CHECK_EQ_INT(ipc_recv_some(sv[1], &tiny, NULL), -1);
    CHECK_EQ_INT(errno, ENOBUFS);
    buf_cleanup(&tiny);
    buf_cleanup(&in);
    close(sv[1]);
    fclose(tmp);
}

static void test_clock(void)
{
    uint64_t a = ipc_now_ns();
    uint64_t b = ipc_now_ns();
    CHECK(a > 0);
    CHECK(b >= a);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"fields_round_trip", test_fields_round_trip},
    {"reader_past_end", test_reader_past_end},
    {"frame_complete", test_frame_complete},
    {"sockets_and_fd_passing", test_sockets_and_fd_passing},
    {"clock", test_clock},
};
/* clang-format on */

CHECK_MAIN("test_ipc", cases)
