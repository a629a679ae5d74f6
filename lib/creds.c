/* creds: the AWS SDKs' credentials chain, region and endpoint resolution.
 * See creds.h. Secrets never reach an error string or a log: reasons name
 * sources, variables, files and HTTP statuses only. Buffers that held
 * secrets (file lines, stdio buffers, HTTP bodies, header lists) are wiped. */
#include "creds.h"
#include "xml.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define REFRESH_BEFORE_MS (5 * 60 * 1000LL)
#define RETRY_AFTER_FAIL_MS (10 * 1000LL)
#define MAX_BODY (64 * 1024)

struct aws_credp {
    aws_creds c;
    int have;
    int64_t next_try_ms; /* after a failed refresh of still-valid credentials */
};

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wipe_free(char *s)
{
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static void creds_clear(aws_creds *c)
{
    wipe_free(c->access_key);
    wipe_free(c->secret_key);
    wipe_free(c->session_token);
    memset(c, 0, sizeof *c);
}

/* Appends "; "-separated, non-secret reasons. */
static void reason(buf_t *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason(buf_t *why, const char *fmt, ...)
{
    if (why->len) buf_adds(why, "; ");
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(why, fmt, ap);
    va_end(ap);
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

/* ---- shared files ---- */

static const char *home_dir(void)
{
    const char *h = env("HOME");
    if (h) return h;
    struct passwd *pw = getpwuid(getuid());
    return pw && pw->pw_dir ? pw->pw_dir : "/";
}

/* $VAR (with a leading "~/" expanded) or ~/.aws/<name>. */
static void aws_file(const char *var, const char *name, buf_t *out)
{
    buf_reset(out);
    const char *v = env(var);
    if (v && v[0] == '~' && (v[1] == '/' || v[1] == '\0')) buf_printf(out, "%s%s", home_dir(), v + 1);
    else if (v) buf_adds(out, v);
    else buf_printf(out, "%s/.aws/%s", home_dir(), name);
}

static const char *profile_name(void)
{
    const char *p = env("AWS_PROFILE");
    return p ? p : "default";
}

typedef struct {
    char *access_key, *secret_key, *token, *region;
    int sections;   /* matching sections seen */
    int unsupported; /* role_arn, sso_*, credential_process, web_identity_token_file */
} profile_vals;

static void profile_vals_free(profile_vals *v)
{
    wipe_free(v->access_key);
    wipe_free(v->secret_key);
    wipe_free(v->token);
    free(v->region);
    memset(v, 0, sizeof *v);
}

static void set_val(char **dst, const char *v)
{
    wipe_free(*dst);
    *dst = xstrdup(v);
}

/* s trimmed in place; returns the start. */
static char *trim(char *s)
{
    while (is_space(*s)) s++;
    size_t n = strlen(s);
    while (n && is_space(s[n - 1])) s[--n] = '\0';
    return s;
}

/* Does section text sec (already trimmed, without brackets) name the profile? */
static int section_matches(const char *sec, const char *profile, int is_config)
{
    if (!is_config) return strcmp(sec, profile) == 0;
    if (!strcmp(profile, "default") && !strcmp(sec, "default")) return 1;
    if (strncmp(sec, "profile", 7) != 0 || !is_space(sec[7])) return 0;
    sec += 7;
    while (is_space(*sec)) sec++;
    return strcmp(sec, profile) == 0;
}

/* Reads the profile's keys from one INI file into v (later values win).
 * -1 if the file cannot be opened (errno set). */
static int ini_read(const char *path, const char *profile, int is_config, profile_vals *v)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char iobuf[4096], line[4096];
    setvbuf(f, iobuf, _IOFBF, sizeof iobuf);
    int in = 0, sub = 0;
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') { /* over-long line: skip it */
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {}
            continue;
        }
        int indented = is_space(line[0]) && line[0] != '\n' && line[0] != '\r';
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *e = strrchr(s, ']');
            sub = 0;
            if (!e) { in = 0; continue; }
            *e = '\0';
            in = section_matches(trim(s + 1), profile, is_config);
            if (in) v->sections++;
            continue;
        }
        if (!in) continue;
        if (indented && sub) continue;  /* "s3 =\n  key = value" sub-properties */
        char *eq = strchr(s, '=');
        if (!eq) continue;
        *eq = '\0';
        char *key = trim(s), *val = eq + 1;
        /* inline comment: white space then '#' or ';' */
        for (char *c = val; *c; c++)
            if ((*c == '#' || *c == ';') && c > val && is_space(c[-1])) { *c = '\0'; break; }
        val = trim(val);
        for (char *c = key; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
        sub = (*val == '\0');
        if (!strcmp(key, "aws_access_key_id")) set_val(&v->access_key, val);
        else if (!strcmp(key, "aws_secret_access_key")) set_val(&v->secret_key, val);
        else if (!strcmp(key, "aws_session_token")) set_val(&v->token, val);
        else if (!strcmp(key, "region")) { free(v->region); v->region = xstrdup(val); }
        else if (!strcmp(key, "role_arn") || !strcmp(key, "credential_process") ||
                 !strncmp(key, "sso_", 4) || !strcmp(key, "web_identity_token_file")) v->unsupported = 1;
    }
    fclose(f);
    explicit_bzero(line, sizeof line);
    explicit_bzero(iobuf, sizeof iobuf);
    return 0;
}

/* The profile's values: config file first, the credentials file overriding.
 * *files_found: how many of the two files could be read. */
static void profile_load(profile_vals *v, buf_t *cfg_path, buf_t *cred_path, int *files_found)
{
    const char *prof = profile_name();
    aws_file("AWS_CONFIG_FILE", "config", cfg_path);
    aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials", cred_path);
    *files_found = 0;
    if (ini_read(cfg_path->p, prof, 1, v) == 0) (*files_found)++;
    if (ini_read(cred_path->p, prof, 0, v) == 0) (*files_found)++;
}

