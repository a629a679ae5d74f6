/* stage: what every pipeline stage tool shares, so the five tools parse,
 * log, signal and exit alike.
 *
 *   int main(int argc, char **argv) {
 *       static const stage_opt opts[] = {
 *           {"tick", "DURATION", "time between two scans [1s]"},
 *           {"once", NULL, "one pass, then exit"},
 *           {NULL, NULL, NULL}};
 *       static const stage_spec spec = {"ddb-scan-due", "Claims due schedules.", 0, 1, opts, NULL};
 *       stage_opts o;
 *       int rc = stage_init(argc, argv, &spec, &o);
 *       if (rc != STAGE_RUN) return rc;
 *       zpipe_out *out;
 *       if ((rc = stage_open(&o, NULL, &out)) != 0) return rc;
 *       ...connect to AWS...; stage_ready(&o);
 *       while (!stage_should_stop()) { ... }
 *       zpipe_out_close(out);
 *       return STAGE_EXIT_OK;
 *   }
 *
 * Common options (each tool's --help lists its own first, then these):
 *   --in EP, --out EP   endpoints, see zpipe.h (only when the stage has that side)
 *   --hwm N             ZeroMQ high-water mark
 *   --log-level L       debug|info|warn|error|off (else DELAYER_LOG_LEVEL, else info)
 *   --ready-fd N        readiness notification, s6 style: once ready the tool
 *                       writes "\n" to fd N and closes it (the supervisor waits
 *                       for that)
 *   --metrics ADDR      accepted and kept in stage_opts.metrics; served from
 *                       issue 7 on (Prometheus text, /healthz, /readyz)
 *   --curve-secret FILE, --curve-public FILE, --curve-server-key FILE,
 *   --curve-allow DIR   CURVE on tcp:// pipes (zpipe.h, docs/security.md);
 *                       checked by stage_init: a key file readable by
 *                       group/other, a malformed key or a public key that
 *                       does not match the secret is a usage error (100)
 *   -h, --help, --version
 * Options are GNU-style long options: "--name value" or "--name=value"; "--"
 * ends them. Anything else is a usage error.
 *
 * Signals: SIGTERM and SIGINT request a graceful stop (zpipe_interrupt: every
 * zpipe wait returns ZPIPE_INTR at once, stage_should_stop() turns true); the
 * handler is reset after the first one, so a second signal ends the process
 * the hard way (a stage stuck in its shutdown can still be interrupted from a
 * terminal). SIGPIPE is ignored: a vanished stdout reader is an EPIPE error
 * the stage handles, not a silent death. */
#ifndef DELAYER_STAGE_H
#define DELAYER_STAGE_H
#include "store.h"
#include "zpipe.h"

/* Exit status, the same for every tool. The supervisor restarts an instance
 * after any exit except 100. */
enum {
    STAGE_EXIT_OK       = 0,    /* done (input ended, or stopped by SIGTERM/SIGINT) */
    STAGE_EXIT_REJECTED = 1,    /* done, but some input records were rejected (each logged) */
    STAGE_EXIT_USAGE    = 100,  /* bad option or configuration: a restart cannot help */
    STAGE_EXIT_SYSTEM   = 111   /* system failure (socket, AWS, memory): a restart may help */
};
#define STAGE_RUN (-1)          /* stage_init: go on running */
#define STAGE_MAX_OPTS 32

/* One option of a stage's own. */
typedef struct {
    const char *name;   /* long name without "--", e.g. "tick" */
    const char *arg;    /* argument name for --help ("DURATION"); NULL for a flag */
    const char *help;   /* one line, with the default in brackets */
} stage_opt;

typedef struct {
    const char *name;        /* "sqs-push": the log's stage=, --help, --version */
    const char *summary;     /* one line for --help */
    int has_in, has_out;     /* whether --in / --out exist for this stage */
    const stage_opt *opts;   /* the stage's own options, ended by {NULL}; may be NULL */
    const char *operands;    /* e.g. "[FILE...]" for --help; NULL: operands refused */
} stage_spec;

