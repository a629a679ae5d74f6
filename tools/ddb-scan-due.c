/* ddb-scan-due: the scanner. Every tick it reads the due index
 * (docs/schema.md "Indexes") of the shards it owns, claims what is due
 * within the window (NEW -> ENQUEUED with a lease) or whose lease ran out
 * (ENQUEUED -> ENQUEUED, re-claim with a back-off lease), and sends each
 * claimed schedule downstream (to sqs-push) as one wire record.
 *
 * Two passes per shard and tick:
 *   main pass      due_sk from the in-memory cursor minus LAG_MS (the due
 *                  index is eventually consistent) to now + window, in the
 *                  minute partitions that range touches;
 *   recovery pass  whole minute partitions from the shard's checkpoint to
 *                  the minute of now - grace: expired leases, schedules put
 *                  back to NEW, anything the main pass missed, and the
 *                  catch-up after downtime. A minute that is complete and
 *                  empty moves the checkpoint forward.
 * The main cursor starts where the recovery pass ends (the minute of
 * now - grace), so after downtime every old minute is read once, by the
 * recovery pass, starting at the checkpoint: nothing is skipped.
 * The main pass only moves forward, so the scanner's window must not exceed
 * the window schedules are created with (both come from the deployment's
 * config unless overridden): a schedule created NEW with a due time the
 * cursor has already passed is found by the recovery pass, grace late.
 *
 * Durability: the claim is the durable step. A record lost in a pipe or in a
 * dead sqs-push waits for its lease to expire and is re-claimed.
 *
 * A downstream that does not take a record within SEND_TIMEOUT_MS (no peer,
 * every peer at its high-water mark): the tick stops claiming and the scanner
 * HOLDS that one claimed record, offering it again at the start of every
 * tick and claiming nothing else until it is taken. It is put back to NEW
 * (store_unclaim) when its lease comes within HOLD_MARGIN_MS of running out,
 * when the process stops, or at once when stdout's reader is gone. Why not
 * put it back at once: with sqs-push absent for a while, every tick would
 * then claim and unclaim the same schedule (two conditional writes, two
 * history entries per second, growing the item towards DynamoDB's 400 KB
 * limit), and nothing would tell the scanner when to try again; the held
 * record is that probe, and costs no write.
 *
 * Poison rows. A row whose claim keeps failing with an error that is not
 * a lost condition (another writer winning is normal) must not stop its
 * shard: the main pass parks its cursor on a row it could not finish and
 * the recovery pass stops at its minute. Each such failure is a strike
 * for the row's id (a bounded table, STRIKES_KEPT ids, the least recently
 * struck forgotten first); below STRIKES_MAX the pass stops as before (the
 * next tick tries again: a passing DynamoDB error). At STRIKES_MAX the row
 * is SET ASIDE (store_set_aside: INVALID, last_error naming the problem,
 * counted, event schedule.invalid, logged once) when it is provably the
 * row's fault: DynamoDB refused the claim as invalid (ValidationException)
 * and the item is not a readable schedule (an attribute of the wrong type,
 * written by another tool) or is too large to update. Otherwise (another
 * error, or the set-aside write failed too) it is SKIPPED: the pass goes
 * on past it, logged once, counted (delayer_scan_skipped_total); it stays
 * in the due index, so the recovery pass tries it once a tick and its
 * minute keeps the checkpoint (never lost). A claim that was written but
 * returned an unreadable item (the scanner cannot build its message) is
 * set aside at once.
 *
 * Wire: the record of sched_wire_write (id, due, topic, payload, attrs,
 * chash, lease = the lease of THIS claim) plus one extra member
 * "from":"NEW"|"ENQUEUED", the state the claim came from (state-update
 * counts NEW -> ENQUEUED only for the first). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include "stage.h"
#include "store.h"
#include "timeutil.h"

#define MINUTE_MS       60000
#define LAG_MS          5000   /* index eventual consistency and clock skew */
#define SEND_TIMEOUT_MS 1000   /* a downstream that takes longer is "blocked" */
#define HOLD_MARGIN_MS  5000   /* unclaim a held record this long before its lease ends (at most half the slack) */
/* The slack of a claim's lease: lease = max(due, now) + slack, with slack =
 * min(grace, CLAIM_SLACK_MS). The lease only matters when the record is lost
 * before SQS has it (the scanner or sqs-push killed, a pipe lost): the
 * schedule is re-claimed that long after due (plus a tick), and the lease
 * pass below finds it at once. A re-claim while the first message is only
 * slow (the pipeline more than the slack late) pushes a second SQS copy:
 * safe (the first copy to commit wins, the other finds PUBLISHED with
 * another pub_msg and is dropped), it costs a few requests, and the
 * re-claim's lease doubles (slack * 2^claims). */
