/* awsop: what the typed operation modules (sqs.c, sns.c) share: errors
 * found on our side, and the bookkeeping of batch entries. Internal to the
 * library: callers use sqs.h and sns.h. */
#ifndef DELAYER_AWSOP_H
#define DELAYER_AWSOP_H
#include <stddef.h>
#include "aws.h"

/* Length of an entry Id as sent (AWS allows 80 characters). */
#define AWSOP_ID_MAX 88

/* Fills e (when not NULL) with a failure found before or after the call
 * (a bad argument, an unreadable reply): code, and msg made one line.
 * Returns -1, for `return awsop_fail(...)`. */
int awsop_fail(aws_err *e, const char *code, const char *msg);
/* Clears e, then refuses 0 entries and more than max, as AWS would, but
 * without a round trip: 0 or -1 (EmptyBatchRequest,
 * TooManyEntriesInBatchRequest). */
int awsop_check_batch(size_t n, size_t max, aws_err *e);
/* The Id entry i is sent with: the caller's id, or its index. */
void awsop_entry_id(char dst[AWSOP_ID_MAX], const char *id, size_t i);
/* Every result "MissingResult" until the reply names its entry: an entry
 * the reply leaves out counts as failed. */
void awsop_results_init(aws_entry_result *res, size_t n);
#endif
