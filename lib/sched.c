/* sched: the schedule model (see sched.h and docs/schema.md). */
#include "sched.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "ddbval.h"
#include "sns.h"
#include "timeutil.h"

static const char *const state_names[SCHED_NSTATES] = {
    "NEW", "ENQUEUED", "PUBLISHED", "CANCELLED", "FAILED", "INVALID",
};

const char *sched_state_name(int st)
{
    return st >= 0 && st < SCHED_NSTATES ? state_names[st] : "?";
}

int sched_state_parse(const char *s)
{
    for (int i = 0; s && i < SCHED_NSTATES; i++)
        if (strcmp(s, state_names[i]) == 0) return i;
    return -1;
}

int sched_state_final(int st)
{
    return st == SCHED_PUBLISHED || st == SCHED_CANCELLED || st == SCHED_FAILED || st == SCHED_INVALID;
}

int sched_state_waiting(int st)
{
    return st == SCHED_NEW || st == SCHED_ENQUEUED;
}

/* ------------------------------------------------------------------ record */

void sched_rec_init(sched_rec *r)
{
    memset(r, 0, sizeof *r);
    r->state = -1;
}

void sched_rec_free(sched_rec *r)
{
    free(r->id);
    free(r->topic);
    free(r->payload);
    for (size_t i = 0; i < r->nattrs; i++) {
        free(r->attrs[i].name);
        free(r->attrs[i].value);
    }
    free(r->attrs);
    free(r->last_error);
    free(r->hist);
    free(r->pub_msg);
    sched_rec_init(r);
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

void sched_rec_copy(sched_rec *dst, const sched_rec *src)
{
    *dst = *src;
    dst->id = dup_or_null(src->id);
    dst->topic = dup_or_null(src->topic);
    dst->payload = NULL;
    if (src->payload) sched_set_payload(dst, src->payload, src->psize);
    dst->attrs = src->nattrs ? xcalloc(src->nattrs, sizeof *dst->attrs) : NULL;
    for (size_t i = 0; i < src->nattrs; i++) {
        dst->attrs[i].name = xstrdup(src->attrs[i].name);
        dst->attrs[i].value = xstrdup(src->attrs[i].value);
    }
    dst->last_error = dup_or_null(src->last_error);
    dst->hist = NULL;
    if (src->nhist) {
        dst->hist = xcalloc(src->nhist, sizeof *dst->hist);
        memcpy(dst->hist, src->hist, src->nhist * sizeof *dst->hist);
    }
    dst->pub_msg = dup_or_null(src->pub_msg);
}

void sched_set_payload(sched_rec *r, const char *p, size_t n)
{
    free(r->payload);
    r->payload = xmalloc(n + 1);
    if (n) memcpy(r->payload, p, n);
    r->payload[n] = '\0';
    r->psize = n;
}

void sched_attr_add(sched_rec *r, const char *name, const char *value)
{
    r->attrs = xrealloc(r->attrs, (r->nattrs + 1) * sizeof *r->attrs);
    r->attrs[r->nattrs].name = xstrdup(name);
    r->attrs[r->nattrs].value = xstrdup(value);
    r->nattrs++;
}

int sched_attr_parse(sched_rec *r, const char *kv, char *err, size_t errlen)
{
    const char *eq = strchr(kv, '=');
    if (!eq) {
        char q[80];
        sched_quote(q, sizeof q, kv, 60);
        snprintf(err, errlen, "attr: expected key=value, got \"%s\"", q);
        return -1;
    }
    if (eq == kv) {
        snprintf(err, errlen, "attr: empty name before '='");
        return -1;
    }
    char *name = xstrndup(kv, (size_t)(eq - kv));
    sched_attr_add(r, name, eq + 1);
    free(name);
    return 0;
}

void sched_hist_add(sched_rec *r, int state, int64_t at)
{
    r->hist = xrealloc(r->hist, (r->nhist + 1) * sizeof *r->hist);
    r->hist[r->nhist].state = state;
    r->hist[r->nhist].at = at;
    r->nhist++;
}

int sched_expired(const sched_rec *r, int64_t now_ms)
{
    return r->expires > 0 && r->expires * 1000 <= now_ms;
}

/* -------------------------------------------------------------- validation */

void sched_quote(char *out, size_t outlen, const char *s, size_t max)
{
    size_t o = 0, i = 0;
    if (!outlen) return;
    for (; s && s[i] && o + 1 < outlen; i++) {
        if (i >= max) {
            for (int k = 0; k < 3 && o + 1 < outlen; k++) out[o++] = '.';
            break;
        }
        unsigned char c = (unsigned char)s[i];
        out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[o] = '\0';
}

int sched_check_id(const char *id, char *err, size_t errlen)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0) {
        snprintf(err, errlen, "id: empty");
        return -1;
    }
    if (n > SCHED_ID_MAX) {
        snprintf(err, errlen, "id: %zu bytes, at most %d allowed", n, SCHED_ID_MAX);
        return -1;
    }
    if (!json_valid_utf8(id, n)) {
        snprintf(err, errlen, "id: not valid UTF-8");
        return -1;
    }
    return 0;
}

