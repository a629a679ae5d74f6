/* aws.c: a signed, retrying AWS HTTP client on one libcurl easy handle.
 *
 * Each attempt is signed afresh (SigV4 dates are only valid for 15 minutes,
 * and temporary credentials may have been refreshed meanwhile). We sign with
 * our own sigv4.c, not CURLOPT_AWS_SIGV4: curl 7.88's implementation has
 * canonicalisation bugs fixed only in 8.x. The library never logs: callers
 * decide what to tell the user. */
#include "aws.h"
#include "creds.h"
#include "json.h"
#include "reqstat.h"
#include "sigv4.h"
#include "xml.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define AWS_DEFAULT_CONNECT_MS 3000L
#define AWS_DEFAULT_TOTAL_MS   30000L
#define AWS_DEFAULT_ATTEMPTS   8
#define AWS_BACKOFF_BASE_MS    25L
#define AWS_BACKOFF_CAP_MS     5000L
#define AWS_MAX_RESPONSE       (64u << 20)   /* a reply larger than this is refused */

struct aws_client {
    char service[16];
    buf_t region;
    buf_t endpoint;          /* as configured, no trailing slash */
    char *url;               /* endpoint + path: what curl requests */
    char *host;              /* Host header value: signed and sent verbatim */
    char *path;              /* "/" unless the endpoint has a path */
    aws_credp *credp;
    CURL *curl;
    int max_attempts;
    long connect_ms, total_ms;
    aws_stats stats;
    uint64_t rng;
    size_t resp_cap_hit;     /* set by the write callback when the reply is too big */
    buf_t *resp;             /* the current call's response buffer */
    buf_t query_error;       /* x-amzn-query-error of the current attempt */
    buf_t error_type;        /* x-amzn-errortype of the current attempt */
    char curl_err[CURL_ERROR_SIZE];
};

/* ---- small helpers ------------------------------------------------------ */

static void aws_copy(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Messages end up in one-line logs: control characters become spaces. */
static void aws_one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = ' ';
}

/* Replaces every occurrence of secret in b with "[redacted]". Short strings
 * are skipped: a real key is 16+ characters and a 1-character "secret" would
 * mangle the whole message. */
static void aws_redact(buf_t *b, const char *secret)
{
    if (!secret || strlen(secret) < 8 || !b->p) return;
    size_t sl = strlen(secret);
    buf_t out = BUF_INIT;
    const char *p = b->p, *end = b->p + b->len, *hit;
    while ((hit = memmem(p, (size_t)(end - p), secret, sl)) != NULL) {
        buf_add(&out, p, (size_t)(hit - p));
        buf_adds(&out, "[redacted]");
        p = hit + sl;
    }
    if (out.p == NULL) return;          /* nothing found */
    buf_add(&out, p, (size_t)(end - p));
    buf_wipe(b);
    *b = out;
}

