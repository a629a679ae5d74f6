/* delayer-api: an HTTP/1.1 JSON API over the same lib/store as the CLI
 * (docs/api.md, docs/api.yaml, delayer-api(1)).
 *
 * Threads. libmicrohttpd runs a pool of --threads internal threads, each
 * with its own epoll set of connections; a request is handled start to end
 * on one pool thread, which blocks during its DynamoDB/SQS round trips. The
 * store and its curl handles are not thread-safe, so each pool thread opens
 * its own store on first use (a "slot"): no lock is held across AWS calls,
 * and --threads is the number of AWS calls in flight. The main thread only
 * waits for signals and, once a second, writes each slot's counter deltas
 * and queued lifecycle events (one UpdateItem per counter per second, not
 * per schedule; a SIGKILL loses at most a second of counter deltas, which
 * `delayer stats --recount` repairs, never a schedule).
 *
 * Paths are taken raw (no unescaping by MHD) and percent-decoded here, so
 * an id may hold any UTF-8, '/' and ':' included ("%2F", "%3A"): the
 * custom methods ":retry" and ":delete" are recognised only unescaped. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "buf.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include "schedreq.h"
#include "sigv4.h"
#include "store.h"
#include "timeutil.h"

#ifndef DELAYER_VERSION
#define DELAYER_VERSION "dev"
#endif

#define EXIT_USAGE  100
#define EXIT_SYSTEM 111

static const char usage[] =
    "usage: delayer-api [--listen HOST:PORT] (--tokens FILE | --no-auth)\n"
    "                   (--tls-cert FILE --tls-key FILE | --plain-http) [options]\n"
    "       delayer-api --tokens FILE --new-token NAME:SCOPE\n"
    "\n"
    "Serves the delayer HTTP API (docs/api.md) over the deployment's store.\n"
    "\n"
    "  --listen HOST:PORT     address to listen on [127.0.0.1:8080]\n"
    "  --tokens FILE          bearer tokens, hashed, one \"NAME SCOPE SHA256\" a line;\n"
    "                         must be mode 0600 (or stricter); re-read on SIGHUP\n"
    "  --no-auth              no authentication: only on a loopback address\n"
    "  --new-token NAME:SCOPE generate a token (scope read, write or admin), append\n"
    "                         its hash to --tokens FILE and print the token\n"
    "  --tls-cert FILE        HTTPS certificate chain (PEM)\n"
    "  --tls-key FILE         HTTPS private key (PEM)\n"
    "  --plain-http           serve plain HTTP (behind a TLS-terminating proxy)\n"
    "  --threads N            server threads, each with its own store [4]\n"
    "  --max-connections N    open connections at most [256]\n"
    "  --max-body BYTES       request body limit, one schedule [1048576]\n"
    "  --max-import BYTES     request body limit of an import [67108864]\n"
    "  --import-lines N       lines per import request at most [100000]\n"
    "  --max-header BYTES     request line and headers at most [16384]\n"
    "  --idle-timeout DURATION  close a connection idle this long [30s]\n"
    "  --request-timeout DURATION  a request body must arrive within [60s]\n"
    "  --rate N               requests per second per token [200]\n"
    "  --burst N              requests a token may make at once [400]\n"
    "  --prefix P             deployment prefix (default DELAYER_PREFIX or delayer)\n"
    "  --no-events            do not publish lifecycle events\n"
    "  --log-level LEVEL      debug, info, warn, error, off [info]\n"
    "  --help, --version\n";

/* ---------------------------------------------------------------- config */

typedef struct {
    const char *listen, *tokens, *cert, *key, *prefix, *new_token;
    int plain, no_auth, no_events, threads;
    long max_body, max_import, import_lines, max_header, max_conn;
    int64_t idle_ms, req_ms;
    double rate, burst;
} api_conf;

static api_conf C = {
    .listen = "127.0.0.1:8080", .threads = 4, .max_body = 1048576, .max_import = 67108864,
    .import_lines = 100000, .max_header = 16384, .max_conn = 256, .idle_ms = 30000, .req_ms = 60000,
    .rate = 200, .burst = 400,
};
static store_conf SC;

static int api_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int api_die(int code, const char *fmt, ...)
{
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    for (char *p = m; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "delayer-api: %s\n", m);
    return code;
}

/* ---------------------------------------------------------------- tokens */

enum { SCOPE_NONE = 0, SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN };
static const char *const scope_names[] = {"", "read", "write", "admin"};

typedef struct {
    char name[65];
    int scope;
    char hash[65];       /* lowercase hex SHA-256 of the token */
    double bucket;       /* rate limit: tokens left */
    int64_t last_us;
} api_token;

typedef struct {
    api_token *v;
    size_t n;
} api_tokens;

static api_tokens tokens;                 /* guarded by tok_mu */
static api_token anonymous = {"anonymous", SCOPE_ADMIN, "", 0, 0};
static pthread_mutex_t tok_mu = PTHREAD_MUTEX_INITIALIZER;

static int scope_parse(const char *s)
{
    for (int i = SCOPE_READ; i <= SCOPE_ADMIN; i++)
        if (!strcmp(s, scope_names[i])) return i;
    return SCOPE_NONE;
}

static int token_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 64 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-@") == n;
}

/* Reads FILE into out: refuses a file others may read or write (the hashes
 * let an attacker try guesses offline), a bad line (named). */
