/* store_stats.c: what the store counts and tells (store.h "counters",
 * "events"): counter deltas flushed as UpdateItem ADDs on meta stat#
 * items, reading them back (stats), rebuilding them from the by_state
 * index (--recount), and lifecycle events queued and sent to the events
 * topic with PublishBatch. */
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sns.h"
#include "timeutil.h"

/* ============================================================ counters */

struct store_counts {
    struct cnt { int state; char *topic; int64_t d; } *v;   /* topic NULL: the state's total */
    size_t n;
};

store_counts *store_counts_new(void)
{
    return xcalloc(1, sizeof(store_counts));
}

void store_counts_free(store_counts *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) free(c->v[i].topic);
    free(c->v);
    free(c);
}

static void cnt_add(store_counts *c, int state, const char *topic, int64_t d)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].state == state && (topic ? c->v[i].topic && !strcmp(c->v[i].topic, topic) : !c->v[i].topic)) {
            c->v[i].d += d;
            return;
        }
    c->v = xrealloc(c->v, (c->n + 1) * sizeof *c->v);
    c->v[c->n++] = (struct cnt){state, topic ? xstrdup(topic) : NULL, d};
}

void store_counts_add(store_counts *c, int state, const char *topic, int64_t delta)
{
    if (state < 0 || state >= SCHED_NSTATES || delta == 0) return;
    cnt_add(c, state, NULL, delta);
    if (topic) cnt_add(c, state, topic, delta);
}

void store_counts_move(store_counts *c, int from, int to, const char *topic)
{
    if (from == to) return;
    store_counts_add(c, from, topic, -1);
    store_counts_add(c, to, topic, 1);
}

int store_counts_pending(const store_counts *c)
{
    int n = 0;
    for (size_t i = 0; i < c->n; i++) n += c->v[i].d != 0;
    return n;
}

/* "stat#STATE", or "stat#STATE#<topic ARN>" when topic is not NULL: the
 * meta key of a counter. */
static void stat_key(buf_t *k, int state, const char *topic)
{
    buf_reset(k);
    buf_printf(k, "stat#%s", sched_state_name(state));
    if (topic) buf_printf(k, "#%s", topic);
}

/* The state total also records, in the string set `arns`, every topic that
 * has a per-topic counter for this state: stats --by-topic finds them there
 * without a Scan. */
static int flush_total(store *s, store_counts *c, int st)
{
    ddx x = {0};
    struct cnt *tot = NULL;
    buf_t set = BUF_INIT, k = BUF_INIT;
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i].state != st) continue;
        if (!c->v[i].topic) tot = &c->v[i];
        else if (c->v[i].d) {
            buf_adds(&set, set.len ? "," : "{\"SS\":[");
            json_escape(&set, c->v[i].topic, strlen(c->v[i].topic));
        }
    }
    if (!tot || (!tot->d && !set.len)) {
        buf_free(&set);
        return STORE_OK;
    }
    stat_key(&k, st, NULL);
    ddx_add_n(&x, "n", tot->d);
    if (set.len) {
        buf_adds(&set, "]}");
        buf_adds(&x.add, ", ");
        ddx_nm(&x, &x.add, "arns");
        buf_adds(&x.add, " ");
        ddx_vraw(&x, &x.add, set.p);
    }
    int rc = store_meta_update(s, k.p, &x);
    if (rc == STORE_OK) tot->d = 0;
    ddx_free(&x);
    buf_free(&set);
    buf_free(&k);
    return rc;
}

int store_counts_flush(store *s, store_counts *c)
{
    int rc = STORE_OK;
    for (int st = 0; st < SCHED_NSTATES; st++)
        if (flush_total(s, c, st) != STORE_OK) rc = STORE_ERR;
    for (size_t i = 0; i < c->n; i++) {
        struct cnt *e = &c->v[i];
        if (!e->topic || !e->d) continue;
        ddx x = {0};
        buf_t k = BUF_INIT;
        stat_key(&k, e->state, e->topic);
        ddx_add_n(&x, "n", e->d);
        if (store_meta_update(s, k.p, &x) == STORE_OK) e->d = 0;
        else rc = STORE_ERR;
        ddx_free(&x);
        buf_free(&k);
    }
    return rc;
}

