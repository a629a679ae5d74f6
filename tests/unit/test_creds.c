/* test_creds: the credentials chain, region, endpoints and loopback check.
 * Container and IMDS credentials are served by a tiny HTTP server forked by
 * the test on 127.0.0.1 (port 0); it logs each request it answers, and
 * whether the header it expected was there, to a pipe. Files live in a
 * temporary directory (HOME points there too, so ~/.aws is never the real one). */
#include "t.h"
#include "creds.h"
#include "sigv4.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- temp dir and environment ---- */

static char tmp_root[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static void tmp_cleanup(void)
{
    if (tmp_root[0]) nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tmpdir(void)
{
    if (!tmp_root[0]) {
        snprintf(tmp_root, sizeof tmp_root, "/tmp/test_creds.XXXXXX");
        if (!mkdtemp(tmp_root)) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(tmp_cleanup);
    }
    return tmp_root;
}

static const char *tpath(const char *name)
{
    static char p[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir(), name);
    return p[k];
}

static void write_file(const char *name, const char *text)
{
    FILE *f = fopen(tpath(name), "w");
    if (!f) {
        perror(name);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static void clear_env(void)
{
    static const char *vars[] = {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
        "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SNS", "AWS_ENDPOINT_URL_MY_SERVICE",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_DEFAULT_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_ENDPOINT_URL_STS",
        "AWS_CA_BUNDLE",
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
    setenv("HOME", tmpdir(), 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", tpath("no-credentials"), 1);
    setenv("AWS_CONFIG_FILE", tpath("no-config"), 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
}

/* ---- the test HTTP server ---- */

typedef struct {
    const char *method, *path;
    int status;
    const char *body;
    const char *need;   /* "Name: value" the request must carry, or NULL */
} route;

typedef struct {
    pid_t pid;
    int port;
    int logfd;
} srv;

static int has_header(const char *req, const char *need)
{
    const char *colon = strchr(need, ':');
    size_t nl = (size_t)(colon - need);
    const char *want = colon + 1;
    while (*want == ' ') want++;
    const char *p = strstr(req, "\r\n");
    while (p && p[2] && !(p[2] == '\r' && p[3] == '\n')) {
        const char *line = p + 2, *e = strstr(line, "\r\n");
        if (!e) break;
        if ((size_t)(e - line) > nl && line[nl] == ':' && !strncasecmp(line, need, nl)) {
            const char *v = line + nl + 1;
            while (*v == ' ') v++;
            if ((size_t)(e - v) == strlen(want) && !strncmp(v, want, strlen(want))) return 1;
            return 0;
        }
        p = e;
    }
    return 0;
}

/* When set (before srv_start), the server appends every request it reads,
 * head and body, to this file, each followed by a line "--END--". */
static const char *srv_dump;

static void serve(int ls, const route *routes, int nroutes, int nreq, int logfd)
{
    alarm(20);
    static char req[65536];
    for (int k = 0; k < nreq; k++) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) _exit(1);
        size_t n = 0, want = 0;
        while (n < sizeof req - 1) {
            ssize_t r = read(c, req + n, sizeof req - 1 - n);
            if (r <= 0) break;
            n += (size_t)r;
            req[n] = '\0';
            const char *end = strstr(req, "\r\n\r\n");
            if (end && !want) {  /* the head is in: how long is the body? */
                const char *cl = strcasestr(req, "\r\nContent-Length:");
                want = (size_t)(end + 4 - req) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
            }
            if (want && n >= want) break;
        }
        req[n] = '\0';
        if (srv_dump) {
            FILE *f = fopen(srv_dump, "a");
            if (f) {
                fprintf(f, "%s\n--END--\n", req);
                fclose(f);
            }
        }
        char method[16] = "", path[512] = "";
        sscanf(req, "%15s %511s", method, path);
        const route *rt = NULL;
        for (int i = 0; i < nroutes; i++)
            if (!strcmp(routes[i].method, method) && !strcmp(routes[i].path, path)) { rt = &routes[i]; break; }
        char line[700];
        int len = snprintf(line, sizeof line, "%s %s hdr=%s\n", method, path,
                           !rt || !rt->need ? "none" : has_header(req, rt->need) ? "ok" : "bad");
        if (write(logfd, line, (size_t)len) < 0) _exit(1);  /* logged before the reply: no race */
        int st = rt ? rt->status : 404;
        const char *body = rt ? rt->body : "not found";
        char head[256];
        int hl = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n", st, strlen(body));
        if (write(c, head, (size_t)hl) < 0 || write(c, body, strlen(body)) < 0) {}
        shutdown(c, SHUT_WR);
        while (read(c, req, sizeof req) > 0) {}
        close(c);
    }
    _exit(0);
}

static int srv_start(srv *s, const route *routes, int nroutes, int nreq)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t al = sizeof a;
    int pfd[2];
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(ls, (struct sockaddr *)&a, &al) < 0 ||
        listen(ls, 16) < 0 || pipe(pfd) < 0) {
        perror("test server");
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(pfd[0]);
        serve(ls, routes, nroutes, nreq, pfd[1]);
    }
    close(ls);
    close(pfd[1]);
    s->pid = pid;
    s->port = ntohs(a.sin_port);
    s->logfd = pfd[0];
    return 0;
}

/* Stops the server; its log (one line per request answered) into log. */
static int srv_stop(srv *s, char *log, size_t loglen)
{
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    size_t n = 0;
    ssize_t r;
    while (n < loglen - 1 && (r = read(s->logfd, log + n, loglen - 1 - n)) > 0) n += (size_t)r;
    log[n] = '\0';
    close(s->logfd);
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += log[i] == '\n';
    return lines;
}

static void set_url(const char *var, const srv *s, const char *path)
{
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d%s", s->port, path);
    setenv(var, u, 1);
}

static void iso_time(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- env and files ---- */

static void env_chain(void)
{
    clear_env();
    setenv("AWS_ACCESS_KEY_ID", "AKENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SKENV", 1);
    setenv("AWS_SESSION_TOKEN", "TKENV", 1);
    char err[512];
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->source, "env");
        CHECK_STR(c->access_key, "AKENV");
        CHECK_STR(c->secret_key, "SKENV");
        CHECK_STR(c->session_token, "TKENV");
        CHECK_INT(c->expires_ms, 0);
    }
    aws_credp_free(cp);

    unsetenv("AWS_SESSION_TOKEN");
    cp = aws_credp_new();
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && c->session_token == NULL);
    /* cached: a second get gives the same */
    CHECK(aws_credp_get(cp, err, sizeof err) == c);
    aws_credp_free(cp);
}

static void env_without_secret_falls_through(void)
{
    clear_env();
    setenv("AWS_ACCESS_KEY_ID", "AKENV", 1);
    char err[1024];
    aws_credp *cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_SECRET_ACCESS_KEY missing") != NULL);
    CHECK(strstr(err, "imds: AWS_EC2_METADATA_DISABLED") != NULL);
    CHECK(strchr(err, '\n') == NULL);
    aws_credp_free(cp);

    write_file("c1", "[default]\naws_access_key_id = AKFILE\naws_secret_access_key = SKFILE\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", tpath("c1"), 1);
    cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->source, "profile"));
    if (c) CHECK_STR(c->access_key, "AKFILE");
    aws_credp_free(cp);
}

