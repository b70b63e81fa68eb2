/* CRC-32, the IEEE 802.3 polynomial (reflected 0xEDB88320, initial and final value
 * 0xFFFFFFFF): the check of zlib's crc32(), gzip, PNG and Ethernet.
 *
 * crc32_update(crc, p, n) continues a CRC the way zlib does: start with 0, pass each
 * result back in, and the final value is the CRC of everything fed. Two functions with
 * that contract: portable C (slice-by-8, eight bytes per step through eight tables), and
 * where the CPU has them (checked once at run time) the ARMv8 CRC32 instructions. File
 * transfers check every byte they move with it, and it must cost far less than the
 * channel: slice-by-8 runs at a few GB/s on a current core and, unlike SHA-256, stays
 * cheap on a guest CPU without hash instructions (an emulated one above all). x86's
 * crc32 instruction computes another polynomial (Castagnoli), so x86 uses the tables.
 */
#define _GNU_SOURCE 1 /* getauxval */
#include <string.h>

#include "agent.h"

#define POLY 0xEDB88320u /* x^32 + x^26 + x^23 + ... + 1, bit-reversed */

/* ---- portable: slice-by-8 ------------------------------------------------------------------ */

/* T[0][b] is the CRC of the byte b alone (no pre/post inversion); T[k][b] is the CRC of b
 * followed by k zero bytes, so eight table lookups advance the CRC by eight bytes. */
static uint32_t T[8][256];
static int tables_ready;

static void make_tables(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int bit = 0; bit < 8; bit++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        T[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++)
            T[k][b] = (T[k - 1][b] >> 8) ^ T[0][T[k - 1][b] & 0xff];
    tables_ready = 1;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t crc32_update_portable(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    if (!tables_ready)
        make_tables();
    crc = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo = le32(p) ^ crc, hi = le32(p + 4);
        crc = T[7][lo & 0xff] ^ T[6][(lo >> 8) & 0xff] ^ T[5][(lo >> 16) & 0xff] ^ T[4][lo >> 24] ^
              T[3][hi & 0xff] ^ T[2][(hi >> 8) & 0xff] ^ T[1][(hi >> 16) & 0xff] ^ T[0][hi >> 24];
    }
    while (n--)
        crc = T[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- aarch64: ARMv8 CRC32 ------------------------------------------------------------------ */

#if defined(__aarch64__)
#include <arm_acle.h>
#include <sys/auxv.h>

#define HAVE_ACCEL 1

__attribute__((target("crc"))) uint32_t crc32_update_accel(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    crc = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, p, 8); /* little-endian, as the instruction expects */
        crc = __crc32d(crc, v);
    }
    while (n--)
        crc = __crc32b(crc, *p++);
    return ~crc;
}

int crc32_have_accel(void)
{
    return (getauxval(AT_HWCAP) & (1ul << 7)) != 0; /* HWCAP_CRC32 */
}
#endif

#ifndef HAVE_ACCEL
uint32_t crc32_update_accel(uint32_t crc, const void *data, size_t n)
{
    return crc32_update_portable(crc, data, n);
}

int crc32_have_accel(void)
{
    return 0;
}
#endif

/* ---- dispatch ------------------------------------------------------------------------------ */

uint32_t crc32_update(uint32_t crc, const void *data, size_t n)
{
    static uint32_t (*update)(uint32_t, const void *, size_t);
    if (!update)
        update = crc32_have_accel() ? crc32_update_accel : crc32_update_portable;
    return update(crc, data, n);
}
