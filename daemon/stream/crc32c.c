/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#define CRC32C_POLY UINT32_C(0x82F63B78)

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
        for (unsigned i = 0; i < 256; i++) {
                uint32_t c = i;

                for (unsigned k = 0; k < 8; k++)
                        c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
                table[0][i] = c;
        }
        for (unsigned i = 0; i < 256; i++)
                for (unsigned t = 1; t < 8; t++)
                        table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static inline uint64_t load_le64(const uint8_t *p)
{
        uint64_t v;

        memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
#endif
        return v;
}

uint32_t vfmig_crc32c_sw(uint32_t crc, const void *buf, size_t n)
{
        const uint8_t *p = buf;

        pthread_once(&table_once, table_init);
        crc = ~crc;
        while (n > 0 && ((uintptr_t) p & 7) != 0) {
                crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
                n--;
        }
        while (n >= 8) {
                uint64_t v = load_le64(p) ^ crc;

                crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^
                      table[5][(v >> 16) & 0xff] ^ table[4][(v >> 24) & 0xff] ^
                      table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^
                      table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
                p += 8;
                n -= 8;
        }
        while (n-- > 0)
                crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
        return ~crc;
}

#if defined(__x86_64__)
#include <immintrin.h>
#include <nmmintrin.h>
#include <wmmintrin.h>

/*
 * The instruction has a latency of about three cycles and a throughput of
 * one per cycle, so one dependency chain uses a third of it.  Long buffers
 * are cut into strides of three lanes of HW_LANE bytes, each lane a chain of
 * its own (lanes 1 and 2 start from 0); the lanes are then joined with
 * shift(): the CRC register after HW_LANE more zero bytes, a linear map of
 * the 32-bit register, kept as four 256-entry tables (one per register byte),
 * made once from the 32 images of the unit vectors.
 */
#define HW_LANE 4096u

static uint32_t shift_table[4][256];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

__attribute__((target("sse4.2")))
static uint64_t hw_chain(uint64_t c, const uint8_t *p, size_t n)
{
        while (n >= 8) {
                uint64_t v;

                memcpy(&v, p, sizeof(v));
                c = _mm_crc32_u64(c, v);
                p += 8;
                n -= 8;
        }
        while (n-- > 0)
                c = _mm_crc32_u8((uint32_t) c, *p++);
        return c;
}

__attribute__((target("sse4.2")))
static void shift_init(void)
{
        uint32_t unit[32];

        for (unsigned b = 0; b < 32; b++) {
                uint64_t c = UINT32_C(1) << b;

                for (unsigned i = 0; i < HW_LANE / 8; i++)
                        c = _mm_crc32_u64(c, 0);
                unit[b] = (uint32_t) c;
        }
        for (unsigned t = 0; t < 4; t++)
                for (unsigned v = 0; v < 256; v++) {
                        uint32_t x = 0;

                        for (unsigned b = 0; b < 8; b++)
                                if (v & (1u << b))
                                        x ^= unit[8 * t + b];
                        shift_table[t][v] = x;
                }
}

static inline uint32_t shift(uint32_t c)
{
        return shift_table[0][c & 0xff] ^ shift_table[1][(c >> 8) & 0xff] ^
               shift_table[2][(c >> 16) & 0xff] ^ shift_table[3][c >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t n)
{
        const uint8_t *p = buf;
        uint64_t c = ~crc;

        while (n > 0 && ((uintptr_t) p & 7) != 0) {
                c = _mm_crc32_u8((uint32_t) c, *p++);
                n--;
        }
        if (n >= 3 * HW_LANE) {
                pthread_once(&shift_once, shift_init);
                do {
                        uint64_t c1 = 0, c2 = 0, v0, v1, v2;
                        const uint8_t *end = p + HW_LANE;

                        for (; p < end; p += 8) {
                                memcpy(&v0, p, 8);
                                memcpy(&v1, p + HW_LANE, 8);
                                memcpy(&v2, p + 2 * HW_LANE, 8);
                                c = _mm_crc32_u64(c, v0);
                                c1 = _mm_crc32_u64(c1, v1);
                                c2 = _mm_crc32_u64(c2, v2);
                        }
                        c = shift(shift((uint32_t) c) ^ (uint32_t) c1) ^ (uint32_t) c2;
                        p += 2 * HW_LANE;
                        n -= 3 * HW_LANE;
                } while (n >= 3 * HW_LANE);
        }
        return ~(uint32_t) hw_chain(c, p, n);
}

/*
 * Carry-less multiply folding (VPCLMULQDQ on 512-bit registers): the message
 * as a polynomial M(x) is folded, 16 bytes per 128-bit lane, into a 128-bit
 * R(x) with R = M (mod P), and CRC(M) = CRC(R) then comes from the crc32
 * instruction over R's 16 bytes.  A 128-bit lane X holds bytes whose low
 * quadword XL stands for XL(x)*x^64 and whose high quadword XH for XH(x)
 * (bit k of the lane is the coefficient of x^(127-k): the CRC's reflected
 * bit order).  Moving X forward by D bits: X*x^D = XL*x^(D+64) + XH*x^D, and
 * a carry-less multiply of reflected operands yields A*B*x, so the
 * constants are x^(D+63) and x^(D-1) mod P, reflected into the upper half of
 * a quadword.  Four registers of four lanes take 256 bytes per round.
 */
typedef struct FoldConst {
        uint64_t lo, hi;        /* multiplies XL, XH */
} FoldConst;

static FoldConst fold_2048, fold_512, fold_128;
static pthread_once_t fold_once = PTHREAD_ONCE_INIT;

/* x^n mod P in the reflected quadword form described above. */
static uint64_t xpow_mod_reflected(unsigned n)
{
        uint32_t r = 1;         /* normal bit order: bit d = coefficient of x^d */
        uint64_t out = 0;

        for (unsigned i = 0; i < n; i++)
                r = (r & UINT32_C(0x80000000)) ? (r << 1) ^ UINT32_C(0x1EDC6F41) : r << 1;
        for (unsigned d = 0; d < 32; d++)
                if (r & (UINT32_C(1) << d))
                        out |= UINT64_C(1) << (63 - d);
        return out;
}

static void fold_init(void)
{
        fold_2048 = (FoldConst) { xpow_mod_reflected(2048 + 63), xpow_mod_reflected(2048 - 1) };
        fold_512 = (FoldConst) { xpow_mod_reflected(512 + 63), xpow_mod_reflected(512 - 1) };
        fold_128 = (FoldConst) { xpow_mod_reflected(128 + 63), xpow_mod_reflected(128 - 1) };
}

#define FOLD_TARGET "sse4.2,pclmul,avx512f,vpclmulqdq"

__attribute__((target(FOLD_TARGET)))
static inline __m512i fold512(__m512i x, __m512i k, __m512i data)
{
        return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00),
                                         _mm512_clmulepi64_epi128(x, k, 0x11), data, 0x96);
}