static void profile_default_file(void)
{
    clear_env();
    write_file("c2",
               "# comment\n"
               "; another\n"
               "[other]\n"
               "aws_access_key_id=AKOTHER\n"
               "aws_secret_access_key=SKOTHER\n"
               "\n"
               "  [ default ]  \n"
               "  aws_access_key_id   =   AKDEF   \n"
               "\taws_secret_access_key\t=\tSK/DEF+x  # inline comment\n"
               "aws_session_token = TKDEF\n"
               "s3 =\n"
               "  max_concurrent_requests = 10\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", tpath("c2"), 1);
    char err[1024];
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->source, "profile");
        CHECK_STR(c->access_key, "AKDEF");
        CHECK_STR(c->secret_key, "SK/DEF+x");
        CHECK_STR(c->session_token, "TKDEF");
    }
    aws_credp_free(cp);

    /* ~ expansion with HOME */
    mkdir(tpath(".aws"), 0700);
    write_file(".aws/credentials", "[default]\naws_access_key_id=AKHOME\naws_secret_access_key=SKHOME\n");
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    cp = aws_credp_new();
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "AKHOME"));
    aws_credp_free(cp);
    setenv("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials", 1);
    cp = aws_credp_new();
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "AKHOME"));
    aws_credp_free(cp);
    remove(tpath(".aws/credentials"));
}

static void profile_selected_and_config(void)
{
    clear_env();
    write_file("c3", "[default]\naws_access_key_id=AKDEF\naws_secret_access_key=SKDEF\n"
                     "[work]\naws_access_key_id=AKWORK\naws_secret_access_key=SKWORK\n");
    write_file("f3", "[default]\nregion = eu-west-1\n"
                     "[profile work]\nregion = us-west-2\n"
                     "[profile x]\n; keys in the config file\naws_access_key_id = AKX\n"
                     "aws_secret_access_key = SKX\nregion=ap-south-1\n"
                     "[x]\naws_access_key_id = NOTTHIS\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", tpath("c3"), 1);
    setenv("AWS_CONFIG_FILE", tpath("f3"), 1);
    char err[1024];
    buf_t r = BUF_INIT;

    setenv("AWS_PROFILE", "work", 1);
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "AKWORK") && !strcmp(c->secret_key, "SKWORK"));
    aws_credp_free(cp);
    CHECK_INT(aws_region(&r, err, sizeof err), 0);
    CHECK_STR(buf_str(&r), "us-west-2");

    setenv("AWS_PROFILE", "x", 1);
    cp = aws_credp_new();
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->access_key, "AKX");
        CHECK_STR(c->secret_key, "SKX");
        CHECK(c->session_token == NULL);
    }
    aws_credp_free(cp);
    CHECK_INT(aws_region(&r, err, sizeof err), 0);
    CHECK_STR(buf_str(&r), "ap-south-1");

    unsetenv("AWS_PROFILE");
    CHECK_INT(aws_region(&r, err, sizeof err), 0);
    CHECK_STR(buf_str(&r), "eu-west-1");

    /* the credentials file wins over the config file for the same profile */
    write_file("c3b", "[x]\naws_access_key_id=AKXC\naws_secret_access_key=SKXC\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", tpath("c3b"), 1);
    setenv("AWS_PROFILE", "x", 1);
    cp = aws_credp_new();
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "AKXC") && !strcmp(c->secret_key, "SKXC"));
    aws_credp_free(cp);

    /* an explicit profile that exists nowhere stops the chain */
    setenv("AWS_PROFILE", "nosuch", 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "\"nosuch\"") != NULL);
    CHECK(strstr(err, "imds") == NULL);
    aws_credp_free(cp);
    buf_free(&r);
}

static void profile_partial_and_unsupported(void)
{
    clear_env();
    write_file("f5", "[profile default]\nregion = eu-west-3\n"
                     "[profile role]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = default\n");
    setenv("AWS_CONFIG_FILE", tpath("f5"), 1);
    char err[1024] = "";
    buf_t r = BUF_INIT;
    CHECK_INT(aws_region(&r, err, sizeof err), 0);
    CHECK_STR(buf_str(&r), "eu-west-3");
    aws_credp *cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "profile \"default\": no aws_access_key_id") != NULL);
    aws_credp_free(cp);
    setenv("AWS_PROFILE", "role", 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "not supported") != NULL);
    aws_credp_free(cp);
    buf_free(&r);
}

