/* store_write.c: the store's writes to the schedule table (store.h
 * "creation" and "transitions"): store_prepare/create/put_batch, sending
 * records to the delay queue, and every conditional state transition as
 * one UpdateItem, plus store_delete. */
#include "store_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sqs.h"
#include "timeutil.h"

/* ============================================================ transitions */

/* UpdateItem on the schedule table with x's expressions; on success out
 * gets the item as it was before (ALL_OLD). On a conditional check
 * failure, out gets the current item: STORE_LOST, or STORE_NOTFOUND when
 * there is none or its TTL has passed. */
static int update_item_x(store *s, const char *id, ddx *x, sched_rec *out, int lenient);

static int update_item(store *s, const char *id, ddx *x, sched_rec *out)
{
    return update_item_x(s, id, x, out, 0);
}

/* lenient (store_set_aside): an old image that is not a readable schedule
 * is no error: on success out gets only the id (state -1); on a failed
 * condition STORE_LOST. */
static int update_item_x(store *s, const char *id, ddx *x, sched_rec *out, int lenient)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    sched_rec tmp;
    sched_rec_init(&tmp);
    if (!out) out = &tmp;
    store_req_begin(&w, &req, s->table);
    store_key_s(&w, "id", id);
    ddx_write(&w, x);
    store_return_old(&w, 1);
    jw_obj_end(&w);
    int rc, found;
    if (store_ddb_call(s, "UpdateItem", &req, &resp, &e) == 0) {
        rc = store_resp_rec(s, &resp, "Attributes", out, &found);
        if (rc == 0 && !found) sched_rec_free(out);
        if (rc != 0 && lenient) {
            sched_rec_free(out);
            out->id = xstrdup(id);
            rc = STORE_OK;
        }
    } else if (aws_err_is(&e, "ConditionalCheckFailedException")) {
        rc = store_resp_rec(s, &resp, "Item", out, &found);
        if (rc != 0) s->err_kind = STORE_EK_OTHER;   /* BADITEM means "written": this was not */
        if (rc != 0 && lenient) {
            sched_rec_free(out);
            rc = STORE_LOST;
            store_seterr(s, "state: the schedule has changed");
        } else if (rc == 0) {
            if (!found || sched_expired(out, time_now_ms())) {
                sched_rec_free(out);
                rc = STORE_NOTFOUND;
                store_seterr(s, "id: not found");
            } else {
                rc = STORE_LOST;
                store_seterr(s, "state: the schedule is %s", sched_state_name(out->state));
            }
        }
    } else {
        rc = STORE_ERR;
    }
    sched_rec_free(&tmp);
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

static int64_t expires_for(const store *s, int64_t now)
{
    return now / 1000 + s->conf.retention_s;
}

/* The attributes every transition writes: state, updated, by_state keys,
 * history; entering a final state also sets the TTL and leaves the due
 * index; entering a waiting one clears the TTL. */
static void tr_begin_h(store *s, ddx *x, const char *id, int to, int64_t now, int with_hist);

static void tr_begin(store *s, ddx *x, const char *id, int to, int64_t now)
{
    tr_begin_h(s, x, id, to, now, 1);
}

/* tr_begin, with or without the hist append (store_set_aside). */
static void tr_begin_h(store *s, ddx *x, const char *id, int to, int64_t now, int with_hist)
{
    buf_t k = BUF_INIT, h = BUF_INIT;
    ddx_set_s(x, "state", sched_state_name(to));
    ddx_set_n(x, "updated", now);
    sched_st_pk(&k, to, now);
    ddx_set_s(x, "st_pk", buf_str(&k));
    sched_st_sk(&k, now, id);
    ddx_set_s(x, "st_sk", buf_str(&k));
    buf_printf(&h, "{\"L\":[{\"M\":{\"s\":{\"S\":\"%s\"},\"t\":{\"N\":\"%" PRId64 "\"}}}]}",
               sched_state_name(to), now);
    if (!with_hist) goto final;
    ddx_sep(&x->set, ", ");
    ddx_nm(x, &x->set, "hist");
    buf_adds(&x->set, " = list_append(if_not_exists(");
    ddx_nm(x, &x->set, "hist");
    buf_adds(&x->set, ", ");
    ddx_vraw(x, &x->set, "{\"L\":[]}");
    buf_adds(&x->set, "), ");
    ddx_vraw(x, &x->set, h.p);
    buf_addc(&x->set, ')');
final:
    if (sched_state_final(to)) {
        ddx_set_n(x, "expires", expires_for(s, now));
        ddx_rem(x, "due_pk");
        ddx_rem(x, "due_sk");
        ddx_rem(x, "lease");
    } else {
        ddx_rem(x, "expires");
    }
    buf_free(&k);
    buf_free(&h);
}

