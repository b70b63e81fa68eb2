/* Test harness for guest-agent/sha256.c (built by tests/guest/test_sha256.py):
 *   "hash LEN HEX"  sha256 of the test pattern of LEN bytes, fed in uneven pieces
 *   "accel N"       whether this CPU has SHA instructions
 *   "blocks OK" / "blocks MISMATCH N"  portable and accelerated block functions agree */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

static unsigned char pattern(size_t i, size_t len)
{
    return (unsigned char)((i * 131 + len * 7 + (i >> 8)) & 0xff);
}

int main(void)
{
    static const size_t big[] = {1000, 4096, 65535, 65536, 65537, 1048576 + 17};
    size_t lens[260 + sizeof big / sizeof big[0]], nl = 0;
    for (size_t l = 0; l < 260; l++)
        lens[nl++] = l;
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        lens[nl++] = big[i];
    for (size_t k = 0; k < nl; k++) {
        size_t len = lens[k];
        unsigned char *d = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
            d[i] = pattern(i, len);
        sha256_ctx c;
        sha256_init(&c);
        for (size_t off = 0, step = 1; off < len; off += step, step = step * 3 + 1) /* 1, 4, 13, 40 ... */
            sha256_update(&c, d + off, off + step > len ? len - off : step);
        char hex[65];
        sha256_final_hex(&c, hex);
        printf("hash %zu %s\n", len, hex);
        free(d);
    }
    printf("accel %d\n", sha256_have_accel());
    unsigned char data[64 * 20];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = pattern(i, 99);
    for (size_t n = 1; n <= 20; n++) {
        uint32_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        sha256_blocks_portable(a, data, n);
        if (sha256_have_accel())
            sha256_blocks_accel(b, data, n);
        else
            sha256_blocks_portable(b, data, n);
        if (memcmp(a, b, sizeof a)) {
            printf("blocks MISMATCH %zu\n", n);
            return 1;
        }
    }
    printf("blocks OK\n");
    return 0;
}
