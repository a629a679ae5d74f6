/* json: a strict JSON reader on top of jsmn, and a writer that always
 * produces valid JSON.
 *
 * Reader: json_parse() tokenises one whole document (growing jsmn's token
 * array as needed) and then validates what jsmn lets through (jsmn is not a
 * validator: it accepts {"a":}, bare words, trailing commas, ...). Exactly
 * one value per document; surrounding whitespace is allowed; anything else
 * (a second value, garbage) is an error. Nesting deeper than JSON_MAX_DEPTH
 * is refused. Strings are returned raw by jsmn; json_str() decodes every
 * escape (\" \\ \/ \b \f \n \r \t \uXXXX with surrogate pairs) and refuses
 * invalid UTF-8, lone surrogates and control characters.
 *
 * Errors: every function returning -1 leaves a one-line, human-readable
 * reason in doc->err (e.g. "truncated JSON", "invalid JSON at byte 12",
 * "invalid UTF-8 in string", "nesting deeper than 64").
 *
 * Writer: jw_* append to a buf_t and track commas. Strings are escaped so the
 * output is valid JSON whatever the input bytes: invalid UTF-8 sequences
 * become U+FFFD (use json_valid_utf8() first where that must be refused). */
#ifndef DELAYER_JSON_H
#define DELAYER_JSON_H
#include <stddef.h>
#include <stdint.h>
#include "buf.h"

#define JSON_MAX_DEPTH 64

enum json_type { JSON_NONE = 0, JSON_OBJ, JSON_ARR, JSON_STR, JSON_NUM, JSON_TRUE, JSON_FALSE, JSON_NULL };

typedef struct {
    int type;     /* enum json_type */
    int start;    /* byte offset of the value in src (for strings: after the quote) */
    int end;      /* byte offset one past the value (for strings: the closing quote) */
    int size;     /* objects: number of keys; arrays: number of elements; else 0
                   * (an object key is a JSON_STR token with size 0; its value
                   * is the next token) */
} json_tok;

typedef struct {
    const char *src;
    size_t len;
    json_tok *tok;
    int ntok;
    int cap;
    char err[160];
} json_doc;

/* Parse src[0..len). 0 on success, -1 with doc->err. The doc keeps a pointer
 * to src (not a copy): src must outlive the doc. src need not be
 * NUL-terminated. json_parse() initialises *doc itself (an uninitialised doc
 * is fine; json_free() a parsed doc before parsing into it again).
 * json_free() releases tokens and may be called on a doc whose parse failed
 * or that was zero-initialised. */
int  json_parse(json_doc *doc, const char *src, size_t len);
void json_free(json_doc *doc);

/* Navigation. Token 0 is the root. Every function accepts t == -1 and
 * returns -1 / JSON_NONE for it, so lookups can be chained. */
int json_type(const json_doc *d, int t);
int json_next(const json_doc *d, int t);              /* first token after t's subtree;
                                                       * -1 when the subtree ends the document.
                                                       * For a key, its subtree is the key alone. */
int json_get(const json_doc *d, int obj, const char *key); /* value token or -1 */
int json_at(const json_doc *d, int arr, int i);       /* i-th element or -1 */
int json_size(const json_doc *d, int t);              /* keys / elements, 0 otherwise */
/* Iterate an object's members: for (int k = json_first(d,o); k >= 0; k = json_after(d,o,k)) { v = k + 1 ... }
 * For arrays the same pair yields element tokens. */
int json_first(const json_doc *d, int t);
int json_after(const json_doc *d, int parent, int cur);

/* Values. Each returns 0, or -1 (wrong type / out of range / bad text) with d->err set. */
int json_str(json_doc *d, int t, buf_t *out);          /* decoded string; out is reset first.
                                                        * \u0000 decodes to a NUL byte (counted in out->len) */
int json_streq(const json_doc *d, int t, const char *s); /* 1 if t is a string equal to s (decoded) */
int json_i64(json_doc *d, int t, int64_t *v);           /* integer number token, no fraction/exponent */
int json_f64(json_doc *d, int t, double *v);
int json_bool(json_doc *d, int t, int *v);
/* The raw bytes of any value as it appears in src (for copying sub-documents). */
const char *json_raw(const json_doc *d, int t, size_t *n);

/* 1 if s[0..n) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int json_valid_utf8(const char *s, size_t n);
/* 1 if s[0..n) is exactly one RFC 8259 number (no '+', leading zeros, '.5', NaN). */
int json_valid_number(const char *s, size_t n);
/* Strict integer text ("-"? digits, no leading zeros) -> *v. 0, -1 not an
 * integer, -2 out of int64 range. */
int json_parse_i64(const char *s, size_t n, int64_t *v);
/* Sets d->err (printf-style, one line: control characters become '?'). */
void json_seterr(json_doc *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writer. */
typedef struct {
    buf_t *b;
    int depth;
    unsigned char need_comma[JSON_MAX_DEPTH + 1];
    int after_key;
    int ascii_astral;   /* 1: characters above U+FFFF as \uXXXX surrogate pairs (json_escape_astral) */
} json_w;

void jw_init(json_w *w, buf_t *b);
/* Opening more than JSON_MAX_DEPTH levels is a programming error: abort(). */
void jw_obj(json_w *w);
void jw_obj_end(json_w *w);
void jw_arr(json_w *w);
void jw_arr_end(json_w *w);
void jw_key(json_w *w, const char *key);
void jw_str(json_w *w, const char *s);
void jw_strn(json_w *w, const char *s, size_t n);
void jw_i64(json_w *w, int64_t v);
void jw_f64(json_w *w, double v);
void jw_bool(json_w *w, int v);
void jw_null(json_w *w);
void jw_raw(json_w *w, const char *json, size_t n);    /* an already-serialised value */
/* Appends s[0..n) as a quoted, escaped JSON string. */
void json_escape(buf_t *b, const char *s, size_t n);
/* The same, but characters above U+FFFF (4-byte UTF-8: emoji...) become
 * \uXXXX\uXXXX surrogate-pair escapes, so no such character appears in the
 * output. For the wire form, which is also the SQS message body: fauxqs
 * refuses them in bodies (AWS accepts them), and every JSON reader
 * (json_str included) decodes the pair back to the same UTF-8 bytes. */
void json_escape_astral(buf_t *b, const char *s, size_t n);
#endif
