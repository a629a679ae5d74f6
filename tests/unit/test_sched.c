/* Unit tests for lib/sched.c: validation, ULIDs, keys, item and wire round
 * trips, content hash stability. */
#include <inttypes.h>
#include <stdint.h>

#include "t.h"
#include "ddbval.h"
#include "sched.h"
#include "timeutil.h"

static const char *ARN = "arn:aws:sns:us-east-1:000000000000:orders";
static const int64_t NOW = 1795269787250LL; /* 2026-11-21T14:03:07.250Z */
static const sched_limits LIM = {30000, 365LL * 86400000};

/* A valid record: due in 10 minutes, two attributes (given unsorted). */
static void make(sched_rec *r, const char *id)
{
    sched_rec_init(r);
    r->id = id ? xstrdup(id) : NULL;
    r->due = NOW + 600000;
    r->topic = xstrdup(ARN);
    sched_set_payload(r, "hello \"world\"\n", 14);
    sched_attr_add(r, "zeta", "1");
    sched_attr_add(r, "alpha", "x=y");
    r->state = SCHED_NEW;
    r->created = r->updated = NOW;
}

static int refused(sched_rec *r, const char *prefix)
{
    char err[256] = "";
    int rc = sched_validate(r, NOW, &LIM, err, sizeof err);
    int ok = rc < 0 && strncmp(err, prefix, strlen(prefix)) == 0 && !strchr(err, '\n');
    if (!ok) printf("# validate gave rc=%d err=\"%s\", wanted prefix \"%s\"\n", rc, err, prefix);
    return ok;
}

static void test_valid_record(void)
{
    sched_rec r;
    char err[256];
    make(&r, "order-1");
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    CHECK_STR(r.attrs[0].name, "alpha"); /* sorted */
    sched_rec_free(&r);
    make(&r, NULL); /* no id: generated later */
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    sched_rec_free(&r);
}

static void test_refused_id(void)
{
    sched_rec r;
    char big[600];
    make(&r, "");
    CHECK(refused(&r, "id: empty"));
    free(r.id);
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    r.id = xstrdup(big);
    CHECK(refused(&r, "id: 599 bytes"));
    free(r.id);
    r.id = xstrdup("bad\xff");
    CHECK(refused(&r, "id: not valid UTF-8"));
    free(r.id);
    r.id = xstrdup("ok with 'quotes' #hash :colon\nnewline");
    char err[256];
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    sched_rec_free(&r);
}

static void test_refused_due(void)
{
    sched_rec r;
    make(&r, "x");
    r.due = NOW - 31000;
    CHECK(refused(&r, "due: 2026-11-21T14:02:36.250Z is in the past"));
    r.due = NOW - 29000; /* within grace */
    char err[256];
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    r.due = NOW + 366LL * 86400000;
    CHECK(refused(&r, "due: "));
    sched_rec_free(&r);
}

static void test_refused_topic(void)
{
    const char *bad[] = {"orders", "arn:aws:sqs:us-east-1:000000000000:q", "arn:aws:sns:us-east-1:123:q",
                         "arn:aws:sns::000000000000:q", "arn:aws:sns:us-east-1:000000000000:",
                         "arn:aws:sns:us-east-1:000000000000:a b", "arn:aws:sns:us-east-1:000000000000:x:y"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sched_rec r;
        make(&r, "x");
        free(r.topic);
        r.topic = xstrdup(bad[i]);
        CHECK(refused(&r, "topic: not an SNS topic ARN"));
        sched_rec_free(&r);
    }
    sched_rec r;
    make(&r, "x");
    free(r.topic);
    r.topic = xstrdup("arn:aws:sns:us-east-1:000000000000:t.fifo");
    CHECK(refused(&r, "topic: FIFO"));
    free(r.topic);
    r.topic = xstrdup("arn:aws-cn:sns:cn-north-1:000000000000:T_1-x");
    char err[256];
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    sched_rec_free(&r);
}