/* (Re)writes the due index keys at the minute of index_ms. */
static void tr_index(store *s, ddx *x, const char *id, int64_t due, int64_t index_ms)
{
    buf_t k = BUF_INIT;
    sched_due_pk(&k, index_ms, sched_shard(id, s->conf.shards));
    ddx_set_s(x, "due_pk", buf_str(&k));
    sched_due_sk(&k, due, id);
    ddx_set_s(x, "due_sk", buf_str(&k));
    buf_free(&k);
}

/* Runs a transition begun with tr_begin: the UpdateItem, then frees x. */
static int tr_end(store *s, const char *id, ddx *x, sched_rec *out)
{
    int rc = update_item(s, id, x, out);
    ddx_free(x);
    return rc;
}

int store_claim(store *s, const char *id, int64_t lease, sched_rec *out)
{
    ddx x = {0};
    tr_begin(s, &x, id, SCHED_ENQUEUED, time_now_ms());
    ddx_set_n(&x, "lease", lease);
    ddx_set_inc(&x, "claims", 1);
    ddx_cond_eq_s(&x, "state", "NEW");
    return tr_end(s, id, &x, out);
}

int64_t store_reclaim_lease(const store *s, int64_t now, int64_t claims)
{
    int sh = claims < 0 ? 0 : claims > 5 ? 5 : (int)claims;
    return now + s->conf.grace_ms * (1LL << sh);
}

int store_reclaim(store *s, const char *id, int64_t due, int64_t seen_lease, int64_t new_lease, sched_rec *out)
{
    ddx x = {0};
    int64_t now = time_now_ms();
    tr_begin(s, &x, id, SCHED_ENQUEUED, now);
    ddx_set_n(&x, "lease", new_lease);
    ddx_set_inc(&x, "claims", 1);
    tr_index(s, &x, id, due, sched_index_time(due, new_lease));
    ddx_rem(&x, "pub_msg");   /* a new copy: older ones cannot fail it (store_fail) */
    ddx_cond_eq_s(&x, "state", "ENQUEUED");
    ddx_cond_n(&x, "lease", " = ", seen_lease);
    ddx_cond_n(&x, "lease", " < ", now);
    return tr_end(s, id, &x, out);
}

int store_unclaim(store *s, const char *id, int64_t due, int64_t lease, sched_rec *out)
{
    ddx x = {0};
    int64_t now = time_now_ms();
    tr_begin(s, &x, id, SCHED_NEW, now);
    ddx_rem(&x, "lease");
    tr_index(s, &x, id, due, sched_index_time(due, now));
    ddx_cond_eq_s(&x, "state", "ENQUEUED");
    ddx_cond_n(&x, "lease", " = ", lease);
    return tr_end(s, id, &x, out);
}

int store_commit(store *s, const sched_wire *w, const char *msg_id, sched_rec *out)
{
    ddx x = {0};
    const char *id = w->r.id;
    tr_begin(s, &x, id, SCHED_PUBLISHED, time_now_ms());
    ddx_set_s(&x, "pub_msg", msg_id);
    ddx_set_inc(&x, "attempts", 1);
    /* chash: a message left over from a deleted and re-created record with
     * other content must not publish the new one. */
    ddx_cond_eq_s(&x, "chash", w->r.chash);
    buf_t *c = ddx_and(&x);
    buf_adds(c, "(");
    ddx_term_s(&x, c, "state", " = ", "ENQUEUED");
    buf_adds(c, " OR (");
    ddx_term_s(&x, c, "state", " = ", "PUBLISHED");
    buf_adds(c, " AND ");
    ddx_term_s(&x, c, "pub_msg", " = ", msg_id);
    buf_adds(c, "))");
    return tr_end(s, id, &x, out);
}

int store_unpublish(store *s, const sched_wire *w, const char *msg_id, const char *error, int64_t lease,
                    sched_rec *out)
{
    ddx x = {0};
    const char *id = w->r.id;
    tr_begin(s, &x, id, SCHED_ENQUEUED, time_now_ms());
    ddx_set_s(&x, "last_error", error ? error : "unknown error");
    ddx_set_n(&x, "lease", lease);
    tr_index(s, &x, id, w->r.due, sched_index_time(w->r.due, lease));
    ddx_cond_eq_s(&x, "state", "PUBLISHED");
    ddx_cond_eq_s(&x, "pub_msg", msg_id);
    return tr_end(s, id, &x, out);
}

