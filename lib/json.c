/* json: strict validation + jsmn tokenising, value decoding, and a writer.
 *
 * json_parse() runs two passes over the bytes:
 *   1. a strict RFC 8259 validator (recursive descent, recursion bounded by
 *      JSON_MAX_DEPTH) that gives precise errors and refuses everything jsmn
 *      lets through ({"a":}, [1,], bare words, 01, trailing garbage, ...);
 *   2. jsmn (with parent links, so it is linear) to build the token array,
 *      grown on JSMN_ERROR_NOMEM and resumed with the same parser state.
 * Strings are checked for escapes and raw control characters at parse time;
 * UTF-8 and surrogate pairs are checked when a string is decoded. */
#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_PARENT_LINKS
#include <jsmn.h>

/* ---------------------------------------------------------------- errors */

void json_seterr(json_doc *d, const char *fmt, ...)
{
    if (!d) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    /* one line, printable: names and values quoted into messages may carry
     * anything */
    for (char *p = d->err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
}

/* ----------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid; in
 * that case *bad (if given) is the length of the maximal ill-formed subpart
 * (always >= 1), so a replacement character can stand in for it. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;   /* range allowed for the 2nd byte */
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;         /* overlong */
        else if (c == 0xED) hi = 0x9F;    /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;         /* overlong */
        else if (c == 0xF4) hi = 0x8F;    /* > U+10FFFF */
    } else {
        if (bad) *bad = 1;                /* 80..C1, F5..FF */
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (k >= n || s[k] < l || s[k] > h) {
            if (bad) *bad = k;
            return 0;
        }
    }
    return need + 1;
}

int json_valid_utf8(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        size_t l = utf8_seq(u + i, n - i, NULL);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

static void utf8_put(buf_t *b, uint32_t cp)
{
    char o[4];
    size_t n;
    if (cp < 0x80) { o[0] = (char)cp; n = 1; }
    else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_add(b, o, n);
}

/* ---------------------------------------------------------------- numbers */

static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* Scans an RFC 8259 number starting at *i. 0 with *i one past it, or -1 with
 * *i at the offending byte (*i == n: the input ended). */
static int scan_number(const unsigned char *s, size_t n, size_t *i)
{
    size_t p = *i;
    if (p < n && s[p] == '-') p++;
    if (p >= n) goto fail;
    if (s[p] == '0') p++;
    else if (s[p] >= '1' && s[p] <= '9') { while (p < n && is_digit(s[p])) p++; }
    else goto fail;
    if (p < n && s[p] == '.') {
        p++;
        if (p >= n || !is_digit(s[p])) goto fail;
        while (p < n && is_digit(s[p])) p++;
    }
    if (p < n && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < n && (s[p] == '+' || s[p] == '-')) p++;
        if (p >= n || !is_digit(s[p])) goto fail;
        while (p < n && is_digit(s[p])) p++;
    }
    *i = p;
    return 0;
fail:
    *i = p;
    return -1;
}

int json_valid_number(const char *s, size_t n)
{
    size_t i = 0;
    if (!s || n == 0) return 0;
    return scan_number((const unsigned char *)s, n, &i) == 0 && i == n;
}

int json_parse_i64(const char *s, size_t n, int64_t *v)
{
    size_t i = 0;
    int neg = 0;
    uint64_t acc = 0, lim;
    if (!s || n == 0) return -1;
    if (s[0] == '-') { neg = 1; i = 1; }
    if (i >= n || !is_digit((unsigned char)s[i])) return -1;
    if (s[i] == '0' && i + 1 < n) return -1;        /* leading zero / fraction */
    lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    int range = 0;
    for (; i < n; i++) {
        if (!is_digit((unsigned char)s[i])) return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (acc > (lim - d) / 10) range = 1;       /* keep scanning: syntax first */
        else acc = acc * 10 + d;
    }
    if (range) return -2;
    if (v) {
        if (neg) *v = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
        else *v = (int64_t)acc;
    }
    return 0;
}

/* ------------------------------------------------------------- validator */

typedef struct {
    const unsigned char *s;
    size_t n;
    json_doc *d;
} vstate;