static void test_refused_payload(void)
{
    sched_rec r;
    make(&r, "x");
    sched_set_payload(&r, "", 0);
    CHECK(refused(&r, "payload: empty"));
    sched_set_payload(&r, "a\0b", 3);
    CHECK(refused(&r, "payload: contains a NUL"));
    sched_set_payload(&r, "\xc3\x28", 2);
    CHECK(refused(&r, "payload: not valid UTF-8"));
    /* Exactly at the limit with the two attributes counted in, and
     * delayer's own: delayer.id "x", delayer.due (24 bytes), delayer.attempt
     * at its largest (19 digits), each name + "String" + value. */
    size_t attrs = strlen("alpha") + 6 + 3 + strlen("zeta") + 6 + 1;
    size_t own = (10 + 6 + 1) + (11 + 6 + 24) + (15 + 6 + 19);
    size_t n = SCHED_MSG_MAX - attrs - own;
    char *big = xmalloc(SCHED_MSG_MAX + 2);
    memset(big, 'p', SCHED_MSG_MAX + 1);
    sched_set_payload(&r, big, n);
    char err[256];
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    sched_set_payload(&r, big, n + 1);
    CHECK(refused(&r, "payload: 262022 bytes, at most 262021 allowed here"));
    /* The old "documented limit": the payload alone at 256 KiB. */
    sched_set_payload(&r, big, SCHED_MSG_MAX);
    CHECK(refused(&r, "payload: 262144 bytes, at most 262021 allowed"));
    free(big);
    sched_rec_free(&r);
}

/* The largest schedule the check accepts: a 512-byte id, 7 attributes of
 * its own and the payload filled up to the limit. What SNS counts, summed
 * here independently from what sns-publish sends (sched_sns_attrs_build:
 * name + DataType + value of each attribute, plus the body), is at most
 * 262,144 bytes, for any attempt number; one byte more is refused with one
 * line naming the payload. */
static void test_sns_size_largest_schedule(void)
{
    sched_rec r;
    char err[512], id[SCHED_ID_MAX + 1];
    make(&r, NULL);
    memset(id, 'i', SCHED_ID_MAX);
    id[SCHED_ID_MAX] = 0;
    r.id = xstrdup(id);
    for (int i = 2; i < SCHED_USER_ATTRS_MAX; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "a%d", i);
        sched_attr_add(&r, nm, "v");
    }
    CHECK_INT(r.nattrs, 7);
    size_t own = (10 + 6 + SCHED_ID_MAX) + (11 + 6 + 24) + (15 + 6 + 19);
    size_t user = (5 + 6 + 3) + (4 + 6 + 1) + 5 * (2 + 6 + 1);
    size_t n = SCHED_MSG_MAX - own - user;
    char *big = xmalloc(n + 2);
    memset(big, 'p', n + 1);
    sched_set_payload(&r, big, n);
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    int64_t attempts[] = {1, 12345, SCHED_ATTEMPT_MAX};
    for (int k = 0; k < 3; k++) {
        sched_sns_attrs a;
        sched_sns_attrs_build(&r, attempts[k], &a);
        CHECK_INT(a.n, SCHED_ATTRS_MAX);
        CHECK_INT(a.dropped, 0);
        CHECK_STR(a.kv[0].name, "delayer.id");
        CHECK_STR(a.kv[0].value, id);
        CHECK_STR(a.kv[1].name, "delayer.due");
        CHECK_STR(a.kv[1].value, "2026-11-21T14:13:07.250Z");
        CHECK_STR(a.kv[2].name, "delayer.attempt");
        size_t total = r.psize;
        for (size_t i = 0; i < a.n; i++) total += strlen(a.kv[i].name) + strlen("String") + strlen(a.kv[i].value);
        CHECK(total <= 262144);
        CHECK_INT(total, sched_sns_size(&r, &a));
        if (attempts[k] == SCHED_ATTEMPT_MAX) CHECK_INT(total, 262144);
    }
    sched_set_payload(&r, big, n + 1);
    CHECK(refused(&r, "payload: 261466 bytes, at most 261465 allowed"));
    /* Attributes alone over the limit: named as such. */
    sched_set_payload(&r, "x", 1);
    char *huge = xmalloc(SCHED_MSG_MAX + 1);
    memset(huge, 'h', SCHED_MSG_MAX);
    huge[SCHED_MSG_MAX] = 0;
    free(r.attrs[0].value);
    r.attrs[0].value = huge;
    CHECK(refused(&r, "attr: 262822 bytes of message attributes, over"));
    free(big);
    sched_rec_free(&r);
}

/* A record older than the attribute limits (10 attributes of its own, one
 * named like delayer's): sns-publish's list keeps delayer's three first,
 * fills up with the record's and drops the excess, never delayer's. The
 * creation check refuses such a record; the check on the way to SNS lets
 * it through. */
