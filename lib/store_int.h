/* store_int.h: what the parts of the store (store.c, store_expr.c,
 * store_write.c, store_read.c, store_stats.c, store_init.c) share. Private
 * to them: the library's interface is store.h. Each function is described
 * where it is defined. */
#ifndef DELAYER_STORE_INT_H
#define DELAYER_STORE_INT_H
#include <stddef.h>
#include <stdint.h>

#include "ddbval.h"
#include "json.h"
#include "store.h"

#define DEF_WINDOW_MS    900000LL
#define DEF_GRACE_MS     30000LL
#define DEF_SHARDS       8
#define DEF_RETENTION_S  (7LL * 86400)
#define DEF_HORIZON_MS   (365LL * 86400000)
#define SQS_BODY_MAX     262144     /* SQS's classic limit; AWS now allows 1 MiB */
#define DDB_BATCH_WRITE  25
#define DDB_BATCH_GET    100

struct store_topic_cache { char *key; char *arn; };   /* store_init.c */
struct store_ev { char *type; char *body; char *topic; };   /* store_stats.c */

/* ---------------------------------------------------------- store.c */

void store_sleep_ms(long ms);
/* s->err = the formatted line; returns STORE_ERR. */
int store_seterr(store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s->err = "<what>: <code>: <message>"; returns STORE_ERR. */
int store_aws_err(store *s, const char *what, const aws_err *e);

/* One DynamoDB call (op "GetItem"...), its consumed capacity accounted. */
int store_ddb_call(store *s, const char *op, const buf_t *req, buf_t *resp, aws_err *e);
int store_member(json_doc *d, int obj, const char *name);
int store_parse_reply(store *s, const char *what, const buf_t *resp, json_doc *d);
void store_take_raw(json_doc *d, int t, buf_t *out);
int store_batch_round(store *s, const char *op, int attempt, const buf_t *req, buf_t *resp, json_doc *d);
void store_batch_keys(buf_t *out, const char *name, const char *const *keys, size_t n);
typedef void (*store_batch_item_fn)(void *ctx, json_doc *d, int item);
int store_batch_get(store *s, const char *table, const char *pre, const char *post, buf_t *pending,
                    store_batch_item_fn fn, void *ctx);

/* Request builders. */
void store_req_begin(json_w *w, buf_t *req, const char *table);
void store_key_s(json_w *w, const char *name, const char *v);
void store_return_old(json_w *w, int on_ccf);
void store_get_item_req(buf_t *req, const char *table, const char *name, const char *v);
void store_table_req(buf_t *req, const char *table);
/* A record in a reply ("Attributes", "Item"). */
int store_resp_rec(store *s, const buf_t *resp, const char *member, sched_rec *out, int *found);

/* ---------------------------------------------------------- store_expr.c */

/* The expressions of one request: clauses, names used, values. */
typedef struct {
    buf_t set, rem, add, cond, proj, filter;
    buf_t vals;          /* members of ExpressionAttributeValues, comma separated */
    uint64_t used;       /* bit i: attr_names[i] used */
    int nv;
} ddx;

void ddx_free(ddx *x);
void ddx_write(json_w *w, ddx *x);
void ddx_nm(ddx *x, buf_t *to, const char *name);
void ddx_vraw(ddx *x, buf_t *to, const char *json);
void ddx_vs(ddx *x, buf_t *to, const char *v);
void ddx_vn(ddx *x, buf_t *to, int64_t v);
void ddx_sep(buf_t *b, const char *s);
void ddx_term_s(ddx *x, buf_t *to, const char *name, const char *op, const char *v);
void ddx_term_n(ddx *x, buf_t *to, const char *name, const char *op, int64_t v);
void ddx_term_fn(ddx *x, buf_t *to, const char *fn, const char *name);
void ddx_set_s(ddx *x, const char *name, const char *v);
void ddx_set_n(ddx *x, const char *name, int64_t v);
void ddx_set_inc(ddx *x, const char *name, int64_t inc);
void ddx_rem(ddx *x, const char *name);
void ddx_add_n(ddx *x, const char *name, int64_t v);
buf_t *ddx_and(ddx *x);
void ddx_cond_eq_s(ddx *x, const char *name, const char *v);
void ddx_cond_n(ddx *x, const char *name, const char *op, int64_t v);
void ddx_cond_state_in(ddx *x, const int *st, int n);

/* ---------------------------------------------------------- meta items (store.c) */

int store_meta_get(store *s, const char *k, json_doc *d, buf_t *resp, int *item);
int store_meta_update(store *s, const char *k, ddx *x);
char *store_meta_str(json_doc *d, int item, const char *name);
int store_meta_get_str(store *s, const char *k, const char *name, char **out);

/* ---------------------------------------------------------- by_state (store_read.c) */

/* A listing's plan: the st_sk bounds and months to read. */
typedef struct {
    const store_list_q *q;
    buf_t lo, hi;        /* st_sk bounds ("" = open) */
    buf_t cursor_sk;     /* drop items with sk >= this ("" = none) */
    int64_t top, floor;  /* month range */
} store_lplan;

int store_list_plan(store *s, const store_list_q *q, store_lplan *p);
void store_list_plan_free(store_lplan *p);
typedef int (*store_page_fn)(store *s, void *ctx, json_doc *d);
int store_by_state_each(store *s, const store_lplan *p, int state, int select_count, store_page_fn fn, void *ctx);
#endif