/* 1 got credentials, 0 none (fall through), -1 stop the chain. */
static int from_env(aws_creds *out, buf_t *why)
{
    const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY"), *tok = env("AWS_SESSION_TOKEN");
    if (!ak) {
        reason(why, "env: AWS_ACCESS_KEY_ID not set");
        return 0;
    }
    if (!sk) {
        reason(why, "env: AWS_ACCESS_KEY_ID set but AWS_SECRET_ACCESS_KEY missing");
        return 0;
    }
    out->access_key = xstrdup(ak);
    out->secret_key = xstrdup(sk);
    out->session_token = tok ? xstrdup(tok) : NULL;
    out->expires_ms = 0;
    out->source = "env";
    return 1;
}

static int from_profile(aws_creds *out, buf_t *why)
{
    profile_vals v;
    memset(&v, 0, sizeof v);
    buf_t cfg = BUF_INIT, cred = BUF_INIT;
    int files, rc = 0;
    const char *prof = profile_name();
    profile_load(&v, &cfg, &cred, &files);
    if (v.access_key && *v.access_key && v.secret_key && *v.secret_key) {
        out->access_key = v.access_key;
        out->secret_key = v.secret_key;
        out->session_token = v.token && *v.token ? v.token : NULL;
        if (!out->session_token) wipe_free(v.token);
        v.access_key = v.secret_key = v.token = NULL;
        out->expires_ms = 0;
        out->source = "profile";
        rc = 1;
    } else if (!v.sections) {
        if (env("AWS_PROFILE")) {
            /* An explicitly chosen profile that does not exist is an error (as in the SDKs). */
            reason(why, "profile \"%s\" (AWS_PROFILE) not found in %s nor %s", prof, cred.p, cfg.p);
            rc = -1;
        } else if (!files) {
            reason(why, "profile \"%s\": no %s nor %s", prof, cred.p, cfg.p);
        } else {
            reason(why, "profile \"%s\": not in %s nor %s", prof, cred.p, cfg.p);
        }
    } else if ((!v.access_key || !*v.access_key) && (!v.secret_key || !*v.secret_key) && v.unsupported) {
        reason(why, "profile \"%s\": role_arn, sso_*, credential_process and web_identity_token_file are not "
               "supported in profiles; give aws_access_key_id and aws_secret_access_key (web identity: set "
               "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN)", prof);
    } else if ((!v.access_key || !*v.access_key) && (!v.secret_key || !*v.secret_key)) {
        reason(why, "profile \"%s\": no aws_access_key_id/aws_secret_access_key", prof);
    } else if (!v.access_key || !*v.access_key) {
        reason(why, "profile \"%s\": aws_secret_access_key set but aws_access_key_id missing", prof);
    } else if (!v.secret_key || !*v.secret_key) {
        reason(why, "profile \"%s\": aws_access_key_id set but aws_secret_access_key missing", prof);
    }
    profile_vals_free(&v);
    buf_free(&cfg);
    buf_free(&cred);
    return rc;
}

/* ---- URLs ---- */

/* Host of a URL ("scheme://[user@]host[:port][/...]"), IPv6 without brackets.
 * *v6 = 1 when bracketed. -1 if malformed. */
static int url_host(const char *url, char *host, size_t hostlen, int *v6)
{
    if (!url) return -1;
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t alen = strcspn(p, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
        if (p[i] == '@') at = p + i;
    if (at) {
        alen -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    const char *h = p, *rest;
    size_t hl;
    *v6 = 0;
    if (alen && *p == '[') {
        const char *close = memchr(p, ']', alen);
        if (!close) return -1;
        h = p + 1;
        hl = (size_t)(close - h);
        rest = close + 1;
        *v6 = 1;
    } else {
        const char *colon = memchr(p, ':', alen);
        hl = colon ? (size_t)(colon - p) : alen;
        rest = p + hl;
    }
    /* after the host: nothing, or ":port" (digits) */
    if (rest < p + alen) {
        if (*rest != ':') return -1;
        for (const char *c = rest + 1; c < p + alen; c++)
            if (*c < '0' || *c > '9') return -1;
    }
    if (hl == 0 || hl >= hostlen) return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    return 0;
}

int aws_url_is_loopback(const char *url)
{
    char host[256];
    int v6;
    if (url_host(url, host, sizeof host, &v6) < 0) return 0;
    if (v6) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1) return 0;
        if (IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    if (!strcasecmp(host, "localhost") || !strcasecmp(host, "localhost.")) return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) != 1) return 0;
    return ((const unsigned char *)&a4.s_addr)[0] == 127;
}

/* ---- HTTP (libcurl) ---- */

/* A response body buffer that wipes what it leaves behind when it grows. */
typedef struct {
    char *p;
    size_t len, cap;
    int too_big;
} sbuf;

