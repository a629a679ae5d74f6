/* store: one delayer deployment on DynamoDB + SQS + SNS (see store.h and
 * docs/schema.md). Part 1: configuration, clients, expressions, items,
 * creation and transitions. Queries, counters, list, events and init follow
 * further down. */
#include "store.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ddbval.h"
#include "json.h"
#include "reqstat.h"
#include "sns.h"
#include "sqs.h"
#include "timeutil.h"

#define DEF_WINDOW_MS    900000LL
#define DEF_GRACE_MS     30000LL
#define DEF_SHARDS       8
#define DEF_RETENTION_S  (7LL * 86400)
#define DEF_HORIZON_MS   (365LL * 86400000)
#define SQS_BODY_MAX     262144     /* SQS's classic limit; AWS now allows 1 MiB */
#define DDB_BATCH_WRITE  25
#define DDB_BATCH_GET    100

struct store_topic_cache { char *key; char *arn; };
struct store_ev { char *type; char *body; char *topic; };

static void ms_sleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static int fail(store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return STORE_ERR;
}

static int aws_fail(store *s, const char *what, const aws_err *e)
{
    if (e->code[0]) return fail(s, "%s: %s: %s", what, e->code, e->message);
    return fail(s, "%s: %s", what, e->message[0] ? e->message : "request failed");
}

/* ================================================================ config */

static int env_duration(const char *var, int64_t *out, char *err, size_t errlen)
{
    const char *v = getenv(var);
    char e[128];
    if (!v || !*v) return 0;
    if (time_parse_duration(v, out, e, sizeof e) < 0) {
        snprintf(err, errlen, "%s: %s", var, e);
        return -1;
    }
    return 0;
}

int store_check_prefix(const char *p, char *err, size_t errlen)
{
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || n > STORE_PREFIX_MAX) {
        snprintf(err, errlen, "prefix: must be 1-%d characters", STORE_PREFIX_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)p[i]) && p[i] != '-' && p[i] != '_') {
            snprintf(err, errlen, "prefix: only A-Z a-z 0-9 _ - allowed (it names tables, queues and topics)");
            return -1;
        }
    return 0;
}

int store_conf_env(store_conf *c, char *err, size_t errlen)
{
    c->prefix = getenv("DELAYER_PREFIX");
    if (c->prefix && !*c->prefix) c->prefix = NULL;
    c->window_ms = c->grace_ms = c->retention_s = c->horizon_ms = -1;
    c->shards = -1;
    c->events = 1;
    int64_t ret_ms = -1;
    if (env_duration("DELAYER_WINDOW", &c->window_ms, err, errlen) < 0 ||
        env_duration("DELAYER_GRACE", &c->grace_ms, err, errlen) < 0 ||
        env_duration("DELAYER_RETENTION", &ret_ms, err, errlen) < 0 ||
        env_duration("DELAYER_HORIZON", &c->horizon_ms, err, errlen) < 0)
        return -1;
    if (ret_ms >= 0) c->retention_s = ret_ms / 1000;
    if (c->window_ms > SCHED_WINDOW_MAX) {
        snprintf(err, errlen, "DELAYER_WINDOW: at most 900s (SQS's DelaySeconds limit)");
        return -1;
    }
    if (c->retention_s == 0) {
        snprintf(err, errlen, "DELAYER_RETENTION: must be at least 1s");
        return -1;
    }
    const char *sh = getenv("DELAYER_SHARDS");
    if (sh && *sh) {
        int64_t v;
        if (json_parse_i64(sh, strlen(sh), &v) < 0 || v < 1 || v > 1000) {
            snprintf(err, errlen, "DELAYER_SHARDS: expected an integer from 1 to 1000");
            return -1;
        }
        c->shards = (int)v;
    }
    const char *ev = getenv("DELAYER_EVENTS");
    if (ev && *ev) {
        if (!strcmp(ev, "0") || !strcmp(ev, "false") || !strcmp(ev, "off")) c->events = 0;
        else if (!strcmp(ev, "1") || !strcmp(ev, "true") || !strcmp(ev, "on")) c->events = 1;
        else {
            snprintf(err, errlen, "DELAYER_EVENTS: expected 0 or 1");
            return -1;
        }
    }
    char e[160];
    if (c->prefix && store_check_prefix(c->prefix, e, sizeof e) < 0) {
        snprintf(err, errlen, "DELAYER_PREFIX: %s", strchr(e, ' ') + 1);
        return -1;
    }
    return 0;
}

store *store_open(const store_conf *c, char *err, size_t errlen)
{
    const char *prefix = c->prefix ? c->prefix : "delayer";
    if (store_check_prefix(prefix, err, errlen) < 0) return NULL;
    store *s = xcalloc(1, sizeof *s);
    s->conf = *c;
    s->given = *c;
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix);
    s->conf.prefix = s->prefix;
    snprintf(s->table, sizeof s->table, "%s-schedules", prefix);
    snprintf(s->meta, sizeof s->meta, "%s-meta", prefix);
    snprintf(s->queue, sizeof s->queue, "%s-delay", prefix);
    snprintf(s->dlq, sizeof s->dlq, "%s-dead", prefix);
    snprintf(s->events_topic, sizeof s->events_topic, "%s-events", prefix);
    /* Defaults now; store_load() replaces the unset ones from config. */
    if (s->conf.window_ms < 0) s->conf.window_ms = DEF_WINDOW_MS;
    if (s->conf.grace_ms < 0) s->conf.grace_ms = DEF_GRACE_MS;
    if (s->conf.shards < 0) s->conf.shards = DEF_SHARDS;
    if (s->conf.retention_s < 0) s->conf.retention_s = DEF_RETENTION_S;
    if (s->conf.horizon_ms < 0) s->conf.horizon_ms = DEF_HORIZON_MS;
    s->ddb = aws_client_new("dynamodb", err, errlen);
    if (!s->ddb) {
        free(s);
        return NULL;
    }
    return s;
}

void store_close(store *s)
{
    if (!s) return;
    if (s->nev) store_events_flush(s);
    aws_client_free(s->ddb);
    aws_client_free(s->sqs);
    aws_client_free(s->sns);
    aws_client_free(s->evsns);
    free(s->queue_url);
    free(s->dlq_url);
    free(s->events_arn);
    for (size_t i = 0; i < s->ntopics; i++) {
        free(s->topics[i].key);
        free(s->topics[i].arn);
    }
    free(s->topics);
    free(s->evq);
    free(s);
}

aws_client *store_sqs(store *s)
{
    if (!s->sqs) {
        char e[256];
        s->sqs = aws_client_new("sqs", e, sizeof e);
        if (!s->sqs) fail(s, "sqs: %s", e);
    }
    return s->sqs;
}

aws_client *store_sns(store *s)
{
    if (!s->sns) {
        char e[256];
        s->sns = aws_client_new("sns", e, sizeof e);
        if (!s->sns) fail(s, "sns: %s", e);
    }
    return s->sns;
}

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

/* ============================================================ expressions */

/* Every attribute name used in an expression goes through
 * ExpressionAttributeNames as "#<name>" (several are reserved words). */
static const char *const attr_names[] = {
    "id", "state", "due", "topic", "payload", "psize", "attrs", "chash", "created", "updated",
    "attempts", "last_error", "hist", "due_pk", "due_sk", "lease", "claims", "pub_msg", "st_pk",
    "st_sk", "expires", "k", "n", "arns", "minute", "shards", "window_ms", "grace_ms",
    "retention_s", "since", "queue_url", "dlq_url", "events_arn", "arn",
};
#define NATTR (sizeof attr_names / sizeof attr_names[0])

typedef struct {
    buf_t set, rem, add, cond, proj, filter;
    buf_t vals;          /* members of ExpressionAttributeValues, comma separated */
    uint64_t used;       /* bit i: attr_names[i] used */
    int nv;
} ddx;

static void ddx_free(ddx *x)
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
static void nm(ddx *x, buf_t *to, const char *name)
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
static void vraw(ddx *x, buf_t *to, const char *json)
{
    char ph[16];
    snprintf(ph, sizeof ph, ":v%d", x->nv++);
    if (x->vals.len) buf_addc(&x->vals, ',');
    buf_printf(&x->vals, "\"%s\":%s", ph, json);
    buf_adds(to, ph);
}

static void vs(ddx *x, buf_t *to, const char *v)
{
    buf_t j = BUF_INIT;
    buf_adds(&j, "{\"S\":");
    json_escape(&j, v, strlen(v));
    buf_addc(&j, '}');
    vraw(x, to, buf_str(&j));
    buf_free(&j);
}