static int tokens_load(const char *path, api_tokens *out, char *err, size_t el)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0) {
        snprintf(err, el, "tokens: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, el, "tokens: %s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, el, "tokens: %s has mode %04o: others may read it; chmod 600 it", path,
                 (unsigned)(st.st_mode & 07777));
        close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    char *line = NULL;
    size_t cap = 0;
    long ln = 0;
    int rc = 0;
    memset(out, 0, sizeof *out);
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        char name[128], scope[32], hash[128], extra[8];
        ln++;
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || *p == '\0') continue;
        int k = sscanf(p, "%127s %31s %127s %7s", name, scope, hash, extra);
        if (k != 3 || !token_name_ok(name) || !scope_parse(scope) || strlen(hash) != 64 ||
            strspn(hash, "0123456789abcdef") != 64) {
            snprintf(err, el, "tokens: %s line %ld: expected \"NAME SCOPE SHA256-HEX\" (scope read, write or admin)",
                     path, ln);
            rc = -1;
            break;
        }
        out->v = xrealloc(out->v, (out->n + 1) * sizeof *out->v);
        api_token *t = &out->v[out->n++];
        memset(t, 0, sizeof *t);
        memcpy(t->name, name, strlen(name) + 1);   /* token_name_ok: at most 64 bytes */
        t->scope = scope_parse(scope);
        memcpy(t->hash, hash, 65);
        t->bucket = C.burst;
    }
    free(line);
    fclose(f);
    if (rc) {
        free(out->v);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

/* --new-token NAME:SCOPE: 32 random bytes as hex; only the hash is kept. */
static int token_new(void)
{
    char name[128], hash[65], tok[65];
    unsigned char rnd[32];
    const char *colon = strrchr(C.new_token, ':');
    if (!C.tokens) return api_die(EXIT_USAGE, "new-token: give --tokens FILE");
    if (!colon || (size_t)(colon - C.new_token) >= sizeof name)
        return api_die(EXIT_USAGE, "new-token: expected NAME:SCOPE");
    memcpy(name, C.new_token, (size_t)(colon - C.new_token));
    name[colon - C.new_token] = '\0';
    if (!token_name_ok(name)) return api_die(EXIT_USAGE, "new-token: NAME must be 1-64 of [A-Za-z0-9._@-]");
    if (!scope_parse(colon + 1)) return api_die(EXIT_USAGE, "new-token: SCOPE must be read, write or admin");
    if (RAND_bytes(rnd, sizeof rnd) != 1) return api_die(EXIT_SYSTEM, "new-token: no randomness");
    for (int i = 0; i < 32; i++) snprintf(tok + 2 * i, 3, "%02x", rnd[i]);
    sigv4_sha256_hex(tok, 64, hash);
    int fd = open(C.tokens, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    struct stat st;
    if (fd < 0) return api_die(EXIT_SYSTEM, "tokens: cannot open %s: %s", C.tokens, strerror(errno));
    if (fstat(fd, &st) != 0 || (st.st_mode & 077)) {
        close(fd);
        return api_die(EXIT_USAGE, "tokens: %s has mode %04o: others may read it; chmod 600 it", C.tokens,
                       (unsigned)(st.st_mode & 07777));
    }
    char line[256];
    int n = snprintf(line, sizeof line, "%s %s %s\n", name, colon + 1, hash);
    if (write(fd, line, (size_t)n) != n) {
        close(fd);
        return api_die(EXIT_SYSTEM, "tokens: cannot write %s", C.tokens);
    }
    close(fd);
    printf("%s\n", tok);
    return 0;
}

/* Authenticates a "Bearer TOKEN" header and takes one request from its rate
 * bucket. Every entry is compared (constant time, no early exit), so the
 * time taken says nothing about which hash came close. 1 ok (who/scope
 * set), 0 unknown token, -1 rate exceeded. */
static int token_check(const char *authz, char *who, size_t wn, int *scope)
{
    api_token *t = NULL;
    int rc = 0;
    pthread_mutex_lock(&tok_mu);
    if (C.no_auth) {
        t = &anonymous;
    } else if (authz && !strncasecmp(authz, "Bearer ", 7)) {
        char h[65];
        const char *v = authz + 7;
        v += strspn(v, " ");
        sigv4_sha256_hex(v, strlen(v), h);
        for (size_t i = 0; i < tokens.n; i++)
            if (CRYPTO_memcmp(h, tokens.v[i].hash, 64) == 0) t = &tokens.v[i];
    }
    if (t) {
        int64_t now = time_mono_us();
        if (t->last_us) t->bucket += (double)(now - t->last_us) / 1e6 * C.rate;
        if (t->bucket > C.burst || !t->last_us) t->bucket = C.burst;
        t->last_us = now;
        if (t->bucket >= 1) {
            t->bucket -= 1;
            rc = 1;
        } else {
            rc = -1;
        }
        snprintf(who, wn, "%s", t->name);
        *scope = t->scope;
    }
    pthread_mutex_unlock(&tok_mu);
    return rc;
}

static void tokens_reload(void)
{
    api_tokens nt;
    char err[512];
    if (tokens_load(C.tokens, &nt, err, sizeof err) < 0) {
        log_ev(LOG_ERROR, "tokens not reloaded: keeping the previous ones", "error", err, NULL);
        return;
    }
    pthread_mutex_lock(&tok_mu);
    /* Buckets carry over by name: a reload must not reset a flood's limit. */
    for (size_t i = 0; i < nt.n; i++)
        for (size_t j = 0; j < tokens.n; j++)
            if (!strcmp(nt.v[i].name, tokens.v[j].name)) {
                nt.v[i].bucket = tokens.v[j].bucket;
                nt.v[i].last_us = tokens.v[j].last_us;
            }
    free(tokens.v);
    tokens = nt;
    pthread_mutex_unlock(&tok_mu);
    log_ev(LOG_INFO, "tokens reloaded", "n", log_i64((int64_t)nt.n), NULL);
}

/* ---------------------------------------------------------------- slots */

/* One per server thread: its store and its counter deltas. mu is held by
 * the thread while it handles a request and by the main thread's flush. */
typedef struct {
    pthread_mutex_t mu;
    store *s;
    store_counts *counts;
} api_slot;

static __thread api_slot *t_slot;
static api_slot **slots;
static size_t nslots;
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ulid_mu = PTHREAD_MUTEX_INITIALIZER;

/* The calling thread's slot, locked; NULL (err set) if its store cannot be
 * opened (AWS unreachable: the next request tries again). */
static api_slot *slot_enter(char *err, size_t el)
{
    if (!t_slot) {
        api_slot *sl = xcalloc(1, sizeof *sl);
        pthread_mutex_init(&sl->mu, NULL);
        sl->counts = store_counts_new();
        pthread_mutex_lock(&slots_mu);
        slots = xrealloc(slots, (nslots + 1) * sizeof *slots);
        slots[nslots++] = sl;
        pthread_mutex_unlock(&slots_mu);
        t_slot = sl;
    }
    pthread_mutex_lock(&t_slot->mu);
    if (!t_slot->s) {
        t_slot->s = store_open(&SC, err, el);
        if (t_slot->s && store_load(t_slot->s) != STORE_OK) {
            snprintf(err, el, "%s", t_slot->s->err);
            store_close(t_slot->s);
            t_slot->s = NULL;
        }
        if (!t_slot->s) {
            pthread_mutex_unlock(&t_slot->mu);
            return NULL;
        }
    }
    return t_slot;
}

static void slot_leave(api_slot *sl)
{
    if (sl) pthread_mutex_unlock(&sl->mu);
}

/* Writes a slot's counter deltas and events (main thread, once a second,
 * and at exit). */
static void slots_flush(void)
{
    pthread_mutex_lock(&slots_mu);
    size_t n = nslots;
    pthread_mutex_unlock(&slots_mu);
    for (size_t i = 0; i < n; i++) {
        api_slot *sl = slots[i];
        pthread_mutex_lock(&sl->mu);
        if (sl->s && store_counts_pending(sl->counts) && store_counts_flush(sl->s, sl->counts) != STORE_OK)
            log_ev(LOG_WARN, "counters not updated; kept for the next flush", "error", sl->s->err, NULL);
        if (sl->s && sl->s->nev) {
            uint64_t before = sl->s->ev_failed;
            store_events_flush(sl->s);
            if (sl->s->ev_failed > before) log_ev(LOG_WARN, "events not published", "error", sl->s->ev_err, NULL);
        }
        pthread_mutex_unlock(&sl->mu);
    }
}

/* ---------------------------------------------------------------- helpers */

/* The buffer's bytes, now the caller's (never NULL); b is emptied. */
static char *take(buf_t *b)
{
    char *p = b->p ? b->p : xstrdup("");
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes s[0..n) ('+' is a space when plus): -1 on a bad escape. */
static int pct_decode(const char *s, size_t n, int plus, buf_t *out)
{
    buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int a = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1, b = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (a < 0 || b < 0) return -1;
            c = (char)(a * 16 + b);
            i += 2;
        } else if (plus && c == '+') {
            c = ' ';
        }
        buf_addc(out, c);
    }
    return 0;
}

/* The id as a path segment: every byte but the unreserved ones escaped. */
static void pct_encode(buf_t *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-._~", *p))
            buf_addc(out, (char)*p);
        else
            buf_printf(out, "%%%02X", *p);
    }
}

/* The media type of a Content-Type header, without parameters, is want. */
static int media_is(const char *ct, const char *want)
{
    if (!ct) return 0;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    return n == strlen(want) && !strncasecmp(ct, want, n);
}

/* An AWS failure is a 503: the request may be retried. */
static int aws_throttled(const char *err)
{
    return strstr(err, "Throttl") || strstr(err, "ProvisionedThroughputExceeded") || strstr(err, "RequestLimitExceeded") ||
           strstr(err, "TooManyRequests");
}

/* ---------------------------------------------------------------- requests */