static uint64_t aws_rand(aws_client *c)
{
    /* xorshift64*: jitter only needs to de-correlate clients, not be secure. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 2685821657736338717ULL;
}

static void aws_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* Full jitter (AWS architecture blog): uniform in [0, min(cap, base*2^n)]. */
static long aws_backoff_ms(aws_client *c, int attempt)
{
    long ceil = AWS_BACKOFF_BASE_MS;
    for (int i = 1; i < attempt && ceil < AWS_BACKOFF_CAP_MS; i++) ceil *= 2;
    if (ceil > AWS_BACKOFF_CAP_MS) ceil = AWS_BACKOFF_CAP_MS;
    return (long)(aws_rand(c) % (uint64_t)(ceil + 1));
}

/* ---- error parsing -------------------------------------------------------- */

/* JSON: {"__type":"com.amazonaws.dynamodb.v20120810#Code","message":"..."} */
static int aws_parse_json_error(const char *body, size_t n, buf_t *code, buf_t *msg)
{
    json_doc d = {0};
    buf_t s = BUF_INIT;
    int rc = -1;
    if (json_parse(&d, body, n) < 0 || json_type(&d, 0) != JSON_OBJ) goto out;
    int t = json_get(&d, 0, "__type");
    if (t < 0) t = json_get(&d, 0, "code");
    if (t >= 0 && json_str(&d, t, &s) == 0) {
        const char *hash = strrchr(buf_str(&s), '#');
        buf_adds(code, hash ? hash + 1 : buf_str(&s));
        rc = code->len ? 0 : -1;
    }
    int m = json_get(&d, 0, "message");
    if (m < 0) m = json_get(&d, 0, "Message");
    if (m >= 0 && json_str(&d, m, &s) == 0) buf_adds(msg, buf_str(&s));
out:
    buf_free(&s);
    json_free(&d);
    return rc;
}

/* XML: <ErrorResponse><Error><Code>..</Code><Message>..</Message></Error>..
 * or a bare <Error> root (S3 style). */
static int aws_parse_xml_error(const char *body, size_t n, buf_t *code, buf_t *msg)
{
    size_t es, ee;
    if (xml_find(body, n, 0, "Error", NULL, &es, &ee) < 0) return -1;
    buf_t s = BUF_INIT;
    int rc = -1;
    if (xml_find(body, ee, es, "Code", &s, NULL, NULL) == 0 && s.len) {
        buf_adds(code, buf_str(&s));
        rc = 0;
    }
    if (xml_find(body, ee, es, "Message", &s, NULL, NULL) == 0) buf_adds(msg, buf_str(&s));
    buf_free(&s);
    return rc;
}

static int aws_looks_xml(const char *body, size_t n, const char *ct)
{
    if (ct && strstr(ct, "xml")) return 1;
    if (ct && strstr(ct, "json")) return 0;
    size_t i = 0;
    while (i < n && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n')) i++;
    return i < n && body[i] == '<';
}

static int aws_parse_error_bufs(const char *body, size_t n, const char *ct, buf_t *code, buf_t *msg)
{
    if (!body || n == 0) return -1;
    return aws_looks_xml(body, n, ct) ? aws_parse_xml_error(body, n, code, msg)
                                      : aws_parse_json_error(body, n, code, msg);
}

int aws_parse_error(const char *body, size_t n, const char *content_type, aws_err *e)
{
    buf_t code = BUF_INIT, msg = BUF_INIT;
    int rc = aws_parse_error_bufs(body, n, content_type, &code, &msg);
    aws_copy(e->code, sizeof e->code, buf_str(&code), code.len);
    aws_copy(e->message, sizeof e->message, buf_str(&msg), msg.len);
    aws_one_line(e->code);
    aws_one_line(e->message);
    buf_free(&code);
    buf_free(&msg);
    return rc;
}

int aws_err_is(const aws_err *e, const char *code)
{
    static const char pfx[] = "AWS.SimpleQueueService.";
    if (!e || !code) return 0;
    if (strcmp(e->code, code) == 0) return 1;
    if (e->query_code[0] == '\0') return 0;
    if (strcmp(e->query_code, code) == 0) return 1;
    return strncmp(e->query_code, pfx, sizeof pfx - 1) == 0 &&
           strcmp(e->query_code + sizeof pfx - 1, code) == 0;
}

/* Throttling codes (and the ones AWS SDKs treat the same way). */
static int aws_is_throttle(const char *code)
{
    static const char *const codes[] = {
        "ThrottlingException", "Throttling", "ThrottledException",
        "ProvisionedThroughputExceededException", "RequestLimitExceeded",
        "TooManyRequestsException", "RequestThrottled", "RequestThrottledException",
        "SlowDown", "TransactionInProgressException", "LimitExceededException",
        "BandwidthLimitExceeded", "PriorRequestNotComplete", "EC2ThrottledException",
        "ThrottlingError",
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(code, codes[i]) == 0) return 1;
    return 0;
}

/* Transient server-side codes that may come with a 4xx status. */
static int aws_is_transient(const char *code)
{
    static const char *const codes[] = {
        "RequestTimeout", "RequestTimeoutException", "InternalError",
        "InternalFailure", "InternalServerError", "ServiceUnavailable",
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(code, codes[i]) == 0) return 1;
    return 0;
}

/* curl failures where the request may simply be tried again. */
static int aws_curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT: case CURLE_SEND_ERROR: case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE: case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

/* ---- curl callbacks ------------------------------------------------------- */

static size_t aws_on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    aws_client *c = ud;
    size_t n = size * nmemb;
    if (c->resp->len + n > AWS_MAX_RESPONSE) { c->resp_cap_hit = 1; return 0; }
    buf_add(c->resp, p, n);
    return n;
}

/* Keeps the value of header `name` (case-insensitive) in out, trimmed. */
static void aws_keep_header(const char *p, size_t n, const char *name, buf_t *out)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(p, name, nl) != 0 || p[nl] != ':') return;
    p += nl + 1; n -= nl + 1;
    while (n && (*p == ' ' || *p == '\t')) { p++; n--; }
    while (n && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' ')) n--;
    buf_reset(out);
    buf_add(out, p, n);
}

