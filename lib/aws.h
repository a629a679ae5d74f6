/* aws: one signed, retrying HTTP client per AWS service, on libcurl.
 *
 * A client keeps one curl easy handle, so the connection is kept alive and
 * reused. A client is not thread-safe: use one per thread. TLS verification
 * is always on (there is no switch); plain http:// is refused unless the
 * endpoint host is loopback (local servers).
 *
 * Retries: throttling errors (ThrottlingException, Throttling,
 * ProvisionedThroughputExceededException, RequestLimitExceeded,
 * TooManyRequestsException, RequestThrottled, SlowDown,
 * TransactionInProgressException, LimitExceededException when HTTP 400 throttle-like),
 * HTTP 5xx and connection/timeouts are retried with exponential back-off and
 * full jitter (base 25 ms, cap 5 s) up to max_attempts (default 8,
 * DELAYER_AWS_MAX_ATTEMPTS). Other errors come back at once.
 *
 * Protocols:
 *   aws_json_call:  POST /, application/x-amz-json-1.0, X-Amz-Target (DynamoDB, SQS)
 *   aws_query_call: POST /, application/x-www-form-urlencoded, XML reply (SNS)
 * Errors are parsed from either: JSON "__type" (text after '#') and
 * "message"/"Message"; XML <Error><Code>/<Message>. SQS's JSON protocol also
 * sends the legacy query-protocol code in the header x-amzn-query-error
 * ("AWS.SimpleQueueService.NonExistentQueue;Sender"): it goes to query_code.
 * Error messages are one line and never contain the credentials in use.
 * The library is silent: it never writes to stdout or stderr. */
#ifndef DELAYER_AWS_H
#define DELAYER_AWS_H
#include <stddef.h>
#include <stdint.h>
#include "buf.h"

typedef struct {
    long http_status;   /* 0 when no HTTP response arrived */
    char code[128];     /* AWS error code, e.g. "ConditionalCheckFailedException"; "" on success */
    char message[512];  /* one line */
    char query_code[128]; /* SQS JSON only: legacy code from x-amzn-query-error, else "" */
    int attempts;       /* requests made for this call */
} aws_err;

/* A borrowed name/value string pair (request attributes). */
typedef struct {
    const char *name;
    const char *value;
} aws_kv;

/* An owned list of name/value strings (response attributes). */
typedef struct {
    struct aws_pair { char *name; char *value; } *v;
    size_t n;
} aws_pairs;

/* Outcome of one entry of a batch call (SendMessageBatch, PublishBatch, ...). */
typedef struct {
    int ok;               /* 1 succeeded, 0 failed */
    int sender_fault;     /* failed: 1 if the entry itself is at fault (resending as is fails again) */
    char message_id[128]; /* ok: MessageId when the operation returns one, else "" */
    char code[128];       /* failed: error code */
    char message[256];    /* failed: one line */
} aws_entry_result;

typedef struct {
    uint64_t requests;   /* HTTP requests sent (each retry counts) */
    uint64_t retries;
    uint64_t errors;     /* calls that returned -1 */
    uint64_t throttles;
} aws_stats;

typedef struct aws_client aws_client;

/* Metrics hook (lib/stage.c sets it with --metrics; unset, nothing is
 * called): after every HTTP attempt of any client, with the service
 * ("sns"), the operation (op, oplen: "PublishBatch"), the attempt's outcome
 * ("ok", "throttled", "client_error" 4xx, "server_error" 5xx,
 * "network_error" no HTTP reply, "credentials_error" no request sent) and
 * whether the call tries again after it (retried). Called on the calling
 * thread: it must be thread-safe. */
typedef void (*aws_attempt_hook)(const char *service, const char *op, size_t oplen,
                                 const char *outcome, int retried);
void aws_set_attempt_hook(aws_attempt_hook hook);

/* service: "dynamodb", "sqs" or "sns". Resolves region, endpoint and the
 * credentials chain (creds.h). NULL with err on failure. */
aws_client *aws_client_new(const char *service, char *err, size_t errlen);
void aws_client_free(aws_client *c);
const char *aws_client_endpoint(const aws_client *c);
const char *aws_client_region(const aws_client *c);
const aws_stats *aws_client_stats(const aws_client *c);
void aws_client_set_max_attempts(aws_client *c, int n);
void aws_client_set_timeouts(aws_client *c, long connect_ms, long total_ms);
/* Current timeouts (defaults 3000 / 30000 ms), e.g. to raise total_ms around
 * an SQS long poll and restore it afterwards. */
void aws_client_get_timeouts(const aws_client *c, long *connect_ms, long *total_ms);

/* target e.g. "DynamoDB_20120810.PutItem" or "AmazonSQS.SendMessageBatch".
 * 0 on HTTP 2xx (resp holds the body), -1 otherwise (e filled, resp may hold the error body). */
int aws_json_call(aws_client *c, const char *target, const char *body, size_t len, buf_t *resp, aws_err *e);
/* form is the url-encoded body including Action= and Version=. */
int aws_query_call(aws_client *c, const char *form, size_t len, buf_t *resp, aws_err *e);

/* Appends "key=value" to a form body, with '&' first unless the form is
 * empty; both url-encoded (RFC 3986 unreserved kept, space -> %20). */
void aws_form_add(buf_t *form, const char *key, const char *value);

/* 1 if the error's code (or its SQS query_code, with or without the
 * "AWS.SimpleQueueService." prefix) equals code, e.g.
 * aws_err_is(e, "ConditionalCheckFailedException"). */
int aws_err_is(const aws_err *e, const char *code);

/* Parses an AWS error body (JSON or XML, chosen by content_type, else by the
 * first byte) into e->code and e->message; other fields are left alone.
 * 0 if a code was found, -1 otherwise (e->code "" then). */
int aws_parse_error(const char *body, size_t n, const char *content_type, aws_err *e);

/* aws_pairs helpers: append copies; value of name or NULL; free (re-initialises). */
void aws_pairs_add(aws_pairs *p, const char *name, const char *value);
const char *aws_pairs_get(const aws_pairs *p, const char *name);
void aws_pairs_free(aws_pairs *p);
#endif
