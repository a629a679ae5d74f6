/* store.c: one delayer deployment (store.h): configuration, opening and
 * closing, the AWS clients, and what the other store_*.c share
 * (store_int.h): DynamoDB calls with capacity accounting, request
 * preambles, reply parsing, batch rounds, and the meta items (config,
 * store_load). The rest of store.h is in store_expr.c (expressions),
 * store_write.c (creation, transitions), store_read.c (reads, due index,
 * checkpoints, list), store_stats.c (counters, events) and store_init.c
 * (topics, init). */
#include "store_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reqstat.h"
#include "timeutil.h"

/* ================================================================ errors */

void store_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* One line in s->err; STORE_ERR, for `return store_seterr(...)`. */
int store_seterr(store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return STORE_ERR;
}

/* "<what>: <code>: <message>" of a failed call into s->err. */
int store_aws_err(store *s, const char *what, const aws_err *e)
{
    if (e->code[0]) return store_seterr(s, "%s: %s: %s", what, e->code, e->message);
    return store_seterr(s, "%s: %s", what, e->message[0] ? e->message : "request failed");
}

/* ================================================================ config, open, close */

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

/* ================================================================ clients */

/* *c, made on first use: most commands never talk to SQS or SNS. */
static aws_client *lazy_client(store *s, aws_client **c, const char *service)
{
    if (!*c) {
        char e[256];
        *c = aws_client_new(service, e, sizeof e);
        if (!*c) store_seterr(s, "%s: %s", service, e);
    }
    return *c;
}

aws_client *store_sqs(store *s)
{
    return lazy_client(s, &s->sqs, "sqs");
}

aws_client *store_sns(store *s)
{
    return lazy_client(s, &s->sns, "sns");
}

/* ================================================================ DynamoDB calls */

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

/* One DynamoDB call. On failure fills e; s->err is set unless the error is
 * a conditional check failure (the caller decides what that means). */
int store_ddb_call(store *s, const char *op, const buf_t *req, buf_t *resp, aws_err *e)
{
    char target[64];
    snprintf(target, sizeof target, "DynamoDB_20120810.%s", op);
    buf_reset(resp);
    s->err_kind = STORE_EK_OTHER;
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
        if (aws_err_is(e, "ValidationException")) s->err_kind = STORE_EK_VALIDATION;
        snprintf(what, sizeof what, "dynamodb %s", op);
        store_aws_err(s, what, e);
    }
    return -1;
}

/* ================================================================ replies and batches */

/* json_get, named for reading nested reply members (-1 propagates). */
int store_member(json_doc *d, int obj, const char *name)
{
    return json_get(d, obj, name);
}

/* Parses a reply into d; on failure d is freed and s->err reads
 * "<what>: bad reply: <why>". */
int store_parse_reply(store *s, const char *what, const buf_t *resp, json_doc *d)
{
    if (json_parse(d, resp->p, resp->len) == 0) return STORE_OK;
    store_seterr(s, "%s: bad reply: %s", what, d->err);
    json_free(d);
    return STORE_ERR;
}

/* Copies the raw JSON of token t (LastEvaluatedKey, UnprocessedKeys...)
 * into out, or empties out when t is absent or empty: the next request
 * sends it back as is. */
void store_take_raw(json_doc *d, int t, buf_t *out)
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
int store_batch_round(store *s, const char *op, int attempt, const buf_t *req, buf_t *resp, json_doc *d)
{
    aws_err e;
    char what[64];
    if (attempt > 0) store_sleep_ms(attempt > 6 ? 2000 : 25L << attempt);
    if (attempt > 12)
        return store_seterr(s, "dynamodb %s: %s still unprocessed after %d attempts", op,
                    strcmp(op, "BatchWriteItem") ? "keys" : "items", attempt);
    if (store_ddb_call(s, op, req, resp, &e) < 0) return STORE_ERR;
    snprintf(what, sizeof what, "dynamodb %s", op);
    return store_parse_reply(s, what, resp, d);
}

/* The Keys array of a BatchGetItem: {"<name>":{"S":"<key>"}} for each
 * distinct key (DynamoDB refuses a batch that names a key twice). */
void store_batch_keys(buf_t *out, const char *name, const char *const *keys, size_t n)
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

/* BatchGetItem on table of the Keys array in `pending`, retrying its
 * UnprocessedKeys until none is left; fn gets every item returned. The
 * request is {"RequestItems":{"<table>":{<pre>"Keys":<pending><post>}}}:
 * pre and post carry the other members (ConsistentRead, projection). */
int store_batch_get(store *s, const char *table, const char *pre, const char *post, buf_t *pending,
                     store_batch_item_fn fn, void *ctx)
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
        if ((rc = store_batch_round(s, "BatchGetItem", attempt, &req, &resp, &d)) != STORE_OK) break;
        int items = store_member(&d, store_member(&d, 0, "Responses"), table);
        for (int it = json_first(&d, items); it >= 0; it = json_after(&d, items, it)) fn(ctx, &d, it);
        store_take_raw(&d, store_member(&d, store_member(&d, store_member(&d, 0, "UnprocessedKeys"), table), "Keys"), pending);
        json_free(&d);
    }
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

/* ================================================================ requests and records */

/* Opens a request object on `table`: {"TableName":"<table>"... (the caller
 * closes it). */
void store_req_begin(json_w *w, buf_t *req, const char *table)
{
    jw_init(w, req);
    jw_obj(w);
    jw_key(w, "TableName");
    jw_str(w, table);
}

