/* store_read.c: the store's reads (store.h "reads", "due index",
 * "checkpoints", "list"): GetItem and BatchGetItem of records, the due
 * index Queries the scanner runs and its recovery checkpoints, and the
 * by_state listing (newest first, merged over states, with cursors) and
 * counting. The by_state paging is shared with store_stats.c's recount. */
#include "store_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

/* ============================================================ records */

int store_get(store *s, const char *id, sched_rec *out)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    aws_err e;
    int rc = STORE_ERR, found = 0;
    store_get_item_req(&req, s->table, "id", id);
    if (store_ddb_call(s, "GetItem", &req, &resp, &e) == 0) {
        rc = store_resp_rec(s, &resp, "Item", out, &found);
        if (rc == 0 && (!found || sched_expired(out, time_now_ms()))) {
            sched_rec_free(out);
            store_seterr(s, "id: not found");
            rc = STORE_NOTFOUND;
        }
    }
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

struct get_batch_ctx {
    const char *const *ids;
    size_t n;
    sched_rec *found;
    int64_t now;
};

/* An item of store_get_batch's reply: the record of every ids[i] it is. */
static void get_batch_item(void *ctx, json_doc *d, int item)
{
    struct get_batch_ctx *g = ctx;
    sched_rec r;
    char er[256];
    sched_rec_init(&r);
    if (sched_item_read(d, item, &r, er, sizeof er) == 0 && !sched_expired(&r, g->now))
        for (size_t i = 0; i < g->n; i++)
            if (!strcmp(g->ids[i], r.id)) {
                sched_rec_free(&g->found[i]);
                sched_rec_copy(&g->found[i], &r);
            }
    sched_rec_free(&r);
}

int store_get_batch(store *s, const char *const *ids, size_t n, sched_rec *found)
{
    buf_t pending = BUF_INIT, tail = BUF_INIT, post = BUF_INIT;
    json_w w;
    ddx x = {0};
    if (n > DDB_BATCH_GET) return store_seterr(s, "store_get_batch: at most %d ids", DDB_BATCH_GET);
    for (size_t i = 0; i < n; i++) sched_rec_free(&found[i]);
    store_batch_keys(&pending, "id", ids, n);
    /* After Keys: ConsistentRead and the projection, written as an object
     * whose members are then spliced in. */
    const char *cols[] = {"id", "state", "chash", "topic", "expires", "due"};
    for (size_t c = 0; c < 6; c++) {
        ddx_sep(&x.proj, ", ");
        ddx_nm(&x, &x.proj, cols[c]);
    }
    jw_init(&w, &tail);
    jw_obj(&w);
    jw_key(&w, "ConsistentRead");
    jw_bool(&w, 1);
    ddx_write(&w, &x);
    jw_obj_end(&w);
    buf_addc(&post, ',');
    buf_add(&post, tail.p + 1, tail.len - 2);
    struct get_batch_ctx g = {ids, n, found, time_now_ms()};
    int rc = store_batch_get(s, s->table, "", post.p, &pending, get_batch_item, &g);
    ddx_free(&x);
    buf_free(&pending);
    buf_free(&tail);
    buf_free(&post);
    return rc;
}

/* ============================================================ due index */

