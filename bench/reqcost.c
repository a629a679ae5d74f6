/* bench-reqcost: the CPU cost of one AWS request in our process, the unit
 * that every stage's cost per schedule is a multiple of. Sends N DynamoDB
 * GetItem requests (a missing key on the table given) one after another
 * and prints user+sys CPU microseconds per request and wall time.
 *   bench-reqcost TABLE [N]     (endpoint and credentials from the env) */
#include "aws.h"
#include "buf.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static double wall_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench-reqcost TABLE [N]\n");
        return 100;
    }
    long n = argc > 2 ? atol(argv[2]) : 2000;
    char err[512];
    aws_client *c = aws_client_new("dynamodb", err, sizeof err);
    if (!c) {
        fprintf(stderr, "bench-reqcost: %s\n", err);
        return 111;
    }
    buf_t body = BUF_INIT, resp = BUF_INIT;
    buf_printf(&body, "{\"TableName\":\"%s\",\"Key\":{\"id\":{\"S\":\"nope\"}}}", argv[1]);
    aws_err e;
    /* warm-up: connection, credentials */
    if (aws_json_call(c, "DynamoDB_20120810.GetItem", body.p, body.len, &resp, &e) != 0) {
        fprintf(stderr, "bench-reqcost: GetItem: %s: %s\n", e.code, e.message);
        return 111;
    }
    double c0 = cpu_us(), w0 = wall_us();
    for (long i = 0; i < n; i++) {
        if (aws_json_call(c, "DynamoDB_20120810.GetItem", body.p, body.len, &resp, &e) != 0) {
            fprintf(stderr, "bench-reqcost: GetItem: %s: %s\n", e.code, e.message);
            return 111;
        }
    }
    double c1 = cpu_us(), w1 = wall_us();
    printf("requests %ld  cpu %.1f us/request  wall %.1f us/request\n", n, (c1 - c0) / (double)n, (w1 - w0) / (double)n);
    buf_free(&body);
    buf_free(&resp);
    aws_client_free(c);
    return 0;
}
