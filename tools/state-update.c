/* state-update: applies the transitions the other stages report, keeps the
 * stats counters and publishes the lifecycle events (docs/schema.md).
 *
 * Input: report records (wire records with a "report" member) from any
 * number of upstream stages; the --in endpoint BINDS by default, upstreams
 * connect. What each report does:
 *   pushed          sqs-push put the claim into SQS. Counters NEW -> ENQUEUED
 *                   when "from" is "NEW" (a first claim; a re-claim was
 *                   ENQUEUED already); event schedule.enqueued.
 *   push_failed     sqs-push gave up: store_unclaim (ENQUEUED -> NEW, only
 *                   while the claim's lease is the record's). Counters
 *                   ENQUEUED -> NEW unless "from" is "NEW" (that claim was
 *                   never counted). No event (there is no event type for it).
 *   published       sns-publish committed and SNS accepted: counters
 *                   ENQUEUED -> PUBLISHED; event schedule.published.
 *   publish_failed  sns-publish already wrote the revert to ENQUEUED: event
 *                   schedule.enqueued carrying the error; no counter (and
 *                   nothing when "state" says the revert failed: the commit
 *                   stands and the redelivery publishes).
 *   dead            sqs-drain read it from the dead-letter queue ("rh" = its
 *                   receipt handle): store_fail (ENQUEUED -> FAILED with the
 *                   last publish error, only when the message is the
 *                   current copy: its "lease" is the record's, or its "mid"
 *                   the record's pub_msg), counters, event schedule.failed;
 *                   then the DLQ message is deleted: only once the write
 *                   succeeded or the record showed it is already elsewhere
 *                   or that the message is a stale copy left by a re-claim
 *                   (result "unchanged"; deleting one sqs-drain already
 *                   deleted is harmless).
 * "attempts" (sns-publish) or "rc" (SQS receive count) go into the events.
 *   invalid         store_invalid (NEW/ENQUEUED -> INVALID), counters (from
 *                   the state the write found, or NEW for a first claim
 *                   sqs-push refused: "from" is "NEW"), event.
 * Every write is conditional: a replayed report fails the condition and
 * changes nothing ("unchanged"). pushed/published write nothing, so their
 * replays are recognised in memory (the last 20,000-40,000 reports, keyed
 * by id + the claim's lease / the SQS MessageId): a replay reaching another
 * process counts twice (stats --recount repairs counters).
 *
 * Counters are added up in memory and flushed every --flush and at exit;
 * events are batched (PublishBatch of 10, or what is queued once the oldest
 * has waited EVENTS_LINGER_MS, 200 ms). An events failure is logged and never holds a state
 * change: the table is the truth.
 *
 * --out (none by default): one NDJSON line per report handled:
 *   {"id":..,"report":..,"result":"applied"|"unchanged"|"failed",
 *    "from":STATE,"to":STATE,"error":..}   (from/to/error when known). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include "sqs.h"
#include "stage.h"
#include "store.h"
#include "timeutil.h"

#define OUT_TIMEOUT_MS 2000
#define SEEN_GEN       20000    /* keys per generation of the replay filter */
#define SEEN_CAP       65536    /* its slots: a power of two, load <= 0.31 */
#define SUMMARY_MS     10000
#define EVENTS_LINGER_MS 200    /* longest wait of a queued lifecycle event */

/* ------------------------------------------------------------ replay filter */

/* Two generations of an open-addressing string set: when the current one
 * is full it becomes the previous one and the oldest is dropped, so memory
 * stays bounded and the last SEEN_GEN..2*SEEN_GEN keys are remembered. */
typedef struct {
    char **slot;
    size_t cap, n;
} kset;

typedef struct {
    kset gen[2];
} seen_set;

static void kset_free(kset *k)
{
    for (size_t i = 0; i < k->cap; i++) free(k->slot[i]);
    free(k->slot);
    memset(k, 0, sizeof *k);
}

static char **kset_find(const kset *k, const char *key)
{
    if (!k->cap) return NULL;
    size_t i = sched_fnv1a(key, strlen(key)) & (k->cap - 1);
    while (k->slot[i] && strcmp(k->slot[i], key)) i = (i + 1) & (k->cap - 1);
    return &k->slot[i];
}