void store_due_rows_free(store_due_rows *r)
{
    for (size_t i = 0; i < r->n; i++) free(r->v[i].id);
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

static int64_t floor_minute(int64_t ms)
{
    return ms >= 0 ? ms / 60000 : -((-ms + 59999) / 60000);
}

/* "<13 digits>#..." -> due ms. */
static int64_t due_from_sk(const char *sk)
{
    int64_t v = 0;
    for (; *sk >= '0' && *sk <= '9'; sk++) v = v * 10 + (*sk - '0');
    return v;
}

static void due_rows_from(json_doc *d, store_due_rows *out)
{
    int items = json_get(d, 0, "Items");
    buf_t tmp = BUF_INIT;
    for (int it = json_first(d, items); it >= 0; it = json_after(d, items, it)) {
        store_due_row row = {0};
        if (ddb_get_s(d, it, "id", &tmp) < 0) continue;
        row.id = xstrdup(buf_str(&tmp));
        if (ddb_get_s(d, it, "due_sk", &tmp) == 0) row.due = due_from_sk(buf_str(&tmp));
        row.state = ddb_get_s(d, it, "state", &tmp) == 0 ? sched_state_parse(buf_str(&tmp)) : -1;
        if (ddb_has(d, it, "lease")) ddb_get_i64(d, it, "lease", &row.lease);
        if (ddb_has(d, it, "claims")) ddb_get_i64(d, it, "claims", &row.claims);
        out->v = xrealloc(out->v, (out->n + 1) * sizeof *out->v);
        out->v[out->n++] = row;
    }
    buf_free(&tmp);
}

/* Copies the reply's LastEvaluatedKey (raw JSON) into lek, or empties it. */
static void take_lek(json_doc *d, buf_t *lek)
{
    store_take_raw(d, json_get(d, 0, "LastEvaluatedKey"), lek);
}

/* A key condition "#<pk> = :v" with, when lo or hi is given, a range on the
 * sort key: "AND #<sk> BETWEEN :lo AND :hi", ">= :lo" or "<= :hi". */
static void key_cond(ddx *x, buf_t *kc, const char *pk_name, const char *pk, const char *sk_name, const char *lo,
                     const char *hi)
{
    ddx_term_s(x, kc, pk_name, " = ", pk);
    if (!lo && !hi) return;
    buf_adds(kc, " AND ");
    if (lo && hi) {
        ddx_term_s(x, kc, sk_name, " BETWEEN ", lo);
        buf_adds(kc, " AND ");
        ddx_vs(x, kc, hi);
    } else {
        ddx_term_s(x, kc, sk_name, lo ? " >= " : " <= ", lo ? lo : hi);
    }
}

/* Opens a Query request on an index of the schedule table with its key
 * condition and x's expressions; query_end adds the page cursor and
 * closes it (the caller may write other members in between). */
static void query_begin(store *s, json_w *w, buf_t *req, const char *index, const buf_t *kc, ddx *x)
{
    store_req_begin(w, req, s->table);
    jw_key(w, "IndexName");
    jw_str(w, index);
    jw_key(w, "KeyConditionExpression");
    jw_str(w, kc->p);
    ddx_write(w, x);
}

static void query_end(json_w *w, const buf_t *lek)
{
    if (lek->len) {
        jw_key(w, "ExclusiveStartKey");
        jw_raw(w, lek->p, lek->len);
    }
    jw_obj_end(w);
}

int store_due_page(store *s, int64_t minute, int shard, int64_t from_ms, int64_t to_ms, buf_t *lek,
                   store_due_rows *out)
{
    buf_t req = BUF_INIT, resp = BUF_INIT, pk = BUF_INIT, lo = BUF_INIT, hi = BUF_INIT, kc = BUF_INIT;
    json_w w;
    aws_err e;
    ddx x = {0};
    int rc = STORE_OK;
    buf_printf(&pk, "%" PRId64 "#%d", minute, shard);
    if (from_ms != INT64_MIN || to_ms != INT64_MAX) {
        /* due_sk = "<13-digit due>#<id>": "<from>" <= sk <= "<to>$" ('$' > '#'). */
        buf_printf(&lo, "%013" PRId64, from_ms < 0 ? 0 : from_ms);
        buf_printf(&hi, "%013" PRId64 "$", to_ms);
    }
    key_cond(&x, &kc, "due_pk", pk.p, "due_sk", lo.len ? lo.p : NULL, hi.len ? hi.p : NULL);
    query_begin(s, &w, &req, "due", &kc, &x);
    query_end(&w, lek);
    if (store_ddb_call(s, "Query", &req, &resp, &e) < 0) {
        rc = STORE_ERR;
    } else {
        json_doc d;
        if ((rc = store_parse_reply(s, "dynamodb Query", &resp, &d)) == STORE_OK) {
            due_rows_from(&d, out);
            take_lek(&d, lek);
            json_free(&d);
        }
    }
    ddx_free(&x);
    buf_free(&req);
    buf_free(&resp);
    buf_free(&pk);
    buf_free(&lo);
    buf_free(&hi);
    buf_free(&kc);
    return rc;
}

int store_due_query(store *s, int64_t minute, int shard, int64_t from_ms, int64_t to_ms, store_due_rows *out)
{
    buf_t lek = BUF_INIT;
    int rc;
    do {
        rc = store_due_page(s, minute, shard, from_ms, to_ms, &lek, out);
    } while (rc == STORE_OK && lek.len);
    buf_free(&lek);
    return rc;
}

int store_due_range(store *s, int shard, int64_t from_ms, int64_t to_ms, store_due_rows *out)
{
    int rc = STORE_OK;
    /* One partition per minute: Query each (never a Scan), oldest first. */
    for (int64_t m = floor_minute(from_ms); m <= floor_minute(to_ms) && rc == STORE_OK; m++)
        rc = store_due_query(s, m, shard, from_ms, to_ms, out);
    return rc;
}

/* ============================================================ checkpoints
 * The scanner's recovery checkpoints (meta ckpt#SHARD): beside the due
 * index whose minutes they track. */

int store_ckpt_get(store *s, int shard, int64_t *minute)
{
    char k[32];
    json_doc d;
    buf_t resp = BUF_INIT;
    int item;
    snprintf(k, sizeof k, "ckpt#%d", shard);
    *minute = -1;
    int rc = store_meta_get(s, k, &d, &resp, &item);
    if (rc == STORE_OK && ddb_get_i64(&d, item, "minute", minute) < 0) rc = STORE_NOTFOUND;
    json_free(&d);
    buf_free(&resp);
    return rc;
}

int store_ckpt_advance(store *s, int shard, int64_t minute)
{
    char k[32];
    ddx x = {0};
    snprintf(k, sizeof k, "ckpt#%d", shard);
    ddx_set_n(&x, "minute", minute);
    ddx_term_fn(&x, &x.cond, "attribute_not_exists", "minute");
    buf_adds(&x.cond, " OR ");
    ddx_term_n(&x, &x.cond, "minute", " < ", minute);
    int rc = store_meta_update(s, k, &x);
    if (rc == STORE_LOST) store_seterr(s, "checkpoint: already at or past minute %" PRId64, minute);
    ddx_free(&x);
    return rc;
}

/* ============================================================ by_state: list, count */

/* "<RFC 3339 ms>#<id>" cursor <-> base64url text (opaque, shell-safe). */
static const char b64u[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void cursor_encode(const char *sk, buf_t *out)
{
    const unsigned char *p = (const unsigned char *)sk;
    size_t n = strlen(sk);
    buf_reset(out);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        buf_addc(out, b64u[v >> 18 & 63]);
        buf_addc(out, b64u[v >> 12 & 63]);
        if (i + 1 < n) buf_addc(out, b64u[v >> 6 & 63]);
        if (i + 2 < n) buf_addc(out, b64u[v & 63]);
    }
}

/* Decodes and checks a cursor: the sk and its time. -1 when malformed. */
static int cursor_decode(const char *c, buf_t *sk, int64_t *t)
{
    uint32_t v = 0;
    int bits = 0;
    buf_reset(sk);
    for (; *c; c++) {
        const char *q = strchr(b64u, *c);
        if (!q) return -1;
        v = v << 6 | (uint32_t)(q - b64u);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf_addc(sk, (char)(v >> bits & 0xff));
        }
    }
    char ts[32], e[64];
    if (sk->len < 26 || sk->p[24] != '#' || memchr(sk->p, '\0', sk->len)) return -1;
    snprintf(ts, sizeof ts, "%.24s", sk->p);
    return time_parse_at(ts, t, e, sizeof e);
}

