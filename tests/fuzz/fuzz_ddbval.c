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
                must_parse(&back);
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
