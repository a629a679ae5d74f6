/* sigv4: AWS Signature Version 4, header signing, with OpenSSL.
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
 * Checked byte for byte against the aws-c-auth vectors (tests/unit/test_sigv4.c). */
#include "sigv4.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char hexdig[] = "0123456789abcdef";
static const char HEXDIG[] = "0123456789ABCDEF";

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[d[i] >> 4];
        out[2 * i + 1] = hexdig[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* SHA-256 through an EVP_MD fetched once: EVP_sha256() and HMAC() make
 * OpenSSL 3 look the algorithm up in its providers on every call, which
 * was most of the CPU a request cost (issue 6's profile). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
}

static const EVP_MD *sha256(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md ? sha256_md : EVP_sha256();
}

static void sha256_raw(const void *data, size_t n, unsigned char out[32])
{
    unsigned int mdlen = 0;
    /* Cannot fail with a working libcrypto; never sign with garbage. */
    if (EVP_Digest(data, n, out, &mdlen, sha256(), NULL) != 1 || mdlen != 32) abort();
}

void sigv4_sha256_hex(const void *data, size_t n, char hex[65])
{
    unsigned char md[32];
    static const char empty[1] = "";
    if (!data) data = empty;
    sha256_raw(data, n, md);
    to_hex(md, 32, hex);
}

/* HMAC-SHA256 (RFC 2104) on the fetched digest. */
static void hmac256(const void *key, size_t keylen, const void *data, size_t n, unsigned char out[32])
{
    unsigned char k[64] = {0}, pad[64], inner[32];
    unsigned int len = 0;
    if (keylen > 64) sha256_raw(key, keylen, k);
    else memcpy(k, key, keylen);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c) abort();
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    if (EVP_DigestInit_ex(c, sha256(), NULL) != 1 || EVP_DigestUpdate(c, pad, 64) != 1 ||
        EVP_DigestUpdate(c, data, n) != 1 || EVP_DigestFinal_ex(c, inner, &len) != 1 || len != 32)
        abort();
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    if (EVP_DigestInit_ex(c, sha256(), NULL) != 1 || EVP_DigestUpdate(c, pad, 64) != 1 ||
        EVP_DigestUpdate(c, inner, 32) != 1 || EVP_DigestFinal_ex(c, out, &len) != 1 || len != 32)
        abort();
    EVP_MD_CTX_free(c);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(inner, sizeof inner);
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

void sigv4_uri_encode(buf_t *out, const char *s, size_t n, int keep_slash)
{
    buf_reserve(out, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            buf_addc(out, (char)c);
        } else {
            char e[3] = { '%', HEXDIG[c >> 4], HEXDIG[c & 15] };
            buf_add(out, e, 3);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (reset first); a '%' not followed by two
 * hex digits is kept as is. */
static void uri_decode(buf_t *out, const char *s, size_t n)
{
    buf_reset(out);
    buf_reserve(out, n);
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < n && (h = hexval(s[i + 1])) >= 0 && (l = hexval(s[i + 2])) >= 0) {
            buf_addc(out, (char)(h * 16 + l));
            i += 2;
        } else {
            buf_addc(out, s[i]);
        }
    }
}

/* ---- canonical URI ---- */

/* Path segments kept after RFC 3986 dot-segment removal, with empty
 * segments ("//") dropped. */
static void canonical_path(const char *path, int keep, buf_t *out)
{
    if (!path || !*path) {
        buf_addc(out, '/');
        return;
    }
    size_t n = strlen(path);
    if (keep) {
        if (path[0] != '/') buf_addc(out, '/');
        sigv4_uri_encode(out, path, n, 1);
        return;
    }
    /* Stack of [start, len) segments into path. */
    size_t cap = n / 2 + 2, depth = 0;
    size_t *st = xmalloc(cap * sizeof *st), *ln = xmalloc(cap * sizeof *ln);
    int trailing = 0;
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && path[j] != '/') j++;
        size_t len = j - i;
        int last = (j >= n);
        if (len == 0) {
            if (last) trailing = 1;          /* path ends with '/' */
        } else if (len == 1 && path[i] == '.') {
            if (last) trailing = 1;
        } else if (len == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (depth) depth--;
            if (last) trailing = 1;
        } else {
            st[depth] = i;
            ln[depth] = len;
            depth++;
            if (last) trailing = 0;
        }
        i = j + 1;
    }
    buf_addc(out, '/');
    for (size_t k = 0; k < depth; k++) {
        if (k) buf_addc(out, '/');
        sigv4_uri_encode(out, path + st[k], ln[k], 0);
    }
    if (depth && trailing) buf_addc(out, '/');
    free(st);
    free(ln);
}