enum {
    R_NONE = 0, R_HEALTHZ, R_READYZ, R_METRICS, R_LIST, R_CREATE, R_IMPORT, R_GET, R_CANCEL, R_RETRY, R_DELETE,
    R_STATS, R_NROUTES
};
static const char *const route_names[] = {
    "other", "GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/schedules", "POST /v1/schedules",
    "POST /v1/schedules:import", "GET /v1/schedules/{id}", "DELETE /v1/schedules/{id}",
    "POST /v1/schedules/{id}:retry", "POST /v1/schedules/{id}:delete", "GET /v1/stats",
};
static const int route_scope[] = {0, 0, 0, 0, SCOPE_READ, SCOPE_WRITE, SCOPE_WRITE, SCOPE_READ,
                                  SCOPE_WRITE, SCOPE_WRITE, SCOPE_ADMIN, SCOPE_READ};

typedef struct {
    int route;
    int status;
    int64_t t0_us;
    char *id;               /* decoded, for the {id} routes */
    char who[65];
    int has_body;           /* POST routes */
    buf_t body;             /* create: the whole body */
    int failed;             /* a response was queued before the body ended */
    int late;               /* an error found in the body: answered when it ends */
    char late_msg[120];
    size_t discarded;       /* body bytes dropped after it */
    /* import */
    FILE *out;
    buf_t part;             /* the line being received */
    long line, nlines;
} api_req;


/* Queues body (taken) with status and optional header pairs (NULL-ended). */
static enum MHD_Result reply(struct MHD_Connection *c, api_req *q, int status, const char *ctype, buf_t *body, ...)
{
    size_t len = body->len;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, take(body), MHD_RESPMEM_MUST_FREE);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    va_list ap;
    va_start(ap, body);
    for (const char *k; (k = va_arg(ap, const char *));) MHD_add_response_header(r, k, va_arg(ap, const char *));
    va_end(ap);
    q->status = status;
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

/* The error object {"code","field","message"} (field null when none). */
static void error_obj(json_w *w, const char *code, const char *field, const char *msg)
{
    jw_obj(w);
    jw_key(w, "code");
    jw_str(w, code);
    jw_key(w, "field");
    if (field) jw_str(w, field);
    else jw_null(w);
    jw_key(w, "message");
    jw_str(w, msg);
    jw_obj_end(w);
}

/* {"error":{...}}: the one shape of every error. */
static void error_json(buf_t *b, const char *code, const char *field, const char *msg)
{
    json_w w;
    jw_init(&w, b);
    jw_obj(&w);
    jw_key(&w, "error");
    error_obj(&w, code, field, msg);
    jw_obj_end(&w);
}

static const char *status_code_name(int st)
{
    switch (st) {
    case 400: return "invalid";
    case 401: return "unauthenticated";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 409: return "conflict";
    case 411: return "length_required";
    case 413: return "too_large";
    case 415: return "unsupported_media_type";
    case 429: return "rate_limited";
    case 431: return "headers_too_large";
    case 503: return "unavailable";
    default: return "internal";
    }
}

/* An error response. field NULL: none. Extra header pairs, NULL-ended. */
static enum MHD_Result err_reply(struct MHD_Connection *c, api_req *q, int status, const char *code, const char *field,
                                 const char *msg, const char *h1, const char *v1)
{
    buf_t b = BUF_INIT;
    error_json(&b, code ? code : status_code_name(status), field, msg);
    buf_addc(&b, '\n');
    char sb[24];
    if (status >= 500) log_ev(LOG_WARN, "request failed", "route", route_names[q->route], "status",
                              log_i64_buf(sb, status), "error", msg, NULL);
    return reply(c, q, status, "application/json", &b, h1, v1, NULL);
}

/* A "FIELD: PROBLEM" line (lib conventions) as a 400 naming FIELD. */
static void split_field(const char *e, char *field, size_t fn)
{
    const char *sep = strstr(e, ": ");
    size_t n = sep ? (size_t)(sep - e) : 0;
    if (n >= fn) n = fn - 1;
    memcpy(field, e, n);
    field[n] = '\0';
}

static enum MHD_Result bad_request(struct MHD_Connection *c, api_req *q, const char *code, const char *e)
{
    char field[128];
    split_field(e, field, sizeof field);
    int nofield = !field[0] || !strcmp(field, "json");
    return err_reply(c, q, 400, nofield ? "malformed_json" : code, nofield ? NULL : field, e, NULL, NULL);
}

static enum MHD_Result aws_unavailable(struct MHD_Connection *c, api_req *q, const char *err)
{
    return err_reply(c, q, 503, aws_throttled(err) ? "throttled" : "unavailable", NULL, err, "Retry-After", "1");
}

static enum MHD_Result json_reply(struct MHD_Connection *c, api_req *q, int status, buf_t *b, const char *h1,
                                  const char *v1)
{
    buf_addc(b, '\n');
    return reply(c, q, status, "application/json", b, h1, v1, NULL);
}

/* ---- query parameters */

typedef struct {
    const char *const *allowed;
    char bad[80];
} qcheck;

static enum MHD_Result query_key_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    qcheck *qc = cls;
    for (const char *const *a = qc->allowed; *a; a++)
        if (!strcmp(*a, key)) return MHD_YES;
    if (!qc->bad[0]) sched_quote(qc->bad, sizeof qc->bad, key, 60);
    return MHD_YES;
}

/* The decoded value of parameter name, or NULL. -1 on a bad escape. */
static int query_get(struct MHD_Connection *c, const char *name, buf_t *out, const char **val)
{
    const char *raw = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    *val = NULL;
    if (!raw) return 0;
    if (pct_decode(raw, strlen(raw), 1, out) < 0 || memchr(buf_str(out), 0, out->len) ||
        !json_valid_utf8(buf_str(out), out->len))
        return -1;
    *val = buf_str(out);
    return 0;
}

/* ---- handlers */

static enum MHD_Result h_healthz(struct MHD_Connection *c, api_req *q)
{
    buf_t b = BUF_INIT;
    buf_adds(&b, "{\"status\":\"ok\"}");
    return json_reply(c, q, 200, &b, NULL, NULL);
}

static enum MHD_Result h_readyz(struct MHD_Connection *c, api_req *q)
{
    char err[768];
    api_slot *sl = slot_enter(err, sizeof err);
    if (!sl) return aws_unavailable(c, q, err);
    sched_rec r;
    sched_rec_init(&r);
    /* One strongly consistent GetItem: the table answers (an absent id is fine). */
    int rc = store_get(sl->s, "\x01readyz", &r);
    if (rc == STORE_ERR) snprintf(err, sizeof err, "%s", sl->s->err);
    sched_rec_free(&r);
    slot_leave(sl);
    if (rc == STORE_ERR) return aws_unavailable(c, q, err);
    buf_t b = BUF_INIT;
    buf_adds(&b, "{\"status\":\"ready\"}");
    return json_reply(c, q, 200, &b, NULL, NULL);
}

static enum MHD_Result h_metrics(struct MHD_Connection *c, api_req *q)
{
    size_t n;
    char *m = metrics_render(&n);
    buf_t b = BUF_INIT;
    buf_add(&b, m, n);
    free(m);
    return reply(c, q, 200, "text/plain; version=0.0.4; charset=utf-8", &b, NULL);
}

static enum MHD_Result h_get(struct MHD_Connection *c, api_req *q)
{
    char err[768];
    api_slot *sl = slot_enter(err, sizeof err);
    if (!sl) return aws_unavailable(c, q, err);
    sched_rec r;
    sched_rec_init(&r);
    int rc = store_get(sl->s, q->id, &r);
    snprintf(err, sizeof err, "%s", sl->s->err);
    slot_leave(sl);
    buf_t b = BUF_INIT;
    enum MHD_Result res;
    if (rc == STORE_OK) {
        sched_json(&b, &r, 1);
        res = json_reply(c, q, 200, &b, NULL, NULL);
    } else if (rc == STORE_NOTFOUND) {
        res = err_reply(c, q, 404, "not_found", "id", "id: no such schedule", NULL, NULL);
    } else {
        res = aws_unavailable(c, q, err);
    }
    sched_rec_free(&r);
    return res;
}

