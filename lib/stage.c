#include "stage.h"
#include "aws.h"
#include "log.h"
#include "metrics.h"
#include "sqs.h"
#include "timeutil.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#ifndef DELAYER_VERSION
#define DELAYER_VERSION "dev"
#endif

/* The common options; the stage's own are looked up in spec->opts first. */
enum { C_IN, C_OUT, C_HWM, C_LOG, C_READY, C_METRICS, C_CSECRET, C_CPUBLIC, C_CSERVER, C_CALLOW, C_HELP, C_VERSION, C_N };
static const stage_opt common[C_N] = {
    [C_IN] = {"in", "EP", "input: - (stdin, NDJSON) or ZeroMQ PULL endpoint(s); @ binds, > connects, default bind [-]"},
    [C_OUT] = {"out", "EP", "output: - (stdout, NDJSON) or ZeroMQ PUSH endpoint(s); @ binds, > connects, default connect [-]"},
    [C_HWM] = {"hwm", "N", "ZeroMQ high-water mark, messages per pipe [1000]"},
    [C_LOG] = {"log-level", "LEVEL", "debug, info, warn, error or off [$DELAYER_LOG_LEVEL or info]"},
    [C_READY] = {"ready-fd", "N", "once ready, write a newline to file descriptor N and close it"},
    [C_METRICS] = {"metrics", "ADDR", "serve /metrics, /healthz, /readyz over HTTP on HOST:PORT (:PORT all interfaces, port 0 ephemeral)"},
    [C_CSECRET] = {"curve-secret", "FILE", "CURVE secret key (Z85, mode 0600) for tcp:// sockets; see delayer-keygen"},
    [C_CPUBLIC] = {"curve-public", "FILE", "own CURVE public key (optional: derived from the secret, checked if given)"},
    [C_CSERVER] = {"curve-server-key", "FILE", "public key of the CURVE server a connecting tcp:// socket talks to"},
    [C_CALLOW] = {"curve-allow", "DIR", "binding tcp:// sockets: only clients whose public key is a file in DIR"},
    [C_HELP] = {"help", NULL, "show this help and exit"},
    [C_VERSION] = {"version", NULL, "show the version and exit"},
};

static int common_applies(const stage_spec *spec, int i)
{
    return !((i == C_IN && !spec->has_in) || (i == C_OUT && !spec->has_out));
}

static int nopts(const stage_spec *spec)
{
    int n = 0;
    while (spec->opts && spec->opts[n].name) n++;
    return n;
}

static void help_line(FILE *f, const stage_opt *op, int width)
{
    char left[96];
    snprintf(left, sizeof left, "--%s%s%s", op->name, op->arg ? " " : "", op->arg ? op->arg : "");
    fprintf(f, "  %-*s  %s\n", width, left, op->help ? op->help : "");
}

static void print_help(const stage_spec *spec)
{
    int width = 0, n = nopts(spec);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < (pass ? C_N : n); i++) {
            const stage_opt *op = pass ? &common[i] : &spec->opts[i];
            int w = 2 + (int)strlen(op->name) + (op->arg ? 1 + (int)strlen(op->arg) : 0);
            if (w > width) width = w;
        }
    printf("Usage: %s [OPTIONS]%s%s\n", spec->name, spec->operands ? " " : "", spec->operands ? spec->operands : "");
    if (spec->summary) printf("%s\n", spec->summary);
    if (n) {
        printf("\nOptions:\n");
        for (int i = 0; i < n; i++) help_line(stdout, &spec->opts[i], width);
    }
    printf("\nCommon options:\n");
    for (int i = 0; i < C_N; i++)
        if (common_applies(spec, i)) help_line(stdout, &common[i], width);
    printf("\nExit status: 0 done or stopped by SIGTERM/SIGINT; 1 done, but some input was rejected;\n"
           "100 usage or configuration error (not restarted by the supervisor); 111 system failure.\n");
    fflush(stdout);
}