static void region_order(void)
{
    clear_env();
    write_file("f4", "[default]\nregion = sa-east-1\n");
    setenv("AWS_CONFIG_FILE", tpath("f4"), 1);
    buf_t r = BUF_INIT;
    char err[512];
    setenv("AWS_REGION", "eu-central-1", 1);
    setenv("AWS_DEFAULT_REGION", "eu-north-1", 1);
    CHECK_INT(aws_region(&r, err, sizeof err), 0);
    CHECK_STR(buf_str(&r), "eu-central-1");
    unsetenv("AWS_REGION");
    CHECK_INT(aws_region(&r, err, sizeof err), 0);
    CHECK_STR(buf_str(&r), "eu-north-1");
    unsetenv("AWS_DEFAULT_REGION");
    CHECK_INT(aws_region(&r, err, sizeof err), 0);
    CHECK_STR(buf_str(&r), "sa-east-1");
    setenv("AWS_CONFIG_FILE", tpath("no-config"), 1);
    CHECK_INT(aws_region(&r, err, sizeof err), -1);
    CHECK(strstr(err, "AWS_REGION") != NULL);
    setenv("AWS_REGION", "us-east-1/../x", 1);
    CHECK_INT(aws_region(&r, err, sizeof err), -1);
    buf_free(&r);
}

static void endpoint_order(void)
{
    clear_env();
    buf_t e = BUF_INIT;
    CHECK_INT(aws_endpoint("sqs", "eu-west-1", &e), 0);
    CHECK_STR(buf_str(&e), "https://sqs.eu-west-1.amazonaws.com");
    CHECK_INT(aws_endpoint("dynamodb", "cn-north-1", &e), 0);
    CHECK_STR(buf_str(&e), "https://dynamodb.cn-north-1.amazonaws.com.cn");
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566/", 1);
    CHECK_INT(aws_endpoint("sqs", "eu-west-1", &e), 0);
    CHECK_STR(buf_str(&e), "http://127.0.0.1:4566");
    setenv("AWS_ENDPOINT_URL_SQS", "http://localhost:9324//", 1);
    CHECK_INT(aws_endpoint("sqs", "eu-west-1", &e), 0);
    CHECK_STR(buf_str(&e), "http://localhost:9324");
    CHECK_INT(aws_endpoint("sns", "eu-west-1", &e), 0);
    CHECK_STR(buf_str(&e), "http://127.0.0.1:4566");
    setenv("AWS_ENDPOINT_URL_MY_SERVICE", "http://127.0.0.1:1", 1);
    CHECK_INT(aws_endpoint("my-service", "eu-west-1", &e), 0);
    CHECK_STR(buf_str(&e), "http://127.0.0.1:1");
    setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true", 1);
    CHECK_INT(aws_endpoint("sqs", "eu-west-1", &e), 0);
    CHECK_STR(buf_str(&e), "https://sqs.eu-west-1.amazonaws.com");
    CHECK_INT(aws_endpoint("sqs", "", &e), -1);
    CHECK_INT(aws_endpoint("", "eu-west-1", &e), -1);
    buf_free(&e);
}

static void loopback_detection(void)
{
    CHECK_INT(aws_url_is_loopback("http://127.0.0.1:4566"), 1);
    CHECK_INT(aws_url_is_loopback("http://127.0.0.1"), 1);
    CHECK_INT(aws_url_is_loopback("http://127.5.5.5/x"), 1);
    CHECK_INT(aws_url_is_loopback("http://localhost:9324/"), 1);
    CHECK_INT(aws_url_is_loopback("http://LOCALHOST"), 1);
    CHECK_INT(aws_url_is_loopback("http://[::1]:8000/"), 1);
    CHECK_INT(aws_url_is_loopback("http://[::ffff:127.0.0.1]/"), 1);
    CHECK_INT(aws_url_is_loopback("http://user:pw@127.0.0.1:1/"), 1);
    CHECK_INT(aws_url_is_loopback("http://10.0.0.1"), 0);
    CHECK_INT(aws_url_is_loopback("http://127.0.0.1.evil.com/"), 0);
    CHECK_INT(aws_url_is_loopback("http://localhost.evil.com/"), 0);
    CHECK_INT(aws_url_is_loopback("http://evil.com/127.0.0.1"), 0);
    CHECK_INT(aws_url_is_loopback("http://127.0.0.1@evil.com/"), 0);
    CHECK_INT(aws_url_is_loopback("http://127.0.0.1:80x/"), 0);
    CHECK_INT(aws_url_is_loopback("http://[::2]/"), 0);
    CHECK_INT(aws_url_is_loopback("https://sqs.eu-west-1.amazonaws.com"), 0);
    CHECK_INT(aws_url_is_loopback(""), 0);
    CHECK_INT(aws_url_is_loopback(NULL), 0);
}

/* ---- container ---- */

static void container_refresh_with_token_file(void)
{
    clear_env();
    char exp[32], body[512];
    time_t soon = time(NULL) + 120; /* inside the 5-minute window: every get refreshes */
    iso_time(soon, exp);
    snprintf(body, sizeof body,
             "{\"AccessKeyId\":\"AKCONT\",\"SecretAccessKey\":\"SK\\/CONT\",\"Token\":\"TKCONT\","
             "\"Expiration\":\"%s\",\"RoleArn\":\"arn:aws:iam::1:role/x\",\"Extra\":{\"a\":[1,2,{\"b\":null}]}}", exp);
    route rt[] = { { "GET", "/creds", 200, body, "Authorization: tok-12345" } };
    srv s;
    if (srv_start(&s, rt, 1, 5) < 0) { CHECK(0); return; }
    write_file("tokfile", "tok-12345\n");
    set_url("AWS_CONTAINER_CREDENTIALS_FULL_URI", &s, "/creds");
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tpath("tokfile"), 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "not-this-one", 1);
    char err[1024] = "";
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->source, "container");
        CHECK_STR(c->access_key, "AKCONT");
        CHECK_STR(c->secret_key, "SK/CONT");
        CHECK_STR(c->session_token, "TKCONT");
        CHECK_INT(c->expires_ms, (long long)soon * 1000);
    }
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "AKCONT"));
    aws_credp_free(cp);
    char log[2048];
    CHECK_INT(srv_stop(&s, log, sizeof log), 2);
    CHECK_STR(log, "GET /creds hdr=ok\nGET /creds hdr=ok\n");
}