int store_fail(store *s, const sched_wire *w, const char *error, sched_rec *out)
{
    ddx x = {0};
    tr_begin(s, &x, w->r.id, SCHED_FAILED, time_now_ms());
    ddx_set_s(&x, "last_error", error ? error : "unknown error");
    ddx_cond_eq_s(&x, "state", "ENQUEUED");
    ddx_cond_eq_s(&x, "chash", w->r.chash);
    /* Only the current copy may end the schedule: the one whose claim is
     * the record's (lease: no re-claim since it was sent), or the delivery
     * that committed last (pub_msg: an unpublish moved the lease on). A
     * copy left over from before a re-claim matches neither (re-claim and
     * retry remove pub_msg), so it cannot fail the live copy's schedule. */
    buf_t *c = ddx_and(&x);
    buf_adds(c, "(");
    ddx_term_n(&x, c, "lease", " = ", w->r.lease);
    if (w->mid && w->mid[0]) {
        buf_adds(c, " OR ");
        ddx_term_s(&x, c, "pub_msg", " = ", w->mid);
    }
    buf_adds(c, ")");
    return tr_end(s, w->r.id, &x, out);
}

static const int waiting_states[] = {SCHED_NEW, SCHED_ENQUEUED};

int store_invalid(store *s, const char *id, const char *error, sched_rec *out)
{
    ddx x = {0};
    tr_begin(s, &x, id, SCHED_INVALID, time_now_ms());
    ddx_set_s(&x, "last_error", error ? error : "invalid");
    ddx_cond_state_in(&x, waiting_states, 2);
    return tr_end(s, id, &x, out);
}

int store_set_aside(store *s, const char *id, int from, int64_t lease, const char *reason, sched_rec *out)
{
    int rc = STORE_ERR;
    sched_rec tmp;
    sched_rec_init(&tmp);
    if (!out) out = &tmp;
    for (int with_hist = 1; with_hist >= 0; with_hist--) {
        ddx x = {0};
        tr_begin_h(s, &x, id, SCHED_INVALID, time_now_ms(), with_hist);
        ddx_set_s(&x, "last_error", reason ? reason : "invalid");
        ddx_cond_eq_s(&x, "state", sched_state_name(from));
        if (lease > 0) ddx_cond_n(&x, "lease", " = ", lease);
        rc = update_item_x(s, id, &x, out, 1);
        ddx_free(&x);
        if (rc != STORE_ERR || s->err_kind != STORE_EK_VALIDATION) break;
    }
    sched_rec_free(&tmp);
    return rc;
}

int store_cancel(store *s, const char *id, sched_rec *out)
{
    ddx x = {0};
    tr_begin(s, &x, id, SCHED_CANCELLED, time_now_ms());
    ddx_cond_state_in(&x, waiting_states, 2);
    return tr_end(s, id, &x, out);
}

int store_retry(store *s, const char *id, int64_t lease, sched_rec *out)
{
    ddx x = {0};
    int64_t now = time_now_ms();
    sched_rec cur;
    sched_rec_init(&cur);
    /* The due keys need the record's due: read it (a FAILED record's due
     * never changes, so a stale read cannot write wrong keys: the condition
     * below still guards the state). */
    int rc = store_get(s, id, &cur);
    if (rc != STORE_OK) {
        if (out && rc == STORE_NOTFOUND) sched_rec_free(out);
        sched_rec_free(&cur);
        return rc;
    }
    tr_begin(s, &x, id, SCHED_ENQUEUED, now);
    ddx_set_n(&x, "lease", lease);
    ddx_set_n(&x, "claims", 0);
    ddx_rem(&x, "pub_msg");   /* the failed delivery's copies cannot fail the retry (store_fail) */
    tr_index(s, &x, id, cur.due, sched_index_time(cur.due, lease));
    ddx_cond_eq_s(&x, "state", "FAILED");
    ddx_cond_n(&x, "expires", " > ", now / 1000);   /* the FAILED record's TTL has not passed */
    rc = tr_end(s, id, &x, out);
    sched_rec_free(&cur);
    return rc;
}

