/* xml.c: a bounded, non-validating XML scanner for AWS query-protocol
 * replies. Every read is checked against the caller's length, so truncated
 * or hostile input yields -1, never an out-of-bounds read. */
#include "xml.h"
#include <stdint.h>
#include <string.h>

enum xml_kind { XK_TEXT, XK_START, XK_EMPTY, XK_END, XK_CDATA, XK_SKIP, XK_EOF, XK_ERR };

typedef struct {
    const char *s;
    size_t len;            /* hard bound: no byte at or after len is read */
    size_t pos;
} xml_scan;

typedef struct {
    int kind;              /* enum xml_kind */
    size_t start, end;     /* the whole token: [start, end) */
    size_t name, name_len; /* START/EMPTY/END: qualified name */
    size_t body, body_len; /* TEXT: raw text; CDATA: content */
} xml_tok;

static int xml_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Bounded search for pat in s[from, len); the offset or (size_t)-1. */
static size_t xml_find_str(const char *s, size_t from, size_t len, const char *pat)
{
    size_t m = strlen(pat);
    for (size_t i = from; i + m <= len; i++)
        if (memcmp(s + i, pat, m) == 0) return i;
    return (size_t)-1;
}

static int xml_has(const xml_scan *sc, size_t at, const char *pat)
{
    size_t m = strlen(pat);
    return at + m <= sc->len && memcmp(sc->s + at, pat, m) == 0;
}

/* A markup construct ending with `close` (comment, CDATA, PI). */
static int xml_delimited(xml_scan *sc, xml_tok *t, size_t open_len, const char *close, int kind)
{
    size_t e = xml_find_str(sc->s, sc->pos + open_len, sc->len, close);
    if (e == (size_t)-1) return t->kind = XK_ERR;
    t->body = sc->pos + open_len;
    t->body_len = e - t->body;
    sc->pos = e + strlen(close);
    return t->kind = kind;
}

/* <!DOCTYPE ...> and friends: up to the '>' outside quotes and brackets. */
static int xml_declaration(xml_scan *sc, xml_tok *t)
{
    int depth = 0;
    char quote = 0;
    for (size_t i = sc->pos + 2; i < sc->len; i++) {
        char c = sc->s[i];
        if (quote) { if (c == quote) quote = 0; continue; }
        if (c == '"' || c == '\'') quote = c;
        else if (c == '[') depth++;
        else if (c == ']') depth--;
        else if (c == '>' && depth <= 0) { sc->pos = i + 1; return t->kind = XK_SKIP; }
    }
    return t->kind = XK_ERR;
}

/* Reads a tag name at i; sets name/name_len; returns the index after it. */
static size_t xml_tag_name(const xml_scan *sc, size_t i, xml_tok *t)
{
    t->name = i;
    while (i < sc->len && !xml_is_space(sc->s[i]) && sc->s[i] != '/' && sc->s[i] != '>')
        i++;
    t->name_len = i - t->name;
    return i;
}

static int xml_end_tag(xml_scan *sc, xml_tok *t)
{
    size_t i = xml_tag_name(sc, sc->pos + 2, t);
    while (i < sc->len && xml_is_space(sc->s[i])) i++;
    if (t->name_len == 0 || i >= sc->len || sc->s[i] != '>') return t->kind = XK_ERR;
    sc->pos = i + 1;
    return t->kind = XK_END;
}

/* <name attr="v" ...> or <name .../>. Attribute values may hold '>' and '/'. */
static int xml_start_tag(xml_scan *sc, xml_tok *t)
{
    size_t i = xml_tag_name(sc, sc->pos + 1, t);
    if (t->name_len == 0) return t->kind = XK_ERR;
    while (i < sc->len) {
        char c = sc->s[i];
        if (c == '>') { sc->pos = i + 1; return t->kind = XK_START; }
        if (c == '/' && i + 1 < sc->len && sc->s[i + 1] == '>') {
            sc->pos = i + 2;
            return t->kind = XK_EMPTY;
        }
        if (c == '"' || c == '\'') {
            const char *q = memchr(sc->s + i + 1, c, sc->len - i - 1);
            if (!q) break;
            i = (size_t)(q - sc->s);
        }
        i++;
    }
    return t->kind = XK_ERR;
}

/* The next token at sc->pos. */
static int xml_next(xml_scan *sc, xml_tok *t)
{
    memset(t, 0, sizeof *t);
    t->start = sc->pos;
    if (sc->pos >= sc->len) return t->kind = XK_EOF;
    int k;
    if (sc->s[sc->pos] != '<') {
        const char *lt = memchr(sc->s + sc->pos, '<', sc->len - sc->pos);
        size_t e = lt ? (size_t)(lt - sc->s) : sc->len;
        t->body = sc->pos;
        t->body_len = e - sc->pos;
        sc->pos = e;
        k = t->kind = XK_TEXT;
    } else if (xml_has(sc, sc->pos, "<!--")) {
        k = xml_delimited(sc, t, 4, "-->", XK_SKIP);
    } else if (xml_has(sc, sc->pos, "<![CDATA[")) {
        k = xml_delimited(sc, t, 9, "]]>", XK_CDATA);
    } else if (xml_has(sc, sc->pos, "<?")) {
        k = xml_delimited(sc, t, 2, "?>", XK_SKIP);
    } else if (xml_has(sc, sc->pos, "<!")) {
        k = xml_declaration(sc, t);
    } else if (xml_has(sc, sc->pos, "</")) {
        k = xml_end_tag(sc, t);
    } else {
        k = xml_start_tag(sc, t);
    }
    t->end = sc->pos;
    return k;
}

