/* delayer: create, inspect, cancel and audit schedules (docs/schema.md).
 *
 *   delayer [--prefix P] [--no-events] SUBCOMMAND [options]
 *
 * Every subcommand is one function cmd_<name>; option parsing is by hand
 * (opt_val/opt_flag) so `--name value` and `--name=value` both work and an
 * unknown option is a usage error. Errors are one line on stderr:
 * "delayer: <field>: <problem>". Exit codes: see EXIT_* and `delayer help`. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"
#include "sched.h"
#include "schedreq.h"
#include "sns.h"
#include "sqs.h"
#include "store.h"
#include "timeutil.h"

#ifndef DELAYER_VERSION
#define DELAYER_VERSION "dev"
#endif

#define EXIT_OK        0
#define EXIT_REFUSED   1    /* bad input, or refused by the record's content */
#define EXIT_STATE     2    /* the record is not in a state that allows it */
#define EXIT_NOTFOUND  3
#define EXIT_USAGE     100
#define EXIT_SYSTEM    111

/* ------------------------------------------------------------------ help */

typedef struct {
    const char *name;
    const char *usage;
    const char *text;
} help_entry;

static const help_entry helps[] = {
    {"init", "delayer init [--topic NAME]...",
     "Creates, if missing, everything the deployment needs: the tables\n"
     "<prefix>-schedules (indexes due and by_state, TTL on expires) and\n"
     "<prefix>-meta, the queues <prefix>-delay (visibility 30 s, redrive to the\n"
     "dead-letter queue after 5 receives) and <prefix>-dead, the events topic\n"
     "<prefix>-events, and one topic <prefix>-NAME per --topic (then usable as\n"
     "--topic NAME). Prints one line per resource: \"created KIND NAME\" or\n"
     "\"exists KIND NAME\". Safe to run again. DELAYER_SHARDS (default 8) is\n"
     "fixed by the first init.\n"},
    {"schedule", "delayer schedule (--at TIME | --in DURATION) --topic TOPIC --payload TEXT|@FILE|-\n"
                 "                 [--attr KEY=VALUE]... [--id ID] [--json]",
     "Creates one schedule and prints its id (--json: the whole record).\n"
     "  --at       RFC 3339 with Z or an offset (fractions allowed), or epoch\n"
     "             seconds (or milliseconds, 13+ digits)\n"
     "  --in       90s, 15m, 2h, 3d, 1w, 500ms or combinations (1h30m), counted\n"
     "             from now: a repeated --in command is other content (use --at\n"
     "             with --id for retries that must be idempotent)\n"
     "  --topic    an SNS topic ARN (must exist) or a NAME given to init --topic\n"
     "  --payload  the message: text, @FILE, or - for stdin (UTF-8, not empty,\n"
     "             <= 256 KiB together with the attributes)\n"
     "  --attr     a String message attribute (repeatable, at most 10)\n"
     "  --id       your id (1-512 bytes of UTF-8). The same id with the same\n"
     "             content returns the existing schedule (exit 0); with other\n"
     "             content it is refused (exit 1). Without --id a time-sortable\n"
     "             ULID is generated.\n"
     "Refused (exit 1, nothing written): a time more than DELAYER_GRACE in the\n"
     "past or beyond DELAYER_HORIZON, an unknown topic, a bad attribute, a\n"
     "payload too large. Due within DELAYER_WINDOW: written ENQUEUED and sent to\n"
     "the delay queue at once (if SQS fails it is kept NEW for the scanner).\n"
     "Otherwise written NEW for the scanner.\n"},
    {"import", "delayer import [--ids] < FILE.ndjson",
     "Creates one schedule per input line, a JSON object:\n"
     "  {\"id\":\"...\"?, \"at\":TIME | \"in\":DURATION, \"topic\":\"...\", \"payload\":\"...\",\n"
     "   \"attrs\":{\"k\":\"v\"}?}\n"
     "(\"at\" may also be a number of epoch seconds or milliseconds; \"in\" a number\n"
     "of seconds). Writes with BatchWriteItem (25) and sends due-soon ones with\n"
     "SendMessageBatch (10), retrying unprocessed items. Each bad line is\n"
     "reported on stderr as \"line N: FIELD: PROBLEM\" and skipped; the good\n"
     "lines are all imported. A line longer than 1648000 bytes (the longest a\n"
     "valid schedule can be, JSON-escaped) is refused without being held.\n"
     "A line whose id exists with the same content counts as existing; with\n"
     "other content it is a bad line. A progress bar\n"
     "is drawn on stderr when it is a terminal; one summary line goes to\n"
     "stdout. --ids prints \"N<TAB>ID\" for every line imported or existing.\n"
     "Exit 0 when every line was imported or existed, 1 when a line was bad,\n"
     "111 when AWS failed.\n"},
    {"get", "delayer get ID [--payload]",
     "Prints the record as JSON: id, state, due (RFC 3339), due_ms, topic,\n"
     "attrs, payload_size, created, updated, attempts, last_error, lease (while\n"
     "ENQUEUED), expires (final states), history [{state, at}]; --payload adds\n"
     "the payload. Exit 3 if there is no such schedule (or it has expired).\n"},
    {"cancel", "delayer cancel ID",
     "Cancels a NEW or ENQUEUED schedule (also one already waiting in the delay\n"
     "queue: once cancel has succeeded it is never published) and prints its\n"
     "id. Exit 2 if it is in another state (PUBLISHED, CANCELLED, FAILED,\n"
     "INVALID: the state is named), 3 if there is no such schedule.\n"},
    {"list", "delayer list [--state S[,S]]... [--since DURATION | --from TIME --to TIME]\n"
             "             [--topic TOPIC] [--error-prefix P] [--limit N] [--cursor C] [--count]",
     "Prints matching records as NDJSON, newest change first (id, state, due,\n"
     "due_ms, topic, payload_size, created, updated, attempts, last_error,\n"
     "expires). Times select on the time of the last state change. Reads the\n"
     "by_state index with Query only (never a Scan). --limit defaults to 100;\n"
     "when more records may follow, the last line on STDERR is\n"
     "{\"cursor\":\"...\"}: pass it as --cursor for the next page. --count prints\n"
     "only the number of matching records.\n"},
    {"stats", "delayer stats [--by-topic] [--json] [--recount]",
     "Prints the number of schedules per state from maintained counters (one\n"
     "BatchGetItem whatever the table's size). --by-topic adds one row per\n"
     "topic. --recount first rebuilds the counters from the by_state index\n"
     "(reads every record: slow on big tables). Final states count records\n"
     "until they are deleted; records removed by their TTL stay counted until\n"
     "the next --recount.\n"},
    {"delete", "delayer delete ID",
     "Removes the record (whatever its state; a waiting schedule is then never\n"
     "published) and prints its id. Exit 3 if there is no such record.\n"},
    {"watch", "delayer watch --topic TOPIC [--json] [--count N] [--timeout DURATION]",
     "Subscribes a temporary SQS queue (raw delivery) to the topic and prints\n"
     "each arriving message: arrival time, due time, lateness (arrival minus\n"
     "due; arrival is the queue's SentTimestamp), id and the start of the\n"
     "payload; --json prints NDJSON {id, due, arrived, late_ms, attempt,\n"
     "payload}. Runs until Ctrl-C/SIGTERM, or until N messages (--count) or\n"
     "--timeout; removes its queue and subscription on exit. Exit 1 if\n"
     "--count was not reached before --timeout.\n"},
    {"retry", "delayer retry ID | delayer retry --state FAILED [--since DURATION | --from T --to T]\n"
              "                                     [--topic TOPIC] [--error-prefix P] [--limit N]",
     "Sends FAILED schedules again at once (state ENQUEUED; their due time,\n"
     "attempts and last_error are kept). With an ID: exit 2 if it is not\n"
     "FAILED, 3 if not found. With --state FAILED: retries every match (at most\n"
     "--limit, default 1000) and prints their ids and a summary line.\n"},
    {"help", "delayer help [SUBCOMMAND]", "Prints help for delayer or one subcommand.\n"},
};
#define NHELP (sizeof helps / sizeof helps[0])

