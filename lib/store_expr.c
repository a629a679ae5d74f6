/* store_expr.c: DynamoDB expressions for the store (store_int.h "ddx"):
 * SET/REMOVE/ADD clauses, conditions, projections and filters, with every
 * attribute name through ExpressionAttributeNames and every value through
 * ExpressionAttributeValues, so stored text is never parsed as syntax. */
#include "store_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every attribute name used in an expression goes through
 * ExpressionAttributeNames as "#<name>" (several are reserved words). */
static const char *const attr_names[] = {
    "id", "state", "due", "topic", "payload", "psize", "attrs", "chash", "created", "updated",
    "attempts", "last_error", "hist", "due_pk", "due_sk", "lease", "claims", "pub_msg", "st_pk",
    "st_sk", "expires", "k", "n", "arns", "minute", "shards", "window_ms", "grace_ms",
    "retention_s", "since", "queue_url", "dlq_url", "events_arn", "arn",
};
#define NATTR (sizeof attr_names / sizeof attr_names[0])

void ddx_free(ddx *x)
{
    buf_free(&x->set);
    buf_free(&x->rem);
    buf_free(&x->add);
    buf_free(&x->cond);
    buf_free(&x->proj);
    buf_free(&x->filter);
    buf_free(&x->vals);
    memset(x, 0, sizeof *x);
}

/* Appends "#name" to `to`. An unknown name is a programming error. */
void ddx_nm(ddx *x, buf_t *to, const char *name)
{
    for (size_t i = 0; i < NATTR; i++)
        if (!strcmp(attr_names[i], name)) {
            x->used |= 1ULL << i;
            buf_addc(to, '#');
            buf_adds(to, name);
            return;
        }
    abort();
}

/* Registers a value (an already-encoded attribute value) and appends its
 * placeholder ":vN" to `to`. */
void ddx_vraw(ddx *x, buf_t *to, const char *json)
{
    char ph[16];
    snprintf(ph, sizeof ph, ":v%d", x->nv++);
    if (x->vals.len) buf_addc(&x->vals, ',');
    buf_printf(&x->vals, "\"%s\":%s", ph, json);
    buf_adds(to, ph);
}

void ddx_vs(ddx *x, buf_t *to, const char *v)
{
    buf_t j = BUF_INIT;
    buf_adds(&j, "{\"S\":");
    json_escape(&j, v, strlen(v));
    buf_addc(&j, '}');
    ddx_vraw(x, to, buf_str(&j));
    buf_free(&j);
}

void ddx_vn(ddx *x, buf_t *to, int64_t v)
{
    char j[48];
    snprintf(j, sizeof j, "{\"N\":\"%" PRId64 "\"}", v);
    ddx_vraw(x, to, j);
}

void ddx_sep(buf_t *b, const char *s)
{
    if (b->len) buf_adds(b, s);
}

/* Appends "#name<op>:vN" to `to`, op being " = ", " < ", " BETWEEN "...:
 * the one shape of every comparison in keys, conditions and filters. */
void ddx_term_s(ddx *x, buf_t *to, const char *name, const char *op, const char *v)
{
    ddx_nm(x, to, name);
    buf_adds(to, op);
    ddx_vs(x, to, v);
}

void ddx_term_n(ddx *x, buf_t *to, const char *name, const char *op, int64_t v)
{
    ddx_nm(x, to, name);
    buf_adds(to, op);
    ddx_vn(x, to, v);
}

/* Appends "fn(#name)", e.g. attribute_not_exists(#id). */
void ddx_term_fn(ddx *x, buf_t *to, const char *fn, const char *name)
{
    buf_adds(to, fn);
    buf_addc(to, '(');
    ddx_nm(x, to, name);
    buf_addc(to, ')');
}

void ddx_set_s(ddx *x, const char *name, const char *v)
{
    ddx_sep(&x->set, ", ");
    ddx_term_s(x, &x->set, name, " = ", v);
}

