/* ddbval: DynamoDB attribute values (AWS JSON form) <-> plain JSON.
 *   {"S":"x"} <-> "x"        {"N":"12.5"} <-> 12.5   {"BOOL":true} <-> true
 *   {"NULL":true} <-> null   {"M":{..}} <-> {..}     {"L":[..]} <-> [..]
 *   {"SS":[..]} -> ["..."]   {"NS":["1"]} -> [1]     {"B":"base64"} -> "base64"
 * Numbers arrive as strings ({"N":"..."}) and are validated as JSON numbers
 * before being written out bare. Plain -> DynamoDB never produces sets. */
#ifndef DELAYER_DDBVAL_H
#define DELAYER_DDBVAL_H
#include <stdint.h>
#include "json.h"

/* One attribute value at token t -> plain JSON appended to out. -1 with d->err. */
int ddb_to_plain(json_doc *d, int t, buf_t *out);
/* A whole item {"name": <attr value>, ...} -> {"name": <plain>, ...}. */
int ddb_item_to_plain(json_doc *d, int item, buf_t *out);
/* Any plain JSON value at token t -> an attribute value appended to out. */
int ddb_from_plain(json_doc *d, int t, buf_t *out);

/* Typed reads from an item (an object of attribute values). Return 0, or -1
 * when the attribute is absent or of another type (d->err names it). */
int ddb_get_s(json_doc *d, int item, const char *name, buf_t *out);
int ddb_get_i64(json_doc *d, int item, const char *name, int64_t *v);
int ddb_get_bool(json_doc *d, int item, const char *name, int *v);
int ddb_has(const json_doc *d, int item, const char *name);

/* Writer helpers: emit  "name":{"S":"value"}  etc. into an open object. */
void ddbw_s(json_w *w, const char *name, const char *value);
void ddbw_sn(json_w *w, const char *name, const char *value, size_t n);
void ddbw_i64(json_w *w, const char *name, int64_t v);
void ddbw_bool(json_w *w, const char *name, int v);
/* A bare attribute value (no name), e.g. for ExpressionAttributeValues lists. */
void ddbv_s(json_w *w, const char *value);
void ddbv_i64(json_w *w, int64_t v);
#endif