static int v_fail(vstate *v, size_t at, const char *why)
{
    if (at >= v->n) json_seterr(v->d, "truncated JSON");
    else json_seterr(v->d, "invalid JSON at byte %zu: %s", at, why);
    return -1;
}

static size_t v_ws(const vstate *v, size_t i)
{
    while (i < v->n && (v->s[i] == ' ' || v->s[i] == '\t' || v->s[i] == '\n' || v->s[i] == '\r')) i++;
    return i;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* *i at the opening quote; on success *i is one past the closing quote. */
static int v_string(vstate *v, size_t *i)
{
    const unsigned char *s = v->s;
    size_t p = *i + 1, n = v->n;
    for (;;) {
        /* fast path over ordinary bytes */
        while (p < n && s[p] != '"' && s[p] != '\\' && s[p] >= 0x20) p++;
        if (p >= n) return v_fail(v, n, "");
        if (s[p] == '"') { *i = p + 1; return 0; }
        if (s[p] < 0x20) return v_fail(v, p, "control character in string");
        /* backslash */
        p++;
        if (p >= n) return v_fail(v, n, "");
        switch (s[p]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p++;
            break;
        case 'u':
            p++;
            for (int k = 0; k < 4; k++, p++) {
                if (p >= n) return v_fail(v, n, "");
                if (hexval(s[p]) < 0) return v_fail(v, p, "invalid \\u escape");
            }
            break;
        default:
            return v_fail(v, p, "invalid escape");
        }
    }
}

static int v_literal(vstate *v, size_t *i, const char *word)
{
    size_t p = *i;
    for (const char *w = word; *w; w++, p++) {
        if (p >= v->n) return v_fail(v, p, "");
        if (v->s[p] != (unsigned char)*w) return v_fail(v, p, "unexpected character");
    }
    *i = p;
    return 0;
}

static int v_value(vstate *v, size_t *i, int depth)
{
    const unsigned char *s = v->s;
    size_t p = *i;
    if (p >= v->n) return v_fail(v, p, "");
    switch (s[p]) {
    case '{':
    case '[': {
        int obj = s[p] == '{';
        unsigned char close = obj ? '}' : ']';
        if (depth >= JSON_MAX_DEPTH) {
            json_seterr(v->d, "nesting deeper than %d", JSON_MAX_DEPTH);
            return -1;
        }
        p = v_ws(v, p + 1);
        if (p < v->n && s[p] == close) { *i = p + 1; return 0; }
        for (;;) {
            if (obj) {
                if (p >= v->n || s[p] != '"') return v_fail(v, p, "expected a string key");
                if (v_string(v, &p) < 0) return -1;
                p = v_ws(v, p);
                if (p >= v->n || s[p] != ':') return v_fail(v, p, "expected ':'");
                p = v_ws(v, p + 1);
            }
            if (v_value(v, &p, depth + 1) < 0) return -1;
            p = v_ws(v, p);
            if (p >= v->n) return v_fail(v, p, "");
            if (s[p] == close) { *i = p + 1; return 0; }
            if (s[p] != ',') return v_fail(v, p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            p = v_ws(v, p + 1);
        }
    }
    case '"':
        if (v_string(v, &p) < 0) return -1;
        break;
    case 't': if (v_literal(v, &p, "true") < 0) return -1; break;
    case 'f': if (v_literal(v, &p, "false") < 0) return -1; break;
    case 'n': if (v_literal(v, &p, "null") < 0) return -1; break;
    default:
        if (s[p] == '-' || is_digit(s[p])) {
            if (scan_number(s, v->n, &p) < 0) return v_fail(v, p, "invalid number");
            break;
        }
        return v_fail(v, p, "unexpected character");
    }
    *i = p;
    return 0;
}

static int validate(json_doc *d, const char *src, size_t len)
{
    vstate v = { (const unsigned char *)src, len, d };
    size_t p = v_ws(&v, 0);
    if (p >= len) {
        json_seterr(d, "empty JSON document");
        return -1;
    }
    if (v_value(&v, &p, 0) < 0) return -1;
    p = v_ws(&v, p);
    if (p < len) return v_fail(&v, p, "unexpected data after the value");
    return 0;
}

/* ----------------------------------------------------------------- parse */

int json_parse(json_doc *doc, const char *src, size_t len)
{
    memset(doc, 0, sizeof *doc);
    doc->src = src ? src : "";
    doc->len = src ? len : 0;
    if (!src) {
        json_seterr(doc, "no JSON document");
        return -1;
    }
    if (len >= (size_t)INT_MAX) {
        json_seterr(doc, "JSON document too large (%zu bytes)", len);
        return -1;
    }
    if (validate(doc, src, len) < 0) return -1;

    jsmn_parser p;
    jsmn_init(&p);
    unsigned cap = 64;
    jsmntok_t *jt = xmalloc(cap * sizeof *jt);
    int r;
    for (;;) {
        r = jsmn_parse(&p, src, len, jt, cap);
        if (r != JSMN_ERROR_NOMEM) break;
        if (cap > (unsigned)INT_MAX / 2 || cap > len + 1) break;  /* cannot happen */
        cap *= 2;
        jt = xrealloc(jt, (size_t)cap * sizeof *jt);
    }
    if (r < 0) {
        if (r == JSMN_ERROR_PART) json_seterr(doc, "truncated JSON");
        else json_seterr(doc, "invalid JSON at byte %u", p.pos);
        free(jt);
        return -1;
    }
    if (r == 0) {
        free(jt);
        json_seterr(doc, "empty JSON document");
        return -1;
    }
    doc->tok = xmalloc((size_t)r * sizeof *doc->tok);
    doc->ntok = doc->cap = r;
    for (int i = 0; i < r; i++) {
        json_tok *t = &doc->tok[i];
        t->start = jt[i].start;
        t->end = jt[i].end;
        t->size = 0;
        switch (jt[i].type) {
        case JSMN_OBJECT: t->type = JSON_OBJ; t->size = jt[i].size; break;
        case JSMN_ARRAY:  t->type = JSON_ARR; t->size = jt[i].size; break;
        case JSMN_STRING: t->type = JSON_STR; break;
        default:
            switch (src[jt[i].start]) {
            case 't': t->type = JSON_TRUE; break;
            case 'f': t->type = JSON_FALSE; break;
            case 'n': t->type = JSON_NULL; break;
            default:  t->type = JSON_NUM; break;
            }
        }
    }
    free(jt);
    return 0;
}

void json_free(json_doc *doc)
{
    if (!doc) return;
    free(doc->tok);
    doc->tok = NULL;
    doc->ntok = doc->cap = 0;
}

/* ------------------------------------------------------------ navigation */

static int valid_tok(const json_doc *d, int t)
{
    return d && d->tok && t >= 0 && t < d->ntok;
}

int json_type(const json_doc *d, int t)
{
    return valid_tok(d, t) ? d->tok[t].type : JSON_NONE;
}

int json_next(const json_doc *d, int t)
{
    if (!valid_tok(d, t)) return -1;
    /* tokens are in document order and a subtree's tokens all start before
     * its end: binary search for the first token starting at/after t's end */
    int end = d->tok[t].end;
    int lo = t + 1, hi = d->ntok;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (d->tok[mid].start < end) lo = mid + 1;
        else hi = mid;
    }
    return lo < d->ntok ? lo : -1;
}

int json_size(const json_doc *d, int t)
{
    int ty = json_type(d, t);
    return ty == JSON_OBJ || ty == JSON_ARR ? d->tok[t].size : 0;
}

int json_first(const json_doc *d, int t)
{
    int ty = json_type(d, t);
    if ((ty != JSON_OBJ && ty != JSON_ARR) || d->tok[t].size <= 0 || t + 1 >= d->ntok) return -1;
    return t + 1;
}

int json_after(const json_doc *d, int parent, int cur)
{
    int ty = json_type(d, parent);
    if (ty != JSON_OBJ && ty != JSON_ARR) return -1;
    if (!valid_tok(d, cur) || cur <= parent || d->tok[cur].start >= d->tok[parent].end) return -1;
    int n = ty == JSON_OBJ ? json_next(d, cur + 1) : json_next(d, cur);
    if (n < 0 || d->tok[n].start >= d->tok[parent].end) return -1;
    return n;
}

int json_at(const json_doc *d, int arr, int i)
{
    if (json_type(d, arr) != JSON_ARR || i < 0 || i >= d->tok[arr].size) return -1;
    int k = json_first(d, arr);
    while (k >= 0 && i-- > 0) k = json_after(d, arr, k);
    return k;
}

int json_get(const json_doc *d, int obj, const char *key)
{
    if (json_type(d, obj) != JSON_OBJ || !key) return -1;
    for (int k = json_first(d, obj); k >= 0; k = json_after(d, obj, k))
        if (json_streq(d, k, key)) return k + 1 < d->ntok ? k + 1 : -1;
    return -1;
}

/* ---------------------------------------------------------------- values */

static const char *type_name(int ty)
{
    switch (ty) {
    case JSON_OBJ: return "an object";
    case JSON_ARR: return "an array";
    case JSON_STR: return "a string";
    case JSON_NUM: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    default: return "nothing";
    }
}

static int want(json_doc *d, int t, int ty, const char *what)
{
    int got = json_type(d, t);
    if (got == ty) return 0;
    if (got == JSON_NONE) json_seterr(d, "expected %s, got no value", what);
    else json_seterr(d, "expected %s, got %s", what, type_name(got));
    return -1;
}

/* Decodes the raw string body s[0..n) into out. -1 with *why. */
static int decode_str(const unsigned char *s, size_t n, buf_t *out, const char **why)
{
    size_t i = 0, run = 0;
    buf_reserve(out, n);
    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '\\') { i++; continue; }
        if (c >= 0x80) {
            size_t l = utf8_seq(s + i, n - i, NULL);
            if (!l) { *why = "invalid UTF-8 in string"; return -1; }
            i += l;
            continue;
        }
        if (c < 0x20) { *why = "control character in string"; return -1; }
        /* backslash */
        buf_add(out, s + run, i - run);
        if (i + 1 >= n) { *why = "invalid escape in string"; return -1; }
        char e = (char)s[i + 1];
        i += 2;
        switch (e) {
        case '"': buf_addc(out, '"'); break;
        case '\\': buf_addc(out, '\\'); break;
        case '/': buf_addc(out, '/'); break;
        case 'b': buf_addc(out, '\b'); break;
        case 'f': buf_addc(out, '\f'); break;
        case 'n': buf_addc(out, '\n'); break;
        case 'r': buf_addc(out, '\r'); break;
        case 't': buf_addc(out, '\t'); break;
        case 'u': {
            uint32_t cp = 0;
            if (i + 4 > n) { *why = "invalid \\u escape"; return -1; }
            for (int k = 0; k < 4; k++) {
                int h = hexval(s[i + (size_t)k]);
                if (h < 0) { *why = "invalid \\u escape"; return -1; }
                cp = cp << 4 | (uint32_t)h;
            }
            i += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) { *why = "invalid \\u escape (lone surrogate)"; return -1; }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo = 0;
                int ok = i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u';
                for (int k = 0; ok && k < 4; k++) {
                    int h = hexval(s[i + 2 + (size_t)k]);
                    if (h < 0) ok = 0;
                    else lo = lo << 4 | (uint32_t)h;
                }
                if (!ok || lo < 0xDC00 || lo > 0xDFFF) {
                    *why = "invalid \\u escape (lone surrogate)";
                    return -1;
                }
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            utf8_put(out, cp);
            break;
        }
        default:
            *why = "invalid escape in string";
            return -1;
        }
        run = i;
    }
    buf_add(out, s + run, i - run);
    return 0;
}

