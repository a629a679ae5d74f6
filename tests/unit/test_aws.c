/* test_aws: the AWS client (lib/aws.c) and the SQS/SNS wrappers, with no
 * real server: a tiny HTTP/1.1 server forked by the test on 127.0.0.1 plays
 * canned replies and reports every request it saw through a pipe. */
#include "t.h"
#include "aws.h"
#include "sns.h"
#include "sqs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AK "AKIDTESTKEY0123456789"
#define SK "secretTESTKEYsecretTESTKEY0123456789"
#define TOKEN "sessionTOKENsessionTOKEN0123456789"

/* One canned reply. status 0: never answer (a hung server). */
typedef struct {
    int status;
    const char *headers;   /* extra header lines, each ending in \r\n, or NULL */
    const char *body;
} reply;

static pid_t srv_pid;
static int srv_port;
static int srv_log;        /* read end of the request log pipe */

/* ---- the fake server (child side) ---------------------------------------- */

/* Reads one request (head + Content-Length body) into b; -1 at EOF. */
static int srv_read_request(int fd, buf_t *b)
{
    char chunk[4096];
    buf_reset(b);
    char *head_end = NULL;
    while (!(head_end = b->p ? strstr(b->p, "\r\n\r\n") : NULL)) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n <= 0) return -1;
        buf_add(b, chunk, (size_t)n);
    }
    size_t head = (size_t)(head_end - b->p) + 4;
    const char *cl = strcasestr(b->p, "\r\ncontent-length:");
    size_t want = head + (cl && cl < head_end ? strtoul(cl + 17, NULL, 10) : 0);
    while (b->len < want) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n <= 0) return -1;
        buf_add(b, chunk, (size_t)n);
    }
    return 0;
}

static void srv_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return;
        p += w; n -= (size_t)w;
    }
}

static void srv_answer(int fd, const reply *r)
{
    if (r->status == 0) { pause(); _exit(0); }
    buf_t out = BUF_INIT;
    const char *body = r->body ? r->body : "";
    buf_printf(&out, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n%s",
               r->status, strlen(body), r->headers ? r->headers : "", body);
    srv_write_all(fd, out.p, out.len);
    buf_free(&out);
}

/* Serves script[0], script[1], ... then the last reply forever; keep-alive. */
static void srv_child(int ls, int logfd, const reply *script, int n)
{
    buf_t req = BUF_INIT;
    int k = 0;
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) _exit(1);
        while (srv_read_request(fd, &req) == 0) {
            srv_write_all(logfd, req.p, req.len);
            srv_write_all(logfd, "\n--END--\n", 9);
            srv_answer(fd, &script[k < n ? k : n - 1]);
            k++;
        }
        close(fd);
    }
}

/* ---- the fake server (test side) ------------------------------------------ */

static void srv_start(const reply *script, int n)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1, p[2];
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 8) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0 || pipe(p) < 0) {
        perror("test server");
        exit(2);
    }
    srv_port = ntohs(a.sin_port);
    fflush(stdout);
    srv_pid = fork();
    if (srv_pid == 0) { close(p[0]); srv_child(ls, p[1], script, n); }
    close(ls);
    close(p[1]);
    srv_log = p[0];
}

/* Stops the server; the requests it saw go to log (if not NULL). */
static void srv_stop(buf_t *log)
{
    char chunk[4096];
    ssize_t n;
    kill(srv_pid, SIGKILL);
    waitpid(srv_pid, NULL, 0);
    while ((n = read(srv_log, chunk, sizeof chunk)) > 0)
        if (log) buf_add(log, chunk, (size_t)n);
    close(srv_log);
}

static int count_requests(const buf_t *log)
{
    int n = 0;
    for (const char *p = buf_str(log); (p = strstr(p, "--END--")); p += 7) n++;
    return n;
}

