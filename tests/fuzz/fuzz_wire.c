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
        /* ...with the same content */
        const sched_rec *a = &w.r, *b = &w2.r;
        if (strcmp(a->id ? a->id : "", b->id ? b->id : "") != 0 || a->due != b->due || a->lease != b->lease ||
            strcmp(a->topic ? a->topic : "", b->topic ? b->topic : "") != 0 || strcmp(a->chash, b->chash) != 0 ||
            a->psize != b->psize || (a->psize && memcmp(a->payload, b->payload, a->psize) != 0) ||
            a->nattrs != b->nattrs || w.nopayload != w2.nopayload || w.rc != w2.rc)
            abort();
        for (size_t i = 0; i < a->nattrs; i++)
            if (strcmp(a->attrs[i].name, b->attrs[i].name) != 0 || strcmp(a->attrs[i].value, b->attrs[i].value) != 0)
                abort();
        /* one line, no newline inside */
        if (out.len == 0 || out.p[out.len - 1] != '\n' || memchr(out.p, '\n', out.len - 1)) abort();
        buf_free(&out);
    }
    sched_wire_free(&w);
    sched_wire_free(&w2);
    free(line);
    return 0;
}
