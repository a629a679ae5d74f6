/* Unit tests for lib/ddbval.c: DynamoDB attribute values <-> plain JSON. */
#include "t.h"
#include "ddbval.h"

#include <inttypes.h>
#include <stdint.h>

static char last_err[sizeof ((json_doc *)0)->err];

/* Parses s (which must be valid JSON) and runs f on the root; returns f's
 * result and the output (or the error) in *out / last_err. */
typedef int (*conv_fn)(json_doc *, int, buf_t *);

static int conv(conv_fn f, const char *s, buf_t *out)
{
    json_doc d;
    buf_reset(out);
    last_err[0] = 0;
    if (json_parse(&d, s, strlen(s)) < 0) {
        printf("# test input does not parse: %s (%s)\n", s, d.err);
        json_free(&d);
        return -99;
    }
    int r = f(&d, 0, out);
    memcpy(last_err, d.err, sizeof last_err);
    json_free(&d);
    return r;
}

static int to_plain(const char *s, buf_t *out) { return conv(ddb_to_plain, s, out); }
static int from_plain(const char *s, buf_t *out) { return conv(ddb_from_plain, s, out); }

static void to_plain_each_type(void)
{
    static const struct { const char *in, *out; } c[] = {
        { "{\"S\":\"x\"}", "\"x\"" },
        { "{\"S\":\"\"}", "\"\"" },
        { "{\"S\":\"a\\nb \\u00e9 \\ud83d\\ude00 \\\"q\\\"\"}", "\"a\\nb \xC3\xA9 \xF0\x9F\x98\x80 \\\"q\\\"\"" },
        { "{\"N\":\"12.5\"}", "12.5" },
        { "{\"N\":\"-0\"}", "-0" },
        { "{\"N\":\"1E+5\"}", "1E+5" },
        { "{\"N\":\"99999999999999999999999999999999999999\"}", "99999999999999999999999999999999999999" },
        { "{\"BOOL\":true}", "true" },
        { "{\"BOOL\":false}", "false" },
        { "{\"NULL\":true}", "null" },
        { "{\"B\":\"aGVsbG8=\"}", "\"aGVsbG8=\"" },
        { "{\"SS\":[\"a\",\"b\\u0041\"]}", "[\"a\",\"bA\"]" },
        { "{\"NS\":[\"1\",\"-2.5\",\"3e2\"]}", "[1,-2.5,3e2]" },
        { "{\"BS\":[\"AA==\",\"AQ==\"]}", "[\"AA==\",\"AQ==\"]" },
        { "{\"SS\":[]}", "[]" },
        { "{\"M\":{}}", "{}" },
        { "{\"L\":[]}", "[]" },
        { "{\"M\":{\"a\":{\"S\":\"x\"},\"b\":{\"N\":\"1\"}}}", "{\"a\":\"x\",\"b\":1}" },
        { "{\"L\":[{\"S\":\"x\"},{\"N\":\"1\"},{\"NULL\":true},{\"BOOL\":false}]}", "[\"x\",1,null,false]" },
        { " { \"S\" : \"spaced\" } ", "\"spaced\"" },
    };
    buf_t o = BUF_INIT;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        CHECK_INT(to_plain(c[i].in, &o), 0);
        CHECK_STR(buf_str(&o), c[i].out);
    }
    buf_free(&o);
}