/* A client for service pointed at url (or the fake server when url NULL). */
static aws_client *client_at(const char *service, const char *url)
{
    char env[64], ep[128], err[256] = "";
    snprintf(env, sizeof env, "AWS_ENDPOINT_URL_%s", strcmp(service, "sqs") == 0 ? "SQS" :
             strcmp(service, "sns") == 0 ? "SNS" : "DYNAMODB");
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", srv_port);
    setenv(env, url ? url : ep, 1);
    aws_client *c = aws_client_new(service, err, sizeof err);
    if (!c) printf("# client: %s\n", err);
    return c;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- pure functions --------------------------------------------------------- */

static void test_form_add(void)
{
    buf_t f = BUF_INIT;
    aws_form_add(&f, "Action", "Publish");
    aws_form_add(&f, "Message", "a b+c=d&e~f_g.h-i/j\xC3\xA9\xE2\x82\xAC*");
    aws_form_add(&f, "Empty", "");
    aws_form_add(&f, "MessageAttributes.entry.1.Name", "k");
    CHECK_STR(buf_str(&f), "Action=Publish&Message=a%20b%2Bc%3Dd%26e~f_g.h-i%2Fj%C3%A9%E2%82%AC%2A"
                           "&Empty=&MessageAttributes.entry.1.Name=k");
    buf_free(&f);
}

static void test_parse_error_json(void)
{
    aws_err e;
    memset(&e, 0, sizeof e);
    const char *ddb = "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException\","
                      "\"Message\":\"The conditional request failed\"}";
    CHECK_INT(aws_parse_error(ddb, strlen(ddb), "application/x-amz-json-1.0", &e), 0);
    CHECK_STR(e.code, "ConditionalCheckFailedException");
    CHECK_STR(e.message, "The conditional request failed");
    CHECK(aws_err_is(&e, "ConditionalCheckFailedException"));
    CHECK(!aws_err_is(&e, "ConditionalCheckFailed"));
    const char *lite = "{\"__type\":\"com.amazon.coral.validate#ValidationException\",\"message\":\"bad\\nkey\"}";
    CHECK_INT(aws_parse_error(lite, strlen(lite), NULL, &e), 0);
    CHECK_STR(e.code, "ValidationException");
    CHECK_STR(e.message, "bad key");                     /* one line */
    const char *bare = "{\"__type\":\"ThrottlingException\"}";
    CHECK_INT(aws_parse_error(bare, strlen(bare), "application/json", &e), 0);
    CHECK_STR(e.code, "ThrottlingException");
    CHECK_STR(e.message, "");
    CHECK_INT(aws_parse_error("<html>oops", 10, "text/html", &e), -1);
    CHECK_INT(aws_parse_error("{\"__type\":", 10, NULL, &e), -1);
    CHECK_INT(aws_parse_error("", 0, NULL, &e), -1);
    CHECK_STR(e.code, "");
}

static void test_parse_error_xml(void)
{
    aws_err e;
    memset(&e, 0, sizeof e);
    const char *sns = "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
                      "  <Error><Type>Sender</Type><Code>NotFound</Code>"
                      "<Message>Topic does not exist</Message></Error>\n"
                      "  <RequestId>x</RequestId></ErrorResponse>";
    CHECK_INT(aws_parse_error(sns, strlen(sns), "text/xml", &e), 0);
    CHECK_STR(e.code, "NotFound");
    CHECK_STR(e.message, "Topic does not exist");
    /* No content type: sniffed from the first byte. A CDATA "Code" is text. */
    const char *s3 = "  <Error><Message><![CDATA[<Code>fake</Code>]]></Message><Code>SlowDown</Code></Error>";
    CHECK_INT(aws_parse_error(s3, strlen(s3), NULL, &e), 0);
    CHECK_STR(e.code, "SlowDown");
    CHECK_STR(e.message, "<Code>fake</Code>");
    const char *none = "<Error><Message>no code</Message></Error>";
    CHECK_INT(aws_parse_error(none, strlen(none), "text/xml", &e), -1);
}

static void test_err_is_query_code(void)
{
    aws_err e;
    memset(&e, 0, sizeof e);
    snprintf(e.code, sizeof e.code, "QueueDoesNotExist");
    snprintf(e.query_code, sizeof e.query_code, "AWS.SimpleQueueService.NonExistentQueue");
    CHECK(aws_err_is(&e, "QueueDoesNotExist"));
    CHECK(aws_err_is(&e, "NonExistentQueue"));
    CHECK(aws_err_is(&e, "AWS.SimpleQueueService.NonExistentQueue"));
    CHECK(!aws_err_is(&e, "Queue"));
    CHECK(!aws_err_is(NULL, "x"));
}

static void test_pairs(void)
{
    aws_pairs p = {0};
    aws_pairs_add(&p, "a", "1");
    aws_pairs_add(&p, "b", "");
    CHECK_INT(p.n, 2);
    CHECK_STR(aws_pairs_get(&p, "a"), "1");
    CHECK_STR(aws_pairs_get(&p, "b"), "");
    CHECK(aws_pairs_get(&p, "c") == NULL);
    aws_pairs_free(&p);
    CHECK(p.n == 0 && p.v == NULL);
}

/* ---- client setup --------------------------------------------------------- */

static void test_refuses_plain_http(void)
{
    char err[256] = "";
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://example.com", 1);
    CHECK(aws_client_new("dynamodb", err, sizeof err) == NULL);
    CHECK(strstr(err, "http://") != NULL);
    CHECK(strstr(err, SK) == NULL && strstr(err, AK) == NULL);
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://10.0.0.1:8000", 1);
    CHECK(aws_client_new("dynamodb", err, sizeof err) == NULL);
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "ftp://127.0.0.1", 1);
    CHECK(aws_client_new("dynamodb", err, sizeof err) == NULL);
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://user@example.com", 1);
    CHECK(aws_client_new("dynamodb", err, sizeof err) == NULL);
    /* TLS to anywhere and plain http to loopback are fine. */
    const char *ok[] = { "https://dynamodb.eu-west-1.amazonaws.com", "http://127.0.0.1:8000",
                         "http://localhost:8000", "http://[::1]:8000" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        setenv("AWS_ENDPOINT_URL_DYNAMODB", ok[i], 1);
        aws_client *c = aws_client_new("dynamodb", err, sizeof err);
        CHECK(c != NULL);
        if (c) CHECK_STR(aws_client_endpoint(c), ok[i]);
        if (c) CHECK_STR(aws_client_region(c), "us-east-1");
        aws_client_free(c);
    }
}

