/* sqs-push: puts claimed schedules into the delay queue.
 *
 * Reads wire records (from ddb-scan-due), collects up to 10 (flushing when
 * 10 are there, --linger ms after the first, or at the end of input) and
 * sends them with SendMessageBatch: body = the wire record without stage
 * fields (the payload left out, "nopayload", when the body would exceed
 * SQS's size limit), DelaySeconds = clamp(floor((due - now - 250 ms) / 1 s),
 * 0, 900) (SCHED_DELAY_MARGIN_MS): rounded DOWN with a margin, so the message
 * arrives 0.5-1.5 s early and sns-publish holds it to the exact
 * millisecond; never rounded up (late).
 *
 * For each record it emits one report record to --out for state-update:
 *   "pushed"       SQS accepted it; "mid" = the SQS MessageId
 *   "push_failed"  every try failed (5 tries over ~8 s, or a stop came);
 *                  "error" = the last one. state-update puts the schedule
 *                  back to NEW (store_unclaim with the record's lease): this
 *                  tool never writes the table itself, and if the report is
 *                  lost the claim's lease runs out and the scanner takes the
 *                  schedule again. Either way it is never lost.
 *   "invalid"      the input line has an id but is not a valid wire record
 *                  (or SQS refused its content); "error" names the field.
 * Reports carry the wire record without its payload ("nopayload":true), the
 * lease of the claim and the scanner's "from" member when it had one. They
 * never hold pushing up: reports the output does not take at once wait in
 * an outbox (10,000, then the oldest are dropped) offered every 200 ms, and
 * for at most 2 s at exit.
 * A line without an id is only logged. Bad input never stops the tool. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include "sqs.h"
#include "stage.h"
#include "store.h"
#include "timeutil.h"

#define BODY_MAX          262144  /* SQS's classic limit, also fauxqs's (as store.c) */
#define MAX_TRIES         5
#define FIRST_BACKOFF_MS  500     /* doubles: 0.5 + 1 + 2 + 4 s between 5 tries */
#define OUTBOX_MAX        10000   /* reports waiting for state-update; then the oldest go */
#define OUTBOX_RETRY_MS   200     /* how often waiting reports are offered again */
#define OUTBOX_EXIT_MS    2000    /* how long a stopping sqs-push still offers them */

typedef struct {
    sched_wire w;
    char from[16];      /* "NEW" / "ENQUEUED" from the scanner, "" if absent */
    buf_t body;
    int done;           /* 1 once SQS accepted it */
    int delay;          /* DelaySeconds of the last try */
    int fatal;          /* SQS refused the content itself: never retried */
    char mid[128];
    char err[704];
} item;

typedef struct {
    store *s;
    aws_client *sqs;
    zpipe_out *out;
    int64_t linger_ms;
    item batch[SQS_BATCH_MAX];
    size_t n;
    buf_t line;
    int out_dead;       /* stdout's reader is gone: reports are dropped */
    char **outbox;      /* reports not taken yet, oldest first */
    size_t nout;
    uint64_t pushed, failed, invalid, calls, dropped_reports;
} pusher;

static const stage_opt opts[] = {
    {"linger", "MS", "send a partial batch this long after its first record [50]"},
    {"prefix", "P", "deployment prefix [$DELAYER_PREFIX or delayer]"},
    {NULL, NULL, NULL}};

static const stage_spec spec = {
    "sqs-push",
    "Sends claimed schedules (wire records) to the delay queue with SendMessageBatch\n"
    "and reports each outcome (pushed / push_failed / invalid) to state-update.",
    1, 1, opts, NULL};

/* ------------------------------------------------------------ helpers */

