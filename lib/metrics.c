#include "metrics.h"
#include "buf.h"
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { M_COUNTER, M_GAUGE, M_HIST };

struct metrics_series {
    struct metrics_series *next;
    char *name, *help, *labels;
    int type;
    _Atomic uint64_t u;      /* counter value; gauge: the double's bits */
    double (*fn)(void *);    /* callback series */
    void *ud;
    /* histogram */
    pthread_mutex_t hm;
    int nb;
    double *bounds;
    uint64_t *counts;        /* nb + 1 (the last is +Inf), not cumulative */
    double sum;
    uint64_t count;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static metrics_series *reg_head, **reg_tail = &reg_head;
static struct MHD_Daemon *daemon_;
static int (*check_live)(char *, size_t);
static int (*check_ready)(char *, size_t);
static atomic_int enabled;

void metrics_enable(void) { atomic_store(&enabled, 1); }
int metrics_enabled(void) { return atomic_load(&enabled); }

const double metrics_ms_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000};
const int metrics_ms_nbounds = (int)(sizeof metrics_ms_bounds / sizeof metrics_ms_bounds[0]);
const double metrics_batch_bounds[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 50, 100};
const int metrics_batch_nbounds = (int)(sizeof metrics_batch_bounds / sizeof metrics_batch_bounds[0]);

/* Finds or creates (name, labels) under reg_mu. */
static metrics_series *lookup(const char *name, const char *help, const char *labels, int type)
{
    if (!atomic_load(&enabled)) return NULL;
    if (!labels) labels = "";
    for (metrics_series *s = reg_head; s; s = s->next)
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) return s;
    metrics_series *s = xcalloc(1, sizeof *s);
    s->name = xstrdup(name);
    s->help = xstrdup(help ? help : "");
    s->labels = xstrdup(labels);
    s->type = type;
    *reg_tail = s;
    reg_tail = &s->next;
    return s;
}

/* lookup under the registry lock. */
static metrics_series *lookup_locked(const char *name, const char *help, const char *labels, int type)
{
    pthread_mutex_lock(&reg_mu);
    metrics_series *s = lookup(name, help, labels, type);
    pthread_mutex_unlock(&reg_mu);
    return s;
}

metrics_series *metrics_counter(const char *name, const char *help, const char *labels)
{
    return lookup_locked(name, help, labels, M_COUNTER);
}

void metrics_inc(metrics_series *s, uint64_t n)
{
    if (s) atomic_fetch_add_explicit(&s->u, n, memory_order_relaxed);
}

void metrics_count(const char *name, const char *help, const char *labels, uint64_t n)
{
    if (atomic_load(&enabled)) metrics_inc(metrics_counter(name, help, labels), n);
}

metrics_series *metrics_gauge(const char *name, const char *help, const char *labels)
{
    return lookup_locked(name, help, labels, M_GAUGE);
}

void metrics_set(metrics_series *s, double v)
{
    if (!s) return;
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    atomic_store_explicit(&s->u, bits, memory_order_relaxed);
}

void metrics_callback(const char *name, const char *help, const char *labels, int counter,
                      double (*fn)(void *ud), void *ud)
{
    pthread_mutex_lock(&reg_mu);
    metrics_series *s = lookup(name, help, labels, counter ? M_COUNTER : M_GAUGE);
    if (s) {
        s->fn = fn;
        s->ud = ud;
    }
    pthread_mutex_unlock(&reg_mu);
}

metrics_series *metrics_histogram(const char *name, const char *help, const char *labels,
                                  const double *bounds, int nbounds)
{
    pthread_mutex_lock(&reg_mu);
    metrics_series *s = lookup(name, help, labels, M_HIST);
    if (s && !s->counts) {
        pthread_mutex_init(&s->hm, NULL);
        s->nb = nbounds;
        s->bounds = xcalloc((size_t)nbounds + 1, sizeof *s->bounds);
        memcpy(s->bounds, bounds, (size_t)nbounds * sizeof *bounds);
        s->counts = xcalloc((size_t)nbounds + 1, sizeof *s->counts);
    }
    pthread_mutex_unlock(&reg_mu);
    return s;
}

