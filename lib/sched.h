/* sched: the schedule model (docs/schema.md): states, fields, validation,
 * ids, content hash, shard and index keys, the DynamoDB item form, the
 * NDJSON "wire" form carried between pipeline stages and in SQS bodies, and
 * the JSON the CLI prints. Pure code: no I/O except /dev/urandom-style
 * randomness for ids.
 *
 * Errors: functions returning -1 write one line "<field>: <problem>" into
 * err (user text quoted in it has control characters replaced by '?'). */
#ifndef DELAYER_SCHED_H
#define DELAYER_SCHED_H
#include <stddef.h>
#include <stdint.h>
#include "buf.h"
#include "json.h"

enum sched_state {
    SCHED_NEW = 0, SCHED_ENQUEUED, SCHED_PUBLISHED, SCHED_CANCELLED, SCHED_FAILED, SCHED_INVALID,
    SCHED_NSTATES
};

#define SCHED_ID_MAX        512       /* bytes */
#define SCHED_MSG_MAX       262144    /* SNS: body + attribute names, types, values */
#define SCHED_ATTRS_MAX     10        /* SNS -> SQS raw delivery keeps at most 10 */
/* delayer's own message attributes, sent first with every message:
 * delayer.id (consumers de-duplicate on it), delayer.due, delayer.attempt.
 * They always fit: a schedule may carry at most SCHED_USER_ATTRS_MAX
 * attributes of its own, none named "delayer.*". */
#define SCHED_OWN_ATTRS      3
#define SCHED_USER_ATTRS_MAX (SCHED_ATTRS_MAX - SCHED_OWN_ATTRS)
#define SCHED_ATTR_PREFIX    "delayer."
#define SCHED_ATTR_NAME_MAX 256
#define SCHED_WINDOW_MAX    900000    /* SQS DelaySeconds limit, ms */
/* DelaySeconds = floor((due - now - SCHED_DELAY_MARGIN_MS) / 1 s): the
 * message becomes visible 0.5-1.5 s before due, never less, so that
 * sns-publish has it in time to commit (--commit-lead) before due even when
 * sqs-drain paces its receives (--pace, up to 300 ms). Plain
 * floor((due - now) / 1 s) left 5 % of messages arriving within 50 ms of
 * due: committed late, published late (issue 6's bench). */
#define SCHED_DELAY_MARGIN_MS 500
#define SCHED_ULID_LEN      26

const char *sched_state_name(int st);          /* "NEW"...; "?" when out of range */
int sched_state_parse(const char *s);          /* exact upper-case name -> state, -1 unknown */
int sched_state_final(int st);                 /* PUBLISHED, CANCELLED, FAILED, INVALID */
int sched_state_waiting(int st);               /* NEW, ENQUEUED: carries due index keys */

typedef struct { char *name; char *value; } sched_attr;
typedef struct { int state; int64_t at; } sched_hist;

/* One schedule. Strings are owned (sched_rec_free). A record read from the
 * by_state index has no payload, attrs or hist: `full` is 0 then. */
typedef struct {
    char *id;
    int state;             /* enum sched_state, -1 unknown */
    int64_t due;           /* epoch ms */
    char *topic;           /* SNS topic ARN */
    char *payload;         /* NUL-terminated; psize bytes */
    size_t psize;
    sched_attr *attrs;     /* sorted by name once sched_attrs_sort()/validate ran */
    size_t nattrs;
    char chash[65];        /* lowercase hex SHA-256, "" until sched_chash() */
    int64_t created, updated;
    int64_t attempts;
    char *last_error;      /* NULL if none */
    sched_hist *hist;
    size_t nhist;
    int64_t lease;         /* epoch ms, 0 when none */
    int64_t claims;
    char *pub_msg;         /* NULL if none */
    int64_t expires;       /* TTL, epoch SECONDS, 0 when none */
    int full;              /* 1 when payload/attrs/hist were read */
} sched_rec;