static const char general_help[] =
    "delayer: schedule one-off messages: publish PAYLOAD to SNS TOPIC at TIME.\n"
    "\n"
    "usage: delayer [--prefix P] [--no-events] SUBCOMMAND [options]\n"
    "       delayer help [SUBCOMMAND] | --help | --version\n"
    "\n"
    "subcommands:\n"
    "  init       create the tables, queues and topics (idempotent)\n"
    "  schedule   create a schedule\n"
    "  import     create schedules from NDJSON on stdin\n"
    "  get        show a schedule\n"
    "  cancel     cancel a waiting schedule\n"
    "  list       list schedules by state and time (NDJSON)\n"
    "  stats      count schedules per state (and topic)\n"
    "  delete     remove a record\n"
    "  retry      send FAILED schedules again\n"
    "  watch      print what arrives on a topic, with its lateness\n"
    "\n"
    "States: NEW (stored, waiting for the scanner), ENQUEUED (in the delay\n"
    "queue), PUBLISHED (committed to SNS), CANCELLED, FAILED (publishing gave\n"
    "up), INVALID (could never run). Final records expire after the retention.\n"
    "\n"
    "Options and environment (options win):\n"
    "  --prefix P / DELAYER_PREFIX   names of tables, queues, topics (default delayer)\n"
    "  --no-events / DELAYER_EVENTS=0  do not publish lifecycle events\n"
    "  DELAYER_WINDOW     fast-track window, default and maximum 900s\n"
    "  DELAYER_GRACE      how late a time may be given, and lease slack (30s)\n"
    "  DELAYER_SHARDS     due-index shards, used by the first init only (8)\n"
    "  DELAYER_RETENTION  how long final records are kept (7d)\n"
    "  DELAYER_HORIZON    how far ahead a schedule may be (365d)\n"
    "  AWS_REGION, AWS_ENDPOINT_URL[_DYNAMODB|_SQS|_SNS], credentials: as the AWS SDKs\n"
    "\n"
    "Exit status: 0 ok; 1 refused (bad input, or an id reused with other\n"
    "content, or an import line failed); 2 not in a state that allows it\n"
    "(e.g. cancel of a PUBLISHED schedule); 3 not found; 100 usage error;\n"
    "111 system or AWS failure.\n"
    "Errors are one line on stderr: \"delayer: FIELD: PROBLEM\".\n";

static const help_entry *help_find(const char *name)
{
    for (size_t i = 0; i < NHELP; i++)
        if (!strcmp(helps[i].name, name)) return &helps[i];
    return NULL;
}

static void print_help(FILE *f, const char *cmd)
{
    const help_entry *h = cmd ? help_find(cmd) : NULL;
    if (!h) {
        fputs(general_help, f);
        return;
    }
    fprintf(f, "usage: %s\n\n%s", h->usage, h->text);
}

/* ---------------------------------------------------------------- errors */

static int die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int die(int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One line whatever the message holds. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "delayer: %s\n", msg);
    return code;
}

/* A store result that is not OK -> exit code (message already in s->err). */
static int store_exit(store *s, int rc)
{
    int code = rc == STORE_NOTFOUND ? EXIT_NOTFOUND : rc == STORE_LOST ? EXIT_STATE : EXIT_SYSTEM;
    return die(code, "%s", s->err);
}

/* --------------------------------------------------------------- options */

typedef struct {
    int argc;
    char **argv;
    int i;
    const char *cmd;
} args;

/* --name VALUE or --name=VALUE at argv[i]: 1 (advanced, *val set), 0 not
 * this option, -1 missing value (reported). */
static int opt_val(args *a, const char *name, const char **val)
{
    const char *s = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(s, name, n)) return 0;
    if (s[n] == '=') {
        *val = s + n + 1;
        a->i++;
        return 1;
    }
    if (s[n]) return 0;
    if (a->i + 1 >= a->argc) {
        die(EXIT_USAGE, "%s: missing value (see delayer help %s)", name, a->cmd);
        return -1;
    }
    *val = a->argv[a->i + 1];
    a->i += 2;
    return 1;
}

static int opt_flag(args *a, const char *name)
{
    if (strcmp(a->argv[a->i], name)) return 0;
    a->i++;
    return 1;
}

static int unknown_opt(args *a)
{
    char q[80];
    sched_quote(q, sizeof q, a->argv[a->i], 60);
    if (a->argv[a->i][0] == '-') return die(EXIT_USAGE, "%s: unknown option (see delayer help %s)", q, a->cmd);
    return die(EXIT_USAGE, "%s: unexpected argument (see delayer help %s)", q, a->cmd);
}

/* Global settings shared by every subcommand. */
typedef struct {
    store_conf conf;
    const char *prefix;   /* --prefix */
    int no_events;
} globals;

/* --prefix / --no-events may also follow the subcommand. 1 consumed. */
static int global_opt(args *a, globals *g, int *rc)
{
    const char *v;
    int r = opt_val(a, "--prefix", &v);
    if (r < 0) {
        *rc = EXIT_USAGE;
        return 1;
    }
    if (r) {
        g->prefix = v;
        return 1;
    }
    if (opt_flag(a, "--no-events")) {
        g->no_events = 1;
        return 1;
    }
    return 0;
}

/* Opens the deployment; load = 1 also reads its config (all but init). */
static store *open_store(globals *g, int load, int *code)
{
    char err[512];
    store_conf c = g->conf;
    if (g->prefix) c.prefix = g->prefix;
    if (g->no_events) c.events = 0;
    if (store_check_prefix(c.prefix ? c.prefix : "delayer", err, sizeof err) < 0) {
        *code = die(EXIT_USAGE, "%s", err);
        return NULL;
    }
    store *s = store_open(&c, err, sizeof err);
    if (!s) {
        *code = die(EXIT_SYSTEM, "%s", err);
        return NULL;
    }
    if (load) {
        int rc = store_load(s);
        if (rc != STORE_OK) {
            *code = die(EXIT_SYSTEM, "%s", s->err);
            store_close(s);
            return NULL;
        }
    }
    return s;
}

/* Reports (once) events that could not be published: a warning only; the
 * state change they describe is already written. */
static void close_store(store *s)
{
    if (!s) return;
    store_events_flush(s);
    if (s->ev_failed) fprintf(stderr, "delayer: warning: %s (%" PRIu64 " event(s) not published)\n", s->ev_err, s->ev_failed);
    store_close(s);
}