/* "Key":{"<name>":{"S":"<v>"}}: both tables have a single string key
 * (schedules: id, meta: k). */
void store_key_s(json_w *w, const char *name, const char *v)
{
    jw_key(w, "Key");
    jw_obj(w);
    ddbw_s(w, name, v);
    jw_obj_end(w);
}

/* ReturnValues=ALL_OLD, and on_ccf: the same on a failed condition, so one
 * round trip tells the caller the state it lost to. */
void store_return_old(json_w *w, int on_ccf)
{
    jw_key(w, "ReturnValues");
    jw_str(w, "ALL_OLD");
    if (on_ccf) {
        jw_key(w, "ReturnValuesOnConditionCheckFailure");
        jw_str(w, "ALL_OLD");
    }
}

/* GetItem request (strongly consistent) of the item keyed name = v. */
void store_get_item_req(buf_t *req, const char *table, const char *name, const char *v)
{
    json_w w;
    store_req_begin(&w, req, table);
    store_key_s(&w, name, v);
    jw_key(&w, "ConsistentRead");
    jw_bool(&w, 1);
    jw_obj_end(&w);
}

/* {"TableName":"<table>"}: the whole request of DescribeTable and
 * DescribeTimeToLive. */
void store_table_req(buf_t *req, const char *table)
{
    json_w w;
    store_req_begin(&w, req, table);
    jw_obj_end(&w);
}

/* Reads the record at token `item` of d into out (when out != NULL). */
static int read_rec(store *s, json_doc *d, int item, sched_rec *out)
{
    char e[256];
    if (!out) return 0;
    if (sched_item_read(d, item, out, e, sizeof e) < 0) {
        store_seterr(s, "dynamodb: %s", e);
        s->err_kind = STORE_EK_BADITEM;
        return STORE_ERR;
    }
    return 0;
}

/* Parses resp and reads member `member` ("Attributes", "Item") into out. */
int store_resp_rec(store *s, const buf_t *resp, const char *member, sched_rec *out, int *found)
{
    json_doc d;
    *found = 0;
    if (out) sched_rec_free(out);
    if (!resp->len) return 0;
    if (store_parse_reply(s, "dynamodb", resp, &d) < 0) return -1;
    int t = json_get(&d, 0, member);
    int rc = 0;
    if (t >= 0) {
        *found = 1;
        rc = read_rec(s, &d, t, out);
    }
    json_free(&d);
    return rc;
}

/* ================================================================ meta items */

/* GetItem of a meta item into a parsed doc (caller frees). NOTFOUND when absent. */
int store_meta_get(store *s, const char *k, json_doc *d, buf_t *resp, int *item)
{
    buf_t req = BUF_INIT;
    aws_err e;
    int rc = STORE_OK;
    memset(d, 0, sizeof *d);
    store_get_item_req(&req, s->meta, "k", k);
    if (store_ddb_call(s, "GetItem", &req, resp, &e) < 0) rc = STORE_ERR;
    else if (store_parse_reply(s, "dynamodb GetItem", resp, d) < 0) rc = STORE_ERR;
    else if ((*item = json_get(d, 0, "Item")) < 0) rc = STORE_NOTFOUND;
    buf_free(&req);
    return rc;
}

/* UpdateItem on the meta table. */
int store_meta_update(store *s, const char *k, ddx *x)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    json_w w;
    aws_err e;
    store_req_begin(&w, &req, s->meta);
    store_key_s(&w, "k", k);
    ddx_write(&w, x);
    jw_obj_end(&w);
    int rc = STORE_OK;
    if (store_ddb_call(s, "UpdateItem", &req, &resp, &e) < 0)
        rc = aws_err_is(&e, "ConditionalCheckFailedException") ? STORE_LOST : STORE_ERR;
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

/* Optional string attribute of a meta item, owned copy or NULL. */
char *store_meta_str(json_doc *d, int item, const char *name)
{
    buf_t v = BUF_INIT;
    char *r = NULL;
    if (ddb_has(d, item, name) && ddb_get_s(d, item, name, &v) == 0) r = xstrdup(buf_str(&v));
    buf_free(&v);
    return r;
}

/* The string attribute `name` of meta item k: *out gets an owned copy, or
 * NULL when the item or the attribute is absent (rc then tells which). */
int store_meta_get_str(store *s, const char *k, const char *name, char **out)
{
    json_doc d;
    buf_t resp = BUF_INIT;
    int item;
    int rc = store_meta_get(s, k, &d, &resp, &item);
    *out = rc == STORE_OK ? store_meta_str(&d, item, name) : NULL;
    json_free(&d);
    buf_free(&resp);
    return rc;
}

int store_load(store *s)
{
    json_doc d;
    buf_t resp = BUF_INIT;
    int item;
    int rc = store_meta_get(s, "config", &d, &resp, &item);
    if (rc == STORE_ERR && strstr(s->err, "ResourceNotFoundException")) rc = STORE_NOTFOUND;
    if (rc == STORE_NOTFOUND)
        store_seterr(s, "prefix: deployment \"%s\" is not initialised (run: delayer --prefix %s init)", s->prefix, s->prefix);
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
        s->queue_url = store_meta_str(&d, item, "queue_url");
        s->dlq_url = store_meta_str(&d, item, "dlq_url");
        s->events_arn = store_meta_str(&d, item, "events_arn");
        if (!s->queue_url) rc = store_seterr(s, "prefix: deployment \"%s\" has no delay queue recorded (run init again)", s->prefix);
    }
    json_free(&d);
    buf_free(&resp);
    return rc;
}