static void sbuf_wipe(sbuf *b)
{
    if (b->p) {
        explicit_bzero(b->p, b->cap);
        free(b->p);
    }
    memset(b, 0, sizeof *b);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    sbuf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > MAX_BODY) {
        b->too_big = 1;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = xmalloc(cap);
        if (b->len) memcpy(q, b->p, b->len);
        if (b->p) {
            explicit_bzero(b->p, b->cap);
            free(b->p);
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

static void slist_wipe_free(struct curl_slist *l)
{
    for (struct curl_slist *i = l; i; i = i->next)
        if (i->data) explicit_bzero(i->data, strlen(i->data));
    curl_slist_free_all(l);
}

/* One request. */
typedef struct {
    const char *method, *url;
    const char *hdr;         /* one "Name: value" header line, or NULL */
    const char *body;        /* request body (POST), or NULL; not copied */
    size_t body_len;
    long connect_ms, total_ms;
    int use_proxy;           /* honour the *_proxy variables (STS), else none */
} http_req;

int aws_ca_bundle_check(const char *url, char *cerr, size_t cerrlen)
{
    const char *ca = env("AWS_CA_BUNDLE");
    if (!ca || strncasecmp(url, "https://", 8) != 0) return 0;
    FILE *f = fopen(ca, "r");
    if (!f) {
        snprintf(cerr, cerrlen, "AWS_CA_BUNDLE %.200s cannot be read: %s", ca, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* 0 with *status when an HTTP response arrived (body in b), -1 on a
 * transport error (cerr gets curl's message: no secrets there). */
static int http_do(const http_req *r, long *status, sbuf *b, char *cerr, size_t cerrlen)
{
    sbuf_wipe(b);
    *status = 0;
    if (aws_ca_bundle_check(r->url, cerr, cerrlen) < 0) return -1;
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(cerr, cerrlen, "curl_easy_init failed");
        return -1;
    }
    struct curl_slist *hl = NULL;
    if (r->hdr) hl = curl_slist_append(hl, r->hdr);
    /* A bare "Expect:" keeps curl from waiting on 100-continue. */
    hl = curl_slist_append(hl, "Expect:");
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, r->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, r->connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, r->total_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (!r->use_proxy) curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_USERAGENT, "delayer-creds");
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (env("AWS_CA_BUNDLE")) curl_easy_setopt(h, CURLOPT_CAINFO, env("AWS_CA_BUNDLE"));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    if (r->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    }
    if (strcmp(r->method, r->body ? "POST" : "GET") != 0) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    CURLcode rc = curl_easy_perform(h);
    int ret = 0;
    if (rc != CURLE_OK) {
        if (b->too_big) snprintf(cerr, cerrlen, "response larger than %d bytes", MAX_BODY);
        else if (rc == CURLE_SSL_CACERT_BADFILE && env("AWS_CA_BUNDLE"))
            snprintf(cerr, cerrlen, "AWS_CA_BUNDLE %s: %s", env("AWS_CA_BUNDLE"), ebuf[0] ? ebuf : curl_easy_strerror(rc));
        else snprintf(cerr, cerrlen, "%s", ebuf[0] ? ebuf : curl_easy_strerror(rc));
        ret = -1;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    }
    curl_easy_cleanup(h);
    slist_wipe_free(hl);
    if (!b->p) on_body((char *)"", 1, 0, b);
    return ret;
}

/* A bodiless request without proxies (the credentials endpoints). */
static int http_once(const char *method, const char *url, const char *hdr, long connect_ms, long total_ms,
                     long *status, sbuf *b, char *cerr, size_t cerrlen)
{
    http_req r = { method, url, hdr, NULL, 0, connect_ms, total_ms, 0 };
    return http_do(&r, status, b, cerr, cerrlen);
}

/* ---- JSON (the flat objects of the credentials endpoints) ---- */

static void skip_ws(const char *s, size_t n, size_t *i)
{
    while (*i < n && is_space(s[*i])) (*i)++;
}

static void put_utf8(char *out, size_t *o, unsigned cp)
{
    if (cp < 0x80) out[(*o)++] = (char)cp;
    else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(const char *s, unsigned *v)
{
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        unsigned d = (c >= '0' && c <= '9') ? (unsigned)(c - '0') : (c >= 'a' && c <= 'f') ? (unsigned)(c - 'a' + 10)
                   : (c >= 'A' && c <= 'F') ? (unsigned)(c - 'A' + 10) : 16u;
        if (d > 15) return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

/* A JSON string at s[*i] == '"' -> a malloc'd decoded copy (sized exactly, so
 * no secret is left behind by reallocation). NULL if malformed. */
static char *json_string_at(const char *s, size_t n, size_t *i)
{
    size_t j = *i + 1;
    while (j < n && s[j] != '"') {
        if ((unsigned char)s[j] < 0x20) return NULL;
        j += (s[j] == '\\') ? 2 : 1;
    }
    if (j >= n) return NULL;
    char *out = xmalloc(j - *i + 4);
    size_t o = 0;
    for (size_t k = *i + 1; k < j; k++) {
        if (s[k] != '\\') {
            out[o++] = s[k];
            continue;
        }
        char e = s[++k];
        unsigned cp;
        switch (e) {
        case '"': case '\\': case '/': out[o++] = e; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u':
            if (k + 4 >= j || hex4(s + k + 1, &cp) < 0) goto bad;
            k += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && k + 6 < j && s[k + 1] == '\\' && s[k + 2] == 'u') {
                unsigned lo;
                if (hex4(s + k + 3, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    k += 6;
                }
            }
            put_utf8(out, &o, cp);
            break;
        default: goto bad;
        }
    }
    out[o] = '\0';
    *i = j + 1;
    return out;
bad:
    explicit_bzero(out, j - *i + 4);
    free(out);
    return NULL;
}

/* Skips any JSON value at s[*i]. -1 if malformed. */
static int json_skip(const char *s, size_t n, size_t *i)
{
    int depth = 0;
    do {
        skip_ws(s, n, i);
        if (*i >= n) return -1;
        char c = s[*i];
        if (c == '"') {
            size_t j = *i + 1;
            while (j < n && s[j] != '"') j += (s[j] == '\\') ? 2 : 1;
            if (j >= n) return -1;
            *i = j + 1;
        } else if (c == '{' || c == '[') {
            depth++;
            (*i)++;
        } else if (c == '}' || c == ']') {
            if (!depth) return -1;
            depth--;
            (*i)++;
        } else if (c == ',' || c == ':') {
            if (!depth) return -1;
            (*i)++;
        } else {
            size_t st = *i;
            while (*i < n && !is_space(s[*i]) && !strchr(",:]}[{\"", s[*i])) (*i)++;
            if (*i == st) return -1;
        }
    } while (depth > 0);
    return 0;
}

/* Top-level string members names[k] of the object in s -> vals[k] (NULL when
 * absent or not a string; the caller wipes them). -1 if not a JSON object
 * (vals are then all NULL). */
static int json_fields_(const char *s, size_t n, const char *const *names, char **vals, size_t nn);
static int json_fields(const char *s, size_t n, const char *const *names, char **vals, size_t nn)
{
    if (json_fields_(s, n, names, vals, nn) == 0) return 0;
    for (size_t k = 0; k < nn; k++) {
        wipe_free(vals[k]);
        vals[k] = NULL;
    }
    return -1;
}

static int json_fields_(const char *s, size_t n, const char *const *names, char **vals, size_t nn)
{
    size_t i = 0;
    for (size_t k = 0; k < nn; k++) vals[k] = NULL;
    skip_ws(s, n, &i);
    if (i >= n || s[i] != '{') return -1;
    i++;
    skip_ws(s, n, &i);
    if (i < n && s[i] == '}') return 0;
    for (;;) {
        skip_ws(s, n, &i);
        if (i >= n || s[i] != '"') return -1;
        char *key = json_string_at(s, n, &i);
        if (!key) return -1;
        skip_ws(s, n, &i);
        if (i >= n || s[i] != ':') { free(key); return -1; }
        i++;
        skip_ws(s, n, &i);
        size_t k = 0;
        while (k < nn && strcmp(key, names[k]) != 0) k++;
        free(key);
        if (k < nn && i < n && s[i] == '"') {
            char *v = json_string_at(s, n, &i);
            if (!v) return -1;
            wipe_free(vals[k]);
            vals[k] = v;
        } else if (json_skip(s, n, &i) < 0) {
            return -1;
        }
        skip_ws(s, n, &i);
        if (i < n && s[i] == ',') { i++; continue; }
        if (i < n && s[i] == '}') return 0;
        return -1;
    }
}

/* ISO 8601 UTC time "2024-01-02T03:04:05Z" (fraction and +hh:mm allowed) -> ms. */
static int parse_iso8601(const char *s, int64_t *ms)
{
    int Y, M, D, h, m, sec, used = 0;
    if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &used) != 6 || !used) return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || Y < 1970) return -1;
    const char *p = s + used;
    int frac_ms = 0;
    if (*p == '.' || *p == ',') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3) frac_ms = frac_ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (!digits) return -1;
        for (; digits < 3; digits++) frac_ms *= 10;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') p++;
    else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om = 0, n2 = 0;
        if (sscanf(p + 1, "%2d%n", &oh, &n2) != 1 || n2 != 2) return -1;
        p += 3;
        if (*p == ':') p++;
        if (*p >= '0' && *p <= '9') {
            if (sscanf(p, "%2d%n", &om, &n2) != 1 || n2 != 2) return -1;
            p += 2;
        }
        off = sign * (oh * 3600L + om * 60L);
    }
    while (is_space(*p)) p++;
    if (*p) return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return -1;
    *ms = ((int64_t)t - off) * 1000 + frac_ms;
    return 0;
}

/* {AccessKeyId, SecretAccessKey, Token, Expiration[, Code]} -> out. */
static int creds_from_json(const sbuf *b, const char *src, aws_creds *out, buf_t *why)
{
    static const char *const names[] = { "AccessKeyId", "SecretAccessKey", "Token", "Expiration", "Code" };
    char *v[5];
    int rc = -1;
    if (json_fields(b->p, b->len, names, v, 5) < 0) {
        reason(why, "%s: the response is not a JSON object", src);
        return -1;
    }
    int64_t exp = 0;
    if (v[4] && strcmp(v[4], "Success") != 0) {
        reason(why, "%s: the response's Code is not \"Success\"", src);
    } else if (!v[0] || !*v[0] || !v[1] || !*v[1]) {
        reason(why, "%s: the response lacks AccessKeyId or SecretAccessKey", src);
    } else if (v[3] && *v[3] && parse_iso8601(v[3], &exp) < 0) {
        reason(why, "%s: the response's Expiration is not an ISO 8601 time", src);
    } else {
        out->access_key = v[0];
        out->secret_key = v[1];
        out->session_token = v[2] && *v[2] ? v[2] : NULL;
        if (!out->session_token) wipe_free(v[2]);
        v[0] = v[1] = v[2] = NULL;
        out->expires_ms = exp;
        out->source = src;
        rc = 0;
    }
    for (int k = 0; k < 5; k++) wipe_free(v[k]);
    return rc;
}

/* ---- container credentials ---- */

static int container_host_allowed(const char *url)
{
    if (!strncasecmp(url, "https://", 8)) return 1;
    if (strncasecmp(url, "http://", 7) != 0) return 0;
    if (aws_url_is_loopback(url)) return 1;
    char host[256];
    int v6;
    if (url_host(url, host, sizeof host, &v6) < 0) return 0;
    if (v6) return !strcasecmp(host, "fd00:ec2::23");                     /* EKS Pod Identity, IPv6 */
    return !strcmp(host, "169.254.170.2") || !strcmp(host, "169.254.170.23"); /* ECS, EKS */
}

/* A token file's contents, trailing white space dropped, as a malloc'd
 * string in *tok. 0 ok; -1 cannot be read (errno set); -2 empty; -3 longer
 * than max bytes. Every buffer that held the contents is wiped. */
static int read_token_file(const char *path, size_t max, char **tok)
{
    *tok = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char iobuf[4096];
    setvbuf(f, iobuf, _IOFBF, sizeof iobuf);
    size_t cap = max + 256;  /* room for trailing white space */
    char *t = xmalloc(cap + 1);
    size_t n = fread(t, 1, cap, f);
    int rerr = ferror(f) ? (errno ? errno : EIO) : 0;
    int more = !rerr && fgetc(f) != EOF;
    fclose(f);
    explicit_bzero(iobuf, sizeof iobuf);
    t[n] = '\0';
    while (n && is_space(t[n - 1])) t[--n] = '\0';
    int rc = rerr ? -1 : (more || n > max) ? -3 : !n ? -2 : 0;
    if (rc) {
        explicit_bzero(t, cap + 1);
        free(t);
        errno = rerr;
        return rc;
    }
    *tok = xstrndup(t, n);
    explicit_bzero(t, cap + 1);
    free(t);
    return 0;
}

/* The Authorization value: the token file's contents (trailing new lines
 * dropped) or AWS_CONTAINER_AUTHORIZATION_TOKEN. 0 none, 1 set, -1 error. */
static int container_token(char **tok, buf_t *why)
{
    *tok = NULL;
    const char *file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    if (file) {
        int r = read_token_file(file, 8191, tok);
        if (r == -1) {
            reason(why, "container: cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s: %s", file, strerror(errno));
            return -1;
        }
        if (r < 0) {
            reason(why, "container: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s is %s", file, r == -3 ? "too long" : "empty");
            return -1;
        }
    } else if (env("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        *tok = xstrdup(env("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
    } else {
        return 0;
    }
    for (const char *c = *tok; *c; c++) {
        if (*c == '\r' || *c == '\n') {
            reason(why, "container: the authorization token holds a line break");
            wipe_free(*tok);
            *tok = NULL;
            return -1;
        }
    }
    return 1;
}

static int from_container(aws_creds *out, buf_t *why)
{
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    buf_t url = BUF_INIT;
    if (rel) {
        buf_printf(&url, "http://169.254.170.2%s%s", rel[0] == '/' ? "" : "/", rel);
    } else if (full) {
        if (!container_host_allowed(full)) {
            reason(why, "container: AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback, "
                   "ECS (169.254.170.2) or EKS (169.254.170.23, [fd00:ec2::23]) address");
            return -1;
        }
        buf_adds(&url, full);
    } else {
        reason(why, "container: AWS_CONTAINER_CREDENTIALS_FULL_URI/RELATIVE_URI not set");
        return 0;
    }
    char *tok;
    int tr = container_token(&tok, why);
    if (tr < 0) {
        buf_free(&url);
        return -1;
    }
    char *hdr = NULL;
    if (tok) {
        size_t hl = strlen(tok) + sizeof "Authorization: ";
        hdr = xmalloc(hl);
        snprintf(hdr, hl, "Authorization: %s", tok);
        wipe_free(tok);
    }
    sbuf b;
    memset(&b, 0, sizeof b);
    long status = 0;
    char cerr[CURL_ERROR_SIZE + 64] = "";
    int rc = -1;
    for (int attempt = 0; attempt < 2; attempt++) {  /* one retry on transport errors and 5xx */
        int hr = http_once("GET", url.p, hdr, 1000, 2000, &status, &b, cerr, sizeof cerr);
        if (hr == 0 && status == 200) {
            rc = creds_from_json(&b, "container", out, why) == 0 ? 1 : -1;
            break;
        }
        if (hr == 0 && status < 500) break;
    }
    if (rc < 0 && status != 200) {
        if (status) reason(why, "container: HTTP %ld from the credentials endpoint", status);
        else reason(why, "container: %s", cerr);
    }
    sbuf_wipe(&b);
    wipe_free(hdr);
    buf_free(&url);
    return rc;
}

/* ---- web identity (EKS IRSA): STS AssumeRoleWithWebIdentity ---- */

#define WEB_TOKEN_MAX (16 * 1024)
#define STS_GLOBAL "https://sts.amazonaws.com"

/* application/x-www-form-urlencoded (RFC 3986 unreserved kept, the rest
 * %XX) of the n key/value pairs, as one malloc'd string sized up front, so
 * no copy of the token is left behind by a reallocation. */
static char *form_encode(const char *const *kv, size_t n, size_t *len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t cap = 1;
    for (size_t i = 0; i < 2 * n; i++) cap += 3 * strlen(kv[i]) + 1;
    char *out = xmalloc(cap), *o = out;
    for (size_t i = 0; i < 2 * n; i++) {
        if (i) *o++ = (i % 2) ? '=' : '&';
        for (const unsigned char *p = (const unsigned char *)kv[i]; *p; p++) {
            if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                *p == '-' || *p == '_' || *p == '.' || *p == '~') {
                *o++ = (char)*p;
            } else {
                *o++ = '%';
                *o++ = hex[*p >> 4];
                *o++ = hex[*p & 15];
            }
        }
    }
    *o = '\0';
    *len = (size_t)(o - out);
    return out;
}

/* The decoded text of element name within xml[from, to), as a malloc'd
 * string (NULL when absent or empty). The scratch buffer is sized up front
 * and wiped: the values are secrets. */
static char *xml_secret(const char *xml, size_t from, size_t to, const char *name)
{
    buf_t v = BUF_INIT;
    buf_secret(&v);
    buf_reserve(&v, to - from + 1);
    char *out = NULL;
    if (xml_find(xml, to, from, name, &v, NULL, NULL) == 0 && v.len) out = xstrndup(v.p, v.len);
    buf_wipe(&v);
    return out;
}

/* Copies s to why as one line of at most max bytes, with every occurrence
 * of secret (the web identity token) replaced by "[redacted]". */
static void reason_text(buf_t *why, const char *s, const char *secret, size_t max)
{
    size_t sl = secret ? strlen(secret) : 0, put = 0;
    while (*s && put < max) {
        if (sl && !strncmp(s, secret, sl)) {
            buf_adds(why, "[redacted]");
            s += sl;
            put += 10;
            continue;
        }
        unsigned char c = (unsigned char)*s++;
        buf_addc(why, c < 0x20 || c == 0x7f ? ' ' : (char)c);
        put++;
    }
    if (*s) buf_adds(why, "...");
}

/* An AssumeRoleWithWebIdentity reply (HTTP 200) -> out. */
static int sts_creds_from_xml(const sbuf *b, aws_creds *out, buf_t *why)
{
    size_t rs, re, cs, ce;
    if (xml_find(b->p, b->len, 0, "AssumeRoleWithWebIdentityResult", NULL, &rs, &re) < 0 ||
        xml_find(b->p, re, rs, "Credentials", NULL, &cs, &ce) < 0) {
        reason(why, "web-identity: the STS response has no AssumeRoleWithWebIdentityResult/Credentials");
        return -1;
    }
    char *ak = xml_secret(b->p, cs, ce, "AccessKeyId");
    char *sk = xml_secret(b->p, cs, ce, "SecretAccessKey");
    char *tk = xml_secret(b->p, cs, ce, "SessionToken");
    char *ex = xml_secret(b->p, cs, ce, "Expiration");
    int64_t exp = 0;
    int rc = -1;
    if (!ak || !sk || !tk) {
        reason(why, "web-identity: the STS response lacks AccessKeyId, SecretAccessKey or SessionToken");
    } else if (!ex || parse_iso8601(ex, &exp) < 0) {
        reason(why, "web-identity: the STS response's Expiration is missing or not an ISO 8601 time");
    } else {
        out->access_key = ak;
        out->secret_key = sk;
        out->session_token = tk;
        ak = sk = tk = NULL;
        out->expires_ms = exp;
        out->source = "web-identity";
        rc = 0;
    }
    wipe_free(ak);
    wipe_free(sk);
    wipe_free(tk);
    free(ex);
    return rc;
}

/* A non-200 STS reply -> one reason: the status, and the ErrorResponse's
 * Code and Message when there is one (the token redacted, just in case). */
static void sts_error_reason(const sbuf *b, long status, const char *role, const char *token, buf_t *why)
{
    buf_t code = BUF_INIT, msg = BUF_INIT;
    buf_secret(&code);   /* STS may echo the token: no copy left by growth */
    buf_secret(&msg);
    size_t es, ee;
    if (xml_find(b->p, b->len, 0, "Error", NULL, &es, &ee) == 0) {
        xml_find(b->p, ee, es, "Code", &code, NULL, NULL);
        xml_find(b->p, ee, es, "Message", &msg, NULL, NULL);
    }
    reason(why, "web-identity: STS AssumeRoleWithWebIdentity for %s: HTTP %ld", role, status);
    if (code.len) {
        buf_adds(why, " ");
        reason_text(why, code.p, token, 100);
    }
    if (msg.len) {
        buf_adds(why, ": ");
        reason_text(why, msg.p, token, 300);
    }
    buf_wipe(&code);
    buf_wipe(&msg);
}

static int from_web_identity(aws_creds *out, buf_t *why)
{
    const char *file = env("AWS_WEB_IDENTITY_TOKEN_FILE"), *role = env("AWS_ROLE_ARN");
    if (!file || !role) {
        if (!file && !role) reason(why, "web-identity: AWS_WEB_IDENTITY_TOKEN_FILE/AWS_ROLE_ARN not set");
        else reason(why, "web-identity: %s set but %s missing", file ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN",
                    file ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE");
        return 0;
    }
    char *tok = NULL;
    int r = read_token_file(file, WEB_TOKEN_MAX, &tok);
    if (r == -1) {
        reason(why, "web-identity: cannot read AWS_WEB_IDENTITY_TOKEN_FILE %s: %s", file, strerror(errno));
        return -1;
    }
    if (r < 0) {
        reason(why, "web-identity: AWS_WEB_IDENTITY_TOKEN_FILE %s is %s", file,
               r == -3 ? "larger than 16 KiB" : "empty");
        return -1;
    }

    /* The endpoint: AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL, else the
     * region's, else the global one. */
    buf_t region = BUF_INIT, ep = BUF_INIT;
    char rerr[256];
    if (aws_endpoint("sts", aws_region(&region, rerr, sizeof rerr) == 0 ? region.p : NULL, &ep) < 0) {
        buf_reset(&ep);
        buf_adds(&ep, STS_GLOBAL);
    }
    int loop = aws_url_is_loopback(ep.p);
    int rc = -1;
    char *form = NULL;
    size_t flen = 0;
    sbuf b;
    memset(&b, 0, sizeof b);
    if (strncasecmp(ep.p, "https://", 8) != 0 && !(strncasecmp(ep.p, "http://", 7) == 0 && loop)) {
        reason(why, "web-identity: the STS endpoint must be https:// (or http:// to a loopback host): %.200s", ep.p);
        goto done;
    }
    {
        char sname[64];
        const char *sn = env("AWS_ROLE_SESSION_NAME");
        if (!sn) {
            snprintf(sname, sizeof sname, "delayer-%lld", (long long)now_ms());
            sn = sname;
        }
        const char *kv[] = { "Action", "AssumeRoleWithWebIdentity", "Version", "2011-06-15", "RoleArn", role,
                             "RoleSessionName", sn, "WebIdentityToken", tok };
        form = form_encode(kv, sizeof kv / sizeof kv[0] / 2, &flen);
    }
    /* Unsigned: the token is the proof. Proxies as for the AWS services
     * (lib/aws.c), except to a loopback endpoint. */
    http_req req = { "POST", ep.p, "Content-Type: application/x-www-form-urlencoded; charset=utf-8",
                     form, flen, 1000, 5000, !loop };
    long status = 0;
    char cerr[CURL_ERROR_SIZE + 64] = "";
    int hr = -1;
    for (int attempt = 0; attempt < 2; attempt++) {  /* one retry on transport errors and 5xx */
        hr = http_do(&req, &status, &b, cerr, sizeof cerr);
        if (hr == 0 && status < 500) break;
    }
    if (hr < 0) reason(why, "web-identity: STS %s: %s", ep.p, cerr);
    else if (status != 200) sts_error_reason(&b, status, role, tok, why);
    else if (sts_creds_from_xml(&b, out, why) == 0) rc = 1;
done:
    sbuf_wipe(&b);
    if (form) {
        explicit_bzero(form, flen);
        free(form);
    }
    wipe_free(tok);
    buf_free(&region);
    buf_free(&ep);
    return rc;
}

/* ---- EC2 instance metadata (IMDSv2) ---- */

static int from_imds(aws_creds *out, buf_t *why)
{
    const char *dis = env("AWS_EC2_METADATA_DISABLED");
    if (dis && !strcasecmp(dis, "true")) {
        reason(why, "imds: AWS_EC2_METADATA_DISABLED=true");
        return 0;
    }
    buf_t base = BUF_INIT, url = BUF_INIT;
    const char *ep = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    const char *mode = env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
    if (ep) buf_adds(&base, ep);
    else if (mode && !strcasecmp(mode, "IPv6")) buf_adds(&base, "http://[fd00:ec2::254]");
    else buf_adds(&base, "http://169.254.169.254");
    while (base.len && base.p[base.len - 1] == '/') base.p[--base.len] = '\0';

    sbuf b;
    memset(&b, 0, sizeof b);
    long status;
    char cerr[CURL_ERROR_SIZE + 64] = "";
    char *hdr = NULL, *role = NULL;
    int rc = 0;

    buf_printf(&url, "%s/latest/api/token", base.p);
    if (http_once("PUT", url.p, "X-aws-ec2-metadata-token-ttl-seconds: 21600", 1000, 1000, &status, &b, cerr,
                  sizeof cerr) < 0) {
        reason(why, "imds: no instance metadata service (%s)", cerr);
        goto done;
    }
    if (status != 200) {
        reason(why, "imds: HTTP %ld for the IMDSv2 token", status);
        goto done;
    }
    {
        char *t = b.p;
        size_t n = b.len;
        while (n && is_space(t[n - 1])) n--;
        while (n && is_space(*t)) { t++; n--; }
        if (!n || memchr(t, '\n', n) || memchr(t, '\r', n)) {
            reason(why, "imds: bad IMDSv2 token");
            goto done;
        }
        size_t hl = n + sizeof "X-aws-ec2-metadata-token: ";
        hdr = xmalloc(hl);
        snprintf(hdr, hl, "X-aws-ec2-metadata-token: %.*s", (int)n, t);
    }

    buf_reset(&url);
    buf_printf(&url, "%s/latest/meta-data/iam/security-credentials/", base.p);
    if (http_once("GET", url.p, hdr, 1000, 1000, &status, &b, cerr, sizeof cerr) < 0) {
        reason(why, "imds: %s", cerr);
        goto done;
    }
    if (status == 404) {
        reason(why, "imds: no IAM role attached to this instance");
        goto done;
    }
    if (status != 200) {
        reason(why, "imds: HTTP %ld for the role name", status);
        goto done;
    }
    {
        size_t s = 0, n = b.len;
        while (s < n && is_space(b.p[s])) s++;
        size_t e = s;
        while (e < n && b.p[e] != '\n' && b.p[e] != '\r') e++;
        while (e > s && is_space(b.p[e - 1])) e--;
        if (e == s) {
            reason(why, "imds: no IAM role attached to this instance");
            goto done;
        }
        for (size_t k = s; k < e; k++) {
            char c = b.p[k];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("+=,.@_-", c))) {
                reason(why, "imds: unexpected characters in the role name");
                goto done;
            }
        }
        role = xstrndup(b.p + s, e - s);
    }

    buf_reset(&url);
    buf_printf(&url, "%s/latest/meta-data/iam/security-credentials/%s", base.p, role);
    if (http_once("GET", url.p, hdr, 1000, 2000, &status, &b, cerr, sizeof cerr) < 0) {
        reason(why, "imds: %s", cerr);
        goto done;
    }
    if (status != 200) {
        reason(why, "imds: HTTP %ld for the role's credentials", status);
        goto done;
    }
    if (creds_from_json(&b, "imds", out, why) == 0) rc = 1;
done:
    sbuf_wipe(&b);
    wipe_free(hdr);
    free(role);
    buf_free(&base);
    buf_free(&url);
    return rc;
}

