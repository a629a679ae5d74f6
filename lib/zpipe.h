/* zpipe: the pipe between two pipeline stages. One message = one NDJSON
 * record, carried either over ZeroMQ (PUSH -> PULL) or over stdin/stdout,
 * so a stage runs the same under the supervisor and in a shell pipeline.
 *
 * Endpoints (the --in / --out option of every stage):
 *   "-"                  stdin (input) / stdout (output), one record per line
 *   "@tcp://127.0.0.1:5601", "@ipc:///run/x.sock", "@inproc://x"   bind
 *   ">tcp://host:5601", ">ipc:///run/x.sock"                       connect
 *   "tcp://...", "ipc://...", "inproc://..." without a prefix: the socket's
 *       default, as in CZMQ: an input (PULL) BINDS, an output (PUSH) CONNECTS.
 *   Several endpoints separated by commas, each with its own prefix, e.g.
 *   ">ipc:///run/a.0,>ipc:///run/a.1" (a PUSH round-robins over all of them).
 * The usual wiring: the downstream stage binds its PULL and every upstream
 * instance connects its PUSH, so the upstream stage scales freely (fan-in).
 * To scale the downstream stage instead, bind the upstream PUSH ("@") and let
 * each downstream PULL connect (">"); PUSH then round-robins over them. One
 * side of every link must be a single binder. Binding an ipc:// path that a
 * live process is already listening on is refused (libzmq itself would
 * silently unlink and steal the path), so two instances that both try to
 * bind fail loudly instead of splitting the traffic in secret.
 *
 * Socket options, chosen on purpose (see anchors.md 7):
 *   PUSH: ZMQ_IMMEDIATE=1 (never queue to a peer that is not connected: a
 *         message queued to a dead endpoint would be lost), SNDHWM = hwm,
 *         LINGER = linger_ms (a graceful stop flushes what is queued, but a
 *         gone peer cannot hang the exit).
 *   PULL: RCVHWM = hwm, LINGER = 0 (unread input is abandoned at close: the
 *         durability of every record comes from DynamoDB leases and SQS
 *         visibility, never from ZeroMQ), MAXMSGSIZE = max_msg (a peer that
 *         sends a bigger message is disconnected; it cannot exhaust memory;
 *         MAXMSGSIZE is max_msg + 64 KiB, so a record just over max_msg is
 *         still received, logged and dropped instead of cutting the link).
 *   Both: TCP keepalive (60 s idle, 10 s x 3 probes) so a half-open
 *         connection is noticed. No ZMTP heartbeats: a reader stopped at its
 *         high-water mark cannot answer them, and the time-out and
 *         reconnection that follow abort libzmq 4.3.4 (issue 3937).
 *
 * Transport security (docs/security.md):
 *   CURVE (RFC 26) on tcp:// sockets, when zpipe_opts names a secret key:
 *   the BINDING side is the CURVE server, the CONNECTING side the client.
 *   - curve_secret_file: own secret key; curve_public_file: own public key
 *     (optional: derived from the secret; if given it must match it).
 *   - client (connects): curve_server_key_file = the binding peer's public key.
 *   - server (binds): curve_allow_dir = a directory of client public keys,
 *     one key per file; only those clients are let in. A ZAP handler (RFC 27)
 *     runs in a thread on inproc://zeromq.zap.01 of zpipe's context and
 *     answers 400 to any other key (logged with the key, level warn). The
 *     directory is read when the socket opens (restart to change it).
 *   Key files: ZeroMQ's Z85 text form, the 40-character key on one line
 *   (what zmq_curve_keypair gives and tools/delayer-keygen writes); lines
 *   starting with "# " are comments. A secret key file must be a regular file
 *   owned by this user with no group/other permission bits (0600 or 0400),
 *   else it is REFUSED. Public key files and the allow-list directory must be
 *   owned by this user or root and not writable by group/other.
 *   A socket with CURVE keys must not mix tcp:// with ipc:// or inproc://
 *   endpoints, nor bind and connect (the mechanism is per socket): refused.
 *   CURVE keys apply only to sockets with tcp:// endpoints; ipc:// and
 *   inproc:// sockets never use them. A tcp:// endpoint on a non-loopback
 *   address without CURVE works but logs a warning at open.
 *   ipc:// paths: the socket's directory must be a directory owned by this
 *   user with mode 0700 (no group/other bits), else the open is refused
 *   ("ipc directory ... is accessible by others"): whoever can enter it could
 *   connect, or replace the socket. A binding socket whose directory is
 *   missing creates it with mode 0700 (one level: its parent must exist).
 *   A connecting socket whose directory does not exist yet is accepted (the
 *   binder creates it). Abstract names ("ipc://@x") are not checked.
 *
 * Records: a ZeroMQ message carries the record without a newline; stdout gets
 * the record plus "\n". Input: empty (or whitespace-only) lines and empty
 * messages are ignored; a trailing "\r" is removed; a last line without "\n"
 * counts as a record. A line longer than max_msg is skipped whole and logged
 * once (level error), reading goes on at the next line: bad input never
 * kills the process. A ZeroMQ message that contains a newline or has several
 * parts, or is longer than max_msg, is dropped and logged (it could not be
 * written as one NDJSON line).
 *
 * Stopping: zpipe_interrupt() (called by stage.c's SIGTERM/SIGINT handler,
 * async-signal-safe) marks a stop and wakes every wait at once, on stdin as
 * on ZeroMQ, whichever thread the signal hit and even if it arrived just
 * before the wait began (a self-pipe is part of every poll). From then on
 * input calls return ZPIPE_INTR: a stopping stage takes no more input.
 *
 * Not thread-safe: one thread uses a given zpipe_in/zpipe_out. */