static size_t aws_on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    aws_client *c = ud;
    size_t n = size * nmemb;
    aws_keep_header(p, n, "x-amzn-query-error", &c->query_error);
    aws_keep_header(p, n, "x-amzn-errortype", &c->error_type);
    return n;
}

/* ---- client --------------------------------------------------------------- */

static pthread_once_t aws_curl_once = PTHREAD_ONCE_INIT;
static CURLcode aws_curl_init_rc;
static void aws_curl_init(void) { aws_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Splits the endpoint into the URL to request, the Host header and the path.
 * Refuses anything but https://, or http:// to a loopback host. */
static int aws_client_parse_endpoint(aws_client *c, char *err, size_t errlen)
{
    const char *ep = buf_str(&c->endpoint);
    int tls = strncasecmp(ep, "https://", 8) == 0;
    if (!tls && strncasecmp(ep, "http://", 7) != 0) {
        snprintf(err, errlen, "%s endpoint must be https:// (or http:// to loopback): %.200s", c->service, ep);
        return -1;
    }
    if (!tls && !aws_url_is_loopback(ep)) {
        snprintf(err, errlen, "refusing plain http:// to a non-loopback %s endpoint: %.200s", c->service, ep);
        return -1;
    }
    const char *auth = ep + (tls ? 8 : 7);
    size_t alen = strcspn(auth, "/?#");
    if (alen == 0 || memchr(auth, '@', alen) || auth[alen] == '?' || auth[alen] == '#') {
        snprintf(err, errlen, "unusable %s endpoint: %.200s", c->service, ep);
        return -1;
    }
    /* The Host header we sign must be the one sent: drop a default port. */
    size_t hlen = alen;
    const char *dflt = tls ? ":443" : ":80";
    if (hlen > strlen(dflt) && strncmp(auth + hlen - strlen(dflt), dflt, strlen(dflt)) == 0)
        hlen -= strlen(dflt);
    c->host = xstrndup(auth, hlen);
    c->path = xstrdup(auth[alen] == '/' ? auth + alen : "/");
    buf_t url = BUF_INIT;
    buf_add(&url, ep, (size_t)(auth - ep) + alen);
    buf_adds(&url, c->path);
    c->url = url.p;
    return 0;
}

static int aws_client_setup_curl(aws_client *c, char *err, size_t errlen)
{
    if (pthread_once(&aws_curl_once, aws_curl_init) != 0 || aws_curl_init_rc != CURLE_OK ||
        !(c->curl = curl_easy_init())) {
        snprintf(err, errlen, "cannot initialise libcurl");
        return -1;
    }
    CURL *h = c->curl;
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);            /* threads: no SIGALRM for DNS timeouts */
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    /* AWS_CA_BUNDLE: a PEM file of CAs trusted besides the system's (checked
     * readable by aws_client_new); verification itself stays on. */
    const char *ca = getenv("AWS_CA_BUNDLE");
    if (ca && *ca) curl_easy_setopt(h, CURLOPT_CAINFO, ca);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);      /* a redirect would break the signature */
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, aws_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, aws_on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "delayer/aws.c");
    return 0;
}

/* Starting value for the back-off jitter generator. */
static uint64_t aws_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&s;
    }
    return s ? s : 0x9E3779B97F4A7C15ULL;
}

static int aws_env_attempts(void)
{
    const char *v = getenv("DELAYER_AWS_MAX_ATTEMPTS");
    if (!v || !*v) return AWS_DEFAULT_ATTEMPTS;
    char *end;
    long n = strtol(v, &end, 10);
    return (*end || n < 1 || n > 100) ? AWS_DEFAULT_ATTEMPTS : (int)n;
}

