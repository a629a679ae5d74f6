/* zpipe: real ZeroMQ round trips (ipc:// in a temp dir, tcp:// on loopback
 * with ephemeral ports), stdin framing through a pipe, send timeouts and
 * interrupts. */
#include "t.h"
#include "zpipe.h"
#include "timeutil.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

static char tmpdir[64];

static const char *ep(const char *prefix, const char *name)
{
    static char ring[4][256];
    static int k;
    char *s = ring[k++ % 4];
    snprintf(s, 256, "%sipc://%s/%s", prefix, tmpdir, name);
    return s;
}

static zpipe_opts opts(int hwm, size_t max)
{
    zpipe_opts o;
    zpipe_opts_default(&o);
    if (hwm) o.hwm = hwm;
    if (max) o.max_msg = max;
    return o;
}

/* ---- an alarm that calls zpipe_interrupt, as stage.c's handler does ---- */
static void on_alarm(int sig) { (void)sig; zpipe_interrupt(); }

static void alarm_in_ms(int ms)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void alarm_off(void)
{
    struct itimerval it = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
    zpipe_interrupt_clear();
}

/* ---- stdin through a pipe ---- */
static int saved_stdin = -1;

/* Makes fd 0 the read end of a new pipe; returns the write end. */
static int stdin_pipe(void)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    if (saved_stdin < 0) saved_stdin = dup(0);
    dup2(p[0], 0);
    close(p[0]);
    return p[1];
}

static void stdin_restore(void)
{
    if (saved_stdin >= 0) {
        dup2(saved_stdin, 0);
        close(saved_stdin);
        saved_stdin = -1;
    }
}

static void put(int fd, const char *s)
{
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t w = write(fd, s + off, n - off);
        if (w <= 0) return;
        off += (size_t)w;
    }
}

/* ---- tests ---- */

static void endpoint_syntax(void)
{
    char err[256];
    CHECK_INT(zpipe_check_endpoint("-", err, sizeof err), 0);
    CHECK_INT(zpipe_check_endpoint("tcp://127.0.0.1:5601", err, sizeof err), 0);
    CHECK_INT(zpipe_check_endpoint("@ipc:///tmp/x", err, sizeof err), 0);
    CHECK_INT(zpipe_check_endpoint(">inproc://x,@tcp://*:1", err, sizeof err), 0);
    CHECK_INT(zpipe_check_endpoint("", err, sizeof err), -1);
    CHECK_INT(zpipe_check_endpoint("http://x", err, sizeof err), -1);
    CHECK_INT(zpipe_check_endpoint("tcp://", err, sizeof err), -1);
    CHECK_INT(zpipe_check_endpoint("tcp://a:1,", err, sizeof err), -1);
    CHECK_INT(zpipe_check_endpoint("-,tcp://a:1", err, sizeof err), -1);
    CHECK(strstr(err, "bad endpoint") != NULL);
    CHECK(zpipe_in_open("udp://x", NULL, err, sizeof err) == NULL);
    CHECK(zpipe_out_open("", NULL, err, sizeof err) == NULL);
}

/* n records "rec-<i>-<pad>" from out to in, in order, intact */
static void roundtrip(zpipe_in *in, zpipe_out *out, int n)
{
    buf_t m = BUF_INIT;
    char rec[128];
    for (int i = 0; i < n; i++) {
        snprintf(rec, sizeof rec, "{\"i\":%d,\"s\":\"rec-%d\"}", i, i);
        CHECK_INT(zpipe_out_send(out, rec, strlen(rec), 2000), 0);
    }
    for (int i = 0; i < n; i++) {
        snprintf(rec, sizeof rec, "{\"i\":%d,\"s\":\"rec-%d\"}", i, i);
        CHECK_INT(zpipe_in_recv(in, &m, 3000), ZPIPE_READY);
        CHECK_STR(buf_str(&m), rec);
        if (t_failed_now) break;
    }
    CHECK_INT(zpipe_in_recv(in, &m, 50), ZPIPE_TIMEOUT);
    CHECK_INT(zpipe_out_stats(out)->msgs, n);
    CHECK_INT(zpipe_in_stats(in)->msgs, n);
    buf_free(&m);
}

static void ipc_pull_binds_by_default(void)
{
    char err[256] = "";
    zpipe_in *in = zpipe_in_open(ep("", "a"), NULL, err, sizeof err);   /* no prefix: bind */
    CHECK(in != NULL);
    zpipe_out *out = zpipe_out_open(ep("", "a"), NULL, err, sizeof err); /* no prefix: connect */
    CHECK(out != NULL);
    if (in && out) roundtrip(in, out, 200);
    CHECK_STR(err, "");
    zpipe_out_close(out);
    zpipe_in_close(in);
}