#define CLAIM_SLACK_MS  2000
#define STRIKES_MAX     3      /* failed claims of one row before it is set aside or skipped */
#define STRIKES_KEPT    64     /* ids with strikes remembered (bounded memory) */

/* What one shard's passes know. */
typedef struct {
    int shard;
    int64_t cursor;     /* main pass: every due up to here was looked at */
    int64_t ckpt;       /* recovery checkpoint (minute), as stored */
    int64_t scan_to;    /* recovery: complete minutes <= scan_to were read... */
    int64_t *pend;      /* ...and only these (sorted) still held rows */
    size_t npend;
} shard_st;

typedef struct {
    uint64_t claimed, reclaimed, lost, unclaimed, errors, queries, set_aside, skipped;
} tick_stats;

/* A row whose claims failed (see "Poison rows" above). */
typedef struct {
    char *id;           /* NULL: free slot */
    int strikes;
    int logged;         /* its skip was logged: not again */
    uint64_t seen;      /* strike clock when last struck (eviction) */
} strike_t;

/* The claimed record the downstream refused (see the top comment). */
typedef struct {
    int has;
    buf_t line;
    char *id;
    int64_t due, lease;
} held_rec;

typedef struct {
    store *s;
    zpipe_out *out;
    held_rec held;
    shard_st *sh;
    size_t nsh;
    int blocked;        /* downstream refused a record: no more claims this tick */
    int fatal;          /* stdout's reader is gone: stop the process */
    int64_t recovery_ms;    /* time the recovery passes may take per tick (0: no limit, --once) */
    int64_t recovery_until; /* mono ms: this tick's recovery passes stop starting Queries */
    int64_t slack_ms;       /* a claim's lease slack (CLAIM_SLACK_MS) */
    int64_t tick_ms;
    tick_stats t;
    strike_t strikes[STRIKES_KEPT];
    uint64_t strike_clock;
} scanner;

/* H_ASIDE: a poison row set aside or skipped; the pass goes on. */
enum { H_SKIP, H_SENT, H_LOST, H_BLOCKED, H_ERR, H_ASIDE };

static int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ------------------------------------------------------------ options */

static const stage_opt opts[] = {
    {"tick", "DURATION", "time between two scans [1s]"},
    {"shard", "I/N", "own the due-index shards s with s % N == I [0/1: all]"},
    {"window", "DURATION", "claim what is due within this; keep it <= the creators' window [$DELAYER_WINDOW or config]"},
    {"prefix", "P", "deployment prefix [$DELAYER_PREFIX or delayer]"},
    {"once", NULL, "one pass over every owned shard (catching up from the checkpoint), then exit"},
    {NULL, NULL, NULL}};

static const stage_spec spec = {
    "ddb-scan-due",
    "Claims schedules coming due (or whose claim lease ran out) from the due index\n"
    "and sends them downstream as NDJSON wire records, one per line.",
    0, 1, opts, NULL};

static int usage_err(const char *what, const char *val)
{
    log_ev(LOG_ERROR, what, "value", val, "hint", "ddb-scan-due --help", NULL);
    return STAGE_EXIT_USAGE;
}

/* "I/N" with 0 <= I < N. */
static int parse_shard(const char *v, int *i, int *n)
{
    char extra;
    if (sscanf(v, "%d/%d%c", i, n, &extra) != 2 || *n < 1 || *i < 0 || *i >= *n) return -1;
    return 0;
}

typedef struct {
    int64_t tick_ms;
    int own_i, own_n;
    int once;
} scan_opts;

static int read_opts(const stage_opts *o, store_conf *c, scan_opts *so)
{
    char err[256];
    const char *v;
    so->tick_ms = 1000;
    so->own_i = 0, so->own_n = 1;
    so->once = stage_opt_get(o, "once") != NULL;
    if (store_conf_env(c, err, sizeof err) < 0) return usage_err("bad environment", err);
    if ((v = stage_opt_get(o, "tick")) && (time_parse_duration(v, &so->tick_ms, err, sizeof err) < 0 || so->tick_ms < 1))
        return usage_err("--tick: expected a duration such as 1s or 250ms", v);
    if ((v = stage_opt_get(o, "shard")) && parse_shard(v, &so->own_i, &so->own_n) < 0)
        return usage_err("--shard: expected I/N with 0 <= I < N", v);
    if ((v = stage_opt_get(o, "window"))) {
        if (time_parse_duration(v, &c->window_ms, err, sizeof err) < 0 || c->window_ms > SCHED_WINDOW_MAX)
            return usage_err("--window: expected a duration up to 900s", v);
    }
    if ((v = stage_opt_get(o, "prefix"))) {
        if (store_check_prefix(v, err, sizeof err) < 0) return usage_err(err, v);
        c->prefix = v;
    }
    return STAGE_RUN;
}

