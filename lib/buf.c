#include "buf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(void)
{
    fputs("fatal: out of memory\n", stderr);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) oom();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom();
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void (*buf_release_hook)(const void *p, size_t n);

/* Zeroes a secret buffer's block, then frees it. */
static void buf_release(char *p, size_t cap)
{
    if (!p) return;
    explicit_bzero(p, cap);
    if (buf_release_hook) buf_release_hook(p, cap);
    free(p);
}

void buf_secret(buf_t *b) { b->secret = 1; }

void buf_reserve(buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)-1) / 2) oom();
        cap *= 2;
    }
    if (b->secret) {
        /* Not realloc: it may move the bytes and free the old block as is. */
        char *q = xmalloc(cap);
        if (b->p) memcpy(q, b->p, b->len + 1);
        buf_release(b->p, b->cap);
        b->p = q;
    } else {
        b->p = xrealloc(b->p, cap);
    }
    b->cap = cap;
}

void buf_add(buf_t *b, const void *data, size_t n)
{
    buf_reserve(b, n);
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void buf_adds(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

void buf_addc(buf_t *b, char c) { buf_add(b, &c, 1); }

void buf_vprintf(buf_t *b, const char *fmt, va_list ap)
{
    if (!fmt) return; /* also silences a gcc 12 -Wformat-truncation false positive under UBSan */
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0) return;
    buf_reserve(b, (size_t)n);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_reset(buf_t *b)
{
    if (b->secret && b->p) explicit_bzero(b->p, b->len);
    b->len = 0;
    if (b->p) b->p[0] = '\0';
}

void buf_free(buf_t *b)
{
    if (b->secret) buf_release(b->p, b->cap);
    else free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void buf_wipe(buf_t *b)
{
    if (b->p) explicit_bzero(b->p, b->cap);
    buf_free(b);
}

const char *buf_str(const buf_t *b) { return b->p ? b->p : ""; }