static void container_cached_until_window(void)
{
    clear_env();
    char exp[32], body[512];
    iso_time(time(NULL) + 3600, exp);
    snprintf(body, sizeof body, "{ \"AccessKeyId\" : \"AKC\", \"SecretAccessKey\" : \"SKC\", \"Token\" : \"TK\\u002bC\\\"\", "
             "\"Expiration\" : \"%s\" }", exp);
    route rt[] = { { "GET", "/v2/creds", 200, body, "Authorization: envtoken" } };
    srv s;
    if (srv_start(&s, rt, 1, 5) < 0) { CHECK(0); return; }
    set_url("AWS_CONTAINER_CREDENTIALS_FULL_URI", &s, "/v2/creds");
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "envtoken", 1);
    char err[1024] = "";
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->secret_key, "SKC"));
    if (c) CHECK_STR(c->session_token, "TK+C\"");
    c = aws_credp_get(cp, err, sizeof err);
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->secret_key, "SKC"));
    /* invalidate forces a new request */
    aws_credp_invalidate(cp);
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->secret_key, "SKC"));
    aws_credp_free(cp);
    char log[2048];
    CHECK_INT(srv_stop(&s, log, sizeof log), 2);
    CHECK_STR(log, "GET /v2/creds hdr=ok\nGET /v2/creds hdr=ok\n");
}

static void container_refused_urls(void)
{
    static const char *bad[] = {
        "http://10.0.0.1/creds", "http://127.0.0.1.evil.com/creds", "http://169.254.169.254/x",
        "ftp://127.0.0.1/creds", "file:///etc/passwd",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_env();
        setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", bad[i], 1);
        char err[1024] = "";
        aws_credp *cp = aws_credp_new();
        CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
        CHECK(strstr(err, "must be https") != NULL);
        aws_credp_free(cp);
    }
}

static void container_retry_once_then_error(void)
{
    clear_env();
    route rt[] = { { "GET", "/creds", 500, "{\"SecretAccessKey\":\"SK-IN-500-BODY\"}", NULL } };
    srv s;
    if (srv_start(&s, rt, 1, 5) < 0) { CHECK(0); return; }
    set_url("AWS_CONTAINER_CREDENTIALS_FULL_URI", &s, "/creds");
    setenv("AWS_EC2_METADATA_DISABLED", "false", 1);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1", 1);
    char err[1024] = "";
    aws_credp *cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "container: HTTP 500") != NULL);
    CHECK(strstr(err, "SK-IN-500-BODY") == NULL);
    CHECK(strstr(err, "imds") == NULL);  /* a configured container source is final */
    aws_credp_free(cp);
    char log[2048];
    CHECK_INT(srv_stop(&s, log, sizeof log), 2);

    /* nothing listening: a transport error, reported */
    clear_env();
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds", 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "container: ") != NULL);
    aws_credp_free(cp);

    /* a token file that cannot be read */
    clear_env();
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds", 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tpath("no-token-file"), 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") != NULL);
    aws_credp_free(cp);
}

/* ---- IMDS ---- */

static void imds_v2_flow(void)
{
    clear_env();
    char exp[32], body[512];
    iso_time(time(NULL) + 6 * 3600, exp);
    snprintf(body, sizeof body,
             "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2024-01-01T00:00:00Z\",\n  \"Type\" : \"AWS-HMAC\",\n"
             "  \"AccessKeyId\" : \"ASIAIMDS\",\n  \"SecretAccessKey\" : \"SKIMDS\",\n  \"Token\" : \"TKIMDS\",\n"
             "  \"Expiration\" : \"%s\"\n}", exp);
    route rt[] = {
        { "PUT", "/latest/api/token", 200, "IMDSTOKEN-abc==", "X-aws-ec2-metadata-token-ttl-seconds: 21600" },
        { "GET", "/latest/meta-data/iam/security-credentials/", 200, "my-role\n",
          "X-aws-ec2-metadata-token: IMDSTOKEN-abc==" },
        { "GET", "/latest/meta-data/iam/security-credentials/my-role", 200, body,
          "X-aws-ec2-metadata-token: IMDSTOKEN-abc==" },
    };
    srv s;
    if (srv_start(&s, rt, 3, 6) < 0) { CHECK(0); return; }
    setenv("AWS_EC2_METADATA_DISABLED", "false", 1);
    set_url("AWS_EC2_METADATA_SERVICE_ENDPOINT", &s, "/");
    char err[1024] = "";
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->source, "imds");
        CHECK_STR(c->access_key, "ASIAIMDS");
        CHECK_STR(c->secret_key, "SKIMDS");
        CHECK_STR(c->session_token, "TKIMDS");
        CHECK(c->expires_ms > (long long)time(NULL) * 1000 + 5 * 3600 * 1000LL);
    }
    CHECK(aws_credp_get(cp, err, sizeof err) == c);  /* far from expiry: cached */
    aws_credp_free(cp);
    char log[2048];
    CHECK_INT(srv_stop(&s, log, sizeof log), 3);
    CHECK_STR(log, "PUT /latest/api/token hdr=ok\n"
                   "GET /latest/meta-data/iam/security-credentials/ hdr=ok\n"
                   "GET /latest/meta-data/iam/security-credentials/my-role hdr=ok\n");
}

static void imds_disabled_or_absent(void)
{
    clear_env();
    char err[1024] = "";
    aws_credp *cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "imds: AWS_EC2_METADATA_DISABLED=true") != NULL);
    aws_credp_free(cp);

    setenv("AWS_EC2_METADATA_DISABLED", "false", 1);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1", 1);
    time_t t0 = time(NULL);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "imds: no instance metadata service") != NULL);
    CHECK(time(NULL) - t0 <= 2);
    aws_credp_free(cp);

    /* a role-less instance */
    route rt[] = {
        { "PUT", "/latest/api/token", 200, "T", NULL },
        { "GET", "/latest/meta-data/iam/security-credentials/", 404, "", NULL },
    };
    srv s;
    if (srv_start(&s, rt, 2, 4) < 0) { CHECK(0); return; }
    set_url("AWS_EC2_METADATA_SERVICE_ENDPOINT", &s, "");
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "no IAM role") != NULL);
    aws_credp_free(cp);
    char log[1024];
    CHECK_INT(srv_stop(&s, log, sizeof log), 2);
}

