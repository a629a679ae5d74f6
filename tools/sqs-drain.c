/* sqs-drain: the pipeline stage that takes messages out of the delay queue
 * (docs/schema.md, issue 4) and hands each one downstream (to sns-publish)
 * as one NDJSON wire record: the message body plus the stage fields
 *   "mid" (MessageId), "rh" (ReceiptHandle), "rc" (ApproximateReceiveCount).
 * With --queue dead it reads the dead-letter queue instead and emits one
 * report "dead" per message for state-update, which ends the schedule
 * FAILED and only then deletes the message (with the report's "rh"): a
 * report lost on the way leaves the message where it is, and it is read
 * again DEAD_VIS_S (5 min) later (dead-letter messages are received with
 * that visibility timeout: a report state-update could not apply must not
 * come back every 30 s).
 *
 * Durability. sqs-drain never deletes a delay-queue message: sns-publish
 * does, once SNS accepted it (or once the schedule turned out cancelled or
 * a duplicate). What sqs-drain holds is protected by the queue's visibility
 * timeout: killed at any moment, its messages reappear and another instance
 * takes them. On SIGTERM it hands back what it holds at once
 * (ChangeMessageVisibility 0). A long poll cannot be interrupted (libcurl):
 * the stop waits STOP_GRACE_MS for receives in flight (a busy queue answers
 * at once: those messages are handed back too), then exits without the
 * ones still polling an idle queue. Should such a poll still catch a
 * message as the process exits, SQS shows it again after its visibility
 * timeout: late, never lost.
 *
 * Concurrency (--concurrency N, default 2). N poller threads, each with its
 * own SQS client (an aws_client is not thread-safe). Poller 0 long-polls
 * all the time (WaitTimeSeconds --wait, 20 s): an idle deployment costs one
 * request per 20 s. Pollers 1..N-1 sleep until a receive comes back full
 * (10 messages: the queue holds more than one request can take) and then
 * poll with a 1 s wait until one of them comes back short; so a busy queue
 * has N receives in flight and an idle one just one. The short wait also
 * keeps the extra pollers quick to stop. The main thread owns the output
 * (a zpipe is not thread-safe) and a third SQS client for visibility
 * changes: pollers only receive and queue what they got (at
 * most QUEUE_CAP messages wait in memory; pollers stop receiving when the
 * output is slower than the queue).
 *
 * A downstream that does not take records (no ZeroMQ peer, or every peer at
 * its high-water mark): the main thread holds the messages it could not
 * send and retries every 200 ms while polling is paused (receiving more
 * would only add to what waits). After --hold (5 s) it hands them back
 * (visibility 0) so that another instance whose downstream works can take
 * them, and pauses for 2 s; then one "probe" receive of a single message
 * tells whether the downstream is back. A probe message that still cannot
 * be sent is held, with its visibility extended, until it can (or until
 * SIGTERM hands it back): every extra receive counts towards the queue's
 * maxReceiveCount, and a message must not be dead-lettered only because
 * sns-publish was down. (Visibility of messages handed downstream is
 * sns-publish's to extend: it is their holder.)
 *
 * A body that is not a wire record (not JSON, a missing field, ...): logged
 * as an error with its MessageId. If it names an id, a report "invalid" is
 * sent so that state-update can end that schedule INVALID at once. The
 * message itself is left alone, never deleted blindly: it reappears after
 * the visibility timeout and, after maxReceiveCount receives, SQS moves it
 * to the dead-letter queue, where it can be inspected. In the dead-letter
 * queue (--queue dead) such a message is hidden for 12 h (the longest
 * visibility) instead of being read again and again.
 *
 * Exit: 0 after SIGTERM/SIGINT; 100 usage or configuration; 111 when the
 * deployment cannot be reached or stdout's reader is gone. */
#include "aws.h"
#include "buf.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include "sqs.h"
#include "stage.h"
#include "store.h"
#include "timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_CAP       100     /* received messages waiting for the main thread... */
#define QUEUE_BYTES_CAP (8u << 20) /* ...and their bodies' bytes */
#define SEND_TIMEOUT_MS 500     /* one send to a slow downstream */
#define RETRY_MS        200     /* held messages are retried this often */
#define PROBE_PAUSE_MS  2000    /* pause after handing held messages back */
#define STOP_GRACE_MS   1500    /* how long a stop waits for pollers in a long poll */
#define VIS_MAX         43200   /* SQS's longest visibility timeout, s */
#define DEAD_VIS_S      300     /* dead-letter messages come back after this, s */
/* --visibility: see "Fast recovery" in the header. */
#define VIS_SHORT_DEFAULT_S 2
#define SLOW_SEND_MS    200     /* a send that waited this long found the pipe full */
#define SLOW_FOR_MS     10000   /* after such a send, receive with the queue's visibility this long */
/* --pace: messages become visible SCHED_DELAY_MARGIN_MS (500 ms) or more
 * before due and sns-publish commits 50 ms before due, so up to 300 ms
 * of waiting before a receive still leaves them in time. */
