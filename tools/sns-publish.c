/* sns-publish: the pipeline stage that fires schedules (docs/schema.md
 * "Why PUBLISHED is written just before publishing", issue 4). It takes the
 * wire records sqs-drain sends (with "mid", "rh", "rc"), holds each one until
 * its due millisecond, commits ENQUEUED -> PUBLISHED --commit-lead before
 * that, publishes with PublishBatch when time_now_ms() >= due (never early),
 * deletes the SQS message once SNS accepted it and reports to state-update.
 *
 * Threads (an aws_client, a store and a zpipe are not thread-safe: each
 * thread owns its own):
 *   main        reads the input, keeps a min-heap by due and hands each
 *               record to the committers at due - commit-lead. It waits on
 *               its input with the next commit time as timeout.
 *   committers  (--commit-threads, 4) store_commit with the SQS MessageId;
 *               the outcome decides: publish, drop, or hand back. Several,
 *               because one commit is a DynamoDB round trip (2-10 ms, more
 *               on a busy DynamoDB Local): 4 in flight carry a few hundred
 *               schedules/s, and one slow call does not hold up the next.
 *   publishers  (--publish-threads, 2) wait on a heap of committed records
 *               for the earliest due (a condition variable timed on the
 *               monotonic clock; due is compared against the wall clock),
 *               then publish what has come due for one topic (10 a batch).
 *               Two, so that a PublishBatch in flight does not delay the
 *               next due record: this is the hot path measured in issue 6.
 *               --linger L (default 5 ms) trades a little lateness for
 *               fewer requests: a batch waits for the records of its topic
 *               that come due within L of its first one (see fire_time:
 *               they are known in advance, so a lone record is not held
 *               back). At 200 schedules/s L = 0 means about one
 *               PublishBatch per schedule; 5 ms about two schedules per
 *               request, with the first of a batch at most 5 ms late,
 *               within issue 6's p50 <= 3 ms / p99 <= 10 ms.
 *   tail        owns the output and an SQS client: DeleteMessageBatch of
 *               published / dropped messages (batched: 10, or after
 *               --delete-flush; deletion time does not affect precision),
 *               visibility changes, store_unpublish after a failed publish,
 *               the reports, and the visibility extension below.
 *
 * Outcomes of the commit (the conditional write decides, not this process):
 *   won (was ENQUEUED)                  publish at due what the commit
 *                                       returned (the table's record)
 *   won (was PUBLISHED, same pub_msg)   the same delivery came back after a
 *                                       crash between commit and publish:
 *                                       publish again (at least once)
 *   CANCELLED                           delete the message, drop
 *   PUBLISHED with another pub_msg      a second copy (a re-claim): delete, drop
 *   gone, FAILED, INVALID, NEW, or the  delete, drop (a NEW schedule is the
 *   content changed (chash)             scanner's again: it will re-send it)
 *   DynamoDB error                      hand back with back-off, state unchanged
 * A publish SNS refused: store_unpublish (PUBLISHED -> ENQUEUED with
 * last_error "Code: message"), visibility = --retry-backoff * 2^(rc-1)
 * (capped at 15 min) so SQS redelivers it later; after the queue's
 * maxReceiveCount it moves to the dead-letter queue and state-update ends
 * the schedule FAILED (sqs-drain --queue dead reports it).
 *
 * Visibility. This process holds messages between their arrival and their
 * deletion, so it is the one that must keep them invisible: a message held
 * longer than half the queue's visibility timeout has its visibility
 * extended (a registry of every held message, scanned once a second by the
 * tail). Otherwise SQS would deliver it again while it is still here, and
 * the second delivery, carrying the same MessageId, would pass the commit
 * as a "replay" and publish twice. A record due more than --max-hold
 * ahead is not held at all: its visibility is set to the whole seconds left
 * (rounded down, so it comes back before its time) and it is forgotten.
 *
 * SIGTERM: stop reading; records not committed yet go back to the queue
 * (visibility 0, another instance takes them at once); committed ones are
 * published (they are due within commit-lead), deleted and reported; exit
 * 0. End of input (stdin): everything held is published at its time first.
 * SIGKILL at any moment loses nothing: an uncommitted message reappears
 * after its visibility timeout; a committed one too, and its replay
 * publishes it (at least once); a published but not yet deleted one is
 * published again (a duplicate, allowed only after a crash; the message
 * carries delayer.id for the consumer to de-duplicate).
 *
 * Reports (NDJSON on --out, for state-update): the wire record without its
 * payload ("nopayload":true) and without "rh", with "report" and:
 *   "published"       "at" (epoch ms when PublishBatch returned), "late_ms"
 *                     and "late_us" (at - due), "attempts" (after this one),
 *                     "from" (state before the commit: "ENQUEUED", or
 *                     "PUBLISHED" for a replay)
 *   "publish_failed"  "error" ("Code: message"), "attempts", "state" (what
 *                     the record is now: "ENQUEUED", or "PUBLISHED" if the
 *                     revert failed), "retry_s" (visibility back-off)
 * Records that already carry a "report" (e.g. sqs-drain's "invalid") are
 * passed on unchanged. Reports are not durable (the table is): ones the
 * output does not take are kept (up to 10,000) and sent later.
 *
 * Test hook (tests only, never in production): DELAYER_TEST_CRASH_AFTER_COMMIT=1
 * makes the process _exit(137) right after its first won commit, i.e. a
 * SIGKILL between commit and publish. */
#include "aws.h"
#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include "sns.h"
#include "sqs.h"
#include "stage.h"
#include "store.h"
#include "timeutil.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VIS_MAX      43200      /* SQS's longest visibility timeout, s */
#define BACKOFF_MAX  900        /* longest retry back-off, s */
#define OUTBOX_MAX   10000      /* reports kept while the output does not take them */
#define SNS_REQ_MAX  262144     /* PublishBatch: all entries together */
#define FIFO_ID_MAX  128        /* MessageGroupId / MessageDeduplicationId */
#define FULL_POLL_MS 20         /* at the memory bound, how often it looks again */
#define FULL_LOG_MS  10000      /* ...and how often it says so */

/* ------------------------------------------------------------ options */

static const stage_opt opts[] = {
    {"prefix", "P", "deployment prefix [$DELAYER_PREFIX or delayer]"},
    {"queue", "Q", "queue the input comes from (deletes, visibility): delay or a queue URL [delay]"},
    {"commit-lead", "DURATION", "commit ENQUEUED -> PUBLISHED this long before due [50ms]"},
    {"linger", "DURATION", "publish together what comes due within this long of the first (fewer requests; the first waits at most this) [5ms]"},
    {"max-hold", "DURATION", "records due later than this are handed back to SQS until nearer their time [5s]"},
    {"retry-backoff", "DURATION", "after a failed publish SQS redelivers after this * 2^(receives-1), at most 15m [2s]"},
    {"delete-flush", "DURATION", "longest wait to fill a DeleteMessageBatch [250ms]"},
    {"commit-threads", "N", "concurrent DynamoDB commits, 1-16 [4]"},
    {"publish-threads", "N", "concurrent PublishBatch requests, 1-16 [2]"},
    {"max-held", "N", "records held in memory at most; at the bound the input is not read (sqs-drain stops receiving, SQS keeps the rest) [10000]"},
    {"max-held-mb", "MB", "bytes of records held in memory at most, in MiB (the same) [64]"},
    {NULL, NULL, NULL}};

static const stage_spec spec = {
    "sns-publish", "Publishes each schedule to its SNS topic at its due millisecond, never early; reports to state-update.",
    1, 1, opts, NULL};

typedef struct {
    const char *prefix, *queue;
    int64_t lead_ms, linger_ms, max_hold_ms, backoff_ms, del_flush_ms;
    int ncommit, npublish;
    long max_held;
    size_t max_held_bytes;
} config;