/* cancel, retry, delete: the transition, then the record as it is now. */
static enum MHD_Result h_transition(struct MHD_Connection *c, api_req *q)
{
    char err[768];
    api_slot *sl = slot_enter(err, sizeof err);
    if (!sl) return aws_unavailable(c, q, err);
    sched_rec old, cur;
    sched_rec_init(&old);
    sched_rec_init(&cur);
    buf_t warn = BUF_INIT, b = BUF_INIT;
    int64_t now = time_now_ms();
    int rc = q->route == R_CANCEL ? schedreq_cancel(sl->s, q->id, now, &old, &warn)
           : q->route == R_RETRY  ? schedreq_retry(sl->s, q->id, now, &old, &warn)
                                  : schedreq_delete(sl->s, q->id, now, &old, &warn);
    if (rc == STORE_OK && q->route != R_DELETE && store_get(sl->s, q->id, &cur) == STORE_OK) sched_json(&b, &cur, 1);
    else if (rc == STORE_OK) sched_json(&b, &old, 1);
    snprintf(err, sizeof err, "%s", sl->s->err);
    slot_leave(sl);
    if (warn.len) log_ev(LOG_WARN, "warning", "id", q->id, "warning", buf_str(&warn), NULL);
    buf_free(&warn);
    enum MHD_Result res;
    if (rc == STORE_OK) {
        res = json_reply(c, q, 200, &b, NULL, NULL);
    } else if (rc == STORE_LOST) {
        char m[160];
        snprintf(m, sizeof m, "state: the schedule is %s: only %s", sched_state_name(old.state),
                 q->route == R_CANCEL ? "NEW or ENQUEUED can be cancelled" : "FAILED can be retried");
        res = err_reply(c, q, 409, "state_conflict", "state", m, NULL, NULL);
    } else if (rc == STORE_NOTFOUND) {
        res = err_reply(c, q, 404, "not_found", "id", "id: no such schedule", NULL, NULL);
    } else {
        res = aws_unavailable(c, q, err);
    }
    buf_free(&b);
    sched_rec_free(&old);
    sched_rec_free(&cur);
    return res;
}

/* One schedule object (create, or an import line): parse, validate, create.
 * Returns the HTTP status; body gets the record or the error object. */
static int create_one(api_slot *sl, json_doc *d, int64_t now, buf_t *body, const char **code_out, char **id_out,
                      int *state_out)
{
    char e[600];
    sched_rec r, old;
    sched_rec_init(&r);
    sched_rec_init(&old);
    sched_limits lim = {sl->s->conf.grace_ms, sl->s->conf.horizon_ms};
    int status;
    *code_out = NULL;
    if (schedreq_parse(d, 0, &lim, now, &r, e, sizeof e) < 0) {
        char field[128];
        split_field(e, field, sizeof field);
        error_json(body, strcmp(field, "json") ? "invalid" : "malformed_json", strcmp(field, "json") ? field : NULL, e);
        status = 400;
        goto out;
    }
    if (!r.id) {
        char id[SCHED_ULID_LEN + 1];
        pthread_mutex_lock(&ulid_mu);   /* sched_ulid keeps per-process state */
        int u = sched_ulid(id, now);
        pthread_mutex_unlock(&ulid_mu);
        if (u < 0) {
            error_json(body, "internal", NULL, "id: no randomness");
            status = 500;
            goto out;
        }
        r.id = xstrdup(id);
    }
    buf_t warn = BUF_INIT;
    int rc = schedreq_create(sl->s, &r, now, &old, sl->counts, &warn);
    if (warn.len) log_ev(LOG_WARN, "warning", "id", r.id, "warning", buf_str(&warn), NULL);
    buf_free(&warn);
    switch (rc) {
    case STORE_OK:
        sched_json(body, &r, 1);
        status = 201;
        break;
    case SCHEDREQ_SAME:
        sched_json(body, &old, 1);
        status = 200;
        break;
    case SCHEDREQ_CONFLICT:
        snprintf(e, sizeof e, "id: already used by a schedule with different content");
        error_json(body, "id_conflict", "id", e);
        status = 409;
        break;
    case STORE_NOTFOUND:
        error_json(body, "invalid", "topic", sl->s->err);
        status = 400;
        break;
    case SCHEDREQ_PAST:   /* late, and not an identical re-submission */
        error_json(body, "invalid", "at", sl->s->err);
        status = 400;
        break;
    default:
        error_json(body, aws_throttled(sl->s->err) ? "throttled" : "unavailable", NULL, sl->s->err);
        *code_out = "retry";
        status = 503;
    }
out:
    if (status < 300) {
        *id_out = xstrdup(r.id);
        *state_out = status == 201 ? r.state : old.state;
    }
    sched_rec_free(&r);
    sched_rec_free(&old);
    return status;
}

static enum MHD_Result h_create(struct MHD_Connection *c, api_req *q)
{
    char err[768];
    json_doc d;
    if (json_parse(&d, q->body.p ? q->body.p : "", q->body.len) < 0) {
        char m[200];
        snprintf(m, sizeof m, "json: %s", d.err);
        json_free(&d);
        return bad_request(c, q, "malformed_json", m);
    }
    api_slot *sl = slot_enter(err, sizeof err);
    if (!sl) {
        json_free(&d);
        return aws_unavailable(c, q, err);
    }
    buf_t b = BUF_INIT, loc = BUF_INIT;
    const char *retry;
    char *id = NULL;
    int state;
    int st = create_one(sl, &d, time_now_ms(), &b, &retry, &id, &state);
    slot_leave(sl);
    json_free(&d);
    if (st == 201) {
        buf_adds(&loc, "/v1/schedules/");
        pct_encode(&loc, id);
    }
    free(id);
    if (st >= 400) q->status = st;
    if (st == 503) log_ev(LOG_WARN, "request failed", "route", route_names[q->route], "status", "503", NULL);
    enum MHD_Result res = json_reply(c, q, st, &b, st == 201 ? "Location" : retry ? "Retry-After" : NULL,
                                     st == 201 ? buf_str(&loc) : retry ? "1" : NULL);
    buf_free(&loc);
    return res;
}

/* ---- import: one result line per input line, spooled to an unlinked
 * temporary file while the body arrives (memory stays bounded whatever the
 * import's size), sent when the body has ended. */
