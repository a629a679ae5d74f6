/* store: one delayer deployment (docs/schema.md): its configuration, its
 * AWS clients and resource names, `init`, and every conditional state
 * transition as one function, plus the due-index and by_state queries,
 * scanner checkpoints, counters and lifecycle events.
 *
 * Conventions
 *   - Functions return 0 (STORE_OK) or -1 (STORE_ERR, one line in s->err).
 *     Conditional writes and lookups may also return STORE_LOST (the
 *     condition failed: another writer or state won; `out` then holds the
 *     current record, from ReturnValuesOnConditionCheckFailure=ALL_OLD) or
 *     STORE_NOTFOUND (no such record, or its TTL has passed).
 *   - On success a transition leaves in `out` (may be NULL) the record as it
 *     was BEFORE the write (ALL_OLD): the caller learns the previous state
 *     (for counters and events) and, where noted, the full content.
 *   - Every user-supplied value goes through ExpressionAttributeValues and
 *     every attribute name through ExpressionAttributeNames: ids, topics and
 *     errors are stored verbatim whatever bytes they hold.
 *   - The library never prints; it never publishes an event before the
 *     state change it reports has been written. */
#ifndef DELAYER_STORE_H
#define DELAYER_STORE_H
#include <stddef.h>
#include <stdint.h>
#include "aws.h"
#include "buf.h"
#include "sched.h"

enum { STORE_ERR = -1, STORE_OK = 0, STORE_LOST = 1, STORE_NOTFOUND = 2 };

/* What kind of STORE_ERR the last call returned (store.err_kind): only
 * these two are told apart, for the scanner's poison rows (ddb-scan-due). */
enum {
    STORE_EK_OTHER = 0,       /* network, throttling, 5xx, other refusals, ... */
    STORE_EK_VALIDATION = 1,  /* DynamoDB refused the request for this item (ValidationException) */
    STORE_EK_BADITEM = 2      /* the reply's item is not a readable schedule (a write WAS done) */
};

#define STORE_PREFIX_MAX 60

/* Settings. -1 (or NULL) = not given: store_load() then takes the value of
 * the deployment's meta `config` item, else the default. shards is fixed at
 * init: only init uses the given value. */
typedef struct {
    const char *prefix;     /* --prefix, DELAYER_PREFIX, default "delayer" */
    int64_t window_ms;      /* DELAYER_WINDOW, default = max = 900 s */
    int64_t grace_ms;       /* DELAYER_GRACE, default 30 s */
    int shards;             /* DELAYER_SHARDS, default 8 (init only) */
    int64_t retention_s;    /* DELAYER_RETENTION, default 7 d */
    int64_t horizon_ms;     /* DELAYER_HORIZON, default 365 d */
    int events;             /* DELAYER_EVENTS: 0 off, 1 on (default) */
} store_conf;

/* Fills c from the environment (unset variables stay -1/NULL). -1 with a
 * one-line "<VARIABLE>: <problem>" in err. */
int store_conf_env(store_conf *c, char *err, size_t errlen);
/* Checks a prefix: 1-60 of [A-Za-z0-9_-] (it names tables, queues, topics). */
int store_check_prefix(const char *prefix, char *err, size_t errlen);

typedef struct store_counts store_counts;

typedef struct {
    store_conf conf;          /* effective values after store_load/store_init */
    store_conf given;         /* as passed to store_open (-1 = not given) */
    char prefix[STORE_PREFIX_MAX + 1];
    char table[96];           /* <prefix>-schedules */
    char meta[96];            /* <prefix>-meta */
    char queue[96];           /* <prefix>-delay */
    char dlq[96];             /* <prefix>-dead */
    char events_topic[96];    /* <prefix>-events */
    char *queue_url, *dlq_url, *events_arn;   /* from config (store_load) */
    int64_t since_ms;         /* when the deployment was initialised */
    aws_client *ddb, *sqs, *sns;  /* sns: topic checks, init (lazy) */
    aws_client *evsns;        /* events: short timeouts, 2 attempts (lazy) */
    char err[768];
    int err_kind;             /* STORE_EK_* of the last STORE_ERR */
    /* DynamoDB capacity this store consumed (ReturnConsumedCapacity=TOTAL on
     * every item read/write/query; also added up process-wide in reqstat.h):
     * read units, write units (table + indexes), and failed conditional
     * writes (charged by DynamoDB, reported without units). */
    double rcu, wcu;
    uint64_t ccf;
    /* internals */
    struct store_ev *evq;
    size_t nev, evcap;
    uint64_t ev_sent, ev_failed;
    char ev_err[768];         /* last event publishing failure, "" if none */
    struct store_topic_cache *topics;
    size_t ntopics;
} store;

