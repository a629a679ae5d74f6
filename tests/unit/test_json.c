/* Unit tests for lib/json.c: the strict reader, value decoding, the writer. */
#include "t.h"
#include "json.h"
#include "sched.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>

/* Every parse goes through an exact-size heap copy with no terminating NUL,
 * so AddressSanitizer catches any read past the end. */
typedef struct {
    json_doc d;
    char *mem;
} pdoc;

static int pn(pdoc *p, const char *s, size_t n)
{
    p->mem = malloc(n ? n : 1);
    if (n) memcpy(p->mem, s, n);
    return json_parse(&p->d, p->mem, n);
}

static int ps(pdoc *p, const char *s) { return pn(p, s, strlen(s)); }

static void pfree(pdoc *p)
{
    json_free(&p->d);
    free(p->mem);
    p->mem = NULL;
}

/* Parse result of s (0 / -1); its error message into a static buffer. */
static char last_err[sizeof ((json_doc *)0)->err];

static int parse_n(const char *s, size_t n)
{
    pdoc p;
    int r = pn(&p, s, n);
    memcpy(last_err, p.d.err, sizeof last_err);
    pfree(&p);
    return r;
}

static int parse(const char *s) { return parse_n(s, strlen(s)); }

/* Decodes the root string of the JSON text s into out: json_str's result. */
static int decode(const char *s, buf_t *out)
{
    pdoc p;
    int r = ps(&p, s);
    if (r == 0) r = json_str(&p.d, 0, out);
    memcpy(last_err, p.d.err, sizeof last_err);
    pfree(&p);
    return r;
}

/* ------------------------------------------------------------- structure */

static void scalars(void)
{
    static const struct { const char *s; int type; } c[] = {
        { "true", JSON_TRUE }, { "false", JSON_FALSE }, { "null", JSON_NULL },
        { "0", JSON_NUM }, { "-12.5e+3", JSON_NUM }, { "\"x\"", JSON_STR },
        { " \t\r\n 7 \n", JSON_NUM }, { "{}", JSON_OBJ }, { "[]", JSON_ARR },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        pdoc p;
        CHECK_INT(ps(&p, c[i].s), 0);
        CHECK_INT(p.d.ntok, 1);
        CHECK_INT(json_type(&p.d, 0), c[i].type);
        CHECK_INT(json_size(&p.d, 0), 0);
        pfree(&p);
    }
}

static const char sample[] =
    "{\"id\":\"job-1\",\"due\":1700000000123,\"tags\":[\"a\",\"b\\n\",{\"k\":null}],"
    "\"ok\":true,\"no\":false,\"f\":-0.5e-2,\"empty\":{},\"e2\":[],\"u\":\"caf\\u00e9 \\ud83d\\ude00\"}";

static void tokens_and_sizes(void)
{
    pdoc p;
    CHECK_INT(ps(&p, sample), 0);
    json_doc *d = &p.d;
    CHECK_INT(json_type(d, 0), JSON_OBJ);
    CHECK_INT(json_size(d, 0), 9);
    CHECK_INT(json_type(d, 1), JSON_STR);       /* key "id" */
    CHECK_INT(json_size(d, 1), 0);
    CHECK(json_streq(d, 1, "id"));
    int tags = json_get(d, 0, "tags");
    CHECK_INT(json_type(d, tags), JSON_ARR);
    CHECK_INT(json_size(d, tags), 3);
    CHECK_INT(json_type(d, json_get(d, json_at(d, tags, 2), "k")), JSON_NULL);
    CHECK_INT(d->tok[0].start, 0);
    CHECK_INT(d->tok[0].end, (int)strlen(sample));
    /* string tokens: start after the quote, end at the closing quote */
    CHECK_INT(d->tok[1].start, 2);
    CHECK_INT(d->tok[1].end, 4);
    pfree(&p);
}

static void navigation(void)
{
    pdoc p;
    CHECK_INT(ps(&p, sample), 0);
    json_doc *d = &p.d;
    int64_t v = 0;
    CHECK_INT(json_i64(d, json_get(d, 0, "due"), &v), 0);
    CHECK_INT(v, 1700000000123LL);
    CHECK_INT(json_get(d, 0, "missing"), -1);
    CHECK_INT(json_get(d, 0, "i"), -1);          /* no prefix matches */
    CHECK_INT(json_get(d, 0, "idx"), -1);
    CHECK_INT(json_get(d, 0, NULL), -1);
    CHECK_INT(json_get(d, -1, "id"), -1);
    CHECK_INT(json_get(d, json_get(d, 0, "tags"), "a"), -1);   /* not an object */

    /* chaining through -1 */
    CHECK_INT(json_type(d, json_get(d, json_get(d, 0, "nope"), "x")), JSON_NONE);
    CHECK_INT(json_at(d, json_get(d, 0, "nope"), 0), -1);
    CHECK_INT(json_size(d, -1), 0);
    CHECK_INT(json_first(d, -1), -1);
    CHECK_INT(json_after(d, -1, 1), -1);
    CHECK_INT(json_next(d, -1), -1);
    CHECK_INT(json_type(d, d->ntok), JSON_NONE);
    CHECK_INT(json_type(d, -7), JSON_NONE);

    int tags = json_get(d, 0, "tags");
    CHECK(json_streq(d, json_at(d, tags, 0), "a"));
    CHECK(json_streq(d, json_at(d, tags, 1), "b\n"));
    CHECK_INT(json_type(d, json_at(d, tags, 2)), JSON_OBJ);
    CHECK_INT(json_at(d, tags, 3), -1);
    CHECK_INT(json_at(d, tags, -1), -1);
    CHECK_INT(json_at(d, 0, 0), -1);            /* object, not array */

    /* iterate the object's keys in order */
    const char *keys[] = { "id", "due", "tags", "ok", "no", "f", "empty", "e2", "u" };
    int n = 0;
    for (int k = json_first(d, 0); k >= 0; k = json_after(d, 0, k), n++) {
        CHECK(n < 9);
        if (n < 9) CHECK(json_streq(d, k, keys[n]));
        CHECK_INT(json_get(d, 0, keys[n < 9 ? n : 0]), k + 1);
    }
    CHECK_INT(n, 9);
    /* iterate the array */
    n = 0;
    for (int e = json_first(d, tags); e >= 0; e = json_after(d, tags, e)) {
        CHECK_INT(e, json_at(d, tags, n));
        n++;
    }
    CHECK_INT(n, 3);
    /* empty containers */
    CHECK_INT(json_first(d, json_get(d, 0, "empty")), -1);
    CHECK_INT(json_first(d, json_get(d, 0, "e2")), -1);
    CHECK_INT(json_first(d, json_get(d, 0, "id")), -1);  /* not a container */

    /* json_next skips whole subtrees; a key's subtree is the key */
    CHECK_INT(json_next(d, tags), json_get(d, 0, "ok") - 1);
    CHECK_INT(json_next(d, 1), 2);
    CHECK_INT(json_next(d, 0), -1);
    CHECK_INT(json_next(d, d->ntok - 1), -1);

    /* json_raw */
    size_t rn;
    const char *raw = json_raw(d, tags, &rn);
    CHECK(raw && rn == strlen("[\"a\",\"b\\n\",{\"k\":null}]") && memcmp(raw, "[\"a\",\"b\\n\",{\"k\":null}]", rn) == 0);
    raw = json_raw(d, json_get(d, 0, "id"), &rn);
    CHECK(raw && rn == 7 && memcmp(raw, "\"job-1\"", 7) == 0);
    raw = json_raw(d, json_get(d, 0, "f"), &rn);
    CHECK(raw && rn == 7 && memcmp(raw, "-0.5e-2", 7) == 0);
    CHECK(json_raw(d, -1, &rn) == NULL && rn == 0);
    pfree(&p);
}

