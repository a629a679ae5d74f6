/* schedreq: requests on schedules shared by the CLI and delayer-api
 * (schedreq.h). The parsing and the create / cancel / retry / delete steps
 * were the CLI's; they live here so the API cannot drift from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedreq.h"
#include "timeutil.h"

const char *const schedreq_keys[] = {"id", "at", "in", "topic", "payload", "attrs"};
const int schedreq_nkeys = (int)(sizeof schedreq_keys / sizeof schedreq_keys[0]);

/* "at": a string (RFC 3339 / epoch) or a number (epoch s or ms); "in" a
 * duration string or a number of seconds. */
static int schedreq_due(json_doc *d, int root, int64_t now, int64_t *due, const char **field, char *e, size_t el)
{
    int at = json_get(d, root, "at"), in = json_get(d, root, "in");
    buf_t v = BUF_INIT;
    int rc = -1;
    *field = at >= 0 ? "at" : "in";
    if (at >= 0 && in >= 0) snprintf(e, el, "at: give at or in, not both");
    else if (at < 0 && in < 0) snprintf(e, el, "at: missing (give at or in)");
    else {
        int t = at >= 0 ? at : in, ty = json_type(d, t);
        char m[160];
        if (ty == JSON_NUM) {
            size_t n;
            const char *raw = json_raw(d, t, &n);
            buf_add(&v, raw, n);
        } else if (ty != JSON_STR || json_str(d, t, &v) < 0) {
            snprintf(e, el, "%s: expected a string or a number", *field);
            buf_free(&v);
            return -1;
        }
        if (at >= 0) rc = time_parse_at(buf_str(&v), due, m, sizeof m);
        else {
            int64_t dur;
            rc = time_parse_duration(buf_str(&v), &dur, m, sizeof m);
            *due = now + dur;
        }
        if (rc < 0) snprintf(e, el, "%s: %s", *field, m);
    }
    buf_free(&v);
    return rc;
}

/* A string member (required or not) into v: 1 found, 0 absent, -1 bad. */
static int schedreq_str(json_doc *d, int root, const char *key, int required, buf_t *v, char *e, size_t el)
{
    int t = json_get(d, root, key);
    if (t < 0) {
        if (required) snprintf(e, el, "%s: missing", key);
        return required ? -1 : 0;
    }
    if (json_type(d, t) != JSON_STR || json_str(d, t, v) < 0) {
        snprintf(e, el, "%s: expected a string%s", key, json_type(d, t) == JSON_STR ? " (bad escape or UTF-8)" : "");
        return -1;
    }
    if (memchr(buf_str(v), '\0', v->len) && strcmp(key, "payload")) {
        snprintf(e, el, "%s: contains a NUL character", key);
        return -1;
    }
    return 1;
}

static int schedreq_attrs(json_doc *d, int root, sched_rec *r, char *e, size_t el)
{
    int a = json_get(d, root, "attrs");
    buf_t k = BUF_INIT, v = BUF_INIT;
    int rc = 0;
    if (a < 0) return 0;
    if (json_type(d, a) != JSON_OBJ) {
        snprintf(e, el, "attrs: expected an object of strings");
        return -1;
    }
    for (int m = json_first(d, a); m >= 0 && rc == 0; m = json_after(d, a, m)) {
        if (json_str(d, m, &k) < 0 || json_type(d, m + 1) != JSON_STR || json_str(d, m + 1, &v) < 0 ||
            memchr(buf_str(&k), 0, k.len) || memchr(buf_str(&v), 0, v.len)) {
            snprintf(e, el, "attrs: values must be strings");
            rc = -1;
        } else {
            sched_attr_add(r, buf_str(&k), buf_str(&v));
        }
    }
    buf_free(&k);
    buf_free(&v);
    return rc;
}