/* ------------------------------------------------------------ sending */

/* Appends ,"from":"STATE" inside the object that ends line (written by
 * sched_wire_write: "{...}\n"). sched_wire has no such field and ignores
 * unknown members when reading, so it travels alongside it. */
static void add_from(buf_t *line, int from)
{
    size_t n = line->len;
    while (n && (line->p[n - 1] == '\n' || line->p[n - 1] == '}')) n--;
    line->len = n;
    buf_printf(line, ",\"from\":\"%s\"}\n", sched_state_name(from));
}

/* Puts a claimed record back to NEW (the lease would free it anyway). */
static void unclaim(scanner *sc, const char *id, int64_t due, int64_t lease, const char *why)
{
    if (store_unclaim(sc->s, id, due, lease, NULL) == STORE_OK) {
        sc->t.unclaimed++;
        log_ev(LOG_WARN, "not sent, put back to NEW", "id", id, "reason", why, NULL);
    } else {
        log_ev(LOG_WARN, "not sent, unclaim failed: the lease will expire", "id", id, "reason", why,
               "error", sc->s->err, NULL);
    }
}

static void held_drop(held_rec *h)
{
    free(h->id);
    h->id = NULL;
    buf_reset(&h->line);
    h->has = 0;
}

/* Offers the held record again: 1 taken, 0 still refused (or put back). */
static int held_retry(scanner *sc)
{
    held_rec *h = &sc->held;
    if (zpipe_out_send(sc->out, h->line.p, h->line.len, SEND_TIMEOUT_MS) == 0) {
        log_ev(LOG_INFO, "downstream takes records again", "id", h->id, NULL);
        held_drop(h);
        return 1;
    }
    if (errno == EPIPE) sc->fatal = 1;
    if (sc->fatal || time_now_ms() >= h->lease - min64(HOLD_MARGIN_MS, sc->slack_ms / 2)) {
        unclaim(sc, h->id, h->due, h->lease, sc->fatal ? "output closed" : "held until its lease nearly ran out");
        held_drop(h);
    }
    return 0;
}

/* Hands the claimed record downstream. Refused: it is held (see the top
 * comment), or put back at once when stdout's reader is gone. */
static int send_claimed(scanner *sc, const sched_rec *old, int64_t lease, int from)
{
    held_rec *h = &sc->held;
    sched_wire w;
    sched_wire_init(&w);
    sched_wire_from_rec(&w, old);
    w.r.lease = lease;
    buf_reset(&h->line);
    sched_wire_write(&h->line, &w);
    sched_wire_free(&w);
    add_from(&h->line, from);
    if (zpipe_out_send(sc->out, h->line.p, h->line.len, SEND_TIMEOUT_MS) == 0) return H_SENT;
    if (errno == EPIPE) {
        sc->fatal = 1;
        unclaim(sc, old->id, old->due, lease, "output closed");
        return H_BLOCKED;
    }
    log_ev(LOG_WARN, "downstream does not take records: holding one, claiming none", "id", old->id,
           "error", errno == EAGAIN ? "no peer or every peer at its high-water mark" : strerror(errno), NULL);
    h->has = 1;
    h->id = xstrdup(old->id);
    h->due = old->due;
    h->lease = lease;
    return H_BLOCKED;
}

/* ------------------------------------------------------------ poison rows */

static strike_t *strike_find(scanner *sc, const char *id)
{
    for (size_t i = 0; i < STRIKES_KEPT; i++)
        if (sc->strikes[i].id && !strcmp(sc->strikes[i].id, id)) return &sc->strikes[i];
    return NULL;
}

/* The row was handled (claimed, lost, set aside): its strikes are over. */
static void strike_clear(scanner *sc, const char *id)
{
    strike_t *st = strike_find(sc, id);
    if (st) {
        free(st->id);
        memset(st, 0, sizeof *st);
    }
}

