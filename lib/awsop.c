/* awsop.c: helpers shared by sqs.c and sns.c (see awsop.h). */
#include "awsop.h"

#include <stdio.h>
#include <string.h>

int awsop_fail(aws_err *e, const char *code, const char *msg)
{
    if (!e) return -1;
    snprintf(e->code, sizeof e->code, "%s", code);
    snprintf(e->message, sizeof e->message, "%s", msg);
    for (char *p = e->message; *p; p++)
        if ((unsigned char)*p < 0x20) *p = ' ';
    return -1;
}

int awsop_check_batch(size_t n, size_t max, aws_err *e)
{
    if (e) memset(e, 0, sizeof *e);
    if (n == 0) return awsop_fail(e, "EmptyBatchRequest", "a batch needs at least one entry");
    if (n > max) {
        char m[64];
        snprintf(m, sizeof m, "a batch holds at most %zu entries", max);
        return awsop_fail(e, "TooManyEntriesInBatchRequest", m);
    }
    return 0;
}

void awsop_entry_id(char dst[AWSOP_ID_MAX], const char *id, size_t i)
{
    if (id) snprintf(dst, AWSOP_ID_MAX, "%s", id);
    else snprintf(dst, AWSOP_ID_MAX, "%zu", i);
}

void awsop_results_init(aws_entry_result *res, size_t n)
{
    memset(res, 0, n * sizeof *res);
    for (size_t i = 0; i < n; i++) {
        snprintf(res[i].code, sizeof res[i].code, "MissingResult");
        snprintf(res[i].message, sizeof res[i].message, "entry not in the batch reply");
    }
}