#define PACE_DEFAULT_MS 200
#define PACE_MAX_MS     300
/* A message received with less than this left before due came late (it
 * was not visible SCHED_DELAY_MARGIN_MS before due, or waited in the queue
 * longer than a pace): the queue carries late traffic, do not pace. */
#define PACE_LATE_MS    (SCHED_DELAY_MARGIN_MS - PACE_MAX_MS - 50)

/* ------------------------------------------------------------ options */

static const stage_opt opts[] = {
    {"prefix", "P", "deployment prefix [$DELAYER_PREFIX or delayer]"},
    {"queue", "Q", "delay (the deployment's delay queue), dead (its dead-letter queue: emit \"dead\" reports) or a queue URL [delay]"},
    {"concurrency", "N", "receive requests in flight when the queue is busy, 1-32 [2]"},
    {"wait", "SECONDS", "long-poll wait of ReceiveMessage, 0-20 [20]"},
    {"hold", "DURATION", "how long records the downstream does not take are retried before they go back to the queue [5s]"},
    {"pace", "DURATION", "after a receive that came back short, wait this long before the next one (fewer requests; 0 = off, at most 300ms) [200ms]"},
    {"visibility", "DURATION", "visibility timeout of receives while the downstream keeps up, whole seconds (a killed holder's messages come back this soon; 0 = the queue's) [2s]"},
    {NULL, NULL, NULL}};

static const stage_spec spec = {
    "sqs-drain", "Receives schedules from the delay queue and sends them downstream (to sns-publish) as NDJSON.",
    0, 1, opts, NULL};

typedef struct {
    const char *prefix, *queue;
    int concurrency, wait_s;
    int64_t hold_ms;
    int64_t pace_ms;
    int vis_s;                 /* --visibility, s; 0: the queue's */
    int dead;                  /* reading the dead-letter queue */
} config;

static int read_config(const stage_opts *o, config *c)
{
    long concurrency, wait_s;
    int64_t vis_ms;
    if (stage_opt_queue(o, 1, &c->queue) < 0) return STAGE_EXIT_USAGE;
    c->dead = strcmp(c->queue, "dead") == 0;
    if (stage_opt_long(o, "concurrency", 1, 32, 2, &concurrency) < 0 ||
        stage_opt_long(o, "wait", 0, SQS_WAIT_MAX, SQS_WAIT_MAX, &wait_s) < 0 ||
        stage_opt_duration(o, "hold", 5000, INT64_MAX, &c->hold_ms) < 0 ||
        stage_opt_duration(o, "pace", PACE_DEFAULT_MS, PACE_MAX_MS, &c->pace_ms) < 0 ||
        stage_opt_duration(o, "visibility", VIS_SHORT_DEFAULT_S * 1000, (int64_t)VIS_MAX * 1000, &vis_ms) < 0)
        return STAGE_EXIT_USAGE;
    c->vis_s = (int)((vis_ms + 999) / 1000);   /* SQS takes whole seconds: round up */
    c->concurrency = (int)concurrency;
    c->wait_s = (int)wait_s;
    if (c->dead) c->pace_ms = 0, c->vis_s = 0;   /* dead letters are not timed */
    if (stage_opt_prefix(o, &c->prefix) < 0) return STAGE_EXIT_USAGE;
    return 0;
}

/* ------------------------------------------------------------ shared state */

/* One ReceiveMessage result waiting for the main thread. */
typedef struct batch {
    struct batch *next;
    sqs_messages m;
    int *vis;                  /* per message: its visibility timeout, s; 0: the queue's */
} batch;

/* Everything the pollers and the main thread share, under mu. Kept in a
 * global: a poller still inside a long poll when the process exits keeps
 * using url and its client, so neither may be freed under it. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t got;        /* main: a batch was queued */
    pthread_cond_t gate;       /* pollers: busy / pause / space / stop changed */
    batch *head, *tail;
    size_t queued;             /* messages in the batches */
    size_t queued_bytes;       /* their bodies' bytes */
    int busy;                  /* the last receive came back full */
    int holding;               /* the main thread holds unsent messages: no polling */
    int64_t pause_until;       /* mono ms: no polling before */
    int probe;                 /* the next receive asks for one message */
    int stopping;
    char *url;                 /* the queue read */
    int wait_s;
    int recv_vis;              /* VisibilityTimeout of receives, -1: the queue's */
    int short_vis;             /* --visibility, s (0: none): used while the output flows */
    int queue_vis;             /* the queue's visibility timeout, s */
    int64_t slow_until;        /* mono ms: the output was full lately: receive with recv_vis */
    int64_t pace_ms;           /* --pace */
} G = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, NULL, 0, -1, 0, 0, 0, 0};