/* Prints the warnings of a schedreq step (lib/schedreq.h), one per line. */
static void print_warnings(buf_t *w)
{
    char *save = NULL;
    for (char *l = w->p ? strtok_r(w->p, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
        fprintf(stderr, "delayer: warning: %s\n", l);
    buf_free(w);
}

/* ------------------------------------------------------------------ init */

static int cmd_init(args *a, globals *g)
{
    const char **topics = xcalloc((size_t)a->argc + 1, sizeof *topics);
    size_t nt = 0;
    int code = EXIT_OK;
    while (a->i < a->argc && code == EXIT_OK) {
        const char *v;
        int r;
        if (global_opt(a, g, &code)) continue;
        if ((r = opt_val(a, "--topic", &v)) != 0) {
            if (r < 0) code = EXIT_USAGE;
            else topics[nt++] = v;
            continue;
        }
        code = unknown_opt(a);
    }
    store *s = code == EXIT_OK ? open_store(g, 0, &code) : NULL;
    if (s) {
        buf_t rep = BUF_INIT;
        int rc = store_init(s, topics, nt, &rep);
        fputs(buf_str(&rep), stdout);
        if (rc != STORE_OK) code = die(strncmp(s->err, "topic:", 6) ? EXIT_SYSTEM : EXIT_REFUSED, "%s", s->err);
        buf_free(&rep);
    }
    close_store(s);
    free(topics);
    return code;
}

/* -------------------------------------------------------------- schedule */

/* --payload: literal text, @FILE, or - (stdin). */
static int read_payload(const char *arg, sched_rec *r)
{
    if (strcmp(arg, "-") && arg[0] != '@') {
        sched_set_payload(r, arg, strlen(arg));
        return 0;
    }
    FILE *f = strcmp(arg, "-") ? fopen(arg + 1, "rb") : stdin;
    char q[80];
    sched_quote(q, sizeof q, arg + 1, 60);
    if (!f) return die(EXIT_REFUSED, "payload: cannot read %s: %s", q, strerror(errno));
    buf_t b = BUF_INIT;
    char chunk[65536];
    size_t n;
    /* Read at most one byte beyond the limit: enough to refuse it. */
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len <= SCHED_MSG_MAX) buf_add(&b, chunk, n);
    int bad = ferror(f);
    if (f != stdin) fclose(f);
    if (bad) {
        buf_free(&b);
        return die(EXIT_REFUSED, "payload: cannot read %s", arg[0] == '@' ? q : "stdin");
    }
    sched_set_payload(r, b.p ? b.p : "", b.len);
    buf_free(&b);
    return 0;
}

/* The due time from --at or --in (field named in errors). */
static int parse_due(const char *at, const char *in, int64_t now, int64_t *due)
{
    char e[160];
    if (at) {
        if (time_parse_at(at, due, e, sizeof e) < 0) return die(EXIT_REFUSED, "at: %s", e);
        return 0;
    }
    int64_t d;
    if (time_parse_duration(in, &d, e, sizeof e) < 0) return die(EXIT_REFUSED, "in: %s", e);
    *due = now + d;
    return 0;
}

typedef struct {
    const char *at, *in, *topic, *payload, *id;
    int json;
} sched_opts;

static int schedule_args(args *a, globals *g, sched_rec *r, sched_opts *o)
{
    int code = EXIT_OK;
    while (a->i < a->argc && code == EXIT_OK) {
        const char *v;
        int r1;
        if (global_opt(a, g, &code)) continue;
        if ((r1 = opt_val(a, "--at", &o->at)) || (r1 = opt_val(a, "--in", &o->in)) ||
            (r1 = opt_val(a, "--topic", &o->topic)) || (r1 = opt_val(a, "--payload", &o->payload)) ||
            (r1 = opt_val(a, "--id", &o->id))) {
            if (r1 < 0) code = EXIT_USAGE;
            continue;
        }
        if ((r1 = opt_val(a, "--attr", &v)) != 0) {
            char e[256];
            if (r1 < 0) code = EXIT_USAGE;
            else if (sched_attr_parse(r, v, e, sizeof e) < 0) code = die(EXIT_REFUSED, "%s", e);
            continue;
        }
        if (opt_flag(a, "--json")) {
            o->json = 1;
            continue;
        }
        code = unknown_opt(a);
    }
    if (code != EXIT_OK) return code;
    if (!o->at && !o->in) return die(EXIT_USAGE, "at: missing: give --at TIME or --in DURATION");
    if (o->at && o->in) return die(EXIT_USAGE, "at: give --at or --in, not both");
    if (!o->topic) return die(EXIT_USAGE, "topic: missing: give --topic");
    if (!o->payload) return die(EXIT_USAGE, "payload: missing: give --payload");
    return EXIT_OK;
}

/* Validates everything that needs no AWS call, in the order of the options.
 * A due time in the past with an explicit id is not refused yet:
 * schedreq_create returns the schedule if it exists with this very content
 * (an identical re-submission is idempotent, even late), else the error. */
static int schedule_check(store *s, sched_rec *r, const sched_opts *o, int64_t now)
{
    char e[512];
    sched_limits lim = {s->conf.grace_ms, s->conf.horizon_ms};
    if (o->id) {
        if (sched_check_id(o->id, e, sizeof e) < 0) return die(EXIT_REFUSED, "%s", e);
        r->id = xstrdup(o->id);
    }
    if (parse_due(o->at, o->in, now, &r->due)) return EXIT_REFUSED;
    if (sched_check_due(r->due, now, &lim, o->at ? "at" : "in", e, sizeof e) < 0) {
        if (!o->id || r->due >= now - lim.grace_ms) return die(EXIT_REFUSED, "%s", e);
    }
    if (read_payload(o->payload, r)) return EXIT_REFUSED;
    if (sched_check_message(r, e, sizeof e) < 0) return die(EXIT_REFUSED, "%s", e);
    return EXIT_OK;
}

static void print_record(const sched_rec *r, int json)
{
    if (json) {
        buf_t b = BUF_INIT;
        sched_json(&b, r, 0);
        printf("%s\n", b.p);
        buf_free(&b);
    } else {
        printf("%s\n", r->id);
    }
}

/* The id exists: same content is the same schedule (exit 0), else refused. */
static int schedule_exists(store *s, const sched_rec *r, sched_rec *old, int json)
{
    if (strcmp(old->chash, r->chash)) {
        char q[80];
        sched_quote(q, sizeof q, r->id, 60);
        return die(EXIT_REFUSED, "id: \"%s\" is already used by a schedule with different content", q);
    }
    if (json && store_get(s, r->id, old) != STORE_OK) return store_exit(s, STORE_ERR);
    print_record(old, json);
    return EXIT_OK;
}

static int cmd_schedule(args *a, globals *g)
{
    sched_rec r, old;
    sched_opts o = {0};
    sched_rec_init(&r);
    sched_rec_init(&old);
    int code = schedule_args(a, g, &r, &o);
    store *s = code == EXIT_OK ? open_store(g, 1, &code) : NULL;
    int64_t now = time_now_ms();
    if (s && (code = schedule_check(s, &r, &o, now)) == EXIT_OK) {
        buf_t warn = BUF_INIT;
        r.topic = xstrdup(o.topic);
        int rc = schedreq_create(s, &r, now, &old, NULL, &warn);
        print_warnings(&warn);
        if (rc == STORE_NOTFOUND) code = die(EXIT_REFUSED, "%s", s->err);
        else if (rc == SCHEDREQ_SAME || rc == SCHEDREQ_CONFLICT) code = schedule_exists(s, &r, &old, o.json);
        else if (rc == SCHEDREQ_PAST) code = die(EXIT_REFUSED, "%s", s->err);
        else if (rc != STORE_OK) code = store_exit(s, rc);
        else print_record(&r, o.json);
    }
    close_store(s);
    sched_rec_free(&r);
    sched_rec_free(&old);
    return code;
}

/* ---------------------------------------------------- get/cancel/delete */

/* One positional ID plus the given flags. */
static int id_args(args *a, globals *g, const char **id, const char *flag, int *flag_set)
{
    int code = EXIT_OK;
    while (a->i < a->argc && code == EXIT_OK) {
        if (global_opt(a, g, &code)) continue;
        if (flag && opt_flag(a, flag)) {
            *flag_set = 1;
            continue;
        }
        if (!strcmp(a->argv[a->i], "--") && a->i + 1 < a->argc && !*id) {
            *id = a->argv[a->i + 1];
            a->i += 2;
            continue;
        }
        if (a->argv[a->i][0] != '-' && !*id) {
            *id = a->argv[a->i++];
            continue;
        }
        code = unknown_opt(a);
    }
    if (code == EXIT_OK && !*id) code = die(EXIT_USAGE, "id: missing (usage: %s)", help_find(a->cmd)->usage);
    return code;
}

static int cmd_get(args *a, globals *g)
{
    const char *id = NULL;
    int payload = 0;
    int code = id_args(a, g, &id, "--payload", &payload);
    store *s = code == EXIT_OK ? open_store(g, 1, &code) : NULL;
    if (s) {
        sched_rec r;
        sched_rec_init(&r);
        int rc = store_get(s, id, &r);
        if (rc != STORE_OK) {
            code = store_exit(s, rc);
        } else {
            buf_t b = BUF_INIT;
            sched_json(&b, &r, payload);
            printf("%s\n", b.p);
            buf_free(&b);
        }
        sched_rec_free(&r);
    }
    close_store(s);
    return code;
}

static int cmd_cancel(args *a, globals *g)
{
    const char *id = NULL;
    int code = id_args(a, g, &id, NULL, NULL);
    store *s = code == EXIT_OK ? open_store(g, 1, &code) : NULL;
    if (s) {
        sched_rec old;
        sched_rec_init(&old);
        buf_t warn = BUF_INIT;
        int rc = schedreq_cancel(s, id, time_now_ms(), &old, &warn);
        print_warnings(&warn);
        if (rc == STORE_OK) {
            printf("%s\n", id);
        } else if (rc == STORE_LOST) {
            code = die(EXIT_STATE, "state: the schedule is %s: only NEW or ENQUEUED can be cancelled",
                       sched_state_name(old.state));
        } else {
            code = store_exit(s, rc);
        }
        sched_rec_free(&old);
    }
    close_store(s);
    return code;
}

static int cmd_delete(args *a, globals *g)
{
    const char *id = NULL;
    int code = id_args(a, g, &id, NULL, NULL);
    store *s = code == EXIT_OK ? open_store(g, 1, &code) : NULL;
    if (s) {
        sched_rec old;
        sched_rec_init(&old);
        buf_t warn = BUF_INIT;
        int rc = schedreq_delete(s, id, time_now_ms(), &old, &warn);
        print_warnings(&warn);
        if (rc == STORE_OK) {
            printf("%s\n", id);
        } else {
            code = store_exit(s, rc);
        }
        sched_rec_free(&old);
    }
    close_store(s);
    return code;
}

/* ----------------------------------------------------------------- retry */

/* FAILED -> ENQUEUED and send; 0 ok, else an exit code (reported). */
static int retry_one(store *s, const char *id)
{
    sched_rec old;
    sched_rec_init(&old);
    buf_t warn = BUF_INIT;
    int rc = schedreq_retry(s, id, time_now_ms(), &old, &warn), code = EXIT_OK;
    print_warnings(&warn);
    if (rc == STORE_LOST) {
        code = die(EXIT_STATE, "state: the schedule is %s: only FAILED can be retried", sched_state_name(old.state));
    } else if (rc != STORE_OK) {
        code = store_exit(s, rc);
    }
    sched_rec_free(&old);
    return code;
}

/* --state/--since/--from/--to/--topic/--error-prefix/--limit/--cursor,
 * shared by list and retry. 1 when argv[i] was one of them. */
typedef struct {
    store_list_q q;
    const char *since, *from, *to, *topic, *cursor;
    int count;
} list_opts;

static int add_states(list_opts *o, const char *v)
{
    char *dup = xstrdup(v), *save = NULL;
    int code = EXIT_OK;
    for (char *t = strtok_r(dup, ",", &save); t && code == EXIT_OK; t = strtok_r(NULL, ",", &save)) {
        for (char *p = t; *p; p++)
            if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 32);
        int st = sched_state_parse(t);
        char q[40];
        sched_quote(q, sizeof q, t, 20);
        if (st < 0) code = die(EXIT_REFUSED, "state: unknown state \"%s\" (NEW, ENQUEUED, PUBLISHED, CANCELLED, FAILED, INVALID)", q);
        else {
            int seen = 0;
            for (int i = 0; i < o->q.nstates; i++) seen |= o->q.states[i] == st;
            if (!seen) o->q.states[o->q.nstates++] = st;
        }
    }
    free(dup);
    return code;
}

