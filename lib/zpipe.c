#include "zpipe.h"
#include "log.h"
#include "timeutil.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#define CHUNK 65536

struct zpipe_in {
    void *sock;          /* NULL: stdin */
    size_t max;
    buf_t rb;            /* stdin: bytes read, not yet consumed from off */
    size_t off;
    int eof;             /* stdin: read() returned 0 */
    int skipping;        /* stdin: inside an over-long line, dropping to its newline */
    buf_t pend;          /* the record zpipe_in_wait found, handed out by recv */
    int has_pend;
    zpipe_stats st;
    char ep[256];
};

struct zpipe_out {
    void *sock;          /* NULL: stdout */
    size_t max;
    zpipe_stats st;
    char ep[256];
};

/* ---- stop request: a flag plus a self-pipe ------------------------------
 * The flag alone is not enough: a signal that lands just before poll() would
 * be seen only at the timeout, and a signal delivered to another thread does
 * not interrupt our poll at all. The pipe's read end is in every poll set,
 * and the handler writes to it, so a wait wakes up in every case. */
static volatile sig_atomic_t g_stop;
static volatile sig_atomic_t g_wake_r = -1, g_wake_w = -1;

static void wake_init(void)
{
    if (g_wake_r >= 0) return;
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return;  /* waits then rely on EINTR only */
    g_wake_w = p[1];
    g_wake_r = p[0];
}

void zpipe_interrupt(void)
{
    int saved = errno;   /* called from signal handlers */
    g_stop = 1;
    if (g_wake_w >= 0) {
        ssize_t n = write(g_wake_w, "x", 1);
        (void)n;  /* a full pipe is already readable: enough */
    }
    errno = saved;
}

int zpipe_interrupted(void) { return g_stop != 0; }

void zpipe_interrupt_clear(void)
{
    g_stop = 0;
    if (g_wake_r >= 0) {
        char b[64];
        while (read(g_wake_r, b, sizeof b) > 0) {}
    }
}

void zpipe_opts_default(zpipe_opts *o)
{
    o->hwm = ZPIPE_HWM_DEFAULT;
    o->max_msg = ZPIPE_MAX_MSG_DEFAULT;
    o->linger_ms = ZPIPE_LINGER_DEFAULT;
}

/* ---- one ZeroMQ context per process, shared by every socket ------------ */
static void *g_ctx;
static int g_nsock;

static void *ctx_get(void)
{
    if (!g_ctx) g_ctx = zmq_ctx_new();
    if (g_ctx) g_nsock++;
    return g_ctx;
}

static void ctx_put(void)
{
    if (!g_ctx || --g_nsock > 0) return;
    /* Terminating waits for every PUSH's linger: this is where queued output
     * of a stopping stage is flushed. EINTR means a signal came: go on. */
    while (zmq_ctx_term(g_ctx) != 0 && errno == EINTR) {}
    g_ctx = NULL;
}

static void close_sock(void *s)
{
    zmq_close(s);
    ctx_put();
}

static int remaining_ms(int timeout_ms, int64_t deadline)
{
    if (timeout_ms < 0) return -1;
    int64_t r = deadline - time_mono_ms();
    return r < 0 ? 0 : r > 0x7fffffff ? 0x7fffffff : (int)r;
}

/* ---- endpoints -------------------------------------------------------- */

/* libzmq unlinks an existing ipc path before binding it, which would steal
 * the address from a live instance. Probe it first: only a refused or absent
 * socket may be replaced. Abstract names ("ipc://@x") fail by themselves. */
static int ipc_in_use(const char *path)
{
    struct sockaddr_un a;
    if (path[0] == '@' || strlen(path) >= sizeof a.sun_path) return 0;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int used = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return used;
}

int zpipe_check_endpoint(const char *endpoint, char *err, size_t errlen)
{
    if (!endpoint || !*endpoint) {
        snprintf(err, errlen, "empty endpoint");
        return -1;
    }
    if (strcmp(endpoint, "-") == 0) return 0;
    const char *p = endpoint;
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *e = p;
        if (*e == '@' || *e == '>') e++;
        size_t sl = strncmp(e, "tcp://", 6) == 0 || strncmp(e, "ipc://", 6) == 0 ? 6
                  : strncmp(e, "inproc://", 9) == 0 ? 9 : 0;
        if (sl == 0 || (size_t)(e - p) + sl >= n) {
            snprintf(err, errlen, "bad endpoint \"%.*s\" (want -, or tcp://, ipc://, inproc:// "
                     "with an address, optionally prefixed by @ to bind or > to connect)", (int)n, p);
            return -1;
        }
        if (!p[n]) return 0;
        p += n + 1;
    }
}

