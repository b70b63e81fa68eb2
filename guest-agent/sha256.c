/* SHA-256 (FIPS 180-4), streaming.
 *
 * Three block functions with one contract (process `n` 64-byte blocks into the state):
 * the portable one, and where the CPU has them (checked once at run time), the x86 SHA
 * extensions or the ARMv8 SHA2 instructions. Hashing runs for every byte a file transfer
 * moves, so it must keep up with vsock: the portable code manages about 100 MB/s on a
 * current core, the instructions several hundred MB/s to GB/s.
 */
#define _GNU_SOURCE 1 /* getauxval */
#include <string.h>

#include "agent.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* ---- portable ---------------------------------------------------------------------------- */

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define S0(x) (ROR(x, 2) ^ ROR(x, 13) ^ ROR(x, 22))
#define S1(x) (ROR(x, 6) ^ ROR(x, 11) ^ ROR(x, 25))
#define s0(x) (ROR(x, 7) ^ ROR(x, 18) ^ ((x) >> 3))
#define s1(x) (ROR(x, 17) ^ ROR(x, 19) ^ ((x) >> 10))
/* One round, written for fixed variable names so that eight of them in a row need no moves
 * between rounds (this matters at -Os, where the compiler does not unroll by itself). */
#define ROUND(a, b, c, d, e, f, g, h, i)                                                  \
    do {                                                                                  \
        uint32_t t1 = h + S1(e) + ((e & f) ^ (~e & g)) + K[i] + w[i];                     \
        uint32_t t2 = S0(a) + ((a & b) ^ (a & c) ^ (b & c));                              \
        d += t1;                                                                          \
        h = t1 + t2;                                                                      \
    } while (0)

void sha256_blocks_portable(uint32_t h[8], const unsigned char *p, size_t n)
{
    uint32_t w[64];
    for (; n--; p += 64) {
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
        for (int i = 16; i < 64; i++)
            w[i] = w[i - 16] + s0(w[i - 15]) + w[i - 7] + s1(w[i - 2]);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i += 8) {
            ROUND(a, b, c, d, e, f, g, hh, i);
            ROUND(hh, a, b, c, d, e, f, g, i + 1);
            ROUND(g, hh, a, b, c, d, e, f, i + 2);
            ROUND(f, g, hh, a, b, c, d, e, i + 3);
            ROUND(e, f, g, hh, a, b, c, d, i + 4);
            ROUND(d, e, f, g, hh, a, b, c, i + 5);
            ROUND(c, d, e, f, g, hh, a, b, i + 6);
            ROUND(b, c, d, e, f, g, hh, a, i + 7);
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d;
        h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
}

/* ---- x86: SHA extensions ------------------------------------------------------------------- */

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

#define HAVE_ACCEL 1

__attribute__((target("sha,sse4.1,ssse3"))) void sha256_blocks_accel(uint32_t h[8], const unsigned char *p, size_t n)
{
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]);
    __m128i st1 = _mm_loadu_si128((const __m128i *)&h[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);          /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);          /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);  /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);       /* CDGH */
    for (; n--; p += 64) {
        __m128i save0 = st0, save1 = st1, m[4];
        for (int i = 0; i < 16; i++) {
            if (i < 4) {
                m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), mask);
            } else { /* the message schedule, four words at a time */
                __m128i x = _mm_sha256msg1_epu32(m[i % 4], m[(i + 1) % 4]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(m[(i + 3) % 4], m[(i + 2) % 4], 4));
                m[i % 4] = _mm_sha256msg2_epu32(x, m[(i + 3) % 4]);
            }
            __m128i wk = _mm_add_epi32(m[i % 4], _mm_loadu_si128((const __m128i *)&K[4 * i]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, wk);
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(wk, 0x0E));
        }
        st0 = _mm_add_epi32(st0, save0);
        st1 = _mm_add_epi32(st1, save1);
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);          /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);          /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);       /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);          /* HGFE */
    _mm_storeu_si128((__m128i *)&h[0], st0);
    _mm_storeu_si128((__m128i *)&h[4], st1);
}

int sha256_have_accel(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)); /* CPUID.7.0:EBX.SHA */
}

/* ---- aarch64: ARMv8 SHA2 ------------------------------------------------------------------- */

#elif defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>

#define HAVE_ACCEL 1

__attribute__((target("sha2"))) void sha256_blocks_accel(uint32_t h[8], const unsigned char *p, size_t n)
{
    uint32x4_t st0 = vld1q_u32(&h[0]), st1 = vld1q_u32(&h[4]);
    for (; n--; p += 64) {
        uint32x4_t save0 = st0, save1 = st1, m[4];
        for (int i = 0; i < 16; i++) {
            if (i < 4)
                m[i] = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 16 * i)));
            else
                m[i % 4] = vsha256su1q_u32(vsha256su0q_u32(m[i % 4], m[(i + 1) % 4]), m[(i + 2) % 4], m[(i + 3) % 4]);
            uint32x4_t wk = vaddq_u32(m[i % 4], vld1q_u32(&K[4 * i]));
            uint32x4_t abcd = st0;
            st0 = vsha256hq_u32(st0, st1, wk);
            st1 = vsha256h2q_u32(st1, abcd, wk);
        }
        st0 = vaddq_u32(st0, save0);
        st1 = vaddq_u32(st1, save1);
    }
    vst1q_u32(&h[0], st0);
    vst1q_u32(&h[4], st1);
}

int sha256_have_accel(void)
{
    return (getauxval(AT_HWCAP) & (1ul << 6)) != 0; /* HWCAP_SHA2 */
}
#endif

#ifndef HAVE_ACCEL
void sha256_blocks_accel(uint32_t h[8], const unsigned char *p, size_t n)
{
    sha256_blocks_portable(h, p, n);
}

int sha256_have_accel(void)
{
    return 0;
}
#endif

/* ---- streaming ------------------------------------------------------------------------------- */

static void (*blocks)(uint32_t h[8], const unsigned char *p, size_t n);

void sha256_init(sha256_ctx *c)
{
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    if (!blocks)
        blocks = sha256_have_accel() ? sha256_blocks_accel : sha256_blocks_portable;
    memcpy(c->h, init, sizeof init);
    c->total = 0;
    c->used = 0;
}

void sha256_update(sha256_ctx *c, const void *data, size_t n)
{
    const unsigned char *p = data;
    c->total += n;
    if (c->used) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->block + c->used, p, take);
        c->used += take;
        p += take;
        n -= take;
        if (c->used < 64)
            return;
        blocks(c->h, c->block, 1);
        c->used = 0;
    }
    if (n >= 64) {
        blocks(c->h, p, n / 64);
        p += n - n % 64;
        n %= 64;
    }
    memcpy(c->block, p, n);
    c->used = n;
}

void sha256_final_hex(sha256_ctx *c, char out[65])
{
    uint64_t bits = c->total * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (c->used < 56 ? 56 : 120) - c->used;
    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(c, pad, padlen + 8);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) {
            unsigned char byte = (unsigned char)(c->h[i] >> (24 - 8 * j));
            out[8 * i + 2 * j] = hex[byte >> 4];
            out[8 * i + 2 * j + 1] = hex[byte & 15];
        }
    out[64] = 0;
}