static void to_plain_nested(void)
{
    const char *in =
        "{\"M\":{\"job\":{\"M\":{\"id\":{\"S\":\"j1\"},\"due\":{\"N\":\"1700000000000\"},"
        "\"tags\":{\"SS\":[\"x\",\"y\"]},\"steps\":{\"L\":[{\"M\":{\"n\":{\"N\":\"1\"},\"l\":{\"L\":[{\"L\":[]},{\"M\":{}}]}}},"
        "{\"NS\":[\"7\"]}]}}},\"ok\":{\"BOOL\":true}}}";
    const char *want =
        "{\"job\":{\"id\":\"j1\",\"due\":1700000000000,\"tags\":[\"x\",\"y\"],"
        "\"steps\":[{\"n\":1,\"l\":[[],{}]},[7]]},\"ok\":true}";
    buf_t o = BUF_INIT;
    CHECK_INT(to_plain(in, &o), 0);
    CHECK_STR(buf_str(&o), want);
    /* the output is valid JSON */
    json_doc d;
    CHECK_INT(json_parse(&d, o.p, o.len), 0);
    json_free(&d);
    /* appends: previous content is kept */
    json_doc d2;
    CHECK_INT(json_parse(&d2, "{\"N\":\"5\"}", 9), 0);
    buf_reset(&o);
    buf_adds(&o, "x=");
    CHECK_INT(ddb_to_plain(&d2, 0, &o), 0);
    CHECK_STR(buf_str(&o), "x=5");
    json_free(&d2);
    buf_free(&o);
}

static void from_plain_each_type(void)
{
    static const struct { const char *in, *out; } c[] = {
        { "\"x\"", "{\"S\":\"x\"}" },
        { "\"a\\u00e9\\n\\/\"", "{\"S\":\"a\xC3\xA9\\n/\"}" },
        { "12.5", "{\"N\":\"12.5\"}" },
        { "-1e-7", "{\"N\":\"-1e-7\"}" },
        { "123456789012345678901234567890", "{\"N\":\"123456789012345678901234567890\"}" },
        { "true", "{\"BOOL\":true}" },
        { "false", "{\"BOOL\":false}" },
        { "null", "{\"NULL\":true}" },
        { "{}", "{\"M\":{}}" },
        { "[]", "{\"L\":[]}" },
        { "{\"a\":1,\"b\":[\"x\",null,{\"c\":true}]}",
          "{\"M\":{\"a\":{\"N\":\"1\"},\"b\":{\"L\":[{\"S\":\"x\"},{\"NULL\":true},{\"M\":{\"c\":{\"BOOL\":true}}}]}}}" },
        { "[[[]]]", "{\"L\":[{\"L\":[{\"L\":[]}]}]}" },
        { "{\"k\\\"ey\":\"v\"}", "{\"M\":{\"k\\\"ey\":{\"S\":\"v\"}}}" },
    };
    buf_t o = BUF_INIT;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        CHECK_INT(from_plain(c[i].in, &o), 0);
        CHECK_STR(buf_str(&o), c[i].out);
    }
    /* undecodable strings are refused, and nothing is left in out */
    buf_reset(&o);
    buf_adds(&o, "keep");
    json_doc d;
    const char *lone = "{\"a\":[\"ok\",\"\\ud800\"]}";
    CHECK_INT(json_parse(&d, lone, strlen(lone)), 0);
    CHECK_INT(ddb_from_plain(&d, 0, &o), -1);
    CHECK_STR(d.err, "invalid \\u escape (lone surrogate)");
    CHECK_STR(buf_str(&o), "keep");
    json_free(&d);
    CHECK_INT(from_plain("\"\xC0\x80\"", &o), -1);
    CHECK_STR(last_err, "invalid UTF-8 in string");
    buf_free(&o);
}

static void round_trips(void)
{
    static const char *plain[] = {
        "\"x\"", "1", "-2.5e10", "true", "false", "null", "{}", "[]",
        "{\"id\":\"j1\",\"due\":1700000000000,\"payload\":{\"a\":[1,\"two\",null,true,{\"b\":[]}]},\"s\":\"tab\\tq\\\"\"}",
        "[[1,[2,[3,[4]]]],{\"x\":{\"y\":{\"z\":\"\xF0\x9F\x98\x80\"}}}]",
    };
    buf_t a = BUF_INIT, b = BUF_INIT;
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        CHECK_INT(from_plain(plain[i], &a), 0);
        CHECK_INT(to_plain(buf_str(&a), &b), 0);
        CHECK_STR(buf_str(&b), plain[i]);
    }
    /* and the other way: attribute value -> plain -> attribute value */
    const char *av = "{\"M\":{\"a\":{\"L\":[{\"N\":\"1\"},{\"S\":\"s\"},{\"BOOL\":true},{\"NULL\":true},{\"M\":{}}]}}}";
    CHECK_INT(to_plain(av, &a), 0);
    CHECK_INT(from_plain(buf_str(&a), &b), 0);
    CHECK_STR(buf_str(&b), av);
    buf_free(&a);
    buf_free(&b);
}