/* ---- web identity (EKS IRSA) ---- */

#define ROLE "arn:aws:iam::123456789012:role/delayer-irsa"
#define ROLE_ENC "arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdelayer-irsa"

/* An AssumeRoleWithWebIdentity reply whose credentials expire at exp. */
static void sts_reply(time_t exp, const char *ak, char *out, size_t outlen)
{
    char e[32];
    iso_time(exp, e);
    snprintf(out, outlen,
             "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
             "  <AssumeRoleWithWebIdentityResult>\n"
             "    <SubjectFromWebIdentityToken>system:serviceaccount:delayer:sns-publish</SubjectFromWebIdentityToken>\n"
             "    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/delayer-irsa/s</Arn>"
             "<AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>\n"
             "    <Credentials>\n"
             "      <SessionToken>TKWEB/&amp;+=</SessionToken>\n"
             "      <SecretAccessKey>SKWEB/x+y</SecretAccessKey>\n"
             "      <Expiration>%s</Expiration>\n"
             "      <AccessKeyId>%s</AccessKeyId>\n"
             "    </Credentials>\n"
             "    <Audience>sts.amazonaws.com</Audience>\n"
             "  </AssumeRoleWithWebIdentityResult>\n"
             "  <ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>\n"
             "</AssumeRoleWithWebIdentityResponse>\n", e, ak);
}

/* The requests dumped by the server (srv_dump), into a static buffer. */
static const char *dump_read(void)
{
    static char d[65536];
    d[0] = '\0';
    FILE *f = fopen(tpath("dump"), "r");
    if (!f) return d;
    size_t n = fread(d, 1, sizeof d - 1, f);
    d[n] = '\0';
    fclose(f);
    return d;
}

/* The body of request k (0-based) in the dump, into out. */
static void dump_body(const char *d, int k, char *out, size_t outlen)
{
    out[0] = '\0';
    for (int i = 0; i < k && d; i++) {
        d = strstr(d, "\n--END--\n");
        if (d) d += 9;
    }
    if (!d) return;
    const char *b = strstr(d, "\r\n\r\n"), *e = strstr(d, "\n--END--\n");
    if (!b || !e || e < b) return;
    b += 4;
    snprintf(out, outlen, "%.*s", (int)(e - b), b);
}

static void web_identity_setup(const srv *s, const char *token_text)
{
    write_file("webtoken", token_text);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", tpath("webtoken"), 1);
    setenv("AWS_ROLE_ARN", ROLE, 1);
    setenv("AWS_REGION", "eu-west-1", 1);
    if (s) set_url("AWS_ENDPOINT_URL_STS", s, "");
    remove(tpath("dump"));
    srv_dump = tpath("dump");
}

static void web_identity_success(void)
{
    clear_env();
    char body[2048];
    time_t exp = time(NULL) + 3600;
    sts_reply(exp, "ASIAWEB", body, sizeof body);
    route rt[] = { { "POST", "/", 200, body, "Content-Type: application/x-www-form-urlencoded; charset=utf-8" } };
    srv s;
    web_identity_setup(NULL, "eyJhbGciOi.payload/with+plus=\n\n");
    if (srv_start(&s, rt, 1, 3) < 0) { CHECK(0); return; }
    set_url("AWS_ENDPOINT_URL_STS", &s, "");
    int64_t t0 = (int64_t)time(NULL) * 1000;
    char err[1024] = "";
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c != NULL);
    if (!c) printf("# %s\n", err);
    if (c) {
        CHECK_STR(c->source, "web-identity");
        CHECK_STR(c->access_key, "ASIAWEB");
        CHECK_STR(c->secret_key, "SKWEB/x+y");
        CHECK_STR(c->session_token, "TKWEB/&+=");
        CHECK_INT(c->expires_ms, (long long)exp * 1000);
    }
    CHECK(aws_credp_get(cp, err, sizeof err) == c);  /* an hour left: cached */
    aws_credp_free(cp);
    char log[2048];
    CHECK_INT(srv_stop(&s, log, sizeof log), 1);
    CHECK_STR(log, "POST / hdr=ok\n");
    srv_dump = NULL;

    const char *d = dump_read();
    char b[4096];
    dump_body(d, 0, b, sizeof b);
    static const char pfx[] = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" ROLE_ENC
                              "&RoleSessionName=delayer-";
    static const char sfx[] = "&WebIdentityToken=eyJhbGciOi.payload%2Fwith%2Bplus%3D";
    CHECK(!strncmp(b, pfx, strlen(pfx)));
    CHECK(strlen(b) > strlen(sfx) && !strcmp(b + strlen(b) - strlen(sfx), sfx));
    /* the default session name: delayer-<unix time in ms> */
    const char *sn = b + strlen(pfx);
    char *endp;
    long long ms = strtoll(sn, &endp, 10);
    CHECK(endp > sn && *endp == '&');
    CHECK(ms >= t0 - 1000 && ms <= t0 + 10000);
    /* unsigned: no Authorization, no SigV4 headers */
    CHECK(strcasestr(d, "\r\nAuthorization:") == NULL);
    CHECK(strcasestr(d, "\r\nX-Amz-") == NULL);
    CHECK(!strncmp(d, "POST / HTTP/1.1\r\n", 17));
}

