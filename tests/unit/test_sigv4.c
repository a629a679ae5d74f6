/* test_sigv4: the fixed cases below, then every AWS vector folder (with a
 * header-canonical-request.txt) under $SIGV4_VECTORS (default
 * ../shared/aws-sigv4-test-suite/v4, relative to the repo root), walked
 * recursively. Each folder is one case: "ok - sigv4 NAME" / "not ok - ...".
 * The canonical request, string to sign, signature and the whole signed
 * request (header-signed-request.txt) are compared byte for byte.
 * A missing or empty vectors directory is a failure. */
#include "t.h"
#include "sigv4.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- fixed cases ---- */

static void sha256_known(void)
{
    char h[65];
    sigv4_sha256_hex("", 0, h);
    CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sigv4_sha256_hex(NULL, 0, h);
    CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sigv4_sha256_hex("abc", 3, h);
    CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void uri_encode_rules(void)
{
    buf_t b = BUF_INIT;
    sigv4_uri_encode(&b, "a b/c~d-e_f.g+h=i%", 18, 1);
    CHECK_STR(buf_str(&b), "a%20b/c~d-e_f.g%2Bh%3Di%25");
    buf_reset(&b);
    sigv4_uri_encode(&b, "a/b\xe1\x88\xb4", 6, 0);
    CHECK_STR(buf_str(&b), "a%2Fb%E1%88%B4");
    buf_free(&b);
}

static const sigv4_header H2[] = {
    { "Host", "example.amazonaws.com" },
    { "X-Amz-Date", "20150830T123600Z" },
};

static const char *creq_path(const char *path, int keep)
{
    static buf_t out = BUF_INIT;
    buf_t c = BUF_INIT;
    sigv4_request r = { "GET", path, "", H2, 2, NULL, 0, keep };
    buf_reset(&out);
    if (sigv4_canonical_request(&r, &c, NULL) == 0) {
        const char *s = strchr(buf_str(&c), '\n');
        const char *e = s ? strchr(s + 1, '\n') : NULL;
        if (e) buf_add(&out, s + 1, (size_t)(e - s - 1));
    }
    buf_free(&c);
    return buf_str(&out);
}

static void path_normalisation(void)
{
    CHECK_STR(creq_path("/", 0), "/");
    CHECK_STR(creq_path("", 0), "/");
    CHECK_STR(creq_path("/a/b/../c/./d", 0), "/a/c/d");
    CHECK_STR(creq_path("/a/b/..", 0), "/a/");
    CHECK_STR(creq_path("/../../a", 0), "/a");
    CHECK_STR(creq_path("//a///b//", 0), "/a/b/");
    CHECK_STR(creq_path("/a%20b", 0), "/a%2520b");      /* encoded once more */
    CHECK_STR(creq_path("/a b/", 0), "/a%20b/");
    CHECK_STR(creq_path("/a:b@c", 0), "/a%3Ab%40c");
    CHECK_STR(creq_path("//a/./b", 1), "//a/./b");
    CHECK_STR(creq_path("/a b", 1), "/a%20b");
}

static const char *creq_query(const char *q)
{
    static buf_t out = BUF_INIT;
    buf_t c = BUF_INIT;
    sigv4_request r = { "GET", "/", q, H2, 2, NULL, 0, 0 };
    buf_reset(&out);
    if (sigv4_canonical_request(&r, &c, NULL) == 0) {
        const char *s = strchr(buf_str(&c), '\n');
        s = s ? strchr(s + 1, '\n') : NULL;
        const char *e = s ? strchr(s + 1, '\n') : NULL;
        if (e) buf_add(&out, s + 1, (size_t)(e - s - 1));
    }
    buf_free(&c);
    return buf_str(&out);
}

static void query_canonicalisation(void)
{
    CHECK_STR(creq_query(""), "");
    CHECK_STR(creq_query(NULL), "");
    CHECK_STR(creq_query("b=2&a=1"), "a=1&b=2");
    CHECK_STR(creq_query("a=2&a=1&a"), "a=&a=1&a=2");
    CHECK_STR(creq_query("x=a+b&y=c%2Fd&z=e/f"), "x=a%2Bb&y=c%2Fd&z=e%2Ff");
    CHECK_STR(creq_query("&&k=v&"), "k=v");
    CHECK_STR(creq_query("k=%zz"), "k=%25zz");
    CHECK_STR(creq_query("Action=ListQueues&Version=2012-11-05"), "Action=ListQueues&Version=2012-11-05");
}

static void headers_fold_and_errors(void)
{
    sigv4_header h[] = {
        { "X-Amz-Date", "20150830T123600Z" },
        { "  My-H ", "  a \t b\n   c  " },
        { "host", "example.amazonaws.com" },
        { "my-h", "second" },
    };
    buf_t c = BUF_INIT, sh = BUF_INIT;
    sigv4_request r = { "POST", "/", "", h, 4, "x", 1, 0 };
    CHECK_INT(sigv4_canonical_request(&r, &c, &sh), 0);
    CHECK_STR(buf_str(&c), "POST\n/\n\nhost:example.amazonaws.com\nmy-h:a b c,second\n"
              "x-amz-date:20150830T123600Z\n\nhost;my-h;x-amz-date\n"
              "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881");
    CHECK_STR(buf_str(&sh), "host;my-h;x-amz-date");

    sigv4_request nohost = { "GET", "/", "", h, 2, NULL, 0, 0 };
    CHECK_INT(sigv4_canonical_request(&nohost, &c, NULL), -1);
    sigv4_header e[] = { { "", "x" }, { "host", "h" }, { "x-amz-date", "20150830T123600Z" } };
    sigv4_request empty = { "GET", "/", "", e, 3, NULL, 0, 0 };
    CHECK_INT(sigv4_canonical_request(&empty, &c, NULL), -1);
    sigv4_request nometh = { NULL, "/", "", h, 4, NULL, 0, 0 };
    CHECK_INT(sigv4_canonical_request(&nometh, &c, NULL), -1);

    sigv4_params p = { "AK", "SK", NULL, "us-east-1", "sqs", "2015-08-30" };
    char sig[65];
    CHECK_INT(sigv4_string_to_sign(&p, "x", &c), -1);
    CHECK_INT(sigv4_signature(&p, "x", sig), -1);
    p.amz_date = "20150830T123600Z";
    p.region = "";
    CHECK_INT(sigv4_authorization(&r, &p, &c), -1);
    buf_free(&c);
    buf_free(&sh);
}

static void aws_doc_example(void)
{
    /* The worked example of the (older) AWS docs: IAM ListUsers. */
    sigv4_header h[] = {
        { "Content-Type", "application/x-www-form-urlencoded; charset=utf-8" },
        { "Host", "iam.amazonaws.com" },
        { "X-Amz-Date", "20150830T123600Z" },
    };
    sigv4_request r = { "GET", "/", "Action=ListUsers&Version=2010-05-08", h, 3, "", 0, 0 };
    sigv4_params p = { "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL,
                       "us-east-1", "iam", "20150830T123600Z" };
    buf_t a = BUF_INIT, c = BUF_INIT;
    CHECK_INT(sigv4_canonical_request(&r, &c, NULL), 0);
    char h1[65];
    sigv4_sha256_hex(c.p, c.len, h1);
    CHECK_STR(h1, "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
    CHECK_INT(sigv4_authorization(&r, &p, &a), 0);
    CHECK_STR(buf_str(&a), "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
              "SignedHeaders=content-type;host;x-amz-date, "
              "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
    buf_free(&a);
    buf_free(&c);
}

static void amz_date_format(void)
{
    char d[17];
    memset(d, 'x', sizeof d);
    sigv4_amz_date(d);
    CHECK_INT(strlen(d), 16);
    CHECK(d[8] == 'T' && d[15] == 'Z');
    CHECK(d[0] == '2');
}

/* ---- vectors ---- */

static int slurp(const char *path, buf_t *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    buf_reset(out);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf_add(out, tmp, n);
    int err = ferror(f);
    fclose(f);
    if (!out->p) buf_add(out, "", 0);
    return err ? -1 : 0;
}

/* The string value of "key" anywhere in a small JSON document (the vectors'
 * context.json: keys are unique). -1 if absent. */
static int json_string(const char *js, const char *key, buf_t *out)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(js, pat);
    if (!p) return -1;
    p += strlen(pat);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p++ != ':') return -1;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p++ != '"') return -1;
    buf_reset(out);
    for (; *p && *p != '"'; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            char c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            buf_addc(out, c);
        } else {
            buf_addc(out, *p);
        }
    }
    if (!out->p) buf_add(out, "", 0);
    return *p == '"' ? 0 : -1;
}

