/* fuzz_xml: lib/xml.c, the SNS reply reader. Looks up several element names
 * over the whole input and nested inside the ranges it finds, as lib/sns.c
 * does for PublishBatch members and attribute entries. The input is an
 * exact-size copy (not NUL-terminated). */
#include "xml.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {"Code", "Message", "MessageId", "Id", "member", "entry",
                                    "key", "value", "Error", "TopicArn", "a", "x:y"};
#define NNAMES (sizeof names / sizeof names[0])

/* The range found starts with a start tag of that local name ("<name",
 * "<p:name", the local name after the last ':'), followed by whitespace,
 * '>' or '/': never text, CDATA or a comment that merely contains it. */
static int starts_element(const char *x, size_t s, size_t e, const char *name)
{
    if (e - s < 2 || x[s] != '<') return 0;
    size_t i = s + 1, start = i;
    while (i < e && x[i] != '>' && x[i] != '/' && x[i] != ' ' && x[i] != '\t' && x[i] != '\n' && x[i] != '\r') i++;
    const char *colon = memrchr(x + start, ':', i - start);
    const char *local = colon ? colon + 1 : x + start;
    size_t ln = (size_t)(x + i - local), nl = strlen(name);
    return ln == nl && memcmp(local, name, nl) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *x = malloc(size ? size : 1);
    memcpy(x, data, size);
    buf_t out = BUF_INIT, inner = BUF_INIT;
    for (size_t k = 0; k < NNAMES; k++) {
        (void)xml_text(x, size, names[k], &out);
        size_t from = 0, s, e;
        int guard = 0;
        /* every occurrence, and a nested lookup inside each one */
        while (from <= size && guard++ < 64 && xml_find(x, size, from, names[k], &out, &s, &e) == 0) {
            if (s > e || e > size || s < from) abort();
            if (!starts_element(x, s, e, names[k])) abort();
            for (size_t j = 0; j < NNAMES; j += 3) {
                size_t s2, e2;
                if (xml_find(x, e, s, names[j], &inner, &s2, &e2) == 0 && (s2 < s || e2 > e || s2 > e2)) abort();
                (void)xml_find(x, e, s, names[j], NULL, NULL, NULL);
            }
            if (e <= from) break;
            from = e;
        }
    }
    buf_free(&out);
    buf_free(&inner);
    free(x);
    return 0;
}