static void web_identity_error_response(void)
{
    clear_env();
    static const char token[] = "eyJ-SECRET-WEB-IDENTITY-TOKEN.sig";
    static const char body[] =
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
        "  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\n"
        "    <Message>Incorrect token audience\nfor eyJ-SECRET-WEB-IDENTITY-TOKEN.sig</Message></Error>\n"
        "  <RequestId>r-2</RequestId>\n"
        "</ErrorResponse>\n";
    route rt[] = { { "POST", "/", 400, body, NULL } };
    srv s;
    web_identity_setup(NULL, token);
    srv_dump = NULL;
    if (srv_start(&s, rt, 1, 3) < 0) { CHECK(0); return; }
    set_url("AWS_ENDPOINT_URL_STS", &s, "");
    /* a configured web identity is final: neither container nor IMDS is asked */
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "false", 1);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1", 1);
    char err[2048] = "";
    aws_credp *cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "web-identity: STS AssumeRoleWithWebIdentity for " ROLE ": HTTP 400 InvalidIdentityToken: "
                      "Incorrect token audience for [redacted]") != NULL);
    CHECK(strstr(err, "SECRET-WEB-IDENTITY") == NULL);
    CHECK(strchr(err, '\n') == NULL);
    CHECK(strstr(err, "container:") == NULL && strstr(err, "imds:") == NULL);
    aws_credp_free(cp);
    char log[2048];
    CHECK_INT(srv_stop(&s, log, sizeof log), 1);  /* a 4xx is not retried */

    /* a 5xx is retried once, then reported */
    route r5[] = { { "POST", "/", 503, "<ErrorResponse><Error><Code>ServiceUnavailable</Code></Error></ErrorResponse>",
                     NULL } };
    if (srv_start(&s, r5, 1, 3) < 0) { CHECK(0); return; }
    set_url("AWS_ENDPOINT_URL_STS", &s, "");
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "HTTP 503 ServiceUnavailable") != NULL);
    aws_credp_free(cp);
    CHECK_INT(srv_stop(&s, log, sizeof log), 2);

    /* a 200 without credentials */
    route rb[] = { { "POST", "/", 200, "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
                     "<Credentials><AccessKeyId>AK</AccessKeyId><SecretAccessKey>SECRET-SK</SecretAccessKey>"
                     "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>", NULL } };
    if (srv_start(&s, rb, 1, 3) < 0) { CHECK(0); return; }
    set_url("AWS_ENDPOINT_URL_STS", &s, "");
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "lacks AccessKeyId, SecretAccessKey or SessionToken") != NULL);
    CHECK(strstr(err, "SECRET-SK") == NULL);
    aws_credp_free(cp);
    CHECK_INT(srv_stop(&s, log, sizeof log), 1);

    /* nothing listening: the transport error, after one retry */
    setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1", 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "web-identity: STS http://127.0.0.1:1: ") != NULL);
    aws_credp_free(cp);
}

static void web_identity_bad_config(void)
{
    char err[2048] = "";
    aws_credp *cp;

    /* the token file missing, empty, too large */
    clear_env();
    web_identity_setup(NULL, "x");
    srv_dump = NULL;
    setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", tpath("no-such-token"), 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "web-identity: cannot read AWS_WEB_IDENTITY_TOKEN_FILE ") != NULL);
    CHECK(strstr(err, "no-such-token") != NULL);
    CHECK(strstr(err, "imds") == NULL);
    aws_credp_free(cp);

    write_file("webtoken", " \n\n");
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", tpath("webtoken"), 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_WEB_IDENTITY_TOKEN_FILE") != NULL && strstr(err, "is empty") != NULL);
    aws_credp_free(cp);

    static char big[16 * 1024 + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    write_file("webtoken", big);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_WEB_IDENTITY_TOKEN_FILE") != NULL && strstr(err, "larger than 16 KiB") != NULL);
    aws_credp_free(cp);

    /* plain http only to loopback */
    write_file("webtoken", "tok");
    setenv("AWS_ENDPOINT_URL_STS", "http://10.0.0.1:80", 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "web-identity: the STS endpoint must be https://") != NULL);
    aws_credp_free(cp);

    /* an unreadable AWS_CA_BUNDLE, named (checked before connecting) */
    setenv("AWS_ENDPOINT_URL_STS", "https://127.0.0.1:1", 1);
    setenv("AWS_CA_BUNDLE", tpath("no-such-ca.pem"), 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_CA_BUNDLE") != NULL && strstr(err, "no-such-ca.pem cannot be read") != NULL);
    aws_credp_free(cp);
    unsetenv("AWS_CA_BUNDLE");

    /* half configured: falls through to the next source, saying why */
    unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "web-identity: AWS_ROLE_ARN set but AWS_WEB_IDENTITY_TOKEN_FILE missing") != NULL);
    CHECK(strstr(err, "imds: AWS_EC2_METADATA_DISABLED") != NULL);
    aws_credp_free(cp);

    /* a profile's web_identity_token_file stays unsupported, with a hint */
    clear_env();
    write_file("f-wi", "[default]\nrole_arn = " ROLE "\nweb_identity_token_file = /t\n");
    setenv("AWS_CONFIG_FILE", tpath("f-wi"), 1);
    cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "not supported in profiles") != NULL && strstr(err, "AWS_ROLE_ARN") != NULL);
    aws_credp_free(cp);
}

static void web_identity_precedence(void)
{
    clear_env();
    char body[2048];
    sts_reply(time(NULL) + 3600, "ASIAWEB", body, sizeof body);
    route rt[] = { { "POST", "/", 200, body, NULL } };
    route rc[] = { { "GET", "/creds", 200, "{\"AccessKeyId\":\"AKCONT\",\"SecretAccessKey\":\"SKCONT\"}", NULL } };
    srv s, sc;
    if (srv_start(&s, rt, 1, 3) < 0 || srv_start(&sc, rc, 1, 3) < 0) { CHECK(0); return; }
    web_identity_setup(&s, "tok");
    srv_dump = NULL;
    set_url("AWS_CONTAINER_CREDENTIALS_FULL_URI", &sc, "/creds");
    char err[1024] = "";

    /* environment keys first */
    setenv("AWS_ACCESS_KEY_ID", "AKENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SKENV", 1);
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->source, "env"));
    aws_credp_free(cp);

    /* then a profile with keys */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    write_file("c-wi", "[default]\naws_access_key_id = AKFILE\naws_secret_access_key = SKFILE\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", tpath("c-wi"), 1);
    cp = aws_credp_new();
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->source, "profile"));
    aws_credp_free(cp);

    /* then web identity, before container credentials */
    setenv("AWS_SHARED_CREDENTIALS_FILE", tpath("no-credentials"), 1);
    cp = aws_credp_new();
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->source, "web-identity") && !strcmp(c->access_key, "ASIAWEB"));
    aws_credp_free(cp);

    /* and container credentials once web identity is not configured */
    unsetenv("AWS_ROLE_ARN");
    unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    cp = aws_credp_new();
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->source, "container"));
    aws_credp_free(cp);

    char log[1024];
    CHECK_INT(srv_stop(&s, log, sizeof log), 1);
    CHECK_INT(srv_stop(&sc, log, sizeof log), 1);
}