static int setopt_int(void *s, int opt, int v, const char *name, char *err, size_t errlen)
{
    if (zmq_setsockopt(s, opt, &v, sizeof v) == 0) return 0;
    snprintf(err, errlen, "zmq_setsockopt %s: %s", name, zmq_strerror(errno));
    return -1;
}

/* Every option of a pipe socket is set here, before any bind/connect. */
static int sock_options(void *s, int type, const zpipe_opts *o, char *err, size_t errlen)
{
#define SET(opt, v) do { if (setopt_int(s, opt, (v), #opt, err, errlen) != 0) return -1; } while (0)
    if (type == ZMQ_PUSH) {
        SET(ZMQ_IMMEDIATE, 1);   /* only affects connects; a bound PUSH has pipes for live peers only */
        SET(ZMQ_SNDHWM, o->hwm);
        SET(ZMQ_LINGER, o->linger_ms);
    } else {
        SET(ZMQ_RCVHWM, o->hwm);
        SET(ZMQ_LINGER, 0);
        /* A little above max_msg: a record slightly too big reaches
         * zmq_fetch, which logs and drops it; only a grossly oversized one
         * makes libzmq cut the connection (silently, losing what the peer
         * had in flight). The slack also covers ZMTP's handshake commands,
         * which count against this limit too. */
        int64_t mx = (int64_t)o->max_msg + 65536;
        if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &mx, sizeof mx) != 0) {
            snprintf(err, errlen, "zmq_setsockopt ZMQ_MAXMSGSIZE: %s", zmq_strerror(errno));
            return -1;
        }
    }
    SET(ZMQ_TCP_KEEPALIVE, 1);
    SET(ZMQ_TCP_KEEPALIVE_IDLE, 60);
    SET(ZMQ_TCP_KEEPALIVE_INTVL, 10);
    SET(ZMQ_TCP_KEEPALIVE_CNT, 3);
    SET(ZMQ_HEARTBEAT_IVL, 10000);
    SET(ZMQ_HEARTBEAT_TIMEOUT, 30000);
#undef SET
    return 0;
}

/* Creates the socket and binds/connects every comma-separated endpoint.
 * default_bind: what an endpoint without "@"/">" does. */
static void *sock_open(int type, const char *spec, const zpipe_opts *o, int default_bind,
                       char *ep, size_t eplen, char *err, size_t errlen)
{
    if (zpipe_check_endpoint(spec, err, errlen) != 0) return NULL;
    void *ctx = ctx_get();
    if (!ctx) {
        snprintf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(errno));
        return NULL;
    }
    void *s = zmq_socket(ctx, type);
    if (!s) {
        snprintf(err, errlen, "zmq_socket: %s", zmq_strerror(errno));
        ctx_put();
        return NULL;
    }
    if (sock_options(s, type, o, err, errlen) != 0) goto fail;
    char *list = xstrdup(spec);
    char *save = NULL;
    int n = 0;
    for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        int bind = default_bind;
        if (*e == '@') bind = 1, e++;
        else if (*e == '>') bind = 0, e++;
        if (bind && strncmp(e, "ipc://", 6) == 0 && ipc_in_use(e + 6)) {
            snprintf(err, errlen, "bind %s: address in use (a live socket listens there)", e);
            free(list);
            goto fail;
        }
        if ((bind ? zmq_bind(s, e) : zmq_connect(s, e)) != 0) {
            snprintf(err, errlen, "%s %s: %s", bind ? "bind" : "connect", e, zmq_strerror(errno));
            free(list);
            goto fail;
        }
        n++;
    }
    free(list);
    if (n == 0) {
        snprintf(err, errlen, "empty endpoint");
        goto fail;
    }
    size_t l = eplen;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &l) != 0 || l == 0) snprintf(ep, eplen, "%s", spec);
    return s;
fail:
    close_sock(s);
    return NULL;
}

/* ---- input -------------------------------------------------------------- */