int store_cursor_check(const char *cursor, char *err, size_t errlen)
{
    buf_t sk = BUF_INIT;
    int64_t t;
    int rc = cursor_decode(cursor, &sk, &t);
    buf_free(&sk);
    if (rc < 0) snprintf(err, errlen, "cursor: not a cursor printed by delayer list");
    return rc;
}

typedef struct {
    sched_rec r;
    char *sk;
} litem;

/* One state's by_state partitions, read month by month, newest first. */
typedef struct {
    int state;
    int64_t month;      /* start (ms) of the month being read */
    int64_t floor;      /* oldest month to read */
    buf_t lek;
    int month_done;
    int done;
    litem *v;
    size_t n, i;
} lstream;

static void lstream_clear_items(lstream *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        sched_rec_free(&ls->v[i].r);
        free(ls->v[i].sk);
    }
    ls->n = ls->i = 0;
}

/* Key condition, filter and names/values for one Query of (state, month). */
static void by_state_query(store *s, const store_lplan *p, int state, int64_t month, ddx *x, buf_t *kc)
{
    buf_t pk = BUF_INIT;
    sched_st_pk(&pk, state, month);
    key_cond(x, kc, "st_pk", pk.p, "st_sk", p->lo.len ? p->lo.p : NULL, p->hi.len ? p->hi.p : NULL);
    /* Filters: expired items are invisible; then the user's filters. */
    buf_adds(&x->filter, "(");
    ddx_term_fn(x, &x->filter, "attribute_not_exists", "expires");
    buf_adds(&x->filter, " OR ");
    ddx_term_n(x, &x->filter, "expires", " > ", time_now_ms() / 1000);
    buf_adds(&x->filter, ")");
    if (p->q->topic) {
        buf_adds(&x->filter, " AND ");
        ddx_term_s(x, &x->filter, "topic", " = ", p->q->topic);
    }
    if (p->q->error_prefix) {
        buf_adds(&x->filter, " AND begins_with(");
        ddx_nm(x, &x->filter, "last_error");
        buf_adds(&x->filter, ", ");
        ddx_vs(x, &x->filter, p->q->error_prefix);
        buf_adds(&x->filter, ")");
    }
    buf_free(&pk);
}