/* ---- canonical query ---- */

typedef struct {
    char *k, *v; /* encoded */
} qparam;

static int qparam_cmp(const void *a, const void *b)
{
    const qparam *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

static void canonical_query(const char *q, buf_t *out)
{
    if (!q || !*q) return;
    size_t n = strlen(q), np = 0, cap = 8;
    qparam *ps = xmalloc(cap * sizeof *ps);
    buf_t dec = BUF_INIT, enc = BUF_INIT;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && q[j] != '&') j++;
        if (j > i) {
            const char *eq = memchr(q + i, '=', j - i);
            size_t klen = eq ? (size_t)(eq - (q + i)) : j - i;
            if (np == cap) ps = xrealloc(ps, (cap *= 2) * sizeof *ps);
            uri_decode(&dec, q + i, klen);
            buf_reset(&enc);
            sigv4_uri_encode(&enc, dec.p, dec.len, 0);
            ps[np].k = xstrndup(buf_str(&enc), enc.len);
            if (eq) {
                uri_decode(&dec, eq + 1, (size_t)(q + j - (eq + 1)));
                buf_reset(&enc);
                sigv4_uri_encode(&enc, dec.p, dec.len, 0);
                ps[np].v = xstrndup(buf_str(&enc), enc.len);
            } else {
                ps[np].v = xstrdup("");
            }
            np++;
        }
        i = j + 1;
    }
    qsort(ps, np, sizeof *ps, qparam_cmp);
    for (size_t k = 0; k < np; k++) {
        if (k) buf_addc(out, '&');
        buf_adds(out, ps[k].k);
        buf_addc(out, '=');
        buf_adds(out, ps[k].v);
        free(ps[k].k);
        free(ps[k].v);
    }
    free(ps);
    buf_free(&dec);
    buf_free(&enc);
}

/* ---- canonical headers ---- */

typedef struct {
    char *name;  /* lower-cased, trimmed */
    size_t idx;  /* original position: duplicates keep their order */
    const char *value;
} hdr;

static int hdr_cmp(const void *a, const void *b)
{
    const hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

/* Trims and folds every run of whitespace (continuation lines included) into one space. */
static void add_folded(buf_t *out, const char *v)
{
    if (!v) return;
    while (is_ws(*v)) v++;
    int pending = 0;
    for (; *v; v++) {
        if (is_ws(*v)) {
            pending = 1;
        } else {
            if (pending) buf_addc(out, ' ');
            pending = 0;
            buf_addc(out, *v);
        }
    }
}

int sigv4_canonical_request(const sigv4_request *r, buf_t *out, buf_t *signed_headers)
{
    if (!r || !out || !r->method || !*r->method || (r->nheaders && !r->headers)) return -1;
    hdr *hs = xcalloc(r->nheaders ? r->nheaders : 1, sizeof *hs);
    int rc = -1, have_host = 0, have_date = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *nm = r->headers[i].name;
        if (!nm) goto done;
        while (is_ws(*nm)) nm++;
        size_t len = strlen(nm);
        while (len && is_ws(nm[len - 1])) len--;
        if (!len) goto done;
        hs[i].name = xstrndup(nm, len);
        for (char *c = hs[i].name; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
        hs[i].idx = i;
        hs[i].value = r->headers[i].value;
        if (!strcmp(hs[i].name, "host")) have_host = 1;
        if (!strcmp(hs[i].name, "x-amz-date")) have_date = 1;
    }
    if (!have_host || !have_date) goto done;
    qsort(hs, r->nheaders, sizeof *hs, hdr_cmp);

    buf_reset(out);
    buf_adds(out, r->method);
    buf_addc(out, '\n');
    canonical_path(r->path, r->keep_path, out);
    buf_addc(out, '\n');
    canonical_query(r->query, out);
    buf_addc(out, '\n');
    buf_t sh = BUF_INIT;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (i && !strcmp(hs[i].name, hs[i - 1].name)) {
            buf_addc(out, ',');
        } else {
            if (i) buf_addc(out, '\n');
            buf_adds(out, hs[i].name);
            buf_addc(out, ':');
            if (sh.len) buf_addc(&sh, ';');
            buf_adds(&sh, hs[i].name);
        }
        add_folded(out, hs[i].value);
    }
    buf_adds(out, "\n\n");
    buf_adds(out, buf_str(&sh));
    buf_addc(out, '\n');
    char ph[65];
    sigv4_sha256_hex(r->payload, r->payload ? r->payload_len : 0, ph);
    buf_adds(out, ph);
    if (signed_headers) {
        buf_reset(signed_headers);
        buf_adds(signed_headers, buf_str(&sh));
    }
    buf_free(&sh);
    rc = 0;
done:
    for (size_t i = 0; i < r->nheaders; i++) free(hs[i].name);
    free(hs);
    return rc;
}