static void test_sns_attrs_old_record(void)
{
    sched_rec r;
    char err[512];
    make(&r, "old-1");
    sched_attr_add(&r, "delayer.id", "forged");
    for (int i = 0; i < 8; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "k%d", i);
        sched_attr_add(&r, nm, "v");
    }
    CHECK_INT(r.nattrs, 11);
    sched_sns_attrs a;
    sched_sns_attrs_build(&r, 3, &a);   /* unsorted, as read from the table */
    CHECK_STR(a.kv[3].name, "alpha");   /* the first 7 by name: the same at every attempt */
    CHECK_STR(a.kv[4].name, "k0");
    CHECK_STR(a.kv[9].name, "k5");
    CHECK_INT(sched_check_stored(&r, err, sizeof err), 0);
    sched_sns_attrs_build(&r, 3, &a);
    CHECK_INT(a.n, SCHED_ATTRS_MAX);
    CHECK_STR(a.kv[0].name, "delayer.id");
    CHECK_STR(a.kv[0].value, "old-1");
    CHECK_STR(a.kv[1].name, "delayer.due");
    CHECK_STR(a.kv[2].name, "delayer.attempt");
    CHECK_STR(a.kv[2].value, "3");
    CHECK_INT(a.dropped, 3);   /* 10 of its own after "delayer.id": 7 fit */
    for (size_t i = 3; i < a.n; i++) CHECK(strncmp(a.kv[i].name, "delayer.", 8) != 0);
    CHECK(sched_check_message(&r, err, sizeof err) < 0);
    sched_rec_free(&r);
    /* A record not created yet: its id will be a ULID, counted as such. */
    make(&r, NULL);
    sched_sns_attrs_build(&r, 1, &a);
    CHECK_INT(strlen(a.kv[0].value), SCHED_ULID_LEN);
    sched_rec_free(&r);
}

static void test_refused_attrs(void)
{
    const char *bad[] = {"AWS.x", "amazon.y", ".a", "a.", "a..b", "a b", "ü"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sched_rec r;
        make(&r, "x");
        sched_attr_add(&r, bad[i], "v");
        CHECK(refused(&r, "attr: "));
        sched_rec_free(&r);
    }
    sched_rec r;
    char err[256];
    make(&r, "x");
    sched_attr_add(&r, "alpha", "again");
    CHECK(refused(&r, "attr: \"alpha\" given twice"));
    sched_rec_free(&r);
    make(&r, "x");
    sched_attr_add(&r, "empty", "");
    CHECK(refused(&r, "attr: \"empty\": empty value"));
    sched_rec_free(&r);
    /* 7 attributes of its own at most: SNS delivers 10, delayer adds 3. */
    make(&r, "x");
    for (int i = 0; i < 5; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "k%d", i);
        sched_attr_add(&r, nm, "v");
    }
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    sched_attr_add(&r, "k5", "v");
    CHECK(refused(&r, "attr: 8 attributes, at most 7 allowed"));
    sched_rec_free(&r);
    /* delayer's own names are reserved, in any case */
    const char *ours[] = {"delayer.id", "delayer.due", "delayer.attempt", "delayer.x", "Delayer.Id"};
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++) {
        make(&r, "x");
        sched_attr_add(&r, ours[i], "v");
        CHECK(refused(&r, "attr: "));
        sched_rec_free(&r);
    }
    make(&r, "x");
    sched_attr_add(&r, "delayer.id", "forged");
    char e2[256];
    sched_validate(&r, NOW, &LIM, e2, sizeof e2);
    CHECK_STR(e2, "attr: \"delayer.id\": names starting with delayer. are reserved for delayer's own attributes");
    sched_rec_free(&r);
    make(&r, "x");
    sched_attr_add(&r, "delayerx", "v");   /* only the prefix with its dot */
    CHECK_INT(sched_validate(&r, NOW, &LIM, err, sizeof err), 0);
    sched_rec_free(&r);
    make(&r, "x");
    CHECK_INT(sched_attr_parse(&r, "novalue", err, sizeof err), -1);
    CHECK_STR(err, "attr: expected key=value, got \"novalue\"");
    CHECK_INT(sched_attr_parse(&r, "=v", err, sizeof err), -1);
    CHECK_INT(sched_attr_parse(&r, "k=a=b", err, sizeof err), 0);
    CHECK_STR(r.attrs[r.nattrs - 1].value, "a=b");
    sched_rec_free(&r);
}