/* 1 if key was seen recently; remembers it either way. */
static int seen_check(seen_set *s, const char *key)
{
    char **p = kset_find(&s->gen[0], key);
    if ((p && *p) || ((p = kset_find(&s->gen[1], key)) && *p)) return 1;
    if (s->gen[0].n >= SEEN_GEN || !s->gen[0].cap) {
        kset_free(&s->gen[1]);
        s->gen[1] = s->gen[0];
        s->gen[0] = (kset){xcalloc(SEEN_CAP, sizeof(char *)), SEEN_CAP, 0};
    }
    *kset_find(&s->gen[0], key) = xstrdup(key);
    s->gen[0].n++;
    return 0;
}

/* ------------------------------------------------------------ state */

typedef struct {
    store *s;
    aws_client *sqs;
    store_counts *counts;
    zpipe_out *out;          /* NULL: no --out */
    int out_stalled;
    seen_set seen;
    uint64_t ev_failed_seen;
    uint64_t n_applied, n_unchanged, n_failed, n_bad;
    buf_t line;
} updater;

/* What a report line says, read leniently (an "invalid" report may not be
 * a complete wire record). */
typedef struct {
    char report[32];
    char from[16];           /* "from": the state a claim came from */
    char state[16];          /* "state": publish_failed, the record's state now */
    int64_t attempts;        /* "attempts": sns-publish's count, 0 if absent */
    char *id;                /* owned */
    char *error;             /* owned, NULL if absent */
} peek_t;

typedef struct {
    const char *result;      /* "applied", "unchanged", "failed" */
    int from, to;            /* -1 when unknown */
    char error[800];         /* "" when none */
} outcome;

static outcome mk(const char *result, int from, int to, const char *error)
{
    outcome o = {result, from, to, ""};
    if (error) snprintf(o.error, sizeof o.error, "%s", error);
    return o;
}

static const stage_opt opts[] = {
    {"flush", "DURATION", "write the counters this often [1s]"},
    {"no-events", NULL, "do not publish lifecycle events [$DELAYER_EVENTS]"},
    {"prefix", "P", "deployment prefix [$DELAYER_PREFIX or delayer]"},
    {NULL, NULL, NULL}};

static const stage_spec spec = {
    "state-update",
    "Applies the transitions reported by the pipeline stages (pushed, push_failed,\n"
    "published, publish_failed, dead, invalid), keeps the counters and publishes\n"
    "the lifecycle events. --in binds by default; --out (optional) prints each\n"
    "report's outcome as NDJSON.",
    1, 1, opts, NULL};

/* ------------------------------------------------------------ helpers */

static char *member_str(json_doc *d, const char *key, buf_t *tmp)
{
    int t = json_get(d, 0, key);
    if (json_type(d, t) != JSON_STR || json_str(d, t, tmp) < 0 || memchr(buf_str(tmp), 0, tmp->len)) return NULL;
    return xstrdup(buf_str(tmp));
}

/* Copies string member key into out[outlen] ("" when absent or too long). */
static void member_copy(json_doc *d, const char *key, buf_t *tmp, char *out, size_t outlen)
{
    char *v = member_str(d, key, tmp);
    out[0] = '\0';
    if (v && strlen(v) < outlen) memcpy(out, v, strlen(v) + 1);
    free(v);
}

static const char *const kinds[] = {"pushed", "push_failed", "published", "publish_failed", "dead", "invalid"};

static int known_kind(const char *r)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(r, kinds[i])) return 1;
    return 0;
}

static void peek_free(peek_t *pk)
{
    free(pk->id);
    free(pk->error);
    pk->id = pk->error = NULL;
}

/* Reads what every report needs; -1 with err (the line is skipped). */
static int peek(const buf_t *msg, peek_t *pk, char *err, size_t errlen)
{
    json_doc d;
    buf_t tmp = BUF_INIT;
    char *rep = NULL;
    int rc = -1;
    memset(pk, 0, sizeof *pk);
    if (json_parse(&d, msg->p, msg->len) < 0 || json_type(&d, 0) != JSON_OBJ) {
        snprintf(err, errlen, "report: not a JSON object (%s)", d.err[0] ? d.err : "wrong type");
    } else if (!(rep = member_str(&d, "report", &tmp)) || !known_kind(rep)) {
        snprintf(err, errlen, "report: %s", rep ? "not one of pushed, push_failed, published, publish_failed, dead, invalid"
                                                 : "missing");
    } else if (!(pk->id = member_str(&d, "id", &tmp)) || !pk->id[0]) {
        snprintf(err, errlen, "id: missing");
    } else {
        snprintf(pk->report, sizeof pk->report, "%s", rep);
        member_copy(&d, "from", &tmp, pk->from, sizeof pk->from);
        member_copy(&d, "state", &tmp, pk->state, sizeof pk->state);
        if (json_i64(&d, json_get(&d, 0, "attempts"), &pk->attempts) < 0) pk->attempts = 0;
        pk->error = member_str(&d, "error", &tmp);
        rc = 0;
    }
    free(rep);
    json_free(&d);
    buf_free(&tmp);
    if (rc < 0) peek_free(pk);
    return rc;
}

