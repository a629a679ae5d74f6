/* reqstat: process-wide counts of the AWS requests this process made, per
 * service and operation ("dynamodb.PutItem", "sqs.SendMessageBatch",
 * "sns.PublishBatch", ...), plus named numeric totals other layers add
 * (lib/store.c: "dynamodb.rcu", "dynamodb.wcu" from ReturnConsumedCapacity,
 * "dynamodb.ccf" failed conditional writes).
 *
 * Every HTTP attempt lib/aws.c makes is counted (retries too), whichever
 * client made it, so a multi-threaded stage gets one total. Thread-safe.
 *
 * DELAYER_AWS_STATS=FILE: at exit (atexit, i.e. a normal return from main
 * or exit()), the process appends one JSON line to FILE:
 *   {"prog":"sns-publish","pid":123,"req":{"sns.PublishBatch":812,...},
 *    "num":{"dynamodb.wcu":1624.0,...}}
 * Unset (the default): nothing is written. The bench (bench/run) uses it to
 * count requests per schedule from the stages' own side. */
#ifndef DELAYER_REQSTAT_H
#define DELAYER_REQSTAT_H
#include <stddef.h>
#include <stdint.h>

/* One request of service ("dynamodb", "sqs", "sns") and operation (the
 * X-Amz-Target after its '.', or the query protocol's Action). */
void reqstat_request(const char *service, const char *op, size_t oplen);
/* Adds v to the named total. */
void reqstat_add(const char *name, double v);
/* Current values (0 when never counted). */
uint64_t reqstat_requests(const char *key);   /* key "service.Op" */
double reqstat_value(const char *name);
#endif