static int json_bool(const char *js, const char *key, int dflt)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(js, pat);
    if (!p) return dflt;
    p += strlen(pat);
    while (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (!strncmp(p, "true", 4)) return 1;
    if (!strncmp(p, "false", 5)) return 0;
    return dflt;
}

typedef struct {
    char *method, *path, *query, *version;
    size_t nh;
    char *name[64], *value[64], *raw[64]; /* raw: the header's lines as in the file */
    char *body;
    size_t body_len;
} vreq;

static void vreq_free(vreq *q)
{
    free(q->method);
    free(q->path);
    free(q->query);
    free(q->version);
    for (size_t i = 0; i < q->nh; i++) {
        free(q->name[i]);
        free(q->value[i]);
        free(q->raw[i]);
    }
    free(q->body);
    memset(q, 0, sizeof *q);
}

/* request.txt: "METHOD target HTTP/1.1" (the target may hold spaces), header
 * lines (a line starting with white space continues the previous one), an
 * optional blank line and the body. */
static int parse_request(const char *s, size_t n, vreq *q, char *why, size_t whylen)
{
    memset(q, 0, sizeof *q);
    const char *end = s + n, *nl = memchr(s, '\n', n);
    if (!nl) nl = end;
    const char *sp1 = memchr(s, ' ', (size_t)(nl - s));
    const char *sp2 = NULL;
    for (const char *c = nl - 1; c > s; c--)
        if (*c == ' ') { sp2 = c; break; }
    if (!sp1 || !sp2 || sp2 <= sp1) {
        snprintf(why, whylen, "bad request line");
        return -1;
    }
    q->method = strndup(s, (size_t)(sp1 - s));
    q->version = strndup(sp2 + 1, (size_t)(nl - sp2 - 1));
    const char *tgt = sp1 + 1, *qm = memchr(tgt, '?', (size_t)(sp2 - tgt));
    q->path = strndup(tgt, (size_t)((qm ? qm : sp2) - tgt));
    q->query = qm ? strndup(qm + 1, (size_t)(sp2 - qm - 1)) : strdup("");
    const char *p = nl < end ? nl + 1 : end;
    while (p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e) e = end;
        size_t len = (size_t)(e - p);
        if (len && p[len - 1] == '\r') len--;
        if (len == 0) { /* blank line: the body follows */
            p = e < end ? e + 1 : end;
            q->body_len = (size_t)(end - p);
            q->body = strndup(p, q->body_len);
            return 0;
        }
        if ((*p == ' ' || *p == '\t') && q->nh) {
            size_t i = q->nh - 1;
            size_t vl = strlen(q->value[i]), rl = strlen(q->raw[i]);
            q->value[i] = realloc(q->value[i], vl + len + 2);
            q->raw[i] = realloc(q->raw[i], rl + len + 2);
            if (!q->value[i] || !q->raw[i]) abort();
            q->value[i][vl] = '\n';
            memcpy(q->value[i] + vl + 1, p, len);
            q->value[i][vl + 1 + len] = '\0';
            q->raw[i][rl] = '\n';
            memcpy(q->raw[i] + rl + 1, p, len);
            q->raw[i][rl + 1 + len] = '\0';
        } else {
            const char *colon = memchr(p, ':', len);
            if (!colon || q->nh == 64) {
                snprintf(why, whylen, "bad header line");
                return -1;
            }
            q->name[q->nh] = strndup(p, (size_t)(colon - p));
            q->value[q->nh] = strndup(colon + 1, len - (size_t)(colon + 1 - p));
            q->raw[q->nh] = strndup(p, len);
            q->nh++;
        }
        p = e < end ? e + 1 : end;
    }
    q->body = strdup("");
    return 0;
}