static void cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms < 0) ms = 0;
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(c, m, &ts);
}

/* ------------------------------------------------------------ handing back */

/* ChangeMessageVisibilityBatch for n receipt handles, 10 per call. Errors
 * are logged only: a message whose change failed still reappears when its
 * current visibility runs out. Returns how many changes failed. */
static size_t set_visibility(aws_client *c, const char *url, const char *const *rh, size_t n, int seconds)
{
    size_t failed = 0;
    sqs_handle_entry ent[SQS_BATCH_MAX];
    aws_entry_result res[SQS_BATCH_MAX];
    aws_err e;
    char b[24];
    for (size_t i = 0; i < n; i += SQS_BATCH_MAX) {
        size_t m = n - i < SQS_BATCH_MAX ? n - i : SQS_BATCH_MAX;
        for (size_t k = 0; k < m; k++) ent[k] = (sqs_handle_entry){NULL, rh[i + k], seconds};
        if (sqs_change_visibility_batch(c, url, ent, m, res, &e) < 0) {
            log_ev(LOG_WARN, "visibility change failed", "n", log_i64_buf(b, (int64_t)m), "code", e.code, "error", e.message, NULL);
            failed += m;
            continue;
        }
        for (size_t k = 0; k < m; k++)
            if (!res[k].ok) {
                log_ev(LOG_WARN, "visibility change failed", "code", res[k].code, "error", res[k].message, NULL);
                failed++;
            }
    }
    return failed;
}

/* Hands messages m[from..] back to the queue (visibility 0). */
static void release_msgs(aws_client *c, const sqs_messages *m, size_t from)
{
    if (from >= m->n) return;
    const char **rh = xcalloc(m->n - from, sizeof *rh);
    for (size_t i = from; i < m->n; i++) rh[i - from] = m->v[i].receipt_handle;
    set_visibility(c, G.url, rh, m->n - from, 0);
    free(rh);
}

/* ------------------------------------------------------------ pollers */

typedef struct {
    int idx;
    aws_client *c;
    pthread_t th;
    int done;                  /* set under G.mu when the thread ends */
} poller;

/* Waits until poller idx may receive. -1 when stopping; else *max is the
 * number of messages to ask for and *vis the visibility timeout to receive
 * with (-1: the queue's). */
static int poll_gate(int idx, int *max, int *vis)
{
    pthread_mutex_lock(&G.mu);
    for (;;) {
        if (G.stopping) break;
        int64_t now = time_mono_ms();
        int blocked = G.holding || now < G.pause_until || G.queued >= QUEUE_CAP || G.queued_bytes >= QUEUE_BYTES_CAP ||
                      (idx > 0 && !G.busy);
        if (!blocked) break;
        int64_t w = now < G.pause_until ? G.pause_until - now : 1000;
        cond_wait_ms(&G.gate, &G.mu, w);
    }
    int rc = G.stopping ? -1 : 0;
    *max = SQS_RECEIVE_MAX;
    *vis = G.short_vis > 0 && time_mono_ms() >= G.slow_until ? G.short_vis : G.recv_vis;
    if (G.probe) {
        *max = 1;
        G.probe = 0;
    }
    pthread_mutex_unlock(&G.mu);
    return rc;
}

/* Queues a receive's messages for the main thread (taking them out of m),
 * or hands them back when a stop came meanwhile. */
static void hand_over(poller *p, sqs_messages *m, int max, int *vis)
{
    pthread_mutex_lock(&G.mu);
    G.busy = max == SQS_RECEIVE_MAX && m->n == SQS_RECEIVE_MAX;
    if (G.busy) pthread_cond_broadcast(&G.gate);
    int stopping = G.stopping;
    if (!stopping && m->n) {
        batch *b = xcalloc(1, sizeof *b);
        b->m = *m;
        b->vis = vis;
        vis = NULL;
        *m = (sqs_messages){0};
        if (G.tail) G.tail->next = b;
        else G.head = b;
        G.tail = b;
        G.queued += b->m.n;
        for (size_t i = 0; i < b->m.n; i++) G.queued_bytes += strlen(b->m.v[i].body);
        metrics_count("delayer_received_total", "records received and accepted for processing", "", b->m.n); metrics_hist("delayer_batch_size", "entries per AWS batch request", "api=\"ReceiveMessage\"", metrics_batch_bounds, metrics_batch_nbounds, (double)b->m.n);
        pthread_cond_signal(&G.got);
    }
    pthread_mutex_unlock(&G.mu);
    free(vis);
    if (stopping) release_msgs(p->c, m, 0);
}

