#include "log.h"
#include "buf.h"
#include "timeutil.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *log_stage = "delayer";
static int log_lvl = LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error", "off"};

int log_level_parse(const char *s)
{
    for (int i = 0; i <= LOG_OFF; i++)
        if (s && strcmp(s, names[i]) == 0) return i;
    if (s && strcmp(s, "warning") == 0) return LOG_WARN;
    return -1;
}

void log_init(const char *stage)
{
    log_stage = stage;
    int l = log_level_parse(getenv("DELAYER_LOG_LEVEL"));
    if (l >= 0) log_lvl = l;
}

void log_set_level(int level) { log_lvl = level; }
int log_level(void) { return log_lvl; }

static void add_value(buf_t *b, const char *v)
{
    int plain = *v != '\0';
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p >= 0x7f) {
            plain = 0;
            break;
        }
    if (plain) {
        buf_adds(b, v);
        return;
    }
    buf_addc(b, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\') buf_addc(b, '\\'), buf_addc(b, (char)*p);
        else if (*p == '\n') buf_adds(b, "\\n");
        else if (*p < ' ' || *p == 0x7f) buf_printf(b, "\\x%02x", *p);
        else buf_addc(b, (char)*p);
    }
    buf_addc(b, '"');
}

void log_ev(int level, const char *msg, ...)
{
    if (level < log_lvl || level >= LOG_OFF) return;
    char ts[32];
    time_fmt(time_now_ms(), ts);
    buf_t b = BUF_INIT;
    buf_printf(&b, "ts=%s level=%s stage=%s msg=", ts, names[level], log_stage);
    add_value(&b, msg);
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        buf_addc(&b, ' ');
        buf_adds(&b, k);
        buf_addc(&b, '=');
        add_value(&b, v ? v : "");
    }
    va_end(ap);
    buf_addc(&b, '\n');
    /* one write(2) per line so concurrent writers never interleave within a line */
    ssize_t off = 0;
    while ((size_t)off < b.len) {
        ssize_t n = write(2, b.p + off, b.len - (size_t)off);
        if (n <= 0) break;
        off += n;
    }
    buf_free(&b);
}

const char *log_i64(int64_t v)
{
    static char ring[8][24];
    static unsigned next;
    char *s = ring[next++ % 8];
    snprintf(s, 24, "%lld", (long long)v);
    return s;
}

const char *log_i64_buf(char b[24], int64_t v)
{
    snprintf(b, 24, "%lld", (long long)v);
    return b;
}