static void invalid_numbers(void)
{
    static const char *bad[] = {
        "abc", "", " 1", "1 ", "01", "1.", ".5", "+1", "-", "NaN", "Infinity", "0x1F", "1,5", "1e",
    };
    buf_t o = BUF_INIT;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char in[64], want[96];
        snprintf(in, sizeof in, "{\"N\":\"%s\"}", bad[i]);
        snprintf(want, sizeof want, "invalid number \"%s\" in N value", bad[i]);
        CHECK_INT(to_plain(in, &o), -1);
        CHECK_STR(last_err, want);
        CHECK_INT(o.len, 0);
    }
    CHECK_INT(to_plain("{\"N\":12}", &o), -1);
    CHECK_STR(last_err, "N value must be a string");
    CHECK_INT(to_plain("{\"NS\":[\"1\",\"x1\"]}", &o), -1);
    CHECK_STR(last_err, "invalid number \"x1\" in N value");
    CHECK_INT(to_plain("{\"NS\":[1]}", &o), -1);
    CHECK_STR(last_err, "NS elements must be strings");
    /* a long bad value is cut in the message */
    char in[300];
    snprintf(in, sizeof in, "{\"N\":\"%0200d\"}", 7);
    CHECK_INT(to_plain(in, &o), -1);
    CHECK(strstr(last_err, "invalid number \"0000") == last_err && strstr(last_err, "...\" in N value"));
    /* nested: the whole conversion fails and out is untouched */
    buf_reset(&o);
    buf_adds(&o, "prefix");
    json_doc d;
    const char *s = "{\"L\":[{\"N\":\"1\"},{\"M\":{\"x\":{\"N\":\"1.2.3\"}}}]}";
    CHECK_INT(json_parse(&d, s, strlen(s)), 0);
    CHECK_INT(ddb_to_plain(&d, 0, &o), -1);
    CHECK_STR(d.err, "invalid number \"1.2.3\" in N value");
    CHECK_STR(buf_str(&o), "prefix");
    CHECK_INT(o.len, 6);
    json_free(&d);
    buf_free(&o);
}

static void bad_attribute_values(void)
{
    static const struct { const char *in, *err; } c[] = {
        { "{\"X\":\"1\"}", "unknown attribute value type 'X'" },
        { "{\"s\":\"x\"}", "unknown attribute value type 's'" },
        { "{\"SSS\":[]}", "unknown attribute value type 'SSS'" },
        { "{}", "attribute value must have exactly one type key, got 0" },
        { "{\"S\":\"a\",\"N\":\"1\"}", "attribute value must have exactly one type key, got 2" },
        { "\"x\"", "attribute value must be an object, got a scalar" },
        { "[]", "attribute value must be an object, got an array" },
        { "{\"S\":1}", "S value must be a string" },
        { "{\"B\":null}", "B value must be a string" },
        { "{\"BOOL\":\"true\"}", "BOOL value must be true or false" },
        { "{\"NULL\":false}", "NULL value must be true" },
        { "{\"M\":[]}", "M value must be an object" },
        { "{\"L\":{}}", "L value must be an array" },
        { "{\"SS\":\"a\"}", "SS value must be an array" },
        { "{\"SS\":[1]}", "SS elements must be strings" },
        { "{\"L\":[{\"S\":\"ok\"},\"bare\"]}", "attribute value must be an object, got a scalar" },
        { "{\"M\":{\"a\":{\"Q\":1}}}", "unknown attribute value type 'Q'" },
        { "{\"S\":\"\\udc00\"}", "invalid \\u escape (lone surrogate)" },
        { "{\"S\":\"\xED\xA0\x80\"}", "invalid UTF-8 in string" },
        { "{\"M\":{\"\xFF\":{\"S\":\"x\"}}}", "invalid UTF-8 in string" },
    };
    buf_t o = BUF_INIT;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        CHECK_INT(to_plain(c[i].in, &o), -1);
        CHECK_STR(last_err, c[i].err);
        CHECK_INT(o.len, 0);
    }
    /* a missing token */
    json_doc d;
    CHECK_INT(json_parse(&d, "{}", 2), 0);
    CHECK_INT(ddb_to_plain(&d, -1, &o), -1);
    CHECK_INT(ddb_from_plain(&d, -1, &o), -1);
    CHECK_INT(ddb_item_to_plain(&d, 5, &o), -1);
    json_free(&d);
    buf_free(&o);
}