int schedreq_parse(json_doc *d, int root, const sched_limits *lim, int64_t now, sched_rec *r, char *e, size_t el)
{
    buf_t v = BUF_INIT;
    int rc = -1, got, past = 0;
    const char *field;
    char pe[512] = "";
    if (json_type(d, root) != JSON_OBJ) {
        snprintf(e, el, "json: expected an object");
        goto out;
    }
    for (int k = json_first(d, root); k >= 0; k = json_after(d, root, k)) {
        int known = 0;
        for (int i = 0; i < schedreq_nkeys; i++) known |= json_streq(d, k, schedreq_keys[i]);
        if (!known) {
            json_str(d, k, &v);
            char q[80];
            sched_quote(q, sizeof q, buf_str(&v), 60);
            snprintf(e, el, "%s: unknown field", q);
            goto out;
        }
    }
    if ((got = schedreq_str(d, root, "id", 0, &v, e, el)) < 0) goto out;
    if (got && sched_check_id(buf_str(&v), e, el) < 0) goto out;
    if (got) r->id = xstrdup(buf_str(&v));
    if (schedreq_due(d, root, now, &r->due, &field, e, el) < 0) goto out;
    if (sched_check_due(r->due, now, lim, field, e, el) < 0) {
        /* More than the grace in the past with an explicit id: still valid
         * if the id exists with this very content (schedreq_create looks). */
        if (!r->id || r->due >= now - lim->grace_ms) goto out;
        past = 1;
        snprintf(pe, sizeof pe, "%s", e);
    }
    if (schedreq_str(d, root, "topic", 1, &v, e, el) < 0) goto out;
    r->topic = xstrdup(buf_str(&v));
    if (schedreq_str(d, root, "payload", 1, &v, e, el) < 0) goto out;
    sched_set_payload(r, buf_str(&v), v.len);
    if (schedreq_attrs(d, root, r, e, el) < 0 || sched_check_message(r, e, el) < 0) goto out;
    rc = past;
    if (past) snprintf(e, el, "%s", pe);
out:
    buf_free(&v);
    return rc;
}

/* Counter deltas: into the caller's batch, or written now (a failure is a
 * warning: the record is the truth; `delayer stats --recount` repairs). */
static void schedreq_flush(store *s, store_counts *c, buf_t *warn)
{
    if (store_counts_flush(s, c) != STORE_OK)
        buf_printf(warn, "counters not updated (%s); delayer stats --recount repairs them\n", s->err);
}

/* Fast track: the record is ENQUEUED; send it. If SQS fails, put it back
 * to NEW so the scanner takes it (and if even that fails, its lease runs out
 * and the scanner re-claims it): the schedule is durable either way. */
static void schedreq_fast_track(store *s, sched_rec *r, buf_t *warn)
{
    if (store_send(s, r, NULL) == STORE_OK) return;
    buf_printf(warn, "%s; kept for the scanner\n", s->err);
    if (store_unclaim(s, r->id, r->due, r->lease, NULL) == STORE_OK) r->state = SCHED_NEW;
    else buf_printf(warn, "%s; the scanner takes it over when its lease ends\n", s->err);
}