/* One more strike for id; its entry (a free or the stalest slot reused). */
static strike_t *strike_add(scanner *sc, const char *id)
{
    strike_t *st = strike_find(sc, id);
    if (!st) {
        st = &sc->strikes[0];
        for (size_t i = 0; i < STRIKES_KEPT && st->id; i++)
            if (!sc->strikes[i].id || sc->strikes[i].seen < st->seen) st = &sc->strikes[i];
        free(st->id);
        memset(st, 0, sizeof *st);
        st->id = xstrdup(id);
    }
    st->strikes++;
    st->seen = ++sc->strike_clock;
    return st;
}

/* Writes row (state from, lease: the one it has, 0 for none) INVALID with
 * reason, and counts it; H_ASIDE, H_LOST (it changed meanwhile) or -1 (the
 * write failed: the caller skips the row). */
static int set_aside(scanner *sc, const store_due_row *row, int from, int64_t lease, const char *reason)
{
    sched_rec old;
    sched_rec_init(&old);
    int rc = store_set_aside(sc->s, row->id, from, lease, reason, &old), h = -1;
    if (rc == STORE_OK) {
        sc->t.set_aside++;
        metrics_count("delayer_scan_set_aside_total", "poison rows the scanner wrote INVALID (claim impossible)", "", 1);
        log_ev(LOG_WARN, "poison row set aside as INVALID", "id", row->id, "reason", reason, NULL);
        /* Counted from the row's state: a first claim is counted only once
         * pushed, so a row claimed here from NEW is still NEW in the counters. */
        store_counts *c = store_counts_new();
        store_counts_move(c, row->state, SCHED_INVALID, old.topic);
        if (store_counts_flush(sc->s, c) != STORE_OK)
            log_ev(LOG_WARN, "counters not written", "error", sc->s->err, "hint", "delayer stats --recount", NULL);
        store_counts_free(c);
        if (!old.due) old.due = row->due;
        store_event(sc->s, "schedule.invalid", &old, SCHED_INVALID, time_now_ms(), reason);
        store_events_flush(sc->s);
        strike_clear(sc, row->id);
        h = H_ASIDE;
    } else if (rc == STORE_LOST || rc == STORE_NOTFOUND) {
        strike_clear(sc, row->id);
        h = H_LOST;
    }
    sched_rec_free(&old);
    return h;
}

/* Skips row for this pass (see "Poison rows"), logging it once. */
static int skip_row(scanner *sc, strike_t *st, const store_due_row *row, const char *error)
{
    sc->t.skipped++;
    metrics_count("delayer_scan_skipped_total", "due-index rows skipped after repeated claim failures (left in the index)", "", 1);
    if (!st->logged) {
        st->logged = 1;
        log_ev(LOG_WARN, "claim keeps failing: row skipped, left in the due index (logged once)", "id", row->id,
               "strikes", log_i64(st->strikes), "error", error, NULL);
    } else {
        log_ev(LOG_DEBUG, "claim keeps failing: row skipped", "id", row->id, "error", error, NULL);
    }
    return H_ASIDE;
}

/* A claim or re-claim of row failed with STORE_ERR (s->err, s->err_kind).
 * written_lease > 0: the claim WAS written with that lease, but the item
 * it returned is unreadable. Returns the H_* of the row. */
static int claim_failed(scanner *sc, const store_due_row *row, int64_t written_lease, const char *what)
{
    char err[sizeof sc->s->err], reason[2 * sizeof sc->s->err + 64], msg[3 * sizeof sc->s->err + 128];
    int kind = sc->s->err_kind;
    snprintf(err, sizeof err, "%s", sc->s->err);
    if (written_lease > 0) {
        /* Claimed (ENQUEUED, our lease) but unsendable: set aside now. */
        snprintf(reason, sizeof reason, "PoisonRow: claimed but unreadable: %s", err);
        int h = set_aside(sc, row, SCHED_ENQUEUED, written_lease, reason);
        if (h >= 0) return h;
        return skip_row(sc, strike_add(sc, row->id), row, sc->s->err);
    }
    strike_t *st = strike_add(sc, row->id);
    if (st->strikes < STRIKES_MAX) {
        sc->t.errors++;
        metrics_count("delayer_failed_total", "records a stage gave up on (reported failed)", "op=\"claim\"", 1);
        log_ev(LOG_WARN, what, "id", row->id, "strike", log_i64(st->strikes), "error", err, NULL);
        return H_ERR;
    }
    if (kind == STORE_EK_VALIDATION && (row->state == SCHED_NEW || row->state == SCHED_ENQUEUED)) {
        /* Refused as invalid: the row's fault only if the item is
         * malformed or too large (else a bug of ours would turn good
         * schedules INVALID: those are skipped instead). */
        sched_rec cur;
        sched_rec_init(&cur);
        int grc = store_get(sc->s, row->id, &cur), bad = 0;
        if (grc == STORE_ERR && sc->s->err_kind == STORE_EK_BADITEM) {
            bad = 1;
            snprintf(reason, sizeof reason, "PoisonRow: the claim is refused (%s): %s", err, sc->s->err);
        } else if (grc == STORE_OK && strstr(err, "size")) {
            bad = 1;
            snprintf(reason, sizeof reason, "PoisonRow: the claim is refused (%s)", err);
        }
        sched_rec_free(&cur);
        if (grc == STORE_NOTFOUND) {
            strike_clear(sc, row->id);
            return H_LOST;
        }
        if (bad) {
            int h = set_aside(sc, row, row->state, row->state == SCHED_ENQUEUED ? row->lease : 0, reason);
            if (h >= 0) return h;
            snprintf(msg, sizeof msg, "%s; set aside failed: %s", reason, sc->s->err);
            return skip_row(sc, st, row, msg);
        }
    }
    return skip_row(sc, st, row, err);
}

