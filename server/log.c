/* Log lines. Each is formatted whole and written with one write(2), so lines from the
 * server and its workers never interleave mid-line. */
#include "log.h"

#include "../api/buf.h"
#include "../api/jsonw.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_format log_fmt = LOG_LOGFMT;
static enum log_level log_min = LOG_INFO;
static char log_replica[128]; /* cluster mode: every line names the replica */

/* Indexed by enum log_level. */
static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

void log_set_replica(const char *name)
{
    snprintf(log_replica, sizeof log_replica, "%s", name != NULL ? name : "");
}

void log_set_format(enum log_format f)
{
    log_fmt = f;
}

void log_set_level(enum log_level l)
{
    log_min = l;
}

int log_level_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof log_level_names / sizeof log_level_names[0]); i++) {
        if (strcmp(name, log_level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int log_enabled(enum log_level l)
{
    return l <= log_min;
}

static void logfmt_value(struct buf *b, const char *v)
{
    int quote = v[0] == '\0' || strpbrk(v, " =\"\\\n\t") != NULL;
    if (!quote) {
        buf_adds(b, v);
        return;
    }
    jsonw_cstr(b, v); /* a JSON string is a valid quoted logfmt value */
}

static void log_pair(struct buf *b, const char *k, const char *v, int first)
{
    if (log_fmt == LOG_JSON) {
        buf_adds(b, first ? "{" : ",");
        jsonw_cstr(b, k);
        buf_adds(b, ":");
        jsonw_cstr(b, v);
    } else {
        if (!first) {
            buf_adds(b, " ");
        }
        buf_adds(b, k);
        buf_adds(b, "=");
        logfmt_value(b, v);
    }
}

void log_event(const char *level, const char *event, ...)
{
    int l = log_level_parse(level);
    if (l >= 0 && !log_enabled((enum log_level)l)) {
        return;
    }
    struct buf b;
    buf_init(&b, 16384);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(tv.tv_usec / 1000));
    log_pair(&b, "ts", ts, 1);
    log_pair(&b, "level", level, 0);
    log_pair(&b, "event", event, 0);
    if (log_replica[0] != '\0') {
        log_pair(&b, "replica", log_replica, 0);
    }
    va_list ap;
    va_start(ap, event);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL) {
            break;
        }
        const char *v = va_arg(ap, const char *);
        if (v != NULL) {
            log_pair(&b, k, v, 0);
        }
    }
    va_end(ap);
    buf_adds(&b, log_fmt == LOG_JSON ? "}\n" : "\n");
    const char *p = buf_data(&b);
    size_t n = buf_len(&b);
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w <= 0) {
            break;
        }
        p += w;
        n -= (size_t)w;
    }
    buf_cleanup(&b);
}