static void tcp_ephemeral_port(void)
{
    char err[256] = "";
    zpipe_in *in = zpipe_in_open("@tcp://127.0.0.1:*", NULL, err, sizeof err);
    CHECK(in != NULL);
    if (!in) return;
    const char *bound = zpipe_in_endpoint(in);
    CHECK(strncmp(bound, "tcp://127.0.0.1:", 16) == 0 && atoi(bound + 16) > 0);
    char conn[300];
    snprintf(conn, sizeof conn, ">%s", bound);
    zpipe_out *out = zpipe_out_open(conn, NULL, err, sizeof err);
    CHECK(out != NULL);
    if (out) roundtrip(in, out, 100);
    zpipe_out_close(out);
    zpipe_in_close(in);
}

static void push_binds_pull_connects(void)
{
    char err[256] = "";
    zpipe_out *out = zpipe_out_open(ep("@", "b"), NULL, err, sizeof err);
    CHECK(out != NULL);
    zpipe_in *in = zpipe_in_open(ep(">", "b"), NULL, err, sizeof err);
    CHECK(in != NULL);
    if (in && out) roundtrip(in, out, 50);
    zpipe_out_close(out);
    zpipe_in_close(in);
}

static void push_round_robins_over_a_list(void)
{
    char err[256] = "", list[600];
    zpipe_in *a = zpipe_in_open(ep("@", "r0"), NULL, err, sizeof err);
    zpipe_in *b = zpipe_in_open(ep("@", "r1"), NULL, err, sizeof err);
    snprintf(list, sizeof list, "%s,%s", ep(">", "r0"), ep(">", "r1"));
    zpipe_out *out = zpipe_out_open(list, NULL, err, sizeof err);
    CHECK(a && b && out);
    if (a && b && out) {
        usleep(300000);   /* let both connections complete (IMMEDIATE skips pending ones) */
        for (int i = 0; i < 10; i++) CHECK_INT(zpipe_out_send(out, "x", 1, 1000), 0);
        buf_t m = BUF_INIT;
        int na = 0, nb = 0;
        while (zpipe_in_recv(a, &m, 300) == ZPIPE_READY) na++;
        while (zpipe_in_recv(b, &m, 300) == ZPIPE_READY) nb++;
        CHECK_INT(na + nb, 10);
        CHECK_INT(na, 5);
        buf_free(&m);
    }
    zpipe_out_close(out);
    zpipe_in_close(a);
    zpipe_in_close(b);
}

static void double_bind_refused(void)
{
    char err[256] = "";
    zpipe_in *a = zpipe_in_open(ep("@", "c"), NULL, err, sizeof err);
    CHECK(a != NULL);
    zpipe_in *b = zpipe_in_open(ep("@", "c"), NULL, err, sizeof err);
    CHECK(b == NULL);
    CHECK(strstr(err, "address in use") != NULL);
    zpipe_in_close(b);
    zpipe_in_close(a);
    /* a stale socket file from a dead process is taken over */
    a = zpipe_in_open(ep("@", "c"), NULL, err, sizeof err);
    CHECK(a != NULL);
    zpipe_in_close(a);
}

static void send_without_peer_times_out(void)
{
    char err[256] = "";
    zpipe_opts o = opts(0, 0);
    o.linger_ms = 0;
    zpipe_out *out = zpipe_out_open(ep(">", "nobody"), &o, err, sizeof err);
    CHECK(out != NULL);
    if (!out) return;
    for (int k = 0; k < 2; k++) {   /* the second proves nothing was queued to the dead endpoint */
        int64_t t0 = time_mono_ms();
        errno = 0;
        CHECK_INT(zpipe_out_send(out, "{}", 2, 200), -1);
        CHECK_INT(errno, EAGAIN);
        int64_t dt = time_mono_ms() - t0;
        CHECK(dt >= 150 && dt < 1500);
    }
    errno = 0;
    CHECK_INT(zpipe_out_send(out, "{}", 2, 0), -1);
    CHECK_INT(errno, EAGAIN);
    CHECK_INT(zpipe_out_stats(out)->blocked, 3);
    CHECK_INT(zpipe_out_stats(out)->msgs, 0);
    /* a peer that appears later gets what is sent from then on */
    zpipe_in *in = zpipe_in_open(ep("@", "nobody"), NULL, err, sizeof err);
    CHECK(in != NULL);
    if (in) {
        CHECK_INT(zpipe_out_send(out, "late", 4, 3000), 0);
        buf_t m = BUF_INIT;
        CHECK_INT(zpipe_in_recv(in, &m, 3000), ZPIPE_READY);
        CHECK_STR(buf_str(&m), "late");
        buf_free(&m);
    }
    zpipe_out_close(out);
    zpipe_in_close(in);
}

