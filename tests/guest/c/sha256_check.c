/* Test harness for guest-agent/sha256.c (built by tests/guest/test_sha256.py):
 *   "hash LEN HEX"  sha256 of the test pattern of LEN bytes, fed in uneven pieces
 *   "accel N"       whether this CPU has SHA instructions
 *   "blocks OK" / "blocks MISMATCH N"  portable and accelerated block functions agree */
#include "agent.h"
#include "harness.h"

static sha256_ctx ctx;

static void begin(void)
{
    sha256_init(&ctx);
}

static void feed(const unsigned char *p, size_t n)
{
    sha256_update(&ctx, p, n);
}

static void end(size_t len)
{
    char hex[65];
    sha256_final_hex(&ctx, hex);
    printf("hash %zu %s\n", len, hex);
}

int main(void)
{
    for_each_pattern(260, begin, feed, end);
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