/* ------------------------------------------------------------ claiming */

/* NEW -> ENQUEUED, lease = max(due, now) + slack. */
static int claim_new(scanner *sc, const store_due_row *row, int64_t now)
{
    sched_rec old;
    sched_rec_init(&old);
    int64_t lease = max64(row->due, now) + sc->slack_ms;
    int rc = store_claim(sc->s, row->id, lease, &old), h;
    if (rc == STORE_OK && old.id) {
        sc->t.claimed++;
        metrics_count("delayer_claimed_total", "schedules claimed for the queue (kind=new: NEW, kind=reclaim: an expired lease)", "kind=\"new\"", 1);
        log_ev(LOG_DEBUG, "claimed", "id", row->id, "due", log_i64(row->due), "lease", log_i64(lease), NULL);
        h = send_claimed(sc, &old, lease, SCHED_NEW);
    } else if (rc == STORE_LOST || rc == STORE_NOTFOUND) {
        sc->t.lost++;
        metrics_count("delayer_claims_lost_total", "claims another writer won (harmless)", "", 1);
        log_ev(LOG_DEBUG, "claim lost (another writer won)", "id", row->id, "error", sc->s->err, NULL);
        h = H_LOST;
    } else {
        h = claim_failed(sc, row, sc->s->err_kind == STORE_EK_BADITEM ? lease : 0, "claim failed");
    }
    if (h == H_SENT || h == H_LOST) strike_clear(sc, row->id);
    sched_rec_free(&old);
    return h;
}

/* ENQUEUED with an expired lease -> ENQUEUED with a back-off lease, now +
 * slack * 2^min(claims, 5) (never before due + slack: the message it sends
 * may wait in SQS until due). */
static int reclaim(scanner *sc, const store_due_row *row, int64_t now)
{
    sched_rec old;
    sched_rec_init(&old);
    int64_t lease = max64(now + (sc->slack_ms << (row->claims < 0 ? 0 : row->claims > 5 ? 5 : row->claims)),
                          max64(row->due, now) + sc->slack_ms);
    int rc = store_reclaim(sc->s, row->id, row->due, row->lease, lease, &old), h;
    if (rc == STORE_OK && old.id) {
        sc->t.reclaimed++;
        metrics_count("delayer_claimed_total", "", "kind=\"reclaim\"", 1);
        log_ev(LOG_DEBUG, "re-claimed (lease expired)", "id", row->id, "due", log_i64(row->due),
               "old_lease", log_i64(row->lease), "lease", log_i64(lease), "claims", log_i64(row->claims + 1), NULL);
        h = send_claimed(sc, &old, lease, SCHED_ENQUEUED);
    } else if (rc == STORE_LOST || rc == STORE_NOTFOUND) {
        sc->t.lost++;
        metrics_count("delayer_claims_lost_total", "claims another writer won (harmless)", "", 1);
        log_ev(LOG_DEBUG, "re-claim lost (another writer won)", "id", row->id, "error", sc->s->err, NULL);
        h = H_LOST;
    } else {
        h = claim_failed(sc, row, sc->s->err_kind == STORE_EK_BADITEM ? lease : 0, "re-claim failed");
    }
    if (h == H_SENT || h == H_LOST) strike_clear(sc, row->id);
    sched_rec_free(&old);
    return h;
}