#ifndef DELAYER_ZPIPE_H
#define DELAYER_ZPIPE_H
#include <stddef.h>
#include <stdint.h>
#include "buf.h"

/* Results of zpipe_in_wait / zpipe_in_recv. */
enum {
    ZPIPE_READY   = 1,  /* a record is there (wait) / was stored in msg (recv) */
    ZPIPE_TIMEOUT = 0,  /* nothing within timeout_ms */
    ZPIPE_ERR     = -1, /* system error, errno set (the stage exits 111) */
    ZPIPE_EOF     = -2, /* stdin only: end of input and nothing left buffered */
    ZPIPE_INTR    = -3  /* a stop was requested (zpipe_interrupt) */
};

#define ZPIPE_HWM_DEFAULT     1000
#define ZPIPE_MAX_MSG_DEFAULT (2u << 20)  /* 2 MiB: an SQS message (1 MiB) as JSON, escaped, with metadata */
#define ZPIPE_LINGER_DEFAULT  2000        /* ms a closing PUSH may spend flushing */

typedef struct {
    int hwm;          /* SNDHWM/RCVHWM, messages per peer pipe; 0 = no limit (avoid) */
    size_t max_msg;   /* largest record in bytes, newline excluded: stdin lines,
                         ZeroMQ MAXMSGSIZE, and the largest zpipe_out_send */
    int linger_ms;    /* PUSH linger at close */
    /* CURVE on tcp:// sockets (see above); all NULL = no CURVE. */
    const char *curve_secret_file;     /* own secret key (0600) */
    const char *curve_public_file;     /* own public key, optional */
    const char *curve_server_key_file; /* connecting sockets: the server's public key */
    const char *curve_allow_dir;       /* binding sockets: allowed client public keys */
} zpipe_opts;

/* Counters for the metrics endpoint (issue 7). The pipe updates them with
 * relaxed atomics, so another thread may read them with __atomic_load_n
 * while the pipe is open; zpipe_close_hook (when set) is called with them
 * just before a pipe is freed (lib/stage.c keeps the final values). */
typedef struct {
    uint64_t msgs;    /* records received / sent */
    uint64_t bytes;   /* their bytes, newlines excluded */
    uint64_t dropped; /* input: over-long lines, multipart or newline-bearing messages */
    uint64_t blocked; /* output: sends that gave up with EAGAIN (timeout at HWM or no peer) */
} zpipe_stats;

