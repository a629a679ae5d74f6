/* delayer-keygen: writes a CURVE key pair for the ZeroMQ pipes between
 * stages (docs/security.md):
 *   delayer-keygen [--force] SECRET_FILE PUBLIC_FILE
 * SECRET_FILE gets mode 0600 (the stages refuse a secret key readable by
 * group/other), PUBLIC_FILE 0644. Both hold the 40-character Z85 key on one
 * line after a "# " comment line. Existing files are not overwritten without
 * --force. The secret never reaches stdout or stderr. Exit 0, 100 on a usage
 * error, 111 on a system error. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#ifndef DELAYER_VERSION
#define DELAYER_VERSION "dev"
#endif

static void usage(FILE *f)
{
    fprintf(f, "Usage: delayer-keygen [--force] SECRET_FILE PUBLIC_FILE\n"
               "Writes a new CURVE key pair for delayer's tcp:// pipes: the secret key to\n"
               "SECRET_FILE (mode 0600) and the public key to PUBLIC_FILE (mode 0644), each\n"
               "as one 40-character Z85 line. Give the secret to the stage with --curve-secret;\n"
               "copy the public key to the peers: a server's into the clients' --curve-server-key,\n"
               "a client's into the server's --curve-allow directory.\n"
               "  --force    replace existing files\n"
               "  -h, --help, --version\n");
}

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--) *v++ = 0;
}

/* Writes the key file with exactly mode `mode` (umask does not apply). */
static int write_key(const char *path, const char *comment, const char *z85, mode_t mode, int force)
{
    if (force) unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        fprintf(stderr, "delayer-keygen: %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (use --force to replace it)" : "");
        return -1;
    }
    char text[160];
    int n = snprintf(text, sizeof text, "# %s\n%s\n", comment, z85);
    int rc = 0;
    if (fchmod(fd, mode) != 0 || write(fd, text, (size_t)n) != n || fsync(fd) != 0) {
        fprintf(stderr, "delayer-keygen: %s: %s\n", path, strerror(errno));
        rc = -1;
    }
    wipe(text, sizeof text);
    if (close(fd) != 0 && rc == 0) {
        fprintf(stderr, "delayer-keygen: %s: %s\n", path, strerror(errno));
        rc = -1;
    }
    if (rc != 0) unlink(path);
    return rc;
}

int main(int argc, char **argv)
{
    int force = 0, i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "--force") == 0) force = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("delayer-keygen (delayer) %s\n", DELAYER_VERSION);
            return 0;
        } else {
            fprintf(stderr, "delayer-keygen: unknown option %s (see --help)\n", argv[i]);
            return 100;
        }
    }
    if (argc - i != 2) {
        fprintf(stderr, "delayer-keygen: want SECRET_FILE and PUBLIC_FILE (see --help)\n");
        return 100;
    }
    if (strcmp(argv[i], argv[i + 1]) == 0) {
        fprintf(stderr, "delayer-keygen: the secret and public files must differ\n");
        return 100;
    }
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "delayer-keygen: zmq_curve_keypair: %s (libzmq without CURVE?)\n", zmq_strerror(errno));
        return 111;
    }
    int rc = write_key(argv[i], "delayer CURVE secret key: keep it private (mode 0600)", sec, 0600, force);
    wipe(sec, sizeof sec);
    if (rc != 0) return 111;
    if (write_key(argv[i + 1], "delayer CURVE public key", pub, 0644, force) != 0) {
        unlink(argv[i]);
        return 111;
    }
    return 0;
}