static void import_line(api_req *q, const char *line, size_t n)
{
    char err[768];
    buf_t b = BUF_INIT;
    json_w w;
    long ln = ++q->line;
    while (n && (line[n - 1] == '\r')) n--;
    if (n == 0) return;   /* blank lines are skipped (but numbered) */
    q->nlines++;
    jw_init(&w, &b);
    jw_obj(&w);
    jw_key(&w, "line");
    jw_i64(&w, ln);
    jw_key(&w, "status");
    if (q->nlines > C.import_lines) {
        char m[120];
        jw_i64(&w, 413);
        jw_key(&w, "error");
        snprintf(m, sizeof m, "import: more than %ld lines in one request: send the rest in another", C.import_lines);
        error_obj(&w, "too_large", NULL, m);
    } else {
        json_doc d;
        buf_t r = BUF_INIT;
        int st, state = -1;
        const char *retry;
        char *id = NULL;
        if ((int64_t)n > C.max_body) {
            char m[120];
            snprintf(m, sizeof m, "line: longer than %ld bytes", C.max_body);
            error_json(&r, "too_large", NULL, m);
            st = 413;
        } else if (json_parse(&d, line, n) < 0) {
            char m[200];
            snprintf(m, sizeof m, "json: %s", d.err);
            error_json(&r, "malformed_json", NULL, m);
            json_free(&d);
            st = 400;
        } else {
            api_slot *sl = slot_enter(err, sizeof err);
            if (!sl) {
                error_json(&r, "unavailable", NULL, err);
                st = 503;
            } else {
                st = create_one(sl, &d, time_now_ms(), &r, &retry, &id, &state);
                slot_leave(sl);
            }
            json_free(&d);
        }
        jw_i64(&w, st);
        if (st < 300) {
            jw_key(&w, "id");
            jw_str(&w, id);
            jw_key(&w, "state");
            jw_str(&w, sched_state_name(state));
        } else {
            /* r holds {"error":{...}}: copy the inner object */
            json_doc ed;
            size_t en;
            jw_key(&w, "error");
            if (json_parse(&ed, r.p, r.len) == 0) {
                const char *raw = json_raw(&ed, json_get(&ed, 0, "error"), &en);
                jw_raw(&w, raw, en);
            } else {
                jw_null(&w);
            }
            json_free(&ed);
        }
        free(id);
        buf_free(&r);
    }
    jw_obj_end(&w);
    buf_addc(&b, '\n');
    fwrite(b.p, 1, b.len, q->out);
    buf_free(&b);
}

static void import_data(api_req *q, const char *data, size_t n)
{
    const char *p = data, *end = data + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            /* keep at most one line past the limit: enough to refuse it */
            if (q->part.len <= (size_t)C.max_body) buf_add(&q->part, p, (size_t)(end - p));
            return;
        }
        if (q->part.len) {
            if (q->part.len <= (size_t)C.max_body) buf_add(&q->part, p, (size_t)(nl - p));
            import_line(q, q->part.p, q->part.len);
            buf_reset(&q->part);
        } else {
            import_line(q, p, (size_t)(nl - p));
        }
        p = nl + 1;
    }
}

static enum MHD_Result h_import_end(struct MHD_Connection *c, api_req *q)
{
    if (q->part.len) import_line(q, q->part.p, q->part.len);
    buf_reset(&q->part);
    fflush(q->out);
    off_t size = ftello(q->out);
    int fd = dup(fileno(q->out));
    fclose(q->out);
    q->out = NULL;
    if (fd < 0 || size < 0) return err_reply(c, q, 500, "internal", NULL, "import: cannot spool the results", NULL, NULL);
    lseek(fd, 0, SEEK_SET);
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
    q->status = 200;
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return rc;
}

/* ---- list */

static const char *const list_params[] = {"state", "since", "until", "topic", "error_prefix", "limit", "cursor", NULL};

typedef struct {
    store_list_q q;
    buf_t arn, cursor, eprefix, out, items;
    size_t off;
    int done, nitems;
    long left;      /* JSON page: records still wanted */
} list_ctx;

static void list_ctx_free(list_ctx *l)
{
    buf_free(&l->arn);
    buf_free(&l->cursor);
    buf_free(&l->eprefix);
    buf_free(&l->out);
    buf_free(&l->items);
    free(l);
}

/* Query parameters -> l->q; 0, or -1 with "FIELD: PROBLEM" in e. */
static int list_params_parse(struct MHD_Connection *c, api_slot *sl, list_ctx *l, int ndjson, char *e, size_t el)
{
    buf_t v = BUF_INIT;
    const char *val;
    int rc = -1;
    int64_t now = time_now_ms(), d;
    char m[160];
    l->q.to_ms = INT64_MAX;
    l->q.limit = 100;
#define GET(name) \
    if (query_get(c, name, &v, &val) < 0) { snprintf(e, el, "%s: bad percent-encoding or UTF-8", name); goto out; }
    GET("state");
    if (val) {
        char *dup = xstrdup(val), *save = NULL;
        for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int st = sched_state_parse(t);
            if (st < 0) {
                char qt[40];
                sched_quote(qt, sizeof qt, t, 20);
                snprintf(e, el, "state: unknown state \"%s\" (NEW, ENQUEUED, PUBLISHED, CANCELLED, FAILED, INVALID)", qt);
                free(dup);
                goto out;
            }
            int seen = 0;
            for (int i = 0; i < l->q.nstates; i++) seen |= l->q.states[i] == st;
            if (!seen) l->q.states[l->q.nstates++] = st;
        }
        free(dup);
    }
    GET("since");
    if (val) {
        /* a time, or a duration back from now */
        if (time_parse_at(val, &l->q.from_ms, m, sizeof m) < 0) {
            if (time_parse_duration(val, &d, m, sizeof m) < 0) {
                snprintf(e, el, "since: expected an RFC 3339 time or a duration such as 1h");
                goto out;
            }
            l->q.from_ms = now - d;
        }
    }
    GET("until");
    if (val && time_parse_at(val, &l->q.to_ms, m, sizeof m) < 0) {
        snprintf(e, el, "until: %s", m);
        goto out;
    }
    if (l->q.from_ms > l->q.to_ms) {
        snprintf(e, el, "since: after until");
        goto out;
    }
    GET("limit");
    if (val) {
        int64_t n;
        if (json_parse_i64(val, strlen(val), &n) < 0 || n < 1 || n > 1000) {
            snprintf(e, el, "limit: expected a number from 1 to 1000");
            goto out;
        }
        l->q.limit = (long)n;
    }
    l->left = l->q.limit;
    if (ndjson) l->q.limit = 100;   /* page size of the stream; it streams every match */
    GET("cursor");
    if (val) {
        if (store_cursor_check(val, e, el) < 0) goto out;
        buf_adds(&l->cursor, val);
    }
    GET("error_prefix");
    if (val) {
        buf_adds(&l->eprefix, val);
        l->q.error_prefix = buf_str(&l->eprefix);
    }
    GET("topic");
    if (val) {
        if (!strncmp(val, "arn:", 4)) {
            buf_adds(&l->arn, val);
        } else {
            int r = store_topic_resolve(sl->s, val, &l->arn);
            if (r != STORE_OK) {
                snprintf(e, el, "%s", sl->s->err);
                rc = r == STORE_NOTFOUND ? -1 : -2;
                goto out;
            }
        }
        l->q.topic = buf_str(&l->arn);
    }
#undef GET
    rc = 0;
out:
    buf_free(&v);
    return rc;
}

static int list_emit(void *ctx, const sched_rec *r)
{
    list_ctx *l = ctx;
    if (l->nitems++) buf_addc(&l->items, ',');
    sched_json(&l->items, r, 0);
    return 0;
}

static int stream_emit(void *ctx, const sched_rec *r)
{
    list_ctx *l = ctx;
    sched_json(&l->out, r, 0);
    buf_addc(&l->out, '\n');
    return 0;
}

/* One store_list page into l->out (stream) or l->items (JSON). */
static int list_page(api_slot *sl, list_ctx *l, int stream)
{
    buf_t next = BUF_INIT;
    l->q.cursor = l->cursor.len ? buf_str(&l->cursor) : NULL;
    int rc = store_list(sl->s, &l->q, stream ? stream_emit : list_emit, l, &next);
    buf_reset(&l->cursor);
    if (rc == STORE_OK && next.len) buf_add(&l->cursor, next.p, next.len);
    else l->done = 1;
    buf_free(&next);
    return rc;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    list_ctx *l = cls;
    while (l->off >= l->out.len) {
        if (l->done) return MHD_CONTENT_READER_END_OF_STREAM;
        buf_reset(&l->out);
        l->off = 0;
        char err[768];
        api_slot *sl = slot_enter(err, sizeof err);
        if (!sl || list_page(sl, l, 1) != STORE_OK) {
            /* The status line is gone: the stream ends with an error object. */
            if (sl) snprintf(err, sizeof err, "%s", sl->s->err);
            error_json(&l->out, "unavailable", NULL, err);
            buf_addc(&l->out, '\n');
            l->done = 1;
        }
        slot_leave(sl);
    }
    size_t n = l->out.len - l->off;
    if (n > max) n = max;
    memcpy(buf, l->out.p + l->off, n);
    l->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) { list_ctx_free(cls); }