static int usage(const stage_spec *spec, const char *fmt, const char *arg)
{
    char msg[640];
    snprintf(msg, sizeof msg, fmt, arg);
    char hint[128];
    snprintf(hint, sizeof hint, "%s --help", spec->name);
    log_ev(LOG_ERROR, msg, "hint", hint, NULL);
    return STAGE_EXIT_USAGE;
}

/* A whole decimal number in [lo, hi], else -1. */
static long parse_long(const char *s, long lo, long hi)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    return v;
}

/* The first SIGTERM/SIGINT asks for a clean stop. A second one ends the
 * process at once, but only if it comes more than a second later: `timeout`,
 * shells and some supervisors signal the process and then its whole group,
 * so one stop request often arrives twice within microseconds. */
static volatile sig_atomic_t stop_first_s;   /* CLOCK_MONOTONIC seconds + 1, 0: none yet */

static void on_stop_signal(int sig)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);   /* async-signal-safe */
    zpipe_interrupt();
    if (stop_first_s == 0) {
        stop_first_s = (sig_atomic_t)(now.tv_sec + 1);
        return;
    }
    if (now.tv_sec + 1 - stop_first_s >= 2) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

static void install_signals(void)
{
    struct sigaction sa;
    stop_first_s = 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a blocking call returns EINTR and sees the stop. */
    sa.sa_flags = 0;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int apply_common(const stage_spec *spec, stage_opts *o, int c, const char *val)
{
    char err[256];
    long v;
    switch (c) {
    case C_IN:
    case C_OUT:
        if (zpipe_check_endpoint(val, err, sizeof err) != 0)
            return usage(spec, c == C_IN ? "--in: %s" : "--out: %s", err);
        if (c == C_IN) o->in = val;
        else o->out = val;
        break;
    case C_HWM:
        if ((v = parse_long(val, 1, 10000000)) < 0) return usage(spec, "--hwm wants a number from 1 to 10000000, not \"%s\"", val);
        o->z.hwm = (int)v;
        break;
    case C_LOG:
        if ((v = log_level_parse(val)) < 0) return usage(spec, "--log-level wants debug, info, warn, error or off, not \"%s\"", val);
        log_set_level((int)v);
        break;
    case C_READY:
        /* 0-2 are stdio: writing the notification there would corrupt data */
        if ((v = parse_long(val, 3, INT_MAX)) < 0) return usage(spec, "--ready-fd wants a descriptor number >= 3, not \"%s\"", val);
        if (fcntl((int)v, F_GETFD) < 0) return usage(spec, "--ready-fd %s: not an open descriptor", val);
        fcntl((int)v, F_SETFD, FD_CLOEXEC);   /* no child should hold the supervisor's fd */
        o->ready_fd = (int)v;
        break;
    case C_METRICS:
        if (!*val) return usage(spec, "--metrics wants an address%s", "");
        o->metrics = val;
        break;
    case C_CSECRET:
    case C_CPUBLIC:
    case C_CSERVER:
    case C_CALLOW:
        if (!*val) return usage(spec, "--%s wants a path", common[c].name);
        if (c == C_CSECRET) o->z.curve_secret_file = val;
        else if (c == C_CPUBLIC) o->z.curve_public_file = val;
        else if (c == C_CSERVER) o->z.curve_server_key_file = val;
        else o->z.curve_allow_dir = val;
        break;
    }
    return STAGE_RUN;
}

/* ---- metrics (--metrics ADDR; docs/metrics.md) ---------------------------- */

static pthread_mutex_t m_mu = PTHREAD_MUTEX_INITIALIZER;
static const zpipe_stats *m_pipe[2];      /* in, out while open (under m_mu) */
static zpipe_stats m_final[2];            /* their last values once closed */
static atomic_int m_ready;
static _Atomic int64_t m_aws_ok_ms, m_aws_fail_ms;   /* monotonic ms of the last reachable / unreachable attempt */
static int64_t m_start_ms;
static double m_start_unix;
#define STAGE_READY_RECENT_MS 30000

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void m_on_close(const zpipe_stats *st)
{
    pthread_mutex_lock(&m_mu);
    for (int i = 0; i < 2; i++)
        if (m_pipe[i] == st) {
            m_final[i].msgs = __atomic_load_n(&st->msgs, __ATOMIC_RELAXED);
            m_final[i].bytes = __atomic_load_n(&st->bytes, __ATOMIC_RELAXED);
            m_final[i].dropped = __atomic_load_n(&st->dropped, __ATOMIC_RELAXED);
            m_final[i].blocked = __atomic_load_n(&st->blocked, __ATOMIC_RELAXED);
            m_pipe[i] = &m_final[i];
        }
    pthread_mutex_unlock(&m_mu);
}

/* ud: &m_fields[side * 4 + field] */
static const int m_fields[8] = {0, 1, 2, 3, 4, 5, 6, 7};
static double m_pipe_value(void *ud)
{
    int k = *(const int *)ud, side = k / 4, f = k % 4;
    uint64_t v = 0;
    pthread_mutex_lock(&m_mu);
    const zpipe_stats *st = m_pipe[side];
    if (st) {
        const uint64_t *p = f == 0 ? &st->msgs : f == 1 ? &st->bytes : f == 2 ? &st->dropped : &st->blocked;
        v = __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&m_mu);
    return (double)v;
}

static double m_uptime(void *ud) { (void)ud; return (double)(mono_ms() - m_start_ms) / 1000.0; }
static double m_start_time(void *ud) { (void)ud; return m_start_unix; }
static double m_ready_value(void *ud) { (void)ud; return atomic_load(&m_ready); }

static void m_aws_hook(const char *service, const char *op, size_t oplen, const char *outcome, int retried)
{
    char api[64], labels[192];
    size_t n = 0;
    for (size_t i = 0; i < oplen && n + 1 < sizeof api; i++)   /* label-safe */
        api[n++] = (op[i] == '"' || op[i] == '\\' || op[i] == '\n') ? '_' : op[i];
    api[n] = '\0';
    snprintf(labels, sizeof labels, "service=\"%s\",api=\"%s\",outcome=\"%s\"", service, api, outcome);
    metrics_count("delayer_aws_requests_total", "AWS HTTP requests (every attempt, retries too) by service, API and outcome", labels, 1);
    if (retried) {
        snprintf(labels, sizeof labels, "service=\"%s\",api=\"%s\"", service, api);
        metrics_count("delayer_aws_retries_total", "AWS attempts that failed and were tried again", labels, 1);
    }
    int reachable = strcmp(outcome, "ok") == 0 || strcmp(outcome, "client_error") == 0 || strcmp(outcome, "throttled") == 0;
    atomic_store(reachable ? &m_aws_ok_ms : &m_aws_fail_ms, mono_ms());
}

static int m_live(char *why, size_t n)
{
    if (!stage_should_stop()) return 1;
    snprintf(why, n, "stopping");
    return 0;
}

static int m_readyz(char *why, size_t n)
{
    if (stage_should_stop()) return snprintf(why, n, "stopping"), 0;
    if (!atomic_load(&m_ready)) return snprintf(why, n, "starting"), 0;
    int64_t ok = atomic_load(&m_aws_ok_ms), fail = atomic_load(&m_aws_fail_ms), now = mono_ms();
    if (fail == 0 || ok >= fail || (ok && now - ok <= STAGE_READY_RECENT_MS)) return 1;
    if (ok) snprintf(why, n, "AWS unreachable: last request failed %.1f s ago, last success %.1f s ago",
                     (double)(now - fail) / 1000.0, (double)(now - ok) / 1000.0);
    else snprintf(why, n, "AWS unreachable: last request failed %.1f s ago, no success yet", (double)(now - fail) / 1000.0);
    return 0;
}

/* Starts the server and the metrics every stage has. 0, or STAGE_EXIT_SYSTEM. */
static int metrics_start(const stage_opts *o)
{
    char bound[300], err[400];
    m_start_ms = mono_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m_start_unix = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (metrics_serve(o->metrics, bound, sizeof bound, err, sizeof err) != 0) {
        log_ev(LOG_ERROR, "cannot serve metrics", "addr", o->metrics, "error", err, NULL);
        metrics_shutdown();
        return STAGE_EXIT_SYSTEM;
    }
    atexit(metrics_shutdown);
    static const char *names[4] = {"delayer_pipe_messages_total", "delayer_pipe_bytes_total",
                                    "delayer_pipe_dropped_total", "delayer_pipe_blocked_total"};
    static const char *helps[4] = {"records received (side=in) or sent (side=out) on the stage's pipe",
                                   "bytes of those records, newlines excluded",
                                   "input records dropped: over-long lines, multipart or newline-bearing messages",
                                   "output sends that gave up at the high-water mark or with no peer"};
    for (int side = 0; side < 2; side++) {
        if (!(side ? o->spec->has_out : o->spec->has_in)) continue;
        for (int f = 0; f < 4; f++) {
            if ((f == 2 && side == 1) || (f == 3 && side == 0)) continue;
            metrics_callback(names[f], helps[f], side ? "side=\"out\"" : "side=\"in\"", 1, m_pipe_value, (void *)&m_fields[side * 4 + f]);
        }
    }
    char labels[160];
    snprintf(labels, sizeof labels, "stage=\"%s\",version=\"%s\"", o->spec->name, DELAYER_VERSION);
    metrics_set(metrics_gauge("delayer_stage_info", "the stage and version of this process (always 1)", labels), 1);
    metrics_callback("delayer_process_start_time_seconds", "start time of the process, seconds since the epoch", "", 0, m_start_time, NULL);
    metrics_callback("delayer_process_uptime_seconds", "seconds since the process started", "", 0, m_uptime, NULL);
    metrics_callback("delayer_ready", "1 once the stage is ready (stage_ready), else 0", "", 0, m_ready_value, NULL);
    metrics_set_checks(m_live, m_readyz);
    aws_set_attempt_hook(m_aws_hook);
    zpipe_close_hook = m_on_close;
    log_ev(LOG_INFO, "metrics listening", "addr", bound, NULL);
    return 0;
}

int stage_init(int argc, char **argv, const stage_spec *spec, stage_opts *o)
{
    memset(o, 0, sizeof *o);
    o->spec = spec;
    o->in = "-";
    o->out = "-";
    o->ready_fd = -1;
    zpipe_opts_default(&o->z);
    log_init(spec->name);
    int n = nopts(spec);
    if (n > STAGE_MAX_OPTS) {
        log_ev(LOG_ERROR, "too many stage options (STAGE_MAX_OPTS)", NULL);
        return STAGE_EXIT_SYSTEM;
    }
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || a[1] == '\0') break;   /* first operand ("-" alone is one) */
        if (strcmp(a, "-h") == 0) a = "--help";
        if (strncmp(a, "--", 2) != 0) return usage(spec, "unknown option %s", a);
        const char *name = a + 2, *eq = strchr(name, '='), *val = eq ? eq + 1 : NULL;
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const stage_opt *op = NULL;
        int own = -1, c = -1;
        for (int k = 0; k < n && !op; k++)
            if (strlen(spec->opts[k].name) == nl && strncmp(spec->opts[k].name, name, nl) == 0) op = &spec->opts[k], own = k;
        for (int k = 0; k < C_N && !op; k++)
            if (common_applies(spec, k) && strlen(common[k].name) == nl && strncmp(common[k].name, name, nl) == 0)
                op = &common[k], c = k;
        if (!op) return usage(spec, "unknown option %s", a);
        if (op->arg && !val) {
            if (i + 1 >= argc) return usage(spec, "option %s needs an argument", a);
            val = argv[++i];
        } else if (!op->arg && val) {
            return usage(spec, "option --%s takes no argument", op->name);
        }
        if (own >= 0) {
            o->val[own] = op->arg ? val : "1";
            continue;
        }
        if (c == C_HELP) {
            print_help(spec);
            return STAGE_EXIT_OK;
        }
        if (c == C_VERSION) {
            printf("%s (delayer) %s\n", spec->name, DELAYER_VERSION);
            fflush(stdout);
            return STAGE_EXIT_OK;
        }
        int rc = apply_common(spec, o, c, val);
        if (rc != STAGE_RUN) return rc;
    }
    o->nargs = argc - i;
    o->args = argv + i;
    if (o->nargs > 0 && !spec->operands) return usage(spec, "unexpected argument %s", argv[i]);
    /* CURVE keys are checked now (permissions, format, pairing): a bad key is
     * a configuration error (100), never a restart loop. */
    char cerr[512];
    if (zpipe_curve_check(&o->z, cerr, sizeof cerr) != 0) return usage(spec, "%s", cerr);
    install_signals();
    if (o->metrics && metrics_start(o) != 0) return STAGE_EXIT_SYSTEM;
    return STAGE_RUN;
}