/* ---- the provider ---- */

/* The whole chain. 1 with out filled, 0 with reasons in why. */
static int resolve_chain(aws_creds *out, buf_t *why)
{
    int r = from_env(out, why);
    if (r == 1) return 1;
    r = from_profile(out, why);
    if (r) return r == 1;
    r = from_web_identity(out, why);
    if (r) return r == 1;
    r = from_container(out, why);
    if (r) return r == 1;
    return from_imds(out, why) == 1;
}

aws_credp *aws_credp_new(void)
{
    /* Reference-counted by libcurl, and never undone here: a cleanup could
     * pull the rug from under other curl users of the process (aws.c). */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return xcalloc(1, sizeof(aws_credp));
}

void aws_credp_free(aws_credp *cp)
{
    if (!cp) return;
    creds_clear(&cp->c);
    explicit_bzero(cp, sizeof *cp);
    free(cp);
}

void aws_credp_invalidate(aws_credp *cp)
{
    if (!cp) return;
    creds_clear(&cp->c);
    cp->have = 0;
    cp->next_try_ms = 0;
}

static void set_err(char *err, size_t errlen, const buf_t *why)
{
    if (err && errlen) snprintf(err, errlen, "no AWS credentials: %s", why->len ? why->p : "no source");
}

/* A process about to hold credentials leaves no core dump (nor lets
 * another user's ptrace or /proc/PID/mem read them): the keys, tokens and
 * the replies that carried them would all be in it. Before every load,
 * not once per process: exec resets the flag, and a cached hit (the common
 * case) does not get here. */
