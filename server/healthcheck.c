/* A minimal HTTP/1.0 client for one request, GET /healthz on the server's own port: a
 * non-blocking connect and I/O bounded by one deadline. Not a general HTTP client. */
#include "healthcheck.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until FD is ready for EVENTS or the deadline passes. Returns 0 or -1. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        long long left = deadline - now_ms();
        int n = 0;
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        n = poll(&p, 1, (int)left);
        if (n > 0) {
            return 0;
        }
        if (n < 0 && errno != EINTR) {
            return -1;
        }
    }
}

/* Splits LISTEN into a host to connect to and a port. Wildcards become loopback. */
static int split_listen(const char *listen, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(listen, ':');
    const char *h = listen;
    size_t n = 0;

    if (colon == NULL || colon[1] == '\0') {
        return -1;
    }
    n = (size_t)(colon - listen);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n >= hostlen || strlen(colon + 1) >= portlen) {
        return -1;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    snprintf(port, portlen, "%s", colon + 1);
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0 ||
        strcmp(host, "localhost") == 0) {
        snprintf(host, hostlen, "127.0.0.1");
    } else if (strcmp(host, "::") == 0) {
        snprintf(host, hostlen, "::1");
    }
    return 0;
}

int healthcheck_probe(const char *listen, int timeout_ms, char *err, size_t errlen)
{
    static const char req[] = "GET /healthz HTTP/1.0\r\nHost: localhost\r\n"
                              "User-Agent: batchd-healthcheck\r\n\r\n";
    long long deadline = now_ms() + timeout_ms;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *ai = NULL;
    char host[256], port[16], resp[128];
    size_t sent = 0, got = 0;
    int fd = -1, rc = -1, soerr = 0, status = 0;
    socklen_t slen = sizeof(soerr);

    if (listen == NULL || split_listen(listen, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(err, errlen, "cannot parse listen address %s", listen ? listen : "(null)");
        goto out;
    }
    if (getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL) {
        snprintf(err, errlen, "bad listen address %s", listen);
        goto out;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        goto out;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s: %s", listen, strerror(errno));
        goto out;
    }
    if (wait_fd(fd, POLLOUT, deadline) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0 || soerr != 0) {
        snprintf(err, errlen, "connect %s: %s", listen, strerror(soerr ? soerr : errno));
        goto out;
    }
    while (sent < sizeof(req) - 1) {
        ssize_t n = send(fd, req + sent, sizeof(req) - 1 - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(err, errlen, "send: %s", strerror(errno));
            goto out;
        } else if (wait_fd(fd, POLLOUT, deadline) != 0) {
            snprintf(err, errlen, "send: %s", strerror(errno));
            goto out;
        }
    }
    /* The status line is all we need: "HTTP/1.1 200 OK". */
    while (got < sizeof(resp) - 1 && memchr(resp, '\n', got) == NULL) {
        ssize_t n = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0) {
            break;
        } else if (errno != EAGAIN && errno != EINTR) {
            snprintf(err, errlen, "recv: %s", strerror(errno));
            goto out;
        } else if (wait_fd(fd, POLLIN, deadline) != 0) {
            snprintf(err, errlen, "no answer within %d ms", timeout_ms);
            goto out;
        }
    }
    resp[got] = '\0';
    if (sscanf(resp, "HTTP/1.%*d %3d", &status) != 1) {
        snprintf(err, errlen, "not an HTTP answer");
        goto out;
    }
    if (status != 200) {
        snprintf(err, errlen, "/healthz answered %d", status);
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (ai != NULL) {
        freeaddrinfo(ai);
    }
    return rc;
}