const char *stage_opt_get(const stage_opts *o, const char *name)
{
    for (int k = 0; k < nopts(o->spec); k++)
        if (strcmp(o->spec->opts[k].name, name) == 0) return o->val[k];
    return NULL;
}

int stage_open(const stage_opts *o, zpipe_in **in, zpipe_out **out)
{
    char err[512];
    if (in) *in = NULL;
    if (out) *out = NULL;
    if (in && !(*in = zpipe_in_open(o->in, &o->z, err, sizeof err))) {
        log_ev(LOG_ERROR, "cannot open input", "in", o->in, "error", err, NULL);
        return STAGE_EXIT_SYSTEM;
    }
    if (out && !(*out = zpipe_out_open(o->out, &o->z, err, sizeof err))) {
        log_ev(LOG_ERROR, "cannot open output", "out", o->out, "error", err, NULL);
        if (in) {
            zpipe_in_close(*in);
            *in = NULL;
        }
        return STAGE_EXIT_SYSTEM;
    }
    if (metrics_enabled()) {
        pthread_mutex_lock(&m_mu);
        if (in) m_pipe[0] = zpipe_in_stats(*in);
        if (out) m_pipe[1] = zpipe_out_stats(*out);
        pthread_mutex_unlock(&m_mu);
    }
    return 0;
}

