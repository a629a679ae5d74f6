/* log: one logfmt line per event on stderr:
 *   ts=2026-11-21T14:03:07.250Z level=info stage=sqs-push msg=enqueued id=01J... n=10
 * Values are quoted and escaped when needed, so an id with spaces, quotes or
 * newlines can never forge a second line or a field. Nothing secret is ever
 * passed here (credentials never reach log calls). */
#ifndef DELAYER_LOG_H
#define DELAYER_LOG_H
#include <stdint.h>

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

void log_init(const char *stage);          /* level from DELAYER_LOG_LEVEL, default info */
void log_set_level(int level);
int  log_level(void);
int  log_level_parse(const char *s);        /* "debug".."error","off" -> level, -1 if unknown */
/* Key/value pairs (const char *), terminated by NULL. */
void log_ev(int level, const char *msg, ...) __attribute__((sentinel));
/* Formats an integer into one of a few rotating static buffers, for log_ev args. */
const char *log_i64(int64_t v);
/* The same into the caller's buffer b, returned: log_i64's ring is shared,
 * so threads other than the main one format their own. */
const char *log_i64_buf(char b[24], int64_t v);
#endif