static void web_identity_refresh(void)
{
    clear_env();
    char b1[2048], b2[2048], b3[2048];
    time_t soon = time(NULL) + 120;  /* inside the 5-minute window */
    sts_reply(soon, "ASIAWEB1", b1, sizeof b1);
    route r1[] = { { "POST", "/", 200, b1, NULL } };
    srv s;
    web_identity_setup(NULL, "first-token\n");
    if (srv_start(&s, r1, 1, 3) < 0) { CHECK(0); return; }
    set_url("AWS_ENDPOINT_URL_STS", &s, "");
    setenv("AWS_ROLE_SESSION_NAME", "my session", 1);
    char err[1024] = "";
    aws_credp *cp = aws_credp_new();
    const aws_creds *c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "ASIAWEB1") && c->expires_ms == (long long)soon * 1000);
    char log[1024];
    CHECK_INT(srv_stop(&s, log, sizeof log), 1);

    /* the kubelet rotated the token; the next get asks STS again, with it */
    sts_reply(time(NULL) + 3600, "ASIAWEB2", b2, sizeof b2);
    route r2[] = { { "POST", "/", 200, b2, NULL } };
    if (srv_start(&s, r2, 1, 3) < 0) { CHECK(0); return; }
    set_url("AWS_ENDPOINT_URL_STS", &s, "");
    write_file("webtoken", "second-token");
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "ASIAWEB2") && !strcmp(c->source, "web-identity"));
    CHECK(aws_credp_get(cp, err, sizeof err) == c);  /* now an hour left: cached */
    CHECK_INT(srv_stop(&s, log, sizeof log), 1);
    srv_dump = NULL;
    const char *d = dump_read();
    char body[4096];
    dump_body(d, 0, body, sizeof body);
    CHECK(strstr(body, "&RoleSessionName=my%20session&WebIdentityToken=first-token") != NULL);
    dump_body(d, 1, body, sizeof body);
    CHECK(strstr(body, "&WebIdentityToken=second-token") != NULL);

    /* a failed refresh keeps still-valid credentials */
    aws_credp_invalidate(cp);
    sts_reply(time(NULL) + 120, "ASIAWEB3", b3, sizeof b3);
    route r3[] = { { "POST", "/", 200, b3, NULL } };
    if (srv_start(&s, r3, 1, 3) < 0) { CHECK(0); return; }
    set_url("AWS_ENDPOINT_URL_STS", &s, "");
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "ASIAWEB3"));
    CHECK_INT(srv_stop(&s, log, sizeof log), 1);
    setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1", 1);
    c = aws_credp_get(cp, err, sizeof err);
    CHECK(c && !strcmp(c->access_key, "ASIAWEB3"));
    aws_credp_free(cp);
}

/* ---- secrets never in errors ---- */

static void secrets_not_in_errors(void)
{
    static const char *secrets[] = {
        "SECRET-ENV-TOKEN", "SECRET-PROFILE-SK", "SECRET-TOKEN-FILE", "SECRET-CONT-SK", "SECRET-CONT-TK",
        "SECRET-IMDS-SK", "SECRET-IMDS-TOKEN",
    };
    char err[4096] = "";

    /* 1: env key without secret (a token set), a profile with a secret but no key id,
     *    a container reply lacking AccessKeyId. */
    clear_env();
    setenv("AWS_ACCESS_KEY_ID", "AKPUBLIC", 1);
    setenv("AWS_SESSION_TOKEN", "SECRET-ENV-TOKEN", 1);
    write_file("c9", "[default]\naws_secret_access_key = SECRET-PROFILE-SK\n");
    setenv("AWS_SHARED_CREDENTIALS_FILE", tpath("c9"), 1);
    write_file("tok9", "SECRET-TOKEN-FILE\r\n");
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tpath("tok9"), 1);
    route rt[] = { { "GET", "/c", 200, "{\"SecretAccessKey\":\"SECRET-CONT-SK\",\"Token\":\"SECRET-CONT-TK\"}",
                     "Authorization: SECRET-TOKEN-FILE" } };
    srv s;
    if (srv_start(&s, rt, 1, 4) < 0) { CHECK(0); return; }
    set_url("AWS_CONTAINER_CREDENTIALS_FULL_URI", &s, "/c");
    aws_credp *cp = aws_credp_new();
    CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
    CHECK(strstr(err, "aws_access_key_id missing") != NULL);
    CHECK(strstr(err, "lacks AccessKeyId") != NULL);
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) CHECK(strstr(err, secrets[i]) == NULL);
    aws_credp_free(cp);
    char log[1024];
    CHECK_INT(srv_stop(&s, log, sizeof log), 1);
    CHECK_STR(log, "GET /c hdr=ok\n");  /* the token file's trailing CR LF was dropped */

    /* 2: IMDS replies with an error Code, a bad JSON, and a bad Expiration */
    static const char *bodies[] = {
        "{\"Code\":\"Failure\",\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET-IMDS-SK\"}",
        "{\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET-IMDS-SK\"",
        "{\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET-IMDS-SK\",\"Expiration\":\"soon\"}",
    };
    static const char *why[] = { "Code", "not a JSON object", "Expiration" };
    for (int i = 0; i < 3; i++) {
        clear_env();
        route ri[] = {
            { "PUT", "/latest/api/token", 200, "SECRET-IMDS-TOKEN", NULL },
            { "GET", "/latest/meta-data/iam/security-credentials/", 200, "r", NULL },
            { "GET", "/latest/meta-data/iam/security-credentials/r", 200, bodies[i], NULL },
        };
        if (srv_start(&s, ri, 3, 3) < 0) { CHECK(0); return; }
        setenv("AWS_EC2_METADATA_DISABLED", "false", 1);
        set_url("AWS_EC2_METADATA_SERVICE_ENDPOINT", &s, "");
        cp = aws_credp_new();
        CHECK(aws_credp_get(cp, err, sizeof err) == NULL);
        CHECK(strstr(err, why[i]) != NULL);
        for (size_t k = 0; k < sizeof secrets / sizeof secrets[0]; k++) CHECK(strstr(err, secrets[k]) == NULL);
        aws_credp_free(cp);
        CHECK_INT(srv_stop(&s, log, sizeof log), 3);
    }
}