/* Logs event publishing failures once per new batch of them. */
static void events_check(updater *u)
{
    if (u->s->ev_failed > u->ev_failed_seen) {
        log_ev(LOG_WARN, "events not published", "error", u->s->ev_err,
               "lost", log_i64((int64_t)(u->s->ev_failed - u->ev_failed_seen)), NULL);
        u->ev_failed_seen = u->s->ev_failed;
    }
}

static void event(updater *u, const char *type, const sched_rec *r, int state, const char *error)
{
    store_event(u->s, type, r, state, time_now_ms(), error);
    events_check(u);
}

/* A record for events from the wire (id, due, topic) and attempts. */
static void rec_from_wire(sched_rec *r, const sched_wire *w, int64_t attempts)
{
    sched_rec_init(r);
    r->id = w->r.id;
    r->due = w->r.due;
    r->topic = w->r.topic;
    r->attempts = attempts;
}

static void emit(updater *u, const peek_t *pk, const outcome *o)
{
    int lvl = !strcmp(o->result, "failed") ? LOG_ERROR : !strcmp(o->result, "unchanged") ? LOG_DEBUG
            : (!strcmp(pk->report, "pushed") || !strcmp(pk->report, "published")) ? LOG_DEBUG : LOG_INFO;
    log_ev(lvl, pk->report, "id", pk->id, "result", o->result,
           "from", o->from >= 0 ? sched_state_name(o->from) : "", "to", o->to >= 0 ? sched_state_name(o->to) : "",
           "error", o->error, NULL);
    char ml[64];
    snprintf(ml, sizeof ml, "result=\"%s\"", o->result);
    metrics_count("delayer_updates_total", "reports applied to the table, by result (applied, unchanged, failed)", ml, 1);
    if (!strcmp(o->result, "applied")) u->n_applied++;
    else if (!strcmp(o->result, "unchanged")) u->n_unchanged++;
    else u->n_failed++;
    if (!u->out) return;
    json_w j;
    buf_reset(&u->line);
    jw_init(&j, &u->line);
    jw_obj(&j);
    jw_key(&j, "id");
    jw_str(&j, pk->id);
    jw_key(&j, "report");
    jw_str(&j, pk->report);
    jw_key(&j, "result");
    jw_str(&j, o->result);
    if (o->from >= 0) jw_key(&j, "from"), jw_str(&j, sched_state_name(o->from));
    if (o->to >= 0) jw_key(&j, "to"), jw_str(&j, sched_state_name(o->to));
    if (o->error[0]) jw_key(&j, "error"), jw_str(&j, o->error);
    jw_obj_end(&j);
    /* The output is informative: once it stalls, lines are dropped without
     * waiting (logged once) until it takes one again. */
    if (zpipe_out_send(u->out, u->line.p, u->line.len, u->out_stalled ? 0 : OUT_TIMEOUT_MS) == 0) {
        u->out_stalled = 0;
    } else if (!u->out_stalled) {
        u->out_stalled = 1;
        log_ev(LOG_WARN, "output does not take lines: dropping them", "id", pk->id, "error", strerror(errno), NULL);
    }
}

/* A conditional write's result as an outcome. */
static outcome written(updater *u, int rc, int from, int to, const char *error)
{
    if (rc == STORE_OK) return mk("applied", from, to, error);
    if (rc == STORE_LOST || rc == STORE_NOTFOUND) return mk("unchanged", -1, -1, u->s->err);
    return mk("failed", -1, -1, u->s->err);
}

/* ------------------------------------------------------------ reports */

static outcome on_pushed(updater *u, const peek_t *pk, const sched_wire *w)
{
    char key[64 + SCHED_ID_MAX];
    snprintf(key, sizeof key, "P|%" PRId64 "|%s", w->r.lease, w->r.id);
    if (seen_check(&u->seen, key)) return mk("unchanged", -1, -1, "replayed report");
    int first = !strcmp(pk->from, "NEW");
    if (first) store_counts_move(u->counts, SCHED_NEW, SCHED_ENQUEUED, w->r.topic);
    sched_rec r;
    rec_from_wire(&r, w, 0);
    event(u, "schedule.enqueued", &r, SCHED_ENQUEUED, NULL);
    return mk("applied", first ? SCHED_NEW : SCHED_ENQUEUED, SCHED_ENQUEUED, NULL);
}