/* One Query page on the by_state index. select_count: Select=COUNT. */
static int by_state_page(store *s, const store_lplan *p, int state, int64_t month, buf_t *lek, long limit,
                         int select_count, buf_t *resp)
{
    ddx x = {0};
    buf_t kc = BUF_INIT, req = BUF_INIT;
    json_w w;
    aws_err e;
    by_state_query(s, p, state, month, &x, &kc);
    query_begin(s, &w, &req, "by_state", &kc, &x);
    jw_key(&w, "ScanIndexForward");
    jw_bool(&w, 0);
    if (select_count) {
        jw_key(&w, "Select");
        jw_str(&w, "COUNT");
    }
    if (limit > 0) {
        jw_key(&w, "Limit");
        jw_i64(&w, limit);
    }
    query_end(&w, lek);
    int rc = store_ddb_call(s, "Query", &req, resp, &e) < 0 ? STORE_ERR : STORE_OK;
    ddx_free(&x);
    buf_free(&kc);
    buf_free(&req);
    return rc;
}

/* Every page of every month of one state's by_state partitions, newest
 * month first, within p's range; fn gets each parsed page (a non-zero
 * return stops). select_count: pages carry Count, not Items. */
int store_by_state_each(store *s, const store_lplan *p, int state, int select_count, store_page_fn fn, void *ctx)
{
    buf_t lek = BUF_INIT, resp = BUF_INIT;
    int rc = STORE_OK;
    for (int64_t m = p->top; m >= p->floor && rc == STORE_OK; m = sched_prev_month(m)) {
        do {
            json_doc d;
            if ((rc = by_state_page(s, p, state, m, &lek, 0, select_count, &resp)) != STORE_OK) break;
            if ((rc = store_parse_reply(s, "dynamodb Query", &resp, &d)) != STORE_OK) break;
            rc = fn(s, ctx, &d);
            take_lek(&d, &lek);
            json_free(&d);
        } while (rc == STORE_OK && lek.len);
    }
    buf_free(&lek);
    buf_free(&resp);
    return rc;
}

