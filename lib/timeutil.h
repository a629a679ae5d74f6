/* timeutil: wall-clock milliseconds, RFC 3339 / epoch parsing, durations.
 * All times are int64 milliseconds since the Unix epoch, UTC. Parsing rounds
 * sub-millisecond fractions UP, so a parsed due time is never earlier than
 * what the user wrote. */
#ifndef DELAYER_TIMEUTIL_H
#define DELAYER_TIMEUTIL_H
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>

int64_t time_now_ms(void);     /* CLOCK_REALTIME */
int64_t time_mono_ms(void);    /* CLOCK_MONOTONIC, for intervals */
int64_t time_mono_us(void);
/* Initialises c to time its waits on CLOCK_MONOTONIC (pthread_cond_timedwait
 * deadlines from clock_gettime(CLOCK_MONOTONIC)): a wall clock step must not
 * stretch or cut a wait. 0, or -1 if pthread refused. */
int time_cond_init_mono(pthread_cond_t *c);

/* "2026-11-21T14:03:07.250Z", "2026-11-21T15:03:07+01:00", "2026-11-21 14:03:07Z",
 * or epoch: "1763733787" (seconds), "1763733787.25" (seconds), "1763733787250" (ms, 13+ digits).
 * Second 60 is accepted only at 23:59:60 UTC (after the offset) on June 30 or
 * December 31, and maps to the next day's 00:00:00 plus the fraction.
 * 0, or -1 with a one-line reason in err. */
int time_parse_at(const char *s, int64_t *ms, char *err, size_t errlen);
/* "90s", "15m", "2h", "3d", "1w", "500ms", combinations "1h30m", a bare number = seconds.
 * 0, or -1 with err. Refuses negative, empty, overflow. */
int time_parse_duration(const char *s, int64_t *ms, char *err, size_t errlen);
/* "2026-11-21T14:03:07.250Z" (24 chars + NUL). */
void time_fmt(int64_t ms, char out[32]);
/* days since 1970-01-01 for a civil date, and back (proleptic Gregorian) */
int64_t time_days_from_civil(int64_t y, unsigned m, unsigned d);
void time_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);
#endif