__attribute__((target(FOLD_TARGET)))
static inline __m128i fold128(__m128i x, __m128i k, __m128i data)
{
        return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)),
                             data);
}

/* n >= 256.  crc is the register (already inverted). */
__attribute__((target(FOLD_TARGET)))
static uint32_t crc32c_fold(uint32_t crc, const uint8_t *p, size_t n)
{
        __m512i x0, x1, x2, x3, k;
        __m128i r, k128, lane[4];
        uint64_t c;

        pthread_once(&fold_once, fold_init);
        x0 = _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, (long long) crc));
        x1 = _mm512_loadu_si512(p + 64);
        x2 = _mm512_loadu_si512(p + 128);
        x3 = _mm512_loadu_si512(p + 192);
        p += 256;
        n -= 256;
        k = _mm512_set_epi64((long long) fold_2048.hi, (long long) fold_2048.lo, (long long) fold_2048.hi,
                             (long long) fold_2048.lo, (long long) fold_2048.hi, (long long) fold_2048.lo,
                             (long long) fold_2048.hi, (long long) fold_2048.lo);
        while (n >= 256) {
                x0 = fold512(x0, k, _mm512_loadu_si512(p));
                x1 = fold512(x1, k, _mm512_loadu_si512(p + 64));
                x2 = fold512(x2, k, _mm512_loadu_si512(p + 128));
                x3 = fold512(x3, k, _mm512_loadu_si512(p + 192));
                p += 256;
                n -= 256;
        }
        /* Four registers into one (each 64 bytes behind the next), then its
         * four lanes into one (each 16 bytes behind the next). */
        k = _mm512_set_epi64((long long) fold_512.hi, (long long) fold_512.lo, (long long) fold_512.hi,
                             (long long) fold_512.lo, (long long) fold_512.hi, (long long) fold_512.lo,
                             (long long) fold_512.hi, (long long) fold_512.lo);
        x0 = fold512(x0, k, x1);
        x0 = fold512(x0, k, x2);
        x0 = fold512(x0, k, x3);
        k128 = _mm_set_epi64x((long long) fold_128.hi, (long long) fold_128.lo);
        lane[0] = _mm512_extracti32x4_epi32(x0, 0);
        lane[1] = _mm512_extracti32x4_epi32(x0, 1);
        lane[2] = _mm512_extracti32x4_epi32(x0, 2);
        lane[3] = _mm512_extracti32x4_epi32(x0, 3);
        r = fold128(lane[0], k128, lane[1]);
        r = fold128(r, k128, lane[2]);
        r = fold128(r, k128, lane[3]);
        while (n >= 16) {
                r = fold128(r, k128, _mm_loadu_si128((const __m128i *) p));
                p += 16;
                n -= 16;
        }
        c = _mm_crc32_u64(0, (uint64_t) _mm_cvtsi128_si64(r));
        c = _mm_crc32_u64(c, (uint64_t) _mm_extract_epi64(r, 1));
        return (uint32_t) hw_chain(c, p, n);
}

static int fold_available(void)
{
        return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul") &&
               __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq");
}

int vfmig_crc32c_hw_available(void)
{
        static int level = -1;

        if (level < 0)
                level = fold_available() ? 2 : __builtin_cpu_supports("sse4.2") ? 1 : 0;
        return level;
}

uint32_t vfmig_crc32c_level(int level, uint32_t crc, const void *buf, size_t n)
{
        level = MIN(level, vfmig_crc32c_hw_available());
        if (level >= 2 && n >= 1024)
                return ~crc32c_fold(~crc, buf, n);
        if (level >= 1)
                return crc32c_hw(crc, buf, n);
        return vfmig_crc32c_sw(crc, buf, n);
}

uint32_t vfmig_crc32c(uint32_t crc, const void *buf, size_t n)
{
        return vfmig_crc32c_level(2, crc, buf, n);
}
#else
int vfmig_crc32c_hw_available(void)
{
        return 0;
}

uint32_t vfmig_crc32c_level(int level, uint32_t crc, const void *buf, size_t n)
{
        return vfmig_crc32c_sw(crc, buf, n);
}

uint32_t vfmig_crc32c(uint32_t crc, const void *buf, size_t n)
{
        return vfmig_crc32c_sw(crc, buf, n);
}
#endif
