/* fuzz_wire: sched_wire_read (lib/sched.c), the record every stage reads
 * from its input; what it accepts is written back and must read again. */
#include "sched.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size ? size : 1);
    memcpy(line, data, size);
    sched_wire w, w2;
    sched_wire_init(&w);
    sched_wire_init(&w2);
    char err[256];
    if (sched_wire_read(line, size, &w, err, sizeof err) == 0) {
        buf_t out = BUF_INIT;
        sched_wire_write(&out, &w);
        if (sched_wire_read(out.p, out.len, &w2, err, sizeof err) != 0) abort();
        buf_free(&out);
    }
    sched_wire_free(&w);
    sched_wire_free(&w2);
    free(line);
    return 0;
}
