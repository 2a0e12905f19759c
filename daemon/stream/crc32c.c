/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

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
#include <nmmintrin.h>

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

int vfmig_crc32c_hw_available(void)
{
        return !!__builtin_cpu_supports("sse4.2");
}

uint32_t vfmig_crc32c(uint32_t crc, const void *buf, size_t n)
{
        static int hw = -1;

        if (hw < 0)
                hw = vfmig_crc32c_hw_available();
        return hw ? crc32c_hw(crc, buf, n) : vfmig_crc32c_sw(crc, buf, n);
}
#else
int vfmig_crc32c_hw_available(void)
{
        return 0;
}

uint32_t vfmig_crc32c(uint32_t crc, const void *buf, size_t n)
{
        return vfmig_crc32c_sw(crc, buf, n);
}
#endif