static void vn(ddx *x, buf_t *to, int64_t v)
{
    char j[48];
    snprintf(j, sizeof j, "{\"N\":\"%" PRId64 "\"}", v);
    vraw(x, to, j);
}

static void sep(buf_t *b, const char *s)
{
    if (b->len) buf_adds(b, s);
}

/* Appends "#name<op>:vN" to `to`, op being " = ", " < ", " BETWEEN "...:
 * the one shape of every comparison in keys, conditions and filters. */
static void term_s(ddx *x, buf_t *to, const char *name, const char *op, const char *v)
{
    nm(x, to, name);
    buf_adds(to, op);
    vs(x, to, v);
}

static void term_n(ddx *x, buf_t *to, const char *name, const char *op, int64_t v)
{
    nm(x, to, name);
    buf_adds(to, op);
    vn(x, to, v);
}

/* Appends "fn(#name)", e.g. attribute_not_exists(#id). */
static void term_fn(ddx *x, buf_t *to, const char *fn, const char *name)
{
    buf_adds(to, fn);
    buf_addc(to, '(');
    nm(x, to, name);
    buf_addc(to, ')');
}

static void set_s(ddx *x, const char *name, const char *v)
{
    sep(&x->set, ", ");
    term_s(x, &x->set, name, " = ", v);
}

static void set_n(ddx *x, const char *name, int64_t v)
{
    sep(&x->set, ", ");
    term_n(x, &x->set, name, " = ", v);
}

/* name = if_not_exists(name, 0) + inc */
static void set_inc(ddx *x, const char *name, int64_t inc)
{
    sep(&x->set, ", ");
    nm(x, &x->set, name);
    buf_adds(&x->set, " = if_not_exists(");
    nm(x, &x->set, name);
    buf_adds(&x->set, ", ");
    vn(x, &x->set, 0);
    buf_adds(&x->set, ") + ");
    vn(x, &x->set, inc);
}

static void rem(ddx *x, const char *name)
{
    sep(&x->rem, ", ");
    nm(x, &x->rem, name);
}

/* ADD #name :v (counters: DynamoDB adds atomically, creating the item). */
static void add_n(ddx *x, const char *name, int64_t v)
{
    sep(&x->add, ", ");
    term_n(x, &x->add, name, " ", v);
}

/* cond: "(... ) AND" chaining; the caller writes the term with nm/vs/vn. */
static buf_t *cond_and(ddx *x)
{
    sep(&x->cond, " AND ");
    return &x->cond;
}

static void cond_eq_s(ddx *x, const char *name, const char *v)
{
    term_s(x, cond_and(x), name, " = ", v);
}

static void cond_n(ddx *x, const char *name, const char *op, int64_t v)
{
    term_n(x, cond_and(x), name, op, v);
}

/* state IN (a, b, ...) for n states. */
static void cond_state_in(ddx *x, const int *st, int n)
{
    buf_t *c = cond_and(x);
    nm(x, c, "state");
    buf_adds(c, " IN (");
    for (int i = 0; i < n; i++) {
        if (i) buf_adds(c, ", ");
        vs(x, c, sched_state_name(st[i]));
    }
    buf_addc(c, ')');
}

/* Writes the expression members of a request: UpdateExpression (when any
 * clause), ConditionExpression, ProjectionExpression, FilterExpression and
 * the names/values maps. */
static void ddx_write(json_w *w, ddx *x)
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

/* ================================================================ calls */

/* One DynamoDB call. On failure fills e; s->err is set unless the error is
 * a conditional check failure (the caller decides what that means). */
/* The operations that take ReturnConsumedCapacity: 'r' reads, 'w' writes. */
static int capacity_kind(const char *op)
{
    static const char *const rd[] = {"GetItem", "Query", "Scan", "BatchGetItem"};
    static const char *const wr[] = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcmp(op, rd[i])) return 'r';
        if (!strcmp(op, wr[i])) return 'w';
    }
    return 0;
}

/* The sum of "CapacityUnits" in the response's ConsumedCapacity (an object,
 * or an array of them for batch calls). It is searched from the end (it is
 * a top-level member, after the items in DynamoDB's replies) and parsed
 * alone, so accounting costs no parse of the whole reply. Accounting only:
 * an unexpected shape adds nothing. */
static double consumed_units(const buf_t *resp)
{
    static const char key[] = "\"ConsumedCapacity\":";
    const size_t kl = sizeof key - 1;
    if (!resp->p || resp->len < kl) return 0;
    const char *hit = NULL;
    for (const char *p = resp->p + resp->len - kl; p >= resp->p; p--)
        if (*p == '"' && memcmp(p, key, kl) == 0) {
            hit = p + kl;
            break;
        }
    if (!hit) return 0;
    const char *end = resp->p + resp->len, *v = hit;
    while (v < end && (*v == ' ' || *v == '\n')) v++;
    /* the balanced value (strings skipped) */
    int depth = 0, instr = 0;
    const char *q = v;
    for (; q < end; q++) {
        if (instr) {
            if (*q == '\\') q++;
            else if (*q == '"') instr = 0;
        } else if (*q == '"') instr = 1;
        else if (*q == '{' || *q == '[') depth++;
        else if ((*q == '}' || *q == ']') && --depth == 0) break;
    }
    if (q >= end) return 0;
    json_doc d;
    double sum = 0, x;
    if (json_parse(&d, v, (size_t)(q + 1 - v)) == 0) {
        if (json_type(&d, 0) == JSON_OBJ) {
            if (json_f64(&d, json_get(&d, 0, "CapacityUnits"), &x) == 0) sum += x;
        } else if (json_type(&d, 0) == JSON_ARR) {
            for (int t = json_first(&d, 0); t >= 0; t = json_after(&d, 0, t))
                if (json_f64(&d, json_get(&d, t, "CapacityUnits"), &x) == 0) sum += x;
        }
    }
    json_free(&d);
    return sum;
}

/* Consumed capacity of one successful call, or a failed conditional write
 * (DynamoDB charges it, but its error reply carries no ConsumedCapacity). */
static void account(store *s, int kind, const buf_t *req, const buf_t *resp, int ccf)
{
    /* the meta table (counters, checkpoints, config) apart from the schedules */
    char tn[128];
    int n = snprintf(tn, sizeof tn, "\"TableName\":\"%s\"", s->meta);
    int meta = n > 0 && (size_t)n < sizeof tn && memmem(req->p, req->len, tn, (size_t)n) != NULL;
    if (ccf) {
        s->ccf++;
        reqstat_add("dynamodb.ccf", 1);
        return;
    }
    double u = consumed_units(resp);
    if (kind == 'r') {
        s->rcu += u;
        reqstat_add("dynamodb.rcu", u);
        if (meta) reqstat_add("dynamodb.meta_rcu", u);
    } else {
        s->wcu += u;
        reqstat_add("dynamodb.wcu", u);
        if (meta) reqstat_add("dynamodb.meta_wcu", u), reqstat_add("dynamodb.meta_writes", 1);
    }
}

static int ddb_call(store *s, const char *op, const buf_t *req, buf_t *resp, aws_err *e)
{
    char target[64];
    snprintf(target, sizeof target, "DynamoDB_20120810.%s", op);
    buf_reset(resp);
    int kind = capacity_kind(op);
    int rc;
    if (kind && req->len > 2 && req->p[0] == '{') {
        /* ReturnConsumedCapacity=TOTAL (free): consumed units per store */
        buf_t r2 = BUF_INIT;
        buf_adds(&r2, "{\"ReturnConsumedCapacity\":\"TOTAL\",");
        buf_add(&r2, req->p + 1, req->len - 1);
        rc = aws_json_call(s->ddb, target, r2.p, r2.len, resp, e);
        buf_free(&r2);
        if (rc == 0) account(s, kind, req, resp, 0);
        else if (kind == 'w' && aws_err_is(e, "ConditionalCheckFailedException")) account(s, kind, req, resp, 1);
    } else {
        rc = aws_json_call(s->ddb, target, req->p, req->len, resp, e);
    }
    if (rc == 0) return 0;
    if (!aws_err_is(e, "ConditionalCheckFailedException")) {
        char what[80];
        snprintf(what, sizeof what, "dynamodb %s", op);
        aws_fail(s, what, e);
    }
    return -1;
}

/* json_get, named for reading nested reply members (-1 propagates). */
static int member(json_doc *d, int obj, const char *name)
{
    return json_get(d, obj, name);
}

/* Parses a reply into d; on failure d is freed and s->err reads
 * "<what>: bad reply: <why>". */