/* ---- retries against the fake server -------------------------------------- */

static const char THROTTLE[] = "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ThrottlingException\","
                               "\"message\":\"Rate exceeded\"}";

static void test_retry_throttle_then_ok(void)
{
    const reply script[] = {
        { 400, "Content-Type: application/x-amz-json-1.0\r\n", THROTTLE },
        { 400, "Content-Type: application/x-amz-json-1.0\r\n", THROTTLE },
        { 200, "Content-Type: application/x-amz-json-1.0\r\n", "{\"TableNames\":[]}" },
    };
    srv_start(script, 3);
    setenv("AWS_SESSION_TOKEN", TOKEN, 1);
    aws_client *c = client_at("dynamodb", NULL);
    buf_t resp = BUF_INIT, log = BUF_INIT;
    aws_err e;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.ListTables", "{}", 2, &resp, &e), 0);
        CHECK_INT(e.attempts, 3);
        CHECK_INT(e.http_status, 200);
        CHECK_STR(e.code, "");
        CHECK_STR(buf_str(&resp), "{\"TableNames\":[]}");
        const aws_stats *st = aws_client_stats(c);
        CHECK_INT(st->requests, 3);
        CHECK_INT(st->retries, 2);
        CHECK_INT(st->throttles, 2);
        CHECK_INT(st->errors, 0);
    }
    aws_client_free(c);
    unsetenv("AWS_SESSION_TOKEN");
    srv_stop(&log);
    const char *l = buf_str(&log);
    CHECK_INT(count_requests(&log), 3);
    CHECK(strstr(l, "POST / HTTP/1.1\r\n") == l);
    CHECK(strcasestr(l, "\r\nx-amz-target: DynamoDB_20120810.ListTables\r\n") != NULL);
    CHECK(strcasestr(l, "\r\ncontent-type: application/x-amz-json-1.0\r\n") != NULL);
    CHECK(strcasestr(l, "\r\nx-amz-security-token: " TOKEN "\r\n") != NULL);
    CHECK(strcasestr(l, "\r\nhost: 127.0.0.1:") != NULL);
    CHECK(strcasestr(l, "\r\nauthorization: AWS4-HMAC-SHA256 Credential=" AK "/") != NULL);
    CHECK(strstr(l, "/us-east-1/dynamodb/aws4_request, SignedHeaders="
                    "content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=") != NULL);
    CHECK(strstr(l, SK) == NULL);           /* the secret never travels */
    buf_free(&resp);
    buf_free(&log);
}