static int read_config(const stage_opts *o, config *c)
{
    long ncommit, npublish, mb;
    if (stage_opt_queue(o, 0, &c->queue) < 0 || stage_opt_prefix(o, &c->prefix) < 0 ||
        stage_opt_duration(o, "commit-lead", 50, 10000, &c->lead_ms) < 0 ||
        stage_opt_duration(o, "linger", 5, 1000, &c->linger_ms) < 0 ||
        stage_opt_duration(o, "max-hold", 5000, 600000, &c->max_hold_ms) < 0 ||
        stage_opt_duration(o, "retry-backoff", 2000, BACKOFF_MAX * 1000, &c->backoff_ms) < 0 ||
        stage_opt_duration(o, "delete-flush", 250, 10000, &c->del_flush_ms) < 0 ||
        stage_opt_long(o, "commit-threads", 1, 16, 4, &ncommit) < 0 ||
        stage_opt_long(o, "publish-threads", 1, 16, 2, &npublish) < 0 ||
        stage_opt_long(o, "max-held", 1, 10000000, 10000, &c->max_held) < 0 ||
        stage_opt_long(o, "max-held-mb", 1, 1048576, 64, &mb) < 0)
        return STAGE_EXIT_USAGE;
    c->max_held_bytes = (size_t)mb << 20;
    c->ncommit = (int)ncommit;
    c->npublish = (int)npublish;
    if (c->del_flush_ms < 1) c->del_flush_ms = 1;   /* the tail's timer: 0 would spin */
    return 0;
}

/* ------------------------------------------------------------ items */

enum fate { F_NONE, F_PUBLISHED, F_DROP, F_FAILED, F_RELEASE, F_REPORT, F_EXPIRED };

/* One record from the input, from arrival to its end in the tail thread
 * (which alone frees it). It is in at most one queue at a time. */
typedef struct item {
    struct item *next;          /* commit queue / tail jobs */
    struct item *rprev, *rnext; /* registry of held SQS messages */
    sched_wire w;
    char *line;                 /* F_REPORT: the record as received */
    size_t len;
    int fate;
    int vis;                    /* F_RELEASE / F_FAILED: visibility, s */
    int registered;
    int64_t ext_at;             /* mono ms: extend visibility then (registry) */
    int vis_s;                  /* its visibility timeout: the receive's ("rv") or the queue's */
    int in_del;                 /* the tail holds it for DeleteMessageBatch */
    size_t mem;                 /* bytes counted against --max-held-mb */
    int64_t vis_until;          /* mono ms: the message may be another's from then on
                                 * (atomic: the tail writes it, workers read it) */
    int64_t attempts;           /* after the commit */
    int from;                   /* state before the commit */
    int64_t at;                 /* wall ms when PublishBatch returned */
    int64_t late_us;
    int64_t t_arrived, t_committed; /* wall ms, for the debug log */
    int64_t commit_us;              /* how long the commit took */
    char *error;                /* publish error, "Code: message" */
    int del_tries;              /* DeleteMessageBatch entry failures so far */
    int64_t del_retry_at;       /* mono ms: try the delete again then */
} item;

static void held_sub(size_t mem);

static void item_free(item *it)
{
    held_sub(it->mem);
    sched_wire_free(&it->w);
    free(it->line);
    free(it->error);
    free(it);
}

/* A min-heap of items by due. */
typedef struct {
    item **v;
    size_t n, cap;
} heap;

static void heap_push(heap *h, item *it)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = xrealloc(h->v, h->cap * sizeof *h->v);
    }
    size_t i = h->n++;
    while (i && h->v[(i - 1) / 2]->w.r.due > it->w.r.due) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = it;
}

static item *heap_pop(heap *h)
{
    if (!h->n) return NULL;
    item *top = h->v[0], *last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->v[c + 1]->w.r.due < h->v[c]->w.r.due) c++;
        if (h->v[c]->w.r.due >= last->w.r.due) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

/* A FIFO of items. */
typedef struct {
    item *head, *tail;
} fifo;

static void fifo_push(fifo *q, item *it)
{
    it->next = NULL;
    if (q->tail) q->tail->next = it;
    else q->head = it;
    q->tail = it;
}

static item *fifo_take_all(fifo *q)
{
    item *h = q->head;
    q->head = q->tail = NULL;
    return h;
}

/* ------------------------------------------------------------ shared state */

static struct {
    config cfg;
    char *url;                  /* the queue the messages come from */
    int vis_s;                  /* its visibility timeout */
    int64_t grace_ms;           /* the deployment's lease slack */
    int crash_after_commit;     /* test hook */
    /* commit queue */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    fifo cq;
    int cclosing;
    /* committed, waiting for due */
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    heap ph;
    int pclosing;
    /* tail jobs */
    pthread_mutex_t tmu;
    pthread_cond_t tcv;
    fifo tq;
    size_t tq_n;                /* jobs in tq */
    int tclosing;
    /* registry of held messages (sentinel ring) */
    pthread_mutex_t rmu;
    item reg;
    /* counters */
    uint64_t n_in, n_published, n_dropped, n_failed, n_released, n_deferred, n_rejected, n_replayed, n_expired;
    uint64_t late_max_us;
    uint64_t r_publish, r_delete, r_visibility;   /* requests made (not counting retries) */
    /* --max-held / --max-held-mb: records in memory, from input to free */
    size_t held_n, held_bytes;
} P;

#define COUNT(x) __atomic_fetch_add(&P.x, 1, __ATOMIC_RELAXED)

/* The memory bound (--max-held, --max-held-mb): every record read counts
 * from its arrival until it is freed, whichever thread frees it. */
static void held_add(item *it, size_t mem)
{
    it->mem = mem;
    __atomic_fetch_add(&P.held_n, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&P.held_bytes, mem, __ATOMIC_RELAXED);
}

static void held_sub(size_t mem)
{
    if (!mem) return;
    __atomic_fetch_sub(&P.held_n, 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&P.held_bytes, mem, __ATOMIC_RELAXED);
}

static int held_full(void)
{
    return __atomic_load_n(&P.held_n, __ATOMIC_RELAXED) >= (size_t)P.cfg.max_held ||
           __atomic_load_n(&P.held_bytes, __ATOMIC_RELAXED) >= P.cfg.max_held_bytes;
}

static int64_t ts_ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec; }

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return ts_ns(&t);
}

static int64_t wall_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return ts_ns(&t);
}

/* Waits on c for at most ns nanoseconds (monotonic clock). */
static void cond_wait_ns(pthread_cond_t *c, pthread_mutex_t *m, int64_t ns)
{
    if (ns < 0) ns = 0;
    int64_t t = mono_ns() + ns;
    struct timespec ts = {t / 1000000000, t % 1000000000};
    pthread_cond_timedwait(c, m, &ts);
}

/* Visibility after a failed attempt: base * 2^(rc-1) seconds, capped. */
static int backoff_s(int64_t rc)
{
    int64_t ms = P.cfg.backoff_ms;
    for (int64_t i = 1; i < rc && ms < BACKOFF_MAX * 1000; i++) ms *= 2;
    int64_t s = ms / 1000;
    return s > BACKOFF_MAX ? BACKOFF_MAX : (int)s;
}

/* ------------------------------------------------------------ visibility guard */

/* SQS gives a received message to nobody else until its visibility runs
 * out; after that another sqs-drain may receive it, and the copy passes the
 * commit as a replay (same MessageId) and is published there. A process
 * that was paused (SIGSTOP, a frozen VM or container) past that time must
 * not publish what it holds, or the schedule is published twice. Nothing is
 * lost by not publishing: the message is not deleted, so it is delivered
 * again and published then (a replay of the commit).
 * vis_until is when, as far as this process knows, the visibility runs
 * out: from the record's "rt" (when sqs-drain received it), less a guard
 * (a sixth of the visibility timeout, at most 5 s: the clocks of two hosts
 * may differ a little). The tail moves it on with every extension (at half
 * the timeout, checked once a second: well before the guard starts) and
 * sets it to 0 when SQS says the receipt no longer holds the message. */