void sched_rec_init(sched_rec *r);
void sched_rec_free(sched_rec *r);          /* frees and re-initialises */
void sched_rec_copy(sched_rec *dst, const sched_rec *src);  /* deep copy; dst is overwritten */
void sched_set_payload(sched_rec *r, const char *p, size_t n);
/* Adds a copy of name=value (no validation: sched_validate does it). */
void sched_attr_add(sched_rec *r, const char *name, const char *value);
/* "key=value" (the first '=' splits; the value may contain '='). -1 with
 * "attr: ..." when there is no '=' or the key is empty. */
int sched_attr_parse(sched_rec *r, const char *kv, char *err, size_t errlen);
void sched_hist_add(sched_rec *r, int state, int64_t at);
/* 1 if the TTL has passed at now_ms (reads must then ignore the item). */
int sched_expired(const sched_rec *r, int64_t now_ms);

/* Validation. Each names its field in err. */
typedef struct {
    int64_t grace_ms;     /* how far in the past a due time may be */
    int64_t horizon_ms;   /* how far in the future */
} sched_limits;

int sched_check_id(const char *id, char *err, size_t errlen);
/* field: the name to report ("at", "in", "due"). */
int sched_check_due(int64_t due, int64_t now_ms, const sched_limits *lim, const char *field,
                    char *err, size_t errlen);
int sched_check_topic_arn(const char *arn, char *err, size_t errlen);
int sched_check_attr_name(const char *name, char *err, size_t errlen);
/* Payload and attributes together, for a schedule being created: UTF-8,
 * no NUL, not empty; at most SCHED_USER_ATTRS_MAX attributes, none named
 * "delayer.*"; SNS's size limit counted over exactly what sns-publish sends
 * (sched_sns_attrs_build, with delayer.attempt at its largest). Sorts attrs
 * by name and refuses duplicates. */
int sched_check_message(sched_rec *r, char *err, size_t errlen);
/* The same for a record created earlier (e.g. under older limits), on its
 * way to SNS: what SNS itself would refuse, counted over what sns-publish
 * sends (excess attributes dropped), without the creation-only rules. */
int sched_check_stored(sched_rec *r, char *err, size_t errlen);
/* All of the above on a record to be created (id may be NULL: generated). */
int sched_validate(sched_rec *r, int64_t now_ms, const sched_limits *lim, char *err, size_t errlen);

/* The message attributes sns-publish sends with a schedule, built by one
 * function for both the publisher and the size check (so the two cannot
 * count differently): delayer's own first (delayer.id, delayer.due as RFC
 * 3339 ms, delayer.attempt in decimal), then the record's attributes in
 * name order, at most SCHED_USER_ATTRS_MAX of them: a record older than that
 * limit loses its excess attributes (counted in dropped), never delayer's.
 * A record attribute named like one of delayer's own is left out (ours
 * replace it). id NULL (a record not created yet) stands for a generated
 * id (SCHED_ULID_LEN bytes). The strings point into r and a. */
typedef struct { const char *name; const char *value; } sched_kv;
typedef struct {
    sched_kv kv[SCHED_ATTRS_MAX];
    size_t n;
    size_t dropped;          /* record attributes left out (over the limit) */
    char id[SCHED_ULID_LEN + 1], due[32], attempt[24];
} sched_sns_attrs;

/* The largest delayer.attempt the size check reserves room for. */
#define SCHED_ATTEMPT_MAX INT64_MAX

void sched_sns_attrs_build(const sched_rec *r, int64_t attempt, sched_sns_attrs *a);
/* What SNS counts towards its SCHED_MSG_MAX for one String attribute: name
 * + DataType + value bytes; and for a whole message: body + attributes. */
size_t sched_sns_attr_size(const char *name, const char *value);
size_t sched_sns_size(const sched_rec *r, const sched_sns_attrs *a);

/* A ULID: 48-bit ms time + 80 random bits, Crockford base32, 26 chars.
 * Within one process ids are strictly increasing (same ms: random part + 1),
 * so they sort by creation. Not thread-safe. -1 if no randomness. */
int sched_ulid(char out[SCHED_ULID_LEN + 1], int64_t now_ms);

/* SHA-256 over a length-prefixed encoding of (due, topic, payload, sorted
 * attrs) into r->chash. Call after sched_check_message (attrs sorted). */
