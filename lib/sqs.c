/* sqs.c: typed SQS calls (JSON protocol). Requests are built with the json.h
 * writer, so every string is escaped; replies are read with json.h. */
#include "sqs.h"
#include "awsop.h"
#include "json.h"
#include "timeutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- plumbing ---------------------------------------------------------- */

/* Sends body (a complete JSON object) to AmazonSQS.<op>. When d is given,
 * the reply is parsed into it (d refers to resp: keep resp alive). */
static int sqs_call(aws_client *c, const char *op, const buf_t *body, buf_t *resp,
                    json_doc *d, aws_err *e)
{
    char target[64];
    snprintf(target, sizeof target, "AmazonSQS.%s", op);
    if (aws_json_call(c, target, buf_str(body), body->len, resp, e) < 0) return -1;
    if (!d) return 0;
    /* An empty 200 reply is an empty result, as the SDKs read it. */
    const char *src = resp->len ? resp->p : "{}";
    size_t len = resp->len ? resp->len : 2;
    if (json_parse(d, src, len) < 0 || json_type(d, 0) != JSON_OBJ) {
        char m[200];
        snprintf(m, sizeof m, "unreadable %s reply: %s", op, d->err[0] ? d->err : "not an object");
        return awsop_fail(e, "InvalidReply", m);
    }
    return 0;
}

/* Opens the request object with its QueueUrl member. */
static void sqs_begin(json_w *w, buf_t *b, const char *queue_url)
{
    jw_init(w, b);
    jw_obj(w);
    if (queue_url) {
        jw_key(w, "QueueUrl");
        jw_str(w, queue_url);
    }
}

/* Closes the request begun in b, sends it as op and frees b: for the calls
 * whose reply carries nothing we read. */
static int sqs_end_call(aws_client *c, const char *op, json_w *w, buf_t *b, aws_err *e)
{
    jw_obj_end(w);
    int rc = sqs_call(c, op, b, NULL, NULL, e);
    buf_free(b);
    return rc;
}

/* Copies the string member `key` of object o into out; -1 if absent. */
static int sqs_get_str(json_doc *d, int o, const char *key, buf_t *out)
{
    int t = json_get(d, o, key);
    return t >= 0 && json_str(d, t, out) == 0 ? 0 : -1;
}

static char *sqs_dup_member(json_doc *d, int o, const char *key, buf_t *tmp)
{
    return xstrdup(sqs_get_str(d, o, key, tmp) == 0 ? buf_str(tmp) : "");
}

/* {"name":"value",...} from pairs (CreateQueue / SetQueueAttributes). */
static void sqs_write_kv_obj(json_w *w, const char *key, const aws_kv *kv, size_t n)
{
    jw_key(w, key);
    jw_obj(w);
    for (size_t i = 0; i < n; i++) {
        jw_key(w, kv[i].name);
        jw_str(w, kv[i].value);
    }
    jw_obj_end(w);
}

/* "MessageAttributes":{"name":{"DataType":"String","StringValue":"v"},...} */
static void sqs_write_msg_attrs(json_w *w, const aws_kv *kv, size_t n)
{
    if (!kv || n == 0) return;
    jw_key(w, "MessageAttributes");
    jw_obj(w);
    for (size_t i = 0; i < n; i++) {
        jw_key(w, kv[i].name);
        jw_obj(w);
        jw_key(w, "DataType");
        jw_str(w, "String");
        jw_key(w, "StringValue");
        jw_str(w, kv[i].value);
        jw_obj_end(w);
    }
    jw_obj_end(w);
}

/* ---- queues -------------------------------------------------------------- */

/* Shared by CreateQueue and GetQueueUrl: both answer {"QueueUrl": "..."}. */
static int sqs_queue_url_call(aws_client *c, const char *op, const buf_t *body, buf_t *url, aws_err *e)
{
    buf_t resp = BUF_INIT;
    json_doc d = {0};
    int rc = sqs_call(c, op, body, &resp, &d, e);
    if (rc == 0 && sqs_get_str(&d, 0, "QueueUrl", url) < 0)
        rc = awsop_fail(e, "InvalidReply", "reply has no QueueUrl");
    json_free(&d);
    buf_free(&resp);
    return rc;
}