#define VIS_GUARD_MAX_MS 5000
#define SHORT_VIS_MS     5000   /* a visibility up to this is "short" (see vis_set) */
#define EXT_MARGIN_MS    400    /* extend a short one this long before vis_until */
#define EXT_CHECK_MS     100    /* the tail looks for messages to extend this often */

static void to_tail(item *it, int fate);

/* Also sets when the tail extends it (ext_at): a long visibility at half
 * its time; a short one (sqs-drain --visibility, a few seconds: a killed
 * holder's messages come back that soon) only EXT_MARGIN_MS before
 * vis_until, so that a message published and deleted on time, the usual
 * case, needs no extension at all. Called by the tail, or before the item
 * is registered. */
static void vis_set(item *it, int64_t from_mono_ms)
{
    int64_t vis = (int64_t)it->vis_s * 1000, guard = vis / 6 < VIS_GUARD_MAX_MS ? vis / 6 : VIS_GUARD_MAX_MS;
    __atomic_store_n(&it->vis_until, from_mono_ms + vis - guard, __ATOMIC_RELAXED);
    it->ext_at = vis <= SHORT_VIS_MS ? from_mono_ms + vis - guard - EXT_MARGIN_MS : from_mono_ms + vis / 2;
}

static int vis_expired(const item *it)
{
    return time_mono_ms() >= __atomic_load_n(&it->vis_until, __ATOMIC_RELAXED);
}

/* The caller holds it and found its visibility run out: let it go without
 * publishing or deleting (the tail unregisters and frees it). */
static void give_up_expired(item *it, const char *when)
{
    log_ev(LOG_WARN, "visibility ran out while the message was held (process paused?): not publishing it; SQS delivers it again",
           "id", it->w.r.id, "mid", it->w.mid, "when", when, NULL);
    COUNT(n_expired);
    metrics_count("delayer_expired_total", "messages let go because their visibility ran out while held", "", 1);
    to_tail(it, F_EXPIRED);
}

/* ------------------------------------------------------------ registry */

static void reg_add(item *it)
{
    /* The visibility runs from sqs-drain's receive ("rt"), which may lie
     * well in the past: a record that waited in a paused process's input. */
    int64_t now = time_mono_ms(), from = now;
    if (it->w.rt > 0) {
        int64_t age = time_now_ms() - it->w.rt;
        if (age > 0) from = now - age;
    }
    it->vis_s = it->w.rv > 0 ? (int)it->w.rv : P.vis_s;
    vis_set(it, from);
    pthread_mutex_lock(&P.rmu);
    it->rprev = P.reg.rprev;
    it->rnext = &P.reg;
    P.reg.rprev->rnext = it;
    P.reg.rprev = it;
    it->registered = 1;
    pthread_mutex_unlock(&P.rmu);
}

static void reg_del(item *it)
{
    if (!it->registered) return;
    pthread_mutex_lock(&P.rmu);
    it->rprev->rnext = it->rnext;
    it->rnext->rprev = it->rprev;
    it->registered = 0;
    pthread_mutex_unlock(&P.rmu);
}

/* ------------------------------------------------------------ hand-offs */

/* The tail wakes by itself every --delete-flush: it is woken early only
 * for what should not wait (a hand-back, a failure) or a full batch. That
 * saves a thread wake-up per published schedule. */
static void to_tail(item *it, int fate)
{
    it->fate = fate;
    pthread_mutex_lock(&P.tmu);
    fifo_push(&P.tq, it);
    if (++P.tq_n >= SQS_BATCH_MAX || fate == F_RELEASE || fate == F_FAILED) pthread_cond_signal(&P.tcv);
    pthread_mutex_unlock(&P.tmu);
}

static void to_commit(item *it)
{
    pthread_mutex_lock(&P.cmu);
    fifo_push(&P.cq, it);
    pthread_cond_signal(&P.ccv);
    pthread_mutex_unlock(&P.cmu);
}

static void to_publish(item *it)
{
    pthread_mutex_lock(&P.pmu);
    /* A publisher needs to look again only if the record changes when the
     * first batch goes: it is due before it, or joins it (linger). */
    int wake = !P.ph.n || it->w.r.due <= P.ph.v[0]->w.r.due + P.cfg.linger_ms;
    heap_push(&P.ph, it);
    if (wake) pthread_cond_signal(&P.pcv);
    pthread_mutex_unlock(&P.pmu);
}

static void release(item *it, int vis)
{
    it->vis = vis;
    COUNT(n_released);
    to_tail(it, F_RELEASE);
}

/* ------------------------------------------------------------ committers */

typedef struct {
    pthread_t th;
    store *s;
} committer;

static item *commit_pop(void)
{
    pthread_mutex_lock(&P.cmu);
    while (!P.cq.head && !P.cclosing) pthread_cond_wait(&P.ccv, &P.cmu);
    item *it = P.cq.head;
    if (it) {
        P.cq.head = it->next;
        if (!P.cq.head) P.cq.tail = NULL;
    }
    pthread_mutex_unlock(&P.cmu);
    return it;
}

/* The commit was refused: out says by what. Always a drop (see header). */
static void commit_lost(item *it, const sched_rec *out)
{
    const char *why = "stale message: the schedule changed";
    if (out->state == SCHED_CANCELLED) why = "cancelled";
    else if (out->state == SCHED_PUBLISHED && (!out->pub_msg || strcmp(out->pub_msg, it->w.mid) != 0))
        why = "duplicate copy: already published by another message";
    else if (out->state == SCHED_FAILED || out->state == SCHED_INVALID || out->state == SCHED_NEW)
        why = "stale message: the schedule is not enqueued";
    log_ev(LOG_INFO, "dropped", "id", it->w.r.id, "mid", it->w.mid, "state", sched_state_name(out->state), "why", why,
           NULL);
    COUNT(n_dropped);
    metrics_count("delayer_dropped_total", "messages dropped: cancelled, duplicate, stale or gone schedules", "", 1);
    to_tail(it, F_DROP);
}

/* A won commit returns the whole record as it was (ALL_OLD). What is
 * published is that record, not the message body: the table is the truth
 * (a body sent without its payload gets it back this way, and a body that
 * was altered on the way but kept its chash publishes nothing of its own).
 * The body's record goes to out, which the caller frees. */
static void commit_won(item *it, sched_rec *out)
{
    sched_rec body = it->w.r;
    it->w.r = *out;
    *out = body;
    it->w.nopayload = !it->w.r.payload;
    it->from = it->w.r.state;
    it->attempts = it->w.r.attempts + 1;
    it->t_committed = time_now_ms();
    if (it->from == SCHED_PUBLISHED) {
        COUNT(n_replayed);
        log_ev(LOG_INFO, "delivery came back after its commit: publishing again", "id", it->w.r.id, "mid", it->w.mid,
               NULL);
    }
    if (P.crash_after_commit) {
        log_ev(LOG_WARN, "test hook: exiting after a commit", "id", it->w.r.id, NULL);
        _exit(137);
    }
    to_publish(it);
}