static void creds_nodump(void)
{
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

const aws_creds *aws_credp_get(aws_credp *cp, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!cp) return NULL;
    int64_t now = now_ms();
    if (cp->have) {
        if (cp->c.expires_ms == 0 || now < cp->c.expires_ms - REFRESH_BEFORE_MS) return &cp->c;
        if (now < cp->c.expires_ms && now < cp->next_try_ms) return &cp->c;
    }
    creds_nodump();
    aws_creds fresh;
    memset(&fresh, 0, sizeof fresh);
    buf_t why = BUF_INIT;
    int got;
    if (cp->have) {
        /* Refresh from the source that gave them. */
        const char *src = cp->c.source ? cp->c.source : "";
        int r = !strcmp(src, "imds") ? from_imds(&fresh, &why)
              : !strcmp(src, "web-identity") ? from_web_identity(&fresh, &why)
              : from_container(&fresh, &why);
        got = (r == 1);
        if (!got) {
            creds_clear(&fresh);
            if (now < cp->c.expires_ms) {  /* still valid: keep them, retry a little later */
                cp->next_try_ms = now + RETRY_AFTER_FAIL_MS;
                buf_free(&why);
                return &cp->c;
            }
        }
    } else {
        got = resolve_chain(&fresh, &why);
    }
    if (!got) {
        creds_clear(&fresh);
        creds_clear(&cp->c);
        cp->have = 0;
        set_err(err, errlen, &why);
        buf_free(&why);
        return NULL;
    }
    buf_free(&why);
    creds_clear(&cp->c);
    cp->c = fresh;
    cp->have = 1;
    cp->next_try_ms = 0;
    return &cp->c;
}

