/* Test harness for guest-agent/crc32.c (built by tests/guest/test_crc32.py):
 *   "kat HEX"      crc32_update(0, "123456789") (the check value of the CRC-32 catalogue)
 *   "crc LEN HEX"  CRC-32 of the test pattern of LEN bytes, fed in uneven pieces
 *   "accel N"      whether this CPU has CRC32 instructions
 *   "splits OK" / "splits MISMATCH ..."  portable and accelerated functions agree with each
 *                  other for every length up to 300 from every start offset 0-7, and a CRC
 *                  continued at every split point of 1000 bytes equals the whole one */
#include "agent.h"
#include "harness.h"

static uint32_t crc;

static void begin(void)
{
    crc = 0;
}

static void feed(const unsigned char *p, size_t n)
{
    crc = crc32_update(crc, p, n);
}

static void end(size_t len)
{
    printf("crc %zu %08x\n", len, (unsigned)crc);
}

static int splits_agree(void)
{
    unsigned char d[1000 + 8];
    for (size_t i = 0; i < sizeof d; i++)
        d[i] = pattern(i, 5);
    int accel = crc32_have_accel();
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len <= 300; len++) {
            uint32_t a = crc32_update_portable(0, d + off, len);
            uint32_t b = accel ? crc32_update_accel(0, d + off, len) : a;
            if (a != b) {
                printf("splits MISMATCH offset %zu length %zu\n", off, len);
                return 0;
            }
        }
    uint32_t whole = crc32_update_portable(0, d, 1000);
    for (size_t s = 0; s <= 1000; s++) {
        uint32_t p = crc32_update_portable(crc32_update_portable(0, d, s), d + s, 1000 - s);
        uint32_t q = accel ? crc32_update_accel(crc32_update_accel(0, d, s), d + s, 1000 - s) : whole;
        if (p != whole || q != whole) {
            printf("splits MISMATCH split %zu\n", s);
            return 0;
        }
    }
    return 1;
}

int main(void)
{
    printf("kat %08x\n", (unsigned)crc32_update(0, "123456789", 9));
    for_each_pattern(300, begin, feed, end);
    printf("accel %d\n", crc32_have_accel());
    if (!splits_agree())
        return 1;
    printf("splits OK\n");
    return 0;
}