int json_str(json_doc *d, int t, buf_t *out)
{
    const char *why = NULL;
    buf_reset(out);
    if (want(d, t, JSON_STR, "a string") < 0) return -1;
    const json_tok *k = &d->tok[t];
    if (decode_str((const unsigned char *)d->src + k->start, (size_t)(k->end - k->start), out, &why) < 0) {
        buf_reset(out);
        json_seterr(d, "%s", why);
        return -1;
    }
    return 0;
}

int json_streq(const json_doc *d, int t, const char *s)
{
    if (json_type(d, t) != JSON_STR || !s) return 0;
    const char *raw = d->src + d->tok[t].start;
    size_t n = (size_t)(d->tok[t].end - d->tok[t].start), sl = strlen(s);
    if (!memchr(raw, '\\', n))
        return n == sl && memcmp(raw, s, n) == 0 && json_valid_utf8(raw, n);
    buf_t b = BUF_INIT;
    const char *why;
    int eq = decode_str((const unsigned char *)raw, n, &b, &why) == 0 && b.len == sl && memcmp(buf_str(&b), s, sl) == 0;
    buf_free(&b);
    return eq;
}

static void raw_snippet(const json_doc *d, int t, char *o, size_t on)
{
    size_t n = (size_t)(d->tok[t].end - d->tok[t].start);
    if (n > 40) snprintf(o, on, "%.37s...", d->src + d->tok[t].start);
    else snprintf(o, on, "%.*s", (int)n, d->src + d->tok[t].start);
}

