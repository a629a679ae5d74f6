/* sns: typed SNS calls over aws_query_call (query protocol, Version
 * 2010-03-31: form-encoded request, XML reply read with xml.h).
 *
 * The client is an aws_client_new("sns", ...). Every function returns 0, or
 * -1 with e filled (e may be NULL). Batch calls return 0 when the call itself
 * succeeded: look at each entry's aws_entry_result (results[i] belongs to
 * entries[i]). */
#ifndef DELAYER_SNS_H
#define DELAYER_SNS_H
#include <stddef.h>
#include "aws.h"

#define SNS_BATCH_MAX 10     /* entries per PublishBatch */
#define SNS_MSG_MAX   262144 /* one message: body + each attribute's name, DataType and value */
#define SNS_ATTR_TYPE "String" /* the DataType of every message attribute we send */

/* One PublishBatch entry. id: unique in the batch ([A-Za-z0-9_-], <= 80
 * chars); NULL means the entry's index ("0".."9"). */
typedef struct {
    const char *id;
    const char *message;
    const aws_kv *attrs;     /* String message attributes, may be NULL */
    size_t nattrs;
    const char *group_id;    /* FIFO topics: MessageGroupId, else NULL */
    const char *dedup_id;    /* FIFO topics: MessageDeduplicationId, else NULL */
} sns_publish_entry;

/* A page of topic ARNs (owned; free with sns_topics_free). */
typedef struct {
    char **arn;
    size_t n;
} sns_topics;

/* CreateTopic (idempotent for the same name and attributes, e.g.
 * FifoTopic=true); the topic's ARN in arn. */
int sns_create_topic(aws_client *c, const char *name, const aws_kv *attrs, size_t nattrs,
                     buf_t *arn, aws_err *e);
/* DeleteTopic (succeeds for a topic that does not exist, as AWS does). */
int sns_delete_topic(aws_client *c, const char *topic_arn, aws_err *e);
/* GetTopicAttributes, appended to out (out may be NULL: an existence check;
 * a missing topic is -1 with code "NotFound"). */
int sns_get_topic_attributes(aws_client *c, const char *topic_arn, aws_pairs *out, aws_err *e);
/* Subscribe protocol ("sqs", "https", ...) endpoint (a queue ARN, a URL)
 * with attributes (e.g. RawMessageDelivery=true, FilterPolicy); the
 * SubscriptionArn in sub_arn (ReturnSubscriptionArn=true). */
int sns_subscribe(aws_client *c, const char *topic_arn, const char *protocol, const char *endpoint,
                  const aws_kv *attrs, size_t nattrs, buf_t *sub_arn, aws_err *e);
/* Unsubscribe. */
int sns_unsubscribe(aws_client *c, const char *sub_arn, aws_err *e);
/* ListTopics: one page. next_token NULL or "" for the first; next gets the
 * token of the following page ("" after the last). out is appended to. */
int sns_list_topics(aws_client *c, const char *next_token, sns_topics *out, buf_t *next, aws_err *e);
void sns_topics_free(sns_topics *t);

/* Publish one message with String attributes; group_id / dedup_id for FIFO
 * topics (else NULL). message_id (may be NULL) gets the MessageId. */
int sns_publish(aws_client *c, const char *topic_arn, const char *message,
                const aws_kv *attrs, size_t nattrs, const char *group_id, const char *dedup_id,
                buf_t *message_id, aws_err *e);
/* PublishBatch of 1..10 entries; results[n] gets each outcome (MessageId when ok). */
int sns_publish_batch(aws_client *c, const char *topic_arn, const sns_publish_entry *entries,
                      size_t n, aws_entry_result *results, aws_err *e);
#endif