int sched_check_due(int64_t due, int64_t now_ms, const sched_limits *lim, const char *field,
                    char *err, size_t errlen)
{
    char t[32];
    time_fmt(due, t);
    if (due < now_ms - lim->grace_ms) {
        snprintf(err, errlen, "%s: %s is in the past (more than %" PRId64 "s ago)", field, t,
                 lim->grace_ms / 1000);
        return -1;
    }
    if (due > now_ms + lim->horizon_ms) {
        snprintf(err, errlen, "%s: %s is beyond the horizon (%" PRId64 "d from now)", field, t,
                 lim->horizon_ms / 86400000);
        return -1;
    }
    return 0;
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* arn:<aws partition>:sns:<region>:<12-digit account>:<name> */
int sched_check_topic_arn(const char *arn, char *err, size_t errlen)
{
    char q[96];
    sched_quote(q, sizeof q, arn ? arn : "", 80);
    const char *f[6];
    size_t fl[6];
    int nf = 0;
    const char *p = arn ? arn : "";
    for (;;) {
        const char *c = nf < 5 ? strchr(p, ':') : NULL;
        f[nf] = p;
        fl[nf] = c ? (size_t)(c - p) : strlen(p);
        nf++;
        if (!c) break;
        p = c + 1;
    }
    int ok = nf == 6 && fl[0] == 3 && !strncmp(f[0], "arn", 3) && fl[1] >= 3 && !strncmp(f[1], "aws", 3) &&
             fl[2] == 3 && !strncmp(f[2], "sns", 3) && fl[3] > 0 && fl[4] == 12 && fl[5] > 0 && fl[5] <= 256;
    for (size_t i = 0; ok && i < fl[3]; i++)
        ok = (f[3][i] >= 'a' && f[3][i] <= 'z') || (f[3][i] >= '0' && f[3][i] <= '9') || f[3][i] == '-';
    for (size_t i = 0; ok && i < fl[4]; i++) ok = f[4][i] >= '0' && f[4][i] <= '9';
    if (ok && fl[5] > 5 && !strcmp(f[5] + fl[5] - 5, ".fifo")) {
        snprintf(err, errlen, "topic: FIFO topics are not supported (\"%s\")", q);
        return -1;
    }
    for (size_t i = 0; ok && i < fl[5]; i++) ok = is_name_char(f[5][i]);
    if (!ok) {
        snprintf(err, errlen, "topic: not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME): \"%s\"", q);
        return -1;
    }
    return 0;
}

/* SNS message attribute names: A-Z a-z 0-9 _ - . ; no leading/trailing or
 * doubled '.', no "AWS." / "Amazon." prefix, at most 256 bytes. */
int sched_check_attr_name(const char *name, char *err, size_t errlen)
{
    char q[80];
    sched_quote(q, sizeof q, name, 60);
    size_t n = strlen(name);
    const char *why = NULL;
    if (n == 0) why = "empty name";
    else if (n > SCHED_ATTR_NAME_MAX) why = "name longer than 256 bytes";
    else if (!strncasecmp(name, "AWS.", 4) || !strncasecmp(name, "Amazon.", 7)) why = "names starting with AWS. or Amazon. are reserved";
    else if (name[0] == '.' || name[n - 1] == '.' || strstr(name, "..")) why = "'.' may not start, end or repeat in a name";
    for (size_t i = 0; !why && i < n; i++)
        if (!is_name_char(name[i]) && name[i] != '.') why = "names may hold only A-Z a-z 0-9 _ - .";
    if (why) {
        snprintf(err, errlen, "attr: \"%s\": %s", q, why);
        return -1;
    }
    return 0;
}

static int attr_cmp(const void *a, const void *b)
{
    return strcmp(((const sched_attr *)a)->name, ((const sched_attr *)b)->name);
}

/* ------------------------------------------------- SNS message attributes */

static const char *const own_attrs[SCHED_OWN_ATTRS] = {"delayer.id", "delayer.due", "delayer.attempt"};

_Static_assert(SCHED_MSG_MAX == SNS_MSG_MAX, "one message size limit");

size_t sched_sns_attr_size(const char *name, const char *value)
{
    return strlen(name) + strlen(SNS_ATTR_TYPE) + strlen(value);
}

void sched_sns_attrs_build(const sched_rec *r, int64_t attempt, sched_sns_attrs *a)
{
    memset(a->id, '0', SCHED_ULID_LEN);
    a->id[SCHED_ULID_LEN] = '\0';
    time_fmt(r->due, a->due);
    snprintf(a->attempt, sizeof a->attempt, "%" PRId64, attempt);
    const char *val[SCHED_OWN_ATTRS] = {r->id ? r->id : a->id, a->due, a->attempt};
    a->n = 0;
    a->dropped = 0;
    for (int k = 0; k < SCHED_OWN_ATTRS; k++) a->kv[a->n++] = (sched_kv){own_attrs[k], val[k]};
    /* The record's in name order (a record read from the table comes in
     * DynamoDB's map order): the same ones are kept at every attempt. Each
     * round takes the smallest name after the previous one (names are
     * unique in the map), SCHED_USER_ATTRS_MAX rounds at most. */
    const char *prev = NULL;
    size_t theirs = 0;
    for (size_t i = 0; i < r->nattrs; i++) {
        int mine = 0;
        for (int k = 0; k < SCHED_OWN_ATTRS; k++) mine |= strcmp(r->attrs[i].name, own_attrs[k]) == 0;
        theirs += !mine;
    }
    while (a->n < SCHED_ATTRS_MAX) {
        const sched_attr *best = NULL;
        for (size_t i = 0; i < r->nattrs; i++) {
            const sched_attr *c = &r->attrs[i];
            int mine = 0;
            for (int k = 0; k < SCHED_OWN_ATTRS; k++) mine |= strcmp(c->name, own_attrs[k]) == 0;
            if (mine || (prev && strcmp(c->name, prev) <= 0)) continue;
            if (!best || strcmp(c->name, best->name) < 0) best = c;
        }
        if (!best) break;
        a->kv[a->n++] = (sched_kv){best->name, best->value};
        prev = best->name;
    }
    a->dropped = theirs - (a->n - SCHED_OWN_ATTRS);
}

size_t sched_sns_size(const sched_rec *r, const sched_sns_attrs *a)
{
    size_t n = r->psize;
    for (size_t i = 0; i < a->n; i++) n += sched_sns_attr_size(a->kv[i].name, a->kv[i].value);
    return n;
}

/* Attributes: valid names, non-empty UTF-8 values, no duplicates; when
 * creating (strict), at most SCHED_USER_ATTRS_MAX and none "delayer.*". */
static int check_attrs(sched_rec *r, int strict, char *err, size_t errlen)
{
    if (strict && r->nattrs > SCHED_USER_ATTRS_MAX) {
        snprintf(err, errlen,
                 "attr: %zu attributes, at most %d allowed (SNS delivers at most %d message attributes and "
                 "delayer adds its own %d: delayer.id, delayer.due, delayer.attempt)",
                 r->nattrs, SCHED_USER_ATTRS_MAX, SCHED_ATTRS_MAX, SCHED_OWN_ATTRS);
        return -1;
    }
    if (r->nattrs > 1) qsort(r->attrs, r->nattrs, sizeof *r->attrs, attr_cmp);
    for (size_t i = 0; i < r->nattrs; i++) {
        const sched_attr *a = &r->attrs[i];
        char q[80];
        sched_quote(q, sizeof q, a->name, 60);
        if (sched_check_attr_name(a->name, err, errlen) < 0) return -1;
        /* Case-insensitive like SNS's own AWS./Amazon. rule: "Delayer.id"
         * next to delayer.id would only confuse a consumer. */
        if (strict && !strncasecmp(a->name, SCHED_ATTR_PREFIX, strlen(SCHED_ATTR_PREFIX))) {
            snprintf(err, errlen, "attr: \"%s\": names starting with %s are reserved for delayer's own attributes", q,
                     SCHED_ATTR_PREFIX);
            return -1;
        }
        if (i > 0 && !strcmp(a->name, r->attrs[i - 1].name)) {
            snprintf(err, errlen, "attr: \"%s\" given twice", q);
            return -1;
        }
        size_t vn = strlen(a->value);
        if (vn == 0) {
            snprintf(err, errlen, "attr: \"%s\": empty value (SNS refuses it)", q);
            return -1;
        }
        if (!json_valid_utf8(a->value, vn)) {
            snprintf(err, errlen, "attr: \"%s\": value is not valid UTF-8", q);
            return -1;
        }
    }
    return 0;
}

/* SNS's limit counts the body and every attribute sent: delayer's own
 * included, with delayer.attempt at its largest when creating (the record
 * must stay publishable however many attempts it takes), at the record's
 * next attempt (its attempts + 1) otherwise. */
static int check_message(sched_rec *r, int strict, char *err, size_t errlen)
{
    if (!r->payload || r->psize == 0) {
        snprintf(err, errlen, "payload: empty (SNS refuses empty messages)");
        return -1;
    }
    if (memchr(r->payload, '\0', r->psize)) {
        snprintf(err, errlen, "payload: contains a NUL byte");
        return -1;
    }
    if (!json_valid_utf8(r->payload, r->psize)) {
        snprintf(err, errlen, "payload: not valid UTF-8");
        return -1;
    }
    if (check_attrs(r, strict, err, errlen) < 0) return -1;
    sched_sns_attrs a;
    sched_sns_attrs_build(r, strict ? SCHED_ATTEMPT_MAX : r->attempts + 1, &a);
    size_t attrs = sched_sns_size(r, &a) - r->psize;
    if (attrs >= SCHED_MSG_MAX) {
        snprintf(err, errlen, "attr: %zu bytes of message attributes, over SNS's limit of %d for the whole message",
                 attrs, SCHED_MSG_MAX);
        return -1;
    }
    if (r->psize > SCHED_MSG_MAX - attrs) {
        snprintf(err, errlen,
                 "payload: %zu bytes, at most %zu allowed here (SNS's limit of %d bytes counts the message "
                 "attributes too: %zu bytes with delayer's own)",
                 r->psize, SCHED_MSG_MAX - attrs, SCHED_MSG_MAX, attrs);
        return -1;
    }
    return 0;
}

int sched_check_message(sched_rec *r, char *err, size_t errlen)
{
    return check_message(r, 1, err, errlen);
}

int sched_check_stored(sched_rec *r, char *err, size_t errlen)
{
    return check_message(r, 0, err, errlen);
}

int sched_validate(sched_rec *r, int64_t now_ms, const sched_limits *lim, char *err, size_t errlen)
{
    if (r->id && sched_check_id(r->id, err, errlen) < 0) return -1;
    if (sched_check_due(r->due, now_ms, lim, "due", err, errlen) < 0) return -1;
    if (sched_check_topic_arn(r->topic, err, errlen) < 0) return -1;
    return sched_check_message(r, err, errlen);
}

/* ------------------------------------------------------------------- ULID */

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static int random_bytes(unsigned char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* Adds 1 to the 80-bit big-endian random part; 1 on overflow. */
static int increment80(unsigned char r[10])
{
    for (int i = 9; i >= 0; i--)
        if (++r[i] != 0) return 0;
    return 1;
}

int sched_ulid(char out[SCHED_ULID_LEN + 1], int64_t now_ms)
{
    static int64_t last_ms = -1;
    static unsigned char last_rand[10];
    unsigned char v[16];
    int64_t ms = now_ms < 0 ? 0 : now_ms;

    /* Same (or an earlier: clock stepped back) millisecond: keep the last
     * time and count up, so ids from one process stay strictly increasing. */
    if (ms <= last_ms) {
        ms = last_ms;
        if (increment80(last_rand)) ms++;
    } else if (random_bytes(last_rand, sizeof last_rand) < 0) {
        return -1;
    }
    last_ms = ms;
    for (int i = 0; i < 6; i++) v[i] = (unsigned char)((uint64_t)ms >> (8 * (5 - i)));
    memcpy(v + 6, last_rand, 10);

    /* 130 bits (two leading zero bits + 128) in 26 groups of 5. */
    for (int i = 0; i < SCHED_ULID_LEN; i++) {
        int bit = i * 5 - 2, x = 0;
        for (int k = 0; k < 5; k++, bit++) {
            int b = bit < 0 ? 0 : (v[bit / 8] >> (7 - bit % 8)) & 1;
            x = (x << 1) | b;
        }
        out[i] = crockford[x];
    }
    out[SCHED_ULID_LEN] = '\0';
    return 0;
}

/* ------------------------------------------------------------------- hash */

static void hash_field(EVP_MD_CTX *c, const void *p, size_t n)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)n >> (8 * (7 - i)));
    EVP_DigestUpdate(c, len, 8);
    if (n) EVP_DigestUpdate(c, p, n);
}