static int parse_reply(store *s, const char *what, const buf_t *resp, json_doc *d)
{
    if (json_parse(d, resp->p, resp->len) == 0) return STORE_OK;
    fail(s, "%s: bad reply: %s", what, d->err);
    json_free(d);
    return STORE_ERR;
}

/* Copies the raw JSON of token t (LastEvaluatedKey, UnprocessedKeys...)
 * into out, or empties out when t is absent or empty: the next request
 * sends it back as is. */
static void take_raw(json_doc *d, int t, buf_t *out)
{
    buf_reset(out);
    if (json_size(d, t) > 0) {
        size_t n;
        const char *raw = json_raw(d, t, &n);
        buf_add(out, raw, n);
    }
}

/* One round of a batch call (BatchGetItem, BatchWriteItem) that retries
 * what DynamoDB left unprocessed: waits before every round but the first
 * (25 ms doubling, then 2 s), gives up after 13 rounds, and on success
 * leaves the parsed reply in d. */
static int batch_round(store *s, const char *op, int attempt, const buf_t *req, buf_t *resp, json_doc *d)
{
    aws_err e;
    char what[64];
    if (attempt > 0) ms_sleep(attempt > 6 ? 2000 : 25L << attempt);
    if (attempt > 12)
        return fail(s, "dynamodb %s: %s still unprocessed after %d attempts", op,
                    strcmp(op, "BatchWriteItem") ? "keys" : "items", attempt);
    if (ddb_call(s, op, req, resp, &e) < 0) return STORE_ERR;
    snprintf(what, sizeof what, "dynamodb %s", op);
    return parse_reply(s, what, resp, d);
}

/* The Keys array of a BatchGetItem: {"<name>":{"S":"<key>"}} for each
 * distinct key (DynamoDB refuses a batch that names a key twice). */
static void batch_keys(buf_t *out, const char *name, const char *const *keys, size_t n)
{
    json_w w;
    buf_reset(out);
    jw_init(&w, out);
    jw_arr(&w);
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < i && strcmp(keys[j], keys[i])) j++;
        if (j < i) continue;
        jw_obj(&w);
        ddbw_s(&w, name, keys[i]);
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
}

typedef void (*batch_item_fn)(void *ctx, json_doc *d, int item);

/* BatchGetItem on table of the Keys array in `pending`, retrying its
 * UnprocessedKeys until none is left; fn gets every item returned. The
 * request is {"RequestItems":{"<table>":{<pre>"Keys":<pending><post>}}}:
 * pre and post carry the other members (ConsistentRead, projection). */
static int batch_get(store *s, const char *table, const char *pre, const char *post, buf_t *pending,
                     batch_item_fn fn, void *ctx)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    int rc = STORE_OK;
    for (int attempt = 0; pending->len > 2; attempt++) {
        buf_reset(&req);
        buf_adds(&req, "{\"RequestItems\":{");
        json_escape(&req, table, strlen(table));
        buf_printf(&req, ":{%s\"Keys\":", pre);
        buf_add(&req, pending->p, pending->len);
        buf_printf(&req, "%s}}}", post);
        json_doc d;
        if ((rc = batch_round(s, "BatchGetItem", attempt, &req, &resp, &d)) != STORE_OK) break;
        int items = member(&d, member(&d, 0, "Responses"), table);
        for (int it = json_first(&d, items); it >= 0; it = json_after(&d, items, it)) fn(ctx, &d, it);
        take_raw(&d, member(&d, member(&d, member(&d, 0, "UnprocessedKeys"), table), "Keys"), pending);
        json_free(&d);
    }
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

/* Opens a request object on `table`: {"TableName":"<table>"... (the caller
 * closes it). */
static void req_begin(json_w *w, buf_t *req, const char *table)
{
    jw_init(w, req);
    jw_obj(w);
    jw_key(w, "TableName");
    jw_str(w, table);
}

/* "Key":{"<name>":{"S":"<v>"}}: both tables have a single string key
 * (schedules: id, meta: k). */
static void key_s(json_w *w, const char *name, const char *v)
{
    jw_key(w, "Key");
    jw_obj(w);
    ddbw_s(w, name, v);
    jw_obj_end(w);
}

/* ReturnValues=ALL_OLD, and on_ccf: the same on a failed condition, so one
 * round trip tells the caller the state it lost to. */
static void return_old(json_w *w, int on_ccf)
{
    jw_key(w, "ReturnValues");
    jw_str(w, "ALL_OLD");
    if (on_ccf) {
        jw_key(w, "ReturnValuesOnConditionCheckFailure");
        jw_str(w, "ALL_OLD");
    }
}

/* GetItem request (strongly consistent) of the item keyed name = v. */
static void get_item_req(buf_t *req, const char *table, const char *name, const char *v)
{
    json_w w;
    req_begin(&w, req, table);
    key_s(&w, name, v);
    jw_key(&w, "ConsistentRead");
    jw_bool(&w, 1);
    jw_obj_end(&w);
}

/* {"TableName":"<table>"}: the whole request of DescribeTable and
 * DescribeTimeToLive. */
static void table_req(buf_t *req, const char *table)
{
    json_w w;
    req_begin(&w, req, table);
    jw_obj_end(&w);
}

/* Reads the record at token `item` of d into out (when out != NULL). */
static int read_rec(store *s, json_doc *d, int item, sched_rec *out)
{
    char e[256];
    if (!out) return 0;
    if (sched_item_read(d, item, out, e, sizeof e) < 0) return fail(s, "dynamodb: %s", e);
    return 0;
}

/* Parses resp and reads member `member` ("Attributes", "Item") into out. */
static int resp_rec(store *s, const buf_t *resp, const char *member, sched_rec *out, int *found)
{
    json_doc d;
    *found = 0;
    if (out) sched_rec_free(out);
    if (!resp->len) return 0;
    if (parse_reply(s, "dynamodb", resp, &d) < 0) return -1;
    int t = json_get(&d, 0, member);
    int rc = 0;
    if (t >= 0) {
        *found = 1;
        rc = read_rec(s, &d, t, out);
    }
    json_free(&d);
    return rc;
}

/* UpdateItem on the schedule table with x's expressions; on success out
 * gets the item as it was before (ALL_OLD). On a conditional check
 * failure, out gets the current item: STORE_LOST, or STORE_NOTFOUND when
 * there is none or its TTL has passed. */