int schedreq_create(store *s, sched_rec *r, int64_t now, sched_rec *old, store_counts *counts, buf_t *warn)
{
    buf_t arn = BUF_INIT;
    int rc = store_topic_resolve(s, r->topic, &arn);
    if (rc != STORE_OK) goto out;
    free(r->topic);
    r->topic = xstrdup(arn.p);
    if (r->id && r->due < now - s->conf.grace_ms) {
        /* Due in the past (schedreq_parse let it through for its explicit
         * id): only an identical existing schedule is an answer. */
        sched_chash(r);
        rc = store_get(s, r->id, old);
        if (rc == STORE_OK && !strcmp(old->chash, r->chash)) rc = SCHEDREQ_SAME;
        else if (rc == STORE_OK || rc == STORE_NOTFOUND) {
            sched_limits lim = {s->conf.grace_ms, s->conf.horizon_ms};
            sched_check_due(r->due, now, &lim, "at", s->err, sizeof s->err);
            rc = SCHEDREQ_PAST;
        }
        goto out;
    }
    int fast = store_prepare(s, r, now);
    if (fast < 0) {
        rc = STORE_ERR;
        goto out;
    }
    rc = store_create(s, r, old);
    if (rc == STORE_LOST) {
        rc = strcmp(old->chash, r->chash) ? SCHEDREQ_CONFLICT : SCHEDREQ_SAME;
        goto out;
    }
    if (rc != STORE_OK) goto out;
    store_counts *c = counts ? counts : store_counts_new();
    if (old->state >= 0) store_counts_add(c, old->state, old->topic, -1); /* replaced an expired record */
    if (fast) schedreq_fast_track(s, r, warn);
    store_counts_add(c, r->state, r->topic, 1);
    if (!counts) {
        schedreq_flush(s, c, warn);
        store_counts_free(c);
    }
    store_event(s, "schedule.created", r, r->state, now, NULL);
out:
    buf_free(&arn);
    return rc;
}

/* A transition done on request: counters and event after the write. */
static void schedreq_moved(store *s, const sched_rec *old, int from, int to, const char *event, int64_t now,
                           buf_t *warn)
{
    store_counts *c = store_counts_new();
    store_counts_move(c, from, to, old->topic);
    schedreq_flush(s, c, warn);
    store_counts_free(c);
    if (event) store_event(s, event, old, to, now, NULL);
}

int schedreq_cancel(store *s, const char *id, int64_t now, sched_rec *old, buf_t *warn)
{
    int rc = store_cancel(s, id, old);
    if (rc == STORE_OK) schedreq_moved(s, old, old->state, SCHED_CANCELLED, "schedule.cancelled", now, warn);
    return rc;
}

int schedreq_retry(store *s, const char *id, int64_t now, sched_rec *old, buf_t *warn)
{
    int64_t lease = now + s->conf.grace_ms;
    int rc = store_retry(s, id, lease, old);
    if (rc != STORE_OK) return rc;
    int from = old->state;
    old->state = SCHED_ENQUEUED;
    old->lease = lease;
    schedreq_fast_track(s, old, warn);
    schedreq_moved(s, old, from, old->state, "schedule.retried", now, warn);
    return rc;
}

int schedreq_delete(store *s, const char *id, int64_t now, sched_rec *old, buf_t *warn)
{
    int rc = store_delete(s, id, old);
    if (rc != STORE_OK) return rc;
    schedreq_moved(s, old, old->state, -1, NULL, now, warn);
    store_event(s, "schedule.deleted", old, old->state, now, NULL);
    return rc;
}

void schedreq_stats_json(buf_t *b, const store_stats *st, int by_topic)
{
    json_w w;
    int64_t total = 0;
    jw_init(&w, b);
    jw_obj(&w);
    jw_key(&w, "states");
    jw_obj(&w);
    for (int i = 0; i < SCHED_NSTATES; i++) {
        jw_key(&w, sched_state_name(i));
        jw_i64(&w, st->n[i]);
        total += st->n[i];
    }
    jw_obj_end(&w);
    jw_key(&w, "total");
    jw_i64(&w, total);
    if (by_topic) {
        jw_key(&w, "topics");
        jw_arr(&w);
        for (size_t t = 0; t < st->ntopic; t++) {
            jw_obj(&w);
            jw_key(&w, "topic");
            jw_str(&w, st->topic[t].arn);
            jw_key(&w, "states");
            jw_obj(&w);
            for (int i = 0; i < SCHED_NSTATES; i++) {
                jw_key(&w, sched_state_name(i));
                jw_i64(&w, st->topic[t].n[i]);
            }
            jw_obj_end(&w);
            jw_obj_end(&w);
        }
        jw_arr_end(&w);
    }
    jw_obj_end(&w);
}
