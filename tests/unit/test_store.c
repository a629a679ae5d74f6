/* test_store: unit tests of lib/store*.c's pure parts (configuration from
 * the environment, prefix check, counter batching, re-claim back-off,
 * list cursors) and, when run with arguments, a hook for the shell suites:
 *
 *   test_store hook PREFIX OP ARGS...
 *     claim ID LEASE | reclaim ID SEEN_LEASE NEW_LEASE | unclaim ID LEASE
 *     commit ID MSG_ID [CHASH] | unpublish ID MSG_ID ERROR LEASE | fail ID ERROR
 *     invalid ID ERROR | due MINUTE SHARD | ckpt SHARD [MINUTE] | count | item ID
 *
 * Each OP runs exactly the store function the pipeline stages call (the
 * wire fields come from the stored record, as a stage would have them) and
 * prints "OK <previous state>", "LOST <current state>" or "NOTFOUND"; exit
 * 0, 1 (lost), 3 (not found) or 111. `count` prints the number of items in
 * the schedule table (a Scan: tests only); `item` the raw DynamoDB item
 * ("{}" when absent). commit's CHASH stands for a message carrying other
 * content (a left-over of a deleted record). Without arguments: unit tests. */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>

#include "t.h"
#include "json.h"
#include "sched.h"
#include "store.h"
#include "timeutil.h"

/* ------------------------------------------------------------ unit tests */

static void clear_env(void)
{
    const char *v[] = {"DELAYER_PREFIX", "DELAYER_WINDOW", "DELAYER_GRACE", "DELAYER_SHARDS",
                       "DELAYER_RETENTION", "DELAYER_HORIZON", "DELAYER_EVENTS"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) unsetenv(v[i]);
}

static void test_conf_defaults(void)
{
    store_conf c;
    char err[256];
    clear_env();
    CHECK_INT(store_conf_env(&c, err, sizeof err), 0);
    CHECK(c.prefix == NULL);
    CHECK_INT(c.window_ms, -1);
    CHECK_INT(c.shards, -1);
    CHECK_INT(c.events, 1);
}

static void test_conf_values(void)
{
    store_conf c;
    char err[256];
    clear_env();
    setenv("DELAYER_PREFIX", "p-1", 1);
    setenv("DELAYER_WINDOW", "10m", 1);
    setenv("DELAYER_GRACE", "5", 1);
    setenv("DELAYER_SHARDS", "16", 1);
    setenv("DELAYER_RETENTION", "1d", 1);
    setenv("DELAYER_HORIZON", "30d", 1);
    setenv("DELAYER_EVENTS", "0", 1);
    CHECK_INT(store_conf_env(&c, err, sizeof err), 0);
    CHECK_STR(c.prefix, "p-1");
    CHECK_INT(c.window_ms, 600000);
    CHECK_INT(c.grace_ms, 5000);
    CHECK_INT(c.shards, 16);
    CHECK_INT(c.retention_s, 86400);
    CHECK_INT(c.horizon_ms, 30LL * 86400000);
    CHECK_INT(c.events, 0);
    clear_env();
}

static void test_conf_refused(void)
{
    struct { const char *var, *val, *want; } bad[] = {
        {"DELAYER_WINDOW", "901s", "DELAYER_WINDOW: at most 900s"},
        {"DELAYER_WINDOW", "soon", "DELAYER_WINDOW: "},
        {"DELAYER_SHARDS", "0", "DELAYER_SHARDS: "},
        {"DELAYER_SHARDS", "8x", "DELAYER_SHARDS: "},
        {"DELAYER_EVENTS", "maybe", "DELAYER_EVENTS: "},
        {"DELAYER_PREFIX", "a b", "DELAYER_PREFIX: "},
        {"DELAYER_RETENTION", "0s", "DELAYER_RETENTION: "},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        store_conf c;
        char err[256] = "";
        clear_env();
        setenv(bad[i].var, bad[i].val, 1);
        CHECK_INT(store_conf_env(&c, err, sizeof err), -1);
        CHECK(strncmp(err, bad[i].want, strlen(bad[i].want)) == 0);
    }
    clear_env();
}