static int update_item(store *s, const char *id, ddx *x, sched_rec *out)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    sched_rec tmp;
    sched_rec_init(&tmp);
    if (!out) out = &tmp;
    req_begin(&w, &req, s->table);
    key_s(&w, "id", id);
    ddx_write(&w, x);
    return_old(&w, 1);
    jw_obj_end(&w);
    int rc, found;
    if (ddb_call(s, "UpdateItem", &req, &resp, &e) == 0) {
        rc = resp_rec(s, &resp, "Attributes", out, &found);
        if (rc == 0 && !found) sched_rec_free(out);
    } else if (aws_err_is(&e, "ConditionalCheckFailedException")) {
        rc = resp_rec(s, &resp, "Item", out, &found);
        if (rc == 0) {
            if (!found || sched_expired(out, time_now_ms())) {
                sched_rec_free(out);
                rc = STORE_NOTFOUND;
                fail(s, "id: not found");
            } else {
                rc = STORE_LOST;
                fail(s, "state: the schedule is %s", sched_state_name(out->state));
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

/* ============================================================ transitions */

static int64_t expires_for(const store *s, int64_t now)
{
    return now / 1000 + s->conf.retention_s;
}

/* The attributes every transition writes: state, updated, by_state keys,
 * history; entering a final state also sets the TTL and leaves the due
 * index; entering a waiting one clears the TTL. */
static void tr_begin(store *s, ddx *x, const char *id, int to, int64_t now)
{
    buf_t k = BUF_INIT, h = BUF_INIT;
    set_s(x, "state", sched_state_name(to));
    set_n(x, "updated", now);
    sched_st_pk(&k, to, now);
    set_s(x, "st_pk", buf_str(&k));
    sched_st_sk(&k, now, id);
    set_s(x, "st_sk", buf_str(&k));
    buf_printf(&h, "{\"L\":[{\"M\":{\"s\":{\"S\":\"%s\"},\"t\":{\"N\":\"%" PRId64 "\"}}}]}",
               sched_state_name(to), now);
    sep(&x->set, ", ");
    nm(x, &x->set, "hist");
    buf_adds(&x->set, " = list_append(if_not_exists(");
    nm(x, &x->set, "hist");
    buf_adds(&x->set, ", ");
    vraw(x, &x->set, "{\"L\":[]}");
    buf_adds(&x->set, "), ");
    vraw(x, &x->set, h.p);
    buf_addc(&x->set, ')');
    if (sched_state_final(to)) {
        set_n(x, "expires", expires_for(s, now));
        rem(x, "due_pk");
        rem(x, "due_sk");
        rem(x, "lease");
    } else {
        rem(x, "expires");
    }
    buf_free(&k);
    buf_free(&h);
}

/* (Re)writes the due index keys at the minute of index_ms. */
static void tr_index(store *s, ddx *x, const char *id, int64_t due, int64_t index_ms)
{
    buf_t k = BUF_INIT;
    sched_due_pk(&k, index_ms, sched_shard(id, s->conf.shards));
    set_s(x, "due_pk", buf_str(&k));
    sched_due_sk(&k, due, id);
    set_s(x, "due_sk", buf_str(&k));
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
    set_n(&x, "lease", lease);
    set_inc(&x, "claims", 1);
    cond_eq_s(&x, "state", "NEW");
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
    set_n(&x, "lease", new_lease);
    set_inc(&x, "claims", 1);
    tr_index(s, &x, id, due, sched_index_time(due, new_lease));
    cond_eq_s(&x, "state", "ENQUEUED");
    cond_n(&x, "lease", " = ", seen_lease);
    cond_n(&x, "lease", " < ", now);
    return tr_end(s, id, &x, out);
}

int store_unclaim(store *s, const char *id, int64_t due, int64_t lease, sched_rec *out)
{
    ddx x = {0};
    int64_t now = time_now_ms();
    tr_begin(s, &x, id, SCHED_NEW, now);
    rem(&x, "lease");
    tr_index(s, &x, id, due, sched_index_time(due, now));
    cond_eq_s(&x, "state", "ENQUEUED");
    cond_n(&x, "lease", " = ", lease);
    return tr_end(s, id, &x, out);
}

int store_commit(store *s, const sched_wire *w, const char *msg_id, sched_rec *out)
{
    ddx x = {0};
    const char *id = w->r.id;
    tr_begin(s, &x, id, SCHED_PUBLISHED, time_now_ms());
    set_s(&x, "pub_msg", msg_id);
    set_inc(&x, "attempts", 1);
    /* chash: a message left over from a deleted and re-created record with
     * other content must not publish the new one. */
    cond_eq_s(&x, "chash", w->r.chash);
    buf_t *c = cond_and(&x);
    buf_adds(c, "(");
    term_s(&x, c, "state", " = ", "ENQUEUED");
    buf_adds(c, " OR (");
    term_s(&x, c, "state", " = ", "PUBLISHED");
    buf_adds(c, " AND ");
    term_s(&x, c, "pub_msg", " = ", msg_id);
    buf_adds(c, "))");
    return tr_end(s, id, &x, out);
}

int store_unpublish(store *s, const sched_wire *w, const char *msg_id, const char *error, int64_t lease,
                    sched_rec *out)
{
    ddx x = {0};
    const char *id = w->r.id;
    tr_begin(s, &x, id, SCHED_ENQUEUED, time_now_ms());
    set_s(&x, "last_error", error ? error : "unknown error");
    set_n(&x, "lease", lease);
    tr_index(s, &x, id, w->r.due, sched_index_time(w->r.due, lease));
    cond_eq_s(&x, "state", "PUBLISHED");
    cond_eq_s(&x, "pub_msg", msg_id);
    return tr_end(s, id, &x, out);
}

int store_fail(store *s, const sched_wire *w, const char *error, sched_rec *out)
{
    ddx x = {0};
    tr_begin(s, &x, w->r.id, SCHED_FAILED, time_now_ms());
    set_s(&x, "last_error", error ? error : "unknown error");
    cond_eq_s(&x, "state", "ENQUEUED");
    cond_eq_s(&x, "chash", w->r.chash);
    return tr_end(s, w->r.id, &x, out);
}

static const int waiting_states[] = {SCHED_NEW, SCHED_ENQUEUED};

int store_invalid(store *s, const char *id, const char *error, sched_rec *out)
{
    ddx x = {0};
    tr_begin(s, &x, id, SCHED_INVALID, time_now_ms());
    set_s(&x, "last_error", error ? error : "invalid");
    cond_state_in(&x, waiting_states, 2);
    return tr_end(s, id, &x, out);
}

int store_cancel(store *s, const char *id, sched_rec *out)
{
    ddx x = {0};
    tr_begin(s, &x, id, SCHED_CANCELLED, time_now_ms());
    cond_state_in(&x, waiting_states, 2);
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
    set_n(&x, "lease", lease);
    set_n(&x, "claims", 0);
    tr_index(s, &x, id, cur.due, sched_index_time(cur.due, lease));
    cond_eq_s(&x, "state", "FAILED");
    cond_n(&x, "expires", " > ", now / 1000);   /* the FAILED record's TTL has not passed */
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
    req_begin(&w, &req, s->table);
    key_s(&w, "id", id);
    term_fn(&x, &x.cond, "attribute_exists", "id");
    ddx_write(&w, &x);
    return_old(&w, 0);
    jw_obj_end(&w);
    int rc, found;
    if (ddb_call(s, "DeleteItem", &req, &resp, &e) == 0) {
        rc = resp_rec(s, &resp, "Attributes", out, &found);
    } else if (aws_err_is(&e, "ConditionalCheckFailedException")) {
        rc = STORE_NOTFOUND;
        fail(s, "id: not found");
    } else {
        rc = STORE_ERR;
    }
    ddx_free(&x);
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

int store_get(store *s, const char *id, sched_rec *out)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    aws_err e;
    int rc = STORE_ERR, found = 0;
    get_item_req(&req, s->table, "id", id);
    if (ddb_call(s, "GetItem", &req, &resp, &e) == 0) {
        rc = resp_rec(s, &resp, "Item", out, &found);
        if (rc == 0 && (!found || sched_expired(out, time_now_ms()))) {
            sched_rec_free(out);
            fail(s, "id: not found");
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
    if (n > DDB_BATCH_GET) return fail(s, "store_get_batch: at most %d ids", DDB_BATCH_GET);
    for (size_t i = 0; i < n; i++) sched_rec_free(&found[i]);
    batch_keys(&pending, "id", ids, n);
    /* After Keys: ConsistentRead and the projection, written as an object
     * whose members are then spliced in. */
    const char *cols[] = {"id", "state", "chash", "topic", "expires", "due"};
    for (size_t c = 0; c < 6; c++) {
        sep(&x.proj, ", ");
        nm(&x, &x.proj, cols[c]);
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
    int rc = batch_get(s, s->table, "", post.p, &pending, get_batch_item, &g);
    ddx_free(&x);
    buf_free(&pending);
    buf_free(&tail);
    buf_free(&post);
    return rc;
}

/* ============================================================ creation */

int store_prepare(store *s, sched_rec *r, int64_t now)
{
    if (!r->id) {
        char u[SCHED_ULID_LEN + 1];
        if (sched_ulid(u, now) < 0) return fail(s, "id: no randomness available to generate one");
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
    req_begin(&w, &req, s->table);
    jw_key(&w, "Item");
    sched_item_write(&w, r, sched_shard(r->id, s->conf.shards));
    /* A record whose TTL has passed is gone for every read: its id may be
     * reused (ReturnValues tells the caller, to fix the counters). */
    term_fn(&x, &x.cond, "attribute_not_exists", "id");
    buf_adds(&x.cond, " OR ");
    term_n(&x, &x.cond, "expires", " < ", time_now_ms() / 1000);
    ddx_write(&w, &x);
    return_old(&w, 1);
    jw_obj_end(&w);
    int rc, found;
    if (ddb_call(s, "PutItem", &req, &resp, &e) == 0) {
        rc = resp_rec(s, &resp, "Attributes", old, &found);
    } else if (aws_err_is(&e, "ConditionalCheckFailedException")) {
        rc = resp_rec(s, &resp, "Item", old, &found);
        if (rc == 0) {
            rc = STORE_LOST;
            fail(s, "id: already exists");
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
    if (n > DDB_BATCH_WRITE) return fail(s, "store_put_batch: at most %d records", DDB_BATCH_WRITE);
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
        if ((rc = batch_round(s, "BatchWriteItem", attempt, &req, &resp, &d)) != STORE_OK) break;
        /* Everything not listed in UnprocessedItems was written. */
        memset(unproc, 0, n * sizeof *unproc);
        int un = member(&d, member(&d, 0, "UnprocessedItems"), s->table);
        buf_t id = BUF_INIT;
        for (int it = json_first(&d, un); it >= 0; it = json_after(&d, un, it)) {
            int item = member(&d, member(&d, it, "PutRequest"), "Item");
            if (ddb_get_s(&d, item, "id", &id) == 0) {
                int k = find_id(recs, n, ok, buf_str(&id));
                if (k >= 0) unproc[k] = 1;
            }
        }
        buf_free(&id);
        for (size_t i = 0; i < n; i++)
            if (!unproc[i]) ok[i] = 1;
        take_raw(&d, un, &pending);
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
    if (!s->queue_url) return fail(s, "sqs: the delay queue is unknown (deployment not loaded)");
    send_body(r, &body);
    int rc = sqs_send_message(c, s->queue_url, body.p, delay_seconds(r->due, time_now_ms()), NULL, 0, msg_id, &e);
    buf_free(&body);
    return rc < 0 ? aws_fail(s, "sqs SendMessage", &e) : STORE_OK;
}

int store_send_batch(store *s, sched_rec *const *recs, size_t n, int *ok)
{
    aws_client *c = store_sqs(s);
    aws_err e;
    int rc = STORE_OK;
    if (!c) return STORE_ERR;
    if (!s->queue_url) return fail(s, "sqs: the delay queue is unknown (deployment not loaded)");
    if (n > SQS_BATCH_MAX) return fail(s, "store_send_batch: at most %d records", SQS_BATCH_MAX);
    buf_t bodies[SQS_BATCH_MAX];
    sqs_send_entry ent[SQS_BATCH_MAX] = {{0}};
    aws_entry_result res[SQS_BATCH_MAX] = {{0}};
    int64_t now = time_now_ms();
    for (size_t i = 0; i < n; i++) {
        bodies[i] = (buf_t)BUF_INIT;
        send_body(recs[i], &bodies[i]);
        ok[i] = 0;
    }
    /* A batch's total size is limited like one message: split by size. */
    size_t i = 0;
    while (i < n) {
        size_t j = i, total = 0, m = 0;
        while (j < n && m < SQS_BATCH_MAX && (m == 0 || total + bodies[j].len <= SQS_BODY_MAX)) {
            ent[m] = (sqs_send_entry){NULL, bodies[j].p, delay_seconds(recs[j]->due, now), NULL, 0};
            total += bodies[j].len;
            j++, m++;
        }
        if (sqs_send_batch(c, s->queue_url, ent, m, res, &e) < 0) {
            rc = aws_fail(s, "sqs SendMessageBatch", &e);
        } else {
            for (size_t k = 0; k < m; k++) {
                ok[i + k] = res[k].ok;
                if (!res[k].ok) rc = fail(s, "sqs SendMessageBatch: %s: %s", res[k].code, res[k].message);
            }
        }
        i = j;
    }
    for (size_t k = 0; k < n; k++) buf_free(&bodies[k]);
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
    take_raw(d, json_get(d, 0, "LastEvaluatedKey"), lek);
}

/* A key condition "#<pk> = :v" with, when lo or hi is given, a range on the
 * sort key: "AND #<sk> BETWEEN :lo AND :hi", ">= :lo" or "<= :hi". */
static void key_cond(ddx *x, buf_t *kc, const char *pk_name, const char *pk, const char *sk_name, const char *lo,
                     const char *hi)
{
    term_s(x, kc, pk_name, " = ", pk);
    if (!lo && !hi) return;
    buf_adds(kc, " AND ");
    if (lo && hi) {
        term_s(x, kc, sk_name, " BETWEEN ", lo);
        buf_adds(kc, " AND ");
        vs(x, kc, hi);
    } else {
        term_s(x, kc, sk_name, lo ? " >= " : " <= ", lo ? lo : hi);
    }
}

/* Opens a Query request on an index of the schedule table with its key
 * condition and x's expressions; query_end adds the page cursor and
 * closes it (the caller may write other members in between). */
static void query_begin(store *s, json_w *w, buf_t *req, const char *index, const buf_t *kc, ddx *x)
{
    req_begin(w, req, s->table);
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
    if (ddb_call(s, "Query", &req, &resp, &e) < 0) {
        rc = STORE_ERR;
    } else {
        json_doc d;
        if ((rc = parse_reply(s, "dynamodb Query", &resp, &d)) == STORE_OK) {
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

/* ============================================================ meta items */

/* GetItem of a meta item into a parsed doc (caller frees). NOTFOUND when absent. */
static int meta_get(store *s, const char *k, json_doc *d, buf_t *resp, int *item)
{
    buf_t req = BUF_INIT;
    aws_err e;
    int rc = STORE_OK;
    memset(d, 0, sizeof *d);
    get_item_req(&req, s->meta, "k", k);
    if (ddb_call(s, "GetItem", &req, resp, &e) < 0) rc = STORE_ERR;
    else if (parse_reply(s, "dynamodb GetItem", resp, d) < 0) rc = STORE_ERR;
    else if ((*item = json_get(d, 0, "Item")) < 0) rc = STORE_NOTFOUND;
    buf_free(&req);
    return rc;
}

int store_ckpt_get(store *s, int shard, int64_t *minute)
{
    char k[32];
    json_doc d;
    buf_t resp = BUF_INIT;
    int item;
    snprintf(k, sizeof k, "ckpt#%d", shard);
    *minute = -1;
    int rc = meta_get(s, k, &d, &resp, &item);
    if (rc == STORE_OK && ddb_get_i64(&d, item, "minute", minute) < 0) rc = STORE_NOTFOUND;
    json_free(&d);
    buf_free(&resp);
    return rc;
}

/* UpdateItem on the meta table. */
static int meta_update(store *s, const char *k, ddx *x)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    req_begin(&w, &req, s->meta);
    key_s(&w, "k", k);
    ddx_write(&w, x);
    jw_obj_end(&w);
    int rc = STORE_OK;
    if (ddb_call(s, "UpdateItem", &req, &resp, &e) < 0)
        rc = aws_err_is(&e, "ConditionalCheckFailedException") ? STORE_LOST : STORE_ERR;
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

int store_ckpt_advance(store *s, int shard, int64_t minute)
{
    char k[32];
    ddx x = {0};
    snprintf(k, sizeof k, "ckpt#%d", shard);
    set_n(&x, "minute", minute);
    term_fn(&x, &x.cond, "attribute_not_exists", "minute");
    buf_adds(&x.cond, " OR ");
    term_n(&x, &x.cond, "minute", " < ", minute);
    int rc = meta_update(s, k, &x);
    if (rc == STORE_LOST) fail(s, "checkpoint: already at or past minute %" PRId64, minute);
    ddx_free(&x);
    return rc;
}

/* Optional string attribute of a meta item, owned copy or NULL. */
static char *meta_str(json_doc *d, int item, const char *name)
{
    buf_t v = BUF_INIT;
    char *r = NULL;
    if (ddb_has(d, item, name) && ddb_get_s(d, item, name, &v) == 0) r = xstrdup(buf_str(&v));
    buf_free(&v);
    return r;
}

/* The string attribute `name` of meta item k: *out gets an owned copy, or
 * NULL when the item or the attribute is absent (rc then tells which). */
static int meta_get_str(store *s, const char *k, const char *name, char **out)
{
    json_doc d;
    buf_t resp = BUF_INIT;
    int item;
    int rc = meta_get(s, k, &d, &resp, &item);
    *out = rc == STORE_OK ? meta_str(&d, item, name) : NULL;
    json_free(&d);
    buf_free(&resp);
    return rc;
}

int store_load(store *s)
{
    json_doc d;
    buf_t resp = BUF_INIT;
    int item;
    int rc = meta_get(s, "config", &d, &resp, &item);
    if (rc == STORE_ERR && strstr(s->err, "ResourceNotFoundException")) rc = STORE_NOTFOUND;
    if (rc == STORE_NOTFOUND)
        fail(s, "prefix: deployment \"%s\" is not initialised (run: delayer --prefix %s init)", s->prefix, s->prefix);
    if (rc == STORE_OK) {
        int64_t v;
        /* shards is fixed at init; the others: the environment wins. */
        if (ddb_get_i64(&d, item, "shards", &v) == 0) s->conf.shards = (int)v;
        if (s->given.window_ms < 0 && ddb_get_i64(&d, item, "window_ms", &v) == 0) s->conf.window_ms = v;
        if (s->given.grace_ms < 0 && ddb_get_i64(&d, item, "grace_ms", &v) == 0) s->conf.grace_ms = v;
        if (s->given.retention_s < 0 && ddb_get_i64(&d, item, "retention_s", &v) == 0) s->conf.retention_s = v;
        if (ddb_get_i64(&d, item, "since", &v) == 0) s->since_ms = v;
        free(s->queue_url);
        free(s->dlq_url);
        free(s->events_arn);
        s->queue_url = meta_str(&d, item, "queue_url");
        s->dlq_url = meta_str(&d, item, "dlq_url");
        s->events_arn = meta_str(&d, item, "events_arn");
        if (!s->queue_url) rc = fail(s, "prefix: deployment \"%s\" has no delay queue recorded (run init again)", s->prefix);
    }
    json_free(&d);
    buf_free(&resp);
    return rc;
}

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
    add_n(&x, "n", tot->d);
    if (set.len) {
        buf_adds(&set, "]}");
        buf_adds(&x.add, ", ");
        nm(&x, &x.add, "arns");
        buf_adds(&x.add, " ");
        vraw(&x, &x.add, set.p);
    }
    int rc = meta_update(s, k.p, &x);
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
        add_n(&x, "n", e->d);
        if (meta_update(s, k.p, &x) == STORE_OK) e->d = 0;
        else rc = STORE_ERR;
        ddx_free(&x);
        buf_free(&k);
    }
    return rc;
}

/* The value token of attribute name with type key type ("SS", ...), or -1. */
static int attr_value(json_doc *d, int item, const char *name, const char *type)
{
    int v = json_get(d, item, name);
    return json_type(d, v) == JSON_OBJ ? json_get(d, v, type) : -1;
}

/* BatchGetItem of meta keys (any number: sent 100 at a time, each once),
 * retrying UnprocessedKeys; fn is called for every item found. */
static int meta_batch_get(store *s, char **keys, size_t n, batch_item_fn fn, void *ctx)
{
    buf_t pending = BUF_INIT;
    int rc = STORE_OK;
    for (size_t i = 0; i < n && rc == STORE_OK; i += DDB_BATCH_GET) {
        batch_keys(&pending, "k", (const char *const *)keys + i, n - i < DDB_BATCH_GET ? n - i : DDB_BATCH_GET);
        rc = batch_get(s, s->meta, "\"ConsistentRead\":true,", "", &pending, fn, ctx);
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

/* ============================================================ by_state */

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

typedef struct {
    const store_list_q *q;
    buf_t lo, hi;        /* st_sk bounds ("" = open) */
    buf_t cursor_sk;     /* drop items with sk >= this ("" = none) */
    int64_t top, floor;  /* month range */
} lplan;

static void lstream_clear_items(lstream *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        sched_rec_free(&ls->v[i].r);
        free(ls->v[i].sk);
    }
    ls->n = ls->i = 0;
}

/* Key condition, filter and names/values for one Query of (state, month). */
static void by_state_query(store *s, const lplan *p, int state, int64_t month, ddx *x, buf_t *kc)
{
    buf_t pk = BUF_INIT;
    sched_st_pk(&pk, state, month);
    key_cond(x, kc, "st_pk", pk.p, "st_sk", p->lo.len ? p->lo.p : NULL, p->hi.len ? p->hi.p : NULL);
    /* Filters: expired items are invisible; then the user's filters. */
    buf_adds(&x->filter, "(");
    term_fn(x, &x->filter, "attribute_not_exists", "expires");
    buf_adds(&x->filter, " OR ");
    term_n(x, &x->filter, "expires", " > ", time_now_ms() / 1000);
    buf_adds(&x->filter, ")");
    if (p->q->topic) {
        buf_adds(&x->filter, " AND ");
        term_s(x, &x->filter, "topic", " = ", p->q->topic);
    }
    if (p->q->error_prefix) {
        buf_adds(&x->filter, " AND begins_with(");
        nm(x, &x->filter, "last_error");
        buf_adds(&x->filter, ", ");
        vs(x, &x->filter, p->q->error_prefix);
        buf_adds(&x->filter, ")");
    }
    buf_free(&pk);
}

/* One Query page on the by_state index. select_count: Select=COUNT. */
static int by_state_page(store *s, const lplan *p, int state, int64_t month, buf_t *lek, long limit,
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
    int rc = ddb_call(s, "Query", &req, resp, &e) < 0 ? STORE_ERR : STORE_OK;
    ddx_free(&x);
    buf_free(&kc);
    buf_free(&req);
    return rc;
}

typedef int (*page_fn)(store *s, void *ctx, json_doc *d);

/* Every page of every month of one state's by_state partitions, newest
 * month first, within p's range; fn gets each parsed page (a non-zero
 * return stops). select_count: pages carry Count, not Items. */
static int by_state_each(store *s, const lplan *p, int state, int select_count, page_fn fn, void *ctx)
{
    buf_t lek = BUF_INIT, resp = BUF_INIT;
    int rc = STORE_OK;
    for (int64_t m = p->top; m >= p->floor && rc == STORE_OK; m = sched_prev_month(m)) {
        do {
            json_doc d;
            if ((rc = by_state_page(s, p, state, m, &lek, 0, select_count, &resp)) != STORE_OK) break;
            if ((rc = parse_reply(s, "dynamodb Query", &resp, &d)) != STORE_OK) break;
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
static int lstream_fill(store *s, const lplan *p, lstream *ls, long want)
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
        if ((rc = parse_reply(s, "dynamodb Query", &resp, &d)) != STORE_OK) break;
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
static int list_plan(store *s, const store_list_q *q, lplan *p)
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
        if (cursor_decode(q->cursor, &p->cursor_sk, &cur_t) < 0) return fail(s, "cursor: not a cursor printed by delayer list");
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

static void list_plan_free(lplan *p)
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
static int list_pick(store *s, const lplan *p, lstream *ls, int n, long want, int *rc)
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
    lplan p;
    lstream ls[SCHED_NSTATES];
    int st[SCHED_NSTATES], rc = STORE_OK;
    buf_reset(next_cursor);
    if (list_plan(s, q, &p) != STORE_OK) {
        list_plan_free(&p);
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
    list_plan_free(&p);
    return rc;
}

/* A Select=COUNT page: adds its Count to *(int64_t *)ctx. */
static int count_page(store *s, void *ctx, json_doc *d)
{
    int64_t c = 0;
    if (json_i64(d, json_get(d, 0, "Count"), &c) < 0) return fail(s, "dynamodb Query: bad reply: %s", d->err);
    *(int64_t *)ctx += c;
    return STORE_OK;
}

int store_list_count(store *s, const store_list_q *q, int64_t *count)
{
    lplan p;
    int st[SCHED_NSTATES], rc = STORE_OK;
    store_list_q q2 = *q;
    q2.cursor = NULL;
    *count = 0;
    if (list_plan(s, &q2, &p) != STORE_OK) rc = STORE_ERR;
    int n = list_states(q, st);
    for (int i = 0; i < n && rc == STORE_OK; i++) rc = by_state_each(s, &p, st[i], 1, count_page, count);
    list_plan_free(&p);
    return rc;
}

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
    req_begin(&w, &req, s->meta);
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
    int rc = ddb_call(s, "PutItem", &req, &resp, &e) < 0 ? STORE_ERR : STORE_OK;
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

int store_stats_recount(store *s, store_stats *out)
{
    store_stats old, now;
    store_list_q q = {0};
    lplan p;
    int rc;
    memset(&now, 0, sizeof now);
    q.limit = 1;
    if ((rc = store_stats_read(s, 1, &old)) != STORE_OK) return rc;
    rc = list_plan(s, &q, &p);
    for (int st = 0; st < SCHED_NSTATES && rc == STORE_OK; st++) {
        struct tally t = {&now, st};
        rc = by_state_each(s, &p, st, 0, tally_page, &t);
    }
    list_plan_free(&p);
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

/* ============================================================ topics */

static int topic_lookup(store *s, const char *t, buf_t *arn);

static const char *topic_cached(store *s, const char *key)
{
    for (size_t i = 0; i < s->ntopics; i++)
        if (!strcmp(s->topics[i].key, key)) return s->topics[i].arn;
    return NULL;
}

static void topic_cache(store *s, const char *key, const char *arn)
{
    s->topics = xrealloc(s->topics, (s->ntopics + 1) * sizeof *s->topics);
    s->topics[s->ntopics++] = (struct store_topic_cache){xstrdup(key), xstrdup(arn)};
}

/* A topic NAME (as given to init --topic): [A-Za-z0-9_-], 1-256 with the prefix. */
static int check_topic_name(store *s, const char *name)
{
    size_t n = strlen(name);
    char q[80];
    sched_quote(q, sizeof q, name, 60);
    if (n == 0) return fail(s, "topic: empty");
    if (n + strlen(s->prefix) + 1 > 256) return fail(s, "topic: name \"%s\" too long", q);
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '-' && name[i] != '_')
            return fail(s, "topic: \"%s\" is neither an SNS topic ARN nor a topic name (A-Z a-z 0-9 _ -)", q);
    return STORE_OK;
}

/* An ARN: well-formed and existing (GetTopicAttributes). */
static int topic_check_arn(store *s, const char *arn)
{
    char e[256], q[96];
    aws_err ae;
    if (sched_check_topic_arn(arn, e, sizeof e) < 0) return fail(s, "%s", e), STORE_NOTFOUND;
    aws_client *c = store_sns(s);
    if (!c) return STORE_ERR;
    if (sns_get_topic_attributes(c, arn, NULL, &ae) == 0) return STORE_OK;
    sched_quote(q, sizeof q, arn, 80);
    if (aws_err_is(&ae, "NotFound") || aws_err_is(&ae, "NotFoundException"))
        return fail(s, "topic: no such topic %s", q), STORE_NOTFOUND;
    return aws_fail(s, "sns GetTopicAttributes", &ae);
}

int store_topic_resolve(store *s, const char *t, buf_t *arn)
{
    const char *hit = topic_cached(s, t);
    int rc;
    buf_reset(arn);
    if (hit && hit[0] == '!') {
        /* A cached miss: the error text follows the '!'. */
        snprintf(s->err, sizeof s->err, "%s", hit + 1);
        return STORE_NOTFOUND;
    }
    if (hit) {
        buf_adds(arn, hit);
        return STORE_OK;
    }
    rc = topic_lookup(s, t, arn);
    if (rc == STORE_OK) topic_cache(s, t, arn->p);
    if (rc == STORE_NOTFOUND) {
        buf_t miss = BUF_INIT;
        buf_printf(&miss, "!%s", s->err);
        topic_cache(s, t, miss.p);
        buf_free(&miss);
    }
    return rc;
}

/* Resolves without the cache. */
static int topic_lookup(store *s, const char *t, buf_t *arn)
{
    int rc;
    if (!strncmp(t, "arn:", 4)) {
        if ((rc = topic_check_arn(s, t)) != STORE_OK) return rc;
        buf_adds(arn, t);
    } else {
        if (check_topic_name(s, t) != STORE_OK) return STORE_NOTFOUND;
        buf_t k = BUF_INIT;
        char q[80], *a;
        buf_printf(&k, "topic#%s", t);
        rc = meta_get_str(s, k.p, "arn", &a);
        buf_free(&k);
        sched_quote(q, sizeof q, t, 60);
        if (rc == STORE_NOTFOUND || (rc == STORE_OK && !a)) {
            free(a);
            return fail(s, "topic: unknown topic \"%s\" (give an ARN, or create it with: delayer init --topic %s)", q, q),
                   STORE_NOTFOUND;
        }
        if (rc != STORE_OK) return rc;
        buf_adds(arn, a);
        free(a);
    }
    return STORE_OK;
}

/* ============================================================ init */

static void report(buf_t *r, const char *what, const char *kind, const char *name)
{
    if (r) buf_printf(r, "%s %s %s\n", what, kind, name);
}

/* DescribeTable until the table and its indexes are ACTIVE (DynamoDB
 * creates them asynchronously). want_gsi: index names that must exist. */
static int table_wait(store *s, const char *table, const char *const *want_gsi, int ngsi)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    aws_err e;
    int rc = STORE_ERR;
    table_req(&req, table);
    for (int tries = 0; tries < 600; tries++) {
        if (ddb_call(s, "DescribeTable", &req, &resp, &e) < 0) break;
        json_doc d;
        if (json_parse(&d, resp.p, resp.len) < 0) {
            fail(s, "dynamodb DescribeTable: bad reply");
            json_free(&d);
            break;
        }
        int t = json_get(&d, 0, "Table"), gsis = json_get(&d, t, "GlobalSecondaryIndexes");
        int active = json_streq(&d, json_get(&d, t, "TableStatus"), "ACTIVE"), found = 0, missing = -1;
        for (int g = json_first(&d, gsis); g >= 0; g = json_after(&d, gsis, g))
            active &= json_streq(&d, json_get(&d, g, "IndexStatus"), "ACTIVE");
        for (int i = 0; i < ngsi; i++) {
            int have = 0;
            for (int g = json_first(&d, gsis); g >= 0; g = json_after(&d, gsis, g))
                have |= json_streq(&d, json_get(&d, g, "IndexName"), want_gsi[i]);
            found += have;
            if (!have && missing < 0) missing = i;
        }
        json_free(&d);
        if (found < ngsi) {
            fail(s, "table %s exists without the index \"%s\" (made by something else? use another --prefix)", table,
                 want_gsi[missing]);
            break;
        }
        if (active) {
            rc = STORE_OK;
            break;
        }
        ms_sleep(100);
    }
    if (rc == STORE_ERR && !s->err[0]) fail(s, "table %s: not ACTIVE after 60 s", table);
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

static void gsi(json_w *w, const char *name, const char *hk, const char *rk, const char *const *proj, int np)
{
    jw_obj(w);
    jw_key(w, "IndexName");
    jw_str(w, name);
    buf_t ks = BUF_INIT;
    buf_printf(&ks, "[{\"AttributeName\":\"%s\",\"KeyType\":\"HASH\"},{\"AttributeName\":\"%s\",\"KeyType\":\"RANGE\"}]",
               hk, rk);
    jw_key(w, "KeySchema");
    jw_raw(w, ks.p, ks.len);
    buf_free(&ks);
    jw_key(w, "Projection");
    jw_obj(w);
    jw_key(w, "ProjectionType");
    jw_str(w, "INCLUDE");
    jw_key(w, "NonKeyAttributes");
    jw_arr(w);
    for (int i = 0; i < np; i++) jw_str(w, proj[i]);
    jw_arr_end(w);
    jw_obj_end(w);
    jw_obj_end(w);
}

/* CreateTable; ResourceInUseException means it exists. 1 created, 0 existed. */
static int table_create(store *s, const char *table, int schedules)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    static const char *const due_proj[] = {"state", "lease", "claims"};
    static const char *const st_proj[] = {"state", "due", "topic", "created", "updated", "attempts",
                                          "last_error", "psize", "expires"};
    req_begin(&w, &req, table);
    jw_key(&w, "BillingMode");
    jw_str(&w, "PAY_PER_REQUEST");
    jw_key(&w, "AttributeDefinitions");
    jw_arr(&w);
    const char *keys[] = {schedules ? "id" : "k", "due_pk", "due_sk", "st_pk", "st_sk"};
    for (int i = 0; i < (schedules ? 5 : 1); i++) {
        jw_obj(&w);
        jw_key(&w, "AttributeName");
        jw_str(&w, keys[i]);
        jw_key(&w, "AttributeType");
        jw_str(&w, "S");
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_key(&w, "KeySchema");
    jw_arr(&w);
    jw_obj(&w);
    jw_key(&w, "AttributeName");
    jw_str(&w, keys[0]);
    jw_key(&w, "KeyType");
    jw_str(&w, "HASH");
    jw_obj_end(&w);
    jw_arr_end(&w);
    if (schedules) {
        jw_key(&w, "GlobalSecondaryIndexes");
        jw_arr(&w);
        gsi(&w, "due", "due_pk", "due_sk", due_proj, 3);
        gsi(&w, "by_state", "st_pk", "st_sk", st_proj, 9);
        jw_arr_end(&w);
    }
    jw_obj_end(&w);
    int rc = 1;
    if (ddb_call(s, "CreateTable", &req, &resp, &e) < 0) {
        if (aws_err_is(&e, "ResourceInUseException")) rc = 0;
        else rc = aws_fail(s, "dynamodb CreateTable", &e);
    }
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

/* TTL on `expires`: 1 enabled now, 0 already enabled. */
static int ttl_enable(store *s)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    aws_err e;
    int rc = 1;
    table_req(&req, s->table);
    if (ddb_call(s, "DescribeTimeToLive", &req, &resp, &e) == 0 && strstr(resp.p, "\"ENABLED\"") &&
        strstr(resp.p, "\"expires\"")) {
        rc = 0;
    } else {
        buf_reset(&req);
        buf_adds(&req, "{\"TableName\":");
        json_escape(&req, s->table, strlen(s->table));
        buf_adds(&req, ",\"TimeToLiveSpecification\":{\"Enabled\":true,\"AttributeName\":\"expires\"}}");
        if (ddb_call(s, "UpdateTimeToLive", &req, &resp, &e) < 0) {
            if (strstr(e.message, "already enabled")) rc = 0;
            else rc = aws_fail(s, "dynamodb UpdateTimeToLive", &e);
        }
    }
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

static int init_tables(store *s, buf_t *r)
{
    static const char *const gsis[] = {"due", "by_state"};
    int c1 = table_create(s, s->table, 1);
    if (c1 < 0 || table_wait(s, s->table, gsis, 2) < 0) return STORE_ERR;
    report(r, c1 ? "created" : "exists", "table", s->table);
    int c2 = table_create(s, s->meta, 0);
    if (c2 < 0 || table_wait(s, s->meta, NULL, 0) < 0) return STORE_ERR;
    report(r, c2 ? "created" : "exists", "table", s->meta);
    int c3 = ttl_enable(s);
    if (c3 < 0) return STORE_ERR;
    buf_t n = BUF_INIT;
    buf_printf(&n, "%s.expires", s->table);
    report(r, c3 ? "created" : "exists", "ttl", n.p);
    buf_free(&n);
    return STORE_OK;
}

/* A queue: the URL if it exists, else created with attrs. */
static int queue_ensure(store *s, const char *name, const aws_kv *attrs, size_t na, buf_t *url, buf_t *r)
{
    aws_client *c = store_sqs(s);
    aws_err e;
    if (!c) return STORE_ERR;
    if (sqs_get_queue_url(c, name, url, &e) == 0) {
        /* Existing: make sure its attributes are ours (e.g. the redrive). */
        if (sqs_set_queue_attributes(c, url->p, attrs, na, &e) < 0) return aws_fail(s, "sqs SetQueueAttributes", &e);
        report(r, "exists", "queue", name);
        return STORE_OK;
    }
    if (!aws_err_is(&e, "QueueDoesNotExist") && !aws_err_is(&e, "NonExistentQueue"))
        return aws_fail(s, "sqs GetQueueUrl", &e);
    if (sqs_create_queue(c, name, attrs, na, url, &e) < 0) return aws_fail(s, "sqs CreateQueue", &e);
    report(r, "created", "queue", name);
    return STORE_OK;
}

static int init_queues(store *s, buf_t *r)
{
    buf_t dlq = BUF_INIT, q = BUF_INIT, arn = BUF_INIT, redrive = BUF_INIT;
    aws_err e;
    int rc = STORE_ERR;
    aws_kv dattrs[] = {{"MessageRetentionPeriod", "1209600"}};
    if (queue_ensure(s, s->dlq, dattrs, 1, &dlq, r) < 0) goto out;
    if (sqs_get_queue_attribute(store_sqs(s), dlq.p, "QueueArn", &arn, &e) < 0) {
        aws_fail(s, "sqs GetQueueAttributes", &e);
        goto out;
    }
    buf_adds(&redrive, "{\"deadLetterTargetArn\":");
    json_escape(&redrive, arn.p, arn.len);
    buf_adds(&redrive, ",\"maxReceiveCount\":\"5\"}");
    aws_kv qattrs[] = {{"VisibilityTimeout", "30"}, {"MessageRetentionPeriod", "1209600"}, {"RedrivePolicy", redrive.p}};
    if (queue_ensure(s, s->queue, qattrs, 3, &q, r) < 0) goto out;
    free(s->queue_url);
    free(s->dlq_url);
    s->queue_url = xstrdup(q.p);
    s->dlq_url = xstrdup(dlq.p);
    rc = STORE_OK;
out:
    buf_free(&dlq);
    buf_free(&q);
    buf_free(&arn);
    buf_free(&redrive);
    return rc;
}

/* A topic: "exists" when `known` (recorded earlier) still exists, else created. */
static int topic_ensure(store *s, const char *name, const char *known, buf_t *arn, buf_t *r)
{
    aws_client *c = store_sns(s);
    aws_err e;
    if (!c) return STORE_ERR;
    if (known && sns_get_topic_attributes(c, known, NULL, &e) == 0) {
        buf_reset(arn);
        buf_adds(arn, known);
        report(r, "exists", "topic", name);
        return STORE_OK;
    }
    if (sns_create_topic(c, name, NULL, 0, arn, &e) < 0) return aws_fail(s, "sns CreateTopic", &e);
    report(r, "created", "topic", name);
    return STORE_OK;
}

/* PutItem of a meta item {k, attrs...} (unconditional). */
static int meta_put_s(store *s, const char *k, const char *name, const char *value)
{
    ddx x = {0};
    set_s(&x, name, value);
    int rc = meta_update(s, k, &x);
    ddx_free(&x);
    return rc;
}

static int init_user_topics(store *s, const char *const *topics, size_t n, buf_t *r)
{
    for (size_t i = 0; i < n; i++) {
        buf_t k = BUF_INIT, full = BUF_INIT, arn = BUF_INIT;
        char *known;
        if (check_topic_name(s, topics[i]) != STORE_OK) return STORE_ERR;
        buf_printf(&k, "topic#%s", topics[i]);
        buf_printf(&full, "%s-%s", s->prefix, topics[i]);
        int rc = meta_get_str(s, k.p, "arn", &known);
        if (rc != STORE_ERR) rc = topic_ensure(s, full.p, known, &arn, r);
        if (rc == STORE_OK) rc = meta_put_s(s, k.p, "arn", arn.p);
        if (rc == STORE_OK) topic_cache(s, topics[i], arn.p);
        free(known);
        buf_free(&k);
        buf_free(&full);
        buf_free(&arn);
        if (rc != STORE_OK) return STORE_ERR;
    }
    return STORE_OK;
}

/* The config item: created once (shards and since are fixed then); the
 * resource addresses and any explicitly given settings are refreshed. */
static int init_config(store *s, buf_t *r)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    ddx x = {0};
    int64_t now = time_now_ms();
    req_begin(&w, &req, s->meta);
    jw_key(&w, "Item");
    jw_obj(&w);
    ddbw_s(&w, "k", "config");
    ddbw_i64(&w, "shards", s->conf.shards);
    ddbw_i64(&w, "window_ms", s->conf.window_ms);
    ddbw_i64(&w, "grace_ms", s->conf.grace_ms);
    ddbw_i64(&w, "retention_s", s->conf.retention_s);
    ddbw_i64(&w, "since", now);
    ddbw_s(&w, "queue_url", s->queue_url);
    ddbw_s(&w, "dlq_url", s->dlq_url);
    ddbw_s(&w, "events_arn", s->events_arn);
    jw_obj_end(&w);
    term_fn(&x, &x.cond, "attribute_not_exists", "k");
    ddx_write(&w, &x);
    jw_obj_end(&w);
    ddx_free(&x);
    int rc = STORE_OK;
    if (ddb_call(s, "PutItem", &req, &resp, &e) == 0) {
        s->since_ms = now;
        report(r, "created", "config", s->meta);
    } else if (!aws_err_is(&e, "ConditionalCheckFailedException")) {
        rc = STORE_ERR;
    } else {
        set_s(&x, "queue_url", s->queue_url);
        set_s(&x, "dlq_url", s->dlq_url);
        set_s(&x, "events_arn", s->events_arn);
        if (s->given.window_ms >= 0) set_n(&x, "window_ms", s->conf.window_ms);
        if (s->given.grace_ms >= 0) set_n(&x, "grace_ms", s->conf.grace_ms);
        if (s->given.retention_s >= 0) set_n(&x, "retention_s", s->conf.retention_s);
        rc = meta_update(s, "config", &x);
        ddx_free(&x);
        if (rc == STORE_OK) {
            char *qu = s->queue_url, *du = s->dlq_url, *ea = s->events_arn;
            s->queue_url = s->dlq_url = s->events_arn = NULL;
            rc = store_load(s); /* shards and since as fixed at the first init */
            free(s->queue_url), free(s->dlq_url), free(s->events_arn);
            s->queue_url = qu, s->dlq_url = du, s->events_arn = ea;
            buf_t n = BUF_INIT;
            buf_printf(&n, "%s (shards %d, fixed at the first init)", s->meta, s->conf.shards);
            report(r, "exists", "config", n.p);
            buf_free(&n);
        }
    }
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

int store_init(store *s, const char *const *topics, size_t ntopics, buf_t *r)
{
    if (init_tables(s, r) != STORE_OK || init_queues(s, r) != STORE_OK) return STORE_ERR;
    /* The events topic ARN recorded by an earlier init, if any. */
    buf_t arn = BUF_INIT;
    char *known;
    int rc = meta_get_str(s, "config", "events_arn", &known);
    if (rc == STORE_ERR) return STORE_ERR;
    rc = topic_ensure(s, s->events_topic, known, &arn, r);
    free(known);
    if (rc == STORE_OK) {
        free(s->events_arn);
        s->events_arn = xstrdup(arn.p);
        rc = init_user_topics(s, topics, ntopics, r);
    }
    buf_free(&arn);
    if (rc == STORE_OK) rc = init_config(s, r);
    return rc;
}