static void test_no_retry_on_validation(void)
{
    const reply script[] = {
        { 400, "Content-Type: application/x-amz-json-1.0\r\n",
          "{\"__type\":\"com.amazon.coral.validate#ValidationException\","
          "\"Message\":\"One or more parameter values were invalid\"}" },
        { 200, NULL, "{}" },
    };
    srv_start(script, 2);
    aws_client *c = client_at("dynamodb", NULL);
    buf_t resp = BUF_INIT, log = BUF_INIT;
    aws_err e;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.PutItem", "{}", 2, &resp, &e), -1);
        CHECK_INT(e.attempts, 1);
        CHECK_INT(e.http_status, 400);
        CHECK_STR(e.code, "ValidationException");
        CHECK_STR(e.message, "One or more parameter values were invalid");
        CHECK(strstr(buf_str(&resp), "ValidationException") != NULL);   /* body kept */
        CHECK_INT(aws_client_stats(c)->errors, 1);
        CHECK_INT(aws_client_stats(c)->retries, 0);
    }
    aws_client_free(c);
    srv_stop(&log);
    CHECK_INT(count_requests(&log), 1);
    CHECK(strcasestr(buf_str(&log), "x-amz-security-token") == NULL);  /* no token, no header */
    buf_free(&resp);
    buf_free(&log);
}

static void test_gives_up_on_500(void)
{
    const reply script[] = { { 500, NULL, "" } };
    srv_start(script, 1);
    aws_client *c = client_at("dynamodb", NULL);
    buf_t log = BUF_INIT;
    aws_err e;
    CHECK(c != NULL);
    if (c) {
        aws_client_set_max_attempts(c, 4);
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.GetItem", "{}", 2, NULL, &e), -1);
        CHECK_INT(e.attempts, 4);
        CHECK_INT(e.http_status, 500);
        CHECK_STR(e.code, "");
        CHECK_STR(e.message, "HTTP 500");
        CHECK_INT(aws_client_stats(c)->requests, 4);
        CHECK_INT(aws_client_stats(c)->retries, 3);
    }
    aws_client_free(c);
    srv_stop(&log);
    CHECK_INT(count_requests(&log), 4);
    buf_free(&log);
}

static void test_env_max_attempts(void)
{
    const reply script[] = { { 503, NULL, "" } };
    srv_start(script, 1);
    setenv("DELAYER_AWS_MAX_ATTEMPTS", "2", 1);
    aws_client *c = client_at("dynamodb", NULL);
    unsetenv("DELAYER_AWS_MAX_ATTEMPTS");
    aws_err e;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.GetItem", "{}", 2, NULL, NULL), -1);
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.GetItem", "{}", 2, NULL, &e), -1);
        CHECK_INT(e.attempts, 2);
        CHECK_INT(e.http_status, 503);
    }
    aws_client_free(c);
    srv_stop(NULL);
}

static void test_connection_refused_is_retried(void)
{
    /* A port nobody listens on: bind, read the port, close. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &al);
    close(s);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    aws_client *c = client_at("dynamodb", url);
    aws_err e;
    CHECK(c != NULL);
    if (c) {
        aws_client_set_max_attempts(c, 3);
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.GetItem", "{}", 2, NULL, &e), -1);
        CHECK_INT(e.attempts, 3);
        CHECK_INT(e.http_status, 0);
        CHECK(e.message[0] != '\0');
    }
    aws_client_free(c);
}

static void test_timeout_is_retried(void)
{
    const reply script[] = { { 0, NULL, NULL } };   /* never answers */
    srv_start(script, 1);
    aws_client *c = client_at("dynamodb", NULL);
    aws_err e;
    CHECK(c != NULL);
    if (c) {
        long conn, total;
        aws_client_set_timeouts(c, 500, 200);
        aws_client_get_timeouts(c, &conn, &total);
        CHECK_INT(conn, 500);
        CHECK_INT(total, 200);
        aws_client_set_max_attempts(c, 2);
        double t0 = now_s();
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.GetItem", "{}", 2, NULL, &e), -1);
        CHECK(now_s() - t0 < 3.0);
        CHECK_INT(e.attempts, 2);
        CHECK_INT(e.http_status, 0);
        CHECK(strcasestr(e.message, "timeout") != NULL || strcasestr(e.message, "timed out") != NULL);
    }
    aws_client_free(c);
    srv_stop(NULL);
}

