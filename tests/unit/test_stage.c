/* stage: common option parsing, --help/--version, readiness, signals. */
#include "t.h"
#include "stage.h"
#include "log.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

static const stage_opt own[] = {
    {"tick", "DURATION", "time between two scans [1s]"},
    {"once", NULL, "one pass, then exit"},
    {NULL, NULL, NULL},
};
static const stage_spec spec = {"test-stage", "A stage for tests.", 1, 1, own, NULL};
static const stage_spec source = {"test-source", "No input.", 0, 1, NULL, NULL};

/* Runs stage_init on a NULL-terminated argument list; captures stdout. */
static int run(const stage_spec *sp, stage_opts *o, char *out, size_t outlen, ...)
{
    static char *argv[32];   /* static: stage_opts.args points into it after we return */
    int argc = 0;
    argv[argc++] = (char *)sp->name;
    va_list ap;
    va_start(ap, outlen);
    for (char *a; argc < 31 && (a = va_arg(ap, char *));) argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    fflush(stdout);
    FILE *tmp = tmpfile();
    int saved = dup(1);
    dup2(fileno(tmp), 1);
    int rc = stage_init(argc, argv, sp, o);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    if (out) {
        rewind(tmp);
        size_t n = fread(out, 1, outlen - 1, tmp);
        out[n] = '\0';
    }
    fclose(tmp);
    log_set_level(LOG_OFF);   /* usage errors of the next cases stay quiet */
    return rc;
}

static void defaults(void)
{
    stage_opts o;
    CHECK_INT(run(&spec, &o, NULL, 0, NULL), STAGE_RUN);
    CHECK_STR(o.in, "-");
    CHECK_STR(o.out, "-");
    CHECK_INT(o.ready_fd, -1);
    CHECK(o.metrics == NULL);
    CHECK_INT(o.z.hwm, ZPIPE_HWM_DEFAULT);
    CHECK(stage_opt_get(&o, "tick") == NULL);
    CHECK(stage_opt_get(&o, "once") == NULL);
    CHECK_INT(o.nargs, 0);
}

static void common_and_own_options(void)
{
    stage_opts o;
    CHECK_INT(run(&spec, &o, NULL, 0, "--in", "@ipc:///tmp/x", "--out=>tcp://127.0.0.1:5", "--hwm", "50",
                  "--tick=2s", "--once", "--log-level", "debug", "--metrics", "127.0.0.1:9100", NULL), STAGE_RUN);
    CHECK_STR(o.in, "@ipc:///tmp/x");
    CHECK_STR(o.out, ">tcp://127.0.0.1:5");
    CHECK_INT(o.z.hwm, 50);
    CHECK_STR(stage_opt_get(&o, "tick"), "2s");
    CHECK_STR(stage_opt_get(&o, "once"), "1");
    CHECK_STR(o.metrics, "127.0.0.1:9100");
    CHECK_INT(log_level(), LOG_OFF);   /* run() silenced it after parsing */
    CHECK_INT(run(&spec, &o, NULL, 0, "--tick", "1s", "--tick", "3s", NULL), STAGE_RUN);
    CHECK_STR(stage_opt_get(&o, "tick"), "3s");   /* last one wins */
}

