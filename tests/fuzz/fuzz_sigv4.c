/* fuzz_sigv4: the SigV4 canonicaliser (lib/sigv4.c). The input is split at
 * '\n': method, path, query, then one header per line ("name:value") up to
 * an empty line; the rest is the payload. host and x-amz-date are added
 * unless the input carries them (so most inputs reach the whole
 * canonicalisation); keep_path is the low bit of the input's length. Then
 * sigv4_canonical_request and sigv4_authorization, and the URI encoder on
 * the raw bytes. */
#include "sigv4.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXH 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char *field[3] = {"", "", ""};
    sigv4_header h[MAXH + 2];
    size_t nh = 0;
    int have_host = 0, have_date = 0;
    const char *payload = "";
    size_t plen = 0;
    char *p = s, *end = s + size;
    for (int i = 0; i < 3 && p <= end; i++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        field[i] = p;
        if (!nl) { p = end + 1; break; }
        *nl = '\0';
        p = nl + 1;
    }
    while (p <= end && p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl) *nl = '\0';
        if (*p == '\0') {   /* empty line: the payload follows */
            if (nl) { payload = nl + 1; plen = (size_t)(end - payload); }
            break;
        }
        if (nh < MAXH) {
            char *c = strchr(p, ':');
            if (c) *c = '\0';
            h[nh].name = p;
            h[nh].value = c ? c + 1 : "";
            if (!strcasecmp(p, "host")) have_host = 1;
            if (!strcasecmp(p, "x-amz-date")) have_date = 1;
            nh++;
        }
        if (!nl) break;
        p = nl + 1;
    }
    if (!have_host) h[nh++] = (sigv4_header){"Host", "example.amazonaws.com"};
    if (!have_date) h[nh++] = (sigv4_header){"X-Amz-Date", "20150830T123600Z"};
    sigv4_request r = {.method = field[0], .path = field[1], .query = field[2], .headers = h,
                       .nheaders = nh, .payload = payload, .payload_len = plen, .keep_path = (int)(size & 1)};
    sigv4_params prm = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL,
                        "us-east-1", "service", "20150830T123600Z"};
    buf_t cr = BUF_INIT, sh = BUF_INIT, auth = BUF_INIT, enc = BUF_INIT;
    if (sigv4_canonical_request(&r, &cr, &sh) == 0) {
        if (!cr.p || strlen(cr.p) != cr.len) abort();   /* no NUL inside: it is hashed as a C string */
        /* line 2, the canonical path: "/" then only unreserved, %XX and '/';
         * line 3, the query: only unreserved, %XX, '=' and '&' */
        const char *l2 = strchr(cr.p, '\n');
        if (!l2) abort();
        l2++;
        const char *l3 = strchr(l2, '\n');
        if (!l3 || *l2 != '/') abort();
        l3++;
        const char *e3 = strchr(l3, '\n');
        if (!e3) abort();
        static const char unres[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
        for (const char *c = l2; c < l3 - 1; c++) {
            if (*c == '%') {
                if (!strchr("0123456789ABCDEF", c[1]) || !strchr("0123456789ABCDEF", c[2]) || !c[1] || !c[2]) abort();
            } else if (*c != '/' && !strchr(unres, *c)) {
                abort();
            }
        }
        for (const char *c = l3; c < e3; c++) {
            if (*c == '%') {
                if (!c[1] || !c[2] || !strchr("0123456789ABCDEF", c[1]) || !strchr("0123456789ABCDEF", c[2])) abort();
            } else if (*c != '=' && *c != '&' && !strchr(unres, *c)) {
                abort();
            }
        }
        /* deterministic */
        buf_t again = BUF_INIT;
        if (sigv4_canonical_request(&r, &again, NULL) != 0 || again.len != cr.len || memcmp(again.p, cr.p, cr.len)) abort();
        buf_free(&again);
        if (sigv4_authorization(&r, &prm, &auth) != 0) abort();
    } else {
        (void)sigv4_authorization(&r, &prm, &auth);
    }
    sigv4_uri_encode(&enc, (const char *)data, size, (int)(size & 2));
    buf_free(&cr);
    buf_free(&sh);
    buf_free(&auth);
    buf_free(&enc);
    free(s);
    return 0;
}