static void test_error_message_never_has_credentials(void)
{
    const reply script[] = {
        { 403, "Content-Type: application/x-amz-json-1.0\r\n",
          "{\"__type\":\"InvalidSignatureException\",\"message\":\"The Canonical String was "
          "'x-amz-security-token:" TOKEN "' with key " SK " for " AK "\"}" },
    };
    srv_start(script, 1);
    setenv("AWS_SESSION_TOKEN", TOKEN, 1);
    aws_client *c = client_at("dynamodb", NULL);
    aws_err e;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.GetItem", "{}", 2, NULL, &e), -1);
        CHECK_INT(e.attempts, 1);
        CHECK_STR(e.code, "InvalidSignatureException");
        CHECK(strstr(e.message, TOKEN) == NULL);
        CHECK(strstr(e.message, SK) == NULL);
        CHECK(strstr(e.message, AK) == NULL);
        CHECK(strstr(e.message, "[redacted]") != NULL);
    }
    aws_client_free(c);
    unsetenv("AWS_SESSION_TOKEN");
    srv_stop(NULL);
}

/* A body over 1 KiB must not wait for "100 Continue" (curl's default). */
static void test_large_body_no_expect(void)
{
    const reply script[] = { { 200, NULL, "{}" } };
    srv_start(script, 1);
    aws_client *c = client_at("dynamodb", NULL);
    buf_t body = BUF_INIT, log = BUF_INIT;
    buf_adds(&body, "{\"k\":\"");
    for (int i = 0; i < 5000; i++) buf_addc(&body, 'x');
    buf_adds(&body, "\"}");
    CHECK(c != NULL);
    if (c) {
        double t0 = now_s();
        CHECK_INT(aws_json_call(c, "DynamoDB_20120810.PutItem", body.p, body.len, NULL, NULL), 0);
        CHECK(now_s() - t0 < 0.5);
    }
    aws_client_free(c);
    srv_stop(&log);
    CHECK(strcasestr(buf_str(&log), "expect:") == NULL);
    CHECK(strstr(buf_str(&log), body.p) != NULL);
    buf_free(&body);
    buf_free(&log);
}

static void test_sqs_query_error_header(void)
{
    const reply script[] = {
        { 400, "Content-Type: application/x-amz-json-1.0\r\n"
               "x-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue;Sender\r\n",
          "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\",\"message\":\"The specified queue does not exist.\"}" },
    };
    srv_start(script, 1);
    aws_client *c = client_at("sqs", NULL);
    buf_t url = BUF_INIT;
    aws_err e;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(sqs_get_queue_url(c, "nope", &url, &e), -1);
        CHECK_STR(e.code, "QueueDoesNotExist");
        CHECK_STR(e.query_code, "AWS.SimpleQueueService.NonExistentQueue");
        CHECK(aws_err_is(&e, "NonExistentQueue"));
        CHECK_STR(e.message, "The specified queue does not exist.");
    }
    aws_client_free(c);
    srv_stop(NULL);
    buf_free(&url);
}

/* SNS: form body, XML throttling error retried, XML result read. */
static void test_sns_query_retry_and_publish(void)
{
    const reply script[] = {
        { 400, "Content-Type: text/xml\r\n",
          "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
          "<Message>Rate exceeded</Message></Error></ErrorResponse>" },
        { 200, "Content-Type: text/xml\r\n",
          "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishResult>"
          "<MessageId>mid-1</MessageId></PublishResult></PublishResponse>" },
    };
    srv_start(script, 2);
    aws_client *c = client_at("sns", NULL);
    buf_t mid = BUF_INIT, log = BUF_INIT;
    aws_err e;
    const aws_kv attrs[] = { { "kind", "a b" }, { "n", "1" } };
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(sns_publish(c, "arn:aws:sns:us-east-1:000000000000:t", "hello world", attrs, 2,
                              NULL, NULL, &mid, &e), 0);
        CHECK_INT(e.attempts, 2);
        CHECK_STR(buf_str(&mid), "mid-1");
        CHECK_INT(aws_client_stats(c)->throttles, 1);
    }
    aws_client_free(c);
    srv_stop(&log);
    const char *l = buf_str(&log);
    CHECK(strcasestr(l, "\r\ncontent-type: application/x-www-form-urlencoded") != NULL);
    CHECK(strcasestr(l, "x-amz-target") == NULL);
    CHECK(strstr(l, "\r\n\r\nAction=Publish&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3Aus-east-1"
                    "%3A000000000000%3At&Message=hello%20world"
                    "&MessageAttributes.entry.1.Name=kind"
                    "&MessageAttributes.entry.1.Value.DataType=String"
                    "&MessageAttributes.entry.1.Value.StringValue=a%20b"
                    "&MessageAttributes.entry.2.Name=n") != NULL);
    buf_free(&mid);
    buf_free(&log);
}

