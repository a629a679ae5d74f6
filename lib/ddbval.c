/* ddbval: DynamoDB attribute values <-> plain JSON (see ddbval.h). */
#include "ddbval.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Appends the decoded string at t, re-escaped (so the output is valid JSON
 * and the input's UTF-8 / surrogates have been checked). */
static int copy_str(json_doc *d, int t, buf_t *out, buf_t *tmp)
{
    if (json_str(d, t, tmp) < 0) return -1;
    json_escape(out, tmp->p ? tmp->p : "", tmp->len);
    return 0;
}

/* The decoded string at t must be a JSON number; appended bare. */
static int copy_num(json_doc *d, int t, buf_t *out, buf_t *tmp)
{
    if (json_type(d, t) != JSON_STR) {
        json_seterr(d, "N value must be a string");
        return -1;
    }
    if (json_str(d, t, tmp) < 0) return -1;
    if (!json_valid_number(buf_str(tmp), tmp->len)) {
        json_seterr(d, "invalid number \"%.40s%s\" in N value", buf_str(tmp), tmp->len > 40 ? "..." : "");
        return -1;
    }
    buf_add(out, tmp->p, tmp->len);
    return 0;
}

static int to_plain(json_doc *d, int t, buf_t *out, buf_t *tmp);

static int set_to_plain(json_doc *d, int v, buf_t *out, buf_t *tmp, const char *ty, int num)
{
    if (json_type(d, v) != JSON_ARR) {
        json_seterr(d, "%s value must be an array", ty);
        return -1;
    }
    buf_addc(out, '[');
    for (int e = json_first(d, v); e >= 0; e = json_after(d, v, e)) {
        if (e != v + 1) buf_addc(out, ',');
        if (json_type(d, e) != JSON_STR) {
            json_seterr(d, "%s elements must be strings", ty);
            return -1;
        }
        if ((num ? copy_num(d, e, out, tmp) : copy_str(d, e, out, tmp)) < 0) return -1;
    }
    buf_addc(out, ']');
    return 0;
}

static int to_plain(json_doc *d, int t, buf_t *out, buf_t *tmp)
{
    int ty = json_type(d, t);
    if (ty != JSON_OBJ) {
        json_seterr(d, "attribute value must be an object, got %s",
                    ty == JSON_NONE ? "nothing" : ty == JSON_ARR ? "an array" : "a scalar");
        return -1;
    }
    if (json_size(d, t) != 1) {
        json_seterr(d, "attribute value must have exactly one type key, got %d", json_size(d, t));
        return -1;
    }
    int k = t + 1, v = t + 2;
    int vt = json_type(d, v);

    if (json_streq(d, k, "S") || json_streq(d, k, "B")) {
        if (vt != JSON_STR) {
            json_seterr(d, "%s value must be a string", json_streq(d, k, "S") ? "S" : "B");
            return -1;
        }
        return copy_str(d, v, out, tmp);
    }
    if (json_streq(d, k, "N")) return copy_num(d, v, out, tmp);
    if (json_streq(d, k, "BOOL")) {
        if (vt != JSON_TRUE && vt != JSON_FALSE) {
            json_seterr(d, "BOOL value must be true or false");
            return -1;
        }
        buf_adds(out, vt == JSON_TRUE ? "true" : "false");
        return 0;
    }
    if (json_streq(d, k, "NULL")) {
        if (vt != JSON_TRUE) {
            json_seterr(d, "NULL value must be true");
            return -1;
        }
        buf_adds(out, "null");
        return 0;
    }
    if (json_streq(d, k, "M")) {
        if (vt != JSON_OBJ) {
            json_seterr(d, "M value must be an object");
            return -1;
        }
        buf_addc(out, '{');
        for (int mk = json_first(d, v); mk >= 0; mk = json_after(d, v, mk)) {
            if (mk != v + 1) buf_addc(out, ',');
            if (copy_str(d, mk, out, tmp) < 0) return -1;
            buf_addc(out, ':');
            if (to_plain(d, mk + 1, out, tmp) < 0) return -1;
        }
        buf_addc(out, '}');
        return 0;
    }
    if (json_streq(d, k, "L")) {
        if (vt != JSON_ARR) {
            json_seterr(d, "L value must be an array");
            return -1;
        }
        buf_addc(out, '[');
        for (int e = json_first(d, v); e >= 0; e = json_after(d, v, e)) {
            if (e != v + 1) buf_addc(out, ',');
            if (to_plain(d, e, out, tmp) < 0) return -1;
        }
        buf_addc(out, ']');
        return 0;
    }
    if (json_streq(d, k, "SS")) return set_to_plain(d, v, out, tmp, "SS", 0);
    if (json_streq(d, k, "NS")) return set_to_plain(d, v, out, tmp, "NS", 1);
    if (json_streq(d, k, "BS")) return set_to_plain(d, v, out, tmp, "BS", 0);

    if (json_str(d, k, tmp) < 0) json_seterr(d, "unknown attribute value type");
    else json_seterr(d, "unknown attribute value type '%.40s'", buf_str(tmp));
    return -1;
}

