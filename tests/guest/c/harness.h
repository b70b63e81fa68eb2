/* Shared by the C test harnesses of tests/guest/c/: the test pattern (the same as
 * tests/guest/c_harness.py's pattern()) and the walk over lengths that feeds it. */
#ifndef FCGA_HARNESS_H
#define FCGA_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char pattern(size_t i, size_t len)
{
    return (unsigned char)((i * 131 + len * 7 + (i >> 8)) & 0xff);
}

/* For the pattern of every length 0 .. small-1 and a few large ones (around 4 KiB, 64 KiB
 * and 1 MiB): begin(), then feed() it in pieces of 1, 4, 13, 40 ... bytes, then end(len). */
static void for_each_pattern(size_t small, void (*begin)(void), void (*feed)(const unsigned char *p, size_t n),
                             void (*end)(size_t len))
{
    static const size_t big[] = {1000, 4096, 65535, 65536, 65537, 1048576 + 17};
    for (size_t k = 0; k < small + sizeof big / sizeof big[0]; k++) {
        size_t len = k < small ? k : big[k - small];
        unsigned char *d = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
            d[i] = pattern(i, len);
        begin();
        for (size_t off = 0, step = 1; off < len; off += step, step = step * 3 + 1)
            feed(d + off, off + step > len ? len - off : step);
        end(len);
        free(d);
    }
}

#endif