int json_i64(json_doc *d, int t, int64_t *v)
{
    if (want(d, t, JSON_NUM, "a number") < 0) return -1;
    const json_tok *k = &d->tok[t];
    int r = json_parse_i64(d->src + k->start, (size_t)(k->end - k->start), v);
    if (r == -2) { json_seterr(d, "number out of range"); return -1; }
    if (r < 0) {
        char sn[48];
        raw_snippet(d, t, sn, sizeof sn);
        json_seterr(d, "expected an integer, got %s", sn);
        return -1;
    }
    return 0;
}

int json_f64(json_doc *d, int t, double *v)
{
    if (want(d, t, JSON_NUM, "a number") < 0) return -1;
    const json_tok *k = &d->tok[t];
    size_t n = (size_t)(k->end - k->start);
    char small[64];
    char *tmp = n < sizeof small ? small : xmalloc(n + 1);
    memcpy(tmp, d->src + k->start, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    double x = strtod(tmp, &end);
    int bad = end != tmp + n, range = !isfinite(x);
    if (tmp != small) free(tmp);
    if (bad) { json_seterr(d, "unparsable number"); return -1; }
    if (range) { json_seterr(d, "number out of range"); return -1; }
    if (v) *v = x;
    return 0;
}

int json_bool(json_doc *d, int t, int *v)
{
    int ty = json_type(d, t);
    if (ty != JSON_TRUE && ty != JSON_FALSE) return want(d, t, JSON_TRUE, "a boolean");
    if (v) *v = ty == JSON_TRUE;
    return 0;
}

const char *json_raw(const json_doc *d, int t, size_t *n)
{
    if (!valid_tok(d, t)) {
        if (n) *n = 0;
        return NULL;
    }
    const json_tok *k = &d->tok[t];
    if (k->type == JSON_STR) {
        if (n) *n = (size_t)(k->end - k->start) + 2;
        return d->src + k->start - 1;
    }
    if (n) *n = (size_t)(k->end - k->start);
    return d->src + k->start;
}

/* ---------------------------------------------------------------- writer */

static void escape(buf_t *b, const char *s, size_t n, int astral);

void jw_init(json_w *w, buf_t *b)
{
    memset(w, 0, sizeof *w);
    w->b = b;
}

static void jw_sep(json_w *w)
{
    if (w->after_key) { w->after_key = 0; return; }
    if (w->need_comma[w->depth]) buf_addc(w->b, ',');
    w->need_comma[w->depth] = 1;
}

static void jw_open(json_w *w, char c)
{
    jw_sep(w);
    if (w->depth >= JSON_MAX_DEPTH) {
        /* a programming error, like an assertion: the output would be
         * unreadable by json_parse anyway */
        fprintf(stderr, "fatal: json writer nested deeper than %d\n", JSON_MAX_DEPTH);
        abort();
    }
    buf_addc(w->b, c);
    w->depth++;
    w->need_comma[w->depth] = 0;
}

static void jw_close(json_w *w, char c)
{
    buf_addc(w->b, c);
    if (w->depth > 0) w->depth--;
    w->after_key = 0;
}

void jw_obj(json_w *w) { jw_open(w, '{'); }
void jw_obj_end(json_w *w) { jw_close(w, '}'); }
void jw_arr(json_w *w) { jw_open(w, '['); }
void jw_arr_end(json_w *w) { jw_close(w, ']'); }

void jw_key(json_w *w, const char *key)
{
    jw_sep(w);
    escape(w->b, key ? key : "", key ? strlen(key) : 0, w->ascii_astral);
    buf_addc(w->b, ':');
    w->after_key = 1;
}

void jw_strn(json_w *w, const char *s, size_t n)
{
    jw_sep(w);
    escape(w->b, s ? s : "", s ? n : 0, w->ascii_astral);
}

void jw_str(json_w *w, const char *s)
{
    if (!s) { jw_null(w); return; }
    jw_strn(w, s, strlen(s));
}

void jw_i64(json_w *w, int64_t v)
{
    jw_sep(w);
    buf_printf(w->b, "%" PRId64, v);
}

void jw_f64(json_w *w, double v)
{
    if (!isfinite(v)) { jw_null(w); return; }
    jw_sep(w);
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        for (char *p = tmp; *p; p++)
            if (*p == ',') *p = '.';   /* a locale with a decimal comma */
        if (prec == 17 || strtod(tmp, NULL) == v) break;
    }
    buf_adds(w->b, tmp);
}