/* Each message's visibility after a receive with VisibilityTimeout vis
 * (-1: the queue's): a short one for a first delivery; a redelivery (it
 * came back already: its holder was killed, or paused, or its downstream
 * is stuck) gets the queue's at once, one more request, so that a message
 * cycling through a paused holder does not count a receive every few
 * seconds towards maxReceiveCount. */
static int *receive_vis(poller *p, const sqs_messages *m, int vis)
{
    int *v = xcalloc(m->n ? m->n : 1, sizeof *v);
    const char **rh = xcalloc(m->n ? m->n : 1, sizeof *rh);
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        v[i] = vis > 0 ? vis : 0;
        if (vis > 0 && vis < G.queue_vis && m->v[i].receive_count > 1) rh[n++] = m->v[i].receipt_handle;
    }
    if (n && set_visibility(p->c, G.url, rh, n, G.queue_vis) == 0)
        for (size_t i = 0; i < m->n; i++)
            if (m->v[i].receive_count > 1) v[i] = 0;
    free(rh);
    return v;
}

/* Waits ms (after a failed receive: 1 s, doubling to 30 s; --pace) unless
 * stopping. */
static void pause_ms(int64_t ms)
{
    pthread_mutex_lock(&G.mu);
    int64_t until = time_mono_ms() + ms;
    while (!G.stopping && time_mono_ms() < until) cond_wait_ms(&G.gate, &G.mu, until - time_mono_ms());
    pthread_mutex_unlock(&G.mu);
}

/* --pace. A receive returns as soon as one message is visible, so at a
 * steady rate each one brings one or two messages: about one ReceiveMessage
 * per schedule at low rates. Waiting a little after a short receive lets
 * the next one take what became visible meanwhile. Not after a full receive
 * (a backlog: go on at once), nor when a message received was due within
 * PACE_LATE_MS (it came late, e.g. scheduled a moment ahead or caught up
 * after downtime: others like it must not wait). */
static int should_pace(const sqs_messages *m, int max)
{
    if (G.pace_ms <= 0 || m->n == 0 || (int)m->n >= max) return 0;
    int64_t soon = time_now_ms() + PACE_LATE_MS;
    for (size_t i = 0; i < m->n; i++) {
        json_doc d;
        int64_t due = 0;
        int ok = json_parse(&d, m->v[i].body, strlen(m->v[i].body)) == 0;
        if (ok) {
            int t = json_get(&d, 0, "due");
            ok = t >= 0 && json_i64(&d, t, &due) == 0;
        }
        json_free(&d);
        if (!ok || due < soon) return 0;
    }
    return 1;
}

static void *poller_main(void *arg)
{
    poller *p = arg;
    sqs_messages m = {0};
    aws_err e;
    int64_t backoff = 1000;
    int max, vis;
    while (poll_gate(p->idx, &max, &vis) == 0) {
        int wait = p->idx == 0 ? G.wait_s : (G.wait_s < 1 ? G.wait_s : 1);
        if (sqs_receive(p->c, G.url, max, wait, vis, &m, &e) < 0) {
            log_ev(LOG_ERROR, "receive failed", "code", e.code, "error", e.message, NULL);
            pause_ms(backoff);
            backoff = backoff * 2 > 30000 ? 30000 : backoff * 2;
            continue;
        }
        backoff = 1000;
        int pace = should_pace(&m, max);
        hand_over(p, &m, max, receive_vis(p, &m, vis));
        if (pace) pause_ms(G.pace_ms);
    }
    sqs_messages_free(&m);
    pthread_mutex_lock(&G.mu);
    p->done = 1;
    pthread_cond_broadcast(&G.got);
    pthread_mutex_unlock(&G.mu);
    return NULL;
}

/* ------------------------------------------------------------ main thread */

/* A message the downstream did not take yet. */
typedef struct {
    char *line;
    size_t len;
    char *rh, *mid;
    int64_t since, extend_at;  /* mono ms */
    int vis;                   /* its visibility timeout, s; 0: the queue's */
} held;

