/* sqs: typed SQS calls over aws_json_call (AWS JSON 1.0, "AmazonSQS.<Op>").
 *
 * The client is an aws_client_new("sqs", ...). Every request goes to the
 * client's endpoint; a queue_url is passed in the body exactly as the server
 * returned it (fauxqs returns URLs whose host does not resolve).
 * Every function returns 0, or -1 with e filled (e may be NULL).
 * Batch calls return 0 when the call itself succeeded: look at each entry's
 * aws_entry_result (results[i] belongs to entries[i]). */
#ifndef DELAYER_SQS_H
#define DELAYER_SQS_H
#include <stddef.h>
#include <stdint.h>
#include "aws.h"

#define SQS_BATCH_MAX 10     /* entries per *Batch call */
#define SQS_RECEIVE_MAX 10   /* messages per ReceiveMessage */
#define SQS_WAIT_MAX 20      /* long-poll seconds */
#define SQS_DELAY_MAX 900    /* DelaySeconds */

/* One received message; every string is owned (freed by sqs_messages_free). */
typedef struct {
    char *message_id;
    char *receipt_handle;
    char *body;
    long receive_count;      /* ApproximateReceiveCount, 0 if absent */
    int64_t sent_ms;         /* SentTimestamp (ms since the epoch), 0 if absent */
    int64_t received_ms;     /* when the ReceiveMessage reply arrived (ms since the epoch):
                              * the message's visibility timeout runs from about then */
    aws_pairs attrs;         /* message attributes: name -> StringValue (String/Number types) */
} sqs_message;

typedef struct {
    sqs_message *v;
    size_t n;
} sqs_messages;

/* One SendMessageBatch entry. id: unique in the batch ([A-Za-z0-9_-], <= 80
 * chars); NULL means the entry's index ("0".."9"). */
typedef struct {
    const char *id;
    const char *body;
    int delay_seconds;       /* 0..900 (checked by the server) */
    const aws_kv *attrs;     /* String message attributes, may be NULL */
    size_t nattrs;
} sqs_send_entry;

/* One DeleteMessageBatch / ChangeMessageVisibilityBatch entry (id as above). */
typedef struct {
    const char *id;
    const char *receipt_handle;
    int visibility_timeout;  /* ChangeMessageVisibilityBatch only: seconds */
} sqs_handle_entry;

/* CreateQueue (idempotent when the attributes match); the queue's URL in url. */
int sqs_create_queue(aws_client *c, const char *name, const aws_kv *attrs, size_t nattrs,
                     buf_t *url, aws_err *e);
/* GetQueueUrl: the URL of an existing queue (QueueDoesNotExist otherwise). */
int sqs_get_queue_url(aws_client *c, const char *name, buf_t *url, aws_err *e);
/* GetQueueAttributes for the given names (NULL/0 = "All"); appended to out. */
int sqs_get_queue_attributes(aws_client *c, const char *queue_url, const char *const *names,
                             size_t nnames, aws_pairs *out, aws_err *e);
/* One attribute (e.g. "QueueArn"); -1 with code "MissingAttribute" if not returned. */
int sqs_get_queue_attribute(aws_client *c, const char *queue_url, const char *name,
                            buf_t *value, aws_err *e);
/* SetQueueAttributes (e.g. VisibilityTimeout, RedrivePolicy, Policy). */
int sqs_set_queue_attributes(aws_client *c, const char *queue_url, const aws_kv *attrs,
                             size_t nattrs, aws_err *e);
/* DeleteQueue. */
int sqs_delete_queue(aws_client *c, const char *queue_url, aws_err *e);
/* PurgeQueue (AWS allows one per 60 s per queue). */
int sqs_purge_queue(aws_client *c, const char *queue_url, aws_err *e);

/* SendMessage; message_id (may be NULL) gets the new MessageId. */
int sqs_send_message(aws_client *c, const char *queue_url, const char *body, int delay_seconds,
                     const aws_kv *attrs, size_t nattrs, buf_t *message_id, aws_err *e);
/* SendMessageBatch of 1..10 entries; results[n] gets each outcome (MessageId when ok). */
int sqs_send_batch(aws_client *c, const char *queue_url, const sqs_send_entry *entries, size_t n,
                   aws_entry_result *results, aws_err *e);

/* ReceiveMessage: up to max (1..10) messages, long-polling wait_seconds
 * (0..20); visibility_timeout < 0 keeps the queue's default. out (initialise
 * it to {0} once) is freed and emptied first, then holds 0..max messages:
 * free with sqs_messages_free.
 * The client's total timeout is raised for the call when the poll needs it. */
int sqs_receive(aws_client *c, const char *queue_url, int max, int wait_seconds,
                int visibility_timeout, sqs_messages *out, aws_err *e);
void sqs_messages_free(sqs_messages *m);

/* DeleteMessage. */
int sqs_delete_message(aws_client *c, const char *queue_url, const char *receipt_handle, aws_err *e);
/* DeleteMessageBatch of 1..10 entries (visibility_timeout ignored). */
int sqs_delete_batch(aws_client *c, const char *queue_url, const sqs_handle_entry *entries, size_t n,
                     aws_entry_result *results, aws_err *e);
/* ChangeMessageVisibility: the message reappears after seconds (0 = now). */
int sqs_change_visibility(aws_client *c, const char *queue_url, const char *receipt_handle,
                          int seconds, aws_err *e);
/* ChangeMessageVisibilityBatch of 1..10 entries. */
int sqs_change_visibility_batch(aws_client *c, const char *queue_url, const sqs_handle_entry *entries,
                                size_t n, aws_entry_result *results, aws_err *e);
#endif