static void send_blocks_at_hwm_then_resumes(void)
{
    char err[256] = "";
    zpipe_opts o = opts(4, 0);
    zpipe_in *in = zpipe_in_open(ep("@", "h"), &o, err, sizeof err);
    zpipe_out *out = zpipe_out_open(ep(">", "h"), &o, err, sizeof err);
    CHECK(in && out);
    if (!in || !out) goto done;
    /* big records fill the kernel buffers quickly, so the HWMs are what stops us */
    size_t big = 256 * 1024;
    char *rec = xmalloc(big);
    memset(rec, 'x', big);
    int sent = 0;
    while (sent < 2000) {
        snprintf(rec, 16, "%08d", sent);
        rec[8] = 'x';
        if (zpipe_out_send(out, rec, big, 100) != 0) break;
        sent++;
    }
    CHECK_INT(errno, EAGAIN);
    CHECK(sent >= 4 && sent < 200);
    CHECK_INT(zpipe_out_stats(out)->blocked, 1);
    buf_t m = BUF_INIT;
    for (int i = 0; i < sent; i++) {
        char want[16];
        snprintf(want, sizeof want, "%08d", i);
        CHECK_INT(zpipe_in_recv(in, &m, 2000), ZPIPE_READY);
        CHECK_INT(m.len, big);
        CHECK(strncmp(buf_str(&m), want, 8) == 0);
        if (t_failed_now) break;
    }
    CHECK_INT(zpipe_out_send(out, rec, big, 1000), 0);   /* room again */
    CHECK_INT(zpipe_in_recv(in, &m, 2000), ZPIPE_READY);
    buf_free(&m);
    free(rec);
done:
    zpipe_out_close(out);
    zpipe_in_close(in);
}

/* A stage that sends and exits at once: closing its last socket waits (up to
 * linger) until what it queued has left, so nothing is lost on a graceful
 * exit. The sender is a child that never shares our ZeroMQ context. */
static void close_flushes_queued_output(void)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        char err[256];
        zpipe_out *out = zpipe_out_open(ep(">", "fl"), NULL, err, sizeof err);
        int bad = !out;
        char rec[1100];   /* big enough that a good part is still queued at close */
        for (int i = 0; i < 3000 && !bad; i++) {
            snprintf(rec, sizeof rec, "{\"n\":%d,\"pad\":\"%01000d\"}", i, 0);
            bad = zpipe_out_send(out, rec, strlen(rec), 5000) != 0;
        }
        zpipe_out_close(out);   /* returns once the queue has been handed to the peer */
        _exit(bad);
    }
    char err[256] = "";
    zpipe_in *in = zpipe_in_open(ep("@", "fl"), NULL, err, sizeof err);
    CHECK(in != NULL);
    buf_t m = BUF_INIT;
    int got = 0, st = 0;
    while (in && got < 3000 && zpipe_in_recv(in, &m, 3000) == ZPIPE_READY) got++;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_INT(got, 3000);
    CHECK(strncmp(buf_str(&m), "{\"n\":2999,", 10) == 0);
    buf_free(&m);
    zpipe_in_close(in);
}

static void send_refuses_bad_records(void)
{
    char err[256] = "";
    zpipe_opts o = opts(0, 16);
    zpipe_in *in = zpipe_in_open(ep("@", "v"), NULL, err, sizeof err);
    zpipe_out *out = zpipe_out_open(ep(">", "v"), &o, err, sizeof err);
    CHECK(in && out);
    if (in && out) {
        errno = 0;
        CHECK_INT(zpipe_out_send(out, "0123456789abcdefg", 17, 100), -1);
        CHECK_INT(errno, EMSGSIZE);
        errno = 0;
        CHECK_INT(zpipe_out_send(out, "a\nb", 3, 100), -1);
        CHECK_INT(errno, EINVAL);
        errno = 0;
        CHECK_INT(zpipe_out_send(out, "\n", 1, 100), -1);
        CHECK_INT(errno, EINVAL);
        CHECK_INT(zpipe_out_send(out, "0123456789abcdef\n", 17, 1000), 0);  /* newline dropped: 16 fits */
        buf_t m = BUF_INIT;
        CHECK_INT(zpipe_in_recv(in, &m, 2000), ZPIPE_READY);
        CHECK_STR(buf_str(&m), "0123456789abcdef");
        buf_free(&m);
    }
    zpipe_out_close(out);
    zpipe_in_close(in);
}