typedef struct {
    config cfg;
    store *s;
    aws_client *c;             /* the main thread's SQS client */
    zpipe_out *out;
    int vis_s;                 /* the queue's visibility timeout */
    held *h;
    size_t nh, caph;
    int probing;               /* handed back once already: hold without limit */
    int64_t last_sent;         /* mono ms of the last record the downstream took */
    int slow_sends;            /* sends in a row that waited SLOW_SEND_MS or more */
    int fatal;                 /* stdout's reader is gone */
    uint64_t sent, invalid;
} drain;

/* The wire record of a delay-queue message, or a "dead" report for a
 * dead-letter one, into line. 0 ok; -1 when the body is not a wire record,
 * -2 when it is a report (a stage's output sent to the wrong place: the
 * schedule it names is not at fault); err says why. */
static int build_record(drain *d, const sqs_message *m, int vis, buf_t *line, char *err, size_t errlen)
{
    sched_wire w;
    sched_wire_init(&w);
    if (sched_wire_read(m->body, strlen(m->body), &w, err, errlen) < 0) return -1;
    if (w.report) {
        snprintf(err, errlen, "report: a report record is not a schedule");
        sched_wire_free(&w);
        return -2;
    }
    free(w.mid);
    free(w.rh);
    free(w.error);
    w.mid = xstrdup(m->message_id);
    w.rh = xstrdup(m->receipt_handle);
    w.error = NULL;
    w.rc = m->receive_count;
    w.rt = m->received_ms;
    w.rv = vis;
    if (d->cfg.dead) {
        w.report = xstrdup("dead");
        w.nopayload = 1;   /* state-update needs the id and chash, not the payload */
        sched_rec r;
        sched_rec_init(&r);
        /* The schedule should end FAILED with the publish error that made it
         * fail, which sns-publish wrote as last_error. */
        if (store_get(d->s, w.r.id, &r) == STORE_OK && r.last_error) w.error = xstrdup(r.last_error);
        else {
            char b[160];
            snprintf(b, sizeof b, "DeadLetter: moved to the dead-letter queue after maxReceiveCount receives");
            w.error = xstrdup(b);
        }
        sched_rec_free(&r);
    }
    buf_reset(line);
    sched_wire_write(line, &w);
    sched_wire_free(&w);
    return 0;
}

/* For a body that is not a wire record but names an id: a report
 * "invalid" for state-update. 0 when line was built. */
static int build_invalid(const sqs_message *m, const char *why, buf_t *line)
{
    json_doc d;
    buf_t id = BUF_INIT;
    int rc = -1;
    if (json_parse(&d, m->body, strlen(m->body)) == 0 && json_type(&d, 0) == JSON_OBJ) {
        int t = json_get(&d, 0, "id");
        if (json_type(&d, t) == JSON_STR && json_str(&d, t, &id) == 0 && id.len && !memchr(id.p, 0, id.len) &&
            id.len <= SCHED_ID_MAX) {
            sched_wire w;
            sched_wire_init(&w);
            w.r.id = xstrdup(id.p);
            int64_t due = 0;
            json_i64(&d, json_get(&d, 0, "due"), &due);
            w.r.due = due;
            w.r.topic = xstrdup("");
            w.nopayload = 1;
            w.mid = xstrdup(m->message_id);
            w.rh = xstrdup(m->receipt_handle);
            w.rc = m->receive_count;
            w.report = xstrdup("invalid");
            w.error = xstrdup(why);
            buf_reset(line);
            sched_wire_write(line, &w);
            sched_wire_free(&w);
            rc = 0;
        }
    }
    json_free(&d);
    buf_free(&id);
    return rc;
}

static void hold(drain *d, const sqs_message *m, int vis, const buf_t *line)
{
    if (d->nh == d->caph) {
        d->caph = d->caph ? d->caph * 2 : 16;
        d->h = xrealloc(d->h, d->caph * sizeof *d->h);
    }
    int64_t now = time_mono_ms();
    d->h[d->nh++] = (held){xstrndup(line->p, line->len), line->len, xstrdup(m->receipt_handle),
                           xstrdup(m->message_id), now, now + (int64_t)(vis ? vis : d->vis_s) * 500, vis};
    if (d->nh == 1) {
        log_ev(LOG_WARN, "downstream does not take records: holding them", "out", zpipe_out_endpoint(d->out),
               "mid", m->message_id, NULL);
        pthread_mutex_lock(&G.mu);
        G.holding = 1;
        pthread_mutex_unlock(&G.mu);
    }
}

static void held_free(held *h)
{
    free(h->line);
    free(h->rh);
    free(h->mid);
}

