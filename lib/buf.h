/* buf: a growable, always NUL-terminated byte buffer.
 * Out-of-memory aborts the process (as redis' zmalloc does): every caller
 * would do the same, and it keeps 0/-1 returns for real errors only. */
#ifndef DELAYER_BUF_H
#define DELAYER_BUF_H
#include <stddef.h>
#include <stdarg.h>

typedef struct {
    char *p;      /* NULL until first use; p[len] == '\0' afterwards */
    size_t len;
    size_t cap;
    int secret;   /* buf_secret: wiped whenever storage is let go */
} buf_t;

#define BUF_INIT {0, 0, 0, 0}

void buf_reserve(buf_t *b, size_t extra);
void buf_add(buf_t *b, const void *data, size_t n);
void buf_adds(buf_t *b, const char *s);
void buf_addc(buf_t *b, char c);
void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(buf_t *b, const char *fmt, va_list ap);
void buf_reset(buf_t *b);           /* len = 0, memory kept */
void buf_free(buf_t *b);            /* frees and re-initialises */
void buf_wipe(buf_t *b);            /* zeroes the bytes (secrets), then frees */
/* Marks b as holding secrets (keys, tokens, credential replies), before its
 * first use: growing it copies to new storage and zeroes the old before
 * freeing it (realloc could leave a copy behind), buf_reset zeroes the
 * content, buf_free zeroes before freeing. The mark survives buf_free. */
void buf_secret(buf_t *b);
/* Tests only: when set, called with every block a secret buffer lets go,
 * after it was zeroed and before it is freed. */
extern void (*buf_release_hook)(const void *p, size_t n);
const char *buf_str(const buf_t *b); /* "" when empty, never NULL */

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
#endif