static void nested_navigation(void)
{
    pdoc p;
    CHECK_INT(ps(&p, "[[1,[2,[3]]],{\"a\":{\"b\":[4,{\"c\":5}]},\"d\":6},7]"), 0);
    json_doc *d = &p.d;
    int64_t v = 0;
    CHECK_INT(json_size(d, 0), 3);
    CHECK_INT(json_i64(d, json_at(d, json_at(d, json_at(d, json_at(d, 0, 0), 1), 1), 0), &v), 0);
    CHECK_INT(v, 3);
    CHECK_INT(json_i64(d, json_get(d, json_at(d, json_get(d, json_get(d, json_at(d, 0, 1), "a"), "b"), 1), "c"), &v), 0);
    CHECK_INT(v, 5);
    CHECK_INT(json_i64(d, json_get(d, json_at(d, 0, 1), "d"), &v), 0);
    CHECK_INT(v, 6);
    CHECK_INT(json_i64(d, json_at(d, 0, 2), &v), 0);
    CHECK_INT(v, 7);
    /* key lookup with an escaped key */
    pfree(&p);
    CHECK_INT(ps(&p, "{\"\\u0061b\":1,\"a\\\"b\":2}"), 0);
    CHECK_INT(json_get(&p.d, 0, "ab"), 2);
    CHECK_INT(json_get(&p.d, 0, "a\"b"), 4);
    pfree(&p);
}

/* --------------------------------------------------------------- strings */

static void escapes_all(void)
{
    buf_t b = BUF_INIT;
    CHECK_INT(decode("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", &b), 0);
    CHECK_INT(b.len, 8);
    CHECK(memcmp(b.p, "\"\\/\b\f\n\r\t", 8) == 0);
    CHECK_INT(decode("\"a\\nb\\tc\"", &b), 0);
    CHECK_STR(buf_str(&b), "a\nb\tc");
    CHECK_INT(decode("\"\"", &b), 0);
    CHECK_INT(b.len, 0);
    CHECK_STR(buf_str(&b), "");
    CHECK_INT(decode("\"plain ascii ~\x7f\"", &b), 0);   /* DEL is allowed raw */
    CHECK_STR(buf_str(&b), "plain ascii ~\x7f");
    buf_free(&b);
}

static void unicode_escapes(void)
{
    buf_t b = BUF_INIT;
    CHECK_INT(decode("\"\\u0041\\u00e9\\u20AC\\uFFFF\"", &b), 0);
    CHECK_INT(b.len, 1 + 2 + 3 + 3);
    CHECK(memcmp(b.p, "A\xC3\xA9\xE2\x82\xAC\xEF\xBF\xBF", b.len) == 0);
    CHECK_INT(decode("\"\\u007f\\u0080\\u07FF\\u0800\"", &b), 0);
    CHECK(b.len == 8 && memcmp(b.p, "\x7f\xC2\x80\xDF\xBF\xE0\xA0\x80", 8) == 0);
    /* \u0000: a real NUL byte, counted in len */
    CHECK_INT(decode("\"a\\u0000b\"", &b), 0);
    CHECK_INT(b.len, 3);
    CHECK(b.p[0] == 'a' && b.p[1] == '\0' && b.p[2] == 'b');
    CHECK_INT(decode("\"\\u0000\"", &b), 0);
    CHECK_INT(b.len, 1);
    CHECK_INT(decode("\"\\u001f\\u0001\"", &b), 0);
    CHECK(b.len == 2 && b.p[0] == 0x1f && b.p[1] == 0x01);
    buf_free(&b);
}

static void surrogate_pairs(void)
{
    buf_t b = BUF_INIT;
    CHECK_INT(decode("\"\\ud83d\\ude00\"", &b), 0);
    CHECK(b.len == 4 && memcmp(b.p, "\xF0\x9F\x98\x80", 4) == 0);
    CHECK_INT(decode("\"x\\uD834\\uDD1Ey\"", &b), 0);
    CHECK(b.len == 6 && memcmp(b.p, "x\xF0\x9D\x84\x9Ey", 6) == 0);
    CHECK_INT(decode("\"\\ud800\\udc00\\udbff\\udfff\"", &b), 0);   /* U+10000, U+10FFFF */
    CHECK(b.len == 8 && memcmp(b.p, "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF", 8) == 0);
    buf_free(&b);
}

static void lone_surrogates(void)
{
    static const char *bad[] = {
        "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83dx\"", "\"\\ud83d\\u0041\"",
        "\"\\ude00\\ud83d\"", "\"\\ud83d\\ud83d\"", "\"a\\udfffb\"", "\"\\ud83d\\n\"",
        "\"\\ud83d\\\\ude00\"",
    };
    buf_t b = BUF_INIT;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(parse(bad[i]), 0);                /* well-formed JSON text */
        CHECK_INT(decode(bad[i], &b), -1);
        CHECK_STR(last_err, "invalid \\u escape (lone surrogate)");
        CHECK_INT(b.len, 0);
    }
    /* json_streq / json_get never match an undecodable string */
    pdoc p;
    CHECK_INT(ps(&p, "{\"\\ud83d\":1}"), 0);
    CHECK_INT(json_get(&p.d, 0, "\xED\xA0\xBD"), -1);
    pfree(&p);
    buf_free(&b);
}

static void invalid_escapes(void)
{
    static const char *bad[] = {
        "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\'\"", "\"\\U0041\"", "\"\\0\"",
        "\"\\ \"", "\"\\u\"", "\"\\", "\"\\u00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(parse(bad[i]), -1);
        CHECK(strncmp(last_err, "invalid JSON at byte", 20) == 0 || strcmp(last_err, "truncated JSON") == 0);
    }
    CHECK_INT(parse("\"\\x\""), -1);
    CHECK_STR(last_err, "invalid JSON at byte 2: invalid escape");
}

