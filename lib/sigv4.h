/* sigv4: AWS Signature Version 4 (header signing) with OpenSSL.
 * Pure functions, no I/O: tested byte for byte against AWS's test vectors
 * (../shared/aws-sigv4-test-suite/v4). */
#ifndef DELAYER_SIGV4_H
#define DELAYER_SIGV4_H
#include <stddef.h>
#include "buf.h"

typedef struct {
    const char *name;   /* as sent; canonicalisation lower-cases it */
    const char *value;  /* as sent; canonicalisation trims and folds spaces */
} sigv4_header;

typedef struct {
    const char *method;          /* "GET", "POST" */
    const char *path;            /* request path as sent, e.g. "/" or "/a%20b" */
    const char *query;           /* query string without '?', "" if none */
    const sigv4_header *headers; /* every header to sign (must include host and x-amz-date) */
    size_t nheaders;
    const void *payload;
    size_t payload_len;
    /* Added (0 by default, so existing initialisers keep their meaning):
     * 1 = do not remove dot segments nor collapse "//" in the path (the
     * S3-style "normalize": false vectors). Segments are still encoded. */
    int keep_path;
} sigv4_request;

typedef struct {
    const char *access_key;
    const char *secret_key;
    const char *session_token;   /* NULL or "" if none. Not added by sigv4: the
                                  * caller puts "X-Amz-Security-Token" in the
                                  * request headers (signed, as the vectors do) */
    const char *region;
    const char *service;
    const char *amz_date;        /* "20150830T123600Z" */
} sigv4_params;

/* Canonical request (the service is not S3: paths are normalised and
 * each segment URI-encoded once more, per the vectors). signed_headers gets
 * "host;x-amz-date". Both buffers are replaced (reset first); signed_headers
 * may be NULL. Query parameters are percent-decoded then encoded (so
 * "%E1%88%B4" and the raw UTF-8 give the same result; '+' is a literal '+').
 * -1 if the method is missing, a header name is empty, or host or
 * x-amz-date is not among the headers. */
int sigv4_canonical_request(const sigv4_request *r, buf_t *out, buf_t *signed_headers);
/* out is replaced. -1 if amz_date is not "YYYYMMDDTHHMMSSZ" or region/service missing. */
int sigv4_string_to_sign(const sigv4_params *p, const char *canonical_request, buf_t *out);
/* Hex signature of a string to sign (derived keys are wiped after use). */
int sigv4_signature(const sigv4_params *p, const char *string_to_sign, char hex[65]);
/* The whole Authorization header value:
 * "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/service/aws4_request, SignedHeaders=..., Signature=..."
 * out is replaced. */
int sigv4_authorization(const sigv4_request *r, const sigv4_params *p, buf_t *out);

void sigv4_sha256_hex(const void *data, size_t n, char hex[65]);
/* Appends s[0..n) percent-encoded: RFC 3986 unreserved (A-Z a-z 0-9 - . _ ~)
 * kept, everything else %XX (upper-case hex); '/' kept when keep_slash. */
void sigv4_uri_encode(buf_t *out, const char *s, size_t n, int keep_slash);
/* Current time as "YYYYMMDDTHHMMSSZ". */
void sigv4_amz_date(char out[17]);
#endif
