#include "zpipe.h"
#include "log.h"
#include "timeutil.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
    memset(o, 0, sizeof *o);
    o->hwm = ZPIPE_HWM_DEFAULT;
    o->max_msg = ZPIPE_MAX_MSG_DEFAULT;
    o->linger_ms = ZPIPE_LINGER_DEFAULT;
}

/* ---- CURVE keys, the ZAP allow-list, ipc directories --------------------- */

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_DOMAINS 16
#define KEY_FILE_MAX 4096

typedef struct {
    char domain[32];       /* ZMQ_ZAP_DOMAIN of the server socket */
    char dir[256];         /* where the keys came from (logs) */
    uint8_t (*keys)[32];
    size_t n;
} zap_list;

static zap_list g_zap[ZAP_MAX_DOMAINS];
static int g_nzap;
static unsigned g_zap_seq;
static pthread_mutex_t g_zap_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t g_zap_thr;
static int g_zap_on;

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--) *v++ = 0;
}

int zpipe_curve_read_key(const char *path, int secret, uint8_t key[32], char *err, size_t errlen)
{
    const char *what = secret ? "CURVE secret key" : "CURVE public key";
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s %s: not a regular file", what, path);
        close(fd);
        return -1;
    }
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (secret && st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s %s is owned by uid %u, not by this user (uid %u): refused",
                 what, path, (unsigned)st.st_uid, (unsigned)geteuid());
        close(fd);
        return -1;
    }
    if (secret && (mode & 077)) {
        snprintf(err, errlen, "%s %s is accessible by group/other (mode %04o): refused, it must be "
                 "readable by its owner only (chmod 600 %s)", what, path, mode, path);
        close(fd);
        return -1;
    }
    if (!secret && st.st_uid != geteuid() && st.st_uid != 0) {
        snprintf(err, errlen, "%s %s is owned by uid %u, neither this user nor root: refused",
                 what, path, (unsigned)st.st_uid);
        close(fd);
        return -1;
    }
    if (!secret && (mode & 022)) {
        snprintf(err, errlen, "%s %s is writable by group/other (mode %04o): refused", what, path, mode);
        close(fd);
        return -1;
    }
    char text[KEY_FILE_MAX + 1];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, text + len, sizeof text - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
            close(fd);
            wipe(text, sizeof text);
            return -1;
        }
        if (n == 0 || (len += (size_t)n) == sizeof text - 1) break;
    }
    close(fd);
    text[len] = '\0';
    int rc = -1, found = 0;
    char z85[41];
    if (len == sizeof text - 1) {
        snprintf(err, errlen, "%s %s: file too big for a key", what, path);
        goto done;
    }
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t')) line[--l] = '\0';
        while (*line == ' ' || *line == '\t') line++, l--;
        if (l == 0 || (line[0] == '#' && (line[1] == '\0' || line[1] == ' '))) continue;
        if (found || l != 40) {
            snprintf(err, errlen, "%s %s: want one 40-character Z85 key (zmq_curve_keypair form)", what, path);
            goto done;
        }
        memcpy(z85, line, 41);
        found = 1;
    }
    if (!found) {
        snprintf(err, errlen, "%s %s: no key in the file", what, path);
        goto done;
    }
    if (!zmq_z85_decode(key, z85)) {
        snprintf(err, errlen, "%s %s: not a Z85 key", what, path);
        goto done;
    }
    rc = 0;
done:
    wipe(text, sizeof text);
    wipe(z85, sizeof z85);
    return rc;
}

/* Reads every key file of an allow-list directory (names starting with "."
 * or ending with "~" are skipped). *keys is malloc'ed. */