int store_delete(store *s, const char *id, sched_rec *out)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    ddx x = {0};
    store_req_begin(&w, &req, s->table);
    store_key_s(&w, "id", id);
    ddx_term_fn(&x, &x.cond, "attribute_exists", "id");
    ddx_write(&w, &x);
    store_return_old(&w, 0);
    jw_obj_end(&w);
    int rc, found;
    if (store_ddb_call(s, "DeleteItem", &req, &resp, &e) == 0) {
        rc = store_resp_rec(s, &resp, "Attributes", out, &found);
    } else if (aws_err_is(&e, "ConditionalCheckFailedException")) {
        rc = STORE_NOTFOUND;
        store_seterr(s, "id: not found");
    } else {
        rc = STORE_ERR;
    }
    ddx_free(&x);
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

/* ============================================================ creation and sending */

int store_prepare(store *s, sched_rec *r, int64_t now)
{
    if (!r->id) {
        char u[SCHED_ULID_LEN + 1];
        if (sched_ulid(u, now) < 0) return store_seterr(s, "id: no randomness available to generate one");
        r->id = xstrdup(u);
    }
    sched_chash(r);
    r->created = r->updated = now;
    r->attempts = 0;
    r->claims = 0;
    r->expires = 0;
    int fast = r->due - now <= s->conf.window_ms;
    r->state = fast ? SCHED_ENQUEUED : SCHED_NEW;
    r->lease = fast ? sched_index_time(r->due, now) + s->conf.grace_ms : 0;
    free(r->hist);
    r->hist = NULL;
    r->nhist = 0;
    sched_hist_add(r, r->state, now);
    r->full = 1;
    return fast;
}

int store_create(store *s, const sched_rec *r, sched_rec *old)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    ddx x = {0};
    sched_rec tmp;
    sched_rec_init(&tmp);
    if (!old) old = &tmp;
    store_req_begin(&w, &req, s->table);
    jw_key(&w, "Item");
    sched_item_write(&w, r, sched_shard(r->id, s->conf.shards));
    /* A record whose TTL has passed is gone for every read: its id may be
     * reused (ReturnValues tells the caller, to fix the counters). */
    ddx_term_fn(&x, &x.cond, "attribute_not_exists", "id");
    buf_adds(&x.cond, " OR ");
    ddx_term_n(&x, &x.cond, "expires", " < ", time_now_ms() / 1000);
    ddx_write(&w, &x);
    store_return_old(&w, 1);
    jw_obj_end(&w);
    int rc, found;
    if (store_ddb_call(s, "PutItem", &req, &resp, &e) == 0) {
        rc = store_resp_rec(s, &resp, "Attributes", old, &found);
    } else if (aws_err_is(&e, "ConditionalCheckFailedException")) {
        rc = store_resp_rec(s, &resp, "Item", old, &found);
        if (rc == 0) {
            rc = STORE_LOST;
            store_seterr(s, "id: already exists");
        }
    } else {
        rc = STORE_ERR;
    }
    sched_rec_free(&tmp);
    ddx_free(&x);
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

/* Index of the record with this id among recs, or -1. */
static int find_id(sched_rec *const *recs, size_t n, const int *done, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (!done[i] && !strcmp(recs[i]->id, id)) return (int)i;
    return -1;
}