static void *committer_main(void *arg)
{
    committer *c = arg;
    item *it;
    sched_rec out;
    sched_rec_init(&out);
    char b[24];
    while ((it = commit_pop()) != NULL) {
        if (vis_expired(it)) {
            give_up_expired(it, "before the commit");
            continue;
        }
        int64_t t0 = time_mono_us();
        int rc = store_commit(c->s, &it->w, it->w.mid, &out);
        it->commit_us = time_mono_us() - t0;
        if (rc == STORE_OK) commit_won(it, &out);
        else if (rc == STORE_LOST) commit_lost(it, &out);
        else if (rc == STORE_NOTFOUND) {
            log_ev(LOG_INFO, "dropped", "id", it->w.r.id, "mid", it->w.mid, "why", "the schedule is gone", NULL);
            COUNT(n_dropped);
            metrics_count("delayer_dropped_total", "messages dropped: cancelled, duplicate, stale or gone schedules", "", 1);
            to_tail(it, F_DROP);
        } else {
            int vis = backoff_s(it->w.rc);
            log_ev(LOG_ERROR, "commit failed: handing the message back", "id", it->w.r.id, "mid", it->w.mid, "error",
                   c->s->err, "retry_s", log_i64_buf(b, vis), NULL);
            release(it, vis);
        }
        sched_rec_free(&out);
    }
    return NULL;
}

/* ------------------------------------------------------------ publishers */

typedef struct {
    pthread_t th;
    aws_client *sns;
} publisher;

static size_t entry_size(const item *it)
{
    sched_sns_attrs a;
    sched_sns_attrs_build(&it->w.r, it->attempts, &a);
    return sched_sns_size(&it->w.r, &a);
}

/* Under P.pmu: when the batch headed by the earliest record goes (wall
 * ms). Without --linger at its due time. With it, at the due time of the
 * last record of the same topic due within linger of the first (10 at
 * most): records are committed commit-lead before their due time, so the
 * heap already holds what will come due in the next linger ms (when
 * linger <= commit-lead) and a batch never waits for nothing: a lone
 * record goes at once, a cluster goes together when its last member is
 * due. Lateness of the first member is at most linger. */
static int64_t fire_time(const item *top)
{
    int64_t d[SNS_BATCH_MAX], lim = top->w.r.due + P.cfg.linger_ms;
    size_t n = 0;
    if (!P.cfg.linger_ms) return top->w.r.due;
    for (size_t i = 0; i < P.ph.n; i++) {
        const item *it = P.ph.v[i];
        if (it->w.r.due > lim || strcmp(it->w.r.topic, top->w.r.topic) != 0) continue;
        /* keep the 10 earliest, sorted */
        size_t k = n < SNS_BATCH_MAX ? n++ : SNS_BATCH_MAX;
        if (k == SNS_BATCH_MAX && it->w.r.due >= d[k - 1]) continue;
        if (k == SNS_BATCH_MAX) k--;
        while (k && d[k - 1] > it->w.r.due) {
            d[k] = d[k - 1];
            k--;
        }
        d[k] = it->w.r.due;
    }
    return d[n - 1];
}

/* Under P.pmu: waits until the batch headed by the earliest record is due
 * to go (fire_time). 0 when closing and empty. */
static int wait_due(void)
{
    for (;;) {
        if (!P.ph.n) {
            if (P.pclosing) return 0;
            pthread_cond_wait(&P.pcv, &P.pmu);
            continue;
        }
        int64_t now = wall_ns(), fire = fire_time(P.ph.v[0]) * 1000000;
        if (now >= fire) return 1;
        /* at most 1 s: re-read the wall clock, which may have been stepped */
        cond_wait_ns(&P.pcv, &P.pmu, fire - now < 1000000000 ? fire - now : 1000000000);
    }
}

/* Takes up to 10 records due by now for the earliest one's topic, within
 * PublishBatch's size limit. Returns how many (0: closing). */
static size_t take_batch(item **b)
{
    pthread_mutex_lock(&P.pmu);
    size_t n = 0;
    if (wait_due()) {
        int64_t now = time_now_ms();
        heap rest = {0};
        size_t size = 0;
        const char *topic = P.ph.v[0]->w.r.topic;
        while (P.ph.n && P.ph.v[0]->w.r.due <= now) {
            item *it = heap_pop(&P.ph);
            size_t sz = entry_size(it);
            if (n < SNS_BATCH_MAX && strcmp(it->w.r.topic, topic) == 0 && (n == 0 || size + sz <= SNS_REQ_MAX)) {
                b[n++] = it;
                size += sz;
            } else {
                heap_push(&rest, it);
            }
        }
        for (size_t i = 0; i < rest.n; i++) heap_push(&P.ph, rest.v[i]);
        free(rest.v);
        if (rest.n) pthread_cond_signal(&P.pcv);   /* another publisher takes them */
    }
    pthread_mutex_unlock(&P.pmu);
    return n;
}

/* A FIFO MessageGroupId / MessageDeduplicationId: the value itself when SNS
 * accepts it (1-128 printable ASCII characters), else a SHA-256 of it. */
static void fifo_id(const char *s, char out[FIFO_ID_MAX + 1])
{
    size_t n = strlen(s);
    int ok = n > 0 && n <= FIFO_ID_MAX;
    for (size_t i = 0; ok && i < n; i++) ok = s[i] > 0x20 && s[i] < 0x7f;
    if (ok) {
        memcpy(out, s, n + 1);
        return;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL);
    strcpy(out, "sha256-");
    for (unsigned i = 0; i < mdlen; i++) snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

static int is_fifo(const char *topic)
{
    size_t n = strlen(topic);
    return n > 5 && strcmp(topic + n - 5, ".fifo") == 0;
}

static const char *attr_of(const sched_rec *r, const char *name)
{
    for (size_t i = 0; i < r->nattrs; i++)
        if (strcmp(r->attrs[i].name, name) == 0) return r->attrs[i].value;
    return NULL;
}

/* The strings one entry points to. */
typedef struct {
    sched_sns_attrs a;
    aws_kv kv[SCHED_ATTRS_MAX];
    char group[FIFO_ID_MAX + 1], dedup[FIFO_ID_MAX + 1];
} entry_mem;

/* Message attributes: sched_sns_attrs_build's, the very list the input
 * check counted: delayer.id, delayer.due, delayer.attempt first, always,
 * then the user's. A record older than the limit on user attributes loses
 * the excess (logged), never delayer's own: consumers de-duplicate on
 * delayer.id. */
static size_t entry_attrs(const item *it, entry_mem *m)
{
    sched_sns_attrs_build(&it->w.r, it->attempts, &m->a);
    for (size_t i = 0; i < m->a.n; i++) m->kv[i] = (aws_kv){m->a.kv[i].name, m->a.kv[i].value};
    if (m->a.dropped)
        log_ev(LOG_WARN, "too many user attributes (a record older than the limit): the excess left out", "id",
               it->w.r.id, "dropped", log_i64_buf((char[24]){0}, (int64_t)m->a.dropped), NULL);
    return m->a.n;
}

static void build_entry(const item *it, sns_publish_entry *e, entry_mem *m)
{
    memset(e, 0, sizeof *e);
    e->message = it->w.r.payload ? it->w.r.payload : "";
    e->attrs = m->kv;
    e->nattrs = entry_attrs(it, m);
    if (is_fifo(it->w.r.topic)) {
        const char *g = attr_of(&it->w.r, "delayer.group");
        fifo_id(g ? g : it->w.r.id, m->group);
        fifo_id(it->w.r.id, m->dedup);
        e->group_id = m->group;
        e->dedup_id = m->dedup;
    }
}

static void set_error(item *it, const char *code, const char *msg)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "%s: %s", *code ? code : "Error", *msg ? msg : "no message");
    free(it->error);
    it->error = b.p;
}