extern void (*zpipe_close_hook)(const zpipe_stats *st);

typedef struct zpipe_in zpipe_in;
typedef struct zpipe_out zpipe_out;

/* hwm 1000, max_msg 2 MiB, linger 2000 ms. */
void zpipe_opts_default(zpipe_opts *o);

/* Opens an input ("-" or PULL endpoints; o may be NULL for defaults).
 * NULL with a one-line reason in err on a bad endpoint or a failed bind. */
zpipe_in *zpipe_in_open(const char *endpoint, const zpipe_opts *o, char *err, size_t errlen);
/* Waits until a record is ready, at most timeout_ms (-1 = no limit, 0 = poll):
 * ZPIPE_READY, ZPIPE_TIMEOUT, ZPIPE_EOF, ZPIPE_INTR or ZPIPE_ERR. */
int zpipe_in_wait(zpipe_in *in, int timeout_ms);
/* zpipe_in_wait, then moves the record into msg (replacing its contents,
 * NUL-terminated, no newline). Same results; msg is set only on ZPIPE_READY. */
int zpipe_in_recv(zpipe_in *in, buf_t *msg, int timeout_ms);
/* "-", or the endpoint really bound/connected last (a "tcp://127.0.0.1:*"
 * bind shows its port). */
const char *zpipe_in_endpoint(const zpipe_in *in);
const zpipe_stats *zpipe_in_stats(const zpipe_in *in);
void zpipe_in_close(zpipe_in *in);   /* NULL is fine */

/* Opens an output ("-" or PUSH endpoints). NULL with err on failure. */
zpipe_out *zpipe_out_open(const char *endpoint, const zpipe_opts *o, char *err, size_t errlen);
/* Sends one record (one trailing "\n" in data is dropped). 0 when the record
 * was handed to the transport (ZeroMQ: queued; that is not delivery), else -1:
 *   EAGAIN   not sent within timeout_ms: no connected peer or every peer at
 *            its HWM. The caller still owns the record and can hold it.
 *   EINTR    timeout_ms < 0 and a stop was requested. A finite timeout is
 *            honoured even while stopping, so a stage can flush its last
 *            work with a bounded wait.
 *   EMSGSIZE longer than max_msg;  EINVAL empty or contains a newline;
 *   EPIPE    stdout's reader is gone (SIGPIPE is ignored by stage.c);
 *   other    system/ZeroMQ errors.
 * On stdout the timeout bounds the wait before the first byte; once a line is
 * begun it is finished, so a reader never sees half a record. */
int zpipe_out_send(zpipe_out *out, const char *data, size_t len, int timeout_ms);
const char *zpipe_out_endpoint(const zpipe_out *out);
const zpipe_stats *zpipe_out_stats(const zpipe_out *out);
/* Closes; the last ZeroMQ socket to close waits up to linger_ms for queued
 * output to leave. NULL is fine. */
void zpipe_out_close(zpipe_out *out);

/* 0 if endpoint is well-formed ("-" or a list as above), else -1 with err.
 * Lets a tool tell a usage error (exit 100) from a failed bind (111). */
int zpipe_check_endpoint(const char *endpoint, char *err, size_t errlen);

/* Checks the CURVE options of o without opening anything: every named file
 * is read and checked (permissions, format; a public key that does not match
 * the secret), the allow-list directory is read. 0 (also when no CURVE
 * option is set), else -1 with a one-line reason. An option without the
 * secret key (or a secret without any role option) is an error. Lets a tool
 * refuse a bad key at start (exit 100). */
int zpipe_curve_check(const zpipe_opts *o, char *err, size_t errlen);
/* Reads one key file (format above) into key[32]. secret = 1 applies the
 * secret key's permission rules. 0, or -1 with a one-line reason. */
int zpipe_curve_read_key(const char *path, int secret, uint8_t key[32], char *err, size_t errlen);

void zpipe_interrupt(void);         /* async-signal-safe: request a stop, wake all waits */
int  zpipe_interrupted(void);       /* 1 once a stop was requested */
void zpipe_interrupt_clear(void);   /* forget it (tests) */
#endif