/* Sends one record. 0 sent; 1 the downstream did not take it (hold it);
 * -1 it can never be sent (logged). */
static int send_line(drain *d, const char *line, size_t len, const char *mid, int timeout_ms)
{
    int64_t t0 = time_mono_ms();
    int rc = zpipe_out_send(d->out, line, len, timeout_ms);
    int err = errno;
    int64_t now = time_mono_ms();
    /* Two sends in a row that waited (one could be a stall of this thread
     * on a busy machine): the pipe is full, its reader slow. (A send that
     * gave up is another case: no reader, or one that takes nothing; this
     * process then holds what it received and receives nothing more.) */
    d->slow_sends = rc == 0 && now - t0 >= SLOW_SEND_MS ? d->slow_sends + 1 : 0;
    if (G.short_vis > 0 && d->slow_sends >= 2) {
        /* What is received next may wait in the pipe, or here, longer than
         * the short visibility. */
        pthread_mutex_lock(&G.mu);
        if (now >= G.slow_until) log_ev(LOG_INFO, "downstream is slow: receiving with the queue's visibility", NULL);
        G.slow_until = now + SLOW_FOR_MS;
        pthread_mutex_unlock(&G.mu);
    }
    errno = err;
    if (rc == 0) {
        d->last_sent = now;
        d->sent++;
        metrics_count("delayer_sent_total", "records sent downstream", "", 1);
        return 0;
    }
    if (errno == EAGAIN) return 1;
    if (errno == EPIPE) {
        if (!d->fatal) log_ev(LOG_ERROR, "output closed by its reader", "out", zpipe_out_endpoint(d->out), NULL);
        d->fatal = 1;
        return 1;
    }
    log_ev(LOG_ERROR, "record not sendable", "mid", mid, "error", strerror(errno), NULL);
    return -1;
}

/* Dead mode: a body nobody can use stays in the dead-letter queue for
 * inspection, hidden for the longest visibility so it is not read in a loop. */
static void hide(drain *d, const sqs_message *m)
{
    const char *rh = m->receipt_handle;
    set_visibility(d->c, G.url, &rh, 1, VIS_MAX);
}

static void set_holding(int holding, int64_t pause_ms, int probe);

/* A send went through after the downstream had failed: back to normal. */
static void downstream_ok(drain *d)
{
    log_ev(LOG_INFO, "downstream takes records again", NULL);
    d->probing = 0;
    set_holding(0, 0, 0);
}

static void process(drain *d, const sqs_message *m, int vis, buf_t *line)
{
    char err[512];
    int rc = build_record(d, m, vis, line, err, sizeof err);
    if (rc < 0) {
        d->invalid++;
        metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
        log_ev(LOG_ERROR, "message body is not a schedule record", "mid", m->message_id, "error", err, NULL);
        if (rc == -1 && !d->cfg.dead && build_invalid(m, err, line) == 0)
            send_line(d, line->p, line->len, m->message_id, SEND_TIMEOUT_MS);
        if (d->cfg.dead) hide(d, m);
        return;
    }
    rc = d->nh ? 1 : send_line(d, line->p, line->len, m->message_id, SEND_TIMEOUT_MS);
    if (rc == 1) hold(d, m, vis, line);
    if (rc == 0 && d->probing) downstream_ok(d);
}

/* Hands every held message back (visibility 0) and forgets it. */
static void release_held(drain *d)
{
    if (!d->nh) return;
    const char **rh = xcalloc(d->nh, sizeof *rh);
    for (size_t i = 0; i < d->nh; i++) rh[i] = d->h[i].rh;
    set_visibility(d->c, G.url, rh, d->nh, 0);
    free(rh);
    for (size_t i = 0; i < d->nh; i++) held_free(&d->h[i]);
    d->nh = 0;
}

static void set_holding(int holding, int64_t pause_ms, int probe)
{
    pthread_mutex_lock(&G.mu);
    G.holding = holding;
    G.pause_until = time_mono_ms() + pause_ms;
    G.probe = probe;
    if (!holding) G.busy = 0;
    pthread_cond_broadcast(&G.gate);
    pthread_mutex_unlock(&G.mu);
}

/* A held record's "rt" after its visibility was extended: sns-publish
 * reckons from it how long the message is still its own. */
static void restamp(held *h, int64_t rt, int rv)
{
    sched_wire w;
    char err[160];
    sched_wire_init(&w);
    if (sched_wire_read(h->line, h->len, &w, err, sizeof err) == 0) {
        buf_t b = BUF_INIT;
        w.rt = rt;
        w.rv = rv;
        sched_wire_write(&b, &w);
        free(h->line);
        h->line = b.p;
        h->len = b.len;
    }
    sched_wire_free(&w);
}