static void test_sns_publish_batch_results(void)
{
    const reply script[] = {
        { 200, "Content-Type: text/xml\r\n",
          "<PublishBatchResponse><PublishBatchResult>"
          "<Successful><member><Id>c</Id><MessageId>mid-c</MessageId></member>"
          "<member><MessageId>mid-a</MessageId><Id>a</Id></member></Successful>"
          "<Failed><member><Id>b</Id><Code>InvalidParameter</Code>"
          "<Message>too &lt;long&gt;</Message><SenderFault>true</SenderFault></member></Failed>"
          "</PublishBatchResult></PublishBatchResponse>" },
    };
    srv_start(script, 1);
    aws_client *c = client_at("sns", NULL);
    buf_t log = BUF_INIT;
    aws_err e;
    const aws_kv attrs[] = { { "k", "v" } };
    const sns_publish_entry en[] = {
        { "a", "m1", attrs, 1, NULL, NULL },
        { "b", "m2", NULL, 0, "g1", "d1" },
        { "c", "m3", NULL, 0, NULL, NULL },
        { "d", "m4", NULL, 0, NULL, NULL },
    };
    aws_entry_result r[4];
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(sns_publish_batch(c, "arn:t", en, 0, r, &e), -1);
        CHECK_STR(e.code, "EmptyBatchRequest");
        CHECK_INT(sns_publish_batch(c, "arn:t", en, 4, r, &e), 0);
        CHECK(r[0].ok && strcmp(r[0].message_id, "mid-a") == 0);
        CHECK(!r[1].ok && r[1].sender_fault);
        CHECK_STR(r[1].code, "InvalidParameter");
        CHECK_STR(r[1].message, "too <long>");
        CHECK(r[2].ok && strcmp(r[2].message_id, "mid-c") == 0);
        CHECK(!r[3].ok);
        CHECK_STR(r[3].code, "MissingResult");
    }
    aws_client_free(c);
    srv_stop(&log);
    const char *l = buf_str(&log);
    CHECK(strstr(l, "&PublishBatchRequestEntries.member.1.Id=a&PublishBatchRequestEntries.member.1.Message=m1"
                    "&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name=k"
                    "&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.DataType=String"
                    "&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.StringValue=v"
                    "&PublishBatchRequestEntries.member.2.Id=b") != NULL);
    CHECK(strstr(l, "&PublishBatchRequestEntries.member.2.MessageGroupId=g1"
                    "&PublishBatchRequestEntries.member.2.MessageDeduplicationId=d1") != NULL);
    buf_free(&log);
}