void jw_bool(json_w *w, int v)
{
    jw_sep(w);
    buf_adds(w->b, v ? "true" : "false");
}

void jw_null(json_w *w)
{
    jw_sep(w);
    buf_adds(w->b, "null");
}

void jw_raw(json_w *w, const char *json, size_t n)
{
    jw_sep(w);
    if (!json || n == 0) buf_adds(w->b, "null");
    else buf_add(w->b, json, n);
}

void json_escape(buf_t *b, const char *s, size_t n) { escape(b, s, n, 0); }
void json_escape_astral(buf_t *b, const char *s, size_t n) { escape(b, s, n, 1); }

static void escape(buf_t *b, const char *s, size_t n, int astral)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    buf_reserve(b, n + 2);
    buf_addc(b, '"');
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) { i++; continue; }
        if (c >= 0x80) {
            size_t bad = 1, l = utf8_seq(u + i, n - i, &bad);
            if (l == 4 && astral) {
                uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(u[i + 1] & 0x3F) << 12) |
                              ((uint32_t)(u[i + 2] & 0x3F) << 6) | (uint32_t)(u[i + 3] & 0x3F);
                uint32_t hi = 0xD800 + ((cp - 0x10000) >> 10), lo = 0xDC00 + ((cp - 0x10000) & 0x3FF);
                char e[12] = { '\\', 'u', hex[hi >> 12], hex[(hi >> 8) & 15], hex[(hi >> 4) & 15], hex[hi & 15],
                               '\\', 'u', hex[lo >> 12], hex[(lo >> 8) & 15], hex[(lo >> 4) & 15], hex[lo & 15] };
                buf_add(b, u + run, i - run);
                buf_add(b, e, 12);
                i += 4;
                run = i;
                continue;
            }
            if (l) { i += l; continue; }
            buf_add(b, u + run, i - run);
            buf_add(b, "\xEF\xBF\xBD", 3);
            i += bad;
            run = i;
            continue;
        }
        buf_add(b, u + run, i - run);
        switch (c) {
        case '"': buf_add(b, "\\\"", 2); break;
        case '\\': buf_add(b, "\\\\", 2); break;
        case '\b': buf_add(b, "\\b", 2); break;
        case '\f': buf_add(b, "\\f", 2); break;
        case '\n': buf_add(b, "\\n", 2); break;
        case '\r': buf_add(b, "\\r", 2); break;
        case '\t': buf_add(b, "\\t", 2); break;
        default: {
            char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            buf_add(b, e, 6);
        }
        }
        i++;
        run = i;
    }
    buf_add(b, u + run, i - run);
    buf_addc(b, '"');
}
