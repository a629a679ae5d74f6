/* fuzz_time: lib/timeutil.c parsers on NUL-terminated copies of the input,
 * and time_fmt on what they return. */
#include "timeutil.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char err[160], out[32];
    int64_t ms;
    if (time_parse_at(s, &ms, err, sizeof err) == 0) {
        time_fmt(ms, out);
        /* what we print must read back as the same instant */
        int64_t again;
        if (ms >= 0 && ms < INT64_C(253402300800000) &&
            (time_parse_at(out, &again, err, sizeof err) != 0 || again != ms)) abort();
    } else if (!memchr(err, '\0', sizeof err)) {
        abort();
    }
    if (time_parse_duration(s, &ms, err, sizeof err) == 0 && ms < 0) abort();
    /* a tiny error buffer must still be honoured */
    char small[4];
    (void)time_parse_at(s, &ms, small, sizeof small);
    (void)time_parse_duration(s, &ms, small, sizeof small);
    free(s);
    return 0;
}