zpipe_in *zpipe_in_open(const char *endpoint, const zpipe_opts *o, char *err, size_t errlen)
{
    zpipe_opts d;
    if (!o) zpipe_opts_default(&d), o = &d;
    wake_init();
    zpipe_in *in = xcalloc(1, sizeof *in);
    in->max = o->max_msg ? o->max_msg : ZPIPE_MAX_MSG_DEFAULT;
    if (endpoint && strcmp(endpoint, "-") == 0) {
        if (fcntl(0, F_GETFL) < 0) {
            snprintf(err, errlen, "stdin: %s", strerror(errno));
            free(in);
            return NULL;
        }
        strcpy(in->ep, "-");
        return in;
    }
    zpipe_opts eff = *o;
    eff.max_msg = in->max;
    in->sock = sock_open(ZMQ_PULL, endpoint, &eff, 1, in->ep, sizeof in->ep, err, errlen);
    if (!in->sock) {
        free(in);
        return NULL;
    }
    return in;
}

static void too_long(zpipe_in *in)
{
    in->st.dropped++;
    log_ev(LOG_ERROR, "input line too long, skipped", "limit", log_i64((int64_t)in->max), NULL);
}

static int blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return 0;
    return 1;
}

static void set_pending(zpipe_in *in, const char *p, size_t n)
{
    buf_reset(&in->pend);
    buf_add(&in->pend, p, n);
    in->has_pend = 1;
    in->st.msgs++;
    in->st.bytes += n;
}

/* stdin: takes the next record out of what was read. 1 = pending set,
 * 0 = need more bytes, ZPIPE_EOF. Never reads. */
static int stdin_fetch(zpipe_in *in)
{
    for (;;) {
        char *base = in->rb.p ? in->rb.p + in->off : NULL;
        size_t avail = in->rb.len - in->off;
        char *nl = avail ? memchr(base, '\n', avail) : NULL;
        if (in->skipping) {
            if (!nl) {
                in->off += avail;
                if (in->eof) in->skipping = 0;
                return in->eof ? ZPIPE_EOF : 0;
            }
            in->off += (size_t)(nl - base) + 1;
            in->skipping = 0;
            continue;
        }
        size_t n;
        if (nl) {
            n = (size_t)(nl - base);
            in->off += n + 1;
        } else if (avail > in->max) {
            /* drop it now rather than buffer an unbounded line */
            too_long(in);
            in->off += avail;
            in->skipping = 1;
            continue;
        } else if (!in->eof) {
            return 0;
        } else if (avail == 0) {
            return ZPIPE_EOF;
        } else {
            n = avail;           /* last line without a newline */
            in->off += n;
        }
        if (n && base[n - 1] == '\r') n--;
        if (blank(base, n)) continue;
        if (n > in->max) {
            too_long(in);
            continue;
        }
        set_pending(in, base, n);
        return 1;
    }
}

/* stdin: waits for bytes (or a stop) and reads one chunk.
 * 1 = something happened (re-check), 0 = timed out, ZPIPE_ERR. */
static int stdin_block(zpipe_in *in, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = g_wake_r, .events = POLLIN}};
    int r = poll(p, g_wake_r >= 0 ? 2 : 1, timeout_ms);
    if (r < 0) return errno == EINTR ? 1 : ZPIPE_ERR;
    if (r == 0) return 0;
    if (p[0].revents & POLLNVAL) {
        errno = EBADF;
        return ZPIPE_ERR;
    }
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) return 1;
    if (in->off) {   /* keep the buffer bounded: max + one chunk */
        memmove(in->rb.p, in->rb.p + in->off, in->rb.len - in->off);
        in->rb.len -= in->off;
        in->off = 0;
    }
    buf_reserve(&in->rb, CHUNK);
    ssize_t n = read(0, in->rb.p + in->rb.len, CHUNK);
    if (n > 0) {
        in->rb.len += (size_t)n;
        in->rb.p[in->rb.len] = '\0';
    } else if (n == 0) {
        in->eof = 1;
    } else if (errno != EINTR && errno != EAGAIN) {
        return ZPIPE_ERR;
    }
    return 1;
}