aws_client *aws_client_new(const char *service, char *err, size_t errlen)
{
    if (!service || strlen(service) >= sizeof ((aws_client *)0)->service) {
        snprintf(err, errlen, "bad service name");
        return NULL;
    }
    aws_client *c = xcalloc(1, sizeof *c);
    snprintf(c->service, sizeof c->service, "%s", service);
    c->max_attempts = aws_env_attempts();
    c->connect_ms = AWS_DEFAULT_CONNECT_MS;
    c->total_ms = AWS_DEFAULT_TOTAL_MS;
    c->rng = aws_seed();
    if (aws_region(&c->region, err, errlen) < 0) goto fail;
    if (aws_endpoint(service, buf_str(&c->region), &c->endpoint) < 0) {
        snprintf(err, errlen, "no endpoint for %s", service);
        goto fail;
    }
    if (aws_client_parse_endpoint(c, err, errlen) < 0) goto fail;
    if (aws_ca_bundle_check(c->url, err, errlen) < 0) goto fail;
    c->credp = aws_credp_new();
    /* Fail now, not on the first call, when no credentials can be found. */
    if (!c->credp || !aws_credp_get(c->credp, err, errlen)) goto fail;
    if (aws_client_setup_curl(c, err, errlen) < 0) goto fail;
    return c;
fail:
    aws_client_free(c);
    return NULL;
}

void aws_client_free(aws_client *c)
{
    if (!c) return;
    if (c->curl) curl_easy_cleanup(c->curl);
    if (c->credp) aws_credp_free(c->credp);
    buf_free(&c->region);
    buf_free(&c->endpoint);
    buf_free(&c->query_error);
    buf_free(&c->error_type);
    free(c->url);
    free(c->host);
    free(c->path);
    free(c);
}

const char *aws_client_endpoint(const aws_client *c) { return buf_str(&c->endpoint); }
const char *aws_client_region(const aws_client *c) { return buf_str(&c->region); }
const aws_stats *aws_client_stats(const aws_client *c) { return &c->stats; }

void aws_client_set_max_attempts(aws_client *c, int n)
{
    c->max_attempts = n < 1 ? 1 : n;
}

void aws_client_set_timeouts(aws_client *c, long connect_ms, long total_ms)
{
    if (connect_ms > 0) c->connect_ms = connect_ms;
    if (total_ms > 0) c->total_ms = total_ms;
}

void aws_client_get_timeouts(const aws_client *c, long *connect_ms, long *total_ms)
{
    if (connect_ms) *connect_ms = c->connect_ms;
    if (total_ms) *total_ms = c->total_ms;
}

/* ---- one attempt ---------------------------------------------------------- */

typedef struct {
    const char *content_type;
    const char *target;      /* NULL for the query protocol */
    const char *body;
    size_t len;
} aws_req;

/* Adds "Name: value" to a curl header list; 0, or -1 if out of memory. */
static int aws_header(struct curl_slist **l, const char *name, const char *value)
{
    buf_t h = BUF_INIT;
    buf_printf(&h, "%s: %s", name, value);
    struct curl_slist *n = curl_slist_append(*l, h.p);
    buf_wipe(&h);
    if (!n) return -1;
    *l = n;
    return 0;
}

/* Header lists can hold the session token: zero them before freeing. */
static void aws_headers_free(struct curl_slist *l)
{
    for (struct curl_slist *i = l; i; i = i->next) {
        volatile char *v = i->data;
        while (*v) *v++ = 0;
    }
    curl_slist_free_all(l);
}