void metrics_observe(metrics_series *s, double v)
{
    if (!s || !s->counts) return;
    int i = 0;
    while (i < s->nb && !(v <= s->bounds[i])) i++;
    pthread_mutex_lock(&s->hm);
    s->counts[i]++;
    s->sum += v;
    s->count++;
    pthread_mutex_unlock(&s->hm);
}

void metrics_hist(const char *name, const char *help, const char *labels,
                  const double *bounds, int nbounds, double v)
{
    if (atomic_load(&enabled)) metrics_observe(metrics_histogram(name, help, labels, bounds, nbounds), v);
}

/* ---- rendering ------------------------------------------------------------ */

static void fmt_num(buf_t *b, double v)
{
    if (isnan(v)) buf_adds(b, "NaN");
    else if (isinf(v)) buf_adds(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15) buf_printf(b, "%.0f", v);
    else buf_printf(b, "%.17g", v);
}

static void help_text(buf_t *b, const char *h)
{
    for (; *h; h++) {
        if (*h == '\\') buf_adds(b, "\\\\");
        else if (*h == '\n') buf_adds(b, "\\n");
        else buf_addc(b, *h);
    }
}

static void series_line(buf_t *b, const char *name, const char *suffix, const char *labels,
                        const char *extra, double v)
{
    buf_printf(b, "%s%s", name, suffix);
    if (*labels || extra) {
        buf_addc(b, '{');
        buf_adds(b, labels);
        if (extra) buf_printf(b, "%s%s", *labels ? "," : "", extra);
        buf_addc(b, '}');
    }
    buf_addc(b, ' ');
    fmt_num(b, v);
    buf_addc(b, '\n');
}

static void render_one(buf_t *b, metrics_series *s)
{
    if (s->type != M_HIST) {
        double v;
        if (s->fn) {
            v = s->fn(s->ud);
        } else {
            uint64_t u = atomic_load_explicit(&s->u, memory_order_relaxed);
            if (s->type == M_COUNTER) v = (double)u;
            else memcpy(&v, &u, sizeof v);
        }
        series_line(b, s->name, "", s->labels, NULL, v);
        return;
    }
    pthread_mutex_lock(&s->hm);
    uint64_t cum = 0;
    char le[64];
    for (int i = 0; i <= s->nb; i++) {
        cum += s->counts[i];
        if (i < s->nb) {
            buf_t t = BUF_INIT;
            fmt_num(&t, s->bounds[i]);
            snprintf(le, sizeof le, "le=\"%s\"", buf_str(&t));
            buf_free(&t);
        } else {
            snprintf(le, sizeof le, "le=\"+Inf\"");
        }
        series_line(b, s->name, "_bucket", s->labels, le, (double)cum);
    }
    series_line(b, s->name, "_sum", s->labels, NULL, s->sum);
    series_line(b, s->name, "_count", s->labels, NULL, (double)s->count);
    pthread_mutex_unlock(&s->hm);
}

char *metrics_render(size_t *len)
{
    static const char *types[] = {"counter", "gauge", "histogram"};
    buf_t b = BUF_INIT;
    pthread_mutex_lock(&reg_mu);
    /* families in order of first appearance, each family's series together */
    for (metrics_series *s = reg_head; s; s = s->next) {
        int seen = 0;
        for (metrics_series *p = reg_head; p != s && !seen; p = p->next) seen = strcmp(p->name, s->name) == 0;
        if (seen) continue;
        buf_printf(&b, "# HELP %s ", s->name);
        help_text(&b, s->help);
        buf_printf(&b, "\n# TYPE %s %s\n", s->name, types[s->type]);
        for (metrics_series *q = s; q; q = q->next)
            if (strcmp(q->name, s->name) == 0) render_one(&b, q);
    }
    pthread_mutex_unlock(&reg_mu);
    if (len) *len = b.len;
    if (!b.p) return xstrdup("");
    return b.p;
}