static void control_chars_refused(void)
{
    for (int c = 0; c < 0x20; c++) {
        char s[4] = { '"', (char)c, '"', 0 };
        CHECK_INT(parse_n(s, 3), -1);
        CHECK_STR(last_err, "invalid JSON at byte 1: control character in string");
    }
    CHECK_INT(parse("[\"ok\",\"tab\there\"]"), -1);
    CHECK_INT(parse("\"\x7f\""), 0);
    CHECK_INT(parse("\" \""), 0);
}

static void invalid_utf8(void)
{
    static const char *bad[] = {
        "\xC0\x80",            /* overlong NUL */
        "\xC1\xBF",            /* overlong */
        "\xE0\x80\x80",        /* overlong 3-byte */
        "\xE0\x9F\xBF",
        "\xF0\x80\x80\x80",    /* overlong 4-byte */
        "\xF0\x8F\xBF\xBF",
        "\xED\xA0\x80",        /* UTF-16 surrogate D800 */
        "\xED\xBF\xBF",
        "\xF4\x90\x80\x80",    /* > U+10FFFF */
        "\xF5\x80\x80\x80", "\xF8\x88\x80\x80\x80", "\xFE", "\xFF",
        "\x80", "\xBF",        /* lone continuation */
        "\xE2\x82",            /* truncated */
        "\xF0\x9F\x98",
        "\xC3",
        "a\xC3(b",             /* bad continuation */
        "\xE2\x28\xA1",
    };
    buf_t b = BUF_INIT;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char s[32];
        snprintf(s, sizeof s, "\"%s\"", bad[i]);
        CHECK(!json_valid_utf8(bad[i], strlen(bad[i])));
        CHECK_INT(parse(s), 0);
        CHECK_INT(decode(s, &b), -1);
        CHECK_STR(last_err, "invalid UTF-8 in string");
        /* a key with it never matches */
        char o[48];
        snprintf(o, sizeof o, "{\"%s\":1}", bad[i]);
        pdoc p;
        CHECK_INT(ps(&p, o), 0);
        CHECK_INT(json_get(&p.d, 0, bad[i]), -1);
        pfree(&p);
    }
    /* valid multi-byte text, at the edges of each range */
    static const char *good[] = {
        "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80", "\xEF\xBF\xBF",
        "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF", "caf\xC3\xA9 \xF0\x9F\x98\x80",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char s[32];
        snprintf(s, sizeof s, "\"%s\"", good[i]);
        CHECK(json_valid_utf8(good[i], strlen(good[i])));
        CHECK_INT(decode(s, &b), 0);
        CHECK_STR(buf_str(&b), good[i]);
    }
    CHECK(json_valid_utf8("", 0));
    CHECK(json_valid_utf8("\0", 1));
    buf_free(&b);
}

static void streq_decodes(void)
{
    pdoc p;
    CHECK_INT(ps(&p, "[\"a\\u0000b\",\"caf\\u00e9\",\"x\\/y\",\"plain\",1]"), 0);
    json_doc *d = &p.d;
    CHECK(!json_streq(d, 1, "a"));
    CHECK(!json_streq(d, 1, "ab"));
    CHECK(json_streq(d, 2, "caf\xC3\xA9"));
    CHECK(!json_streq(d, 2, "caf\\u00e9"));
    CHECK(json_streq(d, 3, "x/y"));
    CHECK(json_streq(d, 4, "plain"));
    CHECK(!json_streq(d, 4, "plai"));
    CHECK(!json_streq(d, 4, "plainx"));
    CHECK(!json_streq(d, 4, NULL));
    CHECK(!json_streq(d, 5, "1"));       /* not a string */
    CHECK(!json_streq(d, -1, ""));
    pfree(&p);
}

/* --------------------------------------------------------------- numbers */

static void numbers_valid(void)
{
    static const char *ok[] = {
        "0", "-0", "1", "-1", "10", "1234567890", "0.5", "-0.5", "1.25e10", "1E10",
        "1e+10", "1e-10", "0e0", "-0.0E-0", "123.456e789",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        CHECK_INT(parse(ok[i]), 0);
        CHECK(json_valid_number(ok[i], strlen(ok[i])));
    }
    pdoc p;
    CHECK_INT(ps(&p, "[9223372036854775807,-9223372036854775808,9223372036854775808,"
                     "-9223372036854775809,1.5,1e3,-0,0.1,1e999,99999999999999999999999.5,2.5e-3]"), 0);
    json_doc *d = &p.d;
    int64_t v = 0;
    double f = 0;
    CHECK_INT(json_i64(d, json_at(d, 0, 0), &v), 0);
    CHECK(v == INT64_MAX);
    CHECK_INT(json_i64(d, json_at(d, 0, 1), &v), 0);
    CHECK(v == INT64_MIN);
    CHECK_INT(json_i64(d, json_at(d, 0, 2), &v), -1);
    CHECK_STR(d->err, "number out of range");
    CHECK_INT(json_i64(d, json_at(d, 0, 3), &v), -1);
    CHECK_STR(d->err, "number out of range");
    CHECK_INT(json_i64(d, json_at(d, 0, 4), &v), -1);
    CHECK_STR(d->err, "expected an integer, got 1.5");
    CHECK_INT(json_i64(d, json_at(d, 0, 5), &v), -1);
    CHECK_INT(json_i64(d, json_at(d, 0, 6), &v), 0);
    CHECK_INT(v, 0);
    CHECK_INT(json_i64(d, json_at(d, 0, 9), &v), -1);    /* not an integer: syntax wins */
    CHECK_STR(d->err, "expected an integer, got 99999999999999999999999.5");
    CHECK_INT(json_f64(d, json_at(d, 0, 4), &f), 0);
    CHECK(f == 1.5);
    CHECK_INT(json_f64(d, json_at(d, 0, 5), &f), 0);
    CHECK(f == 1000.0);
    CHECK_INT(json_f64(d, json_at(d, 0, 7), &f), 0);
    CHECK(f == 0.1);
    CHECK_INT(json_f64(d, json_at(d, 0, 0), &f), 0);
    CHECK(f == 9223372036854775807.0);
    CHECK_INT(json_f64(d, json_at(d, 0, 8), &f), -1);
    CHECK_STR(d->err, "number out of range");
    CHECK_INT(json_f64(d, json_at(d, 0, 9), &f), 0);
    CHECK_INT(json_f64(d, json_at(d, 0, 10), &f), 0);
    CHECK(f == 2.5e-3);
    pfree(&p);
    /* long number text (heap path in json_f64) */
    char big[400];
    memset(big, '1', 300);
    strcpy(big + 300, ".5");
    CHECK_INT(ps(&p, big), 0);
    CHECK_INT(json_f64(&p.d, 0, &f), 0);
    CHECK(f > 1.1e299 && f < 1.2e299);
    pfree(&p);
}

