/* aws-call: one signed AWS call through the project's own client (lib/aws.c),
 * for debugging and for tests.
 *
 *   aws-call dynamodb|sqs OPERATION [BODY|-]     JSON body ("-" = stdin, default "{}")
 *   aws-call sns OPERATION [key=value ...]        query-protocol form parameters
 *
 * Prints the response body on stdout and exits 0. On an AWS error prints one
 * line "aws-call: <Code>: <message>" on stderr and exits 1. Usage errors exit
 * 100, a client that cannot be created (no region, no credentials, refused
 * endpoint) exits 111. Credentials are never printed. */
#include "aws.h"
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DELAYER_VERSION
#define DELAYER_VERSION "dev"
#endif

#define EXIT_USAGE 100
#define EXIT_CLIENT 111

static void usage(FILE *f)
{
    fputs("usage: aws-call dynamodb|sqs OPERATION [BODY|-]\n"
          "       aws-call sns OPERATION [key=value ...]\n"
          "       aws-call --help | --version\n"
          "\n"
          "Makes one signed, retried AWS call and prints the response body.\n"
          "  dynamodb, sqs  AWS JSON 1.0: BODY is the JSON request (\"-\" reads stdin,\n"
          "                 default \"{}\"); OPERATION e.g. PutItem, SendMessage\n"
          "  sns            query protocol: key=value form parameters; OPERATION e.g.\n"
          "                 Publish TopicArn=arn:... Message=hi\n"
          "\n"
          "Environment: AWS_REGION, AWS_ENDPOINT_URL[_<SERVICE>], the usual AWS\n"
          "credential variables and files, DELAYER_AWS_MAX_ATTEMPTS.\n"
          "Exit: 0 ok, 1 AWS or HTTP error, 100 usage, 111 client setup failed.\n", f);
}

/* Reads all of stdin into b. */
static int read_stdin(buf_t *b)
{
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) buf_add(b, chunk, n);
    return ferror(stdin) ? -1 : 0;
}

/* The JSON-protocol target prefix of a service, or NULL. */
static const char *json_prefix(const char *service)
{
    if (strcmp(service, "dynamodb") == 0) return "DynamoDB_20120810";
    if (strcmp(service, "sqs") == 0) return "AmazonSQS";
    return NULL;
}

/* Builds the request body; 0, or an exit status. */
static int build_body(const char *service, const char *op, int argc, char **argv, buf_t *body)
{
    if (strcmp(service, "sns") == 0) {
        aws_form_add(body, "Action", op);
        aws_form_add(body, "Version", "2010-03-31");
        for (int i = 0; i < argc; i++) {
            const char *eq = strchr(argv[i], '=');
            if (!eq || eq == argv[i]) {
                fprintf(stderr, "aws-call: sns parameters are key=value, got \"%s\"\n", argv[i]);
                return EXIT_USAGE;
            }
            char *key = xstrndup(argv[i], (size_t)(eq - argv[i]));
            aws_form_add(body, key, eq + 1);
            free(key);
        }
        return 0;
    }
    if (argc > 1) {
        fputs("aws-call: at most one BODY argument\n", stderr);
        return EXIT_USAGE;
    }
    if (argc == 0) buf_adds(body, "{}");
    else if (strcmp(argv[0], "-") == 0) {
        if (read_stdin(body) < 0) { perror("aws-call: stdin"); return EXIT_USAGE; }
    } else buf_adds(body, argv[0]);
    return 0;
}

/* Sends the call and prints its outcome; the exit status. */
static int call(aws_client *c, const char *service, const char *op, const buf_t *body)
{
    buf_t resp = BUF_INIT;
    aws_err e;
    int rc;
    if (strcmp(service, "sns") == 0) {
        rc = aws_query_call(c, buf_str(body), body->len, &resp, &e);
    } else {
        char target[160];
        snprintf(target, sizeof target, "%s.%s", json_prefix(service), op);
        rc = aws_json_call(c, target, buf_str(body), body->len, &resp, &e);
    }
    if (rc == 0) {
        fwrite(buf_str(&resp), 1, resp.len, stdout);
        if (resp.len && resp.p[resp.len - 1] != '\n') putchar('\n');
    } else if (e.code[0]) {
        fprintf(stderr, "aws-call: %s: %s\n", e.code, e.message);
    } else if (e.http_status) {
        fprintf(stderr, "aws-call: HTTP %ld: %s\n", e.http_status, e.message);
    } else {
        fprintf(stderr, "aws-call: %s\n", e.message);
    }
    buf_free(&resp);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--help") == 0) { usage(stdout); return 0; }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("aws-call %s\n", DELAYER_VERSION);
        return 0;
    }
    if (argc < 3 || argv[1][0] == '-' || argv[2][0] == '\0') { usage(stderr); return EXIT_USAGE; }
    const char *service = argv[1], *op = argv[2];
    if (!json_prefix(service) && strcmp(service, "sns") != 0) {
        fprintf(stderr, "aws-call: unknown service \"%s\" (dynamodb, sqs, sns)\n", service);
        return EXIT_USAGE;
    }
    buf_t body = BUF_INIT;
    int rc = build_body(service, op, argc - 3, argv + 3, &body);
    if (rc == 0) {
        char err[256] = "";
        aws_client *c = aws_client_new(service, err, sizeof err);
        if (!c) {
            fprintf(stderr, "aws-call: %s\n", err);
            rc = EXIT_CLIENT;
        } else {
            rc = call(c, service, op, &body);
            aws_client_free(c);
        }
    }
    buf_free(&body);
    if (fflush(stdout) != 0 && rc == 0) { perror("aws-call: stdout"); rc = 1; }
    return rc;
}