static void test_prefix(void)
{
    char err[256];
    char big[80];
    memset(big, 'a', 61);
    big[61] = 0;
    CHECK_INT(store_check_prefix("delayer", err, sizeof err), 0);
    CHECK_INT(store_check_prefix("a_b-9", err, sizeof err), 0);
    CHECK_INT(store_check_prefix("", err, sizeof err), -1);
    CHECK_INT(store_check_prefix(big, err, sizeof err), -1);
    CHECK_INT(store_check_prefix("a.b", err, sizeof err), -1);
    CHECK(strncmp(err, "prefix: ", 8) == 0);
}

static void test_counts(void)
{
    store_counts *c = store_counts_new();
    CHECK_INT(store_counts_pending(c), 0);
    store_counts_add(c, SCHED_NEW, "arn:a", 1);
    store_counts_add(c, SCHED_NEW, "arn:a", 1);
    store_counts_add(c, SCHED_NEW, "arn:b", 1);
    /* NEW total, NEW#a, NEW#b */
    CHECK_INT(store_counts_pending(c), 3);
    store_counts_move(c, SCHED_NEW, SCHED_CANCELLED, "arn:b");
    /* NEW#b back to 0; CANCELLED total and CANCELLED#b appear */
    CHECK_INT(store_counts_pending(c), 4);
    store_counts_move(c, SCHED_NEW, SCHED_NEW, "arn:a");   /* no change */
    store_counts_add(c, -1, "arn:a", 1);                   /* ignored */
    store_counts_add(c, SCHED_NSTATES, "arn:a", 1);        /* ignored */
    CHECK_INT(store_counts_pending(c), 4);
    store_counts_move(c, -1, SCHED_NEW, NULL);             /* creation without topic */
    store_counts_move(c, SCHED_CANCELLED, -1, "arn:b");    /* deletion */
    CHECK_INT(store_counts_pending(c), 2);                 /* NEW total 3, NEW#a 2 */
    store_counts_free(c);
}

static void test_reclaim_lease(void)
{
    store s;
    memset(&s, 0, sizeof s);
    s.conf.grace_ms = 30000;
    CHECK_INT(store_reclaim_lease(&s, 1000, 0), 31000);
    CHECK_INT(store_reclaim_lease(&s, 1000, 1), 61000);
    CHECK_INT(store_reclaim_lease(&s, 1000, 5), 1000 + 30000 * 32);
    CHECK_INT(store_reclaim_lease(&s, 1000, 50), 1000 + 30000 * 32);
}

static void test_cursor_check(void)
{
    char err[128];
    CHECK_INT(store_cursor_check("nonsense!", err, sizeof err), -1);
    CHECK_STR(err, "cursor: not a cursor printed by delayer list");
    CHECK_INT(store_cursor_check("", err, sizeof err), -1);
    /* base64url of "2026-11-21T14:03:07.250Z#x" */
    CHECK_INT(store_cursor_check("MjAyNi0xMS0yMVQxNDowMzowNy4yNTBaI3g", err, sizeof err), 0);
}

/* ------------------------------------------------------------------ hook */

static int hook_result(store *s, int rc, const sched_rec *r)
{
    if (rc == STORE_OK) printf("OK %s\n", sched_state_name(r->state));
    else if (rc == STORE_LOST) printf("LOST %s\n", sched_state_name(r->state));
    else if (rc == STORE_NOTFOUND) printf("NOTFOUND\n");
    else fprintf(stderr, "test_store: %s\n", s->err);
    return rc == STORE_OK ? 0 : rc == STORE_LOST ? 1 : rc == STORE_NOTFOUND ? 3 : 111;
}

static int64_t num(const char *s)
{
    return strtoll(s, NULL, 10);
}