/* Length-prefixed fields make the encoding unambiguous: no choice of
 * payload/attribute bytes can collide with another split of the same bytes. */
void sched_chash(sched_rec *r)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char due[32];
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c) abort();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    hash_field(c, "delayer-chash-v1", 16);
    snprintf(due, sizeof due, "%" PRId64, r->due);
    hash_field(c, due, strlen(due));
    hash_field(c, r->topic ? r->topic : "", r->topic ? strlen(r->topic) : 0);
    hash_field(c, r->payload ? r->payload : "", r->payload ? r->psize : 0);
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%zu", r->nattrs);
    hash_field(c, cnt, strlen(cnt));
    for (size_t i = 0; i < r->nattrs; i++) {
        hash_field(c, r->attrs[i].name, strlen(r->attrs[i].name));
        hash_field(c, r->attrs[i].value, strlen(r->attrs[i].value));
    }
    EVP_DigestFinal_ex(c, md, &mdlen);
    EVP_MD_CTX_free(c);
    for (unsigned i = 0; i < 32 && i < mdlen; i++) {
        r->chash[2 * i] = hex[md[i] >> 4];
        r->chash[2 * i + 1] = hex[md[i] & 15];
    }
    r->chash[64] = '\0';
}

/* ------------------------------------------------------------ shard, keys */