static int valid_date(const char *d)
{
    if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z') return 0;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (d[i] < '0' || d[i] > '9')) return 0;
    return 1;
}

static int scope_ok(const sigv4_params *p)
{
    return p && valid_date(p->amz_date) && p->region && *p->region && p->service && *p->service;
}

int sigv4_string_to_sign(const sigv4_params *p, const char *canonical_request, buf_t *out)
{
    if (!scope_ok(p) || !canonical_request || !out) return -1;
    char h[65];
    sigv4_sha256_hex(canonical_request, strlen(canonical_request), h);
    buf_reset(out);
    buf_printf(out, "AWS4-HMAC-SHA256\n%s\n%.8s/%s/%s/aws4_request\n%s",
               p->amz_date, p->amz_date, p->region, p->service, h);
    return 0;
}

/* The signing key HMAC(HMAC(HMAC(HMAC("AWS4" secret, date), region),
 * service), "aws4_request") changes once a day: each thread keeps the last
 * one, known by its date, region, service and a SHA-256 of the secret
 * (not the secret itself), so a request costs one HMAC instead of five. */
static __thread struct {
    int valid;
    char date[9], region[64], service[32];
    unsigned char secret_sum[32];
    unsigned char key[32];
} key_cache;

static void signing_key(const sigv4_params *p, unsigned char key[32])
{
    size_t sl = strlen(p->secret_key), rl = strlen(p->region), vl = strlen(p->service);
    unsigned char sum[32];
    sha256_raw(p->secret_key, sl, sum);
    int cacheable = rl < sizeof key_cache.region && vl < sizeof key_cache.service;
    if (cacheable && key_cache.valid && memcmp(key_cache.date, p->amz_date, 8) == 0 &&
        strcmp(key_cache.region, p->region) == 0 && strcmp(key_cache.service, p->service) == 0 &&
        CRYPTO_memcmp(key_cache.secret_sum, sum, 32) == 0) {
        memcpy(key, key_cache.key, 32);
        OPENSSL_cleanse(sum, sizeof sum);
        return;
    }
    unsigned char *k0 = xmalloc(sl + 4);
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, p->secret_key, sl);
    unsigned char k[32], k2[32];
    hmac256(k0, sl + 4, p->amz_date, 8, k);
    OPENSSL_cleanse(k0, sl + 4);
    free(k0);
    hmac256(k, 32, p->region, rl, k2);
    hmac256(k2, 32, p->service, vl, k);
    hmac256(k, 32, "aws4_request", 12, key);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(k2, sizeof k2);
    if (cacheable) {
        memcpy(key_cache.date, p->amz_date, 8);
        key_cache.date[8] = '\0';
        memcpy(key_cache.region, p->region, rl + 1);
        memcpy(key_cache.service, p->service, vl + 1);
        memcpy(key_cache.secret_sum, sum, 32);
        memcpy(key_cache.key, key, 32);
        key_cache.valid = 1;
    }
    OPENSSL_cleanse(sum, sizeof sum);
}

int sigv4_signature(const sigv4_params *p, const char *string_to_sign, char hex[65])
{
    if (!scope_ok(p) || !p->secret_key || !string_to_sign || !hex) return -1;
    unsigned char key[32], k[32];
    signing_key(p, key);
    hmac256(key, 32, string_to_sign, strlen(string_to_sign), k);
    to_hex(k, 32, hex);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(key, sizeof key);
    return 0;
}

int sigv4_authorization(const sigv4_request *r, const sigv4_params *p, buf_t *out)
{
    if (!scope_ok(p) || !p->access_key || !*p->access_key || !out) return -1;
    buf_t creq = BUF_INIT, sh = BUF_INIT, sts = BUF_INIT;
    /* The canonical request holds x-amz-security-token when signed: no
     * copy may be left behind as it grows, nor after. */
    buf_secret(&creq);
    char sig[65];
    int rc = -1;
    if (sigv4_canonical_request(r, &creq, &sh) < 0) goto done;
    if (sigv4_string_to_sign(p, buf_str(&creq), &sts) < 0) goto done;
    if (sigv4_signature(p, buf_str(&sts), sig) < 0) goto done;
    buf_reset(out);
    buf_printf(out, "AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
               p->access_key, p->amz_date, p->region, p->service, buf_str(&sh), sig);
    rc = 0;
done:
    buf_wipe(&creq);
    buf_free(&sh);
    buf_free(&sts);
    return rc;
}

void sigv4_amz_date(char out[17])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16) memcpy(out, "19700101T000000Z", 17);
}