static void test_sqs_batch_and_receive(void)
{
    const reply script[] = {
        { 200, NULL, "{\"Successful\":[{\"Id\":\"1\",\"MessageId\":\"m-1\",\"MD5OfMessageBody\":\"x\"}],"
                     "\"Failed\":[{\"Id\":\"0\",\"SenderFault\":true,\"Code\":\"InvalidParameterValue\","
                     "\"Message\":\"bad delay\"}]}" },
        { 200, NULL, "{\"Messages\":[{\"MessageId\":\"m-1\",\"ReceiptHandle\":\"rh\\\"1\",\"MD5OfBody\":\"x\","
                     "\"Body\":\"hello \\u00e9\",\"Attributes\":{\"ApproximateReceiveCount\":\"3\","
                     "\"SentTimestamp\":\"1700000000123\"},\"MessageAttributes\":{\"sid\":"
                     "{\"StringValue\":\"abc\",\"DataType\":\"String\"}}},"
                     "{\"MessageId\":\"m-2\",\"ReceiptHandle\":\"rh2\",\"Body\":\"\"}]}" },
        { 200, NULL, "{}" },
    };
    srv_start(script, 3);
    aws_client *c = client_at("sqs", NULL);
    buf_t log = BUF_INIT;
    aws_err e;
    const aws_kv attrs[] = { { "sid", "abc" } };
    const sqs_send_entry en[] = { { NULL, "a", 901, NULL, 0 }, { NULL, "b\"\n", 5, attrs, 1 } };
    aws_entry_result r[2];
    sqs_messages m = {0};
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(sqs_send_batch(c, "http://sqs.us-east-1.localhost:1/000/q", en, 2, r, &e), 0);
        CHECK(!r[0].ok && r[0].sender_fault);
        CHECK_STR(r[0].code, "InvalidParameterValue");
        CHECK(r[1].ok);
        CHECK_STR(r[1].message_id, "m-1");
        CHECK_INT(sqs_receive(c, "http://sqs.us-east-1.localhost:1/000/q", 10, 0, -1, &m, &e), 0);
        CHECK_INT(m.n, 2);
        if (m.n == 2) {
            CHECK_STR(m.v[0].message_id, "m-1");
            CHECK_STR(m.v[0].receipt_handle, "rh\"1");
            CHECK_STR(m.v[0].body, "hello \xC3\xA9");
            CHECK_INT(m.v[0].receive_count, 3);
            CHECK_INT(m.v[0].sent_ms, 1700000000123LL);
            CHECK_STR(aws_pairs_get(&m.v[0].attrs, "sid"), "abc");
            CHECK_STR(m.v[1].body, "");
            CHECK_INT(m.v[1].attrs.n, 0);
        }
        CHECK_INT(sqs_receive(c, "http://sqs.us-east-1.localhost:1/000/q", 1, 0, 30, &m, &e), 0);
        CHECK_INT(m.n, 0);
    }
    sqs_messages_free(&m);
    aws_client_free(c);
    srv_stop(&log);
    const char *l = buf_str(&log);
    CHECK(strstr(l, "{\"QueueUrl\":\"http://sqs.us-east-1.localhost:1/000/q\",\"Entries\":["
                    "{\"Id\":\"0\",\"MessageBody\":\"a\",\"DelaySeconds\":901},"
                    "{\"Id\":\"1\",\"MessageBody\":\"b\\\"\\n\",\"DelaySeconds\":5,\"MessageAttributes\":"
                    "{\"sid\":{\"DataType\":\"String\",\"StringValue\":\"abc\"}}}]}") != NULL);
    CHECK(strstr(l, "\"MaxNumberOfMessages\":10,\"WaitTimeSeconds\":0,\"AttributeNames\":[\"All\"],"
                    "\"MessageAttributeNames\":[\"All\"]}") != NULL);
    CHECK(strstr(l, "\"VisibilityTimeout\":30") != NULL);
    CHECK(strcasestr(l, "x-amz-target: AmazonSQS.SendMessageBatch") != NULL);
    buf_free(&log);
}

/* ---- AWS_CA_BUNDLE ------------------------------------------------------------ */

/* An unreadable bundle is named at client creation (for https endpoints;
 * plain http to loopback never reads it). */
static void test_ca_bundle_unreadable(void)
{
    char err[256] = "";
    setenv("AWS_CA_BUNDLE", "/nonexistent/ca-bundle.pem", 1);
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://127.0.0.1:1", 1);
    CHECK(aws_client_new("dynamodb", err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_CA_BUNDLE /nonexistent/ca-bundle.pem cannot be read") != NULL);
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1", 1);
    aws_client *c = aws_client_new("dynamodb", err, sizeof err);
    CHECK(c != NULL);
    aws_client_free(c);
    unsetenv("AWS_CA_BUNDLE");
}

static char ca_dir[64];

static int ca_rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

/* A self-signed certificate for 127.0.0.1 in ca_dir/NAME.pem (key NAME.key),
 * by the openssl command. -1 if that failed. */
static int make_cert(const char *name)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s/%s.key -out %s/%s.pem -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1", ca_dir, name, ca_dir, name);
    return system(cmd) == 0 ? 0 : -1;
}

/* A forked HTTPS server on 127.0.0.1 with ca_dir/server.pem: answers every
 * request with 200 "{}" and closes. */
static void tls_child(int ls)
{
    char cert[128], key[128];
    snprintf(cert, sizeof cert, "%s/server.pem", ca_dir);
    snprintf(key, sizeof key, "%s/server.key", ca_dir);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) _exit(1);
    alarm(30);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) _exit(1);
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            char req[8192];
            size_t n = 0, want = 0;
            while (n < sizeof req - 1) {
                int r = SSL_read(ssl, req + n, (int)(sizeof req - 1 - n));
                if (r <= 0) break;
                n += (size_t)r;
                req[n] = '\0';
                char *end = strstr(req, "\r\n\r\n");
                if (end && !want) {
                    const char *cl = strcasestr(req, "\r\ncontent-length:");
                    want = (size_t)(end + 4 - req) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
                }
                if (want && n >= want) break;
            }
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                                     "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
            SSL_write(ssl, ok, (int)sizeof ok - 1);
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
    }
}