static void publish(publisher *p, item **b, size_t n)
{
    sns_publish_entry ent[SNS_BATCH_MAX] = {{0}};
    entry_mem mem[SNS_BATCH_MAX];
    aws_entry_result res[SNS_BATCH_MAX];
    aws_err e;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (vis_expired(b[i])) give_up_expired(b[i], "before the publish");
        else b[k++] = b[i];
    }
    if (!(n = k)) return;
    for (size_t i = 0; i < n; i++) build_entry(b[i], &ent[i], &mem[i]);
    int rc = sns_publish_batch(p->sns, b[0]->w.r.topic, ent, n, res, &e);
    COUNT(r_publish);
    metrics_hist("delayer_batch_size", "entries per AWS batch request", "api=\"PublishBatch\"", metrics_batch_bounds, metrics_batch_nbounds, (double)n);
    int64_t at_ns = wall_ns();
    for (size_t i = 0; i < n; i++) {
        item *it = b[i];
        it->at = at_ns / 1000000;
        it->late_us = (at_ns - it->w.r.due * 1000000) / 1000;
        if (rc == 0 && res[i].ok) {
            COUNT(n_published);
            metrics_count("delayer_published_total", "schedules published to SNS", "", 1); metrics_hist("delayer_lateness_ms", "publish time minus due time, ms (early counts as 0)", "", metrics_ms_bounds, metrics_ms_nbounds, it->late_us > 0 ? (double)it->late_us / 1000.0 : 0);
            uint64_t l = it->late_us > 0 ? (uint64_t)it->late_us : 0, cur = __atomic_load_n(&P.late_max_us, __ATOMIC_RELAXED);
            while (l > cur && !__atomic_compare_exchange_n(&P.late_max_us, &cur, l, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
            to_tail(it, F_PUBLISHED);
        } else {
            if (rc == 0) set_error(it, res[i].code, res[i].message);
            else set_error(it, e.code, e.message);
            COUNT(n_failed);
            metrics_count("delayer_failed_total", "records a stage gave up on (reported failed)", "op=\"publish\"", 1);
            to_tail(it, F_FAILED);
        }
    }
}

static void *publisher_main(void *arg)
{
    publisher *p = arg;
    item *b[SNS_BATCH_MAX];
    size_t n;
    while ((n = take_batch(b)) > 0) publish(p, b, n);
    return NULL;
}

/* ------------------------------------------------------------ tail */

typedef struct {
    pthread_t th;
    store *s;                   /* store_unpublish */
    aws_client *sqs;
    zpipe_out *out;
    item **del;                 /* waiting for DeleteMessageBatch */
    size_t ndel, capdel;
    int64_t del_since;          /* mono ms of the oldest */
    item **vis;                 /* waiting for ChangeMessageVisibilityBatch */
    size_t nvis, capvis;
    item **rdel;                /* deletes to try again (a failed entry), at del_retry_at */
    size_t nrdel, caprdel;
    char **outbox;              /* reports not sent yet */
    size_t nout, capout;
    int out_dead;               /* stdout's reader is gone */
    uint64_t out_dropped;
    int64_t ext_next;
} tail;

static void push_ptr(void ***v, size_t *n, size_t *cap, void *p)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 32;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = p;
}

/* Report line: the wire record (no payload, no receipt handle) plus extra
 * members. extra is ",\"k\":v..." or "". */
static char *report_line(item *it, const char *report, const char *extra)
{
    buf_t b = BUF_INIT;
    char *rh = it->w.rh, *err = it->w.error;
    int np = it->w.nopayload;
    it->w.rh = NULL;
    it->w.error = it->error;
    it->w.nopayload = 1;
    it->w.report = (char *)report;
    sched_wire_write(&b, &it->w);
    it->w.rh = rh;
    it->w.error = err;
    it->w.nopayload = np;
    it->w.report = NULL;
    b.len -= 2;                 /* "}\n" */
    buf_adds(&b, extra);
    buf_addc(&b, '}');
    return b.p;
}

static void outbox_add(tail *t, char *line)
{
    if (t->out_dead) {
        free(line);
        return;
    }
    if (t->nout == OUTBOX_MAX) {
        if (!t->out_dropped++) log_ev(LOG_WARN, "output does not take reports: dropping the oldest", NULL);
        free(t->outbox[0]);
        memmove(t->outbox, t->outbox + 1, (t->nout - 1) * sizeof *t->outbox);
        t->nout--;
    }
    push_ptr((void ***)&t->outbox, &t->nout, &t->capout, line);
}

/* Sends what the output takes without waiting. */
static void outbox_flush(tail *t, int timeout_ms)
{
    size_t i = 0;
    for (; i < t->nout; i++) {
        if (zpipe_out_send(t->out, t->outbox[i], strlen(t->outbox[i]), timeout_ms) == 0) {
            free(t->outbox[i]);
            continue;
        }
        if (errno == EAGAIN) break;
        if (errno == EPIPE) {
            log_ev(LOG_ERROR, "output closed by its reader: reports are dropped from now on", NULL);
            t->out_dead = 1;
        } else {
            log_ev(LOG_ERROR, "report not sendable", "error", strerror(errno), NULL);
        }
        free(t->outbox[i]);
        if (t->out_dead) {
            for (size_t k = i + 1; k < t->nout; k++) free(t->outbox[k]);
            i = t->nout;
            break;
        }
    }
    if (!i) return;
    memmove(t->outbox, t->outbox + i, (t->nout - i) * sizeof *t->outbox);
    t->nout -= i;
}

static void on_published(tail *t, item *it)
{
    char extra[256];
    snprintf(extra, sizeof extra, ",\"at\":%lld,\"late_ms\":%lld,\"late_us\":%lld,\"attempts\":%lld,\"from\":\"%s\"",
             (long long)it->at, (long long)(it->late_us / 1000), (long long)it->late_us, (long long)it->attempts,
             sched_state_name(it->from));
    if (log_level() <= LOG_DEBUG) {
        char a[24], b[24], c[24], d[24];
        log_ev(LOG_DEBUG, "published", "id", it->w.r.id, "mid", it->w.mid, "late_us", log_i64_buf(a, it->late_us),
               "arrived_ms_before", log_i64_buf(b, it->w.r.due - it->t_arrived), "committed_ms_before",
               log_i64_buf(c, it->w.r.due - it->t_committed), "commit_us", log_i64_buf(d, it->commit_us), NULL);
    }
    outbox_add(t, report_line(it, "published", extra));
}

/* SNS refused: back to ENQUEUED with the error, SQS redelivers later. */
static void on_failed(tail *t, item *it)
{
    sched_rec old;
    sched_rec_init(&old);
    it->vis = backoff_s(it->w.rc);
    int64_t lease = time_now_ms() + (int64_t)it->vis * 1000 + P.grace_ms;
    int rc = store_unpublish(t->s, &it->w, it->w.mid, it->error, lease, &old);
    const char *state = rc == STORE_OK ? "ENQUEUED" : "PUBLISHED";
    char b[24], extra[128];
    log_ev(LOG_WARN, "publish failed: SQS will redeliver", "id", it->w.r.id, "mid", it->w.mid, "error", it->error,
           "retry_s", log_i64_buf(b, it->vis), NULL);
    if (rc != STORE_OK)
        log_ev(LOG_ERROR, "could not revert the commit", "id", it->w.r.id, "error", t->s->err, NULL);
    snprintf(extra, sizeof extra, ",\"attempts\":%lld,\"state\":\"%s\",\"retry_s\":%d", (long long)it->attempts, state,
             it->vis);
    outbox_add(t, report_line(it, "publish_failed", extra));
    sched_rec_free(&old);
}

static void finish(item *it)
{
    reg_del(it);
    item_free(it);
}

/* A failed DeleteMessageBatch entry. Left alone, the message comes back
 * when its visibility runs out and its replay publishes it a second time.
 * One SQS could not handle (SenderFault false, throttling, an internal
 * error) is tried again with the same receipt handle, after 250 ms, 0.5,
 * 1, 2 and 4 s, as long as this process holds the message (the registry
 * keeps extending its visibility) and its visibility has not run out; a
 * permanent one (ReceiptHandleIsInvalid: the receipt no longer holds the
 * message) is logged and counted, as is a retryable one after the last try. */
#define DEL_TRIES_MAX     5
#define DEL_RETRY_BASE_MS 250

