/* Structured logs on stderr: one line per event, logfmt (key=value) or JSON lines. */
#ifndef BATCHD_SERVER_LOG_H
#define BATCHD_SERVER_LOG_H

enum log_format { LOG_LOGFMT, LOG_JSON };

void log_set_format(enum log_format f);

/* Writes one line: time, level, event, then the KEY, VALUE string pairs that follow,
 * terminated by a NULL key. A NULL value is skipped. */
void log_event(const char *level, const char *event, ...) __attribute__((sentinel));

#endif