/* Refills ls->v with the next non-empty page (moving to older months as
 * each is exhausted). Sets ls->done when nothing is left. */
static int lstream_fill(store *s, const store_lplan *p, lstream *ls, long want)
{
    buf_t resp = BUF_INIT, sk = BUF_INIT;
    int rc = STORE_OK;
    lstream_clear_items(ls);
    while (!ls->n && !ls->done) {
        if (ls->month_done) {
            ls->month = sched_prev_month(ls->month);
            ls->month_done = 0;
            buf_reset(&ls->lek);
        }
        if (ls->month < ls->floor) {
            ls->done = 1;
            break;
        }
        long lim = want < 1 ? 1 : want > 1000 ? 1000 : want;
        if ((rc = by_state_page(s, p, ls->state, ls->month, &ls->lek, lim, 0, &resp)) != STORE_OK) break;
        json_doc d;
        if ((rc = store_parse_reply(s, "dynamodb Query", &resp, &d)) != STORE_OK) break;
        take_lek(&d, &ls->lek);
        if (!ls->lek.len) ls->month_done = 1;
        int items = json_get(&d, 0, "Items");
        ls->v = xrealloc(ls->v, ((size_t)json_size(&d, items) + 1) * sizeof *ls->v);
        for (int it = json_first(&d, items); it >= 0; it = json_after(&d, items, it)) {
            litem *li = &ls->v[ls->n];
            char er[256];
            sched_rec_init(&li->r);
            if (ddb_get_s(&d, it, "st_sk", &sk) < 0 || sched_item_read(&d, it, &li->r, er, sizeof er) < 0) {
                sched_rec_free(&li->r);
                continue;
            }
            if (p->cursor_sk.len && strcmp(sk.p, p->cursor_sk.p) >= 0) {
                sched_rec_free(&li->r);
                continue;
            }
            li->sk = xstrdup(sk.p);
            ls->n++;
        }
        json_free(&d);
    }
    buf_free(&resp);
    buf_free(&sk);
    return rc;
}

/* Bounds for a listing: st_sk range from from/to/cursor, months to read. */
int store_list_plan(store *s, const store_list_q *q, store_lplan *p)
{
    char t[32];
    int64_t now = time_now_ms(), top = now + 86400000, cur_t;
    memset(p, 0, sizeof *p);
    p->q = q;
    if (q->from_ms > 0) {
        time_fmt(q->from_ms, t);
        buf_adds(&p->lo, t);
    }
    if (q->to_ms > 0 && q->to_ms < INT64_MAX) {
        time_fmt(q->to_ms, t);
        buf_printf(&p->hi, "%s$", t); /* '$' sorts after the '#' that follows the time */
        if (q->to_ms < top) top = q->to_ms;
    }
    if (q->cursor && *q->cursor) {
        if (cursor_decode(q->cursor, &p->cursor_sk, &cur_t) < 0) return store_seterr(s, "cursor: not a cursor printed by delayer list");
        if (!p->hi.len || strcmp(p->cursor_sk.p, p->hi.p) < 0) {
            buf_reset(&p->hi);
            buf_add(&p->hi, p->cursor_sk.p, p->cursor_sk.len);
        }
        if (cur_t < top) top = cur_t;
    }
    int64_t floor = s->since_ms > 0 ? s->since_ms : now - 2 * DEF_HORIZON_MS;
    if (q->from_ms > floor) floor = q->from_ms;
    p->top = sched_month_start(top);
    p->floor = sched_month_start(floor);
    return STORE_OK;
}