/* A foreign sender: a plain libzmq PUSH. */
static void oversize_and_odd_messages_dropped(void)
{
    char err[256] = "";
    zpipe_opts o = opts(0, 1000);
    zpipe_in *in = zpipe_in_open(ep("@", "big"), &o, err, sizeof err);
    CHECK(in != NULL);
    if (!in) return;
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    CHECK_INT(zmq_connect(s, ep("", "big")), 0);
    size_t hn = 1u << 20;   /* far over MAXMSGSIZE: libzmq cuts the connection */
    char *huge = xmalloc(hn);
    memset(huge, 'h', hn);
    buf_t m = BUF_INIT;
    CHECK_INT(zmq_send(s, huge, 1001, 0), 1001);     /* just over max_msg: we drop it, logged */
    CHECK_INT(zmq_send(s, "small", 5, 0), 5);
    CHECK_INT(zpipe_in_recv(in, &m, 3000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "small");
    CHECK_INT(zpipe_in_stats(in)->dropped, 1);
    CHECK_INT(zmq_send(s, huge, hn, 0), (int)hn);
    /* What the sender had in flight with the huge message is lost with the
     * connection; the receiver lives on and takes the next ones after the
     * sender reconnects. */
    int got = ZPIPE_TIMEOUT;
    for (int i = 0; i < 50 && got == ZPIPE_TIMEOUT; i++) {
        zmq_send(s, "after-big", 9, ZMQ_DONTWAIT);
        got = zpipe_in_recv(in, &m, 100);
    }
    CHECK_INT(got, ZPIPE_READY);
    CHECK_STR(buf_str(&m), "after-big");
    while (zpipe_in_recv(in, &m, 200) == ZPIPE_READY) CHECK_STR(buf_str(&m), "after-big");
    uint64_t before = zpipe_in_stats(in)->dropped;
    CHECK_INT(zmq_send(s, "part1", 5, ZMQ_SNDMORE), 5);
    CHECK_INT(zmq_send(s, "part2", 5, 0), 5);
    CHECK_INT(zmq_send(s, "a\nb", 3, 0), 3);
    CHECK_INT(zmq_send(s, "", 0, 0), 0);
    CHECK_INT(zmq_send(s, "crlf\r\n", 6, 0), 6);
    CHECK_INT(zpipe_in_recv(in, &m, 3000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "crlf");
    CHECK_INT(zpipe_in_stats(in)->dropped - before, 2);
    buf_free(&m);
    free(huge);
    zmq_close(s);
    zmq_ctx_term(ctx);
    zpipe_in_close(in);
}

static void interrupt_wakes_zmq_wait(void)
{
    char err[256] = "";
    zpipe_in *in = zpipe_in_open(ep("@", "i"), NULL, err, sizeof err);
    CHECK(in != NULL);
    if (!in) return;
    alarm_in_ms(100);
    int64_t t0 = time_mono_ms();
    CHECK_INT(zpipe_in_wait(in, 10000), ZPIPE_INTR);
    int64_t dt = time_mono_ms() - t0;
    CHECK(dt >= 80 && dt < 2000);
    CHECK(zpipe_interrupted());
    buf_t m = BUF_INIT;
    CHECK_INT(zpipe_in_recv(in, &m, 0), ZPIPE_INTR);    /* sticky: no more input once stopping */
    alarm_off();
    CHECK(!zpipe_interrupted());
    CHECK_INT(zpipe_in_recv(in, &m, 20), ZPIPE_TIMEOUT);
    /* a stop requested before the wait begins is not missed */
    zpipe_interrupt();
    t0 = time_mono_ms();
    CHECK_INT(zpipe_in_wait(in, 10000), ZPIPE_INTR);
    CHECK(time_mono_ms() - t0 < 500);
    zpipe_interrupt_clear();
    buf_free(&m);
    zpipe_in_close(in);
}

static void interrupt_wakes_blocked_send(void)
{
    char err[256] = "";
    zpipe_opts o = opts(0, 0);
    o.linger_ms = 0;
    zpipe_out *out = zpipe_out_open(ep(">", "nobody2"), &o, err, sizeof err);
    CHECK(out != NULL);
    if (!out) return;
    alarm_in_ms(100);
    int64_t t0 = time_mono_ms();
    errno = 0;
    CHECK_INT(zpipe_out_send(out, "x", 1, -1), -1);
    CHECK_INT(errno, EINTR);
    CHECK(time_mono_ms() - t0 < 2000);
    /* while stopping, a bounded send still works: a stage can flush */
    zpipe_in *in = zpipe_in_open(ep("@", "nobody2"), NULL, err, sizeof err);
    CHECK(in != NULL);
    CHECK_INT(zpipe_out_send(out, "flush", 5, 3000), 0);
    alarm_off();
    buf_t m = BUF_INIT;
    CHECK_INT(zpipe_in_recv(in, &m, 3000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "flush");
    buf_free(&m);
    zpipe_out_close(out);
    zpipe_in_close(in);
}

static void stdin_framing(void)
{
    int w = stdin_pipe();
    char err[256] = "";
    zpipe_in *in = zpipe_in_open("-", NULL, err, sizeof err);
    CHECK(in != NULL);
    if (!in) goto done;
    CHECK_STR(zpipe_in_endpoint(in), "-");
    buf_t m = BUF_INIT;
    put(w, "{\"a\":1}\n\n{\"b\":2}\r\n   \n\t\n");
    put(w, "{\"c\":");
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "{\"a\":1}");
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "{\"b\":2}");
    int64_t t0 = time_mono_ms();
    CHECK_INT(zpipe_in_recv(in, &m, 150), ZPIPE_TIMEOUT);   /* half a line is not a record */
    CHECK(time_mono_ms() - t0 >= 120);
    put(w, "3}\n{\"d\":4}");   /* the last line has no newline */
    close(w);
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "{\"c\":3}");
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "{\"d\":4}");
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_EOF);
    CHECK_INT(zpipe_in_wait(in, 1000), ZPIPE_EOF);
    CHECK_INT(zpipe_in_stats(in)->msgs, 4);
    CHECK_INT(zpipe_in_stats(in)->dropped, 0);
    buf_free(&m);
    zpipe_in_close(in);