/* ============================================================ stats */

/* The value token of attribute name with type key type ("SS", ...), or -1. */
static int attr_value(json_doc *d, int item, const char *name, const char *type)
{
    int v = json_get(d, item, name);
    return json_type(d, v) == JSON_OBJ ? json_get(d, v, type) : -1;
}

/* BatchGetItem of meta keys (any number: sent 100 at a time, each once),
 * retrying UnprocessedKeys; fn is called for every item found. */
static int meta_batch_get(store *s, char **keys, size_t n, store_batch_item_fn fn, void *ctx)
{
    buf_t pending = BUF_INIT;
    int rc = STORE_OK;
    for (size_t i = 0; i < n && rc == STORE_OK; i += DDB_BATCH_GET) {
        store_batch_keys(&pending, "k", (const char *const *)keys + i, n - i < DDB_BATCH_GET ? n - i : DDB_BATCH_GET);
        rc = store_batch_get(s, s->meta, "\"ConsistentRead\":true,", "", &pending, fn, ctx);
    }
    buf_free(&pending);
    return rc == STORE_OK ? STORE_OK : STORE_ERR;
}

void store_stats_free(store_stats *st)
{
    for (size_t i = 0; i < st->ntopic; i++) free(st->topic[i].arn);
    free(st->topic);
    memset(st, 0, sizeof *st);
}

static struct store_topic_stat *stats_topic(store_stats *st, const char *arn)
{
    for (size_t i = 0; i < st->ntopic; i++)
        if (!strcmp(st->topic[i].arn, arn)) return &st->topic[i];
    st->topic = xrealloc(st->topic, (st->ntopic + 1) * sizeof *st->topic);
    struct store_topic_stat *t = &st->topic[st->ntopic++];
    memset(t, 0, sizeof *t);
    t->arn = xstrdup(arn);
    return t;
}

/* "stat#STATE" or "stat#STATE#arn" item -> the counts. */
static void stats_item(void *ctx, json_doc *d, int item)
{
    store_stats *st = ctx;
    buf_t k = BUF_INIT;
    int64_t n = 0;
    if (ddb_get_s(d, item, "k", &k) < 0 || strncmp(k.p, "stat#", 5)) goto out;
    ddb_get_i64(d, item, "n", &n);
    const char *rest = k.p + 5, *hash = strchr(rest, '#');
    char stname[16];
    snprintf(stname, sizeof stname, "%.*s", hash ? (int)(hash - rest) : (int)strlen(rest), rest);
    int state = sched_state_parse(stname);
    if (state < 0) goto out;
    if (!hash) {
        st->n[state] = n;
        int set = attr_value(d, item, "arns", "SS");
        for (int e = json_first(d, set); e >= 0; e = json_after(d, set, e)) {
            buf_t arn = BUF_INIT;
            if (json_str(d, e, &arn) == 0) stats_topic(st, arn.p);
            buf_free(&arn);
        }
    } else {
        stats_topic(st, hash + 1)->n[state] = n;
    }
out:
    buf_free(&k);
}

int store_stats_read(store *s, int by_topic, store_stats *out)
{
    char *keys[SCHED_NSTATES];
    memset(out, 0, sizeof *out);
    for (int i = 0; i < SCHED_NSTATES; i++) {
        buf_t k = BUF_INIT;
        stat_key(&k, i, NULL);
        keys[i] = k.p;
    }
    int rc = meta_batch_get(s, keys, SCHED_NSTATES, stats_item, out);
    for (int i = 0; i < SCHED_NSTATES; i++) free(keys[i]);
    if (rc != STORE_OK || !by_topic || !out->ntopic) return rc;
    size_t nk = out->ntopic * SCHED_NSTATES, j = 0;
    char **tk = xcalloc(nk, sizeof *tk);
    for (size_t t = 0; t < out->ntopic; t++)
        for (int i = 0; i < SCHED_NSTATES; i++) {
            buf_t k = BUF_INIT;
            stat_key(&k, i, out->topic[t].arn);
            tk[j++] = k.p;
        }
    rc = meta_batch_get(s, tk, nk, stats_item, out);
    for (size_t i = 0; i < nk; i++) free(tk[i]);
    free(tk);
    return rc;
}