void store_list_plan_free(store_lplan *p)
{
    buf_free(&p->lo);
    buf_free(&p->hi);
    buf_free(&p->cursor_sk);
}

static int list_states(const store_list_q *q, int *st)
{
    if (q->nstates <= 0) {
        for (int i = 0; i < SCHED_NSTATES; i++) st[i] = i;
        return SCHED_NSTATES;
    }
    for (int i = 0; i < q->nstates; i++) st[i] = q->states[i];
    return q->nstates;
}

/* The stream whose head is newest (largest st_sk), filling as needed; -1
 * when all are exhausted. */
static int list_pick(store *s, const store_lplan *p, lstream *ls, int n, long want, int *rc)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (ls[i].i >= ls[i].n && !ls[i].done && (*rc = lstream_fill(s, p, &ls[i], want)) != STORE_OK) return -1;
        if (ls[i].i >= ls[i].n) continue;
        if (best < 0 || strcmp(ls[i].v[ls[i].i].sk, ls[best].v[ls[best].i].sk) > 0) best = i;
    }
    return best;
}

int store_list(store *s, const store_list_q *q, int (*emit)(void *ctx, const sched_rec *r), void *ctx,
               buf_t *next_cursor)
{
    store_lplan p;
    lstream ls[SCHED_NSTATES];
    int st[SCHED_NSTATES], rc = STORE_OK;
    buf_reset(next_cursor);
    if (store_list_plan(s, q, &p) != STORE_OK) {
        store_list_plan_free(&p);
        return STORE_ERR;
    }
    int n = list_states(q, st);
    memset(ls, 0, sizeof ls);
    for (int i = 0; i < n; i++) {
        ls[i].state = st[i];
        ls[i].month = p.top;
        ls[i].floor = p.floor;
    }
    long emitted = 0;
    buf_t last = BUF_INIT;
    for (;;) {
        int b = list_pick(s, &p, ls, n, q->limit - emitted + 1, &rc);
        if (b < 0) break;
        if (emitted >= q->limit) {
            /* More exist: the cursor is the last record printed. */
            if (last.len) cursor_encode(last.p, next_cursor);
            break;
        }
        litem *li = &ls[b].v[ls[b].i++];
        emitted++;
        buf_reset(&last);
        buf_adds(&last, li->sk);
        if (emit(ctx, &li->r)) break;
    }
    for (int i = 0; i < n; i++) {
        lstream_clear_items(&ls[i]);
        free(ls[i].v);
        buf_free(&ls[i].lek);
    }
    buf_free(&last);
    store_list_plan_free(&p);
    return rc;
}

/* A Select=COUNT page: adds its Count to *(int64_t *)ctx. */
static int count_page(store *s, void *ctx, json_doc *d)
{
    int64_t c = 0;
    if (json_i64(d, json_get(d, 0, "Count"), &c) < 0) return store_seterr(s, "dynamodb Query: bad reply: %s", d->err);
    *(int64_t *)ctx += c;
    return STORE_OK;
}

int store_list_count(store *s, const store_list_q *q, int64_t *count)
{
    store_lplan p;
    int st[SCHED_NSTATES], rc = STORE_OK;
    store_list_q q2 = *q;
    q2.cursor = NULL;
    *count = 0;
    if (store_list_plan(s, &q2, &p) != STORE_OK) rc = STORE_ERR;
    int n = list_states(q, st);
    for (int i = 0; i < n && rc == STORE_OK; i++) rc = store_by_state_each(s, &p, st[i], 1, count_page, count);
    store_list_plan_free(&p);
    return rc;
}