static void item_to_plain(void)
{
    const char *item =
        "{\"id\":{\"S\":\"j1\"},\"due\":{\"N\":\"1700000000123\"},\"on\":{\"BOOL\":true},"
        "\"gone\":{\"NULL\":true},\"p\":{\"M\":{\"k\":{\"L\":[{\"N\":\"1\"}]}}},\"e\\u00e9\":{\"SS\":[\"a\"]}}";
    buf_t o = BUF_INIT;
    json_doc d;
    CHECK_INT(json_parse(&d, item, strlen(item)), 0);
    CHECK_INT(ddb_item_to_plain(&d, 0, &o), 0);
    CHECK_STR(buf_str(&o), "{\"id\":\"j1\",\"due\":1700000000123,\"on\":true,\"gone\":null,\"p\":{\"k\":[1]},\"e\xC3\xA9\":[\"a\"]}");
    json_free(&d);

    CHECK_INT(json_parse(&d, "{}", 2), 0);
    buf_reset(&o);
    CHECK_INT(ddb_item_to_plain(&d, 0, &o), 0);
    CHECK_STR(buf_str(&o), "{}");
    json_free(&d);

    /* errors name the attribute; out is rolled back */
    const char *bad = "{\"id\":{\"S\":\"j1\"},\"due\":{\"N\":\"soon\"}}";
    CHECK_INT(json_parse(&d, bad, strlen(bad)), 0);
    buf_reset(&o);
    buf_adds(&o, "[");
    CHECK_INT(ddb_item_to_plain(&d, 0, &o), -1);
    CHECK_STR(d.err, "attribute 'due': invalid number \"soon\" in N value");
    CHECK_STR(buf_str(&o), "[");
    json_free(&d);

    CHECK_INT(json_parse(&d, "{\"a\":{\"Z\":1}}", 13), 0);
    CHECK_INT(ddb_item_to_plain(&d, 0, &o), -1);
    CHECK_STR(d.err, "attribute 'a': unknown attribute value type 'Z'");
    json_free(&d);

    CHECK_INT(json_parse(&d, "[1]", 3), 0);
    CHECK_INT(ddb_item_to_plain(&d, 0, &o), -1);
    CHECK_STR(d.err, "item is not an object");
    json_free(&d);
    buf_free(&o);
}

