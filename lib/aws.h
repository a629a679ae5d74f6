/* aws: one signed, retrying HTTP client per AWS service, on libcurl.
 *
 * A client keeps one curl easy handle, so the connection is kept alive and
 * reused. TLS verification is always on (there is no switch); plain http://
 * is refused unless the endpoint host is loopback (local servers).
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
 * "message"/"Message"; XML <Error><Code>/<Message>. */
#ifndef DELAYER_AWS_H
#define DELAYER_AWS_H
#include <stdint.h>
#include "buf.h"

typedef struct {
    long http_status;   /* 0 when no HTTP response arrived */
    char code[128];     /* AWS error code, e.g. "ConditionalCheckFailedException"; "" on success */
    char message[512];  /* one line */
    int attempts;       /* requests made for this call */
} aws_err;

typedef struct {
    uint64_t requests;   /* HTTP requests sent (each retry counts) */
    uint64_t retries;
    uint64_t errors;     /* calls that returned -1 */
    uint64_t throttles;
} aws_stats;

typedef struct aws_client aws_client;

/* service: "dynamodb", "sqs" or "sns". Resolves region, endpoint and the
 * credentials chain (creds.h). NULL with err on failure. */
aws_client *aws_client_new(const char *service, char *err, size_t errlen);
void aws_client_free(aws_client *c);
const char *aws_client_endpoint(const aws_client *c);
const char *aws_client_region(const aws_client *c);
const aws_stats *aws_client_stats(const aws_client *c);
void aws_client_set_max_attempts(aws_client *c, int n);
void aws_client_set_timeouts(aws_client *c, long connect_ms, long total_ms);

/* target e.g. "DynamoDB_20120810.PutItem" or "AmazonSQS.SendMessageBatch".
 * 0 on HTTP 2xx (resp holds the body), -1 otherwise (e filled, resp may hold the error body). */
int aws_json_call(aws_client *c, const char *target, const char *body, size_t len, buf_t *resp, aws_err *e);
/* form is the url-encoded body including Action= and Version=. */
int aws_query_call(aws_client *c, const char *form, size_t len, buf_t *resp, aws_err *e);

/* Appends s url-encoded (RFC 3986 unreserved kept) for form bodies. */
void aws_form_add(buf_t *form, const char *key, const char *value);

/* 1 if the error is a DynamoDB conditional check failure. */
int aws_err_is(const aws_err *e, const char *code);
#endif