/* Signs the request with the current credentials; the header list to send. */
static struct curl_slist *aws_sign(aws_client *c, const aws_creds *cr, const aws_req *r)
{
    char date[17];
    sigv4_amz_date(date);
    const char *tok = cr->session_token && *cr->session_token ? cr->session_token : NULL;
    sigv4_header h[5];
    size_t n = 0;
    h[n++] = (sigv4_header){ "host", c->host };
    h[n++] = (sigv4_header){ "x-amz-date", date };
    h[n++] = (sigv4_header){ "content-type", r->content_type };
    if (r->target) h[n++] = (sigv4_header){ "x-amz-target", r->target };
    /* Signed, as the AWS SDKs do, so the token cannot be swapped in transit. */
    if (tok) h[n++] = (sigv4_header){ "x-amz-security-token", tok };
    sigv4_request sr = { .method = "POST", .path = c->path, .query = "", .headers = h,
                        .nheaders = n, .payload = r->body, .payload_len = r->len };
    /* session_token NULL: the header above already carries it. */
    sigv4_params p = { cr->access_key, cr->secret_key, NULL, buf_str(&c->region), c->service, date };
    buf_t auth = BUF_INIT;
    struct curl_slist *l = NULL;
    int rc = sigv4_authorization(&sr, &p, &auth);
    for (size_t i = 0; rc == 0 && i < n; i++) rc = aws_header(&l, h[i].name, h[i].value);
    if (rc == 0) rc = aws_header(&l, "authorization", buf_str(&auth));
    /* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
    if (rc == 0) rc = aws_header(&l, "expect", "");
    buf_wipe(&auth);
    if (rc < 0) { aws_headers_free(l); return NULL; }
    return l;
}

/* Fills e from a non-2xx reply, with credentials scrubbed from the message. */
static void aws_fill_http_error(aws_client *c, const aws_creds *cr, aws_err *e)
{
    char *ct = NULL;
    curl_easy_getinfo(c->curl, CURLINFO_CONTENT_TYPE, &ct);
    buf_t code = BUF_INIT, msg = BUF_INIT;
    aws_parse_error_bufs(c->resp->p, c->resp->len, ct, &code, &msg);
    if (code.len == 0 && c->error_type.len)      /* restJson style, "Code:http://..." */
        buf_add(&code, c->error_type.p, strcspn(c->error_type.p, ":"));
    if (msg.len == 0) buf_printf(&msg, "HTTP %ld", e->http_status);
    aws_redact(&msg, cr->secret_key);
    aws_redact(&msg, cr->session_token);
    aws_redact(&msg, cr->access_key);
    aws_copy(e->code, sizeof e->code, buf_str(&code), code.len);
    aws_copy(e->message, sizeof e->message, buf_str(&msg), msg.len);
    if (c->query_error.len)                      /* "AWS.SimpleQueueService.X;Sender" */
        aws_copy(e->query_code, sizeof e->query_code, c->query_error.p, strcspn(c->query_error.p, ";"));
    aws_one_line(e->code);
    aws_one_line(e->message);
    aws_one_line(e->query_code);
    buf_wipe(&msg);
    buf_free(&code);
}

static aws_attempt_hook aws_hook;
void aws_set_attempt_hook(aws_attempt_hook hook) { aws_hook = hook; }

/* The operation of a request: the X-Amz-Target after its '.', or the query
 * protocol's Action (the form's first parameter). */
static const char *aws_req_op(const aws_req *r, size_t *len)
{
    const char *op = "?";
    size_t n = 1;
    if (r->target) {
        const char *dot = strrchr(r->target, '.');
        op = dot ? dot + 1 : r->target;
        n = strlen(op);
    } else if (r->len > 7 && strncmp(r->body, "Action=", 7) == 0) {
        op = r->body + 7;
        n = strcspn(op, "&");
    } else if (r->len > 0) {
        const char *a = strstr(r->body, "&Action=");
        if (a) {
            op = a + 8;
            n = strcspn(op, "&");
        }
    }
    *len = n;
    return op;
}

/* Counts the attempt per operation (reqstat.h). */
static void aws_count_request(const aws_client *c, const aws_req *r)
{
    size_t n;
    const char *op = aws_req_op(r, &n);
    reqstat_request(c->service, op, n);
}

/* One HTTP exchange. 0 on 2xx; -1 with e filled and *retry set when trying
 * again may succeed. */
static int aws_attempt(aws_client *c, const aws_req *r, aws_err *e, int *retry)
{
    char err[256] = "";
    *retry = 0;
    buf_reset(c->resp);
    buf_reset(&c->query_error);
    buf_reset(&c->error_type);
    c->resp_cap_hit = 0;
    c->curl_err[0] = '\0';
    memset(e->code, 0, sizeof e->code);
    e->query_code[0] = e->message[0] = '\0';
    e->http_status = 0;
    const aws_creds *cr = aws_credp_get(c->credp, err, sizeof err);
    if (!cr) {
        snprintf(e->message, sizeof e->message, "credentials: %s", err);
        aws_one_line(e->message);
        return -1;
    }
    struct curl_slist *hdrs = aws_sign(c, cr, r);
    if (!hdrs) {
        snprintf(e->message, sizeof e->message, "cannot sign the request");
        return -1;
    }
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->len);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, c->total_ms);
    c->stats.requests++;
    aws_count_request(c, r);
    CURLcode rc = curl_easy_perform(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    aws_headers_free(hdrs);
    if (rc != CURLE_OK) {
        const char *ca = getenv("AWS_CA_BUNDLE");
        int bad_ca = rc == CURLE_SSL_CACERT_BADFILE && ca && *ca;
        snprintf(e->message, sizeof e->message, "%s%.200s%s%s%s%s",
                 bad_ca ? "AWS_CA_BUNDLE " : "", bad_ca ? ca : "", bad_ca ? ": " : "",
                 c->resp_cap_hit ? "reply larger than 64 MiB" : curl_easy_strerror(rc),
                 c->curl_err[0] ? ": " : "", c->curl_err);
        aws_one_line(e->message);
        *retry = aws_curl_retryable(rc);
        return -1;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &e->http_status);
    if (e->http_status >= 200 && e->http_status < 300) return 0;
    aws_fill_http_error(c, cr, e);
    int throttled = aws_is_throttle(e->code) || aws_is_throttle(e->query_code) || e->http_status == 429;
    if (throttled) c->stats.throttles++;
    *retry = throttled || e->http_status >= 500 || aws_is_transient(e->code);
    return -1;
}