/* Creates the DynamoDB client (SQS/SNS clients are made on first use).
 * NULL with err on failure. */
store *store_open(const store_conf *c, char *err, size_t errlen);
void store_close(store *s);
/* Reads the meta `config` item and fills conf/urls/arns. STORE_NOTFOUND when
 * the deployment is not initialised. */
int store_load(store *s);
aws_client *store_sqs(store *s);   /* NULL with s->err on failure */
aws_client *store_sns(store *s);

/* init: creates what is missing (tables + indexes + TTL, DLQ, delay queue
 * with redrive, events topic, topics <prefix>-NAME recorded as topic#NAME,
 * the config item) and appends one line per resource to report:
 * "created <kind> <name>" or "exists <kind> <name>". Idempotent. */
int store_init(store *s, const char *const *topics, size_t ntopics, buf_t *report);

/* --topic: an ARN (checked with GetTopicAttributes) or a NAME known as
 * meta topic#NAME. STORE_NOTFOUND with s->err "topic: ..." when unknown.
 * Results are cached for the life of the store. */
int store_topic_resolve(store *s, const char *name_or_arn, buf_t *arn);

/* ----------------------------------------------------------- reads */

/* GetItem (strongly consistent). STORE_NOTFOUND if absent or expired. */
int store_get(store *s, const char *id, sched_rec *out);
/* Up to 100 ids (duplicates allowed: sent once) with BatchGetItem,
 * retrying UnprocessedKeys. found[i] gets the record of ids[i] (state -1,
 * id NULL when absent or expired). Reads id, state, chash, topic, expires. */
int store_get_batch(store *s, const char *const *ids, size_t n, sched_rec *found);

/* ----------------------------------------------------------- creation */

/* Fills the fields of a new record: id (a ULID when r->id is NULL),
 * created/updated/hist, state NEW or, when due is within the window,
 * ENQUEUED with lease = max(due, now) + grace (fast track). r must have
 * passed sched_validate; chash is computed here. Returns 1 if fast track. */
int store_prepare(store *s, sched_rec *r, int64_t now);
/* PutItem of a prepared record, condition attribute_not_exists(id) OR the
 * existing item's TTL has passed. STORE_LOST: the id exists; `old` gets it
 * (compare old->chash with r->chash for idempotency). */
int store_create(store *s, const sched_rec *r, sched_rec *old);
/* BatchWriteItem of up to 25 prepared records, retrying UnprocessedItems
 * with back-off. Unconditional: only for records with fresh generated ids
 * (an explicit id may exist: store_create; docs/schema.md "Import").
 * ok[i] = 1 for each record written. -1 if any was not. */
int store_put_batch(store *s, sched_rec *const *recs, size_t n, int *ok);

/* Fast track / retry: sends the record's wire form to the delay queue with
 * DelaySeconds = floor((due - now - SCHED_DELAY_MARGIN_MS) / 1 s) clamped to 0..900. msg_id may be
 * NULL. The payload is left out of the body (nopayload) when it would make
 * the message exceed SQS's size limit. */
int store_send(store *s, const sched_rec *r, buf_t *msg_id);
/* The same for up to 10 records in one SendMessageBatch; ok[i] per record. */
int store_send_batch(store *s, sched_rec *const *recs, size_t n, int *ok);

/* ----------------------------------------------------------- transitions
 * One conditional UpdateItem each (docs/schema.md "States and transitions").
 * Every one sets state, updated, the by_state keys and appends {s, t} to
 * hist; entering a final state sets expires and removes the due keys and
 * lease; (re-)entering a waiting state removes expires and (re)writes the
 * due keys at the index minute of max(due, lease or now). */

/* NEW -> ENQUEUED (scanner claim): condition state = NEW. Sets lease,
 * claims + 1. out (ALL_OLD) holds the full content for the wire. */