/* Compares got with the file's bytes; on a difference writes where. */
static int same(const char *what, const char *got, size_t gotlen, const buf_t *want, char *why, size_t whylen)
{
    if (gotlen == want->len && memcmp(got, buf_str(want), gotlen) == 0) return 1;
    size_t i = 0;
    while (i < gotlen && i < want->len && got[i] == want->p[i]) i++;
    char g[48], w[48];
    size_t k = 0;
    for (size_t j = i; j < gotlen && k < 40; j++) g[k++] = (got[j] == '\n') ? '|' : got[j];
    g[k] = '\0';
    k = 0;
    for (size_t j = i; j < want->len && k < 40; j++) w[k++] = (want->p[j] == '\n') ? '|' : want->p[j];
    w[k] = '\0';
    snprintf(why, whylen, "%s differs at byte %zu: got \"%s\", expected \"%s\"", what, i, g, w);
    return 0;
}

static int run_vector(const char *dir, char *why, size_t whylen)
{
    buf_t path = BUF_INIT;
    buf_t ctx = BUF_INIT, reqf = BUF_INIT, wcreq = BUF_INIT, wsts = BUF_INIT, wsig = BUF_INIT,
          wsigned = BUF_INIT, ak = BUF_INIT, sk = BUF_INIT, tok = BUF_INIT, region = BUF_INIT,
          service = BUF_INIT, ts = BUF_INIT, creq = BUF_INIT, sh = BUF_INIT, sts = BUF_INIT,
          auth = BUF_INIT, signedreq = BUF_INIT;
    vreq q;
    memset(&q, 0, sizeof q);
    int ok = 0;
    struct { const char *file; buf_t *b; } files[] = {
        { "context.json", &ctx }, { "request.txt", &reqf },
        { "header-canonical-request.txt", &wcreq }, { "header-string-to-sign.txt", &wsts },
        { "header-signature.txt", &wsig }, { "header-signed-request.txt", &wsigned },
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        buf_reset(&path);
        buf_printf(&path, "%s/%s", dir, files[i].file);
        if (slurp(path.p, files[i].b) < 0) {
            snprintf(why, whylen, "cannot read %s: %s", files[i].file, strerror(errno));
            goto done;
        }
    }
    if (json_string(ctx.p, "access_key_id", &ak) < 0 || json_string(ctx.p, "secret_access_key", &sk) < 0 ||
        json_string(ctx.p, "region", &region) < 0 || json_string(ctx.p, "service", &service) < 0 ||
        json_string(ctx.p, "timestamp", &ts) < 0) {
        snprintf(why, whylen, "context.json lacks a field");
        goto done;
    }
    int has_token = json_string(ctx.p, "token", &tok) == 0 && tok.len > 0;
    int omit_token = json_bool(ctx.p, "omit_session_token", 0);
    int normalize = json_bool(ctx.p, "normalize", 1);
    int sign_body = json_bool(ctx.p, "sign_body", 0);
    /* "2015-08-30T12:36:00Z" -> "20150830T123600Z" */
    char amz[32];
    size_t k = 0;
    for (const char *c = ts.p; *c && k < sizeof amz - 1; c++)
        if (*c != '-' && *c != ':') amz[k++] = *c;
    amz[k] = '\0';
    if (parse_request(reqf.p, reqf.len, &q, why, whylen) < 0) goto done;

    char body_hash[65];
    sigv4_sha256_hex(q.body, q.body_len, body_hash);
    /* Headers the signer adds, in the order header-signed-request.txt shows them. */
    sigv4_header hs[70];
    size_t nh = 0;
    buf_t added = BUF_INIT;
    for (size_t i = 0; i < q.nh; i++) hs[nh++] = (sigv4_header){ q.name[i], q.value[i] };
    if (has_token) {
        if (!omit_token) hs[nh++] = (sigv4_header){ "X-Amz-Security-Token", tok.p };
        buf_printf(&added, "X-Amz-Security-Token:%s\n", tok.p);
    }
    hs[nh++] = (sigv4_header){ "X-Amz-Date", amz };
    buf_printf(&added, "X-Amz-Date:%s\n", amz);
    if (sign_body) {
        hs[nh++] = (sigv4_header){ "x-amz-content-sha256", body_hash };
        buf_printf(&added, "x-amz-content-sha256:%s\n", body_hash);
    }
    sigv4_request r = { q.method, q.path, q.query, hs, nh, q.body, q.body_len, !normalize };
    sigv4_params p = { ak.p, sk.p, has_token ? tok.p : NULL, region.p, service.p, amz };
    char sig[65];
    if (sigv4_canonical_request(&r, &creq, &sh) < 0) {
        snprintf(why, whylen, "sigv4_canonical_request failed");
    } else if (!same("canonical request", creq.p, creq.len, &wcreq, why, whylen)) {
    } else if (sigv4_string_to_sign(&p, creq.p, &sts) < 0) {
        snprintf(why, whylen, "sigv4_string_to_sign failed");
    } else if (!same("string to sign", sts.p, sts.len, &wsts, why, whylen)) {
    } else if (sigv4_signature(&p, sts.p, sig) < 0) {
        snprintf(why, whylen, "sigv4_signature failed");
    } else if (!same("signature", sig, strlen(sig), &wsig, why, whylen)) {
    } else if (sigv4_authorization(&r, &p, &auth) < 0) {
        snprintf(why, whylen, "sigv4_authorization failed");
    } else {
        buf_printf(&signedreq, "%s %s%s%s %s\n", q.method, q.path, *q.query ? "?" : "", q.query, q.version);
        for (size_t i = 0; i < q.nh; i++) buf_printf(&signedreq, "%s\n", q.raw[i]);
        buf_adds(&signedreq, buf_str(&added));
        buf_printf(&signedreq, "Authorization:%s\n\n", auth.p);
        buf_add(&signedreq, q.body, q.body_len);
        if (same("signed request", signedreq.p, signedreq.len, &wsigned, why, whylen)) ok = 1;
    }
    buf_free(&added);
done:
    vreq_free(&q);
    buf_free(&path);
    buf_t *all[] = { &ctx, &reqf, &wcreq, &wsts, &wsig, &wsigned, &ak, &sk, &tok, &region, &service,
                     &ts, &creq, &sh, &sts, &auth, &signedreq };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) buf_free(all[i]);
    return ok;
}

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects (relative names of) folders holding header-canonical-request.txt.
 * -1 if root cannot be opened. */