/* Takes back whatever a failed conversion appended. */
static void rollback(buf_t *out, size_t len)
{
    out->len = len;
    if (out->p) out->p[len] = '\0';
}

int ddb_to_plain(json_doc *d, int t, buf_t *out)
{
    buf_t tmp = BUF_INIT;
    size_t mark = out->len;
    int r = to_plain(d, t, out, &tmp);
    buf_free(&tmp);
    if (r < 0) rollback(out, mark);
    return r;
}

int ddb_item_to_plain(json_doc *d, int item, buf_t *out)
{
    if (json_type(d, item) != JSON_OBJ) {
        json_seterr(d, "item is not an object");
        return -1;
    }
    buf_t tmp = BUF_INIT, name = BUF_INIT;
    size_t mark = out->len;
    int r = 0;
    buf_addc(out, '{');
    for (int k = json_first(d, item); k >= 0; k = json_after(d, item, k)) {
        if (k != item + 1) buf_addc(out, ',');
        if (json_str(d, k, &name) < 0) { r = -1; break; }
        json_escape(out, buf_str(&name), name.len);
        buf_addc(out, ':');
        if (to_plain(d, k + 1, out, &tmp) < 0) {
            char why[sizeof d->err];
            memcpy(why, d->err, sizeof why);
            json_seterr(d, "attribute '%.40s': %s", buf_str(&name), why);
            r = -1;
            break;
        }
    }
    if (r == 0) buf_addc(out, '}');
    else rollback(out, mark);
    buf_free(&tmp);
    buf_free(&name);
    return r;
}

static int from_plain(json_doc *d, int t, buf_t *out, buf_t *tmp)
{
    size_t n;
    const char *raw;
    switch (json_type(d, t)) {
    case JSON_STR:
        buf_adds(out, "{\"S\":");
        if (copy_str(d, t, out, tmp) < 0) return -1;
        buf_addc(out, '}');
        return 0;
    case JSON_NUM:
        raw = json_raw(d, t, &n);   /* validated: digits, '-', '+', '.', 'e' only */
        buf_adds(out, "{\"N\":\"");
        buf_add(out, raw, n);
        buf_adds(out, "\"}");
        return 0;
    case JSON_TRUE: buf_adds(out, "{\"BOOL\":true}"); return 0;
    case JSON_FALSE: buf_adds(out, "{\"BOOL\":false}"); return 0;
    case JSON_NULL: buf_adds(out, "{\"NULL\":true}"); return 0;
    case JSON_OBJ:
        buf_adds(out, "{\"M\":{");
        for (int k = json_first(d, t); k >= 0; k = json_after(d, t, k)) {
            if (k != t + 1) buf_addc(out, ',');
            if (copy_str(d, k, out, tmp) < 0) return -1;
            buf_addc(out, ':');
            if (from_plain(d, k + 1, out, tmp) < 0) return -1;
        }
        buf_adds(out, "}}");
        return 0;
    case JSON_ARR:
        buf_adds(out, "{\"L\":[");
        for (int e = json_first(d, t); e >= 0; e = json_after(d, t, e)) {
            if (e != t + 1) buf_addc(out, ',');
            if (from_plain(d, e, out, tmp) < 0) return -1;
        }
        buf_adds(out, "]}");
        return 0;
    default:
        json_seterr(d, "no value to convert");
        return -1;
    }
}