void ddx_set_n(ddx *x, const char *name, int64_t v)
{
    ddx_sep(&x->set, ", ");
    ddx_term_n(x, &x->set, name, " = ", v);
}

/* name = if_not_exists(name, 0) + inc */
void ddx_set_inc(ddx *x, const char *name, int64_t inc)
{
    ddx_sep(&x->set, ", ");
    ddx_nm(x, &x->set, name);
    buf_adds(&x->set, " = if_not_exists(");
    ddx_nm(x, &x->set, name);
    buf_adds(&x->set, ", ");
    ddx_vn(x, &x->set, 0);
    buf_adds(&x->set, ") + ");
    ddx_vn(x, &x->set, inc);
}

void ddx_rem(ddx *x, const char *name)
{
    ddx_sep(&x->rem, ", ");
    ddx_nm(x, &x->rem, name);
}

/* ADD #name :v (counters: DynamoDB adds atomically, creating the item). */
void ddx_add_n(ddx *x, const char *name, int64_t v)
{
    ddx_sep(&x->add, ", ");
    ddx_term_n(x, &x->add, name, " ", v);
}

/* cond: "(... ) AND" chaining; the caller writes the term with
 * ddx_term_s/ddx_term_n (or ddx_nm/ddx_vs/ddx_vn). */
buf_t *ddx_and(ddx *x)
{
    ddx_sep(&x->cond, " AND ");
    return &x->cond;
}

void ddx_cond_eq_s(ddx *x, const char *name, const char *v)
{
    ddx_term_s(x, ddx_and(x), name, " = ", v);
}

void ddx_cond_n(ddx *x, const char *name, const char *op, int64_t v)
{
    ddx_term_n(x, ddx_and(x), name, op, v);
}

/* state IN (a, b, ...) for n states. */
void ddx_cond_state_in(ddx *x, const int *st, int n)
{
    buf_t *c = ddx_and(x);
    ddx_nm(x, c, "state");
    buf_adds(c, " IN (");
    for (int i = 0; i < n; i++) {
        if (i) buf_adds(c, ", ");
        ddx_vs(x, c, sched_state_name(st[i]));
    }
    buf_addc(c, ')');
}

/* Writes the expression members of a request: UpdateExpression (when any
 * clause), ConditionExpression, ProjectionExpression, FilterExpression and
 * the names/values maps. */
void ddx_write(json_w *w, ddx *x)
{
    buf_t u = BUF_INIT;
    if (x->set.len) buf_printf(&u, "SET %s", x->set.p);
    if (x->rem.len) buf_printf(&u, "%sREMOVE %s", u.len ? " " : "", x->rem.p);
    if (x->add.len) buf_printf(&u, "%sADD %s", u.len ? " " : "", x->add.p);
    if (u.len) {
        jw_key(w, "UpdateExpression");
        jw_str(w, u.p);
    }
    if (x->cond.len) {
        jw_key(w, "ConditionExpression");
        jw_str(w, x->cond.p);
    }
    if (x->proj.len) {
        jw_key(w, "ProjectionExpression");
        jw_str(w, x->proj.p);
    }
    if (x->filter.len) {
        jw_key(w, "FilterExpression");
        jw_str(w, x->filter.p);
    }
    if (x->used) {
        jw_key(w, "ExpressionAttributeNames");
        jw_obj(w);
        for (size_t i = 0; i < NATTR; i++)
            if (x->used & (1ULL << i)) {
                char k[32];
                snprintf(k, sizeof k, "#%s", attr_names[i]);
                jw_key(w, k);
                jw_str(w, attr_names[i]);
            }
        jw_obj_end(w);
    }
    if (x->vals.len) {
        jw_key(w, "ExpressionAttributeValues");
        buf_t v = BUF_INIT;
        buf_printf(&v, "{%s}", x->vals.p);
        jw_raw(w, v.p, v.len);
        buf_free(&v);
    }
    buf_free(&u);
}
