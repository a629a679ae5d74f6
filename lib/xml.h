/* xml: just enough XML reading for AWS query-protocol replies (SNS).
 * Not a general parser: it walks elements, skips comments, processing
 * instructions and declarations, decodes the five predefined entities and
 * numeric character references (&#...; &#x...;), and returns CDATA content
 * verbatim, so neither entities nor CDATA can fool a lookup (a "<Code>" inside
 * CDATA or an escaped "&lt;Code&gt;" is text, never an element). */
#ifndef DELAYER_XML_H
#define DELAYER_XML_H
#include <stddef.h>
#include "buf.h"

/* Find the first element named `name` (local name, any prefix) at or after
 * byte `from`, searching the whole subtree. On success returns 0, puts its
 * decoded text content in out (children's text concatenated), and sets
 * *elem_start / *elem_end to the byte range of the whole element (so calls
 * can be nested: search for "Id" between elem_start and elem_end of a
 * "member"). -1 if not found or malformed. */
int xml_find(const char *xml, size_t len, size_t from, const char *name,
             buf_t *out, size_t *elem_start, size_t *elem_end);
/* Shorthand: text of the first element `name` in xml[0..len), "" -> -1 if absent. */
int xml_text(const char *xml, size_t len, const char *name, buf_t *out);
#endif