static int list_opt(args *a, list_opts *o, int *code)
{
    const char *v;
    int r;
    if ((r = opt_val(a, "--state", &v)) != 0) {
        *code = r < 0 ? EXIT_USAGE : add_states(o, v);
        return 1;
    }
    if ((r = opt_val(a, "--since", &o->since)) || (r = opt_val(a, "--from", &o->from)) ||
        (r = opt_val(a, "--to", &o->to)) || (r = opt_val(a, "--topic", &o->topic)) ||
        (r = opt_val(a, "--error-prefix", &o->q.error_prefix)) || (r = opt_val(a, "--cursor", &o->cursor))) {
        if (r < 0) *code = EXIT_USAGE;
        return 1;
    }
    if ((r = opt_val(a, "--limit", &v)) != 0) {
        int64_t n;
        if (r < 0) *code = EXIT_USAGE;
        else if (json_parse_i64(v, strlen(v), &n) < 0 || n < 1 || n > 1000000)
            *code = die(EXIT_REFUSED, "limit: expected a number from 1 to 1000000");
        else o->q.limit = (long)n;
        return 1;
    }
    return 0;
}

/* Turns since/from/to/topic into the query (topic names resolved). */
static int list_finish(store *s, list_opts *o, buf_t *arn)
{
    char e[160];
    int64_t now = time_now_ms(), d;
    if (o->since && (o->from || o->to)) return die(EXIT_USAGE, "since: give --since or --from/--to, not both");
    if (o->since) {
        if (time_parse_duration(o->since, &d, e, sizeof e) < 0) return die(EXIT_REFUSED, "since: %s", e);
        o->q.from_ms = now - d;
    }
    if (o->from && time_parse_at(o->from, &o->q.from_ms, e, sizeof e) < 0) return die(EXIT_REFUSED, "from: %s", e);
    o->q.to_ms = INT64_MAX;
    if (o->to && time_parse_at(o->to, &o->q.to_ms, e, sizeof e) < 0) return die(EXIT_REFUSED, "to: %s", e);
    if (o->q.from_ms > o->q.to_ms) return die(EXIT_REFUSED, "from: after --to");
    o->q.cursor = o->cursor;
    if (o->cursor && store_cursor_check(o->cursor, e, sizeof e) < 0) return die(EXIT_REFUSED, "%s", e);
    if (o->topic) {
        /* A listing filters on whatever ARN is given (the topic may be
         * gone); a NAME must be known. */
        if (!strncmp(o->topic, "arn:", 4)) {
            buf_adds(arn, o->topic);
        } else {
            int rc = store_topic_resolve(s, o->topic, arn);
            if (rc == STORE_NOTFOUND) return die(EXIT_REFUSED, "%s", s->err);
            if (rc != STORE_OK) return store_exit(s, rc);
        }
        o->q.topic = arn->p;
    }
    return EXIT_OK;
}

typedef struct {
    char **ids;
    size_t n;
} id_list;

static int collect_id(void *ctx, const sched_rec *r)
{
    id_list *l = ctx;
    l->ids = xrealloc(l->ids, (l->n + 1) * sizeof *l->ids);
    l->ids[l->n++] = xstrdup(r->id);
    return 0;
}

/* retry --state FAILED ...: every match, one by one. */
static int retry_many(store *s, list_opts *o)
{
    id_list l = {0};
    buf_t cur = BUF_INIT;
    int code = EXIT_OK, ok = 0, bad = 0;
    if (store_list(s, &o->q, collect_id, &l, &cur) != STORE_OK) code = store_exit(s, STORE_ERR);
    for (size_t i = 0; i < l.n && code == EXIT_OK; i++) {
        int c = retry_one(s, l.ids[i]);
        if (c == EXIT_OK) {
            printf("%s\n", l.ids[i]);
            ok++;
        } else if (c == EXIT_SYSTEM) {
            code = c;
        } else {
            bad++; /* changed state meanwhile: reported, not fatal */
        }
    }
    printf("retried %d, %d skipped%s\n", ok, bad, cur.len ? " (more match: run again)" : "");
    for (size_t i = 0; i < l.n; i++) free(l.ids[i]);
    free(l.ids);
    buf_free(&cur);
    return code;
}