static int read_allow_dir(const char *dir, uint8_t (**keys)[32], size_t *n, char *err, size_t errlen)
{
    *keys = NULL;
    *n = 0;
    struct stat st;
    if (stat(dir, &st) != 0) {
        snprintf(err, errlen, "CURVE allow-list directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "CURVE allow-list directory %s: not a directory", dir);
        return -1;
    }
    if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022)) {
        snprintf(err, errlen, "CURVE allow-list directory %s is writable by others or owned by another user "
                 "(mode %04o, uid %u): refused", dir, (unsigned)st.st_mode & 07777, (unsigned)st.st_uid);
        return -1;
    }
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "CURVE allow-list directory %s: %s", dir, strerror(errno));
        return -1;
    }
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || e->d_name[l - 1] == '~') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat fs;
        if (stat(path, &fs) != 0 || S_ISDIR(fs.st_mode)) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *keys = xrealloc(*keys, cap * sizeof **keys);
        }
        if (zpipe_curve_read_key(path, 0, (*keys)[*n], err, errlen) != 0) {
            rc = -1;
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (rc == 0 && *n == 0) {
        snprintf(err, errlen, "CURVE allow-list directory %s holds no client key: every client would be refused", dir);
        rc = -1;
    }
    if (rc != 0) {
        free(*keys);
        *keys = NULL;
        *n = 0;
    }
    return rc;
}

/* Own key pair: the secret, and the public key derived from it (checked
 * against curve_public_file when given). */
static int load_pair(const zpipe_opts *o, uint8_t pub[32], uint8_t sec[32], char *err, size_t errlen)
{
    if (zpipe_curve_read_key(o->curve_secret_file, 1, sec, err, errlen) != 0) return -1;
    char zs[41], zp[41];
    zmq_z85_encode(zs, sec, 32);
    int rc = zmq_curve_public(zp, zs);
    wipe(zs, sizeof zs);
    if (rc != 0) {
        snprintf(err, errlen, "CURVE: cannot derive the public key from %s: %s", o->curve_secret_file, zmq_strerror(errno));
        wipe(sec, 32);
        return -1;
    }
    zmq_z85_decode(pub, zp);
    if (o->curve_public_file) {
        uint8_t given[32];
        if (zpipe_curve_read_key(o->curve_public_file, 0, given, err, errlen) != 0) {
            wipe(sec, 32);
            return -1;
        }
        if (memcmp(given, pub, 32) != 0) {
            snprintf(err, errlen, "CURVE public key %s does not belong to the secret key %s",
                     o->curve_public_file, o->curve_secret_file);
            wipe(sec, 32);
            return -1;
        }
    }
    return 0;
}

static int curve_wanted(const zpipe_opts *o)
{
    return o && (o->curve_secret_file || o->curve_public_file || o->curve_server_key_file || o->curve_allow_dir);
}

int zpipe_curve_check(const zpipe_opts *o, char *err, size_t errlen)
{
    if (!curve_wanted(o)) return 0;
    if (!o->curve_secret_file) {
        snprintf(err, errlen, "CURVE: a secret key file is needed (--curve-secret)");
        return -1;
    }
    if (!o->curve_server_key_file && !o->curve_allow_dir) {
        snprintf(err, errlen, "CURVE: a secret key alone is not enough: give the server's public key "
                 "(--curve-server-key, connecting side) and/or a client allow-list (--curve-allow, binding side)");
        return -1;
    }
    uint8_t pub[32], sec[32], peer[32];
    if (load_pair(o, pub, sec, err, errlen) != 0) return -1;
    wipe(sec, sizeof sec);
    if (o->curve_server_key_file && zpipe_curve_read_key(o->curve_server_key_file, 0, peer, err, errlen) != 0) return -1;
    if (o->curve_allow_dir) {
        uint8_t (*keys)[32];
        size_t n;
        if (read_allow_dir(o->curve_allow_dir, &keys, &n, err, errlen) != 0) return -1;
        free(keys);
    }
    return 0;
}

static void zap_free_lists(void)
{
    pthread_mutex_lock(&g_zap_mu);
    for (int i = 0; i < g_nzap; i++) free(g_zap[i].keys);
    memset(g_zap, 0, sizeof g_zap);
    g_nzap = 0;
    pthread_mutex_unlock(&g_zap_mu);
}

/* The ZAP reply to one request: "200" if the CURVE key is in the allow-list
 * of the request's domain. NULL-mechanism requests of sockets without a
 * domain (zpipe's own non-CURVE sockets) are let through. */
