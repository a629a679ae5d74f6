/* sns.c: typed SNS calls (query protocol). Form keys follow the AWS API
 * reference exactly; replies are read with xml.h, which cannot be fooled by
 * CDATA or escaped markup in message texts. */
#include "sns.h"
#include "awsop.h"
#include "xml.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- plumbing ---------------------------------------------------------- */

/* Starts a form with Action and Version. */
static void sns_form(buf_t *f, const char *action)
{
    aws_form_add(f, "Action", action);
    aws_form_add(f, "Version", "2010-03-31");
}

/* Adds key=value where key is printf-formatted (indexed members). */
static void sns_formf(buf_t *f, const char *value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sns_formf(buf_t *f, const char *value, const char *fmt, ...)
{
    char key[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    aws_form_add(f, key, value);
}

/* Attributes.entry.N.key / .value (CreateTopic, Subscribe). */
static void sns_form_attrs(buf_t *f, const aws_kv *kv, size_t n)
{
    for (size_t i = 0; kv && i < n; i++) {
        sns_formf(f, kv[i].name, "Attributes.entry.%zu.key", i + 1);
        sns_formf(f, kv[i].value, "Attributes.entry.%zu.value", i + 1);
    }
}

/* <prefix>MessageAttributes.entry.N.Name / .Value.DataType / .Value.StringValue */
static void sns_form_msg_attrs(buf_t *f, const char *prefix, const aws_kv *kv, size_t n)
{
    for (size_t i = 0; kv && i < n; i++) {
        sns_formf(f, kv[i].name, "%sMessageAttributes.entry.%zu.Name", prefix, i + 1);
        sns_formf(f, SNS_ATTR_TYPE, "%sMessageAttributes.entry.%zu.Value.DataType", prefix, i + 1);
        sns_formf(f, kv[i].value, "%sMessageAttributes.entry.%zu.Value.StringValue", prefix, i + 1);
    }
}

static int sns_call(aws_client *c, const buf_t *form, buf_t *resp, aws_err *e)
{
    return aws_query_call(c, buf_str(form), form->len, resp, e);
}

/* Text of element `name` in the reply; -1 (InvalidReply) when absent. */
static int sns_reply_text(const buf_t *resp, const char *name, buf_t *out, aws_err *e)
{
    if (xml_text(buf_str(resp), resp->len, name, out) == 0) return 0;
    char m[160];
    snprintf(m, sizeof m, "reply has no %s", name);
    return awsop_fail(e, "InvalidReply", m);
}

/* Calls whose one result is the text of element `name` (e.g. TopicArn). */
static int sns_call_text(aws_client *c, const buf_t *form, const char *name, buf_t *out, aws_err *e)
{
    buf_t resp = BUF_INIT;
    int rc = sns_call(c, form, &resp, e);
    if (rc == 0 && out) {
        buf_reset(out);
        rc = sns_reply_text(&resp, name, out, e);
    }
    buf_free(&resp);
    return rc;
}

/* ---- topics and subscriptions -------------------------------------------- */

int sns_create_topic(aws_client *c, const char *name, const aws_kv *attrs, size_t nattrs,
                     buf_t *arn, aws_err *e)
{
    buf_t f = BUF_INIT;
    sns_form(&f, "CreateTopic");
    aws_form_add(&f, "Name", name);
    sns_form_attrs(&f, attrs, nattrs);
    int rc = sns_call_text(c, &f, "TopicArn", arn, e);
    buf_free(&f);
    return rc;
}

/* Calls taking one ARN and returning nothing of interest. */
static int sns_arn_only(aws_client *c, const char *action, const char *key, const char *arn, aws_err *e)
{
    buf_t f = BUF_INIT;
    sns_form(&f, action);
    aws_form_add(&f, key, arn);
    int rc = sns_call_text(c, &f, NULL, NULL, e);
    buf_free(&f);
    return rc;
}

int sns_delete_topic(aws_client *c, const char *topic_arn, aws_err *e)
{
    return sns_arn_only(c, "DeleteTopic", "TopicArn", topic_arn, e);
}

int sns_unsubscribe(aws_client *c, const char *sub_arn, aws_err *e)
{
    return sns_arn_only(c, "Unsubscribe", "SubscriptionArn", sub_arn, e);
}

/* <Attributes><entry><key>k</key><value>v</value></entry>...</Attributes> */
static void sns_read_attrs(const buf_t *resp, aws_pairs *out)
{
    const char *x = buf_str(resp);
    size_t as, ae, es, ee, from;
    buf_t k = BUF_INIT, v = BUF_INIT;
    if (xml_find(x, resp->len, 0, "Attributes", NULL, &as, &ae) < 0) return;
    for (from = as; xml_find(x, ae, from, "entry", NULL, &es, &ee) == 0; from = ee) {
        if (xml_find(x, ee, es, "key", &k, NULL, NULL) == 0 &&
            xml_find(x, ee, es, "value", &v, NULL, NULL) == 0)
            aws_pairs_add(out, buf_str(&k), buf_str(&v));
    }
    buf_free(&k);
    buf_free(&v);
}

int sns_get_topic_attributes(aws_client *c, const char *topic_arn, aws_pairs *out, aws_err *e)
{
    buf_t f = BUF_INIT, resp = BUF_INIT;
    sns_form(&f, "GetTopicAttributes");
    aws_form_add(&f, "TopicArn", topic_arn);
    int rc = sns_call(c, &f, &resp, e);
    if (rc == 0 && out) sns_read_attrs(&resp, out);
    buf_free(&f);
    buf_free(&resp);
    return rc;
}

int sns_subscribe(aws_client *c, const char *topic_arn, const char *protocol, const char *endpoint,
                  const aws_kv *attrs, size_t nattrs, buf_t *sub_arn, aws_err *e)
{
    buf_t f = BUF_INIT;
    sns_form(&f, "Subscribe");
    aws_form_add(&f, "TopicArn", topic_arn);
    aws_form_add(&f, "Protocol", protocol);
    aws_form_add(&f, "Endpoint", endpoint);
    /* Without it, an unconfirmed subscription answers "pending confirmation". */
    aws_form_add(&f, "ReturnSubscriptionArn", "true");
    sns_form_attrs(&f, attrs, nattrs);
    int rc = sns_call_text(c, &f, "SubscriptionArn", sub_arn, e);
    buf_free(&f);
    return rc;
}

int sns_list_topics(aws_client *c, const char *next_token, sns_topics *out, buf_t *next, aws_err *e)
{
    buf_t f = BUF_INIT, resp = BUF_INIT, v = BUF_INIT;
    sns_form(&f, "ListTopics");
    if (next_token && *next_token) aws_form_add(&f, "NextToken", next_token);
    int rc = sns_call(c, &f, &resp, e);
    const char *x = buf_str(&resp);
    size_t ts, te, ms, me, from;
    if (rc == 0 && xml_find(x, resp.len, 0, "Topics", NULL, &ts, &te) == 0) {
        for (from = ts; xml_find(x, te, from, "member", NULL, &ms, &me) == 0; from = me) {
            if (xml_find(x, me, ms, "TopicArn", &v, NULL, NULL) < 0) continue;
            out->arn = xrealloc(out->arn, (out->n + 1) * sizeof *out->arn);
            out->arn[out->n++] = xstrdup(buf_str(&v));
        }
    }
    if (next) {
        buf_reset(next);
        if (rc == 0 && xml_text(x, resp.len, "NextToken", &v) == 0) buf_adds(next, buf_str(&v));
    }
    buf_free(&f); buf_free(&resp); buf_free(&v);
    return rc;
}

void sns_topics_free(sns_topics *t)
{
    for (size_t i = 0; i < t->n; i++) free(t->arn[i]);
    free(t->arn);
    t->arn = NULL;
    t->n = 0;
}

/* ---- publishing ------------------------------------------------------------ */

int sns_publish(aws_client *c, const char *topic_arn, const char *message,
                const aws_kv *attrs, size_t nattrs, const char *group_id, const char *dedup_id,
                buf_t *message_id, aws_err *e)
{
    buf_t f = BUF_INIT;
    sns_form(&f, "Publish");
    aws_form_add(&f, "TopicArn", topic_arn);
    aws_form_add(&f, "Message", message);
    sns_form_msg_attrs(&f, "", attrs, nattrs);
    if (group_id) aws_form_add(&f, "MessageGroupId", group_id);
    if (dedup_id) aws_form_add(&f, "MessageDeduplicationId", dedup_id);
    int rc = sns_call_text(c, &f, "MessageId", message_id, e);
    buf_free(&f);
    return rc;
}

/* Index of the entry whose Id is `id`, or -1. */
static int sns_match_id(const char *id, char ids[][AWSOP_ID_MAX], size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0) return (int)i;
    return -1;
}

static void sns_copy(const char *x, size_t ms, size_t me, const char *name, char *dst, size_t cap, buf_t *tmp)
{
    if (xml_find(x, me, ms, name, tmp, NULL, NULL) == 0) {
        snprintf(dst, cap, "%s", buf_str(tmp));
        for (char *p = dst; *p; p++)
            if ((unsigned char)*p < 0x20) *p = ' ';
    }
}

/* One <member> of <Successful> (ok) or <Failed> into its entry's result. */
static void sns_read_member(const char *x, size_t ms, size_t me, int ok, char ids[][AWSOP_ID_MAX], size_t n,
                            aws_entry_result *res, buf_t *tmp)
{
    if (xml_find(x, me, ms, "Id", tmp, NULL, NULL) < 0) return;
    int i = sns_match_id(buf_str(tmp), ids, n);
    if (i < 0) return;
    aws_entry_result *r = &res[i];
    memset(r, 0, sizeof *r);
    r->ok = ok;
    if (ok) {
        sns_copy(x, ms, me, "MessageId", r->message_id, sizeof r->message_id, tmp);
        return;
    }
    sns_copy(x, ms, me, "Code", r->code, sizeof r->code, tmp);
    sns_copy(x, ms, me, "Message", r->message, sizeof r->message, tmp);
    r->sender_fault = xml_find(x, me, ms, "SenderFault", tmp, NULL, NULL) == 0 &&
                      strcmp(buf_str(tmp), "true") == 0;
}

/* Maps <Successful> and <Failed> back to results[] by Id. Entries the reply
 * does not mention are failed with code "MissingResult". */
static void sns_batch_results(const buf_t *resp, char ids[][AWSOP_ID_MAX], size_t n, aws_entry_result *res)
{
    const char *x = buf_str(resp);
    static const char *const lists[] = { "Failed", "Successful" };
    buf_t tmp = BUF_INIT;
    awsop_results_init(res, n);
    for (int l = 0; l < 2; l++) {
        size_t ls, le, ms, me, from;
        if (xml_find(x, resp->len, 0, lists[l], NULL, &ls, &le) < 0) continue;
        for (from = ls; xml_find(x, le, from, "member", NULL, &ms, &me) == 0; from = me)
            sns_read_member(x, ms, me, l == 1, ids, n, res, &tmp);
    }
    buf_free(&tmp);
}

int sns_publish_batch(aws_client *c, const char *topic_arn, const sns_publish_entry *entries,
                      size_t n, aws_entry_result *results, aws_err *e)
{
    if (awsop_check_batch(n, SNS_BATCH_MAX, e) < 0) return -1;
    char ids[SNS_BATCH_MAX][AWSOP_ID_MAX];
    buf_t f = BUF_INIT, resp = BUF_INIT;
    sns_form(&f, "PublishBatch");
    aws_form_add(&f, "TopicArn", topic_arn);
    for (size_t i = 0; i < n; i++) {
        const sns_publish_entry *en = &entries[i];
        char prefix[64];
        awsop_entry_id(ids[i], en->id, i);
        snprintf(prefix, sizeof prefix, "PublishBatchRequestEntries.member.%zu.", i + 1);
        sns_formf(&f, ids[i], "%sId", prefix);
        sns_formf(&f, en->message, "%sMessage", prefix);
        sns_form_msg_attrs(&f, prefix, en->attrs, en->nattrs);
        if (en->group_id) sns_formf(&f, en->group_id, "%sMessageGroupId", prefix);
        if (en->dedup_id) sns_formf(&f, en->dedup_id, "%sMessageDeduplicationId", prefix);
    }
    int rc = sns_call(c, &f, &resp, e);
    if (rc == 0) sns_batch_results(&resp, ids, n, results);
    buf_free(&f);
    buf_free(&resp);
    return rc;
}