static int cmd_retry(args *a, globals *g)
{
    const char *id = NULL;
    list_opts o = {0};
    int code = EXIT_OK;
    o.q.limit = 1000;
    while (a->i < a->argc && code == EXIT_OK) {
        if (global_opt(a, g, &code) || list_opt(a, &o, &code)) continue;
        if (a->argv[a->i][0] != '-' && !id) {
            id = a->argv[a->i++];
            continue;
        }
        code = unknown_opt(a);
    }
    if (code != EXIT_OK) return code;
    int bulk = o.q.nstates || o.since || o.from || o.to || o.topic || o.q.error_prefix;
    if (id && bulk) return die(EXIT_USAGE, "id: give an ID or --state FAILED with filters, not both");
    if (!id && !bulk) return die(EXIT_USAGE, "id: missing (usage: %s)", help_find("retry")->usage);
    if (bulk && (o.q.nstates != 1 || o.q.states[0] != SCHED_FAILED))
        return die(EXIT_REFUSED, "state: only FAILED schedules can be retried (give --state FAILED)");
    buf_t arn = BUF_INIT;
    store *s = open_store(g, 1, &code);
    if (s && id) code = retry_one(s, id);
    if (s && id && code == EXIT_OK) printf("%s\n", id);
    if (s && !id && (code = list_finish(s, &o, &arn)) == EXIT_OK) code = retry_many(s, &o);
    close_store(s);
    buf_free(&arn);
    return code;
}

/* ------------------------------------------------------------------ list */

static int print_line(void *ctx, const sched_rec *r)
{
    buf_t *b = ctx;
    buf_reset(b);
    sched_json(b, r, 0);
    buf_addc(b, '\n');
    return fwrite(b->p, 1, b->len, stdout) != b->len; /* stop on a closed pipe */
}

static int cmd_list(args *a, globals *g)
{
    list_opts o = {0};
    int code = EXIT_OK;
    o.q.limit = 100;
    while (a->i < a->argc && code == EXIT_OK) {
        if (global_opt(a, g, &code) || list_opt(a, &o, &code)) continue;
        if (opt_flag(a, "--count")) {
            o.count = 1;
            continue;
        }
        code = unknown_opt(a);
    }
    buf_t arn = BUF_INIT, cur = BUF_INIT, line = BUF_INIT;
    store *s = code == EXIT_OK ? open_store(g, 1, &code) : NULL;
    if (s && (code = list_finish(s, &o, &arn)) == EXIT_OK) {
        int64_t n = 0;
        if (o.count) {
            if (store_list_count(s, &o.q, &n) != STORE_OK) code = store_exit(s, STORE_ERR);
            else printf("%" PRId64 "\n", n);
        } else if (store_list(s, &o.q, print_line, &line, &cur) != STORE_OK) {
            code = store_exit(s, STORE_ERR);
        } else if (cur.len) {
            fflush(stdout);
            fprintf(stderr, "{\"cursor\":\"%s\"}\n", cur.p);
        }
    }
    close_store(s);
    buf_free(&arn);
    buf_free(&cur);
    buf_free(&line);
    return code;
}

/* ----------------------------------------------------------------- stats */

static void stats_json(const store_stats *st, int by_topic)
{
    buf_t b = BUF_INIT;
    schedreq_stats_json(&b, st, by_topic);
    printf("%s\n", b.p);
    buf_free(&b);
}

static void stats_text(const store_stats *st, int by_topic)
{
    int64_t total = 0;
    for (int i = 0; i < SCHED_NSTATES; i++) {
        printf("%-10s %" PRId64 "\n", sched_state_name(i), st->n[i]);
        total += st->n[i];
    }
    printf("%-10s %" PRId64 "\n", "TOTAL", total);
    if (!by_topic) return;
    printf("\n%-10s %-10s %-10s %-10s %-10s %-10s TOPIC\n", "NEW", "ENQUEUED", "PUBLISHED", "CANCELLED", "FAILED",
           "INVALID");
    for (size_t t = 0; t < st->ntopic; t++) {
        for (int i = 0; i < SCHED_NSTATES; i++) printf("%-10" PRId64 " ", st->topic[t].n[i]);
        char q[300];
        sched_quote(q, sizeof q, st->topic[t].arn, 290);
        printf("%s\n", q);
    }
}

static int cmd_stats(args *a, globals *g)
{
    int by_topic = 0, json = 0, recount = 0, code = EXIT_OK;
    while (a->i < a->argc && code == EXIT_OK) {
        if (global_opt(a, g, &code)) continue;
        if (opt_flag(a, "--by-topic")) by_topic = 1;
        else if (opt_flag(a, "--json")) json = 1;
        else if (opt_flag(a, "--recount")) recount = 1;
        else code = unknown_opt(a);
    }
    store *s = code == EXIT_OK ? open_store(g, 1, &code) : NULL;
    if (s) {
        store_stats st;
        memset(&st, 0, sizeof st);
        if (recount && store_stats_recount(s, NULL) != STORE_OK) code = store_exit(s, STORE_ERR);
        else if (store_stats_read(s, by_topic, &st) != STORE_OK) code = store_exit(s, STORE_ERR);
        else if (json) stats_json(&st, by_topic);
        else stats_text(&st, by_topic);
        store_stats_free(&st);
    }
    close_store(s);
    return code;
}

/* ---------------------------------------------------------------- import */

static int import_main(store *s, int print_ids); /* below */

static int cmd_import(args *a, globals *g)
{
    int ids = 0, code = EXIT_OK;
    while (a->i < a->argc && code == EXIT_OK) {
        if (global_opt(a, g, &code)) continue;
        if (opt_flag(a, "--ids")) ids = 1;
        else code = unknown_opt(a);
    }
    store *s = code == EXIT_OK ? open_store(g, 1, &code) : NULL;
    if (s) code = import_main(s, ids);
    close_store(s);
    return code;
}

/* The longest valid import line, in bytes. What a valid line can hold is
 * bounded by the limits it is checked against: the payload plus attribute
 * names and values at most SCHED_MSG_MAX, the id SCHED_ID_MAX, the topic
 * (an ARN: a 256-character name plus partition, region and account) at most
 * 1 KiB, "at"/"in" at most 64 bytes (time_parse_at). In JSON each of those
 * bytes takes at most 6 (a control character as \u00XX); 64 KiB more cover
 * the keys, quotes, separators and whitespace. About 1.6 MB: a longer line
 * cannot be a valid schedule, so it is refused without being held in
 * memory (import_line skips to its newline). */
#define IMPORT_TOPIC_MAX 1024
#define IMPORT_LINE_MAX  (6 * ((size_t)SCHED_MSG_MAX + SCHED_ID_MAX + IMPORT_TOPIC_MAX + 64) + 65536)
_Static_assert(IMPORT_LINE_MAX == 1648000, "the limit is quoted in `delayer help import` and delayer(1)");

/* stdin read in blocks (read(2): a pipe's lines are taken as they come),
 * handed out one line at a time with a bound. */
typedef struct {
    char blk[65536];
    size_t pos, len;
    int eof;
} line_reader;

/* Rows read but not yet written wait at most this long for more input
 * (IMPORT_IDLE_MS without any) before they are written and fast-tracked:
 * a row due in 3 s must not wait for a slow producer to fill a chunk. */
#define IMPORT_IDLE_MS 100
#define IMPORT_HOLD_MS 500

/* The next line (without '\n') into *line, at most max bytes kept: a
 * longer line is read through to its newline but not kept (*too_long = 1,
 * line empty). *consumed: bytes read, newline included. With wait_ms >= 0,
 * gives up when no input comes within wait_ms (returns 2; call again to
 * go on with the same line). 1 a line, 0 end of input (or a read error). */