int store_put_batch(store *s, sched_rec *const *recs, size_t n, int *ok)
{
    buf_t req = BUF_INIT, resp = BUF_INIT, pending = BUF_INIT;
    json_w w;
    int rc = STORE_OK;
    if (n > DDB_BATCH_WRITE) return store_seterr(s, "store_put_batch: at most %d records", DDB_BATCH_WRITE);
    for (size_t i = 0; i < n; i++) ok[i] = 0;
    jw_init(&w, &pending);
    jw_arr(&w);
    for (size_t i = 0; i < n; i++) {
        jw_obj(&w);
        jw_key(&w, "PutRequest");
        jw_obj(&w);
        jw_key(&w, "Item");
        sched_item_write(&w, recs[i], sched_shard(recs[i]->id, s->conf.shards));
        jw_obj_end(&w);
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    int *unproc = xcalloc(n ? n : 1, sizeof *unproc);
    for (int attempt = 0; pending.len > 2; attempt++) {
        buf_reset(&req);
        buf_printf(&req, "{\"RequestItems\":{");
        json_escape(&req, s->table, strlen(s->table));
        buf_addc(&req, ':');
        buf_add(&req, pending.p, pending.len);
        buf_adds(&req, "}}");
        json_doc d;
        if ((rc = store_batch_round(s, "BatchWriteItem", attempt, &req, &resp, &d)) != STORE_OK) break;
        /* Everything not listed in UnprocessedItems was written. */
        memset(unproc, 0, n * sizeof *unproc);
        int un = store_member(&d, store_member(&d, 0, "UnprocessedItems"), s->table);
        buf_t id = BUF_INIT;
        for (int it = json_first(&d, un); it >= 0; it = json_after(&d, un, it)) {
            int item = store_member(&d, store_member(&d, it, "PutRequest"), "Item");
            if (ddb_get_s(&d, item, "id", &id) == 0) {
                int k = find_id(recs, n, ok, buf_str(&id));
                if (k >= 0) unproc[k] = 1;
            }
        }
        buf_free(&id);
        for (size_t i = 0; i < n; i++)
            if (!unproc[i]) ok[i] = 1;
        store_take_raw(&d, un, &pending);
        json_free(&d);
    }
    if (rc == STORE_ERR)
        for (size_t i = 0; i < n; i++)
            if (unproc[i]) ok[i] = 0;
    free(unproc);
    buf_free(&req);
    buf_free(&resp);
    buf_free(&pending);
    return rc;
}

/* The SQS body of a record: its wire line without the newline; the
 * payload is left out when the body would be too large for SQS. */
static void send_body(const sched_rec *r, buf_t *body)
{
    sched_wire w;
    sched_wire_init(&w);
    sched_wire_from_rec(&w, r);
    buf_reset(body);
    sched_wire_write(body, &w);
    if (body->len > SQS_BODY_MAX) {
        w.nopayload = 1;
        buf_reset(body);
        sched_wire_write(body, &w);
    }
    body->p[--body->len] = '\0';
    sched_wire_free(&w);
}

static int delay_seconds(int64_t due, int64_t now)
{
    int64_t d = (due - now - SCHED_DELAY_MARGIN_MS) / 1000;
    return d < 0 ? 0 : d > SQS_DELAY_MAX ? SQS_DELAY_MAX : (int)d;
}

int store_send(store *s, const sched_rec *r, buf_t *msg_id)
{
    aws_client *c = store_sqs(s);
    aws_err e;
    buf_t body = BUF_INIT;
    if (!c) return STORE_ERR;
    if (!s->queue_url) return store_seterr(s, "sqs: the delay queue is unknown (deployment not loaded)");
    send_body(r, &body);
    int rc = sqs_send_message(c, s->queue_url, body.p, delay_seconds(r->due, time_now_ms()), NULL, 0, msg_id, &e);
    buf_free(&body);
    return rc < 0 ? store_aws_err(s, "sqs SendMessage", &e) : STORE_OK;
}

int store_send_batch(store *s, sched_rec *const *recs, size_t n, int *ok)
{
    aws_client *c = store_sqs(s);
    aws_err e;
    int rc = STORE_OK;
    if (!c) return STORE_ERR;
    if (!s->queue_url) return store_seterr(s, "sqs: the delay queue is unknown (deployment not loaded)");
    if (n > SQS_BATCH_MAX) return store_seterr(s, "store_send_batch: at most %d records", SQS_BATCH_MAX);
    buf_t bodies[SQS_BATCH_MAX];
    sqs_send_entry ent[SQS_BATCH_MAX] = {{0}};
    aws_entry_result res[SQS_BATCH_MAX] = {{0}};
    for (size_t i = 0; i < n; i++) {
        bodies[i] = (buf_t)BUF_INIT;
        send_body(recs[i], &bodies[i]);
        ok[i] = 0;
    }
    /* A batch's total size is limited like one message: split by size. */
    size_t i = 0;
    while (i < n) {
        size_t j = i, total = 0, m = 0;
        /* DelaySeconds from the clock just before this request: a batch
         * split by size must not count from before the earlier requests. */
        int64_t now = time_now_ms();
        while (j < n && m < SQS_BATCH_MAX && (m == 0 || total + bodies[j].len <= SQS_BODY_MAX)) {
            ent[m] = (sqs_send_entry){NULL, bodies[j].p, delay_seconds(recs[j]->due, now), NULL, 0};
            total += bodies[j].len;
            j++, m++;
        }
        if (sqs_send_batch(c, s->queue_url, ent, m, res, &e) < 0) {
            rc = store_aws_err(s, "sqs SendMessageBatch", &e);
        } else {
            for (size_t k = 0; k < m; k++) {
                ok[i + k] = res[k].ok;
                if (!res[k].ok) rc = store_seterr(s, "sqs SendMessageBatch: %s: %s", res[k].code, res[k].message);
            }
        }
        i = j;
    }
    for (size_t k = 0; k < n; k++) buf_free(&bodies[k]);
    return rc;
}