static const char *zap_decide(zmq_msg_t *f, int n, char *why, size_t whylen)
{
    snprintf(why, whylen, "malformed ZAP request");
    if (n < 6 || zmq_msg_size(&f[0]) != 3 || memcmp(zmq_msg_data(&f[0]), "1.0", 3) != 0) return "500";
    char domain[64], mech[16], addr[64];
    snprintf(domain, sizeof domain, "%.*s", (int)zmq_msg_size(&f[2]), (const char *)zmq_msg_data(&f[2]));
    snprintf(addr, sizeof addr, "%.*s", (int)zmq_msg_size(&f[3]), (const char *)zmq_msg_data(&f[3]));
    snprintf(mech, sizeof mech, "%.*s", (int)zmq_msg_size(&f[5]), (const char *)zmq_msg_data(&f[5]));
    if (strcmp(mech, "NULL") == 0 && domain[0] == '\0') return "200";
    if (strcmp(mech, "CURVE") != 0 || n < 7 || zmq_msg_size(&f[6]) != 32) {
        snprintf(why, whylen, "mechanism %s not allowed", mech);
        log_ev(LOG_WARN, "ZAP: connection refused", "mechanism", mech, "address", addr, "domain", domain, NULL);
        return "400";
    }
    const uint8_t *key = zmq_msg_data(&f[6]);
    char z85[41];
    zmq_z85_encode(z85, key, 32);
    int found = 0, known = 0;
    char dir[256] = "";
    pthread_mutex_lock(&g_zap_mu);
    for (int i = 0; i < g_nzap && !known; i++) {
        if (strcmp(g_zap[i].domain, domain) != 0) continue;
        known = 1;
        snprintf(dir, sizeof dir, "%s", g_zap[i].dir);
        for (size_t k = 0; k < g_zap[i].n && !found; k++) found = memcmp(g_zap[i].keys[k], key, 32) == 0;
    }
    pthread_mutex_unlock(&g_zap_mu);
    if (found) {
        log_ev(LOG_DEBUG, "CURVE client accepted", "key", z85, "address", addr, NULL);
        snprintf(why, whylen, "OK");
        return "200";
    }
    snprintf(why, whylen, "client key not allowed");
    log_ev(LOG_WARN, "CURVE client refused: key not in the allow-list", "key", z85, "address", addr,
           "allow", known ? dir : "(unknown ZAP domain)", NULL);
    return "400";
}

static void *zap_main(void *arg)
{
    void *s = arg;
    for (;;) {
        zmq_msg_t f[8];
        int n = 0, more = 1, dead = 0;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, 0) < 0) {
                zmq_msg_close(&m);
                if (errno == EINTR) continue;
                dead = 1;   /* ETERM: the context is closing */
                break;
            }
            more = zmq_msg_more(&m);
            if (n < 8) f[n++] = m;
            else zmq_msg_close(&m);
        }
        if (dead) {
            for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
            break;
        }
        char why[64];
        const char *status = zap_decide(f, n, why, sizeof why);
        /* reply: version, request id, status code, status text, user id, metadata */
        zmq_send(s, "1.0", 3, ZMQ_SNDMORE);
        if (n >= 2) zmq_send(s, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
        else zmq_send(s, "", 0, ZMQ_SNDMORE);
        zmq_send(s, status, 3, ZMQ_SNDMORE);
        zmq_send(s, why, strlen(why), ZMQ_SNDMORE);
        zmq_send(s, "", 0, ZMQ_SNDMORE);
        zmq_send(s, "", 0, 0);
        for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
    }
    zmq_close(s);
    return NULL;
}

/* Starts the ZAP handler on the context, once per context. */
static int zap_start(void *ctx, char *err, size_t errlen)
{
    if (g_zap_on) return 0;
    void *s = zmq_socket(ctx, ZMQ_REP);
    if (!s) {
        snprintf(err, errlen, "ZAP handler: zmq_socket: %s", zmq_strerror(errno));
        return -1;
    }
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(s, ZAP_ENDPOINT) != 0) {
        snprintf(err, errlen, "ZAP handler: bind %s: %s", ZAP_ENDPOINT, zmq_strerror(errno));
        zmq_close(s);
        return -1;
    }
    /* the thread takes no signals: SIGTERM/SIGINT go to the stage's threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&g_zap_thr, NULL, zap_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "ZAP handler: pthread_create: %s", strerror(rc));
        zmq_close(s);
        return -1;
    }
    g_zap_on = 1;
    return 0;
}

/* After zmq_ctx_term: the handler saw ETERM and closed its socket. */
static void zap_stop(void)
{
    if (!g_zap_on) return;
    pthread_join(g_zap_thr, NULL);
    g_zap_on = 0;
    zap_free_lists();
}