/* ZeroMQ: takes one message if one is queued. 1 = pending set, 0 = none. */
static int zmq_fetch(zpipe_in *in)
{
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int r = zmq_msg_recv(&m, in->sock, ZMQ_DONTWAIT);
        if (r < 0) {
            int e = errno;
            zmq_msg_close(&m);
            if (e == EAGAIN || e == EINTR) return 0;
            errno = e;
            return ZPIPE_ERR;
        }
        const char *p = zmq_msg_data(&m);
        size_t n = zmq_msg_size(&m);
        if (zmq_msg_more(&m)) {
            /* our senders never send several parts; the rest is already here */
            while (zmq_msg_more(&m)) {
                zmq_msg_close(&m);
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, in->sock, ZMQ_DONTWAIT) < 0) break;
            }
            zmq_msg_close(&m);
            in->st.dropped++;
            log_ev(LOG_WARN, "multipart message dropped", "in", in->ep, NULL);
            continue;
        }
        if (n && p[n - 1] == '\n') n--;
        if (n && p[n - 1] == '\r') n--;
        if (n > in->max) {
            zmq_msg_close(&m);
            in->st.dropped++;
            log_ev(LOG_ERROR, "input message too long, dropped", "in", in->ep, "limit", log_i64((int64_t)in->max), NULL);
            continue;
        }
        if (n && memchr(p, '\n', n)) {
            zmq_msg_close(&m);
            in->st.dropped++;
            log_ev(LOG_WARN, "message with a newline dropped", "in", in->ep, NULL);
            continue;
        }
        if (blank(p, n)) {
            zmq_msg_close(&m);
            continue;
        }
        set_pending(in, p, n);
        zmq_msg_close(&m);
        return 1;
    }
}

static int zmq_block(zpipe_in *in, int timeout_ms)
{
    zmq_pollitem_t it[2] = {{.socket = in->sock, .events = ZMQ_POLLIN},
                            {.socket = NULL, .fd = g_wake_r, .events = ZMQ_POLLIN}};
    int r = zmq_poll(it, g_wake_r >= 0 ? 2 : 1, timeout_ms);
    if (r < 0) return errno == EINTR ? 1 : ZPIPE_ERR;
    return r > 0;
}

int zpipe_in_wait(zpipe_in *in, int timeout_ms)
{
    int64_t deadline = timeout_ms >= 0 ? time_mono_ms() + timeout_ms : 0;
    int polled = 0;
    for (;;) {
        if (g_stop) return ZPIPE_INTR;
        if (in->has_pend) return ZPIPE_READY;
        int r = in->sock ? zmq_fetch(in) : stdin_fetch(in);
        if (r == 1) return ZPIPE_READY;
        if (r < 0) return r;
        int rem = remaining_ms(timeout_ms, deadline);
        if (polled && rem == 0) return ZPIPE_TIMEOUT;
        r = in->sock ? zmq_block(in, rem) : stdin_block(in, rem);
        polled = 1;
        if (r < 0) return r;
        if (r == 0 && !g_stop) {
            if (in->sock) {   /* a last look: the message may have come with the timeout */
                if (zmq_fetch(in) == 1) return ZPIPE_READY;
            }
            if (remaining_ms(timeout_ms, deadline) == 0) return ZPIPE_TIMEOUT;
        }
    }
}

int zpipe_in_recv(zpipe_in *in, buf_t *msg, int timeout_ms)
{
    int r = zpipe_in_wait(in, timeout_ms);
    if (r != ZPIPE_READY) return r;
    buf_t t = *msg;    /* swap: no copy, and msg's old storage is reused next time */
    *msg = in->pend;
    in->pend = t;
    buf_reset(&in->pend);
    in->has_pend = 0;
    if (!msg->p) buf_add(msg, "", 0);   /* never NULL after a record */
    return ZPIPE_READY;
}

const char *zpipe_in_endpoint(const zpipe_in *in) { return in->ep; }
const zpipe_stats *zpipe_in_stats(const zpipe_in *in) { return &in->st; }

void zpipe_in_close(zpipe_in *in)
{
    if (!in) return;
    if (in->sock) close_sock(in->sock);
    buf_free(&in->rb);
    buf_free(&in->pend);
    free(in);
}

/* ---- output ------------------------------------------------------------- */

zpipe_out *zpipe_out_open(const char *endpoint, const zpipe_opts *o, char *err, size_t errlen)
{
    zpipe_opts d;
    if (!o) zpipe_opts_default(&d), o = &d;
    wake_init();
    zpipe_out *out = xcalloc(1, sizeof *out);
    out->max = o->max_msg ? o->max_msg : ZPIPE_MAX_MSG_DEFAULT;
    if (endpoint && strcmp(endpoint, "-") == 0) {
        if (fcntl(1, F_GETFL) < 0) {
            snprintf(err, errlen, "stdout: %s", strerror(errno));
            free(out);
            return NULL;
        }
        strcpy(out->ep, "-");
        return out;
    }
    out->sock = sock_open(ZMQ_PUSH, endpoint, o, 0, out->ep, sizeof out->ep, err, errlen);
    if (!out->sock) {
        free(out);
        return NULL;
    }
    return out;
}