static enum MHD_Result h_list(struct MHD_Connection *c, api_req *q)
{
    char e[768];
    qcheck qc = {list_params, ""};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_key_cb, &qc);
    if (qc.bad[0]) {
        snprintf(e, sizeof e, "%s: unknown parameter (state, since, until, topic, error_prefix, limit, cursor)", qc.bad);
        return err_reply(c, q, 400, "invalid", qc.bad, e, NULL, NULL);
    }
    const char *acc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    int ndjson = acc && strstr(acc, "application/x-ndjson");
    list_ctx *l = xcalloc(1, sizeof *l);
    api_slot *sl = slot_enter(e, sizeof e);
    if (!sl) {
        list_ctx_free(l);
        return aws_unavailable(c, q, e);
    }
    int rc = list_params_parse(c, sl, l, ndjson, e, sizeof e);
    if (rc < 0) {
        slot_leave(sl);
        list_ctx_free(l);
        return rc == -1 ? bad_request(c, q, "invalid", e) : aws_unavailable(c, q, e);
    }
    if (ndjson) {
        slot_leave(sl);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, l, stream_free);
        if (!r) {
            list_ctx_free(l);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
        q->status = 200;
        enum MHD_Result res = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return res;
    }
    rc = list_page(sl, l, 0);
    snprintf(e, sizeof e, "%s", sl->s->err);
    slot_leave(sl);
    if (rc != STORE_OK) {
        list_ctx_free(l);
        return aws_unavailable(c, q, e);
    }
    buf_t b = BUF_INIT;
    buf_adds(&b, "{\"items\":[");
    buf_add(&b, l->items.p ? l->items.p : "", l->items.len);
    buf_adds(&b, "],\"cursor\":");
    if (l->cursor.len) json_escape(&b, l->cursor.p, l->cursor.len);
    else buf_adds(&b, "null");
    buf_addc(&b, '}');
    list_ctx_free(l);
    return json_reply(c, q, 200, &b, NULL, NULL);
}

static enum MHD_Result h_stats(struct MHD_Connection *c, api_req *q)
{
    static const char *const params[] = {"by", NULL};
    char e[768];
    qcheck qc = {params, ""};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_key_cb, &qc);
    if (qc.bad[0]) {
        snprintf(e, sizeof e, "%s: unknown parameter (by)", qc.bad);
        return err_reply(c, q, 400, "invalid", qc.bad, e, NULL, NULL);
    }
    const char *by = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "by");
    if (by && strcmp(by, "topic")) return err_reply(c, q, 400, "invalid", "by", "by: expected topic", NULL, NULL);
    api_slot *sl = slot_enter(e, sizeof e);
    if (!sl) return aws_unavailable(c, q, e);
    store_stats st;
    memset(&st, 0, sizeof st);
    int rc = store_stats_read(sl->s, by != NULL, &st);
    snprintf(e, sizeof e, "%s", sl->s->err);
    slot_leave(sl);
    if (rc != STORE_OK) {
        store_stats_free(&st);
        return aws_unavailable(c, q, e);
    }
    buf_t b = BUF_INIT;
    schedreq_stats_json(&b, &st, by != NULL);
    store_stats_free(&st);
    return json_reply(c, q, 200, &b, NULL, NULL);
}

/* ---- routing */

/* Sets q->route (R_NONE: 404) and q->id; *allow the methods of the path. */
static int route(const char *url, const char *method, api_req *q, const char **allow, char *e, size_t el)
{
    static const char pfx[] = "/v1/schedules/";
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST"),
        del = !strcmp(method, "DELETE");
    *allow = NULL;
    if (!strcmp(url, "/healthz")) return *allow = "GET, HEAD", q->route = get ? R_HEALTHZ : -1;
    if (!strcmp(url, "/readyz")) return *allow = "GET, HEAD", q->route = get ? R_READYZ : -1;
    if (!strcmp(url, "/metrics")) return *allow = "GET, HEAD", q->route = get ? R_METRICS : -1;
    if (!strcmp(url, "/v1/stats")) return *allow = "GET, HEAD", q->route = get ? R_STATS : -1;
    if (!strcmp(url, "/v1/schedules"))
        return *allow = "GET, HEAD, POST", q->route = get ? R_LIST : post ? R_CREATE : -1;
    if (!strcmp(url, "/v1/schedules:import")) return *allow = "POST", q->route = post ? R_IMPORT : -1;
    if (strncmp(url, pfx, sizeof pfx - 1)) return q->route = R_NONE;
    const char *seg = url + sizeof pfx - 1, *colon = strrchr(seg, ':');
    if (strchr(seg, '/')) return q->route = R_NONE;   /* a '/' in an id is %2F */
    size_t n = colon ? (size_t)(colon - seg) : strlen(seg);
    int r;
    if (!colon) {
        *allow = "GET, HEAD, DELETE";
        r = get ? R_GET : del ? R_CANCEL : -1;
    } else if (!strcmp(colon, ":retry") || !strcmp(colon, ":delete")) {
        *allow = "POST";
        r = !post ? -1 : colon[1] == 'r' ? R_RETRY : R_DELETE;
    } else {
        return q->route = R_NONE;
    }
    buf_t id = BUF_INIT;
    if (n == 0) {
        snprintf(e, el, "id: empty");
        r = -2;
    } else if (pct_decode(seg, n, 0, &id) < 0) {
        snprintf(e, el, "id: bad percent-encoding in the path");
        r = -2;
    } else if (memchr(id.p, 0, id.len) || sched_check_id(buf_str(&id), e, el) < 0) {
        if (memchr(id.p, 0, id.len)) snprintf(e, el, "id: contains a NUL character");
        r = -2;
    } else {
        q->id = take(&id);
    }
    buf_free(&id);
    return q->route = r;
}