/* Extends the visibility of held messages at half the timeout: they must
 * not reappear (and be received again) while this instance still has them. */
static void extend_held(drain *d, int64_t now)
{
    /* Each keeps the length it has (a short one stays short: if this
     * process dies, it comes back soon); those due go in batches. */
    const char **rh = xcalloc(d->nh ? d->nh : 1, sizeof *rh);
    size_t *ix = xcalloc(d->nh ? d->nh : 1, sizeof *ix);
    for (int pass = 0; pass < 2; pass++) {
        size_t n = 0;
        for (size_t i = 0; i < d->nh; i++)
            if (now >= d->h[i].extend_at && (d->h[i].vis > 0) == (pass == 0)) {
                ix[n] = i;
                rh[n++] = d->h[i].rh;
            }
        if (!n) continue;
        int vis = pass == 0 ? d->h[ix[0]].vis : d->vis_s;
        int64_t at = time_now_ms();
        int ok = set_visibility(d->c, G.url, rh, n, vis) == 0;
        for (size_t k = 0; k < n; k++) {
            held *h = &d->h[ix[k]];
            if (ok) restamp(h, at, pass == 0 ? vis : 0);
            h->vis = pass == 0 ? vis : 0;
            h->extend_at = now + (int64_t)vis * 500;
        }
    }
    free(rh);
    free(ix);
}

/* Retries the held messages in order; see the header for the policy. */
static void retry_held(drain *d)
{
    size_t i = 0;
    while (i < d->nh && !d->fatal) {
        int rc = send_line(d, d->h[i].line, d->h[i].len, d->h[i].mid, 50);
        if (rc == 1) break;
        held_free(&d->h[i]);
        i++;
    }
    if (i) {
        memmove(d->h, d->h + i, (d->nh - i) * sizeof *d->h);
        d->nh -= i;
    }
    int64_t now = time_mono_ms();
    if (!d->nh) downstream_ok(d);
    else if (!d->probing && now - (d->h[0].since > d->last_sent ? d->h[0].since : d->last_sent) >= d->cfg.hold_ms) {
        /* Nothing taken for --hold: the downstream is gone (a downstream
         * that is merely slow takes a record now and then: those held here
         * keep their place rather than count one more receive each). */
        log_ev(LOG_WARN, "handing held messages back to the queue", "n", log_i64((int64_t)d->nh), NULL);
        release_held(d);
        d->probing = 1;
        set_holding(0, PROBE_PAUSE_MS, 1);
    } else {
        extend_held(d, now);
    }
}

/* Takes the queued batches (waiting up to wait_ms for one). */
static batch *take(int64_t wait_ms)
{
    pthread_mutex_lock(&G.mu);
    if (!G.head && wait_ms > 0) cond_wait_ms(&G.got, &G.mu, wait_ms);
    batch *b = G.head;
    G.head = G.tail = NULL;
    G.queued = G.queued_bytes = 0;
    pthread_cond_broadcast(&G.gate);   /* room again */
    pthread_mutex_unlock(&G.mu);
    return b;
}

static void free_batches(batch *b)
{
    while (b) {
        batch *n = b->next;
        sqs_messages_free(&b->m);
        free(b->vis);
        free(b);
        b = n;
    }
}

static void run(drain *d)
{
    buf_t line = BUF_INIT;
    while (!stage_should_stop() && !d->fatal) {
        /* 100 ms at most: SIGTERM wakes zpipe waits, not this condition variable */
        batch *b = take(d->nh ? RETRY_MS : 100);
        for (batch *x = b; x; x = x->next) {
            for (size_t i = 0; i < x->m.n && !d->fatal; i++) process(d, &x->m.v[i], x->vis[i], &line);
            if (d->fatal) {
                release_msgs(d->c, &x->m, 0);
                for (batch *y = x->next; y; y = y->next) release_msgs(d->c, &y->m, 0);
                break;
            }
        }
        free_batches(b);
        if (d->nh) retry_held(d);
    }
    buf_free(&line);
}

/* ------------------------------------------------------------ setup */