/* Sets the CURVE options of a socket before its bind/connect. */
static int curve_setup(void *ctx, void *s, int server, const zpipe_opts *o, char *err, size_t errlen)
{
    uint8_t pub[32], sec[32];
    int rc = -1;
    if (zpipe_curve_check(o, err, errlen) != 0) return -1;
    if (server && !o->curve_allow_dir) {
        snprintf(err, errlen, "CURVE: a binding tcp:// socket is a CURVE server and needs a client allow-list (--curve-allow DIR)");
        return -1;
    }
    if (!server && !o->curve_server_key_file) {
        snprintf(err, errlen, "CURVE: a connecting tcp:// socket is a CURVE client and needs the server's public key (--curve-server-key FILE)");
        return -1;
    }
    if (load_pair(o, pub, sec, err, errlen) != 0) return -1;
    if (server) {
        uint8_t (*keys)[32];
        size_t n;
        if (read_allow_dir(o->curve_allow_dir, &keys, &n, err, errlen) != 0) goto out;
        pthread_mutex_lock(&g_zap_mu);
        if (g_nzap == ZAP_MAX_DOMAINS) {
            pthread_mutex_unlock(&g_zap_mu);
            free(keys);
            snprintf(err, errlen, "CURVE: too many server sockets in one process");
            goto out;
        }
        zap_list *l = &g_zap[g_nzap++];
        snprintf(l->domain, sizeof l->domain, "delayer-curve-%u", ++g_zap_seq);
        snprintf(l->dir, sizeof l->dir, "%s", o->curve_allow_dir);
        l->keys = keys;
        l->n = n;
        char domain[32];
        snprintf(domain, sizeof domain, "%s", l->domain);
        pthread_mutex_unlock(&g_zap_mu);
        if (zap_start(ctx, err, errlen) != 0) goto out;
        int one = 1;
        if (zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0 ||
            zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
            zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 32) != 0) {
            snprintf(err, errlen, "CURVE server options: %s", zmq_strerror(errno));
            goto out;
        }
    } else {
        uint8_t peer[32];
        if (zpipe_curve_read_key(o->curve_server_key_file, 0, peer, err, errlen) != 0) goto out;
        if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, peer, 32) != 0 ||
            zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 32) != 0 ||
            zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 32) != 0) {
            snprintf(err, errlen, "CURVE client options: %s", zmq_strerror(errno));
            goto out;
        }
    }
    rc = 0;
out:
    wipe(sec, sizeof sec);
    return rc;
}

/* ipc:// path's directory: owned by us, mode 0700; created when missing for
 * a bind (one level). */