/* ============================================================ recount */

struct tally {
    store_stats *out;
    int state;
};

/* A page of one state's items: counts each, in total and by topic (a full
 * read of the state's partitions since init: only for --recount). */
static int tally_page(store *s, void *ctx, json_doc *d)
{
    struct tally *t = ctx;
    buf_t topic = BUF_INIT;
    int items = json_get(d, 0, "Items");
    for (int it = json_first(d, items); it >= 0; it = json_after(d, items, it)) {
        t->out->n[t->state]++;
        if (ddb_get_s(d, it, "topic", &topic) == 0) stats_topic(t->out, topic.p)->n[t->state]++;
    }
    buf_free(&topic);
    return STORE_OK;
}

/* PutItem of one counter item with an absolute value. */
static int counter_put(store *s, const char *k, int64_t n, const store_stats *arns, int state)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    store_req_begin(&w, &req, s->meta);
    jw_key(&w, "Item");
    jw_obj(&w);
    ddbw_s(&w, "k", k);
    ddbw_i64(&w, "n", n);
    int any = 0;
    for (size_t i = 0; arns && i < arns->ntopic; i++) any |= arns->topic[i].n[state] != 0;
    if (any) {
        jw_key(&w, "arns");
        jw_obj(&w);
        jw_key(&w, "SS");
        jw_arr(&w);
        for (size_t i = 0; i < arns->ntopic; i++)
            if (arns->topic[i].n[state]) jw_str(&w, arns->topic[i].arn);
        jw_arr_end(&w);
        jw_obj_end(&w);
    }
    jw_obj_end(&w);
    jw_obj_end(&w);
    int rc = store_ddb_call(s, "PutItem", &req, &resp, &e) < 0 ? STORE_ERR : STORE_OK;
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

int store_stats_recount(store *s, store_stats *out)
{
    store_stats old, now;
    store_list_q q = {0};
    store_lplan p;
    int rc;
    memset(&now, 0, sizeof now);
    q.limit = 1;
    if ((rc = store_stats_read(s, 1, &old)) != STORE_OK) return rc;
    rc = store_list_plan(s, &q, &p);
    for (int st = 0; st < SCHED_NSTATES && rc == STORE_OK; st++) {
        struct tally t = {&now, st};
        rc = store_by_state_each(s, &p, st, 0, tally_page, &t);
    }
    store_list_plan_free(&p);
    /* Topics that had counters but no items now must be written as 0. */
    for (size_t i = 0; i < old.ntopic; i++) stats_topic(&now, old.topic[i].arn);
    buf_t k = BUF_INIT;
    for (int st = 0; st < SCHED_NSTATES && rc == STORE_OK; st++) {
        stat_key(&k, st, NULL);
        rc = counter_put(s, k.p, now.n[st], &now, st);
        for (size_t i = 0; i < now.ntopic && rc == STORE_OK; i++) {
            stat_key(&k, st, now.topic[i].arn);
            rc = counter_put(s, k.p, now.topic[i].n[st], NULL, st);
        }
    }
    buf_free(&k);
    store_stats_free(&old);
    if (out && rc == STORE_OK) *out = now;
    else store_stats_free(&now);
    return rc;
}

/* ============================================================ events */

/* Events must never hold a state change up for long: their own client with
 * short timeouts and a single retry. */