static int open_queue(drain *d, char *err, size_t errlen)
{
    int rc, gone;
    if (!(d->s = stage_store_open(d->cfg.prefix, err, errlen, &rc))) return rc;
    const char *url = stage_queue_url(d->s, d->cfg.queue);
    if (!url) {
        snprintf(err, errlen, "queue: the deployment has no %s queue recorded (run delayer init)", d->cfg.queue);
        return STAGE_EXIT_USAGE;
    }
    G.url = xstrdup(url);
    if (!(d->c = store_sqs(d->s))) {
        snprintf(err, errlen, "%s", d->s->err);
        return STAGE_EXIT_SYSTEM;
    }
    if (stage_queue_visibility(d->c, G.url, &d->vis_s, &gone, err, errlen) < 0)
        return gone ? STAGE_EXIT_USAGE : STAGE_EXIT_SYSTEM;
    if (d->cfg.dead) d->vis_s = DEAD_VIS_S;
    return 0;
}

static int start_pollers(poller *p, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        p[i].idx = i;
        if (!(p[i].c = aws_client_new("sqs", err, errlen))) return -1;
    }
    for (int i = 0; i < n; i++)
        if (pthread_create(&p[i].th, NULL, poller_main, &p[i]) != 0) {
            snprintf(err, errlen, "cannot start a poller thread");
            for (int k = 0; k < i; k++) pthread_detach(p[k].th);
            return -1;
        }
    return 0;
}

/* Stops the pollers, waiting STOP_GRACE_MS at most for those inside a long
 * poll. Returns how many are still running (their memory is left alone). */
static int stop_pollers(poller *p, int n)
{
    pthread_mutex_lock(&G.mu);
    G.stopping = 1;
    pthread_cond_broadcast(&G.gate);
    int64_t until = time_mono_ms() + STOP_GRACE_MS;
    for (;;) {
        int running = 0;
        for (int i = 0; i < n; i++) running += !p[i].done;
        if (!running || time_mono_ms() >= until) break;
        cond_wait_ms(&G.got, &G.mu, until - time_mono_ms());
    }
    int left = 0;
    for (int i = 0; i < n; i++) {
        if (p[i].done) {
            pthread_join(p[i].th, NULL);
            aws_client_free(p[i].c);
            p[i].c = NULL;
        } else {
            pthread_detach(p[i].th);
            left++;
        }
    }
    pthread_mutex_unlock(&G.mu);
    return left;
}

int main(int argc, char **argv)
{
    stage_opts o;
    int rc = stage_init(argc, argv, &spec, &o);
    if (rc != STAGE_RUN) return rc;
    drain d;
    memset(&d, 0, sizeof d);
    if ((rc = read_config(&o, &d.cfg)) != 0) return rc;
    G.wait_s = d.cfg.wait_s;
    G.recv_vis = d.cfg.dead ? DEAD_VIS_S : -1;
    G.pace_ms = d.cfg.pace_ms;
    time_cond_init_mono(&G.got);
    time_cond_init_mono(&G.gate);
    char err[768];
    if ((rc = open_queue(&d, err, sizeof err)) != 0) {
        log_ev(LOG_ERROR, "cannot open the queue", "error", err, NULL);
        store_close(d.s);
        free(G.url);
        return rc;
    }
    G.queue_vis = d.vis_s;
    G.short_vis = d.cfg.vis_s < d.vis_s ? d.cfg.vis_s : 0;   /* not longer than the queue's */
    if ((rc = stage_open(&o, NULL, &d.out)) != 0) {
        store_close(d.s);
        free(G.url);
        return rc;
    }
    poller *p = xcalloc((size_t)d.cfg.concurrency, sizeof *p);
    if (start_pollers(p, d.cfg.concurrency, err, sizeof err) < 0) {
        log_ev(LOG_ERROR, "cannot start", "error", err, NULL);
        _exit(STAGE_EXIT_SYSTEM);   /* threads may run: no cleanup under them */
    }
    stage_ready(&o);
    log_ev(LOG_INFO, "draining", "queue", G.url, "concurrency", log_i64(d.cfg.concurrency),
           "visibility_s", log_i64(d.vis_s), "receive_visibility_s", log_i64(d.cfg.vis_s), NULL);
    run(&d);
    /* Stop: what was received and not sent goes back at once. */
    int left = stop_pollers(p, d.cfg.concurrency);
    batch *b = take(0);
    for (batch *x = b; x; x = x->next) release_msgs(d.c, &x->m, 0);
    free_batches(b);
    release_held(&d);
    log_ev(LOG_INFO, "stopped", "sent", log_i64((int64_t)d.sent), "invalid", log_i64((int64_t)d.invalid),
           "pollers_left", log_i64(left), NULL);
    zpipe_out_close(d.out);
    free(d.h);
    store_close(d.s);
    if (!left) {
        free(p);
        free(G.url);
        G.url = NULL;
    }
    return d.fatal ? STAGE_EXIT_SYSTEM : STAGE_EXIT_OK;
}
