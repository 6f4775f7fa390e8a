/* Structured logs on stderr: one line per event, logfmt (key=value) or JSON lines, with a
 * level filter (--log-level). Counters and gauges are metrics.c's. */
#ifndef BATCHD_SERVER_LOG_H
#define BATCHD_SERVER_LOG_H

enum log_format { LOG_LOGFMT, LOG_JSON };

/* Most severe first: a line is written when its level is at or above the one set. */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_format(enum log_format f);

/* Cluster mode: every line that follows carries replica=NAME ("" or NULL: none). */
void log_set_replica(const char *name);

/* Sets the least severe level written (--log-level; the default is LOG_INFO). */
void log_set_level(enum log_level l);

/* The level named NAME ("error", "warn", "info", "debug"), or -1 for any other name. */
int log_level_parse(const char *name);

/* 1 when lines of level L are written: check it before formatting the values of a debug
 * line, so that a line nobody reads costs one comparison. */
int log_enabled(enum log_level l);

/* Writes one line: time, level, event, then the KEY, VALUE string pairs that follow,
 * terminated by a NULL key. A NULL value is skipped. LEVEL is one of the names of
 * log_level_parse; a line below the level set is not written. */
void log_event(const char *level, const char *event, ...) __attribute__((sentinel));

#endif