/* One DynamoDB call to the TLS server; 0 when it got its 200. */
static int tls_call(int port, aws_err *e, char *err, size_t errlen)
{
    char ep[64];
    snprintf(ep, sizeof ep, "https://127.0.0.1:%d", port);
    setenv("AWS_ENDPOINT_URL_DYNAMODB", ep, 1);
    memset(e, 0, sizeof *e);
    aws_client *c = aws_client_new("dynamodb", err, errlen);
    if (!c) return -2;
    aws_client_set_max_attempts(c, 1);
    int rc = aws_json_call(c, "DynamoDB_20120810.ListTables", "{}", 2, NULL, e);
    aws_client_free(c);
    return rc;
}

/* With AWS_CA_BUNDLE naming the server's self-signed certificate the TLS
 * handshake succeeds; without it, or with another certificate, it fails
 * with a certificate error (verification stays on). */
static void test_ca_bundle_tls(void)
{
    snprintf(ca_dir, sizeof ca_dir, "/tmp/test_aws.XXXXXX");
    if (!mkdtemp(ca_dir)) { CHECK(0); return; }
    if (make_cert("server") < 0 || make_cert("other") < 0) {
        printf("# skip: the openssl command could not make a certificate\n");
        nftw(ca_dir, ca_rm, 8, FTW_DEPTH | FTW_PHYS);
        return;
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 8) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0) { CHECK(0); close(ls); return; }
    int port = ntohs(a.sin_port);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) tls_child(ls);
    close(ls);

    char err[256] = "", path[128];
    aws_err e;
    unsetenv("AWS_CA_BUNDLE");
    CHECK_INT(tls_call(port, &e, err, sizeof err), -1);
    CHECK_INT(e.http_status, 0);
    CHECK(strstr(e.message, "certificate") != NULL);

    snprintf(path, sizeof path, "%s/other.pem", ca_dir);
    setenv("AWS_CA_BUNDLE", path, 1);
    CHECK_INT(tls_call(port, &e, err, sizeof err), -1);
    CHECK(strstr(e.message, "certificate") != NULL);

    snprintf(path, sizeof path, "%s/server.pem", ca_dir);
    setenv("AWS_CA_BUNDLE", path, 1);
    int rc = tls_call(port, &e, err, sizeof err);
    CHECK_INT(rc, 0);
    if (rc) printf("# %s%s\n", err, e.message);
    CHECK_INT(e.http_status, 200);

    /* readable but not PEM: the error names the variable */
    snprintf(path, sizeof path, "%s/server.key.txt", ca_dir);
    FILE *f = fopen(path, "w");
    if (f) { fputs("not a certificate\n", f); fclose(f); }
    setenv("AWS_CA_BUNDLE", path, 1);
    CHECK_INT(tls_call(port, &e, err, sizeof err), -1);
    CHECK(strstr(e.message, "AWS_CA_BUNDLE") != NULL);

    unsetenv("AWS_CA_BUNDLE");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    nftw(ca_dir, ca_rm, 8, FTW_DEPTH | FTW_PHYS);
}

/* Before any test: dummy credentials, no profile files, no IMDS probing. */
__attribute__((constructor)) static void setup_env(void)
{
    setenv("AWS_ACCESS_KEY_ID", AK, 1);
    setenv("AWS_SECRET_ACCESS_KEY", SK, 1);
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_CA_BUNDLE");
    unsetenv("DELAYER_AWS_MAX_ATTEMPTS");
    setenv("AWS_REGION", "us-east-1", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
    setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
    signal(SIGPIPE, SIG_IGN);
}

T_MAIN(T(test_form_add), T(test_parse_error_json), T(test_parse_error_xml),
       T(test_err_is_query_code), T(test_pairs), T(test_refuses_plain_http),
       T(test_retry_throttle_then_ok), T(test_no_retry_on_validation), T(test_gives_up_on_500),
       T(test_env_max_attempts), T(test_connection_refused_is_retried), T(test_timeout_is_retried),
       T(test_error_message_never_has_credentials), T(test_large_body_no_expect),
       T(test_sqs_query_error_header), T(test_sns_query_retry_and_publish),
       T(test_sns_publish_batch_results), T(test_sqs_batch_and_receive), T(test_ca_bundle_unreadable),
       T(test_ca_bundle_tls))