uint32_t sched_fnv1a(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 16777619u;
    }
    return h;
}

int sched_shard(const char *id, int shards)
{
    if (shards <= 0) return 0;
    return (int)(sched_fnv1a(id, strlen(id)) % (uint32_t)shards);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

int64_t sched_index_time(int64_t due, int64_t lease_or_now)
{
    return due > lease_or_now ? due : lease_or_now;
}

void sched_due_pk(buf_t *out, int64_t index_ms, int shard)
{
    buf_reset(out);
    buf_printf(out, "%" PRId64 "#%d", floor_div(index_ms, 60000), shard);
}

void sched_due_sk(buf_t *out, int64_t due, const char *id)
{
    buf_reset(out);
    buf_printf(out, "%013" PRId64 "#%s", due, id);
}

void sched_month(int64_t t, char out[8])
{
    int64_t y;
    unsigned m, d;
    time_civil_from_days(floor_div(t, 86400000), &y, &m, &d);
    unsigned yy = (unsigned)(y < 0 ? 0 : y > 9999 ? 9999 : y);
    out[0] = (char)('0' + yy / 1000), out[1] = (char)('0' + yy / 100 % 10);
    out[2] = (char)('0' + yy / 10 % 10), out[3] = (char)('0' + yy % 10);
    out[4] = '-', out[5] = (char)('0' + m / 10 % 10), out[6] = (char)('0' + m % 10), out[7] = '\0';
}

int64_t sched_month_start(int64_t t)
{
    int64_t y;
    unsigned m, d;
    time_civil_from_days(floor_div(t, 86400000), &y, &m, &d);
    return time_days_from_civil(y, m, 1) * 86400000;
}

int64_t sched_prev_month(int64_t t)
{
    return sched_month_start(sched_month_start(t) - 1);
}

void sched_st_pk(buf_t *out, int state, int64_t updated)
{
    char m[8];
    sched_month(updated, m);
    buf_reset(out);
    buf_printf(out, "%s#%s", sched_state_name(state), m);
}

void sched_st_sk(buf_t *out, int64_t updated, const char *id)
{
    char t[32];
    time_fmt(updated, t);
    buf_reset(out);
    buf_printf(out, "%s#%s", t, id);
}

/* ------------------------------------------------------------ DynamoDB item */

static void write_attrs_map(json_w *w, const sched_rec *r)
{
    jw_obj(w);
    for (size_t i = 0; i < r->nattrs; i++) {
        jw_key(w, r->attrs[i].name);
        jw_obj(w);
        jw_key(w, "S");
        jw_str(w, r->attrs[i].value);
        jw_obj_end(w);
    }
    jw_obj_end(w);
}

static void write_hist(json_w *w, const sched_rec *r)
{
    jw_key(w, "hist");
    jw_obj(w);
    jw_key(w, "L");
    jw_arr(w);
    for (size_t i = 0; i < r->nhist; i++) {
        jw_obj(w);
        jw_key(w, "M");
        jw_obj(w);
        ddbw_s(w, "s", sched_state_name(r->hist[i].state));
        ddbw_i64(w, "t", r->hist[i].at);
        jw_obj_end(w);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_obj_end(w);
}

void sched_item_write(json_w *w, const sched_rec *r, int shard)
{
    buf_t k = BUF_INIT;
    jw_obj(w);
    ddbw_s(w, "id", r->id);
    ddbw_s(w, "state", sched_state_name(r->state));
    ddbw_i64(w, "due", r->due);
    ddbw_s(w, "topic", r->topic);
    ddbw_sn(w, "payload", r->payload ? r->payload : "", r->psize);
    ddbw_i64(w, "psize", (int64_t)r->psize);
    jw_key(w, "attrs");
    jw_obj(w);
    jw_key(w, "M");
    write_attrs_map(w, r);
    jw_obj_end(w);
    ddbw_s(w, "chash", r->chash);
    ddbw_i64(w, "created", r->created);
    ddbw_i64(w, "updated", r->updated);
    ddbw_i64(w, "attempts", r->attempts);
    if (r->last_error) ddbw_s(w, "last_error", r->last_error);
    write_hist(w, r);
    if (sched_state_waiting(r->state)) {
        sched_due_pk(&k, sched_index_time(r->due, 0), shard);
        ddbw_s(w, "due_pk", buf_str(&k));
        sched_due_sk(&k, r->due, r->id);
        ddbw_s(w, "due_sk", buf_str(&k));
    }
    if (r->lease) ddbw_i64(w, "lease", r->lease);
    if (r->claims) ddbw_i64(w, "claims", r->claims);
    if (r->pub_msg) ddbw_s(w, "pub_msg", r->pub_msg);
    sched_st_pk(&k, r->state, r->updated);
    ddbw_s(w, "st_pk", buf_str(&k));
    sched_st_sk(&k, r->updated, r->id);
    ddbw_s(w, "st_sk", buf_str(&k));
    if (r->expires) ddbw_i64(w, "expires", r->expires);
    jw_obj_end(w);
    buf_free(&k);
}

/* An optional string attribute into *dst (NULL when absent). */
static int read_opt_s(json_doc *d, int item, const char *name, char **dst, buf_t *tmp)
{
    if (!ddb_has(d, item, name)) return 0;
    if (ddb_get_s(d, item, name, tmp) < 0) return -1;
    free(*dst);
    *dst = xstrndup(buf_str(tmp), tmp->len);
    return 0;
}

static int read_opt_n(json_doc *d, int item, const char *name, int64_t *v)
{
    if (!ddb_has(d, item, name)) return 0;
    return ddb_get_i64(d, item, name, v);
}

/* The attribute value token of name in item ({"T": value}), or -1. */
static int attr_value(json_doc *d, int item, const char *name, const char *type)
{
    int v = json_get(d, item, name);
    if (json_type(d, v) != JSON_OBJ) return -1;
    return json_get(d, v, type);
}

static int read_attrs(json_doc *d, int item, sched_rec *r, buf_t *tmp, buf_t *tmp2)
{
    int m = attr_value(d, item, "attrs", "M");
    if (m < 0) return ddb_has(d, item, "attrs") ? -1 : 0;
    for (int k = json_first(d, m); k >= 0; k = json_after(d, m, k)) {
        int s = json_get(d, k + 1, "S");
        if (json_str(d, k, tmp) < 0 || json_str(d, s, tmp2) < 0) return -1;
        sched_attr_add(r, buf_str(tmp), buf_str(tmp2));
    }
    return 0;
}

static int read_hist(json_doc *d, int item, sched_rec *r, buf_t *tmp)
{
    int l = attr_value(d, item, "hist", "L");
    if (l < 0) return ddb_has(d, item, "hist") ? -1 : 0;
    for (int e = json_first(d, l); e >= 0; e = json_after(d, l, e)) {
        int m = json_get(d, e, "M");
        int64_t t = 0;
        if (m < 0 || ddb_get_s(d, m, "s", tmp) < 0 || ddb_get_i64(d, m, "t", &t) < 0) return -1;
        sched_hist_add(r, sched_state_parse(buf_str(tmp)), t);
    }
    return 0;
}

int sched_item_read(json_doc *d, int item, sched_rec *r, char *err, size_t errlen)
{
    buf_t tmp = BUF_INIT, tmp2 = BUF_INIT;
    int rc = -1;
    sched_rec_free(r);
    if (json_type(d, item) != JSON_OBJ) {
        snprintf(err, errlen, "item: not an object");
        goto out;
    }
    if (read_opt_s(d, item, "id", &r->id, &tmp) < 0 || !r->id) goto bad;
    if (ddb_has(d, item, "state")) {
        if (ddb_get_s(d, item, "state", &tmp) < 0) goto bad;
        r->state = sched_state_parse(buf_str(&tmp));
    }
    if (read_opt_n(d, item, "due", &r->due) < 0 || read_opt_s(d, item, "topic", &r->topic, &tmp) < 0) goto bad;
    if (ddb_has(d, item, "payload")) {
        if (ddb_get_s(d, item, "payload", &tmp) < 0) goto bad;
        sched_set_payload(r, buf_str(&tmp), tmp.len);
        r->full = 1;
    }
    int64_t psize = (int64_t)r->psize;
    if (read_opt_n(d, item, "psize", &psize) < 0) goto bad;
    r->psize = (size_t)psize;
    if (ddb_has(d, item, "chash")) {
        if (ddb_get_s(d, item, "chash", &tmp) < 0) goto bad;
        snprintf(r->chash, sizeof r->chash, "%s", buf_str(&tmp));
    }
    if (read_opt_n(d, item, "created", &r->created) < 0 || read_opt_n(d, item, "updated", &r->updated) < 0 ||
        read_opt_n(d, item, "attempts", &r->attempts) < 0 || read_opt_n(d, item, "lease", &r->lease) < 0 ||
        read_opt_n(d, item, "claims", &r->claims) < 0 || read_opt_n(d, item, "expires", &r->expires) < 0 ||
        read_opt_s(d, item, "last_error", &r->last_error, &tmp) < 0 ||
        read_opt_s(d, item, "pub_msg", &r->pub_msg, &tmp) < 0)
        goto bad;
    if (read_attrs(d, item, r, &tmp, &tmp2) < 0 || read_hist(d, item, r, &tmp) < 0) goto bad;
    rc = 0;
    goto out;
bad:
    snprintf(err, errlen, "item: malformed schedule item (%s)", d->err[0] ? d->err : "missing id");
out:
    buf_free(&tmp);
    buf_free(&tmp2);
    return rc;
}

/* --------------------------------------------------------------- wire form */

void sched_wire_init(sched_wire *w)
{
    memset(w, 0, sizeof *w);
    sched_rec_init(&w->r);
}

void sched_wire_free(sched_wire *w)
{
    sched_rec_free(&w->r);
    free(w->mid);
    free(w->rh);
    free(w->report);
    free(w->error);
    sched_wire_init(w);
}

void sched_wire_from_rec(sched_wire *w, const sched_rec *r)
{
    sched_wire_free(w);
    w->r.id = dup_or_null(r->id);
    w->r.due = r->due;
    w->r.topic = dup_or_null(r->topic);
    if (r->payload) sched_set_payload(&w->r, r->payload, r->psize);
    for (size_t i = 0; i < r->nattrs; i++) sched_attr_add(&w->r, r->attrs[i].name, r->attrs[i].value);
    memcpy(w->r.chash, r->chash, sizeof w->r.chash);
    w->r.lease = r->lease;
    w->r.state = r->state;
}

void sched_wire_write(buf_t *out, const sched_wire *w)
{
    json_w j;
    jw_init(&j, out);
    j.ascii_astral = 1; /* the SQS body: see json_escape_astral */
    jw_obj(&j);
    jw_key(&j, "id");
    jw_str(&j, w->r.id);
    jw_key(&j, "due");
    jw_i64(&j, w->r.due);
    jw_key(&j, "topic");
    jw_str(&j, w->r.topic);
    if (w->nopayload) {
        jw_key(&j, "nopayload");
        jw_bool(&j, 1);
    } else {
        jw_key(&j, "payload");
        jw_strn(&j, w->r.payload ? w->r.payload : "", w->r.psize);
    }
    jw_key(&j, "attrs");
    jw_obj(&j);
    for (size_t i = 0; i < w->r.nattrs; i++) {
        jw_key(&j, w->r.attrs[i].name);
        jw_str(&j, w->r.attrs[i].value);
    }
    jw_obj_end(&j);
    jw_key(&j, "chash");
    jw_str(&j, w->r.chash);
    jw_key(&j, "lease");
    jw_i64(&j, w->r.lease);
    const char *sk[] = {"mid", "rh", "report", "error"};
    const char *sv[] = {w->mid, w->rh, w->report, w->error};
    for (int i = 0; i < 4; i++)
        if (sv[i]) {
            jw_key(&j, sk[i]);
            jw_str(&j, sv[i]);
        }
    if (w->rc) {
        jw_key(&j, "rc");
        jw_i64(&j, w->rc);
    }
    if (w->rt) {
        jw_key(&j, "rt");
        jw_i64(&j, w->rt);
    }
    if (w->rv) {
        jw_key(&j, "rv");
        jw_i64(&j, w->rv);
    }
    jw_obj_end(&j);
    buf_addc(out, '\n');
}

/* String member key of object o into *dst; absent is fine unless required. */
static int wire_str(json_doc *d, int o, const char *key, char **dst, int required, buf_t *tmp,
                    char *err, size_t errlen)
{
    int t = json_get(d, o, key);
    if (t < 0) {
        if (!required) return 0;
        snprintf(err, errlen, "%s: missing", key);
        return -1;
    }
    if (json_type(d, t) != JSON_STR || json_str(d, t, tmp) < 0) {
        snprintf(err, errlen, "%s: expected a string", key);
        return -1;
    }
    if (memchr(buf_str(tmp), '\0', tmp->len)) {
        snprintf(err, errlen, "%s: contains a NUL byte", key);
        return -1;
    }
    free(*dst);
    *dst = xstrndup(buf_str(tmp), tmp->len);
    return 0;
}

static int wire_i64(json_doc *d, int o, const char *key, int64_t *v, int required, char *err, size_t errlen)
{
    int t = json_get(d, o, key);
    if (t < 0 && !required) return 0;
    if (t < 0 || json_i64(d, t, v) < 0) {
        snprintf(err, errlen, "%s: %s", key, t < 0 ? "missing" : "expected an integer");
        return -1;
    }
    return 0;
}

static int wire_attrs(json_doc *d, int o, sched_rec *r, buf_t *tmp, buf_t *tmp2, char *err, size_t errlen)
{
    int a = json_get(d, o, "attrs");
    if (a < 0) return 0;
    if (json_type(d, a) != JSON_OBJ) {
        snprintf(err, errlen, "attrs: expected an object");
        return -1;
    }
    for (int k = json_first(d, a); k >= 0; k = json_after(d, a, k)) {
        if (json_str(d, k, tmp) < 0 || json_type(d, k + 1) != JSON_STR || json_str(d, k + 1, tmp2) < 0) {
            snprintf(err, errlen, "attrs: values must be strings");
            return -1;
        }
        sched_attr_add(r, buf_str(tmp), buf_str(tmp2));
    }
    return 0;
}

static int wire_fields(json_doc *d, sched_wire *w, buf_t *tmp, buf_t *tmp2, char *err, size_t errlen)
{
    char *chash = NULL;
    int np = json_type(d, json_get(d, 0, "nopayload")) == JSON_TRUE;
    w->nopayload = np;
    if (wire_str(d, 0, "id", &w->r.id, 1, tmp, err, errlen) < 0 ||
        wire_i64(d, 0, "due", &w->r.due, 1, err, errlen) < 0 ||
        wire_str(d, 0, "topic", &w->r.topic, 1, tmp, err, errlen) < 0 ||
        wire_i64(d, 0, "lease", &w->r.lease, 0, err, errlen) < 0 ||
        wire_i64(d, 0, "rc", &w->rc, 0, err, errlen) < 0 ||
        wire_i64(d, 0, "rt", &w->rt, 0, err, errlen) < 0 ||
        wire_i64(d, 0, "rv", &w->rv, 0, err, errlen) < 0 ||
        wire_str(d, 0, "chash", &chash, 1, tmp, err, errlen) < 0 ||
        wire_str(d, 0, "mid", &w->mid, 0, tmp, err, errlen) < 0 ||
        wire_str(d, 0, "rh", &w->rh, 0, tmp, err, errlen) < 0 ||
        wire_str(d, 0, "report", &w->report, 0, tmp, err, errlen) < 0 ||
        wire_str(d, 0, "error", &w->error, 0, tmp, err, errlen) < 0 ||
        wire_attrs(d, 0, &w->r, tmp, tmp2, err, errlen) < 0) {
        free(chash);
        return -1;
    }
    /* Exactly what sched_chash writes: anything else was once silently cut
     * to 64 bytes (found by fuzzing: a cut inside a UTF-8 sequence, and a
     * longer value matching the real hash by its first 64 bytes). */
    size_t cl = strlen(chash);
    if (cl != 64 || strspn(chash, "0123456789abcdef") != 64) {
        snprintf(err, errlen, "chash: expected 64 lowercase hex digits");
        free(chash);
        return -1;
    }
    memcpy(w->r.chash, chash, 65);
    free(chash);
    if (!np) {
        int t = json_get(d, 0, "payload");
        if (json_type(d, t) != JSON_STR || json_str(d, t, tmp) < 0) {
            snprintf(err, errlen, "payload: %s", t < 0 ? "missing" : "expected a string");
            return -1;
        }
        sched_set_payload(&w->r, buf_str(tmp), tmp->len);
        w->r.full = 1;
    }
    return 0;
}

int sched_wire_read(const char *line, size_t n, sched_wire *w, char *err, size_t errlen)
{
    json_doc d;
    buf_t tmp = BUF_INIT, tmp2 = BUF_INIT;
    sched_wire_free(w);
    if (n && line[n - 1] == '\n') n--;
    if (json_parse(&d, line, n) < 0) {
        snprintf(err, errlen, "wire: %s", d.err);
        json_free(&d);
        return -1;
    }
    int rc = -1;
    if (json_type(&d, 0) != JSON_OBJ) snprintf(err, errlen, "wire: not a JSON object");
    else rc = wire_fields(&d, w, &tmp, &tmp2, err, errlen);
    if (rc < 0) sched_wire_free(w);
    json_free(&d);
    buf_free(&tmp);
    buf_free(&tmp2);
    return rc;
}

/* ----------------------------------------------------------- JSON for CLI */

static void jw_time(json_w *w, const char *key, int64_t ms)
{
    char t[32];
    time_fmt(ms, t);
    jw_key(w, key);
    jw_str(w, t);
}

void sched_json(buf_t *out, const sched_rec *r, int with_payload)
{
    json_w w;
    jw_init(&w, out);
    jw_obj(&w);
    jw_key(&w, "id");
    jw_str(&w, r->id);
    jw_key(&w, "state");
    jw_str(&w, sched_state_name(r->state));
    jw_time(&w, "due", r->due);
    jw_key(&w, "due_ms");
    jw_i64(&w, r->due);
    jw_key(&w, "topic");
    jw_str(&w, r->topic ? r->topic : "");
    if (r->full) {
        jw_key(&w, "attrs");
        jw_obj(&w);
        for (size_t i = 0; i < r->nattrs; i++) {
            jw_key(&w, r->attrs[i].name);
            jw_str(&w, r->attrs[i].value);
        }
        jw_obj_end(&w);
    }
    jw_key(&w, "payload_size");
    jw_i64(&w, (int64_t)r->psize);
    jw_time(&w, "created", r->created);
    jw_time(&w, "updated", r->updated);
    jw_key(&w, "attempts");
    jw_i64(&w, r->attempts);
    jw_key(&w, "last_error");
    if (r->last_error) jw_str(&w, r->last_error);
    else jw_null(&w);
    if (r->lease && r->state == SCHED_ENQUEUED) jw_time(&w, "lease", r->lease);
    if (r->expires) jw_time(&w, "expires", r->expires * 1000);
    if (r->full) {
        jw_key(&w, "history");
        jw_arr(&w);
        for (size_t i = 0; i < r->nhist; i++) {
            jw_obj(&w);
            jw_key(&w, "state");
            jw_str(&w, sched_state_name(r->hist[i].state));
            jw_time(&w, "at", r->hist[i].at);
            jw_obj_end(&w);
        }
        jw_arr_end(&w);
    }
    if (with_payload && r->payload) {
        jw_key(&w, "payload");
        jw_strn(&w, r->payload, r->psize);
    }
    jw_obj_end(&w);
}