static void getters(void)
{
    const char *item =
        "{\"id\":{\"S\":\"j\\u00e91\"},\"due\":{\"N\":\"1700000000123\"},\"neg\":{\"N\":\"-42\"},"
        "\"on\":{\"BOOL\":true},\"off\":{\"BOOL\":false},\"frac\":{\"N\":\"1.5\"},"
        "\"huge\":{\"N\":\"9223372036854775808\"},\"min\":{\"N\":\"-9223372036854775808\"},"
        "\"nul\":{\"NULL\":true},\"two\":{\"S\":\"a\",\"N\":\"1\"},\"raw\":\"x\",\"badn\":{\"N\":\"abc\"},"
        "\"numn\":{\"N\":5},\"lone\":{\"S\":\"\\ud800\"}}";
    json_doc d;
    CHECK_INT(json_parse(&d, item, strlen(item)), 0);
    buf_t s = BUF_INIT;
    int64_t v = 0;
    int b = -1;

    CHECK_INT(ddb_get_s(&d, 0, "id", &s), 0);
    CHECK_STR(buf_str(&s), "j\xC3\xA9" "1");
    CHECK_INT(ddb_get_i64(&d, 0, "due", &v), 0);
    CHECK(v == 1700000000123LL);
    CHECK_INT(ddb_get_i64(&d, 0, "neg", &v), 0);
    CHECK_INT(v, -42);
    CHECK_INT(ddb_get_i64(&d, 0, "min", &v), 0);
    CHECK(v == INT64_MIN);
    CHECK_INT(ddb_get_bool(&d, 0, "on", &b), 0);
    CHECK_INT(b, 1);
    CHECK_INT(ddb_get_bool(&d, 0, "off", &b), 0);
    CHECK_INT(b, 0);
    CHECK(ddb_has(&d, 0, "nul"));
    CHECK(ddb_has(&d, 0, "id"));
    CHECK(!ddb_has(&d, 0, "nope"));
    CHECK(!ddb_has(&d, -1, "id"));

    /* missing */
    CHECK_INT(ddb_get_i64(&d, 0, "nope", &v), -1);
    CHECK_STR(d.err, "attribute 'nope' missing");
    CHECK_INT(ddb_get_s(&d, 0, "nope", &s), -1);
    CHECK_STR(d.err, "attribute 'nope' missing");
    CHECK_INT(ddb_get_bool(&d, 0, "nope", &b), -1);
    CHECK_STR(d.err, "attribute 'nope' missing");
    /* wrong type */
    CHECK_INT(ddb_get_i64(&d, 0, "id", &v), -1);
    CHECK_STR(d.err, "attribute 'id' is not a number");
    CHECK_INT(ddb_get_s(&d, 0, "due", &s), -1);
    CHECK_STR(d.err, "attribute 'due' is not a string");
    CHECK_INT(ddb_get_bool(&d, 0, "nul", &b), -1);
    CHECK_STR(d.err, "attribute 'nul' is not a boolean");
    CHECK_INT(ddb_get_i64(&d, 0, "on", &v), -1);
    CHECK_STR(d.err, "attribute 'on' is not a number");
    /* bad values */
    CHECK_INT(ddb_get_i64(&d, 0, "frac", &v), -1);
    CHECK_STR(d.err, "attribute 'frac' is not an integer");
    CHECK_INT(ddb_get_i64(&d, 0, "huge", &v), -1);
    CHECK_STR(d.err, "attribute 'huge': number out of range");
    CHECK_INT(ddb_get_i64(&d, 0, "badn", &v), -1);
    CHECK_STR(d.err, "attribute 'badn' is not an integer");
    CHECK_INT(ddb_get_i64(&d, 0, "numn", &v), -1);
    CHECK_STR(d.err, "attribute 'numn' is not an integer");
    CHECK_INT(ddb_get_s(&d, 0, "two", &s), -1);
    CHECK_STR(d.err, "attribute 'two' is not a valid attribute value");
    CHECK_INT(ddb_get_s(&d, 0, "raw", &s), -1);
    CHECK_STR(d.err, "attribute 'raw' is not a valid attribute value");
    CHECK_INT(ddb_get_s(&d, 0, "lone", &s), -1);
    CHECK_STR(d.err, "attribute 'lone': invalid \\u escape (lone surrogate)");
    /* not an item */
    CHECK_INT(ddb_get_s(&d, 1, "id", &s), -1);
    CHECK_STR(d.err, "item is not an object");
    CHECK_INT(ddb_get_s(&d, -1, "id", &s), -1);
    /* a name with a newline stays one line in the message */
    CHECK_INT(ddb_get_s(&d, 0, "a\nb", &s), -1);
    CHECK_STR(d.err, "attribute 'a?b' missing");
    json_free(&d);
    buf_free(&s);
}