static void nap_ms(int64_t ms)
{
    int64_t until = time_mono_ms() + ms;
    while (!stage_should_stop()) {
        int64_t left = until - time_mono_ms();
        if (left <= 0) return;
        struct timespec ts = {0, (long)(left > 50 ? 50 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int delay_seconds(int64_t due, int64_t now)
{
    int64_t d = (due - now - SCHED_DELAY_MARGIN_MS) / 1000;   /* truncates toward zero: negative -> clamped */
    return d < 0 ? 0 : d > SQS_DELAY_MAX ? SQS_DELAY_MAX : (int)d;
}

/* Reads a top-level string member of a JSON line; "" when absent. */
static void line_str(const char *line, size_t n, const char *key, char *out, size_t outlen)
{
    json_doc d;
    buf_t v = BUF_INIT;
    out[0] = '\0';
    if (json_parse(&d, line, n) == 0 && json_type(&d, 0) == JSON_OBJ) {
        int t = json_get(&d, 0, key);
        if (json_type(&d, t) == JSON_STR && json_str(&d, t, &v) == 0 && !memchr(buf_str(&v), 0, v.len))
            snprintf(out, outlen, "%s", buf_str(&v));
    }
    json_free(&d);
    buf_free(&v);
}

/* ------------------------------------------------------------ reports */

/* Offers the waiting reports, oldest first, each within timeout_ms; stops
 * at the first one not taken (the output is busy or absent). */
static void outbox_flush(pusher *p, int timeout_ms)
{
    size_t i = 0;
    for (; i < p->nout; i++) {
        if (!p->out_dead && zpipe_out_send(p->out, p->outbox[i], strlen(p->outbox[i]), timeout_ms) < 0) {
            if (errno == EAGAIN) break;
            log_ev(LOG_ERROR, errno == EPIPE ? "output closed: reports are dropped from now on" : "report not sendable",
                   "error", strerror(errno), NULL);
            if (errno == EPIPE) p->out_dead = 1;
            p->dropped_reports++;
        }
        free(p->outbox[i]);
    }
    memmove(p->outbox, p->outbox + i, (p->nout - i) * sizeof *p->outbox);
    p->nout -= i;
}

/* Queues a report and offers what waits. Reports never hold up pushing: a
 * busy or absent state-update makes them wait in the outbox (the table is
 * the truth; a dropped report costs a counter or an event). */
static void send_report(pusher *p, const buf_t *rec)
{
    if (p->out_dead) {
        p->dropped_reports++;
        return;
    }
    if (p->nout == OUTBOX_MAX) {
        if (!p->dropped_reports++) log_ev(LOG_WARN, "state-update does not take reports: dropping the oldest", NULL);
        free(p->outbox[0]);
        memmove(p->outbox, p->outbox + 1, (p->nout - 1) * sizeof *p->outbox);
        p->nout--;
    }
    if (!p->outbox) p->outbox = xmalloc(OUTBOX_MAX * sizeof *p->outbox);
    p->outbox[p->nout++] = xstrndup(rec->p, rec->len);
    outbox_flush(p, 0);
}

/* A report: the record without its payload, plus mid/report/error/from. */
static void report(pusher *p, item *it, const char *what)
{
    sched_wire *w = &it->w;
    w->nopayload = 1;
    free(w->report);
    w->report = xstrdup(what);
    free(w->mid);
    w->mid = it->done ? xstrdup(it->mid) : NULL;
    free(w->error);
    w->error = it->done ? NULL : xstrdup(it->err);
    buf_reset(&p->line);
    sched_wire_write(&p->line, w);
    if (it->from[0]) {
        /* the object ends "}\n": add "from" inside it */
        p->line.len -= 2;
        buf_printf(&p->line, ",\"from\":\"%s\"}\n", it->from);
    }
    send_report(p, &p->line);
}

/* "invalid" for a line that is not a wire record but names an id. */
static void report_invalid(pusher *p, const char *id, const char *error)
{
    buf_t b = BUF_INIT;
    json_w j;
    jw_init(&j, &b);
    jw_obj(&j);
    jw_key(&j, "id");
    jw_str(&j, id);
    jw_key(&j, "report");
    jw_str(&j, "invalid");
    jw_key(&j, "error");
    jw_str(&j, error);
    jw_obj_end(&j);
    send_report(p, &b);
    buf_free(&b);
}

/* ------------------------------------------------------------ input */

/* Parses one input line into the next batch slot. 0 added, -1 rejected. */
static int take(pusher *p, const buf_t *msg)
{
    item *it = &p->batch[p->n];
    char err[300];
    if (sched_wire_read(msg->p, msg->len, &it->w, err, sizeof err) < 0) {
        char id[SCHED_ID_MAX + 1];
        line_str(msg->p, msg->len, "id", id, sizeof id);
        p->invalid++;
        metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
        if (!id[0]) {
            log_ev(LOG_ERROR, "invalid record", "error", err, NULL);
            return -1;
        }
        log_ev(LOG_ERROR, "invalid record", "id", id, "error", err, NULL);
        report_invalid(p, id, err);
        return -1;
    }
    if (it->w.report) {
        /* A report wired to the wrong stage: it must never become a message. */
        p->invalid++;
        metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
        log_ev(LOG_ERROR, "invalid record", "id", it->w.r.id, "error", "report: a report record is not a schedule", NULL);
        sched_wire_free(&it->w);
        return -1;
    }
    /* What SNS would refuse (over 256 KiB with the attributes, not UTF-8, a
     * bad attribute) can never be published: INVALID now, not five refused
     * publishes later. A nopayload record's payload is in the table, checked
     * when it was created. */
    if (!it->w.nopayload && sched_check_stored(&it->w.r, err, sizeof err) < 0) {
        p->invalid++;
        metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
        log_ev(LOG_ERROR, "invalid record", "id", it->w.r.id, "error", err, NULL);
        report_invalid(p, it->w.r.id, err);
        sched_wire_free(&it->w);
        return -1;
    }
    line_str(msg->p, msg->len, "from", it->from, sizeof it->from);
    /* The SQS body: the record without stage fields. */
    sched_wire body;
    sched_wire_init(&body);
    sched_wire_from_rec(&body, &it->w.r);
    body.nopayload = it->w.nopayload;
    buf_reset(&it->body);
    sched_wire_write(&it->body, &body);
    if (it->body.len - 1 > BODY_MAX) {
        body.nopayload = 1;   /* sns-publish reads the payload from the table */
        buf_reset(&it->body);
        sched_wire_write(&it->body, &body);
    }
    it->body.p[--it->body.len] = '\0';
    sched_wire_free(&body);
    it->done = it->fatal = 0;
    it->mid[0] = it->err[0] = '\0';
    p->n++;
    return 0;
}

/* ------------------------------------------------------------ sending */

/* The outcome of one entry. */
static void entry_result(pusher *p, item *it, const aws_entry_result *r)
{
    if (r->ok) {
        it->done = 1;
        snprintf(it->mid, sizeof it->mid, "%s", r->message_id);
        return;
    }
    snprintf(it->err, sizeof it->err, "%s: %s", r->code, r->message);
    /* Content SQS will never accept (characters outside its allowed set). */
    if (r->sender_fault && strstr(r->code, "InvalidMessageContents")) it->fatal = 1;
}

/* One SendMessageBatch over items idx[0..m). */
static void send_some(pusher *p, item **its, size_t m)
{
    sqs_send_entry ent[SQS_BATCH_MAX];
    aws_entry_result res[SQS_BATCH_MAX];
    aws_err e;
    int64_t now = time_now_ms();
    for (size_t k = 0; k < m; k++) {
        its[k]->delay = delay_seconds(its[k]->w.r.due, now);
        ent[k] = (sqs_send_entry){NULL, its[k]->body.p, its[k]->delay, NULL, 0};
    }
    p->calls++;
    metrics_hist("delayer_batch_size", "entries per AWS batch request", "api=\"SendMessageBatch\"", metrics_batch_bounds, metrics_batch_nbounds, (double)m);
    if (sqs_send_batch(p->sqs, p->s->queue_url, ent, m, res, &e) < 0) {
        for (size_t k = 0; k < m; k++)
            snprintf(its[k]->err, sizeof its[k]->err, "%s: %s", e.code[0] ? e.code : "SendMessageBatch", e.message);
        return;
    }
    for (size_t k = 0; k < m; k++) entry_result(p, its[k], &res[k]);
}

/* One try over every item still to send, in calls of at most 10 entries
 * and BODY_MAX bytes. Returns how many are still to send. */
static size_t try_all(pusher *p)
{
    item *its[SQS_BATCH_MAX];
    size_t m = 0, total = 0, left = 0;
    for (size_t i = 0; i <= p->n; i++) {
        item *it = i < p->n ? &p->batch[i] : NULL;
        if (it && (it->done || it->fatal)) continue;
        if (m && (!it || total + it->body.len > BODY_MAX)) {
            send_some(p, its, m);
            m = total = 0;
        }
        if (it) {
            its[m++] = it;
            total += it->body.len;
        }
    }
    for (size_t i = 0; i < p->n; i++) left += !p->batch[i].done && !p->batch[i].fatal;
    return left;
}

/* Sends the batch with bounded retries, then reports every record. A stop
 * request ends the retries: what is not in SQS is handed back (push_failed). */
static void flush(pusher *p)
{
    if (!p->n) return;
    int64_t backoff = FIRST_BACKOFF_MS;
    for (int t = 1; t <= MAX_TRIES; t++) {
        size_t left = try_all(p);
        if (!left || t == MAX_TRIES || stage_should_stop()) break;
        const item *first = p->batch;
        while (first->done || first->fatal) first++;   /* left > 0: one is still to send */
        log_ev(LOG_WARN, "retrying", "records", log_i64((int64_t)left), "try", log_i64(t), "error", first->err, NULL);
        metrics_count("delayer_retried_total", "records a stage tries again after a failure", "op=\"push\"", left);
        nap_ms(backoff);
        backoff *= 2;
    }
    for (size_t i = 0; i < p->n; i++) {
        item *it = &p->batch[i];
        const char *id = it->w.r.id;
        if (it->done) {
            p->pushed++;
            metrics_count("delayer_pushed_total", "schedules sent to the delay queue", "", 1);
            log_ev(LOG_DEBUG, "pushed", "id", id, "mid", it->mid, "delay_s", log_i64(it->delay), NULL);
            report(p, it, "pushed");
        } else if (it->fatal) {
            p->invalid++;
            metrics_count("delayer_rejected_total", "input records rejected (malformed)", "", 1);
            log_ev(LOG_ERROR, "refused by SQS", "id", id, "error", it->err, NULL);
            report(p, it, "invalid");
        } else {
            p->failed++;
            metrics_count("delayer_failed_total", "records a stage gave up on (reported failed)", "op=\"push\"", 1);
            log_ev(LOG_ERROR, "push failed", "id", id, "error", it->err, NULL);
            report(p, it, "push_failed");
        }
        sched_wire_free(&it->w);
    }
    p->n = 0;
}

/* ------------------------------------------------------------ main loop */

/* Reads until the end of input or a stop; returns the exit status. */
static int run(pusher *p, zpipe_in *in)
{
    buf_t msg = BUF_INIT;
    int64_t deadline = 0;
    int code = STAGE_EXIT_OK;
    for (;;) {
        int timeout = p->n ? (int)(deadline > time_mono_ms() ? deadline - time_mono_ms() : 0) : -1;
        if (p->nout && (timeout < 0 || timeout > OUTBOX_RETRY_MS)) timeout = OUTBOX_RETRY_MS;
        int rc = zpipe_in_recv(in, &msg, timeout);
        if (rc == ZPIPE_READY) {
            if (take(p, &msg) == 0 && p->n == 1) deadline = time_mono_ms() + p->linger_ms;
            if (p->n == SQS_BATCH_MAX) flush(p);
            continue;
        }
        if (rc == ZPIPE_TIMEOUT) {
            if (p->n && time_mono_ms() >= deadline) flush(p);
            outbox_flush(p, 0);
            continue;
        }
        if (rc == ZPIPE_ERR) {
            log_ev(LOG_ERROR, "input failed", "error", strerror(errno), NULL);
            code = STAGE_EXIT_SYSTEM;
        } else if (rc == ZPIPE_EOF && p->invalid) {
            code = STAGE_EXIT_REJECTED;   /* a finite input had bad records (each logged) */
        }
        break;   /* EOF, stop request (in-flight records still go out) or error */
    }
    flush(p);
    /* Last reports: a bounded wait, then they are given up (logged). */
    for (int64_t end = time_mono_ms() + OUTBOX_EXIT_MS; p->nout && time_mono_ms() < end;) outbox_flush(p, 100);
    if (p->nout) {
        log_ev(LOG_WARN, "reports not delivered at exit", "n", log_i64((int64_t)p->nout), NULL);
        p->dropped_reports += p->nout;
    }
    buf_free(&msg);
    return code;
}

static int setup(pusher *p, const stage_opts *o)
{
    char err[512];
    store_conf c;
    const char *v;
    /* 50: the scanner claims one record per UpdateItem (a few ms each), so
     * 2 ms sent about one record per SendMessageBatch; claims are made a
     * window (default 15 min) before due, so 50 ms costs no precision. */
    p->linger_ms = 50;
    if ((v = stage_opt_get(o, "linger"))) {
        char *end;
        long l = strtol(v, &end, 10);
        if (*end || l < 0 || l > 60000) {
            log_ev(LOG_ERROR, "--linger: expected milliseconds from 0 to 60000", "value", v, NULL);
            return STAGE_EXIT_USAGE;
        }
        p->linger_ms = l;
    }
    if (store_conf_env(&c, err, sizeof err) < 0) {
        log_ev(LOG_ERROR, "bad environment", "error", err, NULL);
        return STAGE_EXIT_USAGE;
    }
    if ((v = stage_opt_get(o, "prefix"))) c.prefix = v;
    int rc;
    if (!(p->s = stage_store_load(&c, &rc))) return rc;
    if (!(p->sqs = store_sqs(p->s))) {
        log_ev(LOG_ERROR, "cannot load the deployment", "error", p->s->err, NULL);
        return STAGE_EXIT_SYSTEM;
    }
    /* Our own retries are the outer loop: keep each call short, so a stop
     * request is honoured within seconds. */
    aws_client_set_max_attempts(p->sqs, 3);
    aws_client_set_timeouts(p->sqs, 2000, 5000);
    return STAGE_RUN;
}

int main(int argc, char **argv)
{
    stage_opts o;
    pusher p;
    memset(&p, 0, sizeof p);
    for (size_t i = 0; i < SQS_BATCH_MAX; i++) sched_wire_init(&p.batch[i].w);
    int rc = stage_init(argc, argv, &spec, &o);
    if (rc != STAGE_RUN) return rc;
    zpipe_in *in = NULL;
    if ((rc = setup(&p, &o)) == STAGE_RUN && (rc = stage_open(&o, &in, &p.out)) == 0) {
        stage_ready(&o);
        rc = run(&p, in);
        log_ev(LOG_INFO, "stopped", "pushed", log_i64((int64_t)p.pushed), "failed", log_i64((int64_t)p.failed),
               "invalid", log_i64((int64_t)p.invalid), "calls", log_i64((int64_t)p.calls),
               "reports_dropped", log_i64((int64_t)p.dropped_reports), NULL);
    }
    zpipe_in_close(in);
    zpipe_out_close(p.out);
    for (size_t i = 0; i < SQS_BATCH_MAX; i++) {
        sched_wire_free(&p.batch[i].w);
        buf_free(&p.batch[i].body);
    }
    for (size_t i = 0; i < p.nout; i++) free(p.outbox[i]);
    free(p.outbox);
    buf_free(&p.line);
    store_close(p.s);
    return rc;
}