int stage_ready(stage_opts *o)
{
    int rc = 0;
    if (o->ready_fd >= 0) {
        ssize_t n;
        do n = write(o->ready_fd, "\n", 1);
        while (n < 0 && errno == EINTR);
        if (n != 1) {
            log_ev(LOG_WARN, "readiness notification failed", "fd", log_i64(o->ready_fd), "error", strerror(errno), NULL);
            rc = -1;
        }
        close(o->ready_fd);
        o->ready_fd = -1;
    }
    /* a NULL key ends log_ev's list: name only the sides this stage has */
    const char *k1 = NULL, *v1 = NULL, *k2 = NULL, *v2 = NULL;
    if (o->spec->has_in) k1 = "in", v1 = o->in;
    if (o->spec->has_out) {
        if (k1) k2 = "out", v2 = o->out;
        else k1 = "out", v1 = o->out;
    }
    log_ev(LOG_INFO, "ready", k1, v1, k2, v2, NULL);
    atomic_store(&m_ready, 1);
    return rc;
}

int stage_should_stop(void) { return zpipe_interrupted(); }

int stage_opt_bad(const stage_opts *o, const char *name, const char *val)
{
    char opt[72], hint[128];
    snprintf(opt, sizeof opt, "--%s", name);
    snprintf(hint, sizeof hint, "%s --help", o->spec->name);
    log_ev(LOG_ERROR, "bad option value", "option", opt, "value", val ? val : "", "hint", hint, NULL);
    return -1;
}