int store_claim(store *s, const char *id, int64_t lease, sched_rec *out);
/* ENQUEUED -> ENQUEUED (scanner re-claim of a lapsed lease): condition
 * state = ENQUEUED AND lease = seen_lease AND lease < now. Sets new_lease,
 * claims + 1, removes pub_msg and moves the due keys to new_lease's minute.
 * out: full content. */
int store_reclaim(store *s, const char *id, int64_t due, int64_t seen_lease, int64_t new_lease,
                  sched_rec *out);
/* The back-off lease for a re-claim: now + grace * 2^min(claims, 5). */
int64_t store_reclaim_lease(const store *s, int64_t now, int64_t claims);
/* ENQUEUED -> NEW (sqs-push gave up): condition state = ENQUEUED AND
 * lease = the claim's lease. Removes lease; the due keys move to the
 * minute of max(due, now) so the scanner's recovery pass meets it again. */
int store_unclaim(store *s, const char *id, int64_t due, int64_t lease, sched_rec *out);
/* ENQUEUED -> PUBLISHED (sns-publish commit): condition chash = w's chash
 * AND (state = ENQUEUED OR (state = PUBLISHED AND pub_msg = msg_id)).
 * Sets pub_msg, attempts + 1, expires; out (ALL_OLD) has the full content
 * (use it when w->nopayload). out->state tells a first commit (ENQUEUED)
 * from the replay of the same delivery (PUBLISHED). */
int store_commit(store *s, const sched_wire *w, const char *msg_id, sched_rec *out);
/* PUBLISHED -> ENQUEUED (SNS refused; SQS will redeliver): condition
 * state = PUBLISHED AND pub_msg = msg_id. Sets last_error, lease (when the
 * scanner may take over if SQS never redelivers), due keys at its minute. */
int store_unpublish(store *s, const sched_wire *w, const char *msg_id, const char *error,
                    int64_t lease, sched_rec *out);
/* ENQUEUED -> FAILED (message dead-lettered / attempts exhausted):
 * condition state = ENQUEUED AND chash = w's chash AND (lease = w's lease
 * OR pub_msg = w->mid): the dead message is the current copy, not one left
 * over from before a re-claim (STORE_LOST with out->state ENQUEUED then).
 * Sets last_error. */
int store_fail(store *s, const sched_wire *w, const char *error, sched_rec *out);
/* NEW, ENQUEUED -> INVALID (content can never run): condition state IN
 * (NEW, ENQUEUED). Sets last_error. */
int store_invalid(store *s, const char *id, const char *error, sched_rec *out);
/* from (NEW or ENQUEUED) -> INVALID for a row the scanner cannot claim
 * (a poison row: an attribute of the wrong type, an item too large to
 * update). Condition state = from (AND lease = lease when lease > 0).
 * Sets last_error = reason; when even that is refused as invalid, writes
 * again without appending to hist (hist may be what is malformed). The
 * item may be unreadable: on success out gets at least the id, and its
 * state is -1 when the old image could not be read. */
int store_set_aside(store *s, const char *id, int from, int64_t lease, const char *reason, sched_rec *out);
/* NEW, ENQUEUED -> CANCELLED: condition state IN (NEW, ENQUEUED). */
int store_cancel(store *s, const char *id, sched_rec *out);
/* FAILED -> ENQUEUED (retry, fast track): condition state = FAILED. Sets
 * lease = now + grace, claims 0; keeps due, attempts, last_error. out: full
 * content (the caller sends it, then store_unclaim()s on SQS failure). */
int store_retry(store *s, const char *id, int64_t lease, sched_rec *out);
/* DeleteItem, condition attribute_exists(id). out: the deleted record. */
int store_delete(store *s, const char *id, sched_rec *out);

/* ----------------------------------------------------------- due index */

typedef struct {
    char *id;
    int64_t due;      /* from due_sk */
    int state;
    int64_t lease;    /* 0 when none */
    int64_t claims;
} store_due_row;

typedef struct {
    store_due_row *v;
    size_t n;
} store_due_rows;

/* One Query page of the due index for partition (minute, shard), due_sk
 * between from_ms and to_ms inclusive (INT64_MIN / INT64_MAX: the whole
 * minute). lek: the page cursor (LastEvaluatedKey JSON): empty for the first
 * page; on return empty when there are no more pages. Rows are appended. */
int store_due_page(store *s, int64_t minute, int shard, int64_t from_ms, int64_t to_ms,
                   buf_t *lek, store_due_rows *out);