/* The wire a stage would hold for id (content from the table). */
static int hook_wire(store *s, const char *id, sched_wire *w)
{
    sched_rec r;
    sched_rec_init(&r);
    int rc = store_get(s, id, &r);
    if (rc == STORE_OK) sched_wire_from_rec(w, &r);
    sched_rec_free(&r);
    return rc;
}

static int hook_count(store *s)
{
    buf_t req = BUF_INIT, resp = BUF_INIT, lek = BUF_INIT;
    aws_err e;
    int64_t total = 0;
    int rc = 0;
    do {
        json_doc d;
        int64_t n = 0;
        buf_reset(&req);
        buf_printf(&req, "{\"TableName\":\"%s\",\"Select\":\"COUNT\"", s->table);
        if (lek.len) buf_printf(&req, ",\"ExclusiveStartKey\":%s", lek.p);
        buf_adds(&req, "}");
        if (aws_json_call(s->ddb, "DynamoDB_20120810.Scan", req.p, req.len, &resp, &e) < 0) {
            fprintf(stderr, "test_store: Scan: %s: %s\n", e.code, e.message);
            rc = 111;
            break;
        }
        json_parse(&d, resp.p, resp.len);
        json_i64(&d, json_get(&d, 0, "Count"), &n);
        total += n;
        int t = json_get(&d, 0, "LastEvaluatedKey");
        size_t rn = 0;
        const char *raw = t >= 0 ? json_raw(&d, t, &rn) : NULL;
        buf_reset(&lek);
        if (raw) buf_add(&lek, raw, rn);
        json_free(&d);
    } while (lek.len);
    if (!rc) printf("%" PRId64 "\n", total);
    buf_free(&req);
    buf_free(&resp);
    buf_free(&lek);
    return rc;
}

static int hook_item(store *s, const char *id)
{
    buf_t req = BUF_INIT, resp = BUF_INIT;
    aws_err e;
    json_w w;
    int rc = 0;
    jw_init(&w, &req);
    jw_obj(&w);
    jw_key(&w, "TableName");
    jw_str(&w, s->table);
    jw_key(&w, "Key");
    jw_obj(&w);
    jw_key(&w, "id");
    jw_obj(&w);
    jw_key(&w, "S");
    jw_str(&w, id);
    jw_obj_end(&w);
    jw_obj_end(&w);
    jw_key(&w, "ConsistentRead");
    jw_bool(&w, 1);
    jw_obj_end(&w);
    if (aws_json_call(s->ddb, "DynamoDB_20120810.GetItem", req.p, req.len, &resp, &e) < 0) {
        fprintf(stderr, "test_store: GetItem: %s: %s\n", e.code, e.message);
        rc = 111;
    } else {
        json_doc d;
        size_t n = 2;
        const char *raw = "{}";
        if (json_parse(&d, resp.p, resp.len) == 0 && json_get(&d, 0, "Item") >= 0)
            raw = json_raw(&d, json_get(&d, 0, "Item"), &n);
        printf("%.*s\n", (int)n, raw);
        json_free(&d);
    }
    buf_free(&req);
    buf_free(&resp);
    return rc;
}

static int hook_due(store *s, int64_t minute, int shard)
{
    store_due_rows rows = {0};
    int rc = store_due_query(s, minute, shard, INT64_MIN, INT64_MAX, &rows);
    for (size_t i = 0; rc == STORE_OK && i < rows.n; i++)
        printf("%s %" PRId64 " %s %" PRId64 " %" PRId64 "\n", rows.v[i].id, rows.v[i].due,
               sched_state_name(rows.v[i].state), rows.v[i].lease, rows.v[i].claims);
    store_due_rows_free(&rows);
    if (rc != STORE_OK) fprintf(stderr, "test_store: %s\n", s->err);
    return rc == STORE_OK ? 0 : 111;
}