int sqs_create_queue(aws_client *c, const char *name, const aws_kv *attrs, size_t nattrs,
                     buf_t *url, aws_err *e)
{
    buf_t b = BUF_INIT;
    json_w w;
    sqs_begin(&w, &b, NULL);
    jw_key(&w, "QueueName");
    jw_str(&w, name);
    if (attrs && nattrs) sqs_write_kv_obj(&w, "Attributes", attrs, nattrs);
    jw_obj_end(&w);
    int rc = sqs_queue_url_call(c, "CreateQueue", &b, url, e);
    buf_free(&b);
    return rc;
}

int sqs_get_queue_url(aws_client *c, const char *name, buf_t *url, aws_err *e)
{
    buf_t b = BUF_INIT;
    json_w w;
    sqs_begin(&w, &b, NULL);
    jw_key(&w, "QueueName");
    jw_str(&w, name);
    jw_obj_end(&w);
    int rc = sqs_queue_url_call(c, "GetQueueUrl", &b, url, e);
    buf_free(&b);
    return rc;
}

int sqs_get_queue_attributes(aws_client *c, const char *queue_url, const char *const *names,
                             size_t nnames, aws_pairs *out, aws_err *e)
{
    buf_t b = BUF_INIT, resp = BUF_INIT, k = BUF_INIT, v = BUF_INIT;
    json_w w;
    json_doc d = {0};
    sqs_begin(&w, &b, queue_url);
    jw_key(&w, "AttributeNames");
    jw_arr(&w);
    if (!names || nnames == 0) jw_str(&w, "All");
    for (size_t i = 0; names && i < nnames; i++) jw_str(&w, names[i]);
    jw_arr_end(&w);
    jw_obj_end(&w);
    int rc = sqs_call(c, "GetQueueAttributes", &b, &resp, &d, e);
    int a = rc == 0 ? json_get(&d, 0, "Attributes") : -1;
    for (int t = json_first(&d, a); t >= 0 && json_type(&d, a) == JSON_OBJ; t = json_after(&d, a, t)) {
        if (json_str(&d, t, &k) == 0 && json_str(&d, t + 1, &v) == 0)
            aws_pairs_add(out, buf_str(&k), buf_str(&v));
    }
    json_free(&d);
    buf_free(&b); buf_free(&resp); buf_free(&k); buf_free(&v);
    return rc;
}

int sqs_get_queue_attribute(aws_client *c, const char *queue_url, const char *name,
                            buf_t *value, aws_err *e)
{
    aws_pairs p = {0};
    int rc = sqs_get_queue_attributes(c, queue_url, &name, 1, &p, e);
    const char *v = rc == 0 ? aws_pairs_get(&p, name) : NULL;
    if (v) {
        buf_reset(value);
        buf_adds(value, v);
    } else if (rc == 0) {
        char m[160];
        snprintf(m, sizeof m, "queue attribute %.100s not returned", name);
        rc = awsop_fail(e, "MissingAttribute", m);
    }
    aws_pairs_free(&p);
    return rc;
}

int sqs_set_queue_attributes(aws_client *c, const char *queue_url, const aws_kv *attrs,
                             size_t nattrs, aws_err *e)
{
    buf_t b = BUF_INIT;
    json_w w;
    sqs_begin(&w, &b, queue_url);
    sqs_write_kv_obj(&w, "Attributes", attrs, nattrs);
    return sqs_end_call(c, "SetQueueAttributes", &w, &b, e);
}

/* Calls whose request is just {"QueueUrl": ...} and whose reply is empty. */
static int sqs_url_only(aws_client *c, const char *op, const char *queue_url, aws_err *e)
{
    buf_t b = BUF_INIT;
    json_w w;
    sqs_begin(&w, &b, queue_url);
    return sqs_end_call(c, op, &w, &b, e);
}

int sqs_delete_queue(aws_client *c, const char *queue_url, aws_err *e)
{
    return sqs_url_only(c, "DeleteQueue", queue_url, e);
}