static int delete_retryable(const aws_entry_result *r)
{
    return !r->sender_fault || strstr(r->code, "Throttl") || !strcmp(r->code, "InternalError") ||
           !strcmp(r->code, "InternalFailure") || !strcmp(r->code, "ServiceUnavailable");
}

static void delete_failed(tail *t, item *it, const aws_entry_result *r, int final)
{
    char b[24];
    int retry = delete_retryable(r);
    if (retry && !final && it->del_tries < DEL_TRIES_MAX && !vis_expired(it)) {
        int64_t wait = (int64_t)DEL_RETRY_BASE_MS << it->del_tries++;
        it->del_retry_at = time_mono_ms() + wait;
        log_ev(LOG_WARN, "delete failed: trying again", "id", it->w.r.id, "mid", it->w.mid, "code", r->code, "error",
               r->message, "retry_ms", log_i64_buf(b, wait), NULL);
        push_ptr((void ***)&t->rdel, &t->nrdel, &t->caprdel, it);
        return;
    }
    log_ev(LOG_ERROR,
           retry ? "delete failed, retries exhausted: SQS delivers the message again (a duplicate publish)"
                 : "delete failed permanently: SQS delivers the message again (a duplicate publish)",
           "id", it->w.r.id, "mid", it->w.mid, "code", r->code, "error", r->message, "tries",
           log_i64_buf(b, it->del_tries + 1), NULL);
    metrics_count("delayer_failed_total", "records a stage gave up on (reported failed)", "op=\"delete\"", 1);
    finish(it);
}

/* Deletes to try again whose time came (all of them at the end) join the
 * next DeleteMessageBatch, which goes at once. */
static void requeue_deletes(tail *t, int all)
{
    int64_t now = time_mono_ms();
    size_t keep = 0;
    for (size_t i = 0; i < t->nrdel; i++) {
        item *it = t->rdel[i];
        if (!all && it->del_retry_at > now) {
            t->rdel[keep++] = it;
            continue;
        }
        if (!t->ndel) t->del_since = now - P.cfg.del_flush_ms;
        push_ptr((void ***)&t->del, &t->ndel, &t->capdel, it);
    }
    t->nrdel = keep;
}

/* DeleteMessageBatch of what is waiting: everything when all is set (the
 * --delete-flush time passed, or the end), else only full batches of 10,
 * the rest waiting for more (a remainder sent at once would cost a request
 * for a few messages). Messages whose call failed stay (next flush) unless
 * final is set; failed entries: delete_failed. */
static void flush_deletes(tail *t, int all, int final)
{
    sqs_handle_entry ent[SQS_BATCH_MAX];
    aws_entry_result res[SQS_BATCH_MAX];
    aws_err e;
    size_t keep = 0, end = all ? t->ndel : t->ndel - t->ndel % SQS_BATCH_MAX;
    for (size_t i = 0; i < end; i += SQS_BATCH_MAX) {
        size_t m = end - i < SQS_BATCH_MAX ? end - i : SQS_BATCH_MAX;
        for (size_t k = 0; k < m; k++) ent[k] = (sqs_handle_entry){NULL, t->del[i + k]->w.rh, 0};
        COUNT(r_delete);
        if (sqs_delete_batch(t->sqs, P.url, ent, m, res, &e) < 0) {
            log_ev(LOG_ERROR, "delete failed", "code", e.code, "error", e.message, NULL);
            for (size_t k = 0; k < m; k++) {
                if (final) finish(t->del[i + k]);
                else t->del[keep++] = t->del[i + k];
            }
            continue;
        }
        for (size_t k = 0; k < m; k++) {
            if (res[k].ok) finish(t->del[i + k]);
            else delete_failed(t, t->del[i + k], &res[k], final);
        }
    }
    memmove(t->del + keep, t->del + end, (t->ndel - end) * sizeof *t->del);
    t->ndel = keep + (t->ndel - end);
    t->del_since = time_mono_ms();
}

/* ChangeMessageVisibilityBatch, 10 entries a call; its[i] (the item of
 * ent[i]) names the message in logs, by its MessageId: extend() passes
 * items other threads own, whose record (w.r) a committer may be
 * replacing, while w.mid and w.rh never change. A failed change only
 * means the message reappears when its current visibility runs out. */
/* extending: the items are held on (the registry); their vis_until moves
 * on when SQS took the change, and drops to 0 when SQS says the receipt
 * no longer holds the message (it was received again meanwhile). */
static void vis_calls(tail *t, const sqs_handle_entry *ent, item *const *its, size_t n, int extending)
{
    aws_entry_result res[SQS_BATCH_MAX];
    aws_err e;
    for (size_t i = 0; i < n; i += SQS_BATCH_MAX) {
        size_t m = n - i < SQS_BATCH_MAX ? n - i : SQS_BATCH_MAX;
        int64_t sent = time_mono_ms();
        COUNT(r_visibility);
        if (sqs_change_visibility_batch(t->sqs, P.url, ent + i, m, res, &e) < 0) {
            log_ev(LOG_ERROR, "visibility change failed", "code", e.code, "error", e.message, NULL);
            continue;
        }
        for (size_t k = 0; k < m; k++) {
            item *it = its[i + k];
            if (res[k].ok) {
                if (extending) vis_set(it, sent);
                continue;
            }
            log_ev(LOG_WARN, "visibility change failed", "mid", it->w.mid, "code", res[k].code, "error",
                   res[k].message, NULL);
            if (extending && res[k].sender_fault) __atomic_store_n(&it->vis_until, 0, __ATOMIC_RELAXED);
        }
    }
}

/* Sets each waiting item's visibility to its ->vis, then forgets it. */
static void flush_vis(tail *t)
{
    sqs_handle_entry *ent = xcalloc(t->nvis, sizeof *ent);
    for (size_t i = 0; i < t->nvis; i++) ent[i] = (sqs_handle_entry){NULL, t->vis[i]->w.rh, t->vis[i]->vis};
    vis_calls(t, ent, t->vis, t->nvis, 0);
    for (size_t i = 0; i < t->nvis; i++) finish(t->vis[i]);
    t->nvis = 0;
    free(ent);
}

/* Extends every held message at half its visibility timeout (see header).
 * The items cannot go away meanwhile: only this thread frees them. */
static void extend(tail *t)
{
    int64_t now = time_mono_ms();
    item **v = NULL;
    size_t n = 0, cap = 0;
    int del_now = 0;
    pthread_mutex_lock(&P.rmu);
    for (item *it = P.reg.rnext; it != &P.reg; it = it->rnext) {
        if (it->ext_at > now) continue;
        /* Published or dropped, waiting for its delete: delete it now
         * rather than extend it (one request either way, and the delete
         * is due anyway). */
        if (it->in_del) {
            del_now = 1;
            continue;
        }
        /* Those coming up for extension within the next few checks go in
         * the same request. */
        it->ext_at = INT64_MAX;   /* taken */
        push_ptr((void ***)&v, &n, &cap, it);
    }
    if (n)
        for (item *it = P.reg.rnext; it != &P.reg; it = it->rnext)
            if (!it->in_del && it->ext_at <= now + 3 * EXT_CHECK_MS) {
                it->ext_at = INT64_MAX;
                push_ptr((void ***)&v, &n, &cap, it);
            }
    /* vis_calls sets ext_at again when SQS took the change; else retry soon */
    for (size_t i = 0; i < n; i++) v[i]->ext_at = now + 2 * EXT_CHECK_MS;
    pthread_mutex_unlock(&P.rmu);
    if (del_now && t->ndel) flush_deletes(t, 1, 0);
    if (n) {
        log_ev(LOG_DEBUG, "extending the visibility of held messages", "n", log_i64_buf((char[24]){0}, (int64_t)n), NULL);
        sqs_handle_entry *ent = xcalloc(n, sizeof *ent);
        for (size_t i = 0; i < n; i++) ent[i] = (sqs_handle_entry){NULL, v[i]->w.rh, v[i]->vis_s};
        vis_calls(t, ent, v, n, 1);
        free(ent);
    }
    free(v);
}