/* ---- HTTP ----------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *ctype,
                             char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **state)
{
    (void)cls, (void)version, (void)upload;
    static int first;
    if (!*state) {           /* headers only so far: wait for the (empty) body */
        *state = &first;
        return MHD_YES;
    }
    if (*upload_len) {       /* a body: ignore it */
        *upload_len = 0;
        return MHD_YES;
    }
    const char *text = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, xstrdup("method not allowed\n"), 19);
    if (strcmp(url, "/metrics") == 0) {
        size_t n;
        char *body = metrics_render(&n);
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, n);
    }
    int live = strcmp(url, "/healthz") == 0;
    if (live || strcmp(url, "/readyz") == 0) {
        char why[200] = "";
        int (*check)(char *, size_t) = live ? check_live : check_ready;
        int ok = check ? check(why, sizeof why) : live;
        buf_t b = BUF_INIT;
        buf_printf(&b, "%s\n", ok ? (live ? "ok" : "ready") : (why[0] ? why : "not ready"));
        size_t n = b.len;
        return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text, b.p, n);
    }
    return reply(conn, MHD_HTTP_NOT_FOUND, text, xstrdup("not found: try /metrics, /healthz, /readyz\n"), 42);
}

/* Splits "HOST:PORT", ":PORT", "[V6]:PORT" into host (NULL = any) and port. */
static int split_addr(const char *addr, char *host, size_t hn, char *port, size_t pn)
{
    const char *colon;
    host[0] = '\0';
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

int metrics_serve(const char *addr, char *bound, size_t boundlen, char *err, size_t errlen)
{
    char host[256], port[16];
    if (daemon_) {
        snprintf(err, errlen, "metrics server already running");
        return -1;
    }
    if (split_addr(addr, host, sizeof host, port, sizeof port) != 0) {
        snprintf(err, errlen, "bad address \"%s\" (want HOST:PORT, :PORT or [V6]:PORT)", addr);
        return -1;
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = host[0] ? AF_UNSPEC : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (g != 0) {
        snprintf(err, errlen, "%s: %s", addr, gai_strerror(g));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    int family = ai->ai_family;
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int bport = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
            bport = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
            bport = ntohs(a->sin6_port);
        }
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | (family == AF_INET6 ? MHD_USE_IPv6 : 0);
    metrics_enable();
    daemon_ = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
                               MHD_OPTION_LISTEN_SOCKET, fd,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                               MHD_OPTION_END);
    if (!daemon_) {
        snprintf(err, errlen, "cannot start the HTTP server on %s", addr);
        close(fd);
        return -1;
    }
    if (family == AF_INET6) snprintf(bound, boundlen, "[%s]:%d", ip, bport);
    else snprintf(bound, boundlen, "%s:%d", ip, bport);
    return 0;
}

void metrics_set_checks(int (*live)(char *why, size_t n), int (*ready)(char *why, size_t n))
{
    check_live = live;
    check_ready = ready;
}

void metrics_shutdown(void)
{
    atomic_store(&enabled, 0);
    if (daemon_) {
        MHD_stop_daemon(daemon_);   /* joins its thread, closes the listening socket */
        daemon_ = NULL;
    }
    pthread_mutex_lock(&reg_mu);
    metrics_series *s = reg_head;
    reg_head = NULL;
    reg_tail = &reg_head;
    pthread_mutex_unlock(&reg_mu);
    while (s) {
        metrics_series *next = s->next;
        if (s->counts) pthread_mutex_destroy(&s->hm);
        free(s->name);
        free(s->help);
        free(s->labels);
        free(s->bounds);
        free(s->counts);
        free(s);
        s = next;
    }
}