typedef struct {
    const stage_spec *spec;
    const char *in, *out;            /* endpoints, default "-" */
    const char *metrics;             /* --metrics ADDR, or NULL */
    int ready_fd;                    /* --ready-fd N, or -1 (also after stage_ready) */
    zpipe_opts z;                    /* defaults, hwm from --hwm */
    const char *val[STAGE_MAX_OPTS]; /* spec->opts[i]'s value: its argument, "1" for a
                                        flag given, NULL when absent (last one wins) */
    int nargs;                       /* operands after the options */
    char **args;
} stage_opts;

/* Parses argv, starts logging (stage=spec->name, level), installs the signal
 * handlers. STAGE_RUN to go on; otherwise the exit status to return at once:
 * STAGE_EXIT_OK after --help/--version (printed on stdout), STAGE_EXIT_USAGE
 * after a usage error (logged with a hint to --help). */
int stage_init(int argc, char **argv, const stage_spec *spec, stage_opts *o);
/* Value of the stage option NAME (see val), NULL when not given. */
const char *stage_opt_get(const stage_opts *o, const char *name);
/* Opens whichever of in/out the caller asks for (pass NULL to skip one).
 * 0, or STAGE_EXIT_SYSTEM with the reason logged (e.g. a bind that failed). */
int stage_open(const stage_opts *o, zpipe_in **in, zpipe_out **out);
/* Tells the supervisor this instance is ready (--ready-fd), once; logs
 * "ready" with the endpoints. 0, or -1 if the write failed (logged; the
 * supervisor will then time out, so it is not fatal here). */
int stage_ready(stage_opts *o);
/* 1 once SIGTERM/SIGINT came (or zpipe_interrupt() was called). */
int stage_should_stop(void);

/* Option values. Each reads the stage option NAME (without "--"); when it
 * was not given the default is kept. A bad value is a usage error, logged
 * as msg="bad option value" option=--NAME value=V hint="STAGE --help": the
 * function returns -1 and the caller exits with STAGE_EXIT_USAGE. */
/* Logs that usage error for --NAME and VAL (NULL logs ""). Always -1. */
int stage_opt_bad(const stage_opts *o, const char *name, const char *val);
/* A duration (time_parse_duration: "250ms", "2s") of at most max ms into *v;
 * dflt when absent. 0 or -1. */
int stage_opt_duration(const stage_opts *o, const char *name, int64_t dflt, int64_t max, int64_t *v);
/* A whole decimal number in [lo, hi] (0 <= lo) into *v; dflt when absent.
 * 0 or -1. */
int stage_opt_long(const stage_opts *o, const char *name, long lo, long hi, long dflt, long *v);
/* --queue Q: "delay" (the default), a queue URL (http:// or https://) or,
 * when dead_ok, "dead"; into *queue. 0 or -1. */
int stage_opt_queue(const stage_opts *o, int dead_ok, const char **queue);
/* --prefix P, checked (store_check_prefix), into *prefix; NULL when absent
 * (store_conf_env's choice stands). 0 or -1. */
int stage_opt_prefix(const stage_opts *o, const char **prefix);

/* The deployment, for a stage: store_conf_env, prefix (if not NULL) over
 * it, store_open and store_load. The store, or NULL with the reason in err
 * and in *code the exit status: STAGE_EXIT_USAGE for a bad environment or a
 * deployment not initialised, else STAGE_EXIT_SYSTEM. */
store *stage_store_open(const char *prefix, char *err, size_t errlen, int *code);
/* The deployment from a ready store_conf: store_open and store_load, each
 * failure logged ("cannot open the store" / "cannot load the deployment",
 * error=...). The store, or NULL with in *code STAGE_EXIT_USAGE for a bad
 * prefix, else STAGE_EXIT_SYSTEM (a deployment not initialised included:
 * the supervisor restarts the stage until it is). */
store *stage_store_load(const store_conf *c, int *code);
/* The URL of the queue named by a --queue value (stage_opt_queue): "delay"
 * the deployment's delay queue, "dead" its dead-letter queue, anything else
 * is the URL itself. NULL when the deployment has none recorded. */
const char *stage_queue_url(const store *s, const char *queue);
/* The queue's VisibilityTimeout (GetQueueAttributes) into *vis_s, at least
 * 2 s. 0, or -1 with err "queue URL: Code: message" and, if gone is not
 * NULL, *gone set to 1 when the queue does not exist (else 0). */
int stage_queue_visibility(aws_client *c, const char *url, int *vis_s, int *gone, char *err, size_t errlen);
#endif