static void numbers_invalid(void)
{
    static const char *bad[] = {
        "01", "-01", "00", "1.", ".5", "+1", "-", "NaN", "nan", "Infinity", "-Infinity", "inf",
        "1e", "1e+", "1E-", "0x10", "1.e3", "--1", "- 1", "1.5.2", "1e5e5", "[01]", "[1.]", "[.5]",
        "[+1]", "[-]", "{\"a\":01}", "{\"a\":-}", "1_000", "١",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(parse(bad[i]), -1);
        CHECK(!json_valid_number(bad[i], strlen(bad[i])));
    }
    CHECK(!json_valid_number("", 0));
    CHECK(!json_valid_number(" 1", 2));
    CHECK(!json_valid_number("1 ", 2));
    CHECK_INT(parse("[1.]"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 3: invalid number");
    CHECK_INT(parse("01"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 1: unexpected data after the value");

    int64_t v;
    CHECK_INT(json_parse_i64("12", 2, &v), 0);
    CHECK_INT(v, 12);
    CHECK_INT(json_parse_i64("012", 3, &v), -1);
    CHECK_INT(json_parse_i64("1.0", 3, &v), -1);
    CHECK_INT(json_parse_i64("-", 1, &v), -1);
    CHECK_INT(json_parse_i64("", 0, &v), -1);
    CHECK_INT(json_parse_i64("+1", 2, &v), -1);
    CHECK_INT(json_parse_i64("99999999999999999999", 20, &v), -2);
    CHECK_INT(json_parse_i64("123", 2, &v), 0);   /* length-bounded */
    CHECK_INT(v, 12);
}

/* ----------------------------------------------------- strictness, errors */

static void jsmn_accepted_invalid(void)
{
    static const char *bad[] = {
        "{\"a\":}", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "[1 2]", "{\"a\":1 \"b\":2}", "{1:2}",
        "{\"a\"}", "{\"a\":1:2}", "[,1]", "{,}", "[,]", "[1,,2]", "{\"a\"::1}", "{:1}",
        "abc", "tru", "nul", "True", "NULL", "truex", "nullnull", "[abc]", "{\"a\":abc}",
        "[\"a\":1]", "[}", "{]", "]", "}", ":", ",", "[1]]", "{\"a\":1}}", "[[1]", "{{}}",
        "{[]:1}", "{\"a\":[1}", "[\"a\" \"b\"]", "{\"a\":1,,\"b\":2}", "[true false]",
        "'a'", "[1,2,]", "{\"a\":\"b\",}", "[\x01]", "\xEF\xBB\xBF{}",
        "/* c */ 1", "1 // c", "[1\t,\v2]", "\f1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i]) != -1) {
            printf("# accepted: %s\n", bad[i]);
            CHECK(0);
        }
        CHECK(last_err[0] != '\0');
    }
    /* embedded NUL bytes, given explicitly */
    CHECK_INT(parse_n("{}\0", 3), -1);
    CHECK_INT(parse_n("\"a\0b\"", 5), -1);
    CHECK_INT(parse_n("[1,\0]", 5), -1);
    CHECK_INT(parse_n("\0", 1), -1);

    /* exact messages */
    CHECK_INT(parse("[1,]"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 3: unexpected character");
    CHECK_INT(parse("{\"a\":}"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 5: unexpected character");
    CHECK_INT(parse("{\"a\" 1}"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 5: expected ':'");
    CHECK_INT(parse("{1:2}"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 1: expected a string key");
    CHECK_INT(parse("[1 2]"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 3: expected ',' or ']'");
    CHECK_INT(parse("{\"a\":1 \"b\":2}"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 7: expected ',' or '}'");
}

static void whitespace_and_concatenation(void)
{
    CHECK_INT(parse(" \t\n\r{ \"a\" \n:\t[ 1 , 2 ] } \r\n"), 0);
    static const char *bad[] = {
        "{} {}", "{}{}", "1 2", "[]]", "{}x", "\"a\"\"b\"", "null null", "[] []", "1,2",
        "{\"a\":1},", "true false", "0 0", "\"a\" 1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT(parse(bad[i]), -1);
    CHECK_INT(parse("{} {}"), -1);
    CHECK_STR(last_err, "invalid JSON at byte 3: unexpected data after the value");
    CHECK_INT(parse(""), -1);
    CHECK_STR(last_err, "empty JSON document");
    CHECK_INT(parse(" \n\t "), -1);
    CHECK_STR(last_err, "empty JSON document");
    json_doc d;
    CHECK_INT(json_parse(&d, NULL, 0), -1);
    CHECK(d.err[0] != '\0');
    json_free(&d);
}

static void truncated_prefixes(void)
{
    size_t n = strlen(sample);
    for (size_t k = 0; k < n; k++) {
        pdoc p;
        int r = pn(&p, sample, k);
        CHECK_INT(r, -1);
        CHECK(p.d.err[0] != '\0' && strchr(p.d.err, '\n') == NULL);
        CHECK(p.d.tok == NULL && p.d.ntok == 0);
        CHECK_INT(json_type(&p.d, 0), JSON_NONE);   /* a failed doc navigates as empty */
        pfree(&p);
    }
    CHECK_INT(parse_n(sample, n), 0);
    CHECK_INT(parse("[1"), -1);
    CHECK_STR(last_err, "truncated JSON");
    CHECK_INT(parse("{\"a\""), -1);
    CHECK_STR(last_err, "truncated JSON");
    CHECK_INT(parse("\"abc"), -1);
    CHECK_STR(last_err, "truncated JSON");
    CHECK_INT(parse("\"a\\"), -1);
    CHECK_STR(last_err, "truncated JSON");
    CHECK_INT(parse("\"\\u12"), -1);
    CHECK_STR(last_err, "truncated JSON");
    CHECK_INT(parse("tr"), -1);
    CHECK_STR(last_err, "truncated JSON");
    CHECK_INT(parse("-"), -1);
    CHECK_STR(last_err, "truncated JSON");
}

static void depth_limit(void)
{
    enum { N = 1000000 };
    char *s = malloc(2 * N + 2);
    /* exactly JSON_MAX_DEPTH: accepted */
    for (int i = 0; i < JSON_MAX_DEPTH; i++) { s[i] = '['; s[JSON_MAX_DEPTH + i] = ']'; }
    pdoc p;
    CHECK_INT(pn(&p, s, 2 * JSON_MAX_DEPTH), 0);
    CHECK_INT(p.d.ntok, JSON_MAX_DEPTH);
    CHECK_INT(json_size(&p.d, JSON_MAX_DEPTH - 2), 1);
    CHECK_INT(json_size(&p.d, JSON_MAX_DEPTH - 1), 0);
    pfree(&p);
    /* one more: refused */
    for (int i = 0; i <= JSON_MAX_DEPTH; i++) { s[i] = '['; s[JSON_MAX_DEPTH + 1 + i] = ']'; }
    CHECK_INT(parse_n(s, 2 * (JSON_MAX_DEPTH + 1)), -1);
    CHECK_STR(last_err, "nesting deeper than 64");
    /* objects count too */
    buf_t b = BUF_INIT;
    for (int i = 0; i < JSON_MAX_DEPTH; i++) buf_adds(&b, "{\"a\":");
    buf_adds(&b, "1");
    for (int i = 0; i < JSON_MAX_DEPTH; i++) buf_adds(&b, "}");
    CHECK_INT(parse(buf_str(&b)), 0);
    buf_reset(&b);
    for (int i = 0; i < JSON_MAX_DEPTH; i++) buf_adds(&b, "{\"a\":");
    buf_adds(&b, "[]");
    for (int i = 0; i < JSON_MAX_DEPTH; i++) buf_adds(&b, "}");
    CHECK_INT(parse(buf_str(&b)), -1);
    CHECK_STR(last_err, "nesting deeper than 64");
    buf_free(&b);
    /* 1,000,000 '[' (unclosed, then closed) */
    memset(s, '[', N);
    CHECK_INT(parse_n(s, N), -1);
    CHECK_STR(last_err, "nesting deeper than 64");
    memset(s + N, ']', N);
    CHECK_INT(parse_n(s, 2 * N), -1);
    CHECK_STR(last_err, "nesting deeper than 64");
    memset(s, '{', N);
    CHECK_INT(parse_n(s, N), -1);
    free(s);
}

/* A tiny deterministic PRNG for the fuzz-ish tests. */
static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* Touch every token of a parsed doc through the API. */
static void walk_all(json_doc *d)
{
    buf_t b = BUF_INIT;
    for (int t = 0; t < d->ntok; t++) {
        int64_t v;
        double f;
        int bo;
        size_t n;
        (void)json_str(d, t, &b);
        (void)json_i64(d, t, &v);
        (void)json_f64(d, t, &f);
        (void)json_bool(d, t, &bo);
        (void)json_raw(d, t, &n);
        (void)json_next(d, t);
        for (int k = json_first(d, t); k >= 0; k = json_after(d, t, k)) (void)json_type(d, k);
        (void)json_get(d, t, "a");
        (void)json_at(d, t, 1);
    }
    buf_free(&b);
}

static void garbage_and_mutations(void)
{
    /* random bytes from an alphabet rich in JSON syntax */
    static const char alpha[] = "{}[]\",:\\ntrufalse0123456789-+.eE \t\n\x01\x80\xC3\xA9\xFF";
    char s[64];
    int accepted = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = rng() % sizeof s;
        for (size_t k = 0; k < n; k++) s[k] = alpha[rng() % (sizeof alpha - 1)];
        pdoc p;
        if (pn(&p, s, n) == 0) { accepted++; walk_all(&p.d); }
        pfree(&p);
    }
    /* random single/double byte mutations of a valid document */
    size_t sn = strlen(sample);
    char *m = malloc(sn);
    int still_ok = 0;
    for (int i = 0; i < 20000; i++) {
        memcpy(m, sample, sn);
        int edits = 1 + (int)(rng() % 2);
        for (int e = 0; e < edits; e++) m[rng() % sn] = (char)(rng() & 0xff);
        pdoc p;
        if (pn(&p, m, sn) == 0) { still_ok++; walk_all(&p.d); }
        pfree(&p);
    }
    free(m);
    printf("# garbage accepted %d/20000, mutations accepted %d/20000\n", accepted, still_ok);
    CHECK(still_ok > 0 && still_ok < 20000);
}

static void huge_inputs(void)
{
    /* a 5 MB string value */
    size_t n = 5u << 20;
    char *s = malloc(n + 16);
    memcpy(s, "{\"big\":\"", 8);
    for (size_t i = 0; i < n; i++) s[8 + i] = (char)('a' + i % 26);
    memcpy(s + 8 + n, "\\n\"}", 4);
    pdoc p;
    CHECK_INT(pn(&p, s, n + 12), 0);
    buf_t b = BUF_INIT;
    CHECK_INT(json_str(&p.d, json_get(&p.d, 0, "big"), &b), 0);
    CHECK(b.len == n + 1 && b.p[n] == '\n' && b.p[0] == 'a' && b.p[n - 1] == (char)('a' + (n - 1) % 26));
    pfree(&p);
    free(s);

    /* a 100k-element array of mixed values (token array grows many times) */
    buf_reset(&b);
    buf_addc(&b, '[');
    for (int i = 0; i < 100000; i++) {
        if (i) buf_addc(&b, ',');
        if (i % 3 == 0) buf_printf(&b, "%d", i);
        else if (i % 3 == 1) buf_printf(&b, "\"s%d\"", i);
        else buf_printf(&b, "{\"i\":%d,\"l\":[%d]}", i, i);
    }
    buf_addc(&b, ']');
    CHECK_INT(ps(&p, buf_str(&b)), 0);
    json_doc *d = &p.d;
    CHECK_INT(json_size(d, 0), 100000);
    int64_t sum = 0, v = 0;
    int count = 0;
    for (int e = json_first(d, 0); e >= 0; e = json_after(d, 0, e), count++) {
        int t = json_type(d, e) == JSON_OBJ ? json_get(d, e, "i") : e;
        if (json_type(d, t) == JSON_NUM && json_i64(d, t, &v) == 0) sum += v;
        else if (json_type(d, t) == JSON_STR) sum += atoi(d->src + d->tok[t].start + 1);
    }
    CHECK_INT(count, 100000);
    CHECK(sum == (int64_t)99999 * 100000 / 2);
    CHECK_INT(json_i64(d, json_at(d, json_get(d, json_at(d, 0, 99998), "l"), 0), &v), 0);
    CHECK_INT(v, 99998);
    CHECK(json_streq(d, json_at(d, 0, 99997), "s99997"));
    pfree(&p);

    /* a 200k-key object */
    buf_reset(&b);
    buf_addc(&b, '{');
    for (int i = 0; i < 200000; i++) buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i, i);
    buf_addc(&b, '}');
    CHECK_INT(ps(&p, buf_str(&b)), 0);
    CHECK_INT(json_size(&p.d, 0), 200000);
    CHECK_INT(json_i64(&p.d, json_get(&p.d, 0, "k199999"), &v), 0);
    CHECK_INT(v, 199999);
    pfree(&p);
    buf_free(&b);
}

static void token_growth_boundaries(void)
{
    /* token counts around the initial capacity and its doublings */
    static const int counts[] = { 62, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025 };
    buf_t b = BUF_INIT;
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        buf_reset(&b);
        buf_addc(&b, '[');
        for (int i = 0; i < counts[c] - 1; i++) buf_printf(&b, "%s%d", i ? "," : "", i);
        buf_addc(&b, ']');
        pdoc p;
        CHECK_INT(ps(&p, buf_str(&b)), 0);
        CHECK_INT(p.d.ntok, counts[c]);
        CHECK_INT(json_size(&p.d, 0), counts[c] - 1);
        int64_t v = -1;
        CHECK_INT(json_i64(&p.d, json_at(&p.d, 0, counts[c] - 2), &v), 0);
        CHECK_INT(v, counts[c] - 2);
        pfree(&p);
    }
    buf_free(&b);
}

static void type_errors_and_failed_docs(void)
{
    pdoc p;
    CHECK_INT(ps(&p, "[1,\"s\",true,null,{}]"), 0);
    json_doc *d = &p.d;
    buf_t b = BUF_INIT;
    int64_t v;
    double f;
    int bo = -1;
    buf_adds(&b, "junk");
    CHECK_INT(json_str(d, 1, &b), -1);
    CHECK_STR(d->err, "expected a string, got a number");
    CHECK_INT(b.len, 0);                              /* reset even on failure */
    CHECK_INT(json_i64(d, 2, &v), -1);
    CHECK_STR(d->err, "expected a number, got a string");
    CHECK_INT(json_f64(d, 4, &f), -1);
    CHECK_STR(d->err, "expected a number, got null");
    CHECK_INT(json_bool(d, 5, &bo), -1);
    CHECK_STR(d->err, "expected a boolean, got an object");
    CHECK_INT(json_bool(d, 3, &bo), 0);
    CHECK_INT(bo, 1);
    CHECK_INT(json_str(d, -1, &b), -1);
    CHECK_STR(d->err, "expected a string, got no value");
    CHECK_INT(json_i64(d, 99, &v), -1);
    pfree(&p);

    /* zero-initialised and failed docs are safe everywhere */
    json_doc z;
    memset(&z, 0, sizeof z);
    CHECK_INT(json_type(&z, 0), JSON_NONE);
    CHECK_INT(json_get(&z, 0, "a"), -1);
    CHECK_INT(json_str(&z, 0, &b), -1);
    json_free(&z);
    json_free(&z);
    CHECK_INT(ps(&p, "[1,"), -1);
    CHECK_INT(json_first(&p.d, 0), -1);
    CHECK_INT(json_next(&p.d, 0), -1);
    pfree(&p);
    /* parse into an uninitialised (garbage) doc, and reuse after free */
    json_doc g;
    memset(&g, 0xA5, sizeof g);
    CHECK_INT(json_parse(&g, "[1]", 3), 0);
    CHECK_INT(g.ntok, 2);
    json_free(&g);
    CHECK_INT(json_parse(&g, "{\"a\":2}", 7), 0);
    CHECK_INT(json_i64(&g, json_get(&g, 0, "a"), &v), 0);
    CHECK_INT(v, 2);
    json_free(&g);
    buf_free(&b);
}

/* ---------------------------------------------------------------- writer */

static void writer_basic(void)
{
    buf_t b = BUF_INIT;
    json_w w;
    jw_init(&w, &b);
    jw_obj(&w);
    jw_key(&w, "a"); jw_i64(&w, 1);
    jw_key(&w, "b"); jw_arr(&w); jw_str(&w, "x"); jw_bool(&w, 1); jw_bool(&w, 0); jw_null(&w);
    jw_arr(&w); jw_arr_end(&w); jw_obj(&w); jw_obj_end(&w); jw_arr_end(&w);
    jw_key(&w, "c"); jw_obj(&w); jw_key(&w, "d"); jw_raw(&w, "{\"e\":[1]}", 9); jw_obj_end(&w);
    jw_key(&w, "n"); jw_i64(&w, INT64_MIN);
    jw_key(&w, "s"); jw_strn(&w, "abcdef", 3);
    jw_key(&w, "z"); jw_str(&w, NULL);
    jw_obj_end(&w);
    CHECK_STR(buf_str(&b), "{\"a\":1,\"b\":[\"x\",true,false,null,[],{}],\"c\":{\"d\":{\"e\":[1]}},"
                           "\"n\":-9223372036854775808,\"s\":\"abc\",\"z\":null}");
    CHECK_INT(w.depth, 0);
    CHECK_INT(parse(buf_str(&b)), 0);
    /* top-level array of scalars */
    buf_reset(&b);
    jw_init(&w, &b);
    jw_arr(&w); jw_i64(&w, 1); jw_i64(&w, -2); jw_f64(&w, 0.5); jw_arr_end(&w);
    CHECK_STR(buf_str(&b), "[1,-2,0.5]");
    /* writing 64 levels is fine */
    buf_reset(&b);
    jw_init(&w, &b);
    for (int i = 0; i < JSON_MAX_DEPTH; i++) jw_arr(&w);
    for (int i = 0; i < JSON_MAX_DEPTH; i++) jw_arr_end(&w);
    CHECK_INT(b.len, 2 * JSON_MAX_DEPTH);
    CHECK_INT(parse(buf_str(&b)), 0);
    buf_free(&b);
}

static void writer_escape(void)
{
    buf_t b = BUF_INIT;
    json_escape(&b, "\"\\/\b\f\n\r\t", 8);
    CHECK_STR(buf_str(&b), "\"\\\"\\\\/\\b\\f\\n\\r\\t\"");
    buf_reset(&b);
    json_escape(&b, "\x01\x1f\x00\x7f", 4);
    CHECK_STR(buf_str(&b), "\"\\u0001\\u001f\\u0000\x7f\"");
    buf_reset(&b);
    json_escape(&b, "caf\xC3\xA9 \xF0\x9F\x98\x80 \xE2\x82\xAC", 14);
    CHECK_STR(buf_str(&b), "\"caf\xC3\xA9 \xF0\x9F\x98\x80 \xE2\x82\xAC\"");
    buf_reset(&b);
    json_escape(&b, "", 0);
    CHECK_STR(buf_str(&b), "\"\"");
    /* every control character round-trips */
    for (int c = 0; c < 0x20; c++) {
        char in = (char)c;
        buf_reset(&b);
        json_escape(&b, &in, 1);
        buf_t o = BUF_INIT;
        CHECK_INT(decode(buf_str(&b), &o), 0);
        CHECK(o.len == 1 && o.p[0] == in);
        buf_free(&o);
    }
    buf_free(&b);
}

#define FFFD "\xEF\xBF\xBD"

static void writer_invalid_utf8(void)
{
    static const struct { const char *in; const char *out; } c[] = {
        { "a\xFF" "b", "\"a" FFFD "b\"" },
        { "\xC0\x80", "\"" FFFD FFFD "\"" },            /* C0 never valid, 80 lone */
        { "\xE2\x82", "\"" FFFD "\"" },                 /* one truncated sequence */
        { "\xE2\x82x", "\"" FFFD "x\"" },
        { "\xED\xA0\x80", "\"" FFFD FFFD FFFD "\"" },   /* surrogate: ED then bad */
        { "\xF4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"" },
        { "\xF0\x9F\x98", "\"" FFFD "\"" },
        { "\x80\x80", "\"" FFFD FFFD "\"" },
        { "ok\xC3\xA9\xC3", "\"ok\xC3\xA9" FFFD "\"" },
    };
    buf_t b = BUF_INIT, o = BUF_INIT;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        buf_reset(&b);
        json_escape(&b, c[i].in, strlen(c[i].in));
        CHECK_STR(buf_str(&b), c[i].out);
        CHECK(json_valid_utf8(b.p, b.len));
        CHECK_INT(decode(buf_str(&b), &o), 0);
    }
    /* all 256 byte values, in random runs: always valid, parseable JSON */
    for (int r = 0; r < 2000; r++) {
        unsigned char in[24];
        size_t n = rng() % sizeof in;
        for (size_t k = 0; k < n; k++) in[k] = (unsigned char)rng();
        buf_reset(&b);
        json_escape(&b, (const char *)in, n);
        CHECK(json_valid_utf8(b.p, b.len));
        CHECK_INT(decode(buf_str(&b), &o), 0);
        if (json_valid_utf8((const char *)in, n)) CHECK(o.len == n && memcmp(o.p ? o.p : "", in, n) == 0);
    }
    buf_free(&b);
    buf_free(&o);
}

static void writer_f64(void)
{
    static const struct { double v; const char *s; } c[] = {
        { 0.1, "0.1" }, { 1.5, "1.5" }, { -2, "-2" }, { 0, "0" }, { 1e21, "1e+21" },
        { 1.0 / 3, "0.3333333333333333" }, { 123456789012, "123456789012" },
    };
    buf_t b = BUF_INIT;
    json_w w;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        buf_reset(&b);
        jw_init(&w, &b);
        jw_f64(&w, c[i].v);
        CHECK_STR(buf_str(&b), c[i].s);
    }
    buf_reset(&b);
    jw_init(&w, &b);
    jw_arr(&w);
    jw_f64(&w, NAN); jw_f64(&w, INFINITY); jw_f64(&w, -INFINITY);
    jw_arr_end(&w);
    CHECK_STR(buf_str(&b), "[null,null,null]");
    /* round trip exactly */
    double vals[] = { 0.1, 1e300, -1e-300, 5e-324, 1.7976931348623157e308, -0.0, 3.141592653589793, 2.0 / 3 };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        buf_reset(&b);
        jw_init(&w, &b);
        jw_f64(&w, vals[i]);
        pdoc p;
        double f = 1;
        CHECK_INT(ps(&p, buf_str(&b)), 0);
        CHECK_INT(json_f64(&p.d, 0, &f), 0);
        CHECK(f == vals[i] && signbit(f) == signbit(vals[i]));
        pfree(&p);
    }
    buf_free(&b);
}

static void writer_round_trip(void)
{
    /* strings with every byte value 1..255 and embedded NULs */
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)i;
    const char *ctl = "line1\nline2\ttab \"q\" \\ \x01\x1f end";
    buf_t b = BUF_INIT;
    json_w w;
    jw_init(&w, &b);
    jw_obj(&w);
    jw_key(&w, "ctl"); jw_str(&w, ctl);
    jw_key(&w, "bytes"); jw_strn(&w, all, 256);
    jw_key(&w, "utf8"); jw_str(&w, "caf\xC3\xA9 \xF0\x9F\x98\x80");
    jw_key(&w, "key\n\"odd\""); jw_i64(&w, 42);
    jw_key(&w, "max"); jw_i64(&w, INT64_MAX);
    jw_key(&w, "min"); jw_i64(&w, INT64_MIN);
    jw_key(&w, "f"); jw_f64(&w, -12.375);
    jw_key(&w, "t"); jw_bool(&w, 7);
    jw_key(&w, "n"); jw_null(&w);
    jw_key(&w, "l"); jw_arr(&w); jw_str(&w, ""); jw_obj(&w); jw_key(&w, ""); jw_i64(&w, 0); jw_obj_end(&w); jw_arr_end(&w);
    jw_obj_end(&w);

    pdoc p;
    CHECK_INT(ps(&p, buf_str(&b)), 0);
    json_doc *d = &p.d;
    buf_t s = BUF_INIT;
    int64_t v = 0;
    double f = 0;
    int bo = 0;
    CHECK_INT(json_str(d, json_get(d, 0, "ctl"), &s), 0);
    CHECK_STR(buf_str(&s), ctl);
    CHECK_INT(json_str(d, json_get(d, 0, "bytes"), &s), 0);
    /* bytes 0..127 intact, 128..255 (all invalid alone) each became U+FFFD */
    CHECK_INT(s.len, 128 + 128 * 3);
    CHECK(memcmp(s.p, all, 128) == 0);
    int allfffd = 1;
    for (int i = 0; i < 128; i++) if (memcmp(s.p + 128 + 3 * i, FFFD, 3) != 0) allfffd = 0;
    CHECK(allfffd);
    CHECK_INT(json_str(d, json_get(d, 0, "utf8"), &s), 0);
    CHECK_STR(buf_str(&s), "caf\xC3\xA9 \xF0\x9F\x98\x80");
    CHECK_INT(json_i64(d, json_get(d, 0, "key\n\"odd\""), &v), 0);
    CHECK_INT(v, 42);
    CHECK_INT(json_i64(d, json_get(d, 0, "max"), &v), 0);
    CHECK(v == INT64_MAX);
    CHECK_INT(json_i64(d, json_get(d, 0, "min"), &v), 0);
    CHECK(v == INT64_MIN);
    CHECK_INT(json_f64(d, json_get(d, 0, "f"), &f), 0);
    CHECK(f == -12.375);
    CHECK_INT(json_bool(d, json_get(d, 0, "t"), &bo), 0);
    CHECK_INT(bo, 1);
    CHECK_INT(json_type(d, json_get(d, 0, "n")), JSON_NULL);
    int l = json_get(d, 0, "l");
    CHECK(json_streq(d, json_at(d, l, 0), ""));
    CHECK_INT(json_i64(d, json_get(d, json_at(d, l, 1), ""), &v), 0);
    CHECK_INT(v, 0);
    pfree(&p);
    buf_free(&s);
    buf_free(&b);
}

static void error_is_one_line(void)
{
    json_doc d;
    memset(&d, 0, sizeof d);
    json_seterr(&d, "a\nb\tc\x7f%s", "\r\n");
    CHECK_STR(d.err, "a?b?c???");
    char longname[400];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    json_seterr(&d, "%s", longname);
    CHECK_INT(strlen(d.err), sizeof d.err - 1);
}

/* Issue 10: characters above U+FFFF (emoji) leave the wire form (the SQS
 * body) as \uXXXX surrogate pairs, so the body is ASCII for them (fauxqs
 * refuses them in SQS bodies, AWS accepts them), and the reader gives back
 * the very same UTF-8 bytes. */
static void astral_escaped_as_pairs(void)
{
    buf_t b = BUF_INIT, o = BUF_INIT;
    json_escape_astral(&b, "caf\xC3\xA9 \xF0\x9F\x98\x80 \xE2\x82\xAC", 14);
    CHECK_STR(buf_str(&b), "\"caf\xC3\xA9 \\ud83d\\ude00 \xE2\x82\xAC\"");
    /* the boundaries: U+10000, U+10FFFF, U+1D11E; U+FFFF and U+FFFD stay raw */
    buf_reset(&b);
    json_escape_astral(&b, "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF\xF0\x9D\x84\x9E\xEF\xBF\xBF\xEF\xBF\xBD", 18);
    CHECK_STR(buf_str(&b), "\"\\ud800\\udc00\\udbff\\udfff\\ud834\\udd1e\xEF\xBF\xBF\xEF\xBF\xBD\"");
    /* invalid UTF-8 is still replaced, control characters still escaped */
    buf_reset(&b);
    json_escape_astral(&b, "\xF0\x9F\x98\n", 4);
    CHECK_STR(buf_str(&b), "\"\xEF\xBF\xBD\\n\"");
    /* every astral code point in steps decodes back to its own bytes */
    for (uint32_t cp = 0x10000; cp <= 0x10FFFF; cp += 0x3FF) {
        char in[6] = {(char)(0xF0 | (cp >> 18)), (char)(0x80 | ((cp >> 12) & 0x3F)),
                      (char)(0x80 | ((cp >> 6) & 0x3F)), (char)(0x80 | (cp & 0x3F)), 'x', 0};
        buf_reset(&b);
        json_escape_astral(&b, in, 5);
        for (size_t i = 0; i < b.len; i++) CHECK((unsigned char)b.p[i] < 0x80);
        json_doc d;
        CHECK_INT(json_parse(&d, b.p, b.len), 0);
        CHECK_INT(json_str(&d, 0, &o), 0);
        CHECK(o.len == 5 && memcmp(o.p, in, 5) == 0);
        json_free(&d);
    }
    /* the writer: only with ascii_astral; plain json_escape keeps them raw */
    json_w w;
    buf_reset(&b);
    jw_init(&w, &b);
    w.ascii_astral = 1;
    jw_obj(&w);
    jw_key(&w, "k\xF0\x9F\x98\x80");
    jw_str(&w, "\xF0\x9F\x98\x80");
    jw_obj_end(&w);
    CHECK_STR(buf_str(&b), "{\"k\\ud83d\\ude00\":\"\\ud83d\\ude00\"}");
    buf_reset(&b);
    jw_init(&w, &b);
    jw_str(&w, "\xF0\x9F\x98\x80");
    CHECK_STR(buf_str(&b), "\"\xF0\x9F\x98\x80\"");
    buf_free(&b);
    buf_free(&o);
}

/* The wire form (the SQS body) of a payload and attribute with emoji: no
 * byte of a 4-byte UTF-8 sequence in it, and read back byte-identical. */
static void wire_astral_round_trip(void)
{
    const char *payload = "hi \xF0\x9F\x98\x80\xF0\x9F\x8E\x89 \xC3\xA9\x01";
    sched_wire w, back;
    sched_wire_init(&w);
    sched_wire_init(&back);
    w.r.id = strdup("emoji-1");
    w.r.due = 1795269787250LL;
    w.r.topic = strdup("arn:aws:sns:us-east-1:000000000000:t");
    sched_set_payload(&w.r, payload, strlen(payload));
    sched_attr_add(&w.r, "k", "v\xF0\x9F\x98\x80");
    memset(w.r.chash, 'a', sizeof w.r.chash - 1);
    buf_t b = BUF_INIT;
    sched_wire_write(&b, &w);
    for (size_t i = 0; i < b.len; i++) CHECK((unsigned char)b.p[i] < 0xF0);
    CHECK(strstr(buf_str(&b), "hi \\ud83d\\ude00\\ud83c\\udf89 \xC3\xA9\\u0001") != NULL);
    char err[200] = "";
    CHECK_INT(sched_wire_read(b.p, b.len, &back, err, sizeof err), 0);
    CHECK(back.r.psize == strlen(payload) && memcmp(back.r.payload, payload, strlen(payload)) == 0);
    CHECK(back.r.nattrs == 1 && !strcmp(back.r.attrs[0].value, "v\xF0\x9F\x98\x80"));
    buf_free(&b);
    sched_wire_free(&w);
    sched_wire_free(&back);
}

T_MAIN(
    T(scalars),
    T(tokens_and_sizes),
    T(navigation),
    T(nested_navigation),
    T(escapes_all),
    T(unicode_escapes),
    T(surrogate_pairs),
    T(lone_surrogates),
    T(invalid_escapes),
    T(control_chars_refused),
    T(invalid_utf8),
    T(streq_decodes),
    T(numbers_valid),
    T(numbers_invalid),
    T(jsmn_accepted_invalid),
    T(whitespace_and_concatenation),
    T(truncated_prefixes),
    T(depth_limit),
    T(garbage_and_mutations),
    T(huge_inputs),
    T(token_growth_boundaries),
    T(type_errors_and_failed_docs),
    T(writer_basic),
    T(writer_escape),
    T(writer_invalid_utf8),
    T(writer_f64),
    T(writer_round_trip),
    T(error_is_one_line),
    T(astral_escaped_as_pairs),
    T(wire_astral_round_trip))