/* Every page of the same. */
int store_due_query(store *s, int64_t minute, int shard, int64_t from_ms, int64_t to_ms,
                    store_due_rows *out);
/* Main pass helper: every minute partition from from_ms's minute to to_ms's,
 * rows with due in [from_ms, to_ms], oldest minute first. Rows re-entered
 * at a later index minute (see docs/schema.md) are found by the recovery
 * pass, which reads whole minutes with store_due_query(INT64_MIN, INT64_MAX). */
int store_due_range(store *s, int shard, int64_t from_ms, int64_t to_ms, store_due_rows *out);
void store_due_rows_free(store_due_rows *r);

/* ----------------------------------------------------------- checkpoints */

/* The scanner's recovery checkpoint of a shard (a minute number);
 * STORE_NOTFOUND (and *minute = -1) when none was written yet. */
int store_ckpt_get(store *s, int shard, int64_t *minute);
/* Advances it to minute, only forward: STORE_LOST when it was already
 * at or past minute. */
int store_ckpt_advance(store *s, int shard, int64_t minute);

/* ----------------------------------------------------------- counters */

/* A batch of counter deltas the caller accumulates and flushes (one
 * UpdateItem ADD per counter item). */
store_counts *store_counts_new(void);
void store_counts_free(store_counts *c);
/* delta for state (and state+topic when topic is not NULL). */
void store_counts_add(store_counts *c, int state, const char *topic, int64_t delta);
/* A transition: from -1, to +1 (from < 0: a creation; to < 0: a deletion). */
void store_counts_move(store_counts *c, int from, int to, const char *topic);
int store_counts_pending(const store_counts *c);   /* non-zero deltas held */
/* Writes the deltas; what could not be written is kept for the next flush. */
int store_counts_flush(store *s, store_counts *c);

typedef struct {
    int64_t n[SCHED_NSTATES];
    struct store_topic_stat { char *arn; int64_t n[SCHED_NSTATES]; } *topic;
    size_t ntopic;
} store_stats;

/* Reads the counters with BatchGetItem (retrying UnprocessedKeys);
 * by_topic adds per-topic counts. */
int store_stats_read(store *s, int by_topic, store_stats *out);
void store_stats_free(store_stats *st);
/* Rebuilds every counter from the by_state index (Select=COUNT-style
 * Queries over every month since init, ignoring expired items) and writes
 * the absolute values. The result is left in out (may be NULL). */
int store_stats_recount(store *s, store_stats *out);

/* ----------------------------------------------------------- list */

typedef struct {
    int states[SCHED_NSTATES];  /* which states (nstates == 0: all) */
    int nstates;
    int64_t from_ms, to_ms;     /* updated range, inclusive; 0 / INT64_MAX = open */
    const char *topic;          /* ARN filter or NULL */
    const char *error_prefix;   /* last_error prefix filter or NULL */
    const char *cursor;         /* from a previous page, or NULL */
    long limit;                 /* > 0 */
} store_list_q;

/* Newest first (by updated), merged over the states' by_state partitions,
 * Query only. emit is called per record (projected fields; full = 0); a
 * non-zero return stops the listing. next_cursor gets an opaque cursor when
 * more records may follow, else is left empty. */
int store_list(store *s, const store_list_q *q, int (*emit)(void *ctx, const sched_rec *r), void *ctx,
               buf_t *next_cursor);
/* 0 if cursor is one store_list printed, else -1 with "cursor: ..." in err. */
int store_cursor_check(const char *cursor, char *err, size_t errlen);
/* The number of records matching q (limit and cursor ignored). */
int store_list_count(store *s, const store_list_q *q, int64_t *count);

/* ----------------------------------------------------------- events */

/* Queues the lifecycle event `type` ("schedule.created", ...) for r (after
 * its state change to `state` was written; r gives id, due, topic,
 * attempts). at: the transition time; error may be NULL. A no-op when
 * events are off. Publishes by itself once 10 are queued. */
void store_event(store *s, const char *type, const sched_rec *r, int state, int64_t at, const char *error);
/* Publishes what is queued with PublishBatch (<= 10 per request). Failures
 * are counted (ev_failed) and described in ev_err, never retried for long:
 * returns -1 if any event was lost. Queued events are dropped either way. */
int store_events_flush(store *s);
#endif