/* ---- region and endpoints ---- */

static int region_ok(const char *r)
{
    if (!*r) return 0;
    for (; *r; r++)
        if (!((*r >= 'a' && *r <= 'z') || (*r >= 'A' && *r <= 'Z') || (*r >= '0' && *r <= '9') || *r == '-')) return 0;
    return 1;
}

int aws_region(buf_t *out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    const char *from = "AWS_REGION", *r = env("AWS_REGION");
    char *owned = NULL;
    buf_t cfg = BUF_INIT, cred = BUF_INIT;
    if (!r) {
        from = "AWS_DEFAULT_REGION";
        r = env("AWS_DEFAULT_REGION");
    }
    if (!r) {
        profile_vals v;
        memset(&v, 0, sizeof v);
        int files;
        profile_load(&v, &cfg, &cred, &files);
        if (v.region && *v.region) owned = xstrdup(v.region);
        profile_vals_free(&v);
        r = owned;
        from = "the config file";
    }
    int rc = -1;
    if (!r) {
        if (err && errlen)
            snprintf(err, errlen, "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or region in profile \"%s\" of %s)",
                     profile_name(), cfg.p);
    } else {
        char tmp[128];
        snprintf(tmp, sizeof tmp, "%s", r);
        char *t = trim(tmp);
        if (strlen(r) >= sizeof tmp || !region_ok(t)) {
            if (err && errlen) snprintf(err, errlen, "invalid AWS region in %s", from);
        } else {
            buf_reset(out);
            buf_adds(out, t);
            rc = 0;
        }
    }
    free(owned);
    buf_free(&cfg);
    buf_free(&cred);
    return rc;
}

int aws_endpoint(const char *service, const char *region, buf_t *out)
{
    if (!service || !*service || !out) return -1;
    buf_t name = BUF_INIT;
    buf_adds(&name, "AWS_ENDPOINT_URL_");
    for (const char *c = service; *c; c++) {
        char u = *c;
        if (u >= 'a' && u <= 'z') u = (char)(u - 'a' + 'A');
        else if (u == '-' || u == ' ') u = '_';
        buf_addc(&name, u);
    }
    const char *ign = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    const char *v = NULL;
    if (!(ign && !strcasecmp(ign, "true"))) {
        v = env(name.p);
        if (!v) v = env("AWS_ENDPOINT_URL");
    }
    buf_free(&name);
    if (v) {
        while (is_space(*v)) v++;
        size_t n = strlen(v);
        while (n && (v[n - 1] == '/' || is_space(v[n - 1]))) n--;
        if (n) {
            buf_reset(out);
            buf_add(out, v, n);
            return 0;
        }
    }
    if (!region || !region_ok(region)) return -1;
    buf_reset(out);
    buf_printf(out, "https://%s.%s.%s", service, region,
               !strncmp(region, "cn-", 3) ? "amazonaws.com.cn" : "amazonaws.com");
    return 0;
}