static int hook_ckpt(store *s, int argc, char **argv)
{
    int64_t m;
    if (argc >= 2) {
        int rc = store_ckpt_advance(s, (int)num(argv[0]), num(argv[1]));
        printf("%s\n", rc == STORE_OK ? "OK" : rc == STORE_LOST ? "LOST" : "ERR");
        return rc == STORE_OK ? 0 : rc == STORE_LOST ? 1 : 111;
    }
    int rc = store_ckpt_get(s, (int)num(argv[0]), &m);
    printf("%" PRId64 "\n", m);
    return rc == STORE_ERR ? 111 : 0;
}

static int hook_op(store *s, const char *op, int argc, char **argv)
{
    sched_rec r;
    sched_wire w;
    int rc = STORE_ERR, code;
    sched_rec_init(&r);
    sched_wire_init(&w);
    if (!strcmp(op, "count")) return hook_count(s);
    if (!strcmp(op, "item") && argc == 1) return hook_item(s, argv[0]);
    if (!strcmp(op, "due") && argc == 2) return hook_due(s, num(argv[0]), (int)num(argv[1]));
    if (!strcmp(op, "ckpt") && argc >= 1) return hook_ckpt(s, argc, argv);
    if (argc < 1) return 100;
    const char *id = argv[0];
    if (!strcmp(op, "claim") && argc == 2) rc = store_claim(s, id, num(argv[1]), &r);
    else if (!strcmp(op, "unclaim") && argc == 2) {
        if ((rc = hook_wire(s, id, &w)) == STORE_OK) rc = store_unclaim(s, id, w.r.due, num(argv[1]), &r);
    } else if (!strcmp(op, "reclaim") && argc == 3) {
        if ((rc = hook_wire(s, id, &w)) == STORE_OK) rc = store_reclaim(s, id, w.r.due, num(argv[1]), num(argv[2]), &r);
    } else if (!strcmp(op, "commit") && (argc == 2 || argc == 3)) {
        if ((rc = hook_wire(s, id, &w)) == STORE_OK) {
            if (argc == 3) snprintf(w.r.chash, sizeof w.r.chash, "%s", argv[2]);
            rc = store_commit(s, &w, argv[1], &r);
        }
    } else if (!strcmp(op, "unpublish") && argc == 4) {
        if ((rc = hook_wire(s, id, &w)) == STORE_OK) rc = store_unpublish(s, &w, argv[1], argv[2], num(argv[3]), &r);
    } else if (!strcmp(op, "fail") && argc == 2) {
        if ((rc = hook_wire(s, id, &w)) == STORE_OK) rc = store_fail(s, &w, argv[1], &r);
    } else if (!strcmp(op, "invalid") && argc == 2) {
        rc = store_invalid(s, id, argv[1], &r);
    } else {
        fprintf(stderr, "test_store: hook: bad operation or arguments\n");
        return 100;
    }
    code = hook_result(s, rc, &r);
    sched_rec_free(&r);
    sched_wire_free(&w);
    return code;
}

static int hook(int argc, char **argv)
{
    store_conf c;
    char err[256];
    if (argc < 2) return 100;
    if (store_conf_env(&c, err, sizeof err) < 0) return fprintf(stderr, "test_store: %s\n", err), 100;
    c.prefix = argv[0];
    c.events = 0;
    store *s = store_open(&c, err, sizeof err);
    if (!s) return fprintf(stderr, "test_store: %s\n", err), 111;
    int code = store_load(s) == STORE_OK ? hook_op(s, argv[1], argc - 2, argv + 2) : 111;
    if (code == 111 && s->err[0]) fprintf(stderr, "test_store: %s\n", s->err);
    store_close(s);
    return code;
}

static int units(void)
{
    static const t_case cases[] = {
        T(test_conf_defaults), T(test_conf_values), T(test_conf_refused), T(test_prefix),
        T(test_counts), T(test_reclaim_lease), T(test_cursor_check),
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]));
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "hook")) return hook(argc - 2, argv + 2);
    return units();
}
