/* schedreq: what the CLI and delayer-api share to carry out a request on a
 * schedule: the JSON object applications send (`delayer import` lines, the
 * body of POST /v1/schedules), and create / cancel / retry / delete with
 * the bookkeeping around the store transition (counter deltas, the fast
 * track, the lifecycle event), so that both front ends leave exactly the
 * same records, counters and events.
 *
 * Like store, it never prints: warnings (a fast-track send that failed,
 * counters that could not be written) are appended to `warn` as lines,
 * the front end decides how to report them. */
#ifndef DELAYER_SCHEDREQ_H
#define DELAYER_SCHEDREQ_H
#include <stdint.h>
#include "buf.h"
#include "json.h"
#include "sched.h"
#include "store.h"

/* schedreq_create results beyond STORE_OK / STORE_ERR / STORE_NOTFOUND. */
enum { SCHEDREQ_SAME = 10, SCHEDREQ_CONFLICT = 11, SCHEDREQ_PAST = 12 };

/* The members a schedule object may have ("id, at, in, topic, payload,
 * attrs"); any other member is refused, named. */
extern const char *const schedreq_keys[];
extern const int schedreq_nkeys;

/* Parses and validates the object at token root of d into r (freshly
 * initialised): {"id"?, "at" | "in", "topic", "payload", "attrs"?}. "at" is
 * RFC 3339 or epoch seconds/ms (a string or a number), "in" a duration (a
 * string, or a number of seconds) from now. r->topic is left as given (a
 * NAME or an ARN: schedreq_create resolves it). -1 with one line
 * "FIELD: PROBLEM" in e (FIELD "json" for a body that is not an object).
 * 1 when the object is valid but for a due time more than the grace in the
 * past with an explicit id (e has that error): an identical re-submission
 * of an existing schedule is idempotent even late, so schedreq_create
 * decides (SCHEDREQ_SAME or SCHEDREQ_PAST). */
int schedreq_parse(json_doc *d, int root, const sched_limits *lim, int64_t now, sched_rec *r, char *e, size_t el);

/* Creates r (validated; r->id NULL: a ULID is generated, which is not
 * thread-safe: threads pass their own id). The topic is resolved first.
 * counts: where the counter deltas go (the caller flushes them), or NULL:
 * written here. Returns
 *   STORE_OK           created: r is the record as written (state NEW, or
 *                      ENQUEUED and sent to the delay queue; if that send
 *                      failed, back to NEW with a warning)
 *   SCHEDREQ_SAME      the id exists with the same content: old has it
 *   SCHEDREQ_CONFLICT  the id exists with other content: old has it
 *   SCHEDREQ_PAST      due more than the grace in the past and no identical
 *                      schedule has this id (s->err: "at: ... in the past") 
 *   STORE_NOTFOUND     unknown topic (s->err "topic: ...")
 *   STORE_ERR          AWS failed (s->err) */
int schedreq_create(store *s, sched_rec *r, int64_t now, sched_rec *old, store_counts *counts, buf_t *warn);

/* NEW/ENQUEUED -> CANCELLED. STORE_OK (old: the record before), STORE_LOST
 * (old->state is the state that refused it), STORE_NOTFOUND, STORE_ERR. */
int schedreq_cancel(store *s, const char *id, int64_t now, sched_rec *old, buf_t *warn);
/* FAILED -> ENQUEUED and sent at once. STORE_OK (old: the record, now
 * ENQUEUED or, if the send failed, NEW), STORE_LOST (old->state), ... */
int schedreq_retry(store *s, const char *id, int64_t now, sched_rec *old, buf_t *warn);
/* Removes the record whatever its state. STORE_OK (old: the deleted
 * record), STORE_NOTFOUND, STORE_ERR. */
int schedreq_delete(store *s, const char *id, int64_t now, sched_rec *old, buf_t *warn);

/* The counters as JSON (no newline): {"states":{"NEW":n,...},"total":n} and,
 * with by_topic, "topics":[{"topic":ARN,"states":{...}}]. */
void schedreq_stats_json(buf_t *out, const store_stats *st, int by_topic);
#endif