int sqs_purge_queue(aws_client *c, const char *queue_url, aws_err *e)
{
    return sqs_url_only(c, "PurgeQueue", queue_url, e);
}

/* ---- batches ------------------------------------------------------------- */

/* Index of the entry whose Id is at token t, or -1. */
static int sqs_match_id(json_doc *d, int t, char ids[][AWSOP_ID_MAX], size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (json_streq(d, t, ids[i])) return (int)i;
    return -1;
}

static void sqs_copy_member(json_doc *d, int o, const char *key, char *dst, size_t cap, buf_t *tmp)
{
    if (sqs_get_str(d, o, key, tmp) == 0) snprintf(dst, cap, "%s", buf_str(tmp));
}

/* Maps "Successful" and "Failed" back to results[] by Id. Entries the reply
 * does not mention are failed with code "MissingResult". */
static void sqs_batch_results(json_doc *d, char ids[][AWSOP_ID_MAX], size_t n, aws_entry_result *res)
{
    buf_t tmp = BUF_INIT;
    awsop_results_init(res, n);
    int ok = json_get(d, 0, "Successful");
    for (int t = json_first(d, ok); t >= 0; t = json_after(d, ok, t)) {
        int i = sqs_match_id(d, json_get(d, t, "Id"), ids, n);
        if (i < 0) continue;
        memset(&res[i], 0, sizeof res[i]);
        res[i].ok = 1;
        sqs_copy_member(d, t, "MessageId", res[i].message_id, sizeof res[i].message_id, &tmp);
    }
    int bad = json_get(d, 0, "Failed");
    for (int t = json_first(d, bad); t >= 0; t = json_after(d, bad, t)) {
        int i = sqs_match_id(d, json_get(d, t, "Id"), ids, n);
        if (i < 0) continue;
        memset(&res[i], 0, sizeof res[i]);
        sqs_copy_member(d, t, "Code", res[i].code, sizeof res[i].code, &tmp);
        sqs_copy_member(d, t, "Message", res[i].message, sizeof res[i].message, &tmp);
        json_bool(d, json_get(d, t, "SenderFault"), &res[i].sender_fault);
    }
    buf_free(&tmp);
}

/* Every *Batch request is {"QueueUrl":...,"Entries":[{"Id":...,...},...]}:
 * sqs_batch_begin checks the entry count (AWS refuses 0 and more than 10,
 * so do we, early) and opens it, sqs_batch_entry opens entry i's object with its
 * Id (the caller writes the rest and closes it), sqs_batch_end closes the
 * request, sends it and maps the reply back to results[] by Id. */
static int sqs_batch_begin(json_w *w, buf_t *b, const char *queue_url, size_t n, aws_err *e)
{
    if (awsop_check_batch(n, SQS_BATCH_MAX, e) < 0) return -1;
    sqs_begin(w, b, queue_url);
    jw_key(w, "Entries");
    jw_arr(w);
    return 0;
}

static void sqs_batch_entry(json_w *w, char ids[][AWSOP_ID_MAX], size_t i, const char *id)
{
    awsop_entry_id(ids[i], id, i);
    jw_obj(w);
    jw_key(w, "Id");
    jw_str(w, ids[i]);
}

static int sqs_batch_end(aws_client *c, const char *op, json_w *w, buf_t *b, char ids[][AWSOP_ID_MAX], size_t n,
                         aws_entry_result *results, aws_err *e)
{
    buf_t resp = BUF_INIT;
    json_doc d = {0};
    jw_arr_end(w);
    jw_obj_end(w);
    int rc = sqs_call(c, op, b, &resp, &d, e);
    if (rc == 0) sqs_batch_results(&d, ids, n, results);
    json_free(&d);
    buf_free(&resp);
    buf_free(b);
    return rc;
}

/* ---- messages ------------------------------------------------------------ */