static void handle(tail *t, item *it)
{
    switch (it->fate) {
    case F_REPORT:
        outbox_add(t, it->line);
        it->line = NULL;
        item_free(it);
        return;
    case F_PUBLISHED:
        on_published(t, it);
        /* fall through */
    case F_DROP:
        if (!t->ndel) t->del_since = time_mono_ms();
        it->in_del = 1;   /* for extend(), on this thread too */
        push_ptr((void ***)&t->del, &t->ndel, &t->capdel, it);
        return;
    case F_EXPIRED:
        finish(it);
        return;
    case F_FAILED:
        on_failed(t, it);
        /* fall through */
    default:
        push_ptr((void ***)&t->vis, &t->nvis, &t->capvis, it);
    }
}

/* How long the tail may sleep. */
static int64_t tail_wait_ns(const tail *t)
{
    int64_t now = time_mono_ms(), w = t->ext_next - now;
    if (w > P.cfg.del_flush_ms) w = P.cfg.del_flush_ms;   /* jobs wait for this wake-up */
    if (t->ndel && t->del_since + P.cfg.del_flush_ms - now < w) w = t->del_since + P.cfg.del_flush_ms - now;
    if (t->nout && w > 20) w = 20;
    return w * 1000000;
}

static void *tail_main(void *arg)
{
    tail *t = arg;
    t->ext_next = time_mono_ms() + EXT_CHECK_MS;
    for (;;) {
        pthread_mutex_lock(&P.tmu);
        if (!P.tq.head && !P.tclosing) cond_wait_ns(&P.tcv, &P.tmu, tail_wait_ns(t));
        item *jobs = fifo_take_all(&P.tq);
        P.tq_n = 0;
        int closing = P.tclosing && !jobs;
        pthread_mutex_unlock(&P.tmu);
        while (jobs) {
            item *n = jobs->next;
            handle(t, jobs);
            jobs = n;
        }
        outbox_flush(t, 0);
        int64_t now = time_mono_ms();
        if (t->nvis) flush_vis(t);
        if (t->nrdel) requeue_deletes(t, closing);
        int due_all = t->ndel && (closing || now - t->del_since >= P.cfg.del_flush_ms);
        if (due_all || t->ndel >= SQS_BATCH_MAX) flush_deletes(t, due_all, closing);
        if (now >= t->ext_next) {
            extend(t);
            t->ext_next = now + EXT_CHECK_MS;
        }
        if (closing) break;
    }
    /* last reports: a bounded wait for a slow reader */
    outbox_flush(t, 1000);
    for (size_t i = 0; i < t->nout; i++) free(t->outbox[i]);
    if (t->nout) log_ev(LOG_WARN, "reports not sent at exit", "n", log_i64_buf((char[24]){0}, (int64_t)t->nout), NULL);
    return NULL;
}

/* ------------------------------------------------------------ main thread */

typedef struct {
    heap h;                     /* held until due - commit-lead */
    zpipe_in *in;
    buf_t msg;
    int64_t full_logged;        /* mono ms of the last "memory bound reached" warning */
} reader;

/* One input record: held, deferred, passed on or rejected. */
static void accept_record(reader *r, const char *line, size_t len)
{
    char err[512];
    item *it = xcalloc(1, sizeof *it);
    sched_wire_init(&it->w);
    /* the line's length stands for the record's memory (its parsed copy
     * is about as big), plus the item itself */
    held_add(it, len + sizeof *it);
    if (sched_wire_read(line, len, &it->w, err, sizeof err) < 0) {
        log_ev(LOG_ERROR, "input record rejected", "error", err, NULL);
        COUNT(n_rejected);
        metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
        item_free(it);
        return;
    }
    if (it->w.report) {   /* another stage's report: state-update's, pass it on */
        it->line = xstrndup(line, len);
        to_tail(it, F_REPORT);
        return;
    }
    if (!it->w.mid || !it->w.rh) {
        log_ev(LOG_ERROR, "input record rejected: no SQS message (mid, rh); the input must come from sqs-drain", "id",
               it->w.r.id, NULL);
        COUNT(n_rejected);
        metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
        item_free(it);
        return;
    }
    COUNT(n_in);
    metrics_count("delayer_received_total", "records received and accepted for processing", "", 1);
    it->t_arrived = time_now_ms();
    reg_add(it);
    int64_t ahead = it->w.r.due - time_now_ms();
    /* Rounded down, less one second: the message comes back 1-2 s before
     * its time, early enough for the commit. Never a visibility of 0 (the
     * message would return at once, again and again, each receive counting
     * towards maxReceiveCount): below 2 s ahead it is held. */
    int64_t s = (ahead - 1000) / 1000;
    if (ahead > P.cfg.max_hold_ms && s >= 1) {
        it->vis = s > VIS_MAX ? VIS_MAX : (int)s;
        log_ev(LOG_DEBUG, "too early: back to the queue", "id", it->w.r.id, "mid", it->w.mid, "vis", log_i64(it->vis), NULL);
        COUNT(n_deferred);
        metrics_count("delayer_deferred_total", "messages too early: handed back to the queue", "", 1);
        to_tail(it, F_RELEASE);
        return;
    }
    log_ev(LOG_DEBUG, "held until due", "id", it->w.r.id, "mid", it->w.mid, "ahead_ms", log_i64(ahead), NULL);
    heap_push(&r->h, it);
}

/* Hands what is due for its commit to the committers; returns the ms until
 * the next one (-1: nothing held). */
static int64_t dispatch(reader *r)
{
    int64_t now = time_now_ms();
    while (r->h.n && r->h.v[0]->w.r.due - P.cfg.lead_ms <= now) to_commit(heap_pop(&r->h));
    return r->h.n ? r->h.v[0]->w.r.due - P.cfg.lead_ms - now : -1;
}

/* Reads and dispatches until SIGTERM, or until the input ended and
 * everything held was dispatched. Returns 1 if stopped by a signal, -1 on
 * an input error, 0 at end of input. */