/* The attempt count for events: sns-publish's "attempts", else SQS's
 * receive count. */
static int64_t attempts(const peek_t *pk, const sched_wire *w)
{
    return pk->attempts > 0 ? pk->attempts : w->rc > 0 ? w->rc : 1;
}

static outcome on_published(updater *u, const peek_t *pk, const sched_wire *w)
{
    char key[192 + SCHED_ID_MAX];
    snprintf(key, sizeof key, "B|%s|%s", w->mid ? w->mid : "", w->r.id);
    if (seen_check(&u->seen, key)) return mk("unchanged", -1, -1, "replayed report");
    store_counts_move(u->counts, SCHED_ENQUEUED, SCHED_PUBLISHED, w->r.topic);
    sched_rec r;
    rec_from_wire(&r, w, attempts(pk, w));
    event(u, "schedule.published", &r, SCHED_PUBLISHED, NULL);
    return mk("applied", SCHED_ENQUEUED, SCHED_PUBLISHED, NULL);
}

static outcome on_publish_failed(updater *u, const peek_t *pk, const sched_wire *w)
{
    sched_rec r;
    /* sns-publish could not revert its commit: the record is still
     * PUBLISHED and the redelivery of the same message will publish it. */
    if (!strcmp(pk->state, "PUBLISHED")) return mk("unchanged", -1, -1, "the commit stands: SQS redelivers");
    rec_from_wire(&r, w, attempts(pk, w));
    event(u, "schedule.enqueued", &r, SCHED_ENQUEUED, pk->error ? pk->error : "publish failed");
    return mk("applied", SCHED_PUBLISHED, SCHED_ENQUEUED, pk->error);
}

static outcome on_push_failed(updater *u, const peek_t *pk, const sched_wire *w)
{
    sched_rec old;
    sched_rec_init(&old);
    int rc = store_unclaim(u->s, w->r.id, w->r.due, w->r.lease, &old);
    /* A first claim (from NEW) was never counted as ENQUEUED. */
    if (rc == STORE_OK && strcmp(pk->from, "NEW")) store_counts_move(u->counts, SCHED_ENQUEUED, SCHED_NEW, old.topic);
    outcome o = written(u, rc, SCHED_ENQUEUED, SCHED_NEW, pk->error);
    sched_rec_free(&old);
    return o;
}

static outcome on_invalid(updater *u, const peek_t *pk)
{
    sched_rec old;
    sched_rec_init(&old);
    const char *error = pk->error ? pk->error : "invalid";
    int rc = store_invalid(u->s, pk->id, error, &old);
    if (rc == STORE_OK) {
        /* The counters move from the state the record was counted in: the
         * write's old image, except for a first claim (from NEW) that
         * sqs-push refused: the claim is counted on "pushed" only, so the
         * counters still have it NEW (as on push_failed). */
        int from = old.state == SCHED_ENQUEUED && !strcmp(pk->from, "NEW") ? SCHED_NEW : old.state;
        store_counts_move(u->counts, from, SCHED_INVALID, old.topic);
        event(u, "schedule.invalid", &old, SCHED_INVALID, error);
    }
    outcome o = written(u, rc, old.state, SCHED_INVALID, error);
    sched_rec_free(&old);
    return o;
}

/* The error a FAILED record keeps: the report's, else the last publish
 * error sns-publish recorded (store_fail would otherwise replace it). */
static char *dead_error(updater *u, const peek_t *pk, const sched_wire *w)
{
    if (pk->error) return xstrdup(pk->error);
    sched_rec cur;
    sched_rec_init(&cur);
    buf_t b = BUF_INIT;
    if (store_get(u->s, w->r.id, &cur) == STORE_OK && cur.last_error) buf_printf(&b, "%s", cur.last_error);
    else buf_printf(&b, "DeadLetter: moved to the dead-letter queue after %" PRId64 " receives", w->rc);
    sched_rec_free(&cur);
    return b.p;
}