static void writer_helpers(void)
{
    buf_t b = BUF_INIT;
    json_w w;
    jw_init(&w, &b);
    jw_obj(&w);
    jw_key(&w, "Item");
    jw_obj(&w);
    ddbw_s(&w, "id", "job\n\"1\"");
    ddbw_sn(&w, "part", "abcdef", 3);
    ddbw_i64(&w, "due", 1700000000123LL);
    ddbw_i64(&w, "min", INT64_MIN);
    ddbw_bool(&w, "on", 1);
    ddbw_bool(&w, "off", 0);
    jw_obj_end(&w);
    jw_key(&w, "Vals");
    jw_arr(&w);
    ddbv_s(&w, "x");
    ddbv_i64(&w, -5);
    jw_arr_end(&w);
    jw_obj_end(&w);
    CHECK_STR(buf_str(&b),
        "{\"Item\":{\"id\":{\"S\":\"job\\n\\\"1\\\"\"},\"part\":{\"S\":\"abc\"},\"due\":{\"N\":\"1700000000123\"},"
        "\"min\":{\"N\":\"-9223372036854775808\"},\"on\":{\"BOOL\":true},\"off\":{\"BOOL\":false}},"
        "\"Vals\":[{\"S\":\"x\"},{\"N\":\"-5\"}]}");

    /* read it back with the getters */
    json_doc d;
    CHECK_INT(json_parse(&d, b.p, b.len), 0);
    int item = json_get(&d, 0, "Item");
    buf_t s = BUF_INIT;
    int64_t v = 0;
    int on = -1;
    CHECK_INT(ddb_get_s(&d, item, "id", &s), 0);
    CHECK_STR(buf_str(&s), "job\n\"1\"");
    CHECK_INT(ddb_get_s(&d, item, "part", &s), 0);
    CHECK_STR(buf_str(&s), "abc");
    CHECK_INT(ddb_get_i64(&d, item, "due", &v), 0);
    CHECK(v == 1700000000123LL);
    CHECK_INT(ddb_get_i64(&d, item, "min", &v), 0);
    CHECK(v == INT64_MIN);
    CHECK_INT(ddb_get_bool(&d, item, "on", &on), 0);
    CHECK_INT(on, 1);
    CHECK_INT(ddb_get_bool(&d, item, "off", &on), 0);
    CHECK_INT(on, 0);
    buf_reset(&s);
    CHECK_INT(ddb_item_to_plain(&d, item, &s), 0);
    CHECK_STR(buf_str(&s), "{\"id\":\"job\\n\\\"1\\\"\",\"part\":\"abc\",\"due\":1700000000123,"
                           "\"min\":-9223372036854775808,\"on\":true,\"off\":false}");
    json_free(&d);

    /* invalid UTF-8 written through the helpers still gives valid JSON */
    buf_reset(&b);
    jw_init(&w, &b);
    jw_obj(&w);
    ddbw_s(&w, "bad\xFF", "v\xC0\x80");
    jw_obj_end(&w);
    CHECK_INT(json_parse(&d, b.p, b.len), 0);
    CHECK_INT(ddb_get_s(&d, 0, "bad\xEF\xBF\xBD", &s), 0);
    CHECK_STR(buf_str(&s), "v\xEF\xBF\xBD\xEF\xBF\xBD");
    json_free(&d);
    buf_free(&s);
    buf_free(&b);
}

T_MAIN(
    T(to_plain_each_type),
    T(to_plain_nested),
    T(from_plain_each_type),
    T(round_trips),
    T(invalid_numbers),
    T(bad_attribute_values),
    T(item_to_plain),
    T(getters),
    T(writer_helpers),
)