void sched_chash(sched_rec *r);

/* Shard = FNV-1a 32-bit of the id bytes mod shards. */
uint32_t sched_fnv1a(const void *p, size_t n);
int sched_shard(const char *id, int shards);

/* Index keys (docs/schema.md "Indexes"). The due index's minute is the
 * minute the scanner should next look at the schedule: its due minute when
 * created, max(due, lease) when it re-enters the index later (see
 * sched_index_time). */
int64_t sched_index_time(int64_t due, int64_t lease_or_now);
void sched_due_pk(buf_t *out, int64_t index_ms, int shard);     /* "<minute>#<shard>" */
void sched_due_sk(buf_t *out, int64_t due, const char *id);     /* "<13-digit ms>#<id>" */
void sched_st_pk(buf_t *out, int state, int64_t updated);       /* "FAILED#2026-11" */
void sched_st_sk(buf_t *out, int64_t updated, const char *id);  /* "<RFC 3339 ms>#<id>" */
/* "YYYY-MM" of t, and the first ms of the month before / after. */
void sched_month(int64_t t, char out[8]);
int64_t sched_month_start(int64_t t);
int64_t sched_prev_month(int64_t t);

/* DynamoDB item. Writes the whole Item object (an open writer positioned for
 * a value) for a record being created: every attribute plus the due keys
 * (when waiting, from due and shard), state keys and expires. */
void sched_item_write(json_w *w, const sched_rec *r, int shard);
/* Reads an item (object of attribute values at token item) into r (r is
 * freed first). Unknown attributes are ignored; missing ones stay zero.
 * full = 1 when payload was present. -1 with err on a malformed item. */
int sched_item_read(json_doc *d, int item, sched_rec *r, char *err, size_t errlen);

/* Wire form: one JSON object per line, between stages and as the SQS body:
 *   {"id":"..","due":<ms>,"topic":"arn..","payload":"..","attrs":{"k":"v"},
 *    "chash":"..","lease":<ms>, optional stage fields...}
 * Stage fields are set by the stage that learns them and carried on:
 *   "mid" SQS MessageId, "rh" receipt handle, "rc" receive count,
 *   "rt" when the receive (or the last visibility extension) happened, epoch
 *   ms: the holder of "rh" owns the message until rt + visibility timeout
 *   (after that SQS may hand it to another consumer), "rv" that visibility
 *   timeout in seconds when it is not the queue's (sqs-drain --visibility),
 *   "report" what happened (for state-update: e.g. "pushed", "push_failed",
 *   "published", "publish_failed", "dead", "invalid"), "error" "Code: message".
 * "nopayload":true means the payload was left out (the body would exceed
 * SQS's size limit): read it from the table (the commit returns it). */
typedef struct {
    sched_rec r;           /* id, due, topic, payload, attrs, chash, lease */
    int nopayload;
    char *mid, *rh, *report, *error;   /* NULL when absent */
    int64_t rc, rt, rv;    /* 0 when absent */
} sched_wire;

void sched_wire_init(sched_wire *w);
void sched_wire_free(sched_wire *w);
/* Appends one line (with '\n'). */
void sched_wire_write(buf_t *out, const sched_wire *w);
/* Parses one line (a trailing '\n' is allowed). Requires id, due, topic,
 * chash and, unless nopayload, payload. -1 with err. */
int sched_wire_read(const char *line, size_t n, sched_wire *w, char *err, size_t errlen);
/* Fills a wire from a record (content + lease), without stage fields. */
void sched_wire_from_rec(sched_wire *w, const sched_rec *r);

/* The record as the CLI prints it (one JSON object, no newline): id, state,
 * due (RFC 3339), due_ms, topic, attrs, payload_size, created, updated,
 * attempts, last_error, history, lease/expires when set, payload when
 * with_payload. attrs/history only when r->full. */
void sched_json(buf_t *out, const sched_rec *r, int with_payload);

/* Copies s into err-friendly form: control characters -> '?', cut at max
 * bytes with "..." (for quoting user text in one-line errors). */
void sched_quote(char *out, size_t outlen, const char *s, size_t max);
#endif