int stage_opt_duration(const stage_opts *o, const char *name, int64_t dflt, int64_t max, int64_t *v)
{
    char err[256];
    const char *s = stage_opt_get(o, name);
    *v = dflt;
    if (s && (time_parse_duration(s, v, err, sizeof err) < 0 || *v > max)) return stage_opt_bad(o, name, s);
    return 0;
}

int stage_opt_long(const stage_opts *o, const char *name, long lo, long hi, long dflt, long *v)
{
    const char *s = stage_opt_get(o, name);
    *v = dflt;
    if (!s) return 0;
    long n = parse_long(s, lo, hi);   /* -1: bad (lo >= 0) */
    if (n < 0) return stage_opt_bad(o, name, s);
    *v = n;
    return 0;
}

int stage_opt_queue(const stage_opts *o, int dead_ok, const char **queue)
{
    const char *q = stage_opt_get(o, "queue");
    *queue = q ? q : "delay";
    if (!q || strcmp(q, "delay") == 0 || (dead_ok && strcmp(q, "dead") == 0) || strncmp(q, "http://", 7) == 0 ||
        strncmp(q, "https://", 8) == 0)
        return 0;
    return stage_opt_bad(o, "queue", q);
}

int stage_opt_prefix(const stage_opts *o, const char **prefix)
{
    char err[256];
    *prefix = stage_opt_get(o, "prefix");
    if (*prefix && store_check_prefix(*prefix, err, sizeof err) < 0) return stage_opt_bad(o, "prefix", *prefix);
    return 0;
}