static int ipc_dir_check(const char *path, int bind, char *err, size_t errlen)
{
    if (path[0] == '@') return 0;   /* abstract namespace: no file */
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || !bind) return 0;   /* connect: the binder will create it; else bind reports */
        if (mkdir(dir, 0700) != 0) return 0;      /* parent missing: zmq_bind reports the error */
        if (stat(dir, &st) != 0) return 0;
    }
    if (!S_ISDIR(st.st_mode)) return 0;
    if (st.st_uid != geteuid() || (st.st_mode & 077)) {
        snprintf(err, errlen, "ipc directory %s is accessible by others (mode %04o, owner uid %u): refused; "
                 "it must be owned by this user (uid %u) with mode 0700", dir, (unsigned)st.st_mode & 07777,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    return 0;
}

/* tcp address (after "tcp://") on loopback: 127.x, localhost, [::1]. */
static int tcp_is_loopback(const char *a)
{
    const char *semi = strchr(a, ';');   /* "source;destination" connects */
    if (semi) a = semi + 1;
    if (strncmp(a, "127.", 4) == 0 || strncmp(a, "localhost:", 10) == 0 || strncmp(a, "[::1]:", 6) == 0 ||
        strncmp(a, "lo:", 3) == 0)
        return 1;
    return 0;
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
    zap_stop();
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
    /* No ZMTP heartbeats: a reader that stops reading at its memory bound
     * (backpressure, e.g. sns-publish --max-held) cannot see its peer's
     * PINGs, so the heartbeat timed the healthy connection out; the
     * reconnection then hit libzmq 4.3.4's "Assertion failed:
     * _input_stopped" (libzmq issues 3937, 4767) and aborted the process.
     * TCP keepalive notices a half-open tcp:// peer; an ipc:// peer that
     * dies closes its socket. */
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
    /* What the endpoints are decides CURVE: tcp:// only, one role per socket. */
    int ntcp = 0, nother = 0, nbind = 0, nconn = 0, clear_tcp = 0;
    char *list = xstrdup(spec);
    char *save = NULL;
    for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        int bind = default_bind;
        if (*e == '@') bind = 1, e++;
        else if (*e == '>') bind = 0, e++;
        if (strncmp(e, "tcp://", 6) != 0) {
            nother++;
            continue;
        }
        ntcp++;
        if (bind) nbind++;
        else nconn++;
        if (!tcp_is_loopback(e + 6)) clear_tcp = 1;
    }
    free(list);
    if (ntcp && curve_wanted(o)) {
        if (nother || (nbind && nconn)) {
            snprintf(err, errlen, "CURVE: a socket with keys must have only tcp:// endpoints, all bound or all "
                     "connected (the mechanism is per socket): \"%s\"", spec);
            goto fail;
        }
        if (curve_setup(ctx, s, nbind > 0, o, err, errlen) != 0) goto fail;
    } else if (clear_tcp) {
        log_ev(LOG_WARN, "tcp endpoint without CURVE: records travel in clear and any peer that reaches "
               "the address may connect (see --curve-*)", "endpoint", spec, NULL);
    }
    list = xstrdup(spec);
    save = NULL;
    int n = 0;
    for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        int bind = default_bind;
        if (*e == '@') bind = 1, e++;
        else if (*e == '>') bind = 0, e++;
        if (strncmp(e, "ipc://", 6) == 0 && ipc_dir_check(e + 6, bind, err, errlen) != 0) {
            free(list);
            goto fail;
        }
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
    __atomic_fetch_add(&in->st.dropped, 1, __ATOMIC_RELAXED);
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
    __atomic_fetch_add(&in->st.msgs, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&in->st.bytes, n, __ATOMIC_RELAXED);
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
            __atomic_fetch_add(&in->st.dropped, 1, __ATOMIC_RELAXED);
            log_ev(LOG_WARN, "multipart message dropped", "in", in->ep, NULL);
            continue;
        }
        if (n && p[n - 1] == '\n') n--;
        if (n && p[n - 1] == '\r') n--;
        if (n > in->max) {
            zmq_msg_close(&m);
            __atomic_fetch_add(&in->st.dropped, 1, __ATOMIC_RELAXED);
            log_ev(LOG_ERROR, "input message too long, dropped", "in", in->ep, "limit", log_i64((int64_t)in->max), NULL);
            continue;
        }
        if (n && memchr(p, '\n', n)) {
            zmq_msg_close(&m);
            __atomic_fetch_add(&in->st.dropped, 1, __ATOMIC_RELAXED);
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

void (*zpipe_close_hook)(const zpipe_stats *st);

void zpipe_in_close(zpipe_in *in)
{
    if (!in) return;
    if (zpipe_close_hook) zpipe_close_hook(&in->st);
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
        __atomic_fetch_add(&out->st.blocked, 1, __ATOMIC_RELAXED);
        errno = EAGAIN;
        return -1;
    }
    __atomic_fetch_add(&out->st.msgs, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&out->st.bytes, len, __ATOMIC_RELAXED);
    return 0;
}

const char *zpipe_out_endpoint(const zpipe_out *out) { return out->ep; }
const zpipe_stats *zpipe_out_stats(const zpipe_out *out) { return &out->st; }

void zpipe_out_close(zpipe_out *out)
{
    if (!out) return;
    if (zpipe_close_hook) zpipe_close_hook(&out->st);
    if (out->sock) close_sock(out->sock);
    free(out);
}
