#include "stage.h"
#include "log.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    [C_METRICS] = {"metrics", "ADDR", "address for metrics and health (accepted, not served yet)"},
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

static void on_stop_signal(int sig)
{
    (void)sig;
    zpipe_interrupt();
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a blocking call returns EINTR and sees the stop.
     * SA_RESETHAND: a second signal is not caught (hard stop). */
    sa.sa_flags = SA_RESETHAND;
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
    return rc;
}

int stage_should_stop(void) { return zpipe_interrupted(); }