static void test_ulid(void)
{
    char a[27], b[27], c[27];
    CHECK_INT(sched_ulid(a, NOW), 0);
    CHECK_INT(strlen(a), 26);
    CHECK(strspn(a, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") == 26);
    /* The time part: 2026-11-21 encodes to "01K..." era; a fixed prefix. */
    char want[11];
    int64_t t = NOW;
    for (int i = 9; i >= 0; i--, t >>= 5) want[i] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"[t & 31];
    want[10] = 0;
    CHECK(strncmp(a, want, 10) == 0);
    CHECK_INT(sched_ulid(b, NOW), 0);          /* same ms: still increasing */
    CHECK(strcmp(a, b) < 0);
    CHECK_INT(sched_ulid(c, NOW - 5000), 0);   /* clock stepped back: still increasing */
    CHECK(strcmp(b, c) < 0);
    char prev[27];
    strcpy(prev, c);
    for (int i = 1; i <= 2000; i++) {
        char x[27];
        sched_ulid(x, NOW + i / 3);
        CHECK(strcmp(prev, x) < 0);
        strcpy(prev, x);
    }
}

static void test_chash(void)
{
    sched_rec r, s;
    char err[256];
    make(&r, "a");
    make(&s, "b");
    sched_validate(&r, NOW, &LIM, err, sizeof err);
    sched_validate(&s, NOW, &LIM, err, sizeof err);
    sched_chash(&r);
    sched_chash(&s);
    CHECK_INT(strlen(r.chash), 64);
    CHECK_STR(r.chash, s.chash); /* the id is not content */
    s.due++;
    sched_chash(&s);
    CHECK(strcmp(r.chash, s.chash) != 0);
    s.due--;
    /* Moving bytes between payload and an attribute changes the hash. */
    free(s.attrs[0].value);
    s.attrs[0].value = xstrdup("x=yy");
    sched_chash(&s);
    CHECK(strcmp(r.chash, s.chash) != 0);
    sched_rec_free(&r);
    sched_rec_free(&s);
}

/* The pinned hash (computed independently with Python's hashlib over the
 * documented encoding): must never change, stored items compare it. */
#define PINNED_CHASH "54059347151a01c5daaed12df33d448c394cd40263e85ad1938c6cdee9a53751"
static void test_chash_pinned(void)
{
    sched_rec r;
    sched_rec_init(&r);
    r.due = 1795269787250LL;
    r.topic = xstrdup(ARN);
    sched_set_payload(&r, "p", 1);
    sched_attr_add(&r, "k", "v");
    sched_chash(&r);
    CHECK_STR(r.chash, PINNED_CHASH);
    sched_rec_free(&r);
}

static void test_shard_keys(void)
{
    buf_t b = BUF_INIT;
    CHECK_INT(sched_fnv1a("", 0), 2166136261u);
    CHECK_INT(sched_fnv1a("a", 1), 0xe40c292cu);
    CHECK_INT(sched_fnv1a("foobar", 6), 0xbf9cf968u);
    CHECK_INT(sched_shard("foobar", 8), 0xbf9cf968u % 8);
    CHECK_INT(sched_shard("x", 0), 0);
    sched_due_pk(&b, NOW, 3);
    CHECK_STR(buf_str(&b), "29921163#3");
    sched_due_sk(&b, NOW, "id#1");
    CHECK_STR(buf_str(&b), "1795269787250#id#1");
    sched_due_sk(&b, 5, "x");
    CHECK_STR(buf_str(&b), "0000000000005#x");
    sched_st_pk(&b, SCHED_FAILED, NOW);
    CHECK_STR(buf_str(&b), "FAILED#2026-11");
    sched_st_sk(&b, NOW, "x");
    CHECK_STR(buf_str(&b), "2026-11-21T14:03:07.250Z#x");
    char m[8];
    sched_month(NOW, m);
    CHECK_STR(m, "2026-11");
    int64_t ms = sched_month_start(NOW);
    char t[32];
    time_fmt(ms, t);
    CHECK_STR(t, "2026-11-01T00:00:00.000Z");
    time_fmt(sched_prev_month(ms), t);
    CHECK_STR(t, "2026-10-01T00:00:00.000Z");
    time_fmt(sched_prev_month(time_days_from_civil(2026, 1, 15) * 86400000), t);
    CHECK_STR(t, "2025-12-01T00:00:00.000Z");
    CHECK_INT(sched_index_time(10, 20), 20);
    CHECK_INT(sched_index_time(30, 20), 30);
    buf_free(&b);
}

static void test_states(void)
{
    for (int s = 0; s < SCHED_NSTATES; s++) CHECK_INT(sched_state_parse(sched_state_name(s)), s);
    CHECK_INT(sched_state_parse("new"), -1);
    CHECK(sched_state_final(SCHED_PUBLISHED) && sched_state_final(SCHED_INVALID));
    CHECK(!sched_state_final(SCHED_NEW) && !sched_state_final(SCHED_ENQUEUED));
    CHECK(sched_state_waiting(SCHED_ENQUEUED) && !sched_state_waiting(SCHED_FAILED));
}

/* Item write -> parse -> read gives the same record back. */
static void test_item_round_trip(void)
{
    sched_rec r, back;
    char err[256];
    buf_t b = BUF_INIT;
    json_w w;
    json_doc d;
    make(&r, "we\"ird #id :x\n");
    sched_validate(&r, NOW, &LIM, err, sizeof err);
    sched_chash(&r);
    r.state = SCHED_ENQUEUED;
    r.lease = r.due + 30000;
    sched_hist_add(&r, SCHED_ENQUEUED, NOW);
    jw_init(&w, &b);
    sched_item_write(&w, &r, 5);
    CHECK_INT(json_parse(&d, b.p, b.len), 0);
    sched_rec_init(&back);
    CHECK_INT(sched_item_read(&d, 0, &back, err, sizeof err), 0);
    CHECK_STR(back.id, r.id);
    CHECK_INT(back.state, SCHED_ENQUEUED);
    CHECK_INT(back.due, r.due);
    CHECK_STR(back.topic, ARN);
    CHECK_INT(back.psize, 14);
    CHECK(memcmp(back.payload, r.payload, 14) == 0);
    CHECK_INT(back.nattrs, 2);
    CHECK_STR(back.attrs[1].name, "zeta");
    CHECK_STR(back.chash, r.chash);
    CHECK_INT(back.lease, r.lease);
    CHECK_INT(back.nhist, 1);
    CHECK_INT(back.hist[0].at, NOW);
    CHECK_INT(back.full, 1);
    buf_t s = BUF_INIT;
    CHECK_INT(ddb_get_s(&d, 0, "due_pk", &s), 0);
    CHECK_STR(buf_str(&s), "29921173#5");
    CHECK_INT(ddb_get_s(&d, 0, "st_pk", &s), 0);
    CHECK_STR(buf_str(&s), "ENQUEUED#2026-11");
    CHECK(!ddb_has(&d, 0, "expires"));
    buf_free(&s);
    json_free(&d);
    sched_rec_free(&back);
    sched_rec_free(&r);
    buf_free(&b);
}

static void test_wire_round_trip(void)
{
    sched_rec r;
    sched_wire w, back;
    char err[256];
    buf_t b = BUF_INIT;
    make(&r, "line\nbreak");
    sched_validate(&r, NOW, &LIM, err, sizeof err);
    sched_chash(&r);
    r.lease = NOW + 1;
    sched_wire_init(&w);
    sched_wire_from_rec(&w, &r);
    w.mid = xstrdup("m-1");
    w.rc = 3;
    w.rt = NOW - 2500;
    w.error = xstrdup("KMSThrottling: slow \"down\"");
    sched_wire_write(&b, &w);
    CHECK(b.len > 0 && b.p[b.len - 1] == '\n');
    CHECK(memchr(b.p, '\n', b.len - 1) == NULL); /* exactly one line */
    sched_wire_init(&back);
    CHECK_INT(sched_wire_read(b.p, b.len, &back, err, sizeof err), 0);
    CHECK_STR(back.r.id, "line\nbreak");
    CHECK_INT(back.r.due, r.due);
    CHECK_STR(back.r.topic, ARN);
    CHECK_INT(back.r.psize, r.psize);
    CHECK_STR(back.r.payload, r.payload);
    CHECK_INT(back.r.nattrs, 2);
    CHECK_STR(back.r.attrs[0].value, "x=y");
    CHECK_STR(back.r.chash, r.chash);
    CHECK_INT(back.r.lease, NOW + 1);
    CHECK_STR(back.mid, "m-1");
    CHECK_INT(back.rc, 3);
    CHECK_INT(back.rt, NOW - 2500);
    CHECK_STR(back.error, w.error);
    CHECK(back.rh == NULL && back.report == NULL && !back.nopayload);
    /* Written again, byte for byte the same line. */
    buf_t b2 = BUF_INIT;
    sched_wire_write(&b2, &back);
    CHECK_STR(buf_str(&b2), buf_str(&b));
    /* nopayload form */
    back.nopayload = 1;
    buf_reset(&b2);
    sched_wire_write(&b2, &back);
    CHECK(strstr(buf_str(&b2), "\"payload\"") == NULL);
    CHECK_INT(sched_wire_read(b2.p, b2.len, &w, err, sizeof err), 0);
    CHECK(w.nopayload && w.r.payload == NULL);
    /* Refusals */
    CHECK_INT(sched_wire_read("{\"due\":1}", 9, &w, err, sizeof err), -1);
    CHECK_STR(err, "id: missing");
    const char *nodue = "{\"id\":\"a\",\"due\":\"x\",\"topic\":\"t\",\"chash\":\"h\",\"payload\":\"p\"}";
    CHECK_INT(sched_wire_read(nodue, strlen(nodue), &w, err, sizeof err), -1);
    CHECK_STR(err, "due: expected an integer");
    CHECK_INT(sched_wire_read("{", 1, &w, err, sizeof err), -1);
    CHECK(strncmp(err, "wire: ", 6) == 0);
    sched_wire_free(&w);
    sched_wire_free(&back);
    sched_rec_free(&r);
    buf_free(&b);
    buf_free(&b2);
}

/* Found by fuzzing (tests/fuzz/regress/fuzz_wire/): a chash that was not 64
 * hex digits was silently cut to 64 bytes, possibly inside a UTF-8 sequence,
 * so the record written back differed from the one read; a longer value
 * whose first 64 bytes are the real hash passed as that hash. */
static void test_wire_chash_strict(void)
{
    sched_wire w;
    char err[256], line[512];
    const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const char *bad[] = {"h", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
                         "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\\u00e9"};
    sched_wire_init(&w);
    snprintf(line, sizeof line, "{\"id\":\"a\",\"due\":1,\"topic\":\"t\",\"chash\":\"%s\",\"payload\":\"p\"}", hex);
    CHECK_INT(sched_wire_read(line, strlen(line), &w, err, sizeof err), 0);
    CHECK_STR(w.r.chash, hex);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(line, sizeof line, "{\"id\":\"a\",\"due\":1,\"topic\":\"t\",\"chash\":\"%s\",\"payload\":\"p\"}", bad[i]);
        CHECK_INT(sched_wire_read(line, strlen(line), &w, err, sizeof err), -1);
        CHECK_STR(err, "chash: expected 64 lowercase hex digits");
    }
    snprintf(line, sizeof line, "{\"id\":\"a\",\"due\":1,\"topic\":\"t\",\"chash\":\"%.63s\\u0000\",\"payload\":\"p\"}", hex);
    CHECK_INT(sched_wire_read(line, strlen(line), &w, err, sizeof err), -1);
    sched_wire_free(&w);
}

static void test_json_output(void)
{
    sched_rec r;
    char err[256];
    buf_t b = BUF_INIT;
    make(&r, "x");
    sched_validate(&r, NOW, &LIM, err, sizeof err);
    sched_hist_add(&r, SCHED_NEW, NOW);
    r.full = 1;
    sched_json(&b, &r, 0);
    json_doc d;
    CHECK_INT(json_parse(&d, b.p, b.len), 0);
    CHECK(json_streq(&d, json_get(&d, 0, "due"), "2026-11-21T14:13:07.250Z"));
    CHECK(json_type(&d, json_get(&d, 0, "last_error")) == JSON_NULL);
    CHECK(json_get(&d, 0, "payload") < 0);
    CHECK(json_streq(&d, json_get(&d, json_at(&d, json_get(&d, 0, "history"), 0), "state"), "NEW"));
    json_free(&d);
    buf_reset(&b);
    sched_json(&b, &r, 1);
    CHECK(strstr(buf_str(&b), "\"payload\":\"hello \\\"world\\\"\\n\"") != NULL);
    char q[16];
    sched_quote(q, sizeof q, "a\nb\x01" "cdefghijklmnop", 8);
    CHECK_STR(q, "a?b?cdef...");
    sched_rec_free(&r);
    buf_free(&b);
}

T_MAIN(T(test_valid_record), T(test_refused_id), T(test_refused_due), T(test_refused_topic),
       T(test_refused_payload), T(test_refused_attrs), T(test_sns_size_largest_schedule),
       T(test_sns_attrs_old_record), T(test_ulid), T(test_chash), T(test_chash_pinned),
       T(test_shard_keys), T(test_states), T(test_item_round_trip), T(test_wire_round_trip), T(test_wire_chash_strict),
       T(test_json_output))