static int read_loop(reader *r)
{
    int eof = 0, full = 0;
    for (;;) {
        int64_t next = dispatch(r);
        int timeout = next < 0 ? 1000 : next > 1000 ? 1000 : (int)next;
        /* At the memory bound: do not read. The input pipe fills up, then
         * sqs-drain's output: it stops receiving and the queue keeps the
         * rest. Checked every FULL_POLL_MS (records leave from the other
         * threads). */
        if (!eof && held_full() != full) {
            full = !full;
            /* at most one warning per FULL_LOG_MS: under a backlog the
             * bound is reached again with every record that leaves */
            int64_t now = time_mono_ms();
            int warn = full && now - r->full_logged >= FULL_LOG_MS;
            if (warn) r->full_logged = now;
            log_ev(warn ? LOG_WARN : LOG_DEBUG, full ? "memory bound reached: not reading the input" : "reading the input again",
                   "held", log_i64((int64_t)__atomic_load_n(&P.held_n, __ATOMIC_RELAXED)), "held_bytes",
                   log_i64((int64_t)__atomic_load_n(&P.held_bytes, __ATOMIC_RELAXED)), NULL);
        }
        if (full && !eof) {
            if (stage_should_stop()) return 1;
            if (timeout > FULL_POLL_MS) timeout = FULL_POLL_MS;
            struct timespec ts = {timeout / 1000, (timeout % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        if (eof) {
            if (next < 0) return 0;
            if (stage_should_stop()) return 1;
            struct timespec ts = {timeout / 1000, (timeout % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        int rc = zpipe_in_recv(r->in, &r->msg, timeout);
        if (rc == ZPIPE_READY) accept_record(r, r->msg.p, r->msg.len);
        else if (rc == ZPIPE_EOF) eof = 1;
        else if (rc == ZPIPE_INTR) return 1;
        else if (rc == ZPIPE_ERR) {
            log_ev(LOG_ERROR, "input failed", "error", strerror(errno), NULL);
            return -1;
        }
    }
}

/* SIGTERM: what is not committed goes back to the queue at once. */
static void hand_back(reader *r)
{
    item *it;
    while ((it = heap_pop(&r->h)) != NULL) release(it, 0);
    pthread_mutex_lock(&P.cmu);
    item *q = fifo_take_all(&P.cq);
    pthread_mutex_unlock(&P.cmu);
    while (q) {
        item *n = q->next;
        release(q, 0);
        q = n;
    }
}

/* ------------------------------------------------------------ setup */

/* The queue URL and its visibility timeout, through the tail's client. */
static int open_queue(tail *t, char *err, size_t errlen)
{
    P.url = xstrdup(stage_queue_url(t->s, P.cfg.queue));
    P.grace_ms = t->s->conf.grace_ms;
    if (!(t->sqs = store_sqs(t->s))) {
        snprintf(err, errlen, "%s", t->s->err);
        return STAGE_EXIT_SYSTEM;
    }
    return stage_queue_visibility(t->sqs, P.url, &P.vis_s, NULL, err, errlen) < 0 ? STAGE_EXIT_SYSTEM : 0;
}

typedef struct {
    committer *c;
    publisher *p;
    tail t;
} workers;

static int make_workers(workers *w, char *err, size_t errlen, int *code)
{
    w->c = xcalloc((size_t)P.cfg.ncommit, sizeof *w->c);
    w->p = xcalloc((size_t)P.cfg.npublish, sizeof *w->p);
    if (!(w->t.s = stage_store_open(P.cfg.prefix, err, errlen, code))) return -1;
    if ((*code = open_queue(&w->t, err, errlen)) != 0) return -1;
    *code = STAGE_EXIT_SYSTEM;
    /* A schedule is due within commit-lead of its commit: one attempt that
     * hangs for the library's default 30 s is no use to it, and would hold
     * up a stop. The number of attempts stays the library's: throttling is
     * better retried here than through SQS, where every redelivery counts
     * towards maxReceiveCount. */
    for (int i = 0; i < P.cfg.ncommit; i++) {
        if (!(w->c[i].s = stage_store_open(P.cfg.prefix, err, errlen, code))) return -1;
        aws_client_set_timeouts(w->c[i].s->ddb, 1000, 5000);
    }
    for (int i = 0; i < P.cfg.npublish; i++) {
        if (!(w->p[i].sns = aws_client_new("sns", err, errlen))) return -1;
        aws_client_set_timeouts(w->p[i].sns, 1000, 5000);
    }
    return 0;
}

static void free_workers(workers *w)
{
    for (int i = 0; w->c && i < P.cfg.ncommit; i++) store_close(w->c[i].s);
    for (int i = 0; w->p && i < P.cfg.npublish; i++) aws_client_free(w->p[i].sns);
    store_close(w->t.s);
    free(w->c);
    free(w->p);
    free(w->t.del);
    free(w->t.vis);
    free(w->t.rdel);
    free(w->t.outbox);
}

static int start_workers(workers *w)
{
    int ok = pthread_create(&w->t.th, NULL, tail_main, &w->t) == 0;
    for (int i = 0; ok && i < P.cfg.ncommit; i++) ok = pthread_create(&w->c[i].th, NULL, committer_main, &w->c[i]) == 0;
    for (int i = 0; ok && i < P.cfg.npublish; i++) ok = pthread_create(&w->p[i].th, NULL, publisher_main, &w->p[i]) == 0;
    return ok ? 0 : -1;
}

/* Committers first (nothing new to publish after them), then publishers
 * (everything committed is published), then the tail (everything is
 * deleted, handed back and reported). */
static void stop_workers(workers *w)
{
    pthread_mutex_lock(&P.cmu);
    P.cclosing = 1;
    pthread_cond_broadcast(&P.ccv);
    pthread_mutex_unlock(&P.cmu);
    for (int i = 0; i < P.cfg.ncommit; i++) pthread_join(w->c[i].th, NULL);
    pthread_mutex_lock(&P.pmu);
    P.pclosing = 1;
    pthread_cond_broadcast(&P.pcv);
    pthread_mutex_unlock(&P.pmu);
    for (int i = 0; i < P.cfg.npublish; i++) pthread_join(w->p[i].th, NULL);
    pthread_mutex_lock(&P.tmu);
    P.tclosing = 1;
    pthread_cond_broadcast(&P.tcv);
    pthread_mutex_unlock(&P.tmu);
    pthread_join(w->t.th, NULL);
}

static void init_shared(void)
{
    pthread_mutex_init(&P.cmu, NULL);
    pthread_mutex_init(&P.pmu, NULL);
    pthread_mutex_init(&P.tmu, NULL);
    pthread_mutex_init(&P.rmu, NULL);
    pthread_cond_init(&P.ccv, NULL);
    time_cond_init_mono(&P.pcv);
    time_cond_init_mono(&P.tcv);
    P.reg.rnext = P.reg.rprev = &P.reg;
    const char *h = getenv("DELAYER_TEST_CRASH_AFTER_COMMIT");
    P.crash_after_commit = h && strcmp(h, "1") == 0;
}

static void log_summary(void)
{
    /* log_i64 has only 8 buffers: format here */
    char v[13][24];
    const uint64_t n[13] = {P.n_in, P.n_published, P.n_replayed, P.n_dropped, P.n_failed, P.n_deferred,
                            P.n_released - P.n_deferred, P.n_rejected, P.r_publish, P.r_delete, P.r_visibility,
                            P.late_max_us, P.n_expired};
    for (int i = 0; i < 13; i++) log_i64_buf(v[i], (int64_t)n[i]);
    log_ev(LOG_INFO, "stopped", "received", v[0], "published", v[1], "replayed", v[2], "dropped", v[3], "failed", v[4],
           "deferred", v[5], "handed_back", v[6], "rejected", v[7], "publish_requests", v[8], "delete_requests", v[9],
           "visibility_requests", v[10], "late_max_us", v[11], "expired", v[12], NULL);
}

int main(int argc, char **argv)
{
    stage_opts o;
    int rc = stage_init(argc, argv, &spec, &o);
    if (rc != STAGE_RUN) return rc;
    if ((rc = read_config(&o, &P.cfg)) != 0) return rc;
    init_shared();
    char err[768];
    workers w;
    memset(&w, 0, sizeof w);
    reader r;
    memset(&r, 0, sizeof r);
    if (make_workers(&w, err, sizeof err, &rc) < 0) {
        log_ev(LOG_ERROR, "cannot open the deployment", "error", err, NULL);
        free_workers(&w);
        free(P.url);
        return rc;
    }
    if ((rc = stage_open(&o, &r.in, &w.t.out)) != 0) {
        free_workers(&w);
        free(P.url);
        return rc;
    }
    if (start_workers(&w) < 0) {
        log_ev(LOG_ERROR, "cannot start threads", NULL);
        _exit(STAGE_EXIT_SYSTEM);
    }
    stage_ready(&o);
    int how = read_loop(&r);
    /* Close the input first: an upstream PUSH must stop sending here at
     * once (what it queued into a closed PULL is gone, and only comes back
     * after its visibility timeout). */
    zpipe_in_close(r.in);
    r.in = NULL;
    if (how != 0) hand_back(&r);
    stop_workers(&w);
    log_summary();
    zpipe_out_close(w.t.out);
    free_workers(&w);
    free(r.h.v);
    free(P.ph.v);
    buf_free(&r.msg);
    free(P.url);
    if (how < 0) return STAGE_EXIT_SYSTEM;
    return how == 0 && P.n_rejected ? STAGE_EXIT_REJECTED : STAGE_EXIT_OK;
}