/* ---- secrets out of core dumps, and out of memory let go ---- */

/* A process that loads credentials turns itself non-dumpable (no core
 * dump, no ptrace or /proc/PID/mem by others). In a child, which starts
 * dumpable again whatever earlier tests did to this process. */
static void credentials_make_the_process_non_dumpable(void)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int code = 0;
        if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 || prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1) code |= 1;
        clear_env();
        setenv("AWS_ACCESS_KEY_ID", "AKDUMP", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "SKDUMP", 1);
        char err[512];
        aws_credp *cp = aws_credp_new();
        if (!aws_credp_get(cp, err, sizeof err)) code |= 2;
        if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) code |= 4;
        aws_credp_free(cp);
        _exit(code);
    }
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    CHECK_INT(WEXITSTATUS(st), 0);   /* 4: still dumpable after loading credentials */
}

/* buf_release_hook sees each block a secret buffer lets go, after the
 * wipe and before free(): every byte must be zero by then. */
static size_t rel_blocks, rel_dirty;
static void rel_check(const void *p, size_t n)
{
    const unsigned char *c = p;
    rel_blocks++;
    for (size_t i = 0; i < n; i++)
        if (c[i]) { rel_dirty++; break; }
}

static void secret_buffer_wipes_what_it_lets_go(void)
{
    rel_blocks = rel_dirty = 0;
    buf_release_hook = rel_check;
    buf_t b = BUF_INIT;
    buf_secret(&b);
    char want[5001];
    for (size_t i = 0; i < sizeof want - 1; i++) want[i] = (char)('A' + i % 26);
    want[sizeof want - 1] = '\0';
    for (size_t i = 0; i < sizeof want - 1; i += 100) buf_add(&b, want + i, 100);   /* grows 64 -> 8192 */
    CHECK_INT(b.len, sizeof want - 1);
    CHECK(b.p && memcmp(b.p, want, sizeof want - 1) == 0);   /* growth copied everything */
    CHECK(rel_blocks >= 6);                                  /* each old block let go... */
    CHECK_INT(rel_dirty, 0);                                 /* ...zeroed first */
    size_t before = rel_blocks;
    buf_reset(&b);
    CHECK(b.p && b.p[0] == '\0' && b.p[1] == '\0' && b.p[4000] == '\0');   /* reset zeroes the content */
    buf_adds(&b, "again");
    buf_free(&b);
    CHECK_INT(rel_blocks, before + 1);
    CHECK_INT(rel_dirty, 0);
    CHECK(b.secret);                                         /* still secret for the next use */
    /* an ordinary buffer is not the hook's business */
    buf_t o = BUF_INIT;
    for (int i = 0; i < 100; i++) buf_adds(&o, "0123456789");
    buf_free(&o);
    CHECK_INT(rel_blocks, before + 1);
    buf_release_hook = NULL;
}

/* SigV4's canonical request carries the session token (x-amz-security-token
 * is signed): its buffer lets no unwiped copy go as it grows. */
static void sigv4_leaves_no_token_copy(void)
{
    rel_blocks = rel_dirty = 0;
    buf_release_hook = rel_check;
    char tok[3000];
    memset(tok, 'T', sizeof tok - 1);
    tok[sizeof tok - 1] = '\0';
    sigv4_header h[] = { { "host", "sqs.us-east-1.amazonaws.com" }, { "x-amz-date", "20261206T080000Z" },
                         { "x-amz-security-token", tok } };
    sigv4_request r = { .method = "POST", .path = "/", .query = "", .headers = h, .nheaders = 3,
                        .payload = "{}", .payload_len = 2 };
    sigv4_params p = { "AKID", "SECRET", NULL, "us-east-1", "sqs", "20261206T080000Z" };
    buf_t auth = BUF_INIT;
    CHECK_INT(sigv4_authorization(&r, &p, &auth), 0);
    CHECK(strstr(buf_str(&auth), "Signature=") != NULL);
    buf_free(&auth);
    CHECK(rel_blocks >= 2);   /* the canonical request grew, then was freed */
    CHECK_INT(rel_dirty, 0);
    buf_release_hook = NULL;
}


T_MAIN(T(env_chain), T(env_without_secret_falls_through), T(profile_default_file), T(profile_selected_and_config),
       T(profile_partial_and_unsupported), T(region_order), T(endpoint_order), T(loopback_detection), T(container_refresh_with_token_file),
       T(container_cached_until_window), T(container_refused_urls), T(container_retry_once_then_error),
       T(imds_v2_flow), T(imds_disabled_or_absent), T(web_identity_success), T(web_identity_error_response),
       T(web_identity_bad_config), T(web_identity_precedence), T(web_identity_refresh), T(secrets_not_in_errors),
       T(credentials_make_the_process_non_dumpable), T(secret_buffer_wipes_what_it_lets_go),
       T(sigv4_leaves_no_token_copy))