static int import_line(line_reader *lr, buf_t *line, size_t max, size_t *consumed, int *too_long, int wait_ms)
{
    for (;;) {
        if (lr->pos == lr->len) {
            if (lr->eof) return *consumed > 0;
            if (wait_ms >= 0) {
                struct pollfd pf = {.fd = 0, .events = POLLIN};
                int pr = poll(&pf, 1, wait_ms);
                if (pr == 0) return 2;
                if (pr < 0 && errno == EINTR) continue;
            }
            ssize_t r = read(0, lr->blk, sizeof lr->blk);
            if (r < 0 && errno == EINTR) continue;
            lr->pos = 0;
            lr->len = r > 0 ? (size_t)r : 0;
            if (r <= 0) {
                lr->eof = 1;
                continue;
            }
        }
        char *start = lr->blk + lr->pos, *nl = memchr(start, '\n', lr->len - lr->pos);
        size_t n = nl ? (size_t)(nl - start) : lr->len - lr->pos;
        if (!*too_long && line->len + n > max) {
            *too_long = 1;
            buf_free(line); /* give back what the long line held so far */
        }
        if (!*too_long) buf_add(line, start, n);
        lr->pos += n + (nl != NULL);
        *consumed += n + (nl != NULL);
        if (nl) return 1;
    }
}

/* One input line being imported. */
typedef struct {
    long line;
    sched_rec r;
    int fast;
    int status;      /* 0 pending, 1 imported, 2 existed, -1 bad */
    char *past;      /* due in the past (with an id): the error, unless it exists identical */
} irow;

typedef struct {
    store *s;
    int print_ids;
    irow *rows;
    size_t n, cap;
    store_counts *counts;
    long lines, imported, fast, existed, bad;
    int system_error;
    int64_t t0;
    off_t total_bytes;      /* stdin size when it is a regular file, else 0 */
    off_t bytes;
    int tty;
} importer;

static int line_error(importer *im, long line, const char *msg)
{
    fprintf(stderr, "%sline %ld: %s\n", im->tty ? "\r\033[K" : "", line, msg);
    im->bad++;
    return -1;
}

/* Parses and validates one line into r (everything but the topic's
 * existence, which parse_line resolves). */
static int row_parse(importer *im, const char *line, size_t len, int64_t now, sched_rec *r, char **past, char *e,
                     size_t el)
{
    json_doc d;
    int rc = -1;
    sched_limits lim = {im->s->conf.grace_ms, im->s->conf.horizon_ms};
    if (json_parse(&d, line, len) < 0) snprintf(e, el, "json: %s", d.err);
    else if ((rc = schedreq_parse(&d, 0, &lim, now, r, e, el)) == 1) {
        /* In the past with an id: an identical existing schedule makes the
         * row "existed" (check_existing), else this is its error. */
        *past = xstrdup(e);
        rc = 0;
    }
    json_free(&d);
    return rc;
}

/* One line -> a pending row, or a reported bad line. */
static void parse_line(importer *im, const char *line, size_t len, int64_t now)
{
    char e[600];
    sched_rec r;
    buf_t arn = BUF_INIT;
    char *past = NULL;
    sched_rec_init(&r);
    long ln = ++im->lines;
    if (row_parse(im, line, len, now, &r, &past, e, sizeof e) < 0) {
        line_error(im, ln, e);
    } else {
        int rc = store_topic_resolve(im->s, r.topic, &arn);
        if (rc == STORE_ERR) {
            im->system_error = 1;
            line_error(im, ln, im->s->err);
        } else if (rc != STORE_OK) {
            line_error(im, ln, im->s->err);
        } else {
            free(r.topic);
            r.topic = xstrdup(arn.p);
            if (im->n == im->cap) {
                im->cap = im->cap ? 2 * im->cap : 128;
                im->rows = xrealloc(im->rows, im->cap * sizeof *im->rows);
            }
            irow *row = &im->rows[im->n++];
            row->line = ln;
            row->r = r;
            row->status = 0;
            row->fast = 0;
            row->past = past;
            past = NULL;
            sched_rec_init(&r);
        }
    }
    free(past);
    sched_rec_free(&r);
    buf_free(&arn);
}

/* Rows with an explicit id: BatchWriteItem cannot be conditional, so look
 * the ids up first (BatchGetItem) and keep only new ones; a row repeating an
 * id (earlier in the chunk or stored) is "existing" when the content is the
 * same and a bad line otherwise. See docs/schema.md "import" for the race
 * this leaves. */
static void check_existing(importer *im, irow *rows, size_t n)
{
    const char **ids = xcalloc(n ? n : 1, sizeof *ids);
    size_t *which = xcalloc(n ? n : 1, sizeof *which), k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rows[i].r.id || rows[i].status) continue;
        for (size_t j = 0; j < i; j++) {
            if (rows[j].status < 0 || !rows[j].r.id || strcmp(rows[j].r.id, rows[i].r.id)) continue;
            sched_chash(&rows[i].r);
            sched_chash(&rows[j].r);
            rows[i].status = strcmp(rows[i].r.chash, rows[j].r.chash) ? -1 : 2;
            break;
        }
        if (rows[i].status == -1) {
            line_error(im, rows[i].line, "id: already used by a schedule with different content");
            continue;
        }
        if (rows[i].status == 0) ids[k] = rows[i].r.id, which[k++] = i;
    }
    if (k) {
        sched_rec *found = xcalloc(k, sizeof *found);
        for (size_t i = 0; i < k; i++) sched_rec_init(&found[i]);
        if (store_get_batch(im->s, ids, k, found) != STORE_OK) {
            im->system_error = 1;
            for (size_t i = 0; i < k; i++) rows[which[i]].status = -1, line_error(im, rows[which[i]].line, im->s->err);
        } else {
            for (size_t i = 0; i < k; i++) {
                irow *row = &rows[which[i]];
                if (found[i].state < 0) continue;
                sched_chash(&row->r);
                row->status = strcmp(found[i].chash, row->r.chash) ? -1 : 2;
                if (row->status < 0)
                    line_error(im, row->line, row->past ? row->past : "id: already used by a schedule with different content");
            }
        }
        for (size_t i = 0; i < k; i++) sched_rec_free(&found[i]);
        free(found);
    }
    /* Due in the past and not an identical re-submission: refused now. */
    for (size_t i = 0; i < n; i++)
        if (rows[i].past && rows[i].status == 0) rows[i].status = -1, line_error(im, rows[i].line, rows[i].past);
    free(ids);
    free(which);
}

/* A row with an explicit id: one conditional PutItem (store_create, as
 * `schedule`), so a record another writer created since check_existing
 * looked (or one that ran and was published) is never overwritten: the
 * same content counts as existed, other content is a bad line. */
static void put_one(importer *im, irow *row)
{
    sched_rec old;
    sched_rec_init(&old);
    int rc = store_create(im->s, &row->r, &old);
    if (rc == STORE_OK) {
        row->status = 1;
        if (old.state >= 0) store_counts_add(im->counts, old.state, old.topic, -1); /* replaced an expired record */
    } else if (rc == STORE_LOST) {
        row->status = strcmp(old.chash, row->r.chash) ? -1 : 2;
        if (row->status < 0) line_error(im, row->line, "id: already used by a schedule with different content");
    } else {
        row->status = -1;
        im->system_error = 1;
        line_error(im, row->line, im->s->err);
    }
    sched_rec_free(&old);
}

/* Test hook (tests only, never in production): DELAYER_TEST_IMPORT_PAUSE=PATH
 * makes the import create PATH.wait after looking its ids up and wait (at
 * most 60 s) for PATH to exist before writing: a test creates a record in
 * between, as a concurrent writer would. */
static void test_pause(void)
{
    const char *p = getenv("DELAYER_TEST_IMPORT_PAUSE");
    if (!p || !*p) return;
    char w[4096];
    snprintf(w, sizeof w, "%s.wait", p);
    FILE *f = fopen(w, "w");
    if (f) fclose(f);
    for (int i = 0; i < 1200 && access(p, F_OK) != 0; i++) usleep(50000);
}

/* Sends the written fast-track rows among these 10 at a time; a failed
 * send goes back to NEW. */
static void send_rows(importer *im, irow *const *rows, size_t n)
{
    sched_rec *batch[10];
    int ok[10];
    size_t m = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && rows[i]->status == 1 && rows[i]->fast) batch[m++] = &rows[i]->r;
        if (m == 10 || (i == n && m)) {
            store_send_batch(im->s, batch, m, ok);
            for (size_t j = 0; j < m; j++) {
                if (ok[j]) continue;
                if (store_unclaim(im->s, batch[j]->id, batch[j]->due, batch[j]->lease, NULL) == STORE_OK)
                    batch[j]->state = SCHED_NEW;
            }
            m = 0;
        }
    }
}