static int walk(const char *root, const char *rel, strlist *out, int depth)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d) return -1;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/header-canonical-request.txt", path);
    struct stat st;
    if (*rel && stat(probe, &st) == 0 && S_ISREG(st.st_mode)) {
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 64;
            out->v = realloc(out->v, out->cap * sizeof *out->v);
            if (!out->v) abort();
        }
        out->v[out->n++] = strdup(rel);
    }
    struct dirent *e;
    while (depth < 16 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[4096], full[8300];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) walk(root, sub, out, depth + 1);
    }
    closedir(d);
    return 0;
}

static void missing_dir_is_error(void)
{
    strlist l = { 0, 0, 0 };
    CHECK_INT(walk("/nonexistent/sigv4-vectors", "", &l, 0), -1);
    CHECK_INT(l.n, 0);
    free(l.v);
}

int main(void)
{
    static const t_case cases[] = {
        T(sha256_known), T(uri_encode_rules), T(path_normalisation), T(query_canonicalisation),
        T(headers_fold_and_errors), T(aws_doc_example), T(amz_date_format), T(missing_dir_is_error),
    };
    (void)t_run; /* the summary line must cover the vectors too: same loop, below */
    int pass = 0, fail = 0;
    const char *only = getenv("T_ONLY");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (only && !strstr(cases[i].name, only)) continue;
        t_failed_now = 0;
        t_name = cases[i].name;
        cases[i].fn();
        if (t_failed_now) fail++;
        else { pass++; printf("ok - %s\n", cases[i].name); }
        fflush(stdout);
    }

    const char *root = getenv("SIGV4_VECTORS");
    if (!root || !*root) root = "../shared/aws-sigv4-test-suite/v4";
    strlist l = { 0, 0, 0 };
    if (!only || strstr("sigv4 vectors", only)) {
        if (walk(root, "", &l, 0) < 0) {
            printf("not ok - sigv4 vectors (cannot open %s: %s)\n", root, strerror(errno));
            fail++;
        } else if (l.n == 0) {
            printf("not ok - sigv4 vectors (no folder with header-canonical-request.txt under %s)\n", root);
            fail++;
        } else {
            printf("ok - sigv4 vectors (%zu folders under %s)\n", l.n, root);
            pass++;
        }
    } else {
        walk(root, "", &l, 0);
    }
    if (l.n) qsort(l.v, l.n, sizeof *l.v, cmp_str);
    for (size_t i = 0; i < l.n; i++) {
        char name[4200], dir[8300], why[512] = "";
        snprintf(name, sizeof name, "sigv4 %s", l.v[i]);
        if (only && !strstr(name, only)) { free(l.v[i]); continue; }
        snprintf(dir, sizeof dir, "%s/%s", root, l.v[i]);
        if (run_vector(dir, why, sizeof why)) {
            printf("ok - %s\n", name);
            pass++;
        } else {
            printf("not ok - %s (%s)\n", name, why);
            fail++;
        }
        fflush(stdout);
        free(l.v[i]);
    }
    free(l.v);
    printf("# %d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