int ddb_from_plain(json_doc *d, int t, buf_t *out)
{
    buf_t tmp = BUF_INIT;
    size_t mark = out->len;
    int r = from_plain(d, t, out, &tmp);
    buf_free(&tmp);
    if (r < 0) rollback(out, mark);
    return r;
}

/* ---------------------------------------------------------------- getters */

/* The value token of attribute `name`'s type key `ty`, or -1 with d->err. */
static int attr(json_doc *d, int item, const char *name, const char *ty, const char *what)
{
    if (json_type(d, item) != JSON_OBJ) {
        json_seterr(d, "item is not an object");
        return -1;
    }
    int v = json_get(d, item, name);
    if (v < 0) {
        json_seterr(d, "attribute '%.60s' missing", name);
        return -1;
    }
    if (json_type(d, v) != JSON_OBJ || json_size(d, v) != 1) {
        json_seterr(d, "attribute '%.60s' is not a valid attribute value", name);
        return -1;
    }
    int x = json_get(d, v, ty);
    if (x < 0) {
        json_seterr(d, "attribute '%.60s' is not %s", name, what);
        return -1;
    }
    return x;
}

int ddb_get_s(json_doc *d, int item, const char *name, buf_t *out)
{
    buf_reset(out);
    int x = attr(d, item, name, "S", "a string");
    if (x < 0) return -1;
    if (json_type(d, x) != JSON_STR) {
        json_seterr(d, "attribute '%.60s' is not a string", name);
        return -1;
    }
    if (json_str(d, x, out) < 0) {
        char why[sizeof d->err];
        memcpy(why, d->err, sizeof why);
        json_seterr(d, "attribute '%.60s': %s", name, why);
        return -1;
    }
    return 0;
}

int ddb_get_i64(json_doc *d, int item, const char *name, int64_t *v)
{
    int x = attr(d, item, name, "N", "a number");
    if (x < 0) return -1;
    buf_t tmp = BUF_INIT;
    int r = json_type(d, x) == JSON_STR && json_str(d, x, &tmp) == 0
        ? json_parse_i64(buf_str(&tmp), tmp.len, v) : -1;
    buf_free(&tmp);
    if (r == -2) json_seterr(d, "attribute '%.60s': number out of range", name);
    else if (r < 0) json_seterr(d, "attribute '%.60s' is not an integer", name);
    return r < 0 ? -1 : 0;
}

int ddb_get_bool(json_doc *d, int item, const char *name, int *v)
{
    int x = attr(d, item, name, "BOOL", "a boolean");
    if (x < 0) return -1;
    if (json_type(d, x) != JSON_TRUE && json_type(d, x) != JSON_FALSE) {
        json_seterr(d, "attribute '%.60s' is not a boolean", name);
        return -1;
    }
    if (v) *v = json_type(d, x) == JSON_TRUE;
    return 0;
}

int ddb_has(const json_doc *d, int item, const char *name)
{
    return json_type(d, item) == JSON_OBJ && json_get(d, item, name) >= 0;
}

/* ---------------------------------------------------------------- writers */

void ddbv_s(json_w *w, const char *value)
{
    jw_obj(w);
    jw_key(w, "S");
    jw_str(w, value ? value : "");
    jw_obj_end(w);
}

static void ddbv_sn(json_w *w, const char *value, size_t n)
{
    jw_obj(w);
    jw_key(w, "S");
    jw_strn(w, value, n);
    jw_obj_end(w);
}

void ddbv_i64(json_w *w, int64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%" PRId64, v);
    jw_obj(w);
    jw_key(w, "N");
    jw_str(w, tmp);
    jw_obj_end(w);
}

void ddbw_s(json_w *w, const char *name, const char *value)
{
    jw_key(w, name);
    ddbv_s(w, value);
}

void ddbw_sn(json_w *w, const char *name, const char *value, size_t n)
{
    jw_key(w, name);
    ddbv_sn(w, value, n);
}

void ddbw_i64(json_w *w, const char *name, int64_t v)
{
    jw_key(w, name);
    ddbv_i64(w, v);
}

void ddbw_bool(json_w *w, const char *name, int v)
{
    jw_key(w, name);
    jw_obj(w);
    jw_key(w, "BOOL");
    jw_bool(w, v);
    jw_obj_end(w);
}