/* Writes all of iov to fd 1, retrying short writes and EINTR: a line that
 * was begun is always finished. */
static int write_all(struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t n = writev(1, iov, cnt);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {   /* someone made stdout non-blocking */
                struct pollfd p = {.fd = 1, .events = POLLOUT};
                poll(&p, 1, 1000);
                continue;
            }
            return -1;
        }
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++, cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Waits until the output can take data: 2 writable, 1 woken for another
 * reason (re-check), 0 timed out, -1 error (errno; EINTR = a stop came while
 * waiting without a limit). */
static int out_block(zpipe_out *out, int timeout_ms)
{
    int use_wake = timeout_ms < 0 && g_wake_r >= 0;  /* finite waits ignore the stop */
    int r, writable;
    if (out->sock) {
        zmq_pollitem_t it[2] = {{.socket = out->sock, .events = ZMQ_POLLOUT},
                                {.socket = NULL, .fd = g_wake_r, .events = ZMQ_POLLIN}};
        r = zmq_poll(it, use_wake ? 2 : 1, timeout_ms);
        writable = r > 0 && (it[0].revents & ZMQ_POLLOUT);
    } else {
        struct pollfd p[2] = {{.fd = 1, .events = POLLOUT}, {.fd = g_wake_r, .events = POLLIN}};
        r = poll(p, use_wake ? 2 : 1, timeout_ms);
        if (r > 0 && (p[0].revents & POLLNVAL)) {
            errno = EBADF;
            return -1;
        }
        /* POLLERR/POLLHUP: let write() report the error (EPIPE) */
        writable = r > 0 && (p[0].revents & (POLLOUT | POLLERR | POLLHUP));
    }
    if (r < 0 && errno != EINTR) return -1;
    if (r == 0) return 0;
    if (writable) return 2;
    if (timeout_ms < 0 && g_stop) {
        errno = EINTR;
        return -1;
    }
    return 1;
}

/* One attempt: 1 sent, 0 not now, -1 error. */
static int out_try(zpipe_out *out, const char *data, size_t len, int writable)
{
    if (out->sock) {
        if (zmq_send(out->sock, data, len, ZMQ_DONTWAIT) >= 0) return 1;
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    if (!writable) return 0;
    struct iovec iov[2] = {{(void *)data, len}, {"\n", 1}};
    return write_all(iov, 2) == 0 ? 1 : -1;
}

int zpipe_out_send(zpipe_out *out, const char *data, size_t len, int timeout_ms)
{
    if (len && data[len - 1] == '\n') len--;
    if (len == 0 || memchr(data, '\n', len)) {
        errno = EINVAL;
        return -1;
    }
    if (len > out->max) {
        errno = EMSGSIZE;
        return -1;
    }
    int64_t deadline = timeout_ms >= 0 ? time_mono_ms() + timeout_ms : 0;
    int waited = 0, writable = 0, r;
    for (;;) {
        if (timeout_ms < 0 && g_stop) {
            errno = EINTR;
            return -1;
        }
        r = out_try(out, data, len, writable);
        if (r != 0) break;
        int rem = remaining_ms(timeout_ms, deadline);
        if (waited && rem == 0) break;
        int b = out_block(out, rem);
        if (b < 0) return -1;
        waited = 1;
        if (b == 2) writable = 1;
        if (b == 0) {   /* timed out; ZeroMQ gets one last try, its POLLOUT can lag */
            r = out->sock ? out_try(out, data, len, 0) : 0;
            break;
        }
    }
    if (r < 0) return -1;
    if (r == 0) {
        out->st.blocked++;
        errno = EAGAIN;
        return -1;
    }
    out->st.msgs++;
    out->st.bytes += len;
    return 0;
}

const char *zpipe_out_endpoint(const zpipe_out *out) { return out->ep; }
const zpipe_stats *zpipe_out_stats(const zpipe_out *out) { return &out->st; }

void zpipe_out_close(zpipe_out *out)
{
    if (!out) return;
    if (out->sock) close_sock(out->sock);
    free(out);
}
