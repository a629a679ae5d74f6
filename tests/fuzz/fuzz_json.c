/* fuzz_json: lib/json.c reader and writer. Parses the input (an exact-size
 * copy, not NUL-terminated, so ASan sees any over-read), walks every token
 * with the navigation functions, decodes every string and number, and writes
 * the document back with the jw_* writer; the rewrite must parse again. */
#include "json.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void rewrite(json_doc *d, int t, json_w *w, buf_t *s)
{
    switch (json_type(d, t)) {
    case JSON_OBJ:
        jw_obj(w);
        for (int k = json_first(d, t); k >= 0; k = json_after(d, t, k)) {
            if (json_str(d, k, s) == 0) jw_key(w, buf_str(s));
            else jw_key(w, "?");
            rewrite(d, k + 1, w, s);
        }
        jw_obj_end(w);
        break;
    case JSON_ARR:
        jw_arr(w);
        for (int e = json_first(d, t); e >= 0; e = json_after(d, t, e)) rewrite(d, e, w, s);
        jw_arr_end(w);
        break;
    case JSON_STR:
        if (json_str(d, t, s) == 0) jw_strn(w, s->p ? s->p : "", s->len);
        else jw_null(w);
        break;
    case JSON_NUM: {
        int64_t i;
        double f;
        size_t n;
        const char *raw = json_raw(d, t, &n);
        if (json_i64(d, t, &i) == 0) jw_i64(w, i);
        else if (json_f64(d, t, &f) == 0) jw_f64(w, f);
        else if (raw && json_valid_number(raw, n)) jw_raw(w, raw, n);
        else jw_null(w);
        break;
    }
    case JSON_TRUE:
    case JSON_FALSE: {
        int b = 0;
        json_bool(d, t, &b);
        jw_bool(w, b);
        break;
    }
    default:
        jw_null(w);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *src = malloc(size ? size : 1);
    memcpy(src, data, size);
    json_doc d;
    if (json_parse(&d, src, size) == 0) {
        buf_t s = BUF_INIT, out = BUF_INIT;
        /* every token, directly */
        for (int t = 0; t < d.ntok; t++) {
            size_t n;
            int64_t i;
            double f;
            int b;
            (void)json_raw(&d, t, &n);
            (void)json_next(&d, t);
            (void)json_size(&d, t);
            (void)json_at(&d, t, 0);
            (void)json_at(&d, t, json_size(&d, t) - 1);
            (void)json_get(&d, t, "id");
            (void)json_streq(&d, t, "id");
            if (json_type(&d, t) == JSON_STR) {
                if (json_str(&d, t, &s) == 0) {
                    /* a decoded string is valid UTF-8, and escaping it gives
                     * a JSON string that decodes to the same bytes */
                    const char *sp = s.p ? s.p : "";
                    if (!json_valid_utf8(sp, s.len)) abort();
                    buf_t e = BUF_INIT, back = BUF_INIT;
                    json_escape(&e, sp, s.len);
                    json_doc de;
                    if (json_parse(&de, e.p, e.len) != 0 || json_str(&de, 0, &back) != 0 ||
                        back.len != s.len || (s.len && memcmp(back.p, sp, s.len) != 0))
                        abort();
                    json_free(&de);
                    buf_free(&back);
                    buf_free(&e);
                }
            }
            (void)json_i64(&d, t, &i);
            (void)json_f64(&d, t, &f);
            (void)json_bool(&d, t, &b);
        }
        /* the whole tree through the writer: the result must be valid JSON */
        json_w w;
        jw_init(&w, &out);
        rewrite(&d, 0, &w, &s);
        json_doc d2;
        if (json_parse(&d2, out.p ? out.p : "", out.len) != 0) abort();
        json_free(&d2);
        buf_free(&s);
        buf_free(&out);
    }
    json_free(&d);
    /* the helpers on raw bytes */
    int64_t v;
    (void)json_valid_utf8(src, size);
    (void)json_valid_number(src, size);
    (void)json_parse_i64(src, size, &v);
    buf_t e = BUF_INIT;
    json_escape(&e, src, size);   /* must always give a valid JSON string */
    json_doc d3;
    if (json_parse(&d3, e.p, e.len) != 0 || json_type(&d3, 0) != JSON_STR) abort();
    json_free(&d3);
    buf_free(&e);
    free(src);
    return 0;
}