/* One row of the due index: claim it, re-claim it, or leave it. */
static int handle_row(scanner *sc, const store_due_row *row)
{
    int64_t now = time_now_ms();
    if (row->state == SCHED_NEW && row->due <= now + sc->s->conf.window_ms) return claim_new(sc, row, now);
    if (row->state == SCHED_ENQUEUED && row->lease > 0 && row->lease < now) return reclaim(sc, row, now);
    return H_SKIP;
}

/* Handles rows in order until one cannot be finished. *stop_due gets the due
 * time of that row. Returns the last H_* result (H_BLOCKED/H_ERR stop). */
static int handle_rows(scanner *sc, const store_due_rows *rows, int64_t *stop_due)
{
    for (size_t i = 0; i < rows->n; i++) {
        if (stage_should_stop()) {
            *stop_due = rows->v[i].due;
            return H_BLOCKED;
        }
        int h = handle_row(sc, &rows->v[i]);
        if (h == H_BLOCKED || h == H_ERR) {
            *stop_due = rows->v[i].due;
            if (h == H_BLOCKED) sc->blocked = 1;
            return h;
        }
    }
    return H_SKIP;
}

static int query(scanner *sc, int64_t minute, int shard, int64_t from, int64_t to, store_due_rows *rows)
{
    sc->t.queries++;
    metrics_count("delayer_scan_queries_total", "due-index queries", "", 1);
    if (store_due_query(sc->s, minute, shard, from, to, rows) == STORE_OK) return 0;
    sc->t.errors++;
    metrics_count("delayer_failed_total", "records a stage gave up on (reported failed)", "op=\"claim\"", 1);
    log_ev(LOG_WARN, "due index query failed", "shard", log_i64(shard), "minute", log_i64(minute),
           "error", sc->s->err, NULL);
    return -1;
}

/* ------------------------------------------------------------ lease pass */

/* Leases that ran out lately: due in [now - slack - LAG - 2 ticks, now -
 * slack], below what the main pass reads this tick (from its cursor - LAG).
 * A claim lost on its way to SQS is re-claimed here a tick after its lease
 * ran out, instead of when the recovery pass reaches its minute (up to
 * grace later). Normally empty: a schedule leaves the due index when it is
 * published, before due. A failed Query is only logged (the recovery pass
 * covers it). */
static void lease_pass(scanner *sc, shard_st *st, int64_t now)
{
    int64_t hi = min64(now - sc->slack_ms, st->cursor - LAG_MS - 1);
    int64_t lo = now - sc->slack_ms - LAG_MS - 2 * sc->tick_ms;
    for (int64_t m = floor_div(lo, MINUTE_MS); lo <= hi && m <= floor_div(hi, MINUTE_MS); m++) {
        store_due_rows rows = {0};
        int64_t stop_due;
        int stop = stage_should_stop() || sc->blocked || query(sc, m, st->shard, lo, hi, &rows) < 0 ||
                   handle_rows(sc, &rows, &stop_due) != H_SKIP;
        store_due_rows_free(&rows);
        if (stop) break;
    }
}

/* ------------------------------------------------------------ main pass */

static void main_pass(scanner *sc, shard_st *st, int64_t now)
{
    int64_t lo = st->cursor - LAG_MS, hi = now + sc->s->conf.window_ms;
    int64_t done = hi;   /* where the cursor goes if everything is handled */
    int stopped = 0;
    for (int64_t m = floor_div(lo, MINUTE_MS); m <= floor_div(hi, MINUTE_MS) && !stopped; m++) {
        store_due_rows rows = {0};
        int64_t stop_due;
        if (stage_should_stop() || sc->blocked || query(sc, m, st->shard, lo, hi, &rows) < 0) {
            stopped = 1;   /* minutes before m are done */
            done = max64(st->cursor, m * MINUTE_MS);
        } else if (handle_rows(sc, &rows, &stop_due) != H_SKIP) {
            stopped = 1;   /* that row (put back or not claimed) is read again next tick */
            done = stop_due;
        }
        store_due_rows_free(&rows);
    }
    st->cursor = done;
}

/* ------------------------------------------------------------ recovery */

static void pend_set(shard_st *st, int64_t m, int keep)
{
    size_t i = 0;
    while (i < st->npend && st->pend[i] < m) i++;
    int there = i < st->npend && st->pend[i] == m;
    if (keep && !there) {
        st->pend = xrealloc(st->pend, (st->npend + 1) * sizeof *st->pend);
        memmove(st->pend + i + 1, st->pend + i, (st->npend - i) * sizeof *st->pend);
        st->pend[i] = m;
        st->npend++;
    } else if (!keep && there) {
        memmove(st->pend + i, st->pend + i + 1, (st->npend - i - 1) * sizeof *st->pend);
        st->npend--;
    }
}