int sqs_send_message(aws_client *c, const char *queue_url, const char *body, int delay_seconds,
                     const aws_kv *attrs, size_t nattrs, buf_t *message_id, aws_err *e)
{
    buf_t b = BUF_INIT, resp = BUF_INIT;
    json_w w;
    json_doc d = {0};
    sqs_begin(&w, &b, queue_url);
    jw_key(&w, "MessageBody");
    jw_str(&w, body);
    jw_key(&w, "DelaySeconds");
    jw_i64(&w, delay_seconds);
    sqs_write_msg_attrs(&w, attrs, nattrs);
    jw_obj_end(&w);
    int rc = sqs_call(c, "SendMessage", &b, &resp, &d, e);
    if (rc == 0 && message_id && sqs_get_str(&d, 0, "MessageId", message_id) < 0)
        rc = awsop_fail(e, "InvalidReply", "SendMessage reply has no MessageId");
    json_free(&d);
    buf_free(&b);
    buf_free(&resp);
    return rc;
}

int sqs_send_batch(aws_client *c, const char *queue_url, const sqs_send_entry *entries, size_t n,
                   aws_entry_result *results, aws_err *e)
{
    char ids[SQS_BATCH_MAX][AWSOP_ID_MAX];
    buf_t b = BUF_INIT;
    json_w w;
    if (sqs_batch_begin(&w, &b, queue_url, n, e) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        sqs_batch_entry(&w, ids, i, entries[i].id);
        jw_key(&w, "MessageBody");
        jw_str(&w, entries[i].body);
        jw_key(&w, "DelaySeconds");
        jw_i64(&w, entries[i].delay_seconds);
        sqs_write_msg_attrs(&w, entries[i].attrs, entries[i].nattrs);
        jw_obj_end(&w);
    }
    return sqs_batch_end(c, "SendMessageBatch", &w, &b, ids, n, results, e);
}

/* "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}} */
static void sqs_read_msg_attrs(json_doc *d, int m, aws_pairs *out, buf_t *k, buf_t *v)
{
    int a = json_get(d, m, "MessageAttributes");
    if (json_type(d, a) != JSON_OBJ) return;
    for (int t = json_first(d, a); t >= 0; t = json_after(d, a, t)) {
        if (json_str(d, t, k) < 0) continue;
        if (sqs_get_str(d, t + 1, "StringValue", v) == 0 ||
            sqs_get_str(d, t + 1, "BinaryValue", v) == 0)
            aws_pairs_add(out, buf_str(k), buf_str(v));
    }
}

/* A system attribute ("SentTimestamp", ...) holding an integer string. */
static int64_t sqs_sys_i64(json_doc *d, int m, const char *name, buf_t *tmp)
{
    int64_t v = 0;
    int a = json_get(d, m, "Attributes");
    if (sqs_get_str(d, a, name, tmp) == 0 && json_parse_i64(buf_str(tmp), tmp->len, &v) == 0) return v;
    return 0;
}

static void sqs_read_message(json_doc *d, int m, sqs_message *out, buf_t *k, buf_t *v)
{
    memset(out, 0, sizeof *out);
    out->message_id = sqs_dup_member(d, m, "MessageId", v);
    out->receipt_handle = sqs_dup_member(d, m, "ReceiptHandle", v);
    out->body = sqs_dup_member(d, m, "Body", v);
    out->receive_count = (long)sqs_sys_i64(d, m, "ApproximateReceiveCount", v);
    out->sent_ms = sqs_sys_i64(d, m, "SentTimestamp", v);
    sqs_read_msg_attrs(d, m, &out->attrs, k, v);
}