store *stage_store_open(const char *prefix, char *err, size_t errlen, int *code)
{
    store_conf c;
    *code = STAGE_EXIT_USAGE;
    if (store_conf_env(&c, err, errlen) < 0) return NULL;
    if (prefix) c.prefix = prefix;
    *code = STAGE_EXIT_SYSTEM;
    store *s = store_open(&c, err, errlen);
    if (!s) return NULL;
    int rc = store_load(s);
    if (rc != STORE_OK) {
        snprintf(err, errlen, "%s", s->err);
        if (rc == STORE_NOTFOUND) *code = STAGE_EXIT_USAGE;
        store_close(s);
        return NULL;
    }
    return s;
}

store *stage_store_load(const store_conf *c, int *code)
{
    char err[512];
    store *s = store_open(c, err, sizeof err);
    if (!s) {
        log_ev(LOG_ERROR, "cannot open the store", "error", err, NULL);
        *code = strncmp(err, "prefix", 6) ? STAGE_EXIT_SYSTEM : STAGE_EXIT_USAGE;
        return NULL;
    }
    if (store_load(s) != STORE_OK) {
        log_ev(LOG_ERROR, "cannot load the deployment", "error", s->err, NULL);
        store_close(s);
        *code = STAGE_EXIT_SYSTEM;
        return NULL;
    }
    return s;
}

const char *stage_queue_url(const store *s, const char *queue)
{
    if (strcmp(queue, "delay") == 0) return s->queue_url;
    if (strcmp(queue, "dead") == 0) return s->dlq_url;
    return queue;
}

int stage_queue_visibility(aws_client *c, const char *url, int *vis_s, int *gone, char *err, size_t errlen)
{
    buf_t v = BUF_INIT;
    aws_err e;
    if (gone) *gone = 0;
    if (sqs_get_queue_attribute(c, url, "VisibilityTimeout", &v, &e) < 0) {
        snprintf(err, errlen, "queue %s: %s: %s", url, e.code, e.message);
        if (gone) *gone = aws_err_is(&e, "QueueDoesNotExist") || aws_err_is(&e, "NonExistentQueue");
        buf_free(&v);
        return -1;
    }
    *vis_s = atoi(buf_str(&v));
    if (*vis_s < 2) *vis_s = 2;
    buf_free(&v);
    return 0;
}