/* The next minute to read: the smallest pending one in [from, last], or the
 * first one after scan_to; -1 when none is left. */
static int64_t next_minute(const shard_st *st, int64_t from, int64_t last)
{
    int64_t m = max64(from, st->scan_to + 1);
    for (size_t i = 0; i < st->npend; i++)
        if (st->pend[i] >= from && st->pend[i] < m) return st->pend[i];
    return m <= last ? m : -1;
}

/* Moves the stored checkpoint to the first minute that may still hold work. */
static void ckpt_update(scanner *sc, shard_st *st)
{
    int64_t want = st->npend ? min64(st->pend[0], st->scan_to + 1) : st->scan_to + 1;
    if (want <= st->ckpt) return;
    int rc = store_ckpt_advance(sc->s, st->shard, want);
    if (rc == STORE_OK) {
        log_ev(LOG_DEBUG, "checkpoint advanced", "shard", log_i64(st->shard), "minute", log_i64(want), NULL);
        st->ckpt = want;
    } else if (rc == STORE_LOST) {
        st->ckpt = want;   /* already there (another scanner of this shard): fine */
    } else {
        log_ev(LOG_WARN, "checkpoint not written", "shard", log_i64(st->shard), "error", sc->s->err, NULL);
    }
}

/* Minutes [checkpoint, minute(now - grace)], each read whole. A minute is
 * complete once nothing can be written into it any more: every write puts
 * a schedule at the minute of a time >= its write time - grace, so minute M
 * is complete when (M + 1) * 60 s <= now - grace - LAG. Complete empty
 * minutes are never read again; the checkpoint follows them. */
static void recovery_pass(scanner *sc, shard_st *st, int64_t now)
{
    int64_t last = floor_div(now - sc->s->conf.grace_ms, MINUTE_MS);
    int64_t complete = floor_div(now - sc->s->conf.grace_ms - LAG_MS, MINUTE_MS) - 1;
    int ok = 1, n = 0;
    for (int64_t m = next_minute(st, st->ckpt, last); m >= 0 && ok; m = next_minute(st, m + 1, last)) {
        store_due_rows rows = {0};
        int64_t stop_due;
        /* Over budget (a long catch-up, a slow or throttling DynamoDB): the
         * rest next tick, so the main pass keeps claiming what comes due.
         * One minute per shard and tick at least: every shard progresses. */
        if (stage_should_stop() || sc->blocked || (n++ > 0 && time_mono_ms() > sc->recovery_until) ||
            query(sc, m, st->shard, INT64_MIN, INT64_MAX, &rows) < 0) {
            ok = 0;
        } else {
            pend_set(st, m, rows.n > 0);   /* minutes after `complete` are read anyway */
            if (m <= complete && m > st->scan_to) st->scan_to = m;
            if (handle_rows(sc, &rows, &stop_due) != H_SKIP) ok = 0;
        }
        store_due_rows_free(&rows);
    }
    ckpt_update(sc, st);
}

/* ------------------------------------------------------------ ticks */

static void log_tick(scanner *sc, int64_t started)
{
    tick_stats *t = &sc->t;
    int lvl = t->claimed || t->reclaimed || t->unclaimed || t->errors || t->set_aside ? LOG_INFO : LOG_DEBUG;
    log_ev(lvl, "tick", "claimed", log_i64((int64_t)t->claimed), "reclaimed", log_i64((int64_t)t->reclaimed),
           "lost", log_i64((int64_t)t->lost), "unclaimed", log_i64((int64_t)t->unclaimed),
           "errors", log_i64((int64_t)t->errors), "set_aside", log_i64((int64_t)t->set_aside),
           "skipped", log_i64((int64_t)t->skipped), "queries", log_i64((int64_t)t->queries),
           "ms", log_i64(time_mono_ms() - started), NULL);
}

/* Main passes first (schedules coming due now), then recovery (late ones).
 * A held record goes first; while it is refused nothing is claimed. */
static void tick(scanner *sc)
{
    int64_t started = time_mono_ms(), now = time_now_ms();
    memset(&sc->t, 0, sizeof sc->t);
    sc->blocked = sc->held.has && !held_retry(sc);
    for (size_t i = 0; i < sc->nsh && !sc->blocked; i++) {
        lease_pass(sc, &sc->sh[i], now);
        main_pass(sc, &sc->sh[i], now);
    }
    sc->recovery_until = sc->recovery_ms ? time_mono_ms() + sc->recovery_ms : INT64_MAX;
    for (size_t i = 0; i < sc->nsh && !sc->blocked; i++) recovery_pass(sc, &sc->sh[i], now);
    log_tick(sc, started);
}