int sqs_receive(aws_client *c, const char *queue_url, int max, int wait_seconds,
                int visibility_timeout, sqs_messages *out, aws_err *e)
{
    sqs_messages_free(out);
    buf_t b = BUF_INIT, resp = BUF_INIT, k = BUF_INIT, v = BUF_INIT;
    json_w w;
    json_doc d = {0};
    sqs_begin(&w, &b, queue_url);
    jw_key(&w, "MaxNumberOfMessages");
    jw_i64(&w, max);
    jw_key(&w, "WaitTimeSeconds");
    jw_i64(&w, wait_seconds);
    if (visibility_timeout >= 0) {
        jw_key(&w, "VisibilityTimeout");
        jw_i64(&w, visibility_timeout);
    }
    jw_key(&w, "AttributeNames");
    jw_arr(&w); jw_str(&w, "All"); jw_arr_end(&w);
    jw_key(&w, "MessageAttributeNames");
    jw_arr(&w); jw_str(&w, "All"); jw_arr_end(&w);
    jw_obj_end(&w);
    /* A long poll must not hit the client's total timeout: raise it for
     * this call only. */
    long conn, total, need = (long)wait_seconds * 1000 + 10000;
    aws_client_get_timeouts(c, &conn, &total);
    if (total < need) aws_client_set_timeouts(c, conn, need);
    int rc = sqs_call(c, "ReceiveMessage", &b, &resp, &d, e);
    int64_t received = time_now_ms();
    aws_client_set_timeouts(c, conn, total);
    int msgs = rc == 0 ? json_get(&d, 0, "Messages") : -1;
    int nm = json_type(&d, msgs) == JSON_ARR ? json_size(&d, msgs) : 0;
    if (nm > 0) out->v = xcalloc((size_t)nm, sizeof *out->v);
    for (int t = json_first(&d, msgs); t >= 0 && (int)out->n < nm; t = json_after(&d, msgs, t))
        sqs_read_message(&d, t, &out->v[out->n++], &k, &v);
    for (size_t i = 0; i < out->n; i++) out->v[i].received_ms = received;
    json_free(&d);
    buf_free(&b); buf_free(&resp); buf_free(&k); buf_free(&v);
    return rc;
}

void sqs_messages_free(sqs_messages *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].message_id);
        free(m->v[i].receipt_handle);
        free(m->v[i].body);
        aws_pairs_free(&m->v[i].attrs);
    }
    free(m->v);
    m->v = NULL;
    m->n = 0;
}

/* ---- receipts ------------------------------------------------------------ */

int sqs_delete_message(aws_client *c, const char *queue_url, const char *receipt_handle, aws_err *e)
{
    buf_t b = BUF_INIT;
    json_w w;
    sqs_begin(&w, &b, queue_url);
    jw_key(&w, "ReceiptHandle");
    jw_str(&w, receipt_handle);
    return sqs_end_call(c, "DeleteMessage", &w, &b, e);
}

int sqs_change_visibility(aws_client *c, const char *queue_url, const char *receipt_handle,
                          int seconds, aws_err *e)
{
    buf_t b = BUF_INIT;
    json_w w;
    sqs_begin(&w, &b, queue_url);
    jw_key(&w, "ReceiptHandle");
    jw_str(&w, receipt_handle);
    jw_key(&w, "VisibilityTimeout");
    jw_i64(&w, seconds);
    return sqs_end_call(c, "ChangeMessageVisibility", &w, &b, e);
}

/* DeleteMessageBatch and ChangeMessageVisibilityBatch share their shape. */
static int sqs_handle_batch(aws_client *c, const char *op, int with_visibility, const char *queue_url,
                            const sqs_handle_entry *entries, size_t n, aws_entry_result *results,
                            aws_err *e)
{
    char ids[SQS_BATCH_MAX][AWSOP_ID_MAX];
    buf_t b = BUF_INIT;
    json_w w;
    if (sqs_batch_begin(&w, &b, queue_url, n, e) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        sqs_batch_entry(&w, ids, i, entries[i].id);
        jw_key(&w, "ReceiptHandle");
        jw_str(&w, entries[i].receipt_handle);
        if (with_visibility) {
            jw_key(&w, "VisibilityTimeout");
            jw_i64(&w, entries[i].visibility_timeout);
        }
        jw_obj_end(&w);
    }
    return sqs_batch_end(c, op, &w, &b, ids, n, results, e);
}

int sqs_delete_batch(aws_client *c, const char *queue_url, const sqs_handle_entry *entries, size_t n,
                     aws_entry_result *results, aws_err *e)
{
    return sqs_handle_batch(c, "DeleteMessageBatch", 0, queue_url, entries, n, results, e);
}

int sqs_change_visibility_batch(aws_client *c, const char *queue_url, const sqs_handle_entry *entries,
                                size_t n, aws_entry_result *results, aws_err *e)
{
    return sqs_handle_batch(c, "ChangeMessageVisibilityBatch", 1, queue_url, entries, n, results, e);
}