static void usage_errors(void)
{
    stage_opts o;
    CHECK_INT(run(&spec, &o, NULL, 0, "--nope", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "-x", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--tick", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--once=1", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--in", "http://x", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--hwm", "0", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--hwm", "12x", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--log-level", "loud", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--ready-fd", "1", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--ready-fd", "987", NULL), STAGE_EXIT_USAGE);   /* not open */
    CHECK_INT(run(&spec, &o, NULL, 0, "operand", NULL), STAGE_EXIT_USAGE);
    CHECK_INT(run(&spec, &o, NULL, 0, "--tickle", "1", NULL), STAGE_EXIT_USAGE);     /* no prefix matching */
    CHECK_INT(run(&source, &o, NULL, 0, "--in", "-", NULL), STAGE_EXIT_USAGE);       /* a source has no input */
    CHECK_INT(run(&source, &o, NULL, 0, "--out", "-", NULL), STAGE_RUN);
}

static void operands_when_allowed(void)
{
    static const stage_spec withops = {"test-ops", "x", 1, 1, NULL, "[FILE...]"};
    stage_opts o;
    CHECK_INT(run(&withops, &o, NULL, 0, "a", "--", "-b", NULL), STAGE_RUN);
    CHECK_INT(o.nargs, 3);
    CHECK_STR(o.args[0], "a");
    CHECK_INT(run(&withops, &o, NULL, 0, "--", "-b", NULL), STAGE_RUN);
    CHECK_INT(o.nargs, 1);
    CHECK_STR(o.args[0], "-b");
}

static void help_and_version(void)
{
    stage_opts o;
    char out[4096];
    CHECK_INT(run(&spec, &o, out, sizeof out, "--help", NULL), STAGE_EXIT_OK);
    const char *head = "Usage: test-stage [OPTIONS]\nA stage for tests.\n";
    CHECK(strncmp(out, head, strlen(head)) == 0);
    const char *want[] = {"--tick DURATION", "time between two scans [1s]", "--once ", "--in EP", "--out EP",
                          "--hwm N", "--log-level LEVEL", "--ready-fd N", "--metrics ADDR", "--help", "--version",
                          "111 system failure"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        if (!strstr(out, want[i])) printf("# missing in --help: %s\n", want[i]);
        CHECK(strstr(out, want[i]) != NULL);
    }
    /* own options come first, and every description starts in one column */
    CHECK(strstr(out, "--tick") < strstr(out, "--in EP"));
    const char *a = strstr(out, "--tick DURATION"), *b = strstr(out, "--log-level LEVEL");
    CHECK(a && b && strstr(a, "time between") - a == strstr(b, "debug,") - b);
    if (getenv("SHOW_HELP")) fputs(out, stderr);
    CHECK_INT(run(&source, &o, out, sizeof out, "-h", NULL), STAGE_EXIT_OK);
    CHECK(strstr(out, "--in ") == NULL);
    CHECK(strstr(out, "--out EP") != NULL);
    CHECK_INT(run(&spec, &o, out, sizeof out, "--version", NULL), STAGE_EXIT_OK);
    CHECK(strncmp(out, "test-stage (delayer) ", 21) == 0);
}

static void ready_fd_notifies_once(void)
{
    int p[2];
    CHECK_INT(pipe(p), 0);
    char num[16];
    snprintf(num, sizeof num, "%d", p[1]);
    stage_opts o;
    CHECK_INT(run(&spec, &o, NULL, 0, "--ready-fd", num, NULL), STAGE_RUN);
    CHECK_INT(o.ready_fd, p[1]);
    CHECK(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
    char buf[8] = "";
    CHECK_INT(stage_ready(&o), 0);
    CHECK_INT(o.ready_fd, -1);
    CHECK_INT(read(p[0], buf, sizeof buf), 1);   /* "\n" ... */
    CHECK_INT(buf[0], '\n');
    CHECK_INT(read(p[0], buf, sizeof buf), 0);   /* ... then EOF: the fd was closed */
    CHECK_INT(stage_ready(&o), 0);                /* a second call is harmless */
    close(p[0]);
}

static void sigterm_requests_stop(void)
{
    stage_opts o;
    CHECK_INT(run(&spec, &o, NULL, 0, NULL), STAGE_RUN);
    zpipe_interrupt_clear();
    CHECK(!stage_should_stop());
    raise(SIGTERM);   /* caught: the process goes on */
    CHECK(stage_should_stop());
    zpipe_interrupt_clear();
    raise(SIGPIPE);   /* ignored */
    CHECK_INT(run(&spec, &o, NULL, 0, NULL), STAGE_RUN);
    raise(SIGINT);
    CHECK(stage_should_stop());
    zpipe_interrupt_clear();
    /* One stop request often arrives twice at once (`timeout` signals the
     * process and then its group): a repeat within the second is harmless. */
    raise(SIGTERM);
    CHECK(stage_should_stop());
    /* A second signal two seconds later kills (checked in a child). */
    pid_t pid = fork();
    if (pid == 0) {
        struct timespec two = {2, 100000000};
        raise(SIGINT);
        nanosleep(&two, NULL);
        raise(SIGINT);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
}

static void open_reports_bind_failure(void)
{
    stage_opts o;
    CHECK_INT(run(&spec, &o, NULL, 0, "--in", "@tcp://127.0.0.1:*", "--out", ">ipc:///nonexistent-dir/x/y", NULL), STAGE_RUN);
    zpipe_in *in = (zpipe_in *)1;
    zpipe_out *out = (zpipe_out *)1;
    CHECK_INT(stage_open(&o, &in, &out), 0);   /* connecting to a missing path is fine: it may appear later */
    zpipe_in_close(in);
    zpipe_out_close(out);
    CHECK_INT(run(&spec, &o, NULL, 0, "--in", "@ipc:///nonexistent-dir/x/y", NULL), STAGE_RUN);
    CHECK_INT(stage_open(&o, &in, NULL), STAGE_EXIT_SYSTEM);
    CHECK(in == NULL);
}

T_MAIN(T(defaults), T(common_and_own_options), T(usage_errors), T(operands_when_allowed), T(help_and_version),
       T(ready_fd_notifies_once), T(sigterm_requests_stop), T(open_reports_bind_failure))