/* The retry loop shared by both protocols. */
static int aws_call(aws_client *c, const aws_req *r, buf_t *resp, aws_err *e)
{
    aws_err local;
    buf_t scratch = BUF_INIT;
    if (!e) e = &local;
    memset(e, 0, sizeof *e);
    c->resp = resp ? resp : &scratch;
    int rc = -1, retry = 0;
    for (int attempt = 1; attempt <= c->max_attempts; attempt++) {
        if (attempt > 1) {
            c->stats.retries++;
            aws_sleep_ms(aws_backoff_ms(c, attempt - 1));
        }
        e->attempts = attempt;
        rc = aws_attempt(c, r, e, &retry);
        if (aws_hook) {
            size_t n;
            const char *op = aws_req_op(r, &n);
            const char *outcome = rc == 0 ? "ok"
                : e->http_status == 0 ? (strncmp(e->message, "credentials", 11) == 0 || strncmp(e->message, "cannot sign", 11) == 0
                                         ? "credentials_error" : "network_error")
                : aws_is_throttle(e->code) || aws_is_throttle(e->query_code) || e->http_status == 429 ? "throttled"
                : e->http_status >= 500 ? "server_error" : "client_error";
            aws_hook(c->service, op, n, outcome, rc < 0 && retry && attempt < c->max_attempts);
        }
        if (rc == 0 || !retry) break;
    }
    if (rc < 0) c->stats.errors++;
    c->resp = NULL;
    buf_free(&scratch);
    return rc;
}

int aws_json_call(aws_client *c, const char *target, const char *body, size_t len, buf_t *resp, aws_err *e)
{
    aws_req r = { "application/x-amz-json-1.0", target, body ? body : "", body ? len : 0 };
    return aws_call(c, &r, resp, e);
}

int aws_query_call(aws_client *c, const char *form, size_t len, buf_t *resp, aws_err *e)
{
    aws_req r = { "application/x-www-form-urlencoded; charset=utf-8", NULL, form ? form : "", form ? len : 0 };
    return aws_call(c, &r, resp, e);
}

/* ---- form encoding and pairs ----------------------------------------------- */

static void aws_form_enc(buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char ch = *p;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            buf_addc(b, (char)ch);
        } else {
            char e[3] = { '%', hex[ch >> 4], hex[ch & 15] };
            buf_add(b, e, 3);
        }
    }
}

void aws_form_add(buf_t *form, const char *key, const char *value)
{
    if (form->len) buf_addc(form, '&');
    aws_form_enc(form, key ? key : "");
    buf_addc(form, '=');
    aws_form_enc(form, value ? value : "");
}

void aws_pairs_add(aws_pairs *p, const char *name, const char *value)
{
    p->v = xrealloc(p->v, (p->n + 1) * sizeof *p->v);
    p->v[p->n].name = xstrdup(name ? name : "");
    p->v[p->n].value = xstrdup(value ? value : "");
    p->n++;
}

const char *aws_pairs_get(const aws_pairs *p, const char *name)
{
    for (size_t i = 0; p && i < p->n; i++)
        if (strcmp(p->v[i].name, name) == 0) return p->v[i].value;
    return NULL;
}

void aws_pairs_free(aws_pairs *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].name);
        free(p->v[i].value);
    }
    free(p->v);
    p->v = NULL;
    p->n = 0;
}
