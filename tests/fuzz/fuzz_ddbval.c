/* fuzz_ddbval: lib/ddbval.c. The input is parsed as JSON; every token is
 * decoded as a DynamoDB attribute value and as an item, and encoded from
 * plain JSON; whatever a conversion produces must be valid JSON, and a
 * value converted to an attribute value and back must convert again. */
#include "ddbval.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must_parse(const buf_t *b)
{
    json_doc d;
    if (json_parse(&d, b->p ? b->p : "", b->len) != 0) abort();
    json_free(&d);
}

/* Structural equality of two plain JSON values: same types, keys in the same
 * order, equal decoded strings, numbers with the same text. */
static int same(json_doc *a, int ta, json_doc *b, int tb)
{
    int ty = json_type(a, ta);
    if (ty != json_type(b, tb)) return 0;
    if (ty == JSON_OBJ || ty == JSON_ARR) {
        if (json_size(a, ta) != json_size(b, tb)) return 0;
        int ka = json_first(a, ta), kb = json_first(b, tb);
        for (; ka >= 0 && kb >= 0; ka = json_after(a, ta, ka), kb = json_after(b, tb, kb)) {
            if (ty == JSON_OBJ) {
                if (!same(a, ka, b, kb) || !same(a, ka + 1, b, kb + 1)) return 0;
            } else if (!same(a, ka, b, kb)) {
                return 0;
            }
        }
        return ka < 0 && kb < 0;
    }
    if (ty == JSON_STR) {
        buf_t x = BUF_INIT, y = BUF_INIT;
        int ok = json_str(a, ta, &x) == 0 && json_str(b, tb, &y) == 0 && x.len == y.len &&
                 (x.len == 0 || memcmp(x.p, y.p, x.len) == 0);
        buf_free(&x);
        buf_free(&y);
        return ok;
    }
    size_t na, nb;
    const char *ra = json_raw(a, ta, &na), *rb = json_raw(b, tb, &nb);
    return na == nb && memcmp(ra, rb, na) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *src = malloc(size ? size : 1);
    memcpy(src, data, size);
    json_doc d;
    if (json_parse(&d, src, size) == 0) {
        buf_t out = BUF_INIT, s = BUF_INIT;
        int64_t i;
        int b;
        for (int t = 0; t < d.ntok; t++) {
            buf_reset(&out);
            if (ddb_to_plain(&d, t, &out) == 0) must_parse(&out);
            buf_reset(&out);
            if (ddb_item_to_plain(&d, t, &out) == 0) must_parse(&out);
            buf_reset(&out);
            if (ddb_from_plain(&d, t, &out) == 0) {
                must_parse(&out);
                /* and back: an attribute value we wrote must decode */
                json_doc d2;
                if (json_parse(&d2, out.p, out.len) != 0) abort();
                buf_t back = BUF_INIT;
                if (ddb_to_plain(&d2, 0, &back) != 0) abort();
                /* plain -> attribute value -> plain gives the same value back */
                json_doc d3;
                if (json_parse(&d3, back.p, back.len) != 0) abort();
                if (!same(&d, t, &d3, 0)) abort();
                json_free(&d3);
                buf_free(&back);
                json_free(&d2);
            }
            if (json_type(&d, t) == JSON_OBJ) {
                (void)ddb_get_s(&d, t, "id", &s);
                (void)ddb_get_i64(&d, t, "due", &i);
                (void)ddb_get_bool(&d, t, "b", &b);
                (void)ddb_has(&d, t, "id");
            }
        }
        buf_free(&out);
        buf_free(&s);
    }
    json_free(&d);
    free(src);
    return 0;
}
