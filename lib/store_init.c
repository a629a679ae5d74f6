/* store_init.c: the deployment's AWS resources (store.h store_init and
 * store_topic_resolve): `delayer init` creates or checks the tables and
 * their indexes and TTL, the queues, the events topic and the user topics
 * (recorded as meta topic#NAME), and the config item; topic names and
 * ARNs are resolved (and cached) for --topic. */
#include "store_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sns.h"
#include "sqs.h"
#include "timeutil.h"

/* ============================================================ topics */

/* The topic cache: name or ARN -> ARN, or "!<error>" for a known miss. */
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
    if (n == 0) return store_seterr(s, "topic: empty");
    if (n + strlen(s->prefix) + 1 > 256) return store_seterr(s, "topic: name \"%s\" too long", q);
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '-' && name[i] != '_')
            return store_seterr(s, "topic: \"%s\" is neither an SNS topic ARN nor a topic name (A-Z a-z 0-9 _ -)", q);
    return STORE_OK;
}

/* An ARN: well-formed and existing (GetTopicAttributes). */
static int topic_check_arn(store *s, const char *arn)
{
    char e[256], q[96];
    aws_err ae;
    if (sched_check_topic_arn(arn, e, sizeof e) < 0) return store_seterr(s, "%s", e), STORE_NOTFOUND;
    aws_client *c = store_sns(s);
    if (!c) return STORE_ERR;
    if (sns_get_topic_attributes(c, arn, NULL, &ae) == 0) return STORE_OK;
    sched_quote(q, sizeof q, arn, 80);
    if (aws_err_is(&ae, "NotFound") || aws_err_is(&ae, "NotFoundException"))
        return store_seterr(s, "topic: no such topic %s", q), STORE_NOTFOUND;
    return store_aws_err(s, "sns GetTopicAttributes", &ae);
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
        rc = store_meta_get_str(s, k.p, "arn", &a);
        buf_free(&k);
        sched_quote(q, sizeof q, t, 60);
        if (rc == STORE_NOTFOUND || (rc == STORE_OK && !a)) {
            free(a);
            return store_seterr(s, "topic: unknown topic \"%s\" (give an ARN, or create it with: delayer init --topic %s)", q, q),
                   STORE_NOTFOUND;
        }
        if (rc != STORE_OK) return rc;
        buf_adds(arn, a);
        free(a);
    }
    return STORE_OK;
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
    store_table_req(&req, table);
    for (int tries = 0; tries < 600; tries++) {
        if (store_ddb_call(s, "DescribeTable", &req, &resp, &e) < 0) break;
        json_doc d;
        if (json_parse(&d, resp.p, resp.len) < 0) {
            store_seterr(s, "dynamodb DescribeTable: bad reply");
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
            store_seterr(s, "table %s exists without the index \"%s\" (made by something else? use another --prefix)", table,
                 want_gsi[missing]);
            break;
        }
        if (active) {
            rc = STORE_OK;
            break;
        }
        store_sleep_ms(100);
    }
    if (rc == STORE_ERR && !s->err[0]) store_seterr(s, "table %s: not ACTIVE after 60 s", table);
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
    store_req_begin(&w, &req, table);
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
    if (store_ddb_call(s, "CreateTable", &req, &resp, &e) < 0) {
        if (aws_err_is(&e, "ResourceInUseException")) rc = 0;
        else rc = store_aws_err(s, "dynamodb CreateTable", &e);
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
    store_table_req(&req, s->table);
    if (store_ddb_call(s, "DescribeTimeToLive", &req, &resp, &e) == 0 && strstr(resp.p, "\"ENABLED\"") &&
        strstr(resp.p, "\"expires\"")) {
        rc = 0;
    } else {
        buf_reset(&req);
        buf_adds(&req, "{\"TableName\":");
        json_escape(&req, s->table, strlen(s->table));
        buf_adds(&req, ",\"TimeToLiveSpecification\":{\"Enabled\":true,\"AttributeName\":\"expires\"}}");
        if (store_ddb_call(s, "UpdateTimeToLive", &req, &resp, &e) < 0) {
            if (strstr(e.message, "already enabled")) rc = 0;
            else rc = store_aws_err(s, "dynamodb UpdateTimeToLive", &e);
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
        if (sqs_set_queue_attributes(c, url->p, attrs, na, &e) < 0) return store_aws_err(s, "sqs SetQueueAttributes", &e);
        report(r, "exists", "queue", name);
        return STORE_OK;
    }
    if (!aws_err_is(&e, "QueueDoesNotExist") && !aws_err_is(&e, "NonExistentQueue"))
        return store_aws_err(s, "sqs GetQueueUrl", &e);
    if (sqs_create_queue(c, name, attrs, na, url, &e) < 0) return store_aws_err(s, "sqs CreateQueue", &e);
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
        store_aws_err(s, "sqs GetQueueAttributes", &e);
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
    if (sns_create_topic(c, name, NULL, 0, arn, &e) < 0) return store_aws_err(s, "sns CreateTopic", &e);
    report(r, "created", "topic", name);
    return STORE_OK;
}

/* PutItem of a meta item {k, attrs...} (unconditional). */
static int meta_put_s(store *s, const char *k, const char *name, const char *value)
{
    ddx x = {0};
    ddx_set_s(&x, name, value);
    int rc = store_meta_update(s, k, &x);
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
        int rc = store_meta_get_str(s, k.p, "arn", &known);
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
    store_req_begin(&w, &req, s->meta);
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
    ddx_term_fn(&x, &x.cond, "attribute_not_exists", "k");
    ddx_write(&w, &x);
    jw_obj_end(&w);
    ddx_free(&x);
    int rc = STORE_OK;
    if (store_ddb_call(s, "PutItem", &req, &resp, &e) == 0) {
        s->since_ms = now;
        report(r, "created", "config", s->meta);
    } else if (!aws_err_is(&e, "ConditionalCheckFailedException")) {
        rc = STORE_ERR;
    } else {
        ddx_set_s(&x, "queue_url", s->queue_url);
        ddx_set_s(&x, "dlq_url", s->dlq_url);
        ddx_set_s(&x, "events_arn", s->events_arn);
        if (s->given.window_ms >= 0) ddx_set_n(&x, "window_ms", s->conf.window_ms);
        if (s->given.grace_ms >= 0) ddx_set_n(&x, "grace_ms", s->conf.grace_ms);
        if (s->given.retention_s >= 0) ddx_set_n(&x, "retention_s", s->conf.retention_s);
        rc = store_meta_update(s, "config", &x);
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
    int rc = store_meta_get_str(s, "config", "events_arn", &known);
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