done:
    stdin_restore();
}

static void stdin_long_lines_skipped(void)
{
    int w = stdin_pipe();
    char err[256] = "";
    zpipe_opts o = opts(0, 10);
    zpipe_in *in = zpipe_in_open("-", &o, err, sizeof err);
    CHECK(in != NULL);
    if (!in) goto done;
    buf_t m = BUF_INIT;
    put(w, "short\n");
    put(w, "0123456789\n");                       /* exactly the limit: kept */
    put(w, "0123456789X\n");                      /* one over, inside one read */
    for (int i = 0; i < 20; i++) put(w, "yyyyy");  /* over, across reads */
    put(w, "\nnext\n0123456789ABC");              /* final over-long line without newline */
    close(w);
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "short");
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "0123456789");
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_READY);
    CHECK_STR(buf_str(&m), "next");
    CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_EOF);
    CHECK_INT(zpipe_in_stats(in)->dropped, 3);
    buf_free(&m);
    zpipe_in_close(in);
done:
    stdin_restore();
}

/* The default limit with a 3 MiB line written by a child (the pipe holds
 * only 64 KiB, so the reader must drain while skipping). */
static void stdin_huge_line_default_limit(void)
{
    int w = stdin_pipe();
    pid_t pid = fork();
    if (pid == 0) {
        size_t n = 3u << 20;
        char *big = malloc(n);
        memset(big, 'z', n);
        put(w, "before\n");
        size_t off = 0;
        while (off < n) {
            ssize_t k = write(w, big + off, n - off);
            if (k <= 0) {
                free(big);
                _exit(1);
            }
            off += (size_t)k;
        }
        put(w, "\nafter\n");
        free(big);
        _exit(0);
    }
    close(w);
    char err[256] = "";
    zpipe_in *in = zpipe_in_open("-", NULL, err, sizeof err);
    CHECK(in != NULL);
    buf_t m = BUF_INIT;
    if (in) {
        CHECK_INT(zpipe_in_recv(in, &m, 5000), ZPIPE_READY);
        CHECK_STR(buf_str(&m), "before");
        CHECK_INT(zpipe_in_recv(in, &m, 5000), ZPIPE_READY);
        CHECK_STR(buf_str(&m), "after");
        CHECK_INT(zpipe_in_recv(in, &m, 5000), ZPIPE_EOF);
        CHECK_INT(zpipe_in_stats(in)->dropped, 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    buf_free(&m);
    zpipe_in_close(in);
    stdin_restore();
}

static void interrupt_wakes_stdin_wait(void)
{
    int w = stdin_pipe();   /* held open and silent */
    char err[256] = "";
    zpipe_in *in = zpipe_in_open("-", NULL, err, sizeof err);
    CHECK(in != NULL);
    if (in) {
        alarm_in_ms(100);
        int64_t t0 = time_mono_ms();
        CHECK_INT(zpipe_in_wait(in, 10000), ZPIPE_INTR);
        int64_t dt = time_mono_ms() - t0;
        CHECK(dt >= 80 && dt < 2000);
        alarm_off();
        put(w, "ok\n");
        buf_t m = BUF_INIT;
        CHECK_INT(zpipe_in_recv(in, &m, 1000), ZPIPE_READY);
        CHECK_STR(buf_str(&m), "ok");
        buf_free(&m);
    }
    zpipe_in_close(in);
    close(w);
    stdin_restore();
}

/* A stop requested from another thread (as when a signal is delivered to
 * some other thread): no EINTR reaches our poll, only the self-pipe can. */
static void *interrupt_later(void *arg)
{
    (void)arg;
    usleep(100000);
    zpipe_interrupt();
    return NULL;
}

static void interrupt_from_other_thread(void)
{
    int w = stdin_pipe();
    char err[256] = "";
    zpipe_in *ins[2] = {zpipe_in_open("-", NULL, err, sizeof err), zpipe_in_open(ep("@", "t"), NULL, err, sizeof err)};
    for (int k = 0; k < 2; k++) {
        CHECK(ins[k] != NULL);
        if (!ins[k]) continue;
        pthread_t th;
        pthread_create(&th, NULL, interrupt_later, NULL);
        int64_t t0 = time_mono_ms();
        CHECK_INT(zpipe_in_wait(ins[k], 5000), ZPIPE_INTR);
        CHECK(time_mono_ms() - t0 < 2000);
        pthread_join(th, NULL);
        zpipe_interrupt_clear();
        zpipe_in_close(ins[k]);
    }
    close(w);
    stdin_restore();
}

static void stdout_lines(void)
{
    int p[2];
    CHECK_INT(pipe(p), 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(p[1], 1);
    close(p[1]);
    char err[256] = "";
    zpipe_out *out = zpipe_out_open("-", NULL, err, sizeof err);
    int r1 = -9, r2 = -9;
    if (out) {
        r1 = zpipe_out_send(out, "{\"x\":1}", 7, 1000);
        r2 = zpipe_out_send(out, "{\"y\":2}\n", 8, 1000);
    }
    zpipe_out_close(out);
    dup2(saved, 1);
    close(saved);
    CHECK(out != NULL);
    CHECK_INT(r1, 0);
    CHECK_INT(r2, 0);
    char got[64] = "";
    ssize_t n = read(p[0], got, sizeof got - 1);
    CHECK_INT(n, 16);
    CHECK_STR(got, "{\"x\":1}\n{\"y\":2}\n");
    close(p[0]);
}

/* A full stdout pipe: the timeout holds, nothing half-written; a vanished
 * reader is EPIPE, not a signal death. */
static void stdout_full_and_gone(void)
{
    int p[2];
    CHECK_INT(pipe(p), 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096);
    fflush(stdout);
    int saved = dup(1);
    dup2(p[1], 1);
    close(p[1]);
    signal(SIGPIPE, SIG_IGN);
    char err[256] = "";
    zpipe_out *out = zpipe_out_open("-", NULL, err, sizeof err);
    char rec[1000];
    memset(rec, 'r', sizeof rec);
    int sent = 0, rc = 0, e1 = 0, e2 = 0;
    while (out && sent < 1000 && (rc = zpipe_out_send(out, rec, sizeof rec, 100)) == 0) sent++;
    e1 = errno;
    close(p[0]);
    int rc2 = out ? zpipe_out_send(out, rec, 10, 100) : 0;
    e2 = errno;
    zpipe_out_close(out);
    dup2(saved, 1);
    close(saved);
    signal(SIGPIPE, SIG_DFL);
    CHECK(out != NULL);
    CHECK(sent >= 1 && sent < 100);
    CHECK_INT(rc, -1);
    CHECK_INT(e1, EAGAIN);
    CHECK_INT(rc2, -1);
    CHECK_INT(e2, EPIPE);
}

static void cleanup_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}


/* ---- CURVE and ipc directories ---- */

/* Writes a key file with the given mode; returns its path (ring buffer). */
static const char *key_file(const char *name, const char *z85, mode_t mode)
{
    static char ring[8][256];
    static int k;
    char *path = ring[k++ % 8];
    snprintf(path, 256, "%s/%s", tmpdir, name);
    unlink(path);
    FILE *f = fopen(path, "w");
    if (!f) return path;
    fprintf(f, "# test key\n%s\n", z85);
    fclose(f);
    chmod(path, mode);
    return path;
}

static void curve_key_files_checked(void)
{
    char pub[41], sec[41], err[512];
    uint8_t key[32];
    CHECK_INT(zmq_curve_keypair(pub, sec), 0);
    CHECK_INT(zpipe_curve_read_key(key_file("k.sec", sec, 0600), 1, key, err, sizeof err), 0);
    CHECK_INT(zpipe_curve_read_key(key_file("k.sec", sec, 0400), 1, key, err, sizeof err), 0);
    /* readable by group or other: refused, with the reason */
    CHECK_INT(zpipe_curve_read_key(key_file("k.sec", sec, 0644), 1, key, err, sizeof err), -1);
    CHECK(strstr(err, "accessible by group/other") && strstr(err, "0644"));
    CHECK_INT(zpipe_curve_read_key(key_file("k.sec", sec, 0640), 1, key, err, sizeof err), -1);
    CHECK_INT(zpipe_curve_read_key(key_file("k.sec", sec, 0604), 1, key, err, sizeof err), -1);
    /* public keys: readable is fine, writable by others is not */
    CHECK_INT(zpipe_curve_read_key(key_file("k.pub", pub, 0644), 0, key, err, sizeof err), 0);
    CHECK_INT(zpipe_curve_read_key(key_file("k.pub", pub, 0666), 0, key, err, sizeof err), -1);
    /* format */
    CHECK_INT(zpipe_curve_read_key(key_file("bad", "short", 0600), 1, key, err, sizeof err), -1);
    CHECK_INT(zpipe_curve_read_key(key_file("bad", "0123456789012345678901234567890123456789\nx", 0600), 1, key, err, sizeof err), -1);
    CHECK_INT(zpipe_curve_read_key(key_file("bad", "01234567890123456789012345678901234567 \"", 0600), 1, key, err, sizeof err), -1);
    CHECK_INT(zpipe_curve_read_key("/nonexistent/key", 1, key, err, sizeof err), -1);
    /* options: a public key that is not the secret's; a secret without a role */
    zpipe_opts o = opts(0, 0);
    char pub2[41], sec2[41];
    zmq_curve_keypair(pub2, sec2);
    o.curve_secret_file = key_file("k.sec", sec, 0600);
    CHECK_INT(zpipe_curve_check(&o, err, sizeof err), -1);
    o.curve_server_key_file = key_file("s.pub", pub2, 0644);
    CHECK_INT(zpipe_curve_check(&o, err, sizeof err), 0);
    o.curve_public_file = key_file("k2.pub", pub2, 0644);
    CHECK_INT(zpipe_curve_check(&o, err, sizeof err), -1);
    CHECK(strstr(err, "does not belong") != NULL);
    o.curve_public_file = key_file("k.pub", pub, 0644);
    CHECK_INT(zpipe_curve_check(&o, err, sizeof err), 0);
}

/* One record from a client with key pair (cpub, csec) to a CURVE server
 * allowing only `allowed`: 1 if it arrived. plain = the client uses no CURVE. */
static int curve_try(const char *allowed, const char *cpub, const char *csec, int plain)
{
    char spub[41], ssec[41], err[512], dir[300], bound[256];
    zmq_curve_keypair(spub, ssec);
    snprintf(dir, sizeof dir, "%s/allow", tmpdir);
    mkdir(dir, 0700);
    char kf[400];
    snprintf(kf, sizeof kf, "%s/client.pub", dir);
    FILE *f = fopen(kf, "w");
    fprintf(f, "%s\n", allowed);
    fclose(f);
    chmod(kf, 0644);
    zpipe_opts so = opts(0, 0);
    so.curve_secret_file = key_file("srv.sec", ssec, 0600);
    so.curve_allow_dir = dir;
    zpipe_in *in = zpipe_in_open("@tcp://127.0.0.1:*", &so, err, sizeof err);
    CHECK(in != NULL);
    if (!in) return -1;
    snprintf(bound, sizeof bound, ">%s", zpipe_in_endpoint(in));
    zpipe_opts co = opts(0, 0);
    if (!plain) {
        co.curve_secret_file = key_file("cli.sec", csec, 0600);
        co.curve_public_file = key_file("cli.pub", cpub, 0644);
        co.curve_server_key_file = key_file("srv.pub", spub, 0644);
    }
    zpipe_out *out = zpipe_out_open(bound, &co, err, sizeof err);
    CHECK(out != NULL);
    int sent = out ? zpipe_out_send(out, "{\"x\":1}", 7, 1500) == 0 : 0;
    buf_t m = BUF_INIT;
    int got = zpipe_in_recv(in, &m, sent ? 1500 : 200) == ZPIPE_READY;
    if (got) CHECK_STR(m.p, "{\"x\":1}");
    buf_free(&m);
    zpipe_out_close(out);
    zpipe_in_close(in);
    unlink(kf);
    return got;
}

static void curve_allow_list(void)
{
    char apub[41], asec[41], bpub[41], bsec[41];
    zmq_curve_keypair(apub, asec);
    zmq_curve_keypair(bpub, bsec);
    CHECK_INT(curve_try(apub, apub, asec, 0), 1);   /* allowed key: delivered */
    CHECK_INT(curve_try(apub, bpub, bsec, 0), 0);   /* another key: refused by ZAP */
    CHECK_INT(curve_try(apub, NULL, NULL, 1), 0);   /* no CURVE at all: refused */
    CHECK_INT(curve_try(bpub, bpub, bsec, 0), 1);   /* and the ZAP handler restarts with a new context */
}

static void curve_config_refused(void)
{
    char pub[41], sec[41], err[512];
    zmq_curve_keypair(pub, sec);
    zpipe_opts o = opts(0, 0);
    o.curve_secret_file = key_file("k.sec", sec, 0600);
    o.curve_server_key_file = key_file("k.pub", pub, 0644);
    /* a binding tcp socket is a server: it needs an allow-list */
    CHECK(zpipe_in_open("@tcp://127.0.0.1:*", &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "allow-list") != NULL);
    /* tcp mixed with ipc, or bind mixed with connect, on one CURVE socket */
    CHECK(zpipe_out_open(">tcp://127.0.0.1:1,>ipc:///tmp/zz", &o, err, sizeof err) == NULL);
    CHECK(zpipe_out_open(">tcp://127.0.0.1:1,@tcp://127.0.0.1:*", &o, err, sizeof err) == NULL);
    /* a secret readable by others is refused at open too */
    o.curve_secret_file = key_file("k.sec", sec, 0644);
    CHECK(zpipe_out_open(">tcp://127.0.0.1:1", &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "group/other") != NULL);
    /* ipc sockets ignore the keys */
    o.curve_secret_file = key_file("k.sec", sec, 0600);
    zpipe_out *out = zpipe_out_open(ep(">", "curve-ipc"), &o, err, sizeof err);
    CHECK(out != NULL);
    zpipe_out_close(out);
}

static void ipc_directory_mode(void)
{
    char err[512], d[200], e[300];
    snprintf(d, sizeof d, "%s/open", tmpdir);
    mkdir(d, 0700);
    chmod(d, 0755);
    snprintf(e, sizeof e, "@ipc://%s/x.sock", d);
    CHECK(zpipe_in_open(e, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "ipc directory") && strstr(err, "accessible by others"));
    e[0] = '>';
    CHECK(zpipe_out_open(e, NULL, err, sizeof err) == NULL);   /* connecting there is refused too */
    chmod(d, 0700);
    e[0] = '@';
    zpipe_in *in = zpipe_in_open(e, NULL, err, sizeof err);
    CHECK(in != NULL);
    zpipe_in_close(in);
    /* a missing directory is created 0700 by the binder */
    snprintf(d, sizeof d, "%s/made", tmpdir);
    snprintf(e, sizeof e, "@ipc://%s/x.sock", d);
    in = zpipe_in_open(e, NULL, err, sizeof err);
    CHECK(in != NULL);
    struct stat st;
    CHECK(stat(d, &st) == 0 && (st.st_mode & 0777) == 0700);
    zpipe_in_close(in);
}

static const t_case cases[] = {
    T(endpoint_syntax),
    T(curve_key_files_checked),
    T(curve_allow_list),
    T(curve_config_refused),
    T(ipc_directory_mode),
    T(ipc_pull_binds_by_default),
    T(tcp_ephemeral_port),
    T(push_binds_pull_connects),
    T(push_round_robins_over_a_list),
    T(double_bind_refused),
    T(send_without_peer_times_out),
    T(send_blocks_at_hwm_then_resumes),
    T(close_flushes_queued_output),
    T(send_refuses_bad_records),
    T(oversize_and_odd_messages_dropped),
    T(interrupt_wakes_zmq_wait),
    T(interrupt_wakes_blocked_send),
    T(stdin_framing),
    T(stdin_long_lines_skipped),
    T(stdin_huge_line_default_limit),
    T(interrupt_wakes_stdin_wait),
    T(interrupt_from_other_thread),
    T(stdout_lines),
    T(stdout_full_and_gone),
};

int main(void)
{
    /* /tmp, not $TMPDIR: ipc:// paths must fit in sun_path (108 bytes) */
    strcpy(tmpdir, "/tmp/zpipe.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = t_run(cases, (int)(sizeof cases / sizeof cases[0]));
    cleanup_dir();
    return rc;
}