static void dlq_delete(updater *u, const sched_wire *w)
{
    aws_err e;
    if (!w->rh) {
        log_ev(LOG_WARN, "dead: no receipt handle, the DLQ message stays", "id", w->r.id, NULL);
        return;
    }
    if (!u->sqs && !(u->sqs = store_sqs(u->s))) {
        log_ev(LOG_WARN, "dead: no SQS client, the DLQ message stays", "id", w->r.id, "error", u->s->err, NULL);
        return;
    }
    /* A failure leaves it to come back and be handled again (idempotent). */
    if (sqs_delete_message(u->sqs, u->s->dlq_url, w->rh, &e) < 0)
        log_ev(LOG_WARN, "dead: DLQ message not deleted", "id", w->r.id, "error", e.message, "code", e.code, NULL);
}

static outcome on_dead(updater *u, const peek_t *pk, const sched_wire *w)
{
    sched_rec old;
    sched_rec_init(&old);
    char *error = dead_error(u, pk, w);
    int rc = store_fail(u->s, w, error, &old);
    outcome o = written(u, rc, SCHED_ENQUEUED, SCHED_FAILED, error);
    if (rc == STORE_OK) {
        store_counts_move(u->counts, SCHED_ENQUEUED, SCHED_FAILED, old.topic);
        event(u, "schedule.failed", &old, SCHED_FAILED, error);
        dlq_delete(u, w);
    } else if (rc == STORE_LOST && old.state == SCHED_PUBLISHED && old.pub_msg && w->mid && !strcmp(old.pub_msg, w->mid)) {
        /* This very delivery committed the publish and then died every time:
         * SNS may never have had it. Keep the only trace for an operator. */
        o = mk("failed", -1, -1, "dead-lettered after its publish commit: kept in the dead-letter queue");
    } else if (rc == STORE_LOST || rc == STORE_NOTFOUND) {
        /* A stale copy (the schedule was claimed again or retried since it
         * was sent; store_fail) or final already: nothing to keep. */
        if (rc == STORE_LOST && old.state == SCHED_ENQUEUED)
            o = mk("unchanged", -1, -1, "stale copy: the schedule was claimed again since this message was sent");
        dlq_delete(u, w);
    }
    free(error);
    sched_rec_free(&old);
    return o;
}

/* ------------------------------------------------------------ dispatch */

static void handle(updater *u, const buf_t *msg)
{
    peek_t pk;
    char err[300];
    sched_wire w;
    sched_wire_init(&w);
    if (peek(msg, &pk, err, sizeof err) < 0) {
        u->n_bad++;
        metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
        log_ev(LOG_ERROR, "bad report", "error", err, NULL);
        return;
    }
    int needs_wire = strcmp(pk.report, "invalid") != 0;
    if (needs_wire && sched_wire_read(msg->p, msg->len, &w, err, sizeof err) < 0) {
        u->n_bad++;
        metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
        log_ev(LOG_ERROR, "bad report", "id", pk.id, "report", pk.report, "error", err, NULL);
    } else {
        outcome o;
        const char *r = pk.report;
        if (!strcmp(r, "pushed")) o = on_pushed(u, &pk, &w);
        else if (!strcmp(r, "push_failed")) o = on_push_failed(u, &pk, &w);
        else if (!strcmp(r, "published")) o = on_published(u, &pk, &w);
        else if (!strcmp(r, "publish_failed")) o = on_publish_failed(u, &pk, &w);
        else if (!strcmp(r, "dead")) o = on_dead(u, &pk, &w);
        else o = on_invalid(u, &pk);   /* peek() accepted only the known kinds */
        emit(u, &pk, &o);
    }
    sched_wire_free(&w);
    peek_free(&pk);
}

/* ------------------------------------------------------------ flushing */

static void flush_counts(updater *u, int final)
{
    if (!store_counts_pending(u->counts)) return;
    if (store_counts_flush(u->s, u->counts) == STORE_OK) return;
    /* Kept for the next flush; at exit they are lost (stats --recount). */
    log_ev(final ? LOG_ERROR : LOG_WARN, final ? "counters lost at exit" : "counters not written, kept",
           "error", u->s->err, "hint", "delayer stats --recount", NULL);
}

static void flush_events(updater *u)
{
    if (u->s->nev) store_events_flush(u->s);
    events_check(u);
}

static void summary(updater *u)
{
    log_ev(LOG_INFO, "summary", "applied", log_i64((int64_t)u->n_applied), "unchanged", log_i64((int64_t)u->n_unchanged),
           "failed", log_i64((int64_t)u->n_failed), "bad", log_i64((int64_t)u->n_bad),
           "events_sent", log_i64((int64_t)u->s->ev_sent), "events_failed", log_i64((int64_t)u->s->ev_failed), NULL);
}