static aws_client *events_client(store *s)
{
    if (!s->evsns) {
        char e[256];
        s->evsns = aws_client_new("sns", e, sizeof e);
        if (!s->evsns) {
            snprintf(s->ev_err, sizeof s->ev_err, "events: %s", e);
            return NULL;
        }
        aws_client_set_timeouts(s->evsns, 1000, 3000);
        aws_client_set_max_attempts(s->evsns, 2);
    }
    return s->evsns;
}

void store_event(store *s, const char *type, const sched_rec *r, int state, int64_t at, const char *error)
{
    if (!s->conf.events) return;
    buf_t b = BUF_INIT;
    json_w w;
    char t[32];
    jw_init(&w, &b);
    jw_obj(&w);
    jw_key(&w, "event");
    jw_str(&w, type);
    jw_key(&w, "id");
    jw_str(&w, r->id);
    jw_key(&w, "state");
    jw_str(&w, sched_state_name(state));
    time_fmt(r->due, t);
    jw_key(&w, "due");
    jw_str(&w, t);
    jw_key(&w, "due_ms");
    jw_i64(&w, r->due);
    jw_key(&w, "topic");
    jw_str(&w, r->topic ? r->topic : "");
    time_fmt(at, t);
    jw_key(&w, "at");
    jw_str(&w, t);
    jw_key(&w, "attempts");
    jw_i64(&w, r->attempts);
    jw_key(&w, "error");
    if (error) jw_str(&w, error);
    else jw_null(&w);
    jw_obj_end(&w);
    if (s->nev == s->evcap) {
        s->evcap = s->evcap ? 2 * s->evcap : 16;
        s->evq = xrealloc(s->evq, s->evcap * sizeof *s->evq);
    }
    s->evq[s->nev++] = (struct store_ev){xstrdup(type), b.p, xstrdup(r->topic ? r->topic : "")};
    if (s->nev >= SNS_BATCH_MAX) store_events_flush(s);
}

static void ev_free(struct store_ev *e)
{
    free(e->type);
    free(e->body);
    free(e->topic);
}

/* Publishes evq[from..from+n) in one PublishBatch; counts the outcome. */
static void events_batch(store *s, aws_client *c, size_t from, size_t n)
{
    sns_publish_entry ent[SNS_BATCH_MAX] = {{0}};
    aws_entry_result res[SNS_BATCH_MAX] = {{0}};
    aws_kv kv[SNS_BATCH_MAX][2];
    aws_err e;
    for (size_t i = 0; i < n; i++) {
        struct store_ev *ev = &s->evq[from + i];
        kv[i][0] = (aws_kv){"event_type", ev->type};
        kv[i][1] = (aws_kv){"topic", ev->topic};
        ent[i] = (sns_publish_entry){NULL, ev->body, kv[i], ev->topic[0] ? 2 : 1, NULL, NULL};
    }
    if (sns_publish_batch(c, s->events_arn, ent, n, res, &e) < 0) {
        s->ev_failed += n;
        snprintf(s->ev_err, sizeof s->ev_err, "events: sns PublishBatch: %s: %s", e.code, e.message);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (res[i].ok) {
            s->ev_sent++;
        } else {
            s->ev_failed++;
            snprintf(s->ev_err, sizeof s->ev_err, "events: sns PublishBatch: %s: %s", res[i].code, res[i].message);
        }
    }
}

int store_events_flush(store *s)
{
    uint64_t failed = s->ev_failed;
    aws_client *c = s->nev ? events_client(s) : NULL;
    if (s->nev && !s->events_arn) {
        s->ev_failed += s->nev;
        snprintf(s->ev_err, sizeof s->ev_err, "events: the events topic is unknown (run init)");
    } else if (s->nev && !c) {
        s->ev_failed += s->nev;
    } else {
        for (size_t i = 0; i < s->nev; i += SNS_BATCH_MAX)
            events_batch(s, c, i, s->nev - i < SNS_BATCH_MAX ? s->nev - i : SNS_BATCH_MAX);
    }
    for (size_t i = 0; i < s->nev; i++) ev_free(&s->evq[i]);
    s->nev = 0;
    return s->ev_failed > failed ? STORE_ERR : STORE_OK;
}