/* 1 if the tag's local name (after any "prefix:") is `name`. */
static int xml_local_is(const char *s, const xml_tok *t, const char *name)
{
    const char *n = s + t->name;
    size_t nl = t->name_len;
    const char *colon = memrchr(n, ':', nl);
    if (colon) { nl -= (size_t)(colon + 1 - n); n = colon + 1; }
    return strlen(name) == nl && memcmp(n, name, nl) == 0;
}

static void xml_put_utf8(buf_t *out, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    buf_add(out, u, n);
}

/* &#NN; or &#xNN; (e points after '#', n chars up to ';'). -1 if invalid. */
static int xml_char_ref(const char *e, size_t n, buf_t *out)
{
    int hex = n > 0 && (e[0] == 'x' || e[0] == 'X');
    size_t i = hex ? 1 : 0;
    if (i >= n || n - i > 8) return -1;
    uint32_t cp = 0;
    for (; i < n; i++) {
        char c = e[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (hex && c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (hex && c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        cp = cp * (hex ? 16u : 10u) + (uint32_t)d;
    }
    /* XML forbids NUL; surrogates and values past U+10FFFF are not characters. */
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    if (out) xml_put_utf8(out, cp);
    return 0;
}

/* One entity at s[0..n) (s[0] == '&'); returns the bytes consumed or -1. */
static long xml_entity(const char *s, size_t n, buf_t *out)
{
    static const struct { const char *name; char c; } named[] = {
        { "lt", '<' }, { "gt", '>' }, { "amp", '&' }, { "quot", '"' }, { "apos", '\'' },
    };
    const char *semi = memchr(s, ';', n < 16 ? n : 16);
    if (!semi) return -1;
    size_t nl = (size_t)(semi - s) - 1;
    const char *e = s + 1;
    if (nl > 0 && e[0] == '#') {
        if (xml_char_ref(e + 1, nl - 1, out) < 0) return -1;
        return (long)nl + 2;
    }
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        if (strlen(named[i].name) == nl && memcmp(named[i].name, e, nl) == 0) {
            if (out) buf_addc(out, named[i].c);
            return (long)nl + 2;
        }
    }
    return -1;
}

/* Appends text s[0..n) with entities decoded; -1 on a bad entity. */
static int xml_decode(const char *s, size_t n, buf_t *out)
{
    size_t i = 0;
    while (i < n) {
        const char *amp = memchr(s + i, '&', n - i);
        size_t run = amp ? (size_t)(amp - (s + i)) : n - i;
        if (out && run) buf_add(out, s + i, run);
        i += run;
        if (i >= n) break;
        long used = xml_entity(s + i, n - i, out);
        if (used < 0) return -1;
        i += (size_t)used;
    }
    return 0;
}

/* Having read the start tag `open`, collects the element's text up to its
 * matching end tag. */
static int xml_collect(xml_scan *sc, const xml_tok *open, buf_t *out, size_t *end)
{
    int depth = 1;
    xml_tok t;
    for (;;) {
        switch (xml_next(sc, &t)) {
        case XK_TEXT:
            if (xml_decode(sc->s + t.body, t.body_len, out) < 0) return -1;
            break;
        case XK_CDATA:
            if (out) buf_add(out, sc->s + t.body, t.body_len);
            break;
        case XK_START:
            depth++;
            break;
        case XK_END:
            if (--depth > 0) break;
            if (t.name_len != open->name_len ||
                memcmp(sc->s + t.name, sc->s + open->name, t.name_len) != 0)
                return -1;
            *end = t.end;
            return 0;
        case XK_EMPTY:
        case XK_SKIP:
            break;
        default:            /* EOF or ERR: truncated or malformed */
            return -1;
        }
    }
}

int xml_find(const char *xml, size_t len, size_t from, const char *name,
             buf_t *out, size_t *elem_start, size_t *elem_end)
{
    if (!xml || !name || from > len) return -1;
    if (out) buf_reset(out);
    xml_scan sc = { xml, len, from };
    xml_tok t;
    for (;;) {
        int k = xml_next(&sc, &t);
        if (k == XK_EOF || k == XK_ERR) return -1;
        if ((k == XK_START || k == XK_EMPTY) && xml_local_is(xml, &t, name)) break;
    }
    size_t end = t.end;
    if (t.kind == XK_START && xml_collect(&sc, &t, out, &end) < 0) {
        if (out) buf_reset(out);
        return -1;
    }
    if (out) buf_add(out, "", 0);    /* out->p is a valid "" even when empty */
    if (elem_start) *elem_start = t.start;
    if (elem_end) *elem_end = end;
    return 0;
}

int xml_text(const char *xml, size_t len, const char *name, buf_t *out)
{
    return xml_find(xml, len, 0, name, out, NULL, NULL);
}