static enum MHD_Result header_size_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_size, void **con_cls)
{
    api_req *q = *con_cls;
    if (!q) {
        char e[600];
        const char *allow;
        q = xcalloc(1, sizeof *q);
        q->t0_us = time_mono_us();
        *con_cls = q;
        int r = route(url, method, q, &allow, e, sizeof e);
        if (r == R_NONE) q->route = R_NONE;
        size_t hsize = strlen(url) + strlen(method) + 16;
        MHD_get_connection_values(c, MHD_HEADER_KIND, header_size_cb, &hsize);
        if (hsize > (size_t)C.max_header) {
            char m[120];
            if (q->route < 0) q->route = R_NONE;
            q->failed = 1;
            snprintf(m, sizeof m, "headers: larger than %ld bytes", C.max_header);
            return err_reply(c, q, 431, "headers_too_large", NULL, m, "Connection", "close");
        }
        if (!strncmp(url, "/v1/", 4) || !strcmp(url, "/v1")) {
            int scope = 0;
            const char *az = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
            int a = token_check(az, q->who, sizeof q->who, &scope);
            if (a == 0) {
                if (q->route < 0) q->route = R_NONE;
                q->failed = 1;
                return err_reply(c, q, 401, "unauthenticated", NULL,
                                 az ? "authorization: unknown or revoked token" : "authorization: missing bearer token",
                                 "WWW-Authenticate", "Bearer realm=\"delayer\"");
            }
            if (a < 0) {
                if (q->route < 0) q->route = R_NONE;
                q->failed = 1;
                return err_reply(c, q, 429, "rate_limited", NULL, "rate: too many requests for this token", "Retry-After", "1");
            }
            if (r > 0 && scope < route_scope[r]) {
                char m[160];
                q->failed = 1;
                snprintf(m, sizeof m, "scope: %s needs the %s scope; this token has %s", route_names[r],
                         scope_names[route_scope[r]], scope_names[scope]);
                return err_reply(c, q, 403, "forbidden", NULL, m, NULL, NULL);
            }
        }
        if (r == R_NONE) {
            q->failed = 1;
            return err_reply(c, q, 404, "not_found", NULL, "path: no such resource", NULL, NULL);
        }
        if (r == -1) {
            char m[160];
            q->route = R_NONE;
            q->failed = 1;
            snprintf(m, sizeof m, "method: %s is not allowed here (allowed: %s)", method, allow);
            return err_reply(c, q, 405, "method_not_allowed", NULL, m, "Allow", allow);
        }
        if (r == -2) {
            q->route = R_GET;
            q->failed = 1;
            return bad_request(c, q, "invalid", e);
        }
        if (q->route == R_CREATE || q->route == R_IMPORT) {
            const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
            const char *want = q->route == R_CREATE ? "application/json" : "application/x-ndjson";
            long max = q->route == R_CREATE ? C.max_body : C.max_import;
            q->failed = 1;
            if (!cl && !te)
                return err_reply(c, q, 411, "length_required", NULL, "content-length: a body with Content-Length or chunked encoding is required", NULL, NULL);
            if (!media_is(ct, want)) {
                snprintf(e, sizeof e, "content-type: expected %s", want);
                return err_reply(c, q, 415, "unsupported_media_type", NULL, e, NULL, NULL);
            }
            if (cl && strtoll(cl, NULL, 10) > max) {
                snprintf(e, sizeof e, "body: larger than %ld bytes", max);
                return err_reply(c, q, 413, "too_large", NULL, e, "Connection", "close");
            }
            q->failed = 0;
            if (q->route == R_IMPORT) {
                q->out = tmpfile();
                if (!q->out) {
                    q->failed = 1;
                    return err_reply(c, q, 503, "unavailable", NULL, "import: no temporary file", "Retry-After", "1");
                }
            }
        }
        return MHD_YES;
    }
    if (*data_size) {
        /* MHD cannot queue a response while a body is arriving: an error
         * found here is answered when the body ends; its bytes are dropped
         * meanwhile, and past 4 times the limit (or the request timeout)
         * the connection is closed without an answer. */
        size_t n = *data_size;
        long max = q->route == R_IMPORT ? C.max_import : C.max_body;
        *data_size = 0;
        if (time_mono_us() - q->t0_us > C.req_ms * 1000) {
            q->status = 408;
            log_ev(LOG_INFO, "request timeout: connection closed", "route", route_names[q->route], NULL);
            return MHD_NO;
        }
        if (q->failed || q->late) {
            q->discarded += n;
            if (q->discarded > 4 * (size_t)max) {
                q->status = q->late ? q->late : q->status;
                return MHD_NO;
            }
            return MHD_YES;
        }
        if (q->body.len + n > (size_t)max) {
            q->late = 413;
            snprintf(q->late_msg, sizeof q->late_msg, "body: larger than %ld bytes", max);
            buf_free(&q->body);
            buf_free(&q->part);
            return MHD_YES;
        }
        if (q->route == R_IMPORT) {
            q->body.len += n;   /* the count only: lines go to import_data */
            import_data(q, data, n);
        } else if (q->route == R_CREATE) {
            buf_add(&q->body, data, n);
        }
        return MHD_YES;
    }
    if (q->failed) return MHD_YES;
    if (q->late) {
        if (q->route == R_IMPORT) q->body.len = 0;
        return err_reply(c, q, q->late, NULL, NULL, q->late_msg, "Connection", "close");
    }
    switch (q->route) {
    case R_HEALTHZ: return h_healthz(c, q);
    case R_READYZ: return h_readyz(c, q);
    case R_METRICS: return h_metrics(c, q);
    case R_LIST: return h_list(c, q);
    case R_CREATE: return h_create(c, q);
    case R_IMPORT: q->body.len = 0; return h_import_end(c, q);
    case R_GET: return h_get(c, q);
    case R_CANCEL:
    case R_RETRY:
    case R_DELETE: return h_transition(c, q);
    case R_STATS: return h_stats(c, q);
    default: return err_reply(c, q, 404, "not_found", NULL, "path: no such resource", NULL, NULL);
    }
}

/* Metrics per route and status, once the response is sent (or the
 * connection dropped). */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode tc)
{
    api_req *q = *con_cls;
    if (!q) return;
    char labels[160];
    double ms = (double)(time_mono_us() - q->t0_us) / 1000.0;
    int route_i = q->route >= 0 && q->route < R_NROUTES ? q->route : R_NONE;
    snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", route_names[route_i], q->status);
    metrics_count("delayer_api_requests_total", "API requests by route and status", labels, 1);
    metrics_hist("delayer_api_request_ms", "API request latency (first byte in to response queued or sent), ms",
                 labels, metrics_ms_bounds, metrics_ms_nbounds, ms);
    if (log_level() <= LOG_DEBUG) {
        char b[24];
        log_ev(LOG_DEBUG, "request", "route", route_names[route_i], "status", log_i64_buf(b, q->status), "token",
               q->who[0] ? q->who : "-", NULL);
    }
    if (q->out) fclose(q->out);
    buf_free(&q->body);
    buf_free(&q->part);
    free(q->id);
    free(q);
    *con_cls = NULL;
}

/* No unescaping by MHD: the path and query are decoded by route() and
 * query_get(), which tell "%3A"/"%2F" from ':' and '/'. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) { return strlen(s); }

/* ---------------------------------------------------------------- main */

static int split_addr(const char *addr, char *host, size_t hn, char *port, size_t pn)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= hn) return -1;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= hn) return -1;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) >= pn || strspn(p, "0123456789") != strlen(p) || atol(p) > 65535) return -1;
    snprintf(port, pn, "%s", p);
    return 0;
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
}

static int listen_on(const char *addr, int *family, char *bound, size_t bn)
{
    char host[256], port[16];
    if (split_addr(addr, host, sizeof host, port, sizeof port) != 0)
        return api_die(EXIT_USAGE, "listen: bad address \"%s\" (want HOST:PORT, :PORT or [V6]:PORT)", addr), -EXIT_USAGE;
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = host[0] ? AF_UNSPEC : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (g != 0) return api_die(EXIT_USAGE, "listen: %s: %s", addr, gai_strerror(g)), -EXIT_USAGE;
    if (C.no_auth && !is_loopback(ai->ai_addr)) {
        freeaddrinfo(ai);
        return api_die(EXIT_USAGE, "no-auth: only on a loopback address (127.0.0.0/8 or ::1), not %s", addr), -EXIT_USAGE;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        api_die(EXIT_SYSTEM, "listen: cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -EXIT_SYSTEM;
    }
    *family = ai->ai_family;
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int bport = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
            bport = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
            bport = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(bound, bn, *family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, bport);
    return fd;
}

static char *read_file(const char *path, const char *what)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        api_die(EXIT_USAGE, "%s: cannot read %s: %s", what, path, strerror(errno));
        return NULL;
    }
    buf_t b = BUF_INIT;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < (1 << 20)) buf_add(&b, chunk, n);
    fclose(f);
    buf_str(&b);
    return take(&b);
}