/* Writes the pending rows: explicit ids one by one, conditionally
 * (put_one); generated ULIDs, which nothing else can have written, 25 at a
 * time with BatchWriteItem. Each written group's fast-track rows are sent
 * as soon as it is written (the next writes would only delay them). */
static void write_rows(importer *im, irow *rows, size_t n, int64_t now)
{
    sched_rec *batch[25];
    irow *brow[25], *erow[10];
    int ok[25];
    size_t m = 0, k = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && rows[i].status == 0) {
            int explicit_id = rows[i].r.id != NULL;
            rows[i].fast = store_prepare(im->s, &rows[i].r, now);
            if (rows[i].fast < 0) {
                rows[i].status = -1;
                im->system_error = 1;
                line_error(im, rows[i].line, im->s->err);
                continue;
            }
            if (explicit_id) {
                put_one(im, &rows[i]);
                erow[k++] = &rows[i];
                if (k == 10) { send_rows(im, erow, k); k = 0; }
                continue;
            }
            brow[m] = &rows[i];
            batch[m++] = &rows[i].r;
        }
        if (m == 25 || (i == n && m)) {
            int rc = store_put_batch(im->s, batch, m, ok);
            for (size_t j = 0; j < m; j++) {
                brow[j]->status = ok[j] ? 1 : -1;
                if (!ok[j]) line_error(im, brow[j]->line, im->s->err);
            }
            if (rc != STORE_OK) im->system_error = 1;
            send_rows(im, brow, m);
            m = 0;
        }
    }
    send_rows(im, erow, k);
}

static void progress(importer *im, int done)
{
    if (!im->tty) return;
    double t = (double)(time_now_ms() - im->t0) / 1000.0;
    if (im->total_bytes > 0) {
        int w = 30, fill = (int)((double)im->bytes / (double)im->total_bytes * w);
        if (fill > w) fill = w;
        fprintf(stderr, "\r\033[K[%.*s%*s] %3d%% %ld lines %.0f/s", fill, "##############################",
                w - fill, "", (int)(100.0 * (double)im->bytes / (double)im->total_bytes), im->lines,
                t > 0 ? (double)im->lines / t : 0.0);
    } else {
        fprintf(stderr, "\r\033[K%ld lines %.0f/s", im->lines, t > 0 ? (double)im->lines / t : 0.0);
    }
    if (done) fputc('\n', stderr);
    fflush(stderr);
}

/* Imports the pending rows of one chunk: lookup, write, send, count. */
static void flush_chunk(importer *im)
{
    int64_t now = time_now_ms();
    check_existing(im, im->rows, im->n);
    test_pause();
    write_rows(im, im->rows, im->n, now); /* and sends the fast-track ones */
    for (size_t i = 0; i < im->n; i++) {
        irow *row = &im->rows[i];
        if (row->status == 1) {
            im->imported++;
            im->fast += row->r.state == SCHED_ENQUEUED;
            store_counts_add(im->counts, row->r.state, row->r.topic, 1);
            store_event(im->s, "schedule.created", &row->r, row->r.state, now, NULL);
        }
        if (row->status == 2) im->existed++;
        if (im->print_ids && row->status > 0) printf("%ld\t%s\n", row->line, row->r.id);
        sched_rec_free(&row->r);
        free(row->past);
        row->past = NULL;
    }
    im->n = 0;
    if (store_counts_pending(im->counts) && store_counts_flush(im->s, im->counts) != STORE_OK)
        fprintf(stderr, "%sdelayer: warning: counters not updated (%s)\n", im->tty ? "\r\033[K" : "", im->s->err);
    progress(im, 0);
}

static int import_main(store *s, int print_ids)
{
    importer im = {0};
    struct stat st;
    static line_reader lr;
    buf_t lb = BUF_INIT;
    size_t len;
    int too_long;
    im.s = s;
    im.print_ids = print_ids;
    im.counts = store_counts_new();
    im.t0 = time_now_ms();
    im.tty = isatty(2);
    if (fstat(0, &st) == 0 && S_ISREG(st.st_mode)) im.total_bytes = st.st_size;
    int64_t pending_since = 0;
    for (;;) {
        buf_reset(&lb);
        len = 0;
        too_long = 0;
        int got;
        for (;;) {
            int wait = -1;
            if (im.n) {
                int64_t left = pending_since + IMPORT_HOLD_MS - time_mono_ms();
                wait = left < 0 ? 0 : left < IMPORT_IDLE_MS ? (int)left : IMPORT_IDLE_MS;
            }
            if ((got = import_line(&lr, &lb, IMPORT_LINE_MAX, &len, &too_long, wait)) != 2) break;
            flush_chunk(&im); /* the input paused: write (and send) what is read */
        }
        if (!got) break;
        im.bytes += (off_t)len;
        if (too_long) {
            char e[120];
            snprintf(e, sizeof e, "line longer than %zu bytes (the longest a valid schedule can be), skipped",
                     (size_t)IMPORT_LINE_MAX);
            line_error(&im, ++im.lines, e);
            continue;
        }
        const char *line = lb.p ? lb.p : "";
        size_t n = lb.len;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (n == 0) {
            im.lines++; /* blank lines are skipped, but counted for numbering */
            continue;
        }
        size_t before = im.n;
        parse_line(&im, line, n, time_now_ms());
        if (!before && im.n) pending_since = time_mono_ms();
        if (im.n >= 100 || (im.n && time_mono_ms() - pending_since >= IMPORT_HOLD_MS)) flush_chunk(&im);
    }
    if (im.n) flush_chunk(&im);
    progress(&im, 1);
    double t = (double)(time_now_ms() - im.t0) / 1000.0;
    printf("imported %ld (%ld fast-tracked), %ld existed, %ld failed; %ld lines in %.1f s (%.0f/s)\n", im.imported,
           im.fast, im.existed, im.bad, im.lines, t, t > 0 ? (double)im.imported / t : 0.0);
    buf_free(&lb);
    free(im.rows);
    store_counts_free(im.counts);
    return im.system_error ? EXIT_SYSTEM : im.bad ? EXIT_REFUSED : EXIT_OK;
}


/* ----------------------------------------------------------------- watch */

static volatile sig_atomic_t watch_stop;
static void watch_signal(int sig) { (void)sig; watch_stop = 1; }

/* One arrival: lateness is SentTimestamp (when SNS put it in our queue)
 * minus delayer.due, so the poll interval of watch itself is not counted. */
static void watch_print(const sqs_message *m, int json, int64_t now)
{
    const char *id = aws_pairs_get(&m->attrs, "delayer.id");
    const char *due_s = aws_pairs_get(&m->attrs, "delayer.due");
    const char *attempt = aws_pairs_get(&m->attrs, "delayer.attempt");
    int64_t due = 0, arrived = m->sent_ms ? m->sent_ms : now;
    char err[128], arr_s[32];
    int have_due = due_s && time_parse_at(due_s, &due, err, sizeof err) == 0;
    time_fmt(arrived, arr_s);
    if (json) {
        buf_t b = BUF_INIT;
        json_w w;
        jw_init(&w, &b);
        jw_obj(&w);
        jw_key(&w, "id");
        if (id) jw_str(&w, id); else jw_null(&w);
        jw_key(&w, "due");
        if (have_due) jw_str(&w, due_s); else jw_null(&w);
        jw_key(&w, "arrived");
        jw_str(&w, arr_s);
        jw_key(&w, "late_ms");
        if (have_due) jw_i64(&w, arrived - due); else jw_null(&w);
        jw_key(&w, "attempt");
        if (attempt) jw_str(&w, attempt); else jw_null(&w);
        jw_key(&w, "payload");
        jw_str(&w, m->body ? m->body : "");
        jw_obj_end(&w);
        printf("%s\n", b.p);
        buf_free(&b);
    } else {
        char q[64];
        sched_quote(q, sizeof q, m->body ? m->body : "", 40);
        if (have_due)
            printf("%s  due %s  late %+6lld ms  %s  %s\n", arr_s, due_s, (long long)(arrived - due), id ? id : "-", q);
        else
            printf("%s  (not a delayer message)  %s\n", arr_s, q);
    }
    fflush(stdout);
}