/* Sleeps until the next tick, waking early on SIGTERM. */
static void nap(int64_t until_mono)
{
    while (!stage_should_stop()) {
        int64_t left = until_mono - time_mono_ms();
        if (left <= 0) return;
        if (left > 50) left = 50;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Where a shard without a checkpoint starts: before the deployment existed.
 * A schedule may be created due up to its writer's grace in the past (and
 * a fast-tracked one whose sender died stays at that minute), so start an
 * hour (or grace + 1 min) before init: a few empty Queries, once. */
static int64_t first_minute(const store *s, int64_t now)
{
    int64_t since = s->since_ms ? s->since_ms : now;
    return floor_div(since - max64(3600000, s->conf.grace_ms + MINUTE_MS), MINUTE_MS);
}

/* Shards s with s % n == i, each from its checkpoint (first_minute before
 * the first one is written). */
static int shards_init(scanner *sc, const scan_opts *so)
{
    int total = sc->s->conf.shards;
    int64_t now = time_now_ms();
    sc->sh = xcalloc((size_t)total, sizeof *sc->sh);
    for (int s = so->own_i; s < total; s += so->own_n) {
        shard_st *st = &sc->sh[sc->nsh++];
        st->shard = s;
        int rc = store_ckpt_get(sc->s, s, &st->ckpt);
        if (rc == STORE_NOTFOUND) st->ckpt = first_minute(sc->s, now);
        else if (rc != STORE_OK) {
            log_ev(LOG_ERROR, "cannot read the checkpoint", "shard", log_i64(s), "error", sc->s->err, NULL);
            return -1;
        }
        st->scan_to = st->ckpt - 1;
        st->cursor = max64(st->ckpt, floor_div(now - sc->s->conf.grace_ms, MINUTE_MS)) * MINUTE_MS;
    }
    if (!sc->nsh)
        log_ev(LOG_WARN, "no shard to scan", "shards", log_i64(total), "own", log_i64(so->own_n), NULL);
    return 0;
}

static void scanner_free(scanner *sc)
{
    if (sc->held.has) unclaim(sc, sc->held.id, sc->held.due, sc->held.lease, "stopping");
    held_drop(&sc->held);
    buf_free(&sc->held.line);
    for (size_t i = 0; i < sc->nsh; i++) free(sc->sh[i].pend);
    free(sc->sh);
    for (size_t i = 0; i < STRIKES_KEPT; i++) free(sc->strikes[i].id);
}

int main(int argc, char **argv)
{
    stage_opts o;
    store_conf c;
    scan_opts so;
    scanner sc = {0};
    int rc = stage_init(argc, argv, &spec, &o);
    if (rc != STAGE_RUN) return rc;
    if ((rc = read_opts(&o, &c, &so)) != STAGE_RUN) return rc;
    if (!(sc.s = stage_store_load(&c, &rc))) return STAGE_EXIT_SYSTEM;
    if (shards_init(&sc, &so) < 0 || (rc = stage_open(&o, NULL, &sc.out)) != 0) {
        scanner_free(&sc);
        store_close(sc.s);
        return STAGE_EXIT_SYSTEM;
    }
    log_ev(LOG_INFO, "scanning", "shards", log_i64((int64_t)sc.nsh), "of", log_i64(sc.s->conf.shards),
           "window_ms", log_i64(sc.s->conf.window_ms), "grace_ms", log_i64(sc.s->conf.grace_ms),
           "lease_slack_ms", log_i64(min64(sc.s->conf.grace_ms, CLAIM_SLACK_MS)), NULL);
    sc.recovery_ms = so.once ? 0 : max64(so.tick_ms, 1000);
    sc.slack_ms = min64(sc.s->conf.grace_ms, CLAIM_SLACK_MS);
    sc.tick_ms = so.tick_ms;
    stage_ready(&o);
    while (!stage_should_stop() && !sc.fatal) {
        int64_t next = time_mono_ms() + so.tick_ms;
        tick(&sc);
        if (so.once) break;
        nap(next);
    }
    rc = sc.fatal ? STAGE_EXIT_SYSTEM : STAGE_EXIT_OK;
    zpipe_out_close(sc.out);
    scanner_free(&sc);
    store_close(sc.s);
    log_ev(LOG_INFO, "stopped", NULL);
    return rc;
}