static int run(updater *u, zpipe_in *in, int64_t flush_ms)
{
    buf_t msg = BUF_INIT;
    int code = STAGE_EXIT_OK;
    int64_t next_flush = time_mono_ms() + flush_ms, next_summary = time_mono_ms() + SUMMARY_MS;
    uint64_t last_total = 0;
    int64_t ev_since = 0;   /* when the oldest queued event was queued */
    for (;;) {
        int64_t now = time_mono_ms(), wait = next_flush - now;
        if (!u->s->nev) ev_since = 0;
        else if (!ev_since) ev_since = now;
        if (ev_since && ev_since + EVENTS_LINGER_MS - now < wait) wait = ev_since + EVENTS_LINGER_MS - now;
        int rc = zpipe_in_recv(in, &msg, wait > 0 ? (int)wait : 0);
        if (rc == ZPIPE_READY) {
            handle(u, &msg);
        } else if (rc != ZPIPE_TIMEOUT) {
            if (rc == ZPIPE_ERR) {
                log_ev(LOG_ERROR, "input failed", "error", strerror(errno), NULL);
                code = STAGE_EXIT_SYSTEM;
            } else if (rc == ZPIPE_EOF && u->n_bad) {
                code = STAGE_EXIT_REJECTED;   /* a finite input had bad lines (each logged) */
            }
            break;   /* EOF or a stop request */
        }
        /* Events wait at most EVENTS_LINGER_MS to fill a PublishBatch of 10
         * (store_event sends a full one at once): flushing whenever the
         * input was idle sent about one event per request at 200/s. */
        if (ev_since && u->s->nev && time_mono_ms() - ev_since >= EVENTS_LINGER_MS) flush_events(u);
        if (time_mono_ms() >= next_flush) {
            flush_counts(u, 0);
            flush_events(u);
            next_flush = time_mono_ms() + flush_ms;
        }
        uint64_t total = u->n_applied + u->n_unchanged + u->n_failed + u->n_bad;
        if (time_mono_ms() >= next_summary && total != last_total) {
            summary(u);
            last_total = total;
            next_summary = time_mono_ms() + SUMMARY_MS;
        }
    }
    flush_counts(u, 1);
    flush_events(u);
    summary(u);
    buf_free(&msg);
    return code;
}

/* --out was given (stage_init defaults it to "-", but here none is the default). */
static int out_given(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--out") || !strncmp(argv[i], "--out=", 6)) return 1;
    return 0;
}

static int setup(updater *u, const stage_opts *o, int64_t *flush_ms)
{
    char err[512];
    store_conf c;
    const char *v;
    *flush_ms = 1000;
    if ((v = stage_opt_get(o, "flush")) && (time_parse_duration(v, flush_ms, err, sizeof err) < 0 || *flush_ms < 1)) {
        log_ev(LOG_ERROR, "--flush: expected a duration such as 1s or 500ms", "value", v, NULL);
        return STAGE_EXIT_USAGE;
    }
    if (store_conf_env(&c, err, sizeof err) < 0) {
        log_ev(LOG_ERROR, "bad environment", "error", err, NULL);
        return STAGE_EXIT_USAGE;
    }
    if (stage_opt_get(o, "no-events")) c.events = 0;
    if ((v = stage_opt_get(o, "prefix"))) c.prefix = v;
    int rc;
    if (!(u->s = stage_store_load(&c, &rc))) return rc;
    u->counts = store_counts_new();
    return STAGE_RUN;
}

int main(int argc, char **argv)
{
    stage_opts o;
    updater u;
    int64_t flush_ms;
    memset(&u, 0, sizeof u);
    int rc = stage_init(argc, argv, &spec, &o);
    if (rc != STAGE_RUN) return rc;
    zpipe_in *in = NULL;
    if ((rc = setup(&u, &o, &flush_ms)) == STAGE_RUN &&
        (rc = stage_open(&o, &in, out_given(argc, argv) ? &u.out : NULL)) == 0) {
        stage_ready(&o);
        rc = run(&u, in, flush_ms);
    }
    zpipe_in_close(in);
    zpipe_out_close(u.out);
    store_counts_free(u.counts);
    kset_free(&u.seen.gen[0]);
    kset_free(&u.seen.gen[1]);
    buf_free(&u.line);
    store_close(u.s);
    return rc;
}