/* --name VALUE / --name=VALUE */
static int opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n)) return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n]) return 0;
    if (*i + 1 >= argc) return -1;
    *val = argv[++*i];
    return 1;
}

static int num_opt(const char *name, const char *v, long lo, long hi, long *out)
{
    int64_t n;
    if (json_parse_i64(v, strlen(v), &n) < 0 || n < lo || n > hi)
        return api_die(EXIT_USAGE, "%s: expected a number from %ld to %ld", name, lo, hi);
    *out = (long)n;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        long n;
        int r;
        char e[160];
#define VAL(name) ((r = opt(argc, argv, &i, name, &v)) != 0 && (r > 0 || (api_die(EXIT_USAGE, "%s: missing value", name), 1)) && r > 0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); exit(0); }
        if (!strcmp(a, "--version")) { printf("delayer-api %s\n", DELAYER_VERSION); exit(0); }
        if (!strcmp(a, "--no-auth")) { C.no_auth = 1; continue; }
        if (!strcmp(a, "--plain-http")) { C.plain = 1; continue; }
        if (!strcmp(a, "--no-events")) { C.no_events = 1; continue; }
        if (VAL("--listen")) { C.listen = v; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--tokens")) { C.tokens = v; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--new-token")) { C.new_token = v; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--tls-cert")) { C.cert = v; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--tls-key")) { C.key = v; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--prefix")) { C.prefix = v; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--threads")) { if (num_opt("threads", v, 1, 256, &n)) return EXIT_USAGE; C.threads = (int)n; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--max-connections")) { if (num_opt("max-connections", v, 1, 100000, &C.max_conn)) return EXIT_USAGE; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--max-body")) { if (num_opt("max-body", v, 1024, 1L << 30, &C.max_body)) return EXIT_USAGE; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--max-import")) { if (num_opt("max-import", v, 1024, 1L << 34, &C.max_import)) return EXIT_USAGE; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--import-lines")) { if (num_opt("import-lines", v, 1, 100000000, &C.import_lines)) return EXIT_USAGE; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--max-header")) { if (num_opt("max-header", v, 1024, 1L << 20, &C.max_header)) return EXIT_USAGE; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--rate")) { if (num_opt("rate", v, 1, 1000000, &n)) return EXIT_USAGE; C.rate = (double)n; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--burst")) { if (num_opt("burst", v, 1, 1000000, &n)) return EXIT_USAGE; C.burst = (double)n; continue; }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--idle-timeout")) {
            if (time_parse_duration(v, &C.idle_ms, e, sizeof e) < 0 || C.idle_ms < 1000)
                return api_die(EXIT_USAGE, "idle-timeout: expected a duration of at least 1s");
            continue;
        }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--request-timeout")) {
            if (time_parse_duration(v, &C.req_ms, e, sizeof e) < 0 || C.req_ms < 1)
                return api_die(EXIT_USAGE, "request-timeout: expected a duration");
            continue;
        }
        if (r < 0) return EXIT_USAGE;
        if (VAL("--log-level")) {
            int l = log_level_parse(v);
            if (l < 0) return api_die(EXIT_USAGE, "log-level: expected debug, info, warn, error or off");
            log_set_level(l);
            continue;
        }
        if (r < 0) return EXIT_USAGE;
#undef VAL
        char q[80];
        sched_quote(q, sizeof q, a, 60);
        return api_die(EXIT_USAGE, "%s: unknown option (see delayer-api --help)", q);
    }
    return 0;
}

int main(int argc, char **argv)
{
    char err[768], bound[128];
    log_init("delayer-api");
    int code = parse_args(argc, argv);
    if (code) return code;
    if (C.new_token) return token_new();
    if (store_conf_env(&SC, err, sizeof err) < 0) return api_die(EXIT_USAGE, "%s", err);
    if (C.prefix) SC.prefix = C.prefix;
    if (C.no_events) SC.events = 0;
    if (store_check_prefix(SC.prefix ? SC.prefix : "delayer", err, sizeof err) < 0) return api_die(EXIT_USAGE, "%s", err);
    if (C.no_auth && C.tokens) return api_die(EXIT_USAGE, "no-auth: give --tokens or --no-auth, not both");
    if (!C.no_auth && !C.tokens) return api_die(EXIT_USAGE, "tokens: give --tokens FILE (or --no-auth on loopback)");
    if (C.plain && (C.cert || C.key)) return api_die(EXIT_USAGE, "plain-http: give --tls-cert/--tls-key or --plain-http, not both");
    if (!C.plain && (!C.cert || !C.key))
        return api_die(EXIT_USAGE, "tls-cert: give --tls-cert FILE and --tls-key FILE (or --plain-http)");
    if (C.tokens && tokens_load(C.tokens, &tokens, err, sizeof err) < 0) return api_die(EXIT_USAGE, "%s", err);
    char *cert = NULL, *key = NULL;
    if (!C.plain) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            return api_die(EXIT_USAGE, "tls-cert: this libmicrohttpd has no TLS support: use --plain-http behind a proxy");
        if (!(cert = read_file(C.cert, "tls-cert")) || !(key = read_file(C.key, "tls-key"))) return EXIT_USAGE;
    }
    /* The deployment must be there before we take requests. */
    store *s0 = store_open(&SC, err, sizeof err);
    if (!s0) return api_die(EXIT_SYSTEM, "%s", err);
    if (store_load(s0) != STORE_OK) {
        api_die(EXIT_SYSTEM, "%s", s0->err);
        store_close(s0);
        return EXIT_SYSTEM;
    }
    store_close(s0);

    int family = AF_INET;
    int fd = listen_on(C.listen, &family, bound, sizeof bound);
    if (fd < 0) return -fd;

    /* Signals go to the main thread only: block them before MHD's threads
     * start (they inherit the mask), then wait for them here. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    metrics_enable();
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                     (family == AF_INET6 ? MHD_USE_IPv6 : 0) | (C.plain ? 0 : MHD_USE_TLS);
    /* The per-connection memory pool holds the request line, the headers
     * and the read buffer. It is twice --max-header and more, so that
     * on_request() sees headers up to the limit and answers 431 in the
     * API's error shape; only far larger ones get MHD's own 431 page. */
    size_t pool = 2 * (size_t)C.max_header + 16384;
    struct MHD_OptionItem tls[] = {
        {C.plain ? MHD_OPTION_END : MHD_OPTION_HTTPS_MEM_CERT, 0, cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, key},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)C.threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)C.max_conn,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)((C.idle_ms + 999) / 1000),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
        MHD_OPTION_ARRAY, tls,
        MHD_OPTION_END);
    if (!d) {
        close(fd);
        return api_die(EXIT_SYSTEM, "listen: cannot start the HTTP server on %s", bound);
    }
    log_ev(LOG_INFO, "listening", "addr", bound, "tls", C.plain ? "off" : "on", "auth", C.no_auth ? "off" : "tokens",
           "threads", log_i64(C.threads), NULL);

    for (;;) {
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGHUP && C.tokens) tokens_reload();
        if (sig == SIGTERM || sig == SIGINT) break;
        slots_flush();
    }
    log_ev(LOG_INFO, "stopping", NULL);
    MHD_stop_daemon(d);   /* joins the pool threads: requests in flight finish */
    slots_flush();
    for (size_t i = 0; i < nslots; i++) {
        if (slots[i]->s) store_close(slots[i]->s);
        store_counts_free(slots[i]->counts);
        pthread_mutex_destroy(&slots[i]->mu);
        free(slots[i]);
    }
    free(slots);
    free(tokens.v);
    free(cert);
    free(key);
    metrics_shutdown();
    return 0;
}