/* Subscribes a temporary queue (raw delivery) to the topic, prints what
 * arrives, and removes both on exit (SIGINT/SIGTERM, --count, --timeout). */
static int watch_run(store *s, const char *topic_arn, int json, long count, int64_t timeout_ms)
{
    aws_client *sqs = store_sqs(s), *sns = store_sns(s);
    if (!sqs || !sns) return die(EXIT_SYSTEM, "%s", s->err);
    char name[80], rnd[SCHED_ULID_LEN + 1];
    if (sched_ulid(rnd, time_now_ms()) < 0) return die(EXIT_SYSTEM, "watch: no randomness");
    snprintf(name, sizeof name, "%s-watch-%.10s", s->prefix, rnd + 16);
    buf_t url = BUF_INIT, arn = BUF_INIT, sub = BUF_INIT, policy = BUF_INIT;
    aws_err e;
    int code = EXIT_OK;
    if (sqs_create_queue(sqs, name, NULL, 0, &url, &e) < 0 ||
        sqs_get_queue_attribute(sqs, url.p, "QueueArn", &arn, &e) < 0) {
        code = die(EXIT_SYSTEM, "watch: cannot create a queue: %s: %s", e.code, e.message);
        goto out;
    }
    /* On real AWS the topic needs the queue's permission to deliver. */
    buf_printf(&policy,
               "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"Service\":"
               "\"sns.amazonaws.com\"},\"Action\":\"sqs:SendMessage\",\"Resource\":\"%s\",\"Condition\":{"
               "\"ArnEquals\":{\"aws:SourceArn\":\"%s\"}}}]}", arn.p, topic_arn);
    aws_kv pol = {"Policy", policy.p};
    aws_kv raw = {"RawMessageDelivery", "true"};
    if (sqs_set_queue_attributes(sqs, url.p, &pol, 1, &e) < 0 ||
        sns_subscribe(sns, topic_arn, "sqs", arn.p, &raw, 1, &sub, &e) < 0) {
        code = die(EXIT_SYSTEM, "watch: cannot subscribe: %s: %s", e.code, e.message);
        goto cleanup;
    }
    fprintf(stderr, "delayer: watching %s (Ctrl-C to stop)\n", topic_arn);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watch_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int64_t end = timeout_ms > 0 ? time_mono_ms() + timeout_ms : 0;
    long seen = 0;
    sqs_messages msgs = {0};
    while (!watch_stop && (count <= 0 || seen < count) && (!end || time_mono_ms() < end)) {
        /* short polls so Ctrl-C is honoured within a second */
        if (sqs_receive(sqs, url.p, 10, 1, -1, &msgs, &e) < 0) {
            if (watch_stop) break;
            code = die(EXIT_SYSTEM, "watch: receive: %s: %s", e.code, e.message);
            break;
        }
        int64_t now = time_now_ms();
        for (size_t i = 0; i < msgs.n; i++) {
            watch_print(&msgs.v[i], json, now);
            sqs_delete_message(sqs, url.p, msgs.v[i].receipt_handle, &e);
            seen++;
        }
    }
    sqs_messages_free(&msgs);
    if (count > 0 && seen < count && code == EXIT_OK && !watch_stop)
        code = die(EXIT_REFUSED, "watch: timeout after %ld of %ld messages", seen, count);
cleanup:
    if (sub.len) sns_unsubscribe(sns, sub.p, &e);
    sqs_delete_queue(sqs, url.p, &e);
out:
    buf_free(&url);
    buf_free(&arn);
    buf_free(&sub);
    buf_free(&policy);
    return code;
}

static int cmd_watch(args *a, globals *g)
{
    const char *topic = NULL, *v;
    int json = 0, code = EXIT_OK, r;
    long count = 0;
    int64_t timeout_ms = 0;
    char err[160];
    while (a->i < a->argc && code == EXIT_OK) {
        if (global_opt(a, g, &code)) continue;
        if ((r = opt_val(a, "--topic", &topic))) {
            if (r < 0) code = EXIT_USAGE;
            continue;
        }
        if ((r = opt_val(a, "--count", &v))) {
            char *end;
            if (r < 0) code = EXIT_USAGE;
            else if ((count = strtol(v, &end, 10)) <= 0 || *end)
                code = die(EXIT_USAGE, "count: must be a positive integer");
            continue;
        }
        if ((r = opt_val(a, "--timeout", &v))) {
            if (r < 0) code = EXIT_USAGE;
            else if (time_parse_duration(v, &timeout_ms, err, sizeof err) < 0)
                code = die(EXIT_USAGE, "timeout: %s", err);
            continue;
        }
        if (opt_flag(a, "--json")) {
            json = 1;
            continue;
        }
        code = unknown_opt(a);
    }
    if (code == EXIT_OK && !topic) code = die(EXIT_USAGE, "topic: missing (usage: %s)", help_find("watch")->usage);
    store *s = code == EXIT_OK ? open_store(g, 1, &code) : NULL;
    if (s) {
        buf_t arn = BUF_INIT;
        int rc = store_topic_resolve(s, topic, &arn);
        code = rc == STORE_OK ? watch_run(s, arn.p, json, count, timeout_ms) : store_exit(s, rc);
        buf_free(&arn);
    }
    close_store(s);
    return code;
}

/* ------------------------------------------------------------------ main */

typedef struct {
    const char *name;
    int (*fn)(args *, globals *);
} command;

static const command commands[] = {
    {"init", cmd_init},     {"schedule", cmd_schedule}, {"import", cmd_import}, {"get", cmd_get},
    {"cancel", cmd_cancel}, {"list", cmd_list},         {"stats", cmd_stats},   {"delete", cmd_delete},
    {"retry", cmd_retry},   {"watch", cmd_watch},
};

int main(int argc, char **argv)
{
    globals g;
    char err[256];
    args a = {argc, argv, 1, ""};
    int code = EXIT_OK;
    memset(&g, 0, sizeof g);
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    if (store_conf_env(&g.conf, err, sizeof err) < 0) return die(EXIT_USAGE, "%s", err);
    while (a.i < argc && argv[a.i][0] == '-') {
        if (global_opt(&a, &g, &code)) {
            if (code) return code;
            continue;
        }
        if (!strcmp(argv[a.i], "--help") || !strcmp(argv[a.i], "-h")) {
            print_help(stdout, NULL);
            return EXIT_OK;
        }
        if (!strcmp(argv[a.i], "--version")) {
            printf("delayer %s\n", DELAYER_VERSION);
            return EXIT_OK;
        }
        return unknown_opt(&a);
    }
    if (a.i >= argc) {
        print_help(stderr, NULL);
        return EXIT_USAGE;
    }
    const char *cmd = argv[a.i++];
    a.cmd = cmd;
    if (!strcmp(cmd, "help")) {
        if (a.i < argc && !help_find(argv[a.i])) return die(EXIT_USAGE, "help: unknown subcommand \"%s\"", argv[a.i]);
        print_help(stdout, a.i < argc ? argv[a.i] : NULL);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(commands[i].name, cmd)) continue;
        for (int j = a.i; j < argc; j++)
            if (!strcmp(argv[j], "--help") || !strcmp(argv[j], "-h")) {
                print_help(stdout, cmd);
                return EXIT_OK;
            }
        code = commands[i].fn(&a, &g);
        fflush(stdout);
        return code;
    }
    char q[80];
    sched_quote(q, sizeof q, cmd, 60);
    return die(EXIT_USAGE, "%s: unknown subcommand (see delayer help)", q);
}
